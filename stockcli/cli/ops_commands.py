"""`predict`, `monitor`, `daily` and `retrain`: the daily operations."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stockcli.cli import output
from stockcli.cli.app import app, state


def _prediction_rows(predictions: Any) -> list[list[str]]:
    return [
        [
            p.ticker,
            p.base_date.isoformat(),
            output.fmt_float(p.base_close),
            output.fmt_float(p.predicted_close),
            f"{p.change_pct:+.2f}%",
            p.target_date.isoformat(),
            p.model_version,
        ]
        for p in predictions
    ]


PREDICTION_COLUMNS = [
    "ticker",
    "base date",
    "base close",
    "predicted close",
    "change",
    "target date",
    "model",
]


def _show_monitor(result: Any) -> None:
    overall = result.overall
    rows = [
        [
            ticker,
            str(m.sessions),
            output.fmt_pct(m.mape),
            output.fmt_float(m.mae),
            output.fmt_pct(m.direction_accuracy, 1),
            output.fmt_pct(m.skill, 1),
        ]
        for ticker, m in result.per_ticker.items()
    ]
    rows.append(
        [
            "all",
            str(overall.sessions),
            output.fmt_pct(overall.mape),
            output.fmt_float(overall.mae),
            output.fmt_pct(overall.direction_accuracy, 1),
            output.fmt_pct(overall.skill, 1),
        ]
    )
    output.table(
        f"Live accuracy, last {result.overall.sessions} evaluated sessions (model {result.model_version or 'all'})",
        ["ticker", "sessions", "MAPE", "MAE", "direction", "skill vs naive"],
        rows,
        caption=f"{result.evaluated} predictions newly evaluated, {result.pending} waiting for their bar.",
    )
    verdict = "[bold red]retrain needed[/]" if result.retrain_needed else "no retrain"
    output.console.print(f"Decision: {verdict}. ", end="")
    output.info(result.reason)


def monitor_json(result: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "as_of": result.as_of.isoformat(),
        "model_version": result.model_version,
        "evaluated": result.evaluated,
        "pending": result.pending,
        "overall": asdict(result.overall),
        "per_ticker": {t: asdict(m) for t, m in result.per_ticker.items()},
        "retrain_needed": result.retrain_needed,
        "reason": result.reason,
        "cooldown_active": result.cooldown_active,
        "last_retrain_as_of": result.last_retrain_as_of,
    }


@app.command()
def predict(
    ctx: typer.Context,
    version: Annotated[
        str | None, typer.Option("--version", help="Model version (default: the Production alias).")
    ] = None,
) -> None:
    """Predict every ticker's close for the next trading session."""
    from stockcli.services.predict import predict as predict_service
    from stockcli.services.runtime import pipeline_run

    cli = state(ctx)
    settings = cli.settings()
    as_of = cli.as_of(settings)
    with pipeline_run(settings, command="predict", as_of=as_of) as run:
        result = predict_service(
            settings=settings,
            engine=run.engine,
            as_of=as_of,
            model_version=version,
            pipeline_run_id=run.run_id,
        )
        run.details.update(
            {"model_version": result.model_version, "target_date": result.target_date.isoformat()}
        )
    if cli.json:
        output.emit_json(
            {
                "as_of": result.as_of,
                "model_version": result.model_version,
                "target_date": result.target_date,
                "predictions": [
                    {
                        "ticker": p.ticker,
                        "base_date": p.base_date,
                        "base_close": p.base_close,
                        "predicted_close": p.predicted_close,
                        "change_pct": p.change_pct,
                        "target_date": p.target_date,
                    }
                    for p in result.predictions
                ],
                "files": list(result.files),
            }
        )
        return
    output.table(
        f"Next-session predictions as of {as_of.isoformat()}",
        PREDICTION_COLUMNS,
        _prediction_rows(result.predictions),
    )


