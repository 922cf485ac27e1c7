"""The command table: every `stockcli` command once, in pipeline order (as dvc's `COMMANDS`).

Command modules define plain functions (and sub-apps such as `db`) and never import the root app;
`cli/app.py` registers what this table lists, in this order, which is also the order of `--help`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Command:
    """One command: a function (its docstring is the help), or a Typer app of sub-commands."""

    name: str
    function: Callable[..., Any] | None = None
    group: typer.Typer | None = None


COMMANDS: tuple[Command, ...] = (
    Command("fetch", fetch_commands.fetch_command),
    Command("process", dataset_commands.process_command),
    Command("build", dataset_commands.build_command),
    Command("tune", tune_commands.tune_command),
    Command("train", model_commands.train),
    Command("promote", model_commands.promote),
    Command("models", model_commands.models),
    Command("predict", ops_commands.predict),
    Command("monitor", ops_commands.monitor),
    Command("daily", ops_commands.daily),
    Command("retrain", ops_commands.retrain),
    Command("daemon", ops_commands.daemon),
    Command("backtest", ops_commands.backtest),
    Command("report", report_commands.report),
    Command("serve", report_commands.serve),
    Command("notify", notify_commands.notify),
    Command("db", group=db_commands.db_app),
)


def register(app: typer.Typer) -> None:
    """Add every command of the table to `app`, in the table's order."""
    for command in COMMANDS:
        if command.group is not None:
            app.add_typer(command.group, name=command.name)
        elif command.function is not None:
            app.command(command.name)(command.function)
