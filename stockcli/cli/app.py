"""The root Typer app: global options, the commands of `cli/commands.py`, errors turned into exit codes.

Global options work before or after the command name. Only this module turns errors into exit codes:
one red line for a user error, `--verbose` adds the traceback.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from stockcli import interrupts
from stockcli.cli.commands import register
from stockcli.cli.state import CliState
from stockcli.errors import EXIT_UNEXPECTED, StockCliError

GLOBAL_VALUE_OPTIONS = ("--config", "--as-of")
GLOBAL_FLAGS = ("--json", "--verbose", "-v")


def hoist_global_options(args: list[str]) -> list[str]:
    """Move global options given after a command name to the front, where the root app parses them."""
    front: list[str] = []
    rest: list[str] = []
    remaining = iter(args)
    for arg in remaining:
        if arg == "--":
            rest += [arg, *remaining]
        elif arg.split("=", 1)[0] in GLOBAL_VALUE_OPTIONS:
            front += [arg] if "=" in arg else [arg, *itertools.islice(remaining, 1)]
        elif arg in GLOBAL_FLAGS:
            front.append(arg)
        else:
            rest.append(arg)
    return front + rest


def report_error(cli_state: CliState | None, exc: BaseException, exit_code: int) -> None:
    from stockcli.cli import output
    from stockcli.redact import redact_traceback, redact_url

    verbose = bool(cli_state and cli_state.verbose)
    if isinstance(exc, StockCliError):
        message = str(exc)
    else:
        message = (
            f"Unexpected error: {type(exc).__name__}: {exc}. Run again with --verbose for the traceback."
        )
    message = redact_url(message)  # an exception's text may quote a URL with its password
    if verbose:
        sys.stderr.write(redact_traceback(exc))
    output.error(message)
    if cli_state and cli_state.json:
        output.emit("error", status="error", error=message, exit_code=exit_code)


def tell_failure(ctx: Any, exit_code: int, exc: BaseException | None) -> None:
    """Send the `failure` notification of a command that ends with `exit_code`; never raises."""
    cli_state = ctx.obj if isinstance(ctx.obj, CliState) else None
    command = ctx.invoked_subcommand
    if cli_state is None or command is None or command == "notify":
        return
    try:
        settings = cli_state.settings()
    except Exception:  # no settings: no notification URLs either
        return
    if not settings.notify.urls:
        return
    from stockcli.notify import notify_failure

    error = hint = None
    if isinstance(exc, StockCliError):
        error, hint = exc.message, exc.hint
    elif exc is not None:
        error = f"Unexpected error: {type(exc).__name__}: {exc}"
    notify_failure(
        settings, command=command, exit_code=exit_code, error=error, hint=hint, since=cli_state.started_at
    )


def fail(ctx: Any, exc: BaseException, exit_code: int) -> typer.Exit:
    """Report a subcommand's error (one red line, JSON too with --json), notify, and exit with `exit_code`."""
    report_error(ctx.obj if isinstance(ctx.obj, CliState) else None, exc, exit_code)
    tell_failure(ctx, exit_code, exc)
    return typer.Exit(exit_code)


class StockCliGroup(TyperGroup):
    """Hoists global options and maps errors to exit codes for every subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(list(args)))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except StockCliError as exc:
            raise fail(ctx, exc, exc.exit_code) from None
        except KeyboardInterrupt:  # SIGINT / SIGTERM: the ledger says `interrupted`; 130 / 143
            code = interrupts.exit_code()
            sys.stderr.write(f"Interrupted ({interrupts.describe()}).\n")
            interrupts.handled()
            raise typer.Exit(code) from None
        except typer.Exit as exc:  # a command's own non-zero exit (3 partial, 4 nothing to do...)
            if exc.exit_code not in (0, 130, 143):
                tell_failure(ctx, exc.exit_code, None)
            raise
        except typer.Abort:
            raise
        except Exception as exc:
            if type(exc).__module__.startswith("click") or type(exc).__name__ in (
                "UsageError",
                "BadParameter",
            ):
                raise
            raise fail(ctx, exc, EXIT_UNEXPECTED) from None


app = typer.Typer(
    cls=StockCliGroup,
    name="stockcli",
    help="The whole life of a daily stock-price model: fetch, process, build, tune, train, promote, "
    "predict, monitor, retrain; `stockcli daily` does the day's work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain help: Rich markup would swallow every `[data]`, `[tuning]`... quoted in help texts.
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 120},
)


def version() -> str:
    """The installed package's version (its metadata), else the source tree's `stockcli.__version__`."""
    from importlib import metadata

    try:
        return metadata.version("stockcli")
    except metadata.PackageNotFoundError:
        from stockcli import __version__

        return __version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"stockcli {version()}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="Config file (default: $STOCKCLI_CONFIG, else ./config.toml).",
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="YYYY-MM-DD",
            help="Run as of this date, YYYY-MM-DD (default: today in the exchange's time zone).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug logs.")] = False,
    show_version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_show_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """Global options; they work before or after the command name."""
    ctx.obj = CliState(config_path=config, as_of_text=as_of, json=json_output, verbose=verbose)
    import logging

    from stockcli.redact import install_log_redaction

    install_log_redaction()  # before any library logs: MLflow's own records quote its tracking URI
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


register(app)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    interrupts.install()
    try:
        app(args=argv, prog_name="stockcli")
    except SystemExit:
        raise
    except StockCliError as exc:  # raised outside a subcommand (e.g. while parsing)
        report_error(None, exc, exc.exit_code)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(interrupts.exit_code())
