"""The command table: every `stockcli` command once, in pipeline order (as dvc's `COMMANDS`).

Command modules define plain functions (and sub-apps such as `db`) and never import the root app;
`cli/app.py` registers what this table lists, in this order, which is also the order of `--help`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from stockcli.cli import (
    dataset_commands,
    db_commands,
    fetch_commands,
    model_commands,
    notify_commands,
    ops_commands,
    report_commands,
    tune_commands,
)

# Each command: a function (its docstring is the help), or a Typer app of sub-commands.
COMMANDS: dict[str, Callable[..., Any] | typer.Typer] = {
    "fetch": fetch_commands.fetch_command,
    "process": dataset_commands.process_command,
    "build": dataset_commands.build_command,
    "tune": tune_commands.tune_command,
    "train": model_commands.train,
    "promote": model_commands.promote,
    "models": model_commands.models,
    "predict": ops_commands.predict,
    "monitor": ops_commands.monitor,
    "daily": ops_commands.daily,
    "retrain": ops_commands.retrain,
    "daemon": ops_commands.daemon,
    "backtest": ops_commands.backtest,
    "report": report_commands.report,
    "serve": report_commands.serve,
    "notify": notify_commands.notify,
    "db": db_commands.db_app,
}


def register(app: typer.Typer) -> None:
    """Add every command of the table to `app`, in the table's order."""
    for name, command in COMMANDS.items():
        if isinstance(command, typer.Typer):
            app.add_typer(command, name=name)
        else:
            app.command(name)(command)
