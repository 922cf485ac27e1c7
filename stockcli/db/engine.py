"""Engines for SQLite (WAL, busy timeout) and PostgreSQL, and schema upgrades through Alembic.

Every command brings the schema up to date before it works (`open_database`). Our Alembic version
table is `stockcli_alembic_version`, so Optuna's and MLflow's own migrations never collide with ours
when they share a database.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from stockcli.config import Settings, redact_url
from stockcli.errors import EXIT_USAGE, ConfigError, StockCliError

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "stockcli_alembic_version"


def migrations_dir() -> Path:
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "migrations", here.parents[1] / "_migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise StockCliError(  # pragma: no cover - only a broken install gets here
        "Cannot find stockcli's database migrations.",
        hint="Install stockcli from its source tree (`pip install -e .`).",
    )


def make_engine(url: str, *, busy_timeout_s: float = 30.0, sqlite_dir: Path | None = None) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"Invalid database URL {redact_url(url)!r}.",
            hint="Use sqlite:///path/to/file.db or postgresql+psycopg://user@host/db.",
        ) from None
    kwargs: dict[str, Any] = {"future": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
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
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

    return engine


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


def check_known_revision(engine: Engine) -> None:
    """Raise StockCliError (exit 2) when the database's revision is one this stockcli does not know.

    That is a database migrated by a newer stockcli: Alembic would fail with "Can't locate revision",
    and nothing here can migrate it, so say so before touching anything.
    """
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    current = current_revision(engine)
    if current is None:
        return
    try:
        known = ScriptDirectory.from_config(alembic_config()).get_revision(current) is not None
    except CommandError:  # alembic's ResolutionError and friends
        known = False
    if not known:
        raise StockCliError(
            f"The database {redact_url(engine.url.render_as_string(hide_password=True))} is at schema "
            f"revision {current}, which this stockcli does not know (its newest is {head_revision()}); "
            "nothing was changed.",
            hint="A newer stockcli migrated it: upgrade stockcli rather than running an older one on it.",
            exit_code=EXIT_USAGE,
        )


def upgrade_schema(engine: Engine, revision: str = "head") -> None:
    """Migrate the schema up to `revision`; StockCliError for a database from a newer stockcli."""
    from alembic import command

    check_known_revision(engine)
    command.upgrade(alembic_config(engine), revision)


def downgrade_schema(engine: Engine, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(engine), revision)


def open_database(settings: Settings, *, upgrade: bool = True) -> Engine:
    """The app's engine with the schema brought up to date; raises a clear error when unreachable."""
    engine = make_engine(
        settings.database_url,
        busy_timeout_s=settings.storage.sqlite_busy_timeout_s,
    )
    if upgrade:
        try:
            if current_revision(engine) != head_revision():
                upgrade_schema(engine)
        except OperationalError as exc:
            raise StockCliError(
                f"Cannot reach the database {redact_url(settings.database_url)}: {_first_line(exc)}",
                hint="Check [storage] database_url (or STOCKCLI_DATABASE_URL) and that the server is up.",
            ) from None
    return engine


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return redact_url(text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
