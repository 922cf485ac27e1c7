"""The root Typer app: global options, command registration, and errors turned into exit codes.

Global options (`--config`, `--as-of`, `--json`, `--verbose`) work before or after the command name:
`stockcli --as-of 2012-11-16 daily --json` and `stockcli daily --as-of 2012-11-16 --json` mean the same.
Only this module turns errors into exit codes; a user error prints one red line, `--verbose` adds the
traceback.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from stockcli.errors import EXIT_UNEXPECTED, EXIT_USAGE, StockCliError

GLOBAL_VALUE_OPTIONS = ("--config", "--as-of")
GLOBAL_FLAGS = ("--json", "--verbose", "-v")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options given after a command name to the front, where the root app parses them."""
    front: list[str] = []
    rest: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest.extend(args[index:])
            break
        name = arg.split("=", 1)[0]
        if name in GLOBAL_VALUE_OPTIONS:
            if "=" in arg:
                front.append(arg)
            else:
                front.extend(args[index : index + 2])
                index += 1
        elif arg in GLOBAL_FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
        index += 1
    return front + rest


@dataclass
class CliState:
    """Global options, and the Settings built from them on first use."""

    config_path: Path | None = None
    as_of_text: str | None = None
    json: bool = False
    verbose: bool = False
    _settings: Any = field(default=None, repr=False)

    def settings(self, **overrides: dict[str, Any]) -> Any:
        from stockcli.config import load_settings

        if overrides:
            return load_settings(self.config_path, overrides=overrides)
        if self._settings is None:
            self._settings = load_settings(self.config_path)
        return self._settings

    def as_of(self, settings: Any) -> date:
        from stockcli import clock

        if self.as_of_text:
            return clock.parse_date(self.as_of_text, label="--as-of")
        return clock.today(settings.data.exchange)


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def report_error(cli_state: CliState | None, exc: BaseException, exit_code: int) -> None:
    from stockcli.cli import output

    verbose = bool(cli_state and cli_state.verbose)
    if isinstance(exc, StockCliError):
        message = str(exc)
    else:
        message = (
            f"Unexpected error: {type(exc).__name__}: {exc}. Run again with --verbose for the traceback."
        )
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    output.error(message)
    if cli_state and cli_state.json:
        output.emit_json({"status": "error", "error": message, "exit_code": exit_code})


class StockCliGroup(TyperGroup):
    """Hoists global options and maps errors to exit codes for every subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except StockCliError as exc:
            report_error(ctx.obj if isinstance(ctx.obj, CliState) else None, exc, exc.exit_code)
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("click") or type(exc).__name__ in (
                "UsageError",
                "BadParameter",
            ):
                raise
            report_error(ctx.obj if isinstance(ctx.obj, CliState) else None, exc, EXIT_UNEXPECTED)
            raise typer.Exit(EXIT_UNEXPECTED) from None


app = typer.Typer(
    cls=StockCliGroup,
    name="stockcli",
    help="The whole life of a daily stock-price model: fetch, process, build, tune, train, promote, "
    "predict, monitor, retrain; `stockcli daily` does the day's work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Config file (default: $STOCKCLI_CONFIG, else ./config.toml).",
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Run as of this date, YYYY-MM-DD (default: today in the exchange's time zone).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
) -> None:
    """Global options; they work before or after the command name."""
    ctx.obj = CliState(config_path=config, as_of_text=as_of, json=json_output, verbose=verbose)
    import logging

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _register() -> None:
    from stockcli.cli import commands  # noqa: F401  (registers the commands on `app`)


_register()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    try:
        app(args=argv, prog_name="stockcli")
    except SystemExit:
        raise
    except StockCliError as exc:  # raised outside a subcommand (e.g. while parsing)
        report_error(None, exc, exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


__all__ = ["EXIT_USAGE", "CliState", "app", "main", "state"]
