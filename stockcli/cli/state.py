"""The global options of one invocation, shared by every command through the Typer context.

Command modules import `state` from here, never the root app: `cli/app.py` builds the app from the
command table in `cli/commands.py`, so the imports run one way (app -> commands -> command modules).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer


@dataclass
class CliState:
    """Global options, and the Settings built from them on first use."""

    config_path: Path | None = None
    as_of_text: str | None = None
    json: bool = False
    verbose: bool = False
    # When this invocation began: the ledger row of its run is the newest this process started since.
    started_at: datetime = field(default_factory=lambda: datetime.now(tz=UTC))
    _settings: Any = field(default=None, repr=False)

    def settings(self) -> Any:
        from stockcli.config import load_settings

        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def as_of(self, settings: Any) -> date:
        from stockcli import clock

        if self.as_of_text:
            return clock.parse_as_of(self.as_of_text, settings.data.exchange)
        return clock.today(settings.data.exchange)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def invocation(ctx: typer.Context) -> tuple[CliState, Any, date]:
    """This invocation's global options, its Settings and its as-of date."""
    cli = state(ctx)
    settings = cli.settings()
    return cli, settings, cli.as_of(settings)


# Options that several commands take, declared once.
RunIdOption = Annotated[
    str | None,
    typer.Option("--run-id", help="Dataset id (default: the newest processed dataset).", show_default=False),
]
TickersOption = Annotated[
    list[str] | None,
    typer.Option(
        "--ticker",
        "-t",
        metavar="TICKER",
        help="Only this ticker; repeat for several (default: [data] tickers).",
        show_default=False,
    ),
]
RetrainTrialsOption = Annotated[
    int | None,
    typer.Option("--n-trials", min=1, help="Tuning trials per retrain (default: [tuning] n_trials)."),
]
