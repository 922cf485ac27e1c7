"""Fault class: the run lock under attack. A run whose lock is taken from it (the lock file deleted, the
PostgreSQL session holding the advisory lock terminated) stops at its next commit with exit 5 instead of
going on beside a second run; two first runs on an empty data dir (or a fresh schema) never race on the
migrations."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from stockcli.db.lock import ADVISORY_LOCK_CLASS, run_lock
from stockcli.db.models import RawStockData
from stockcli.errors import LockHeldError
from tests.faults.pipeline import BOOTSTRAP_AS_OF, Workspace, ledger, new_workspace, stop

EXIT_LOCKED = 5


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the workspace's own SQLite file; else a fresh PostgreSQL schema."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def take_the_lock_away(workspace: Workspace) -> None:
    """What a careless admin or a server restart does to a running run's lock."""
    engine = workspace.engine
    if engine.dialect.name == "postgresql":
        with engine.begin() as connection:  # the session holding this schema's advisory lock
            terminated = connection.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND granted AND classid = :cls AND objsubid = 2 AND objid::bigint = "
                    "(hashtext(current_database() || '.' || current_schema())::bigint & 4294967295)"
                ),
                {"cls": ADVISORY_LOCK_CLASS},
            ).all()
        assert terminated, "no session held the advisory lock"
    else:
        (workspace.data_dir / "stockcli.lock").unlink()
    # A second run would now get in: the run that lost its lock must not go on beside it.
    # (pg_terminate_backend only signals the backend: on a loaded server its lock outlives the call
    # for a moment, so the second run tries again briefly, as a cron run a minute later would.)
    deadline = time.monotonic() + 30
    while True:
        try:
            with run_lock(engine, workspace.data_dir / "stockcli.lock", "fetch"):
                return
        except LockHeldError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_run_that_loses_its_lock_stops_at_its_next_commit_with_exit_5(
    tmp_path: Path, database: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stockcli.services.fetch as fetch_module

    workspace = new_workspace(tmp_path / "ws", database_url=database)
    real_checkpoint = fetch_module.checkpoint
    calls: list[str] = []

    def sabotage_after_first_ticker(settings: Any, name: str) -> None:
        calls.append(name)
        if len(calls) == 1:
            take_the_lock_away(workspace)
        real_checkpoint(settings, name)

    monkeypatch.setattr(fetch_module, "checkpoint", sabotage_after_first_ticker)
    result = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "fetch")
    assert result.exit_code == EXIT_LOCKED, result.output
    assert "lost the run lock" in result.output
    assert "Run the command again" in result.output
    with workspace.engine.connect() as connection:
        tickers = connection.execute(select(func.count(func.distinct(RawStockData.ticker)))).scalar()
    assert tickers == 1  # the ticker saved before the loss; nothing written after it
    assert [r[1:] for r in ledger(workspace.engine)] == [("fetch", "failed")]
    workspace.close()


def test_two_first_runs_at_once_never_race_on_the_migrations(tmp_path: Path, database: str | None) -> None:
    workspace = new_workspace(tmp_path / "ws", database_url=database)
    runs = [workspace.popen("--as-of", BOOTSTRAP_AS_OF, "fetch", "--ticker", "GOOG") for _ in range(3)]
    try:
        outcomes = [(process.communicate(timeout=120)[1], process.returncode) for process in runs]
    finally:
        for process in runs:
            stop(process)
    for stderr, returncode in outcomes:
        assert returncode in (0, EXIT_LOCKED), stderr
        assert "duplicate" not in stderr.lower() and "already exists" not in stderr.lower(), stderr
        if returncode == EXIT_LOCKED:
            assert "Another run holds the lock" in stderr, stderr
    assert any(returncode == 0 for _, returncode in outcomes)
    assert {r[1:] for r in ledger(workspace.engine)} == {("fetch", "ok")}
    workspace.close()
