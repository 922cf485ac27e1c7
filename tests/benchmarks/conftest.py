"""Benchmarks live in `bench_*.py` and run only when asked for.

    make bench                                           # pytest -q -s -m benchmark tests/benchmarks
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_process_build.py
    STOCKCLI_BENCHMARK=1 .venv/bin/python -m pytest -q -s tests/benchmarks

A plain `pytest` (the test suite) does not even collect `bench_*.py` files; a `@pytest.mark.benchmark`
item that gets collected anyway (a file named on the command line without `-m benchmark`) is skipped.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


def benchmarks_selected(config: pytest.Config) -> bool:
    expression = str(config.getoption("markexpr", "") or "")
    asked = "benchmark" in expression and "not benchmark" not in expression
    return asked or os.environ.get("STOCKCLI_BENCHMARK") == "1"


def pytest_collect_file(file_path: Path, parent: Any) -> Any:
    if file_path.suffix != ".py" or not file_path.name.startswith("bench_"):
        return None
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest's own collector takes it
    if not benchmarks_selected(parent.config):
        return None
    return pytest.Module.from_parent(parent, path=file_path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if benchmarks_selected(config):
        return
    skip = pytest.mark.skip(reason="benchmark: run with `-m benchmark` (make bench) or STOCKCLI_BENCHMARK=1")
    for item in items:
        if item.get_closest_marker("benchmark") is not None:
            item.add_marker(skip)
