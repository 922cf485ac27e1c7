"""`stockcli process` and `stockcli build`: versioned datasets and their built splits."""

from __future__ import annotations

import typer

from stockcli.cli import output
from stockcli.cli.state import RunIdOption, TickersOption, invocation


def _describe(stage: str) -> str:
    return "computing features" if stage.startswith("features ") else stage


def process_command(
    ctx: typer.Context,
    ticker: TickersOption = None,
) -> None:
    """Freeze the stored bars up to --as-of into a versioned dataset (features and next-session targets)."""
    from stockcli.services.process import process
    from stockcli.services.runtime import pipeline_run

    cli_state, settings, as_of = invocation(ctx)
    with (
        pipeline_run(settings, command="process", as_of=as_of) as run,
        output.progress_bar(quiet=cli_state.json, describe=_describe) as progress,
    ):
        result = process(
            settings=settings, engine=run.engine, as_of=as_of, tickers=ticker or None, progress=progress
        )
        run.details.update(
            dataset_run_id=result.run_id,
            sessions=result.sessions,
            reused=result.reused,
            content_hash=result.content_hash,
        )
    if cli_state.json:
        output.emit("process", result, status="ok")
        return
    output.table(
        f"Dataset {result.run_id}" + (" (unchanged, reused)" if result.reused else ""),
        ["tickers", "sessions", "features", "first session", "last session", "content hash"],
        [
            [
                ", ".join(result.tickers),
                result.sessions,
                result.n_features,
                result.start_date,
                result.end_date,
                result.content_hash[:16],
            ]
        ],
        caption=f"as of {as_of.isoformat()}; next: `stockcli build --run-id {result.run_id}`",
    )
    output.table(
        "Each ticker's own history (a young ticker adds windows, it never removes anyone's)",
        ["ticker", "usable sessions", "first session", "last session", "windows"],
        [
            [ticker, item.sessions, item.first_session or "-", item.last_session or "-", item.windows]
            for ticker, item in result.per_ticker.items()
        ],
        caption=f"context covariates: {', '.join(result.context_tickers) or 'none'}",
    )
    for warning in result.warnings:
        output.warn(warning)


def build_command(
    ctx: typer.Context,
    run_id: RunIdOption = None,
) -> None:
    """Split a dataset chronologically into windows and fit scalers on the training part only."""
    from stockcli.services.build import build
    from stockcli.services.runtime import pipeline_run

    cli_state, settings, as_of = invocation(ctx)
    with (
        pipeline_run(settings, command="build", as_of=as_of) as run,
        output.progress_bar(quiet=cli_state.json, describe=_describe) as progress,
    ):
        result = build(settings=settings, engine=run.engine, run_id=run_id, progress=progress)
        run.details.update({"dataset_run_id": result.run_id, **{p.name: p.windows for p in result.parts}})
    if cli_state.json:
        output.emit("build", result, status="ok")
        return
    output.table(
        f"Built {result.run_id}: {len(result.tickers)} tickers ({', '.join(result.tickers)}), "
        f"{result.sessions} sessions, {result.n_features} features, windows of {result.sequence_length}, "
        f"target {result.target_kind}",
        ["part", "windows", "first base", "last base", "first target", "last target"],
        [
            [
                part.name,
                part.windows,
                part.first_base_date,
                part.last_base_date,
                part.first_target_date,
                part.last_target_date,
            ]
            for part in result.parts
        ],
        caption=(
            f"dropped by the correlation filter: {', '.join(result.dropped_features)}"
            if result.dropped_features
            else None
        ),
    )
