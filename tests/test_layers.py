"""The layers hold (docs/DESIGN: cli -> services -> db/ml/...): checked on the source, imports inside
functions included, since the package imports its heavy modules lazily."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stockcli"
# What a command may not reach past the services for.
BELOW_THE_SERVICES = ("stockcli.ml", "stockcli.db", "stockcli.web")


def _package_of(path: Path) -> str:
    """The package a module file belongs to (what its relative imports start from)."""
    return ".".join(path.relative_to(PACKAGE.parent).parent.parts)


def imported_modules(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in `source`, wherever it stands; relative ones made absolute."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            anchor = package.split(".")[: len(package.split(".")) - max(node.level - 1, 0)]
            base = ".".join([*anchor, node.module or ""]).strip(".") if node.level else node.module or ""
            yield node.lineno, base
            for alias in node.names:  # `from stockcli import db` imports stockcli.db
                yield node.lineno, f"{base}.{alias.name}"


def _reaches(module: str, forbidden: tuple[str, ...]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in forbidden)


def test_the_cli_imports_only_services() -> None:
    """Commands call services; no command reads the database, the registry or the web app itself."""
    shortcuts = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted((PACKAGE / "cli").rglob("*.py"))
        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_of(path))
        if _reaches(module, BELOW_THE_SERVICES)
    ]
    assert not shortcuts, "call a service instead (stockcli/services/):\n" + "\n".join(shortcuts)


def test_the_web_app_reads_through_services() -> None:
    """The dashboard reads the database through `stockcli.services`, never `stockcli.db` itself."""
    shortcuts = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}"
        for path in sorted((PACKAGE / "web").rglob("*.py"))
        for line, module in imported_modules(path.read_text(encoding="utf-8"), _package_of(path))
        if _reaches(module, ("stockcli.db",))
    ]
    assert not shortcuts, "call a service instead (stockcli/services/):\n" + "\n".join(shortcuts)


def test_the_check_sees_imports_inside_functions() -> None:
    source = (
        "from stockcli.services import report\n"
        "def f():\n"
        "    from stockcli.ml import registry\n"
        "    import stockcli.db.engine\n"
        "    from stockcli import web\n"
        "    from ..db import models\n"
    )
    found = [
        module
        for _, module in imported_modules(source, "stockcli.cli")
        if _reaches(module, BELOW_THE_SERVICES)
    ]
    assert found == [
        "stockcli.ml",
        "stockcli.ml.registry",
        "stockcli.db.engine",
        "stockcli.web",
        "stockcli.db",
        "stockcli.db.models",
    ]


def test_production_is_resolved_in_one_place() -> None:
    """Only `services/models.py` asks the registry where the Production alias points."""
    callers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "registry.py" and path.parent.name == "ml":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute | ast.Name) and "resolve_alias" in (
                getattr(node, "attr", None),
                getattr(node, "id", None),
            ):
                callers.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert [caller.split(":")[0] for caller in callers] == ["services/models.py"], callers
