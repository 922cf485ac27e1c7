"""Fault class: backtest. It writes only into a workspace it may own, and its exit code says whether the
replay really happened: 0 every session replayed, 3 some failed (summary still printed), 4 none could
be; sessions past the end of the data are named. The user's database is never written."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from stockcli.config import load_settings
from stockcli.db.engine import open_database
from stockcli.services.backtest import WORKSPACE_MARKER
from tests.conftest import Cli, write_config
from tests.faults.checks import table_state
from tests.faults.pipeline import (
    Workspace,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    new_workspace,
    rewrite_mlflow_paths,
)


def folder_state(folder: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under `folder` (folders as 'dir'); {} when it is missing."""
    if not folder.exists():
        return {}
    state = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_dir():
            state[key] = "dir"
        elif path.is_file():
            state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def someones_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    (folder / "notes").mkdir(parents=True)
    (folder / "notes" / "todo.txt").write_text("buy milk\n")
    (folder / ".bashrc").write_text("export PATH\n")
    return folder


@pytest.mark.parametrize("kind", ["a folder of someone's files", "a file", "/etc"])
def test_a_workspace_it_did_not_create_is_refused_with_exit_2_and_left_untouched(
    tmp_path: Path, database_url: str, kind: str
) -> None:
    if kind == "/etc":
        target = Path("/etc")
    elif kind == "a file":
        target = tmp_path / "report.txt"
        target.write_text("mine\n")
    else:
        target = someones_folder(tmp_path)
    config = write_config(tmp_path, database_url)
    engine = open_database(load_settings(config, environ={}))
    try:
        before, tables = folder_state(target) if target.is_dir() else target.read_bytes(), table_state(engine)
        result = Cli(config)(
            "backtest", "--start", "2013-02-25", "--end", "2013-03-01", "--workspace", str(target)
        )
        assert result.exit_code == 2, result.output
        assert str(target) in result.stderr and "nothing was written in it" in result.stderr
        assert result.stdout == ""  # refused before its first step: no empty progress bar
        assert (folder_state(target) if target.is_dir() else target.read_bytes()) == before
        assert not (target / WORKSPACE_MARKER).exists()
        assert table_state(engine) == tables
    finally:
        engine.dispose()


def test_nothing_replayed_exits_4_in_a_new_workspace_and_again_in_the_same_one(
    tmp_path: Path, database_url: str
) -> None:
    """Every session fails (no bars at all): exit 4, the summary printed, the workspace marked and
    reusable, the user's database unchanged."""
    bars = tmp_path / "bars"
    bars.mkdir()
    config = write_config(
        tmp_path,
        database_url,
        extra=f'[data]\nsource = "csv"\ncsv_dir = "{bars}"\ntickers = ["GOOG"]\n[tuning]\nn_trials = 1\n',
    )
    engine = open_database(load_settings(config, environ={}))
    workspace = tmp_path / "scratch" / "bt"
    try:
        tables = table_state(engine)
        cli = Cli(config)
        first = cli("backtest", "--start", "2013-02-27", "--end", "2013-03-01", "--workspace", str(workspace))
        assert first.exit_code == 4, first.output
        assert "Replayed 3 sessions" in first.stdout  # the summary is still printed
        assert "3 sessions failed" in first.stderr and "No bars were available" in first.stderr
        assert (workspace / WORKSPACE_MARKER).is_file()

        again = cli(
            "--json",
            "backtest",
            "--start",
            "2013-02-27",
            "--end",
            "2013-03-01",
            "--workspace",
            str(workspace),
        )
        assert again.exit_code == 4, again.output
        payload = json.loads(again.stdout)
        assert payload["sessions"] == payload["sessions_failed"] == 3 and payload["data_end"] is None
        assert table_state(engine) == tables
    finally:
        engine.dispose()


@pytest.mark.slow
def test_some_sessions_failed_exits_3_and_names_the_sessions_past_the_data_end(tmp_path: Path) -> None:
    """The sample ends on 2013-03-01: replaying to 2013-03-06 predicts on 2013-02-28 and 2013-03-01
    and cannot from 2013-03-04 on (stale bars)."""
    workspace = new_workspace(tmp_path / "ws")
    scratch = tmp_path / "replay"
    result = workspace.cli(
        "backtest",
        "--start",
        "2013-02-28",
        "--end",
        "2013-03-06",
        "--n-trials",
        "1",
        "--workspace",
        str(scratch),
    )
    assert result.exit_code == 3, result.output
    assert "Replayed 5 sessions 2013-02-28..2013-03-06" in result.stdout
    assert "3 sessions failed: 2013-03-04: no prediction" in result.stderr
    assert "3 of the 5 sessions lie after the newest bar (2013-03-01)" in result.stderr
    assert (scratch / WORKSPACE_MARKER).is_file() and (scratch / "stockcli.db").is_file()
    assert not workspace.data_dir.exists() or not (workspace.data_dir / "stockcli.db").exists()


def test_a_ticker_that_fails_every_session_is_reported_and_exits_3(
    bootstrapped: Workspace, tmp_path: Path
) -> None:
    """A watchlist ticker the source does not know gets no prediction in any replayed session while the
    others do: it is named in `failures` with its reason (not simply missing) and the exit is 3."""
    config = bootstrapped.config_path.read_text(encoding="utf-8")
    bootstrapped.config_path.write_text(
        config.replace('tickers = ["GOOG", "MSFT"]', 'tickers = ["GOOG", "ZZZZ", "MSFT"]'), encoding="utf-8"
    )
    scratch = tmp_path / "scratch"  # the bootstrapped workspace as the replay's own: no bootstrap to train
    shutil.copytree(bootstrapped.data_dir, scratch, ignore=shutil.ignore_patterns("stockcli.lock"))
    rewrite_mlflow_paths(scratch / "mlflow.db", bootstrapped.data_dir.resolve(), scratch.resolve())
    (scratch / WORKSPACE_MARKER).write_text("made by a test\n", encoding="utf-8")

    result = bootstrapped.cli(
        "--json", "backtest", "--start", "2013-02-04", "--end", "2013-02-05", "--workspace", str(scratch)
    )

    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["sessions_failed"] == 0 and summary["predictions"] == 2 * 2
    [failure] = summary["failures"]
    assert failure.startswith("ZZZZ: no prediction in any of the 2 sessions") and "no stored bars" in failure
    assert summary["tickers_failed"] == ["ZZZZ"]
    assert set(summary["per_ticker"]) == {"GOOG", "MSFT"}

    table = bootstrapped.cli(
        "backtest", "--start", "2013-02-04", "--end", "2013-02-05", "--workspace", str(scratch)
    )
    assert table.exit_code == 3, table.output
    assert "1 ticker failed every session: ZZZZ: no prediction in any of the 2 sessions" in table.stderr
