"""The daemon: catch-up of a missed session exactly once, a job that skips (never crashes) when the lock
is held, the schedule in the exchange's time zone, and a clean stop on SIGTERM/SIGINT."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from stockcli import clock, daemon
from stockcli.db import store
from stockcli.db.lock import run_lock
from stockcli.errors import ConfigError
from tests.faults.pipeline import (
    REPO,
    Workspace,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    ledger,
    new_workspace,
    predictions,
    running_row_of,
    wait_for,
)
from tests.ledger import recent_runs

NEW_YORK = ZoneInfo("America/New_York")


def at(day: str, hour: int, minute: int = 0) -> datetime:
    """A wall-clock moment in New York."""
    return datetime.fromisoformat(day).replace(hour=hour, minute=minute, tzinfo=NEW_YORK)


def daily_rows(workspace: Workspace) -> list[tuple[int, str, str]]:
    return [row for row in ledger(workspace.engine) if row[1] == "daily"]


def test_restart_after_a_missed_session_catches_up_exactly_once(bootstrapped: Workspace) -> None:
    settings = bootstrapped.settings()
    # The bootstrap ran as of Friday 2013-02-01; the daemon was down on Monday and restarts Tuesday
    # evening, after the close: Tuesday's session is the one missed.
    restart = at("2013-02-05", 18)
    assert daemon.missed_session(settings, bootstrapped.engine, now=restart) == date(2013, 2, 5)

    first = daemon.catch_up(settings, now=lambda: restart)
    assert first is not None and first.status == "ok", first
    assert first.as_of == date(2013, 2, 5)
    again = daemon.catch_up(settings, now=lambda: restart)  # a second restart the same evening
    assert again is None
    assert daily_rows(bootstrapped) == [(1, "daily", "ok"), (2, "daily", "ok")]
    # The caught-up run predicted Wednesday from Tuesday's bar.
    assert {(p[0], p[2]) for p in predictions(bootstrapped.engine)} >= {(date(2013, 2, 6), date(2013, 2, 5))}


def test_a_run_before_the_close_does_not_cover_that_session(bootstrapped: Workspace) -> None:
    settings = bootstrapped.settings()
    noon = at("2013-02-05", 12)
    outcome = daemon.run_daily_job(settings, now=lambda: noon)  # e.g. a manual run at lunch time
    assert outcome.status == "ok" and outcome.as_of == date(2013, 2, 5)
    assert daemon.missed_session(settings, bootstrapped.engine, now=at("2013-02-05", 15)) is None
    # After the close, Tuesday's bar is final and nobody has predicted from it yet.
    evening = at("2013-02-05", 18)
    assert daemon.missed_session(settings, bootstrapped.engine, now=evening) == date(2013, 2, 5)
    caught = daemon.catch_up(settings, now=lambda: evening)
    assert caught is not None and caught.status == "ok"
    assert daemon.catch_up(settings, now=lambda: evening) is None
    targets = sorted({p[0] for p in predictions(bootstrapped.engine)})
    assert targets == [date(2013, 2, 4), date(2013, 2, 5), date(2013, 2, 6)]


def test_job_is_skipped_not_crashed_when_the_lock_is_held(
    bootstrapped: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    settings = bootstrapped.settings()
    before = ledger(bootstrapped.engine)
    evening = at("2013-02-05", 18)
    with (
        run_lock(bootstrapped.engine, settings.data_dir / "stockcli.lock", "retrain"),
        caplog.at_level(logging.WARNING, logger="stockcli.daemon"),
    ):
        outcome = daemon.run_daily_job(settings, now=lambda: evening)
        caught = daemon.catch_up(settings, now=lambda: evening)
    assert outcome.status == "skipped" and "`stockcli retrain`" in outcome.message
    assert caught is not None and caught.status == "skipped"
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2
    assert ledger(bootstrapped.engine) == before  # a skipped job leaves no trace but the log
    # Once the lock is free, the next start catches the session up.
    assert daemon.catch_up(settings, now=lambda: evening) is not None


def test_scheduler_uses_the_configured_cron_in_the_exchange_time_zone(tmp_path: Path) -> None:
    workspace = new_workspace(
        tmp_path, extra='[daemon]\ncron = "15 18 * * tue-sat"\nmisfire_grace_s = 1234\n'
    )
    settings = workspace.settings()
    scheduler = daemon.build_scheduler(settings, lambda: None)
    # Before start() a job has no next run time yet: it is computed from the trigger.
    friday_evening = at("2013-02-01", 19)
    assert daemon.next_run_time(scheduler, now=friday_evening) == at("2013-02-02", 18, 15)
    scheduler.start(paused=True)
    try:
        job = scheduler.get_job("daily")
        assert str(job.trigger.timezone) == "America/New_York"
        fields = {f.name: str(f) for f in job.trigger.fields}
        assert (fields["minute"], fields["hour"], fields["day_of_week"]) == ("15", "18", "tue-sat")
        assert job.coalesce is True and job.max_instances == 1 and job.misfire_grace_time == 1234
        assert job.next_run_time is not None and daemon.next_run_time(scheduler) == job.next_run_time
        assert job.next_run_time.astimezone(NEW_YORK).strftime("%H:%M") == "18:15"
    finally:
        scheduler.shutdown(wait=False)
    london = daemon.build_scheduler(settings.replace(data={"exchange": "XLON"}), lambda: None)
    assert str(london.get_job("daily").trigger.timezone) == "Europe/London"


def test_invalid_cron_is_a_config_error_before_anything_runs(tmp_path: Path) -> None:
    workspace = new_workspace(tmp_path, extra='[daemon]\ncron = "every day at five"\n')
    with pytest.raises(ConfigError, match="not a valid crontab"):
        daemon.run_daemon(workspace.settings())
    assert not (workspace.data_dir / "stockcli.db").exists()  # no catch-up ran


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_a_real_daemon_cleanly_with_exit_0(tmp_path: Path, stop_with: signal.Signals) -> None:
    workspace = new_workspace(tmp_path)
    # Today's session is already covered: the catch-up has nothing to do and the daemon idles.
    today = clock.today("XNYS", now=datetime.now(tz=UTC))
    run_id = store.start_run(workspace.engine, command="daily", as_of=today)
    store.finish_run(workspace.engine, run_id, status="ok", details={"base_date": today.isoformat()})
    process = subprocess.Popen(
        [sys.executable, "-m", "stockcli", "daemon"],
        cwd=REPO,
        env=workspace.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        announced = process.stdout.readline()
        process.send_signal(stop_with)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert "stockcli daemon: schedule '30 17 * * mon-fri' (XNYS); next run 20" in announced, (
        announced + stderr
    )
    assert "None" not in announced and ("EST" in announced or "EDT" in announced)
    assert process.returncode == 0, stderr
    assert "stockcli daemon stopped." in stdout
    assert f"received {stop_with.name}" in stderr
    assert "Traceback" not in stderr
    assert ledger(workspace.engine) == [(run_id, "daily", "ok")]  # no catch-up ran
    workspace.close()


def test_sigterm_during_the_catch_up_lets_that_run_finish_then_exits_0(bootstrapped: Workspace) -> None:
    # The last daily ran as of 2013-02-01, so the daemon starts by catching up today's session (the
    # sample bars end in 2013: that run predicts no ticker, which is fine here).
    process = subprocess.Popen(
        [sys.executable, "-m", "stockcli", "daemon"],
        cwd=REPO,
        env=bootstrapped.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: running_row_of(bootstrapped.engine, process.pid))
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    assert "received SIGTERM" in stderr and "Traceback" not in stderr
    assert "stockcli daemon stopped." in stdout
    assert "next run" not in stdout  # stopped before the schedule started
    # The catch-up run was finished and recorded, not cut off (`running`) or left for `interrupted`.
    last = recent_runs(bootstrapped.engine, limit=1)[0]
    assert last.command == "daily" and last.pid == process.pid
    assert last.status == "failed" and last.finished_at is not None
    # It says why, ticker by ticker: no ticker has a bar of the newest closed session.
    assert last.error is not None and "GOOG: " in last.error and "MSFT: " in last.error, last.error
