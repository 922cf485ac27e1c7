"""Fault class: messages that must not mislead (issue 19, finding 15). A missing PostgreSQL role is
called a missing role (not "The database database ... does not exist"); `db current` and `db upgrade`
map database errors to the same exit codes as every other command; a full disk names the file it
could not write and the run's ledger row ends `failed`, even when closing it needs a second try; a
database that cannot be opened for reading says "cannot read", not "cannot write"."""

from __future__ import annotations

import errno
import os
import sqlite3
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from stockcli.config import Settings, load_settings
from stockcli.db import store
from stockcli.db.engine import make_engine, open_database, run_failure_error
from stockcli.db.models import PipelineRun
from stockcli.errors import StockCliError
from stockcli.services import fetch as fetch_module
from stockcli.services import report as report_service
from stockcli.services.runtime import pipeline_run
from stockcli.storage import write_atomically
from tests.conftest import PG_URL, Cli, _require_postgres, write_config

AS_OF = date(2013, 3, 1)


@pytest.mark.postgres
def test_a_missing_postgresql_role_is_called_a_missing_role(tmp_path: Path) -> None:
    _require_postgres()
    role = f"nobody_{uuid.uuid4().hex[:8]}"
    url = make_url(PG_URL).set(username=role).render_as_string(hide_password=False)
    cli = Cli(write_config(tmp_path, url))
    for command in (("report",), ("--as-of", "2013-03-01", "fetch"), ("db", "current"), ("db", "upgrade")):
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert f"has no role (user) '{role}': the role does not exist" in result.output, result.output
        assert (
            "database 'test' does not exist" not in result.output and "Unexpected error" not in result.output
        )


@pytest.mark.postgres
def test_db_commands_map_a_missing_database_like_every_command(tmp_path: Path) -> None:
    _require_postgres()
    url = (
        make_url(PG_URL).set(database=f"missing_{uuid.uuid4().hex[:8]}").render_as_string(hide_password=False)
    )
    cli = Cli(write_config(tmp_path, url))
    codes = {}
    for command in (("report",), ("--as-of", "2013-03-01", "fetch"), ("db", "current"), ("db", "upgrade")):
        result = cli(*command)
        codes[command[-1]] = result.exit_code
        assert "does not exist" in result.output and "Unexpected error" not in result.output, result.output
    assert set(codes.values()) == {2}, codes


def _ledger(settings: Settings) -> list[tuple[str, str | None]]:
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(select(PipelineRun.status, PipelineRun.error))]  # type: ignore[misc]
    finally:
        engine.dispose()


def _disk_full(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Any:
    """An engine on which writing bars hits a full disk: SQLite for real (its file may not grow by
    more than a few pages); PostgreSQL as psycopg reports it (SQLSTATE 53100)."""
    engine = open_database(settings)
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            pages = connection.execute(text("PRAGMA page_count")).scalar_one()
        engine.dispose()

        @event.listens_for(engine, "connect")
        def _small_disk(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages + 3}")

    else:
        import psycopg

        def full(*_args: Any, **_kwargs: Any) -> None:
            orig = psycopg.errors.DiskFull(
                'could not extend file "base/16384/16412": No space left on device'
            )
            raise OperationalError("INSERT INTO raw_stock_data ...", {}, orig)

        monkeypatch.setattr(fetch_module, "upsert_bars", full)
    return engine


@pytest.mark.parametrize("closing_fails_once", [False, True])
def test_a_full_disk_names_the_file_and_the_ledger_row_ends_failed(
    make_settings: Callable[..., Settings],
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    closing_fails_once: bool,
) -> None:
    settings = make_settings(database_url, data={"start": "2012-01-02"})
    engine = _disk_full(settings, monkeypatch)
    if closing_fails_once:  # the first attempt to close the ledger row meets the full disk too
        real_finish, calls = store.finish_run, []

        def finish_once_full(*args: Any, **kwargs: Any) -> None:
            calls.append(kwargs)
            if len(calls) == 1:
                raise OperationalError(
                    "UPDATE pipeline_runs ...", {}, sqlite3.OperationalError("database or disk is full")
                )
            real_finish(*args, **kwargs)

        monkeypatch.setattr(store, "finish_run", finish_once_full)
    try:
        with (
            pytest.raises(StockCliError) as caught,
            pipeline_run(settings, command="fetch", as_of=AS_OF, engine=engine) as run,
        ):
            fetch_module.fetch(settings=settings, engine=run.engine, as_of=AS_OF)
    finally:
        engine.dispose()
    message = caught.value.message
    assert message.startswith("No space left to write the database"), message
    where = str(settings.data_dir / "stockcli.db") if database_url.startswith("sqlite") else "127.0.0.1"
    assert where in message and "Free space" in str(caught.value.hint)
    assert _ledger(settings) == [("failed", message)]


def test_an_operating_system_full_disk_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    target = tmp_path / "predictions" / "latest_predictions.json"
    target.parent.mkdir()
    with pytest.raises(OSError) as caught:
        write_atomically(target, "{}")
    assert caught.value.filename == str(target) and caught.value.errno == errno.ENOSPC
    assert list(target.parent.iterdir()) == []  # no temporary file left behind

    settings = load_settings(write_config(tmp_path), environ={})
    described = run_failure_error(settings, caught.value)
    assert described is not None and f"No space left on the disk to write {target}" in described.message


def test_report_on_a_database_it_cannot_open_says_cannot_read(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    open_database(settings).dispose()
    path = settings.data_dir / "stockcli.db"
    for extra in settings.data_dir.glob("stockcli.db-*"):
        extra.unlink()
    (settings.data_dir / "stockcli.db-wal").mkdir()  # SQLite cannot open the file's write-ahead log
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite3.connect(f"file:{path}?mode=ro", uri=True).execute("SELECT 1 FROM pipeline_runs")
    error = report_service.unreadable_database(settings, caught.value)
    assert error.message.startswith(f"Cannot read the database file {path}"), error.message
    assert "readable" in str(error.hint) and "write" not in error.message
