"""Functions stay short enough to read in one screen (issue 20): at most 80 lines in the commands and
services, 120 anywhere else in the package, docstring included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "stockcli"
# The longest a function may be, in lines from `def` to its last line, by its folder under stockcli/.
LIMITS = {"services": 80, "cli": 80}
DEFAULT_LIMIT = 120


def too_long(package: Path = PACKAGE) -> list[tuple[str, str, int]]:
    """(module, function, lines) of every function, nested ones included, over its folder's limit."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package.parent).with_suffix("").as_posix().replace("/", ".")
        folder = path.relative_to(package).parts[0]
        limit = LIMITS.get(folder, DEFAULT_LIMIT)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > limit:
                    found.append((module, node.name, lines))
    return found


def test_the_walk_finds_a_long_function(tmp_path: Path) -> None:
    """The check itself: a 81-line service function is named, an 81-line one elsewhere is not."""
    body = "".join(f"    x{i} = {i}\n" for i in range(80))
    for folder in ("services", "features"):
        (tmp_path / "stockcli" / folder).mkdir(parents=True)
        (tmp_path / "stockcli" / folder / "step.py").write_text(f"def run():\n{body}", encoding="utf-8")
    assert too_long(tmp_path / "stockcli") == [("stockcli.services.step", "run", 81)]


def test_no_function_is_too_long() -> None:
    offenders = [f"{module}.{name}: {lines} lines" for module, name, lines in too_long()]
    assert not offenders, "Too long (80 lines in services/ and cli/, 120 elsewhere):\n" + "\n".join(offenders)
