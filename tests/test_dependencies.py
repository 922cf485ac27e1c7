"""Every third-party package that `stockcli` imports directly is declared in pyproject.toml."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for path in (ROOT / "stockcli").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "stockcli"}


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_imported_package_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    # Runtime dependencies and the optional extras a user installs for a part (not the dev tools).
    requirements = list(project["dependencies"])
    for extra, listed in project.get("optional-dependencies", {}).items():
        if extra != "dev":
            requirements += listed
    declared = {_normalized(re.split(r"[<>=!~\[ ;]", requirement)[0]) for requirement in requirements}
    distributions = packages_distributions()
    undeclared = {
        module: distributions.get(module, [module])
        for module in _imported_top_level_modules()
        if not any(_normalized(d) in declared for d in distributions.get(module, [module]))
    }
    assert undeclared == {}, f"imported by stockcli but not declared in pyproject.toml: {undeclared}"
    assert "ta" not in _imported_top_level_modules()  # a test dependency only (tests/ta_oracles.py)