@app.command()
def monitor(ctx: typer.Context) -> None:
    """Score matured predictions against real closes; say whether a retrain is needed."""
    from stockcli.ml import registry
    from stockcli.services.monitor import monitor as monitor_service
    from stockcli.services.runtime import pipeline_run

    cli = state(ctx)
    settings = cli.settings()
    as_of = cli.as_of(settings)
    with pipeline_run(settings, command="monitor", as_of=as_of) as run:
        version = registry.resolve_alias(settings, "Production")
        result = monitor_service(
            settings=settings, engine=run.engine, as_of=as_of, model_version=str(version) if version else None
        )
        run.details.update({"retrain_needed": result.retrain_needed, "reason": result.reason})
    if cli.json:
        output.emit_json(monitor_json(result))
    else:
        _show_monitor(result)


@app.command()
def daily(
    ctx: typer.Context,
    no_retrain: Annotated[
        bool, typer.Option("--no-retrain", help="Never retrain, even when the monitor says so.")
    ] = False,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", min=1, help="Tuning trials if a retrain runs.")
    ] = None,
) -> None:
    """The day's work: fetch, predict the next session, monitor, retrain when needed. For cron."""
    from stockcli.services.daily import daily as daily_service
    from stockcli.services.daily import daily_json, exit_code_for
    from stockcli.services.runtime import pipeline_run

    cli = state(ctx)
    settings = cli.settings()
    as_of = cli.as_of(settings)
    with (
        pipeline_run(settings, command="daily", as_of=as_of) as run,
        output.status("daily run", quiet=cli.json) as progress,
    ):
        result = daily_service(
            settings=settings,
            engine=run.engine,
            as_of=as_of,
            run=run,
            allow_retrain=not no_retrain,
            n_trials=n_trials,
            progress=progress,
        )
    code = exit_code_for(result)
    if cli.json:
        output.emit_json(daily_json(result))
    else:
        _show_daily(result)
    if code:
        raise typer.Exit(code)


def _show_daily(result: Any) -> None:
    fetched = result.fetch
    failed = [r.ticker for r in fetched.tickers if r.status in ("failed", "no_data")]
    output.info(f"Daily run as of {result.as_of.isoformat()}: model version {result.model_version}.")
    if failed:
        output.warn(f"fetch failed for {', '.join(failed)}; the rest was saved.")
    if result.bootstrapped and result.retrain is not None:
        output.info(
            f"No production model existed: trained and promoted version {result.retrain.model_version}."
        )
    if result.predictions:
        output.table("Next-session predictions", PREDICTION_COLUMNS, _prediction_rows(result.predictions))
    else:
        output.warn(next((m for m in result.messages if m.startswith("no prediction")), "no prediction made"))
    if result.monitor is not None:
        _show_monitor(result.monitor)
    if result.retrain is not None and result.retrain.ran and not result.bootstrapped:
        verdict = "promoted" if result.retrain.promoted else "not promoted"
        output.info(
            f"Retrained: version {result.retrain.model_version} {verdict} ({result.retrain.promotion_reason})."
        )


