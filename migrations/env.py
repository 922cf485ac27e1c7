"""Alembic environment: the engine comes from stockcli's settings, never from alembic.ini."""

from __future__ import annotations

from alembic import context

from stockcli.db.engine import VERSION_TABLE, make_engine
from stockcli.db.models import Base

target_metadata = Base.metadata
config = context.config


def _engine():  # type: ignore[no-untyped-def]
    engine = config.attributes.get("engine")
    if engine is not None:
        return engine
    from stockcli.config import load_settings

    settings = load_settings()
    return make_engine(settings.database_url, busy_timeout_s=settings.storage.sqlite_busy_timeout_s)


def run_migrations_offline() -> None:
    from stockcli.config import load_settings

    context.configure(
        url=load_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        version_table=VERSION_TABLE,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = _engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            version_table=VERSION_TABLE,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
