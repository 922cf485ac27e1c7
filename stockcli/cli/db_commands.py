"""`stockcli db upgrade` and `stockcli db current`."""

from __future__ import annotations

import typer

from stockcli.cli import output
from stockcli.cli.state import state

db_app = typer.Typer(help="The database schema (Alembic migrations).", no_args_is_help=True)


@db_app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Bring the database schema up to the newest revision."""
    from stockcli.services import schema

    result = schema.upgrade(state(ctx).settings())
    if state(ctx).json:
        output.emit("db upgrade", result)
    elif result.before == result.after:
        output.info(f"Schema already at {result.after} (head) in {result.database}.")
    else:
        output.info(
            f"Schema upgraded from {result.before or 'empty'} to {result.after} in {result.database}."
        )


@db_app.command("current")
def current(ctx: typer.Context) -> None:
    """Show the schema revision of the database and the newest one this version knows."""
    from stockcli.services import schema

    result = schema.status(state(ctx).settings())
    if state(ctx).json:
        output.emit("db current", result)
        return
    if result.up_to_date:
        status = "up to date"
    elif result.known:
        status = "behind: run `stockcli db upgrade`"
    else:
        status = "unknown revision, from a newer stockcli: upgrade stockcli"
    output.info(f"{result.database}: revision {result.current or 'none'} (head {result.head}, {status}).")
