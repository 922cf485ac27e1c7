"""Engines for SQLite (WAL, busy timeout) and PostgreSQL, and schema upgrades through Alembic (our own
version table, so that Optuna's and MLflow's migrations never collide with ours in one database)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError

from stockcli.config import Settings, redact_url
from stockcli.errors import EXIT_USAGE, ConfigError, LockHeldError, StockCliError
from stockcli.storage import (
    check_data_dir,
    describe_database_error,
    parse_database_url,
    prepare_folder,
    sqlite_file,
)

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "stockcli_alembic_version"
DATABASE_KEY = "[storage] database_url (or STOCKCLI_DATABASE_URL)"  # where errors say it is set


def migrations_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "migrations", here.parents[1] / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StockCliError(  # pragma: no cover - only a broken install gets here
        "Cannot find stockcli's database migrations.",
        hint="Install stockcli from its source tree (`pip install -e .`).",
    )


def make_engine(
    url: str, *, busy_timeout_s: float = 30.0, data_dir: Path | None = None, read_only: bool = False
) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys.

    `data_dir`: a SQLite file's folder is created only under it; elsewhere it must exist (ConfigError).
    `read_only`: nothing is created or changed, even in a read-only folder.
    """
    parsed = parse_database_url(url, what="database", key=DATABASE_KEY)
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        if read_only and path is not None:
            from sqlalchemy.pool import NullPool

            kwargs["creator"] = _read_only_sqlite(path, busy_timeout_s)
            kwargs["poolclass"] = NullPool
        elif path is not None:
            prepare_folder(
                path, data_dir=data_dir, what="database", key="[storage] database_url (STOCKCLI_DATABASE_URL)"
            )
        kwargs["connect_args"] = {"timeout": busy_timeout_s}
    elif parsed.get_backend_name() == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        kwargs["pool_pre_ping"] = True
        kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        engine = create_engine(parsed, **kwargs)
    except Exception as exc:  # missing driver and friends
        raise ConfigError(f"Cannot use database URL {redact_url(url)!r}: {exc}.") from None
    if engine.dialect.name == "sqlite":
        busy_ms = int(busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            if not read_only:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


def run_failure_error(settings: Settings, exc: BaseException) -> StockCliError | None:
    """The error to show (and record) for `exc` when it comes from a full disk or a damaged SQLite
    file of the app; None otherwise (`exc` stands as it is)."""
    import sqlite3

    from stockcli.storage import disk_full_error

    full = disk_full_error("database", settings.database_url, exc, folder=settings.data_dir)
    path = sqlite_file(settings.database_url)
    if full is not None or not isinstance(exc, DatabaseError) or path is None or not path.is_file():
        return full
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as connection:
            healthy = connection.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    except sqlite3.DatabaseError:
        healthy = False
    if healthy:
        return None
    return describe_database_error("database", settings.database_url, exc, key=DATABASE_KEY, damaged=True)


def _read_only_sqlite(path: Path, busy_timeout_s: float) -> Any:
    """A DB-API connection factory opening `path` read-only.

    A WAL database without its `-shm` file in a folder this user cannot write opens only as immutable
    (no writer has it open); NullPool makes that choice again for every connection.
    """
    import sqlite3
    from urllib.parse import quote

    base = f"file:{quote(str(path.resolve()))}?mode=ro"

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(base, uri=True, timeout=busy_timeout_s, check_same_thread=False)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        except sqlite3.OperationalError:
            connection.close()
            return sqlite3.connect(
                f"{base}&immutable=1", uri=True, timeout=busy_timeout_s, check_same_thread=False
            )
        return connection

    return connect


def alembic_config(engine: Engine | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


@functools.lru_cache(maxsize=1)
def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def known_revision(revision: str) -> bool:
    """Whether `revision` is one of this stockcli's migrations (else a newer stockcli wrote it)."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:  # alembic's ResolutionError and friends
        return False


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to `revision`; StockCliError (exit 2) for a revision this stockcli does
    not know (a newer stockcli migrated it), before touching anything."""
    from alembic import command

    current = current_revision(engine)
    if current is not None and not known_revision(current):
        raise StockCliError(
            f"The database {redact_url(engine.url.render_as_string(hide_password=True))} is at schema "
            f"revision {current}, which this stockcli does not know (its newest is {head_revision()}); "
            "nothing was changed.",
            hint="A newer stockcli migrated it: upgrade stockcli rather than running an older one on it.",
            exit_code=EXIT_USAGE,
        )
    command.upgrade(alembic_config(engine), revision)


def _upgrade_under_run_lock(settings: Settings, engine: Engine) -> None:
    """Migrate holding the run lock, so that two first runs never migrate at once (LockHeldError)."""
    from stockcli.db.lock import LOCK_FILE, run_lock

    try:
        with run_lock(engine, settings.data_dir / LOCK_FILE, "db upgrade"):
            if current_revision(engine) != head_revision():  # a run before this one may have done it
                upgrade_schema(engine)
    except LockHeldError as exc:
        engine.dispose()
        raise LockHeldError(
            f"{exc.message} This run had to create or upgrade the database schema first, which is done "
            "only under the lock; nothing was changed.",
            hint=exc.hint,
        ) from None


def open_database(settings: Settings, *, upgrade: bool = True) -> Engine:
    """The app's engine with the schema brought up to date; raises a clear error when unreachable."""
    check_data_dir(settings.data_dir)  # it holds the run lock and more, whatever the database
    engine = make_engine(
        settings.database_url,
        busy_timeout_s=settings.storage.sqlite_busy_timeout_s,
        data_dir=settings.data_dir,
    )
    if upgrade:
        try:
            with database_errors(settings):
                if current_revision(engine) != head_revision():
                    _upgrade_under_run_lock(settings, engine)
        except StockCliError:
            engine.dispose()
            raise
    return engine


@contextlib.contextmanager
def database_errors(settings: Settings) -> Iterator[None]:
    """Turn the driver's error on the app's database (unreachable, damaged, read-only, a missing
    role or database) into the one StockCliError that names it, for every command."""
    try:
        yield
    except DatabaseError as exc:  # OperationalError included
        raise describe_database_error("database", settings.database_url, exc, key=DATABASE_KEY) from None
