"""Schema migrations, the run lock and the ledger on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import date
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import inspect, text

from stockcli.config import Settings
from stockcli.db.engine import (
    VERSION_TABLE,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    open_database,
)
from stockcli.db.lock import run_lock
from stockcli.errors import LockHeldError, UsageError
from stockcli.services.runtime import pipeline_run
from tests.ledger import recent_runs

TABLES = {
    "raw_stock_data",
    "processed_feature_data",
    "scaled_feature_sets",
    "scalers",
    "optimization_results",
    "latest_predictions",
    "model_performance_log",
    "pipeline_runs",
    "promotions",
}


def test_open_database_creates_every_table_with_our_own_version_table(settings: Settings) -> None:
    engine = open_database(settings)
    names = set(inspect(engine).get_table_names())
    assert names >= TABLES | {VERSION_TABLE}
    assert "alembic_version" not in names  # Optuna and MLflow keep that name for themselves
    assert current_revision(engine) == head_revision()


def test_downgrade_then_upgrade_round_trip(settings: Settings) -> None:
    engine = open_database(settings)
    command.downgrade(alembic_config(engine), "base")
    assert not (set(inspect(engine).get_table_names()) & TABLES)
    open_database(settings)
    assert set(inspect(engine).get_table_names()) >= TABLES


def test_prices_are_double_precision(settings: Settings) -> None:
    engine = open_database(settings)
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO raw_stock_data (ticker, date, open, high, low, close, volume, source, fetched_at) "
                "VALUES ('X', '2020-01-02', 1234.56789012, 1234.56789012, 1234.56789012, 1234.56789012, "
                "9000000000000, 'test', CURRENT_TIMESTAMP)"
            )
        )
        row = connection.execute(text("SELECT close, volume FROM raw_stock_data")).one()
    assert row.close == pytest.approx(1234.56789012, abs=1e-9)
    assert row.volume == 9_000_000_000_000


def test_sqlite_runs_in_wal_mode(make_settings) -> None:  # type: ignore[no-untyped-def]
    engine = open_database(make_settings())
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 30000


def test_ledger_records_ok_and_failed_runs(settings: Settings) -> None:
    with pipeline_run(settings, command="fetch", as_of=date(2013, 3, 1)) as run:
        run.details["tickers"] = 4
    with pytest.raises(UsageError), pipeline_run(settings, command="build", as_of=date(2013, 3, 1)):
        raise UsageError("No dataset with id nope.")
    runs = recent_runs(open_database(settings))
    assert [(r.command, r.status) for r in runs] == [("build", "failed"), ("fetch", "ok")]
    assert runs[0].error == "No dataset with id nope."
    assert runs[1].details == {"tickers": 4}
    assert runs[1].duration_s is not None and runs[1].duration_s >= 0


def test_second_run_is_refused_naming_the_holder(settings: Settings) -> None:
    engine = open_database(settings)
    lock_path = settings.data_dir / "stockcli.lock"
    with pipeline_run(settings, command="daily", as_of=date(2013, 3, 1), engine=engine):
        with pytest.raises(LockHeldError) as caught, run_lock(engine, lock_path, "fetch"):
            pass
        assert caught.value.exit_code == 5
        assert "daily" in caught.value.message and str(os.getpid()) in caught.value.message
    with run_lock(engine, lock_path, "fetch"):  # released after the first run ended
        pass


def test_a_run_refused_while_the_holder_is_still_writing_its_name_waits_for_it(tmp_path: Path) -> None:
    # The holder takes the flock and only then writes who it is: a run refused in between reads an
    # empty file. It must look again rather than say "another stockcli run".
    import fcntl
    import json
    import threading

    from stockcli.db.lock import file_lock

    lock_path = tmp_path / "stockcli.lock"
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held, description not written yet
    late = {"command": "promote", "pid": 4242, "host": "box", "since": "2013-03-01T00:00:00+00:00"}
    writer = threading.Timer(0.15, lambda: lock_path.write_text(json.dumps(late)))
    writer.start()
    try:
        with pytest.raises(LockHeldError) as caught, file_lock(lock_path, "daily"):
            pass
    finally:
        writer.join()
        os.close(fd)
    assert "`stockcli promote` (pid 4242 on box" in caught.value.message


def _hold_lock_in_child(settings: Settings, tmp_path: Path) -> subprocess.Popen[str]:
    ready = tmp_path / "ready"
    code = textwrap.dedent(
        f"""
        import time, pathlib
        from stockcli.db.engine import make_engine
        from stockcli.db.lock import run_lock
        engine = make_engine({settings.database_url!r})
        with run_lock(engine, pathlib.Path({str(settings.data_dir / "stockcli.lock")!r}), "daemon"):
            pathlib.Path({str(ready)!r}).write_text("1")
            time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], text=True)
    deadline = time.monotonic() + 30
    while not ready.exists():
        assert child.poll() is None, "lock holder died early"
        assert time.monotonic() < deadline, "lock holder never got ready"
        time.sleep(0.05)
    return child


def test_lock_is_released_when_its_holder_is_killed(settings: Settings, tmp_path: Path) -> None:
    engine = open_database(settings)
    lock_path = settings.data_dir / "stockcli.lock"
    child = _hold_lock_in_child(settings, tmp_path)
    try:
        with pytest.raises(LockHeldError), run_lock(engine, lock_path, "fetch"):
            pass
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:  # PostgreSQL notices the dead backend within moments
        try:
            with run_lock(engine, lock_path, "fetch"):
                break
        except LockHeldError:
            assert time.monotonic() < deadline, "lock not released after its holder died"
            time.sleep(0.2)


def test_unreachable_database_is_a_clear_error(make_settings) -> None:  # type: ignore[no-untyped-def]
    from stockcli.errors import StockCliError

    settings = make_settings("postgresql+psycopg://u:pw-secret@127.0.0.1:1/nowhere")
    with pytest.raises(StockCliError) as caught:
        open_database(settings)
    assert "Cannot reach the database" in caught.value.message
    assert "pw-secret" not in str(caught.value)


def test_make_engine_rejects_garbage_url() -> None:
    from stockcli.errors import ConfigError

    with pytest.raises(ConfigError, match="Invalid database URL"):
        make_engine("not a url at all")
