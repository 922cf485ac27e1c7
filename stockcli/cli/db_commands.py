"""`stockcli db upgrade` and `stockcli db current`."""

from __future__ import annotations

import typer

from stockcli.cli import output
from stockcli.cli.state import state

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Bring the database schema up to the newest revision."""
    from stockcli.config import redact_url
    from stockcli.db.engine import (
        current_revision,
        database_errors,
        head_revision,
        open_database,
        upgrade_schema,
    )

    settings = state(ctx).settings()
    engine = open_database(settings, upgrade=False)
    try:
        with database_errors(settings):
            before = current_revision(engine)
            upgrade_schema(engine)
            after = current_revision(engine)
    finally:
        engine.dispose()
    result = {
        "database": redact_url(settings.database_url),
        "from": before,
        "to": after,
        "head": head_revision(),
    }
    if state(ctx).json:
        output.emit_json(result)
    elif before == after:
        output.info(f"Schema already at {after} (head) in {result['database']}.")
    else:
        output.info(f"Schema upgraded from {before or 'empty'} to {after} in {result['database']}.")


@db_app.command("current")
def current(ctx: typer.Context) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from stockcli.config import redact_url
    from stockcli.db.engine import current_revision, database_errors, head_revision, open_database

    settings = state(ctx).settings()
    engine = open_database(settings, upgrade=False)
    try:
        with database_errors(settings):
            revision = current_revision(engine)
    finally:
        engine.dispose()
    head = head_revision()
    result = {
        "database": redact_url(settings.database_url),
        "current": revision,
        "head": head,
        "up_to_date": revision == head,
    }
    if state(ctx).json:
        output.emit_json(result)
    else:
        from stockcli.db.engine import alembic_config

        if revision == head:
            status = "up to date"
        elif revision is None or _known(alembic_config(), revision):
            status = "behind: run `stockcli db upgrade`"
        else:
            status = "unknown revision, from a newer stockcli: upgrade stockcli"
        output.info(f"{result['database']}: revision {revision or 'none'} (head {head}, {status}).")


def _known(config: object, revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(config).get_revision(revision) is not None  # type: ignore[arg-type]
    except CommandError:
        return False