@app.command()
def retrain(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if the monitor does not ask for it.")
    ] = False,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", min=1, help="Tuning trials (default: config).")
    ] = None,
) -> None:
    """process -> build -> tune -> train -> promote; only when needed unless --force."""
    from stockcli.ml import registry
    from stockcli.services.monitor import monitor as monitor_service
    from stockcli.services.retrain import retrain as retrain_service
    from stockcli.services.runtime import pipeline_run

    cli = state(ctx)
    settings = cli.settings()
    as_of = cli.as_of(settings)
    with pipeline_run(settings, command="retrain", as_of=as_of) as run:
        version = registry.resolve_alias(settings, "Production")
        monitored = None
        if not force and version is not None:
            monitored = monitor_service(
                settings=settings, engine=run.engine, as_of=as_of, model_version=str(version)
            )
        with output.status("retrain", quiet=cli.json) as progress:
            result = retrain_service(
                settings=settings,
                engine=run.engine,
                as_of=as_of,
                force=force,
                production_version=str(version) if version else None,
                monitor_result=monitored,
                run=run,
                n_trials=n_trials,
                progress=progress,
            )
        run.details["retrained"] = result.ran
        if not result.ran:
            run.status = "skipped"
    if cli.json:
        output.emit_json(result)
        return
    if not result.ran:
        output.info(f"No retrain. {result.reason}")
        return
    output.info(
        f"Retrained ({result.reason}) on dataset {result.dataset_run_id} with {result.n_trials} tuning trials."
    )
    verdict = "promoted to Production" if result.promoted else "not promoted"
    output.info(f"Model version {result.model_version}: {verdict}. {result.promotion_reason or ''}")
    output.info("Step times: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.steps_s.items()))


@app.command()
def daemon(ctx: typer.Context) -> None:
    """Run `daily` on the cron schedule of the daemon section (exchange time zone) until SIGTERM/SIGINT."""
    import logging

    from stockcli.daemon import next_run_time, run_daemon

    cli = state(ctx)
    settings = cli.settings()
    if not cli.verbose:
        logging.getLogger("stockcli").setLevel(logging.INFO)
        logging.getLogger("apscheduler").setLevel(logging.INFO)

    def announce(scheduler: Any) -> None:
        next_run = next_run_time(scheduler)
        when = f"{next_run:%Y-%m-%d %H:%M %Z}" if next_run is not None else "not scheduled"
        output.info(
            f"stockcli daemon: schedule '{settings.daemon.cron}' ({settings.data.exchange}); next run {when}."
        )

    run_daemon(settings, on_start=announce)
    output.info("stockcli daemon stopped.")


@app.command()
def backtest(
    ctx: typer.Context,
    start: Annotated[str, typer.Option("--start", help="First session to replay, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--end", help="Last session to replay, YYYY-MM-DD.")],
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace", help="Scratch folder (default: <data_dir>/backtests/<start>_<end>_<time>)."
        ),
    ] = None,
    n_trials: Annotated[
        int | None, typer.Option("--n-trials", min=1, help="Tuning trials per retrain.")
    ] = None,
) -> None:
    """Replay `daily` for every session in a range, in a scratch workspace; summarize against naive."""
    from datetime import datetime
    from pathlib import Path

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from stockcli import clock
    from stockcli.services.backtest import backtest as backtest_service

    cli = state(ctx)
    settings = cli.settings()
    first = clock.parse_date(start, label="--start")
    last = clock.parse_date(end, label="--end")
    folder = (
        Path(workspace).expanduser().resolve()
        if workspace
        else settings.data_dir / "backtests" / f"{first}_{last}_{datetime.now():%Y%m%dT%H%M%S}"
    )
    if cli.json:
        result = backtest_service(
            settings=settings, start=first, end=last, workspace=folder, n_trials=n_trials
        )
        output.emit_json(result)
        return
    with Progress(
        TextColumn("backtest"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=output.console,
    ) as bar:
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, message: str) -> None:
            bar.update(task, completed=done, total=total, description=message)

        result = backtest_service(
            settings=settings, start=first, end=last, workspace=folder, n_trials=n_trials, progress=progress
        )
    m = result.metrics
    output.info(
        f"Replayed {result.sessions} sessions {result.start}..{result.end} in {result.wall_s:.0f} s "
        f"({result.sessions_per_s:.2f} sessions/s); workspace {result.workspace}."
    )
    output.table(
        "Live-style accuracy over the range",
        ["ticker", "predictions", "MAPE", "MAE", "naive MAE", "direction", "skill vs naive"],
        [
            [
                t,
                v["samples"],
                output.fmt_pct(v["mape"]),
                output.fmt_float(v["mae"]),
                output.fmt_float(v["naive_mae"]),
                output.fmt_pct(v["direction_accuracy"], 1),
                output.fmt_pct(v["skill"], 1),
            ]
            for t, v in result.per_ticker.items()
        ]
        + [
            [
                "all",
                m["samples"],
                output.fmt_pct(m["mape"]),
                output.fmt_float(m["mae"]),
                output.fmt_float(m["naive_mae"]),
                output.fmt_pct(m["direction_accuracy"], 1),
                output.fmt_pct(m["skill"], 1),
            ]
        ],
    )
    output.table(
        f"Retrains ({len(result.retrains)}), promotions ({result.promotions})",
        ["as of", "why", "version", "promoted"],
        [
            [r.as_of.isoformat(), r.reason, r.model_version, "yes" if r.promoted else "no"]
            for r in result.retrains
        ],
    )
    if result.failures:
        output.warn(f"{result.sessions_failed} sessions failed: " + "; ".join(result.failures[:5]))
