"""`stockcli fetch`: bring the stored daily bars up to the as-of date."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from stockcli.choices import Source
from stockcli.cli import output
from stockcli.cli.state import TickersOption, invocation

if TYPE_CHECKING:
    from stockcli.services.fetch import FetchResult


def fetch_command(
    ctx: typer.Context,
    ticker: TickersOption = None,
    source: Annotated[
        Source | None,
        typer.Option(
            "--source",
            help="Where bars come from (default: [data] source, or csv with --csv-dir).",
            show_default=False,
        ),
    ] = None,
    csv_dir: Annotated[
        Path | None,
        typer.Option(
            "--csv-dir",
            metavar="DIR",
            help="Folder of <TICKER>.csv files for the csv source.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Fetch daily bars: incremental per ticker, restated histories replaced whole, nothing after --as-of.

    Exit codes: 0 all saved, 3 some tickers failed or had rows rejected (the rest saved), 2 bad input
    files, 4 no data.
    """
    from stockcli.config import normalize_ticker
    from stockcli.errors import StockCliError
    from stockcli.services.fetch import fetch
    from stockcli.services.runtime import pipeline_run

    cli, settings, as_of = invocation(ctx)
    tickers = [normalize_ticker(t) for t in ticker] if ticker else None
    directory = csv_dir.expanduser().resolve() if csv_dir is not None else None
    result: FetchResult | None = None
    try:
        with pipeline_run(settings, command="fetch", as_of=as_of) as handle:
            with output.progress_bar(quiet=cli.json, describe=lambda ticker: f"Fetched {ticker}") as progress:
                result = fetch(
                    settings=settings,
                    engine=handle.engine,
                    as_of=as_of,
                    tickers=tickers,
                    source=source,
                    csv_dir=directory,
                    progress=progress,
                )
            handle.details = result.details()
            failure = result.failure()
            if failure is not None:
                raise failure  # recorded in the ledger as partial or failed
    except StockCliError as exc:
        if result is None:
            raise
        _render(result, as_json=cli.json)
        output.error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    _render(result, as_json=cli.json)


def _render(result: FetchResult, *, as_json: bool) -> None:
    if as_json:
        output.emit("fetch", **result.to_json())
        return
    output.records(
        f"fetch ({result.source})",
        (
            ("ticker", lambda t: t.ticker),
            ("added rows", lambda t: t.added),
            ("updated rows", lambda t: t.updated),
            ("rejected rows", lambda t: t.rejected),
            ("last date", lambda t: t.last_date.isoformat() if t.last_date else "-"),
            ("status", lambda t: t.status),
            ("note", lambda t: _shorten(t.error or t.note or "")),
        ),
        result.tickers,
        caption=f"bars up to {result.cutoff} (the last closed session as of {result.as_of})",
    )


def _shorten(text: str, limit: int = 90) -> str:
    """Keep table rows one line or two; the full text is in --json and the error line."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
