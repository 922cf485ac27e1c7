"""Concurrency: cron and the daemon at once, two promotions at once, the dashboard reading while
`daily` writes, and the PostgreSQL advisory lock when its holder dies.

A run that holds the lock is frozen at a known point (SIGSTOP once its ledger row says `running`, or
a blocking checkpoint in this process), so the overlap is certain rather than a race.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from stockcli import daemon
from tests.faults.checks import table_state
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    NEXT_AS_OF,
    Workspace,
    bars_digest,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    bootstrapped_workspace,
    ledger,
    make_broken_production,
    new_workspace,
    predictions,
    production,
    promotion_rows,
    running_row_of,
    stop,
    wait_for,
)

EXIT_LOCKED = 5


def test_cron_daily_while_the_daemon_job_runs_is_refused_with_exit_5_naming_the_holder(
    bootstrapped: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stockcli.services.daily as daily_module

    reached, release = threading.Event(), threading.Event()
    real_checkpoint = daily_module.checkpoint

    def pause_after_fetch(settings: Any, name: str) -> None:
        if name == "daily:after_fetch":
            reached.set()
            assert release.wait(60)
        real_checkpoint(settings, name)

    monkeypatch.setattr(daily_module, "checkpoint", pause_after_fetch)
    outcomes: list[daemon.JobOutcome] = []
    job = threading.Thread(
        target=lambda: outcomes.append(
            daemon.run_daily_job(bootstrapped.settings(), as_of=date.fromisoformat(NEXT_AS_OF))
        )
    )
    job.start()
    try:
        assert reached.wait(60), "the daemon's job never reached its fetch checkpoint"
        cron = bootstrapped.run("--as-of", NEXT_AS_OF, "daily")
    finally:
        release.set()
        job.join(60)
    assert cron.returncode == EXIT_LOCKED, cron.stderr
    assert "Another run holds the lock" in cron.stderr
    assert f"`stockcli daily` (pid {os.getpid()}" in cron.stderr  # the holder: the daemon, named
    assert [o.status for o in outcomes] == ["ok"]
    # The refused run wrote nothing, not even a ledger row; the daemon's run did the day's work once.
    assert ledger(bootstrapped.engine) == [(1, "daily", "ok"), (2, "daily", "ok")]
    assert sum(1 for p in predictions(bootstrapped.engine) if p[0] == date(2013, 2, 5)) == 2


def test_daemon_job_while_a_cron_daily_runs_is_skipped_and_logged(
    bootstrapped: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    cron = bootstrapped.popen("--as-of", NEXT_AS_OF, "daily")
    try:
        wait_for(lambda: running_row_of(bootstrapped.engine, cron.pid))
        os.kill(cron.pid, signal.SIGSTOP)  # frozen while it holds the lock
        with caplog.at_level(logging.WARNING, logger="stockcli.daemon"):
            outcome = daemon.run_daily_job(bootstrapped.settings(), as_of=date.fromisoformat(NEXT_AS_OF))
        os.kill(cron.pid, signal.SIGCONT)
        _, stderr = cron.communicate(timeout=120)
    finally:
        stop(cron)
    assert outcome.status == "skipped"
    assert f"`stockcli daily` (pid {cron.pid}" in outcome.message
    assert any("skipped" in r.getMessage() and str(cron.pid) in r.getMessage() for r in caplog.records)
    assert cron.returncode == 0, stderr
    assert ledger(bootstrapped.engine) == [(1, "daily", "ok"), (2, "daily", "ok")]
    assert sum(1 for p in predictions(bootstrapped.engine) if p[0] == date(2013, 2, 5)) == 2


@pytest.mark.slow
def test_two_promotes_at_once_one_is_refused_with_exit_5_and_one_decision_is_recorded(
    bootstrapped: Workspace,
) -> None:
    broken = make_broken_production(bootstrapped)
    rows_before = promotion_rows(bootstrapped.engine)
    runs = [bootstrapped.popen("--as-of", BOOTSTRAP_AS_OF, "promote", "--version", "1") for _ in range(2)]
    try:
        holder_id = wait_for(
            lambda: next((p for p in runs if running_row_of(bootstrapped.engine, p.pid)), None)
        )
        os.kill(holder_id.pid, signal.SIGSTOP)  # keep the winner inside its run until the loser is done
        loser = next(p for p in runs if p is not holder_id)
        _, loser_err = loser.communicate(timeout=120)
        os.kill(holder_id.pid, signal.SIGCONT)
        _, holder_err = holder_id.communicate(timeout=120)
    finally:
        for process in runs:
            stop(process)
    assert loser.returncode == EXIT_LOCKED, loser_err
    assert f"`stockcli promote` (pid {holder_id.pid}" in loser_err
    assert holder_id.returncode == 0, holder_err
    assert production(bootstrapped) == "1"
    new_rows = promotion_rows(bootstrapped.engine)[len(rows_before) :]
    assert len(new_rows) == 1  # one decision, by the run that ran
    assert new_rows[0][1:4] == ("1", broken, True)
    promote_runs = [r for r in ledger(bootstrapped.engine) if r[1] == "promote"]
    assert [r[2] for r in promote_runs] == ["ok"] and new_rows[0][6] == promote_runs[0][0]


@pytest.mark.slow
def test_dashboard_reads_while_daily_writes_on_sqlite_never_see_database_is_locked(
    bootstrapped: Workspace,
) -> None:
    from fastapi.testclient import TestClient

    from stockcli.web.app import create_app

    # A short busy timeout for the reader: a read that waited on the writer would fail, not stall.
    settings = bootstrapped.settings().replace(storage={"sqlite_busy_timeout_s": 1.0})
    paths = [
        "/predictions/latest_for_table",
        "/tickers",
        "/performance",
        "/historical_context_chart/GOOG?sessions=30",
        "/health",
        "/models",
        "/",
    ]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    slowest = [0.0]
    writer_done = threading.Event()

    def hammer(client: TestClient, offset: int) -> None:
        index = offset
        while not writer_done.is_set():
            path = paths[index % len(paths)]
            index += 1
            started = time.perf_counter()
            response = client.get(path)
            slowest[0] = max(slowest[0], time.perf_counter() - started)
            statuses[response.status_code] += 1
            if response.status_code != 200 or "locked" in response.text.lower():
                failures.append(f"{path}: {response.status_code} {response.text[:200]}")
            time.sleep(0.02)  # leave the writer CPU: this is about locks, not load

    with TestClient(create_app(settings, warm_registry=False)) as client:
        assert client.get("/health").json()["status"] == "ok"
        writer = bootstrapped.popen("--as-of", "2013-02-08", "daily")
        readers = [threading.Thread(target=hammer, args=(client, i)) for i in range(2)]
        for reader in readers:
            reader.start()
        try:
            _, writer_err = writer.communicate(timeout=120)
        finally:
            writer_done.set()
            for reader in readers:
                reader.join(60)
            stop(writer)
        # The same app, right after: the writer's new predictions (for Monday 2013-02-11) are visible.
        latest = client.get("/predictions/latest_for_table").json()["data"]
    assert writer.returncode == 0, writer_err
    assert {row["target_date"] for row in latest} == {"2013-02-11"}
    assert not failures, failures[:5]
    assert sum(statuses.values()) >= 20 and set(statuses) == {200}
    assert slowest[0] < 10, f"a read took {slowest[0]:.1f} s"


@pytest.mark.postgres
def test_postgres_advisory_lock_is_released_when_a_daily_holding_it_dies(
    postgres_url: str, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    workspace = new_workspace(tmp_path / "ws", database_url=postgres_url)
    holder = workspace.popen("--as-of", BOOTSTRAP_AS_OF, "daily")
    try:
        wait_for(lambda: running_row_of(workspace.engine, holder.pid))
        os.kill(holder.pid, signal.SIGSTOP)
        refused = workspace.run("--as-of", BOOTSTRAP_AS_OF, "daily")
        assert refused.returncode == EXIT_LOCKED, refused.stderr
        assert f"`stockcli daily` (pid {holder.pid}" in refused.stderr
        holder.send_signal(signal.SIGKILL)  # dies holding the advisory lock (and maybe a transaction)
        holder.communicate(timeout=30)
    finally:
        stop(holder)
    before = table_state(workspace.engine)

    # The server ends the dead session and frees its lock: the next daily is not refused. It fetches,
    # then stops at "no production model" because --no-retrain forbids the bootstrap (exit 4).
    def next_daily() -> Any:
        result = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "daily", "--no-retrain")
        return result if result.exit_code != EXIT_LOCKED else None

    result = wait_for(next_daily, timeout_s=30, every_s=0.5)
    assert result.exit_code == 4, result.output
    assert "No production model yet" in result.output
    assert [r[1:] for r in ledger(workspace.engine)] == [("daily", "interrupted"), ("daily", "failed")]
    # Whatever the killed run had half-written was rolled back; the re-run stored every bar.
    assert bars_digest(workspace.engine) == bars_digest(bootstrapped_workspace(tmp_path_factory).engine)
    assert before["raw_stock_data"][0] <= bars_digest(workspace.engine)[0]
    workspace.close()
