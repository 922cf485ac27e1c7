"""Every command's `--json` object, its model in `stockcli/cli/results.py` and the README's "JSON output"
table agree: one test per command runs the real command (in process) and checks all three.

The commands run in one copy of the session's bootstrapped workspace (tests/faults/pipeline.py),
as of its own session (datasets and the study reused) or the next one, so the file stays cheap.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from stockcli.cli import results
from tests.conftest import Cli, write_config
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    NEXT_AS_OF,
    Workspace,
    bootstrapped_workspace,
    copy_workspace,
)
from tests.test_notify import free_port, notify_toml

README = Path(__file__).resolve().parents[1] / "README.md"

# Each shape of `results.SHAPES` -> (arguments after `--json`, expected exit code)
CASES: dict[str, tuple[tuple[str, ...], int]] = {
    "fetch": (("--as-of", NEXT_AS_OF, "fetch"), 0),
    "process": (("--as-of", BOOTSTRAP_AS_OF, "process"), 0),
    "build": (("--as-of", BOOTSTRAP_AS_OF, "build"), 0),
    "tune": (("--as-of", BOOTSTRAP_AS_OF, "tune", "--n-trials", "1"), 0),
    "train": (("--as-of", BOOTSTRAP_AS_OF, "train", "--epochs", "1"), 0),
    "promote": (("--as-of", BOOTSTRAP_AS_OF, "promote", "--dry-run"), 0),
    "models": (("models",), 0),
    "predict": (("--as-of", BOOTSTRAP_AS_OF, "predict"), 0),
    "monitor": (("--as-of", NEXT_AS_OF, "monitor"), 0),
    "daily": (("--as-of", NEXT_AS_OF, "daily", "--no-retrain"), 0),
    "retrain": (("--as-of", NEXT_AS_OF, "retrain"), 0),
    "daemon --show-schedule": (("daemon", "--show-schedule"), 0),
    "backtest": (("backtest", "--start", "1990-01-02", "--end", "1990-01-02"), 4),
    "report": (("--as-of", NEXT_AS_OF, "report", "--html"), 0),
    "notify": (("notify",), 0),
    "notify --test": (("notify", "--test"), 1),
    "db upgrade": (("db", "upgrade"), 0),
    "db current": (("db", "current"), 0),
    "error": (("--as-of", "2013-02-30", "predict"), 2),
}


def readme_keys() -> dict[str, list[str]]:
    """The README's JSON table: row label -> its keys, in order."""
    section = README.read_text(encoding="utf-8").split("### JSON output", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)`.*? \| (`.+`) \|$", section, flags=re.MULTILINE)
    return {label: re.findall(r"`([^`]+)`", keys) for label, keys in rows}


def model_keys(model: type[BaseModel]) -> list[str]:
    return [field.alias or name for name, field in model.model_fields.items()]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("shapes")
    copied = copy_workspace(bootstrapped_workspace(tmp_path_factory), root / "ws")
    yield copied
    copied.close()


def test_the_readme_documents_every_command_with_json_output() -> None:
    assert set(readme_keys()) == {*results.SHAPES, "prediction"} == {*CASES, "prediction"}
    assert readme_keys()["prediction"] == model_keys(results.PredictionJson)


@pytest.mark.parametrize("label", CASES)
def test_json_output_matches_its_model_and_the_readme(
    label: str, workspace: Workspace, tmp_path: Path
) -> None:
    model, (args, exit_code) = results.SHAPES[label], CASES[label]
    if label.startswith("notify"):  # a closed local port: nothing leaves the machine
        run = Cli(write_config(tmp_path, extra=notify_toml(f"json://127.0.0.1:{free_port()}/hook")))
    else:
        run = workspace.cli
    if label == "backtest":
        args = (*args, "--workspace", str(tmp_path / "scratch"))
    if label == "report":
        args = (*args, str(tmp_path / "report.html"))
    result = run("--json", *args)
    assert result.exit_code == exit_code, result.output
    payload = json.loads(result.stdout)
    model.model_validate(payload)
    assert list(payload) == readme_keys()[label] == model_keys(model)
    for prediction in payload.get("predictions", []) if label in ("predict", "daily") else []:
        assert list(prediction) == readme_keys()["prediction"]
