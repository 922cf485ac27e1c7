"""`predict`, `monitor`, `daily` and `retrain`: the daily operations."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stockcli import formats
from stockcli.cli import output
from stockcli.cli.state import RetrainTrialsOption, invocation, state


def _served(p: Any) -> str:
    return output.fmt_served(p.source, p.p_value, p.interval_source) + (" (unseen)" if p.unseen else "")


PREDICTION_COLUMNS: tuple[output.Column, ...] = (
    ("ticker", lambda p: p.ticker),
    ("base close", lambda p: formats.number(p.base_close)),
    ("predicted close", lambda p: formats.number(p.predicted_close)),
    ("change", lambda p: f"{p.change_pct:+.2f}%"),
    ("80% interval", lambda p: output.band(p.lower_80, p.upper_80)),
    ("95% interval", lambda p: output.band(p.lower_95, p.upper_95)),
    ("P(up)", lambda p: formats.percent(p.p_up, 0)),
    ("served (point / interval)", _served),
    ("target date", lambda p: p.target_date.isoformat()),
    ("model", lambda p: p.model_version),
)
# Dropped first on a narrow output.
PREDICTION_SECONDARY = ["model", "target date", "base close", "80% interval"]


def _show_predictions(title: str, predictions: Any, failed: Any) -> None:
    if predictions:
        output.records(
            title,
            PREDICTION_COLUMNS,
            predictions,
            secondary=PREDICTION_SECONDARY,
            caption="Point: the model where it beat the naive forecast significantly on the promotion "
            "window, else the last close (p: that test's p-value). Intervals: the incumbent (the blend by "
            "default), or a candidate that beat it (for one ticker, the pooled choice) in the family-corrected "
            "test. `--json` adds the 5- and 20-session horizons with VaR/ES.",
        )
    for failure in failed:
        output.warn(f"no prediction for {failure.ticker}: {failure.reason}")


# One row per (ticker, its WindowMetrics) and one for ("all", the overall ones).
MONITOR_COLUMNS: tuple[output.Column, ...] = (
    ("ticker", lambda row: row[0]),
    ("sessions", lambda row: str(row[1].sessions)),
    ("MAE", lambda row: formats.number(row[1].mae)),
    ("naive MAE", lambda row: formats.number(row[1].naive_mae)),
    ("skill vs naive", lambda row: formats.percent(row[1].skill, 1)),
    ("direction", lambda row: formats.percent(row[1].direction_accuracy, 1)),
    ("80% cover", lambda row: formats.percent(row[1].coverage_80, 1)),
    ("95% cover", lambda row: formats.percent(row[1].coverage_95, 1)),
)


def _show_monitor(result: Any) -> None:
    waiting = f"{result.evaluated} predictions newly scored, {result.pending} waiting for their bar."
    sessions = result.overall.sessions
    if sessions:
        output.records(
            f"Live accuracy, last {sessions} scored session{'' if sessions == 1 else 's'} "
            f"(model {result.model_version or 'all'})",
            MONITOR_COLUMNS,
            [*result.per_ticker.items(), ("all", result.overall)],
            secondary=["direction", "naive MAE", "MAE"],
            caption=waiting,
        )
    else:  # an empty table of dashes says less than one line
        output.info(f"Live accuracy: no scored session yet; {waiting}")
    verdict = "[bold red]retrain needed[/]" if result.retrain_needed else "no retrain"
    output.console.print(f"Decision: {verdict}. ", end="")
    output.info(result.reason)


def predict(
    ctx: typer.Context,
    version: Annotated[
        str | None, typer.Option("--version", help="Model version (default: the Production alias).")
    ] = None,
) -> None:
    """Predict every ticker's next close with 80% and 95% intervals; failed tickers reported beside."""
    from stockcli.services.predict import exit_code_for, failed_json, prediction_json
    from stockcli.services.predict import predict as predict_service
    from stockcli.services.runtime import pipeline_run

    cli, settings, as_of = invocation(ctx)
    with pipeline_run(settings, command="predict", as_of=as_of) as run:
        result = predict_service(
            settings=settings,
            engine=run.engine,
            as_of=as_of,
            model_version=version,
            pipeline_run_id=run.run_id,
        )
        run.details.update(
            model_version=result.model_version,
            target_date=result.target_date.isoformat(),
            predictions=len(result.predictions),
            failed=[f.ticker for f in result.failed],
        )
        code = exit_code_for(result)
        if code:
            run.status = "partial" if result.predictions else "failed"
            run.error = "; ".join(f"{f.ticker}: {f.reason}" for f in result.failed)
    if cli.json:
        output.emit(
            "predict",
            result,
            predictions=[prediction_json(p) for p in result.predictions],
            failed=[failed_json(f) for f in result.failed],
        )
    else:
        _show_predictions(
            f"Next-session predictions as of {as_of.isoformat()}", result.predictions, result.failed
        )
    if code:
        raise typer.Exit(code)


def monitor(ctx: typer.Context) -> None:
    """Score matured predictions, adapt the intervals; a tested decision on retraining."""
    from stockcli.notify import band_break_message, notify_run
    from stockcli.services.models import production_version
    from stockcli.services.monitor import monitor as monitor_service
    from stockcli.services.runtime import pipeline_run

    cli, settings, as_of = invocation(ctx)
    with pipeline_run(settings, command="monitor", as_of=as_of) as run:
        result = monitor_service(
            settings=settings, engine=run.engine, as_of=as_of, model_version=production_version(settings)
        )
        run.details.update({"retrain_needed": result.retrain_needed, "reason": result.reason})
        notify_run(run, [m for m in [band_break_message(result.band_breaks)] if m is not None])
    if cli.json:
        output.emit("monitor", result)
    else:
        _show_monitor(result)


def daily(
    ctx: typer.Context,
    no_retrain: Annotated[
        bool, typer.Option("--no-retrain", help="Never retrain, even when the monitor says so.")
    ] = False,
    n_trials: RetrainTrialsOption = None,
) -> None:
    """The day's work: fetch, monitor, predict the next session, retrain when needed. For cron."""
    from stockcli.notify import daily_messages, notify_run
    from stockcli.services.daily import daily as daily_service
    from stockcli.services.daily import daily_json, exit_code_for
    from stockcli.services.runtime import pipeline_run

    cli, settings, as_of = invocation(ctx)
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
        notify_run(run, daily_messages(result))
    code = exit_code_for(result)
    if cli.json:
        output.emit("daily", **daily_json(result))
    else:
        _show_daily(result)
    if code:
        raise typer.Exit(code)


def _show_daily(result: Any) -> None:
    failed = [r.ticker for r in result.fetch.tickers if r.status in ("failed", "no_data", "partial")]
    output.info(f"Daily run as of {result.as_of.isoformat()}: model version {result.model_version}.")
    if failed:
        output.warn(f"fetch failed for {', '.join(failed)}; the rest was saved.")
    if result.bootstrapped and result.retrain is not None:
        output.info(
            f"No production model existed: trained and promoted version {result.retrain.model_version}."
        )
    _show_predictions("Next-session predictions", result.predictions, result.failed)
    if not result.predictions and not result.failed:
        output.warn("no prediction made")
    if result.monitor is not None:
        _show_monitor(result.monitor)
    if result.retrain is not None and result.retrain.ran and not result.bootstrapped:
        verdict = "promoted" if result.retrain.promoted else "not promoted"
        output.info(
            f"Retrained: version {result.retrain.model_version} {verdict} ({result.retrain.promotion_reason})."
        )


def retrain(
    ctx: typer.Context,
    force: Annotated[
        bool, typer.Option("--force", help="Retrain even if the monitor does not ask for it.")
    ] = False,
    n_trials: RetrainTrialsOption = None,
) -> None:
    """process -> build -> tune -> train -> promote; only when needed unless --force."""
    from stockcli.notify import notify_run, retrain_messages
    from stockcli.services.retrain import retrain_if_needed
    from stockcli.services.runtime import pipeline_run

    cli, settings, as_of = invocation(ctx)
    with (
        pipeline_run(settings, command="retrain", as_of=as_of) as run,
        output.status("retrain", quiet=cli.json) as progress,
    ):
        result = retrain_if_needed(
            settings=settings,
            engine=run.engine,
            as_of=as_of,
            force=force,
            run=run,
            n_trials=n_trials,
            progress=progress,
        )
        notify_run(run, retrain_messages(result, as_of=as_of))
    if cli.json:
        output.emit("retrain", result)
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


def daemon(
    ctx: typer.Context,
    show_schedule: Annotated[
        bool,
        typer.Option(
            "--show-schedule",
            help="Print the next five run times of [daemon] cron in the exchange's time zone and exit "
            "(starts nothing, takes no lock).",
        ),
    ] = False,
) -> None:
    """Run `daily` on the [daemon] cron schedule (exchange time zone) until SIGTERM/SIGINT."""
    import logging

    from stockcli.daemon import next_run_time, next_runs, run_daemon

    cli = state(ctx)
    settings = cli.settings()
    if show_schedule:
        runs = next_runs(settings, count=5)
        if cli.json:
            output.emit("daemon --show-schedule", next_runs=runs)
            return
        zone = runs[0].tzinfo if runs else None
        output.info(f"Next runs of '{settings.daemon.cron}' ({settings.data.exchange}, {zone}):")
        for run in runs:
            output.info(f"  {run:%a %Y-%m-%d %H:%M %Z}")
        return
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
    n_trials: RetrainTrialsOption = None,
) -> None:
    """Replay `daily` for every session in a range, in a scratch workspace; summarize against naive."""
    from datetime import datetime
    from pathlib import Path

    from stockcli import clock
    from stockcli.services.backtest import backtest as backtest_service
    from stockcli.services.backtest import exit_code_for

    cli = state(ctx)
    settings = cli.settings()
    first = clock.parse_date(start, label="--start")
    last = clock.parse_date(end, label="--end")
    folder = (
        Path(workspace).expanduser().resolve()
        if workspace
        else settings.data_dir / "backtests" / f"{first}_{last}_{datetime.now():%Y%m%dT%H%M%S}"
    )
    with output.progress_bar("backtest", quiet=cli.json, lasting=True) as report:
        result = backtest_service(
            settings=settings,
            start=first,
            end=last,
            workspace=folder,
            n_trials=n_trials,
            progress=None if report is None else lambda done, total, message: report(message, done, total),
        )
    if cli.json:
        output.emit("backtest", result)
    else:
        _show_backtest(result)
    if result.data_end is None:
        output.warn(f"No bars were available for any of the {result.sessions} sessions: nothing to replay.")
    elif result.sessions_past_data_end:
        output.warn(
            f"{result.sessions_past_data_end} of the {result.sessions} sessions lie after the newest bar "
            f"({result.data_end}): there is nothing new to predict from there. End the range at the last "
            "day of the data."
        )
    code = exit_code_for(result)
    if code:
        raise typer.Exit(code)


def _show_backtest(result: Any) -> None:
    """The served forecasts next to naive, the interval candidates against GARCH, the retrains, the failures."""
    m = result.metrics
    output.info(
        f"Replayed {result.sessions} sessions {result.start}..{result.end} in {result.wall_s:.0f} s "
        f"({result.sessions_per_s:.2f} sessions/s); workspace {result.workspace}."
    )
    rows = [{**v, "name": ticker} for ticker, v in result.per_ticker.items()]
    if m.get("samples"):
        rows.append({**m, "name": "all"})
    output.records(
        "Served forecasts over the range, next to naive",
        BACKTEST_COLUMNS,
        rows,
        secondary=["direction", "MAE", "naive MAE", "skill 95% CI"],
    )
    if result.candidates:
        output.records(
            "Interval candidates on the same sessions (skill and one-sided DM p against GARCH, pinball)",
            CANDIDATE_COLUMNS,
            [{**v, "name": name} for name, v in [("served", m), *result.candidates.items()]],
        )
    versus = result.network_vs_best_statistical
    if versus:
        output.info(
            f"The network's own intervals against {versus['candidate']} (the statistical candidate with the "
            f"lowest pinball loss): pinball skill {formats.percent((versus['skill'] or {}).get('pinball'), 2)}, "
            f"Winkler 95 skill {formats.percent((versus['skill'] or {}).get('winkler_95'), 2)}, "
            f"one-sided DM p {output.p_value(versus.get('p_value'))}."
        )
    output.records(
        f"Retrains ({len(result.retrains)}), promotions ({result.promotions})",
        (
            ("as of", lambda r: r.as_of.isoformat()),
            ("why", lambda r: r.reason),
            ("version", lambda r: r.model_version),
            ("promoted", lambda r: "yes" if r.promoted else "no"),
            ("p-value", lambda r: output.p_value(r.p_value)),
        ),
        result.retrains,
        text=["why"],
    )
    if result.failures:
        counts = [f"{result.sessions_failed} sessions failed"] if result.sessions_failed else []
        if result.tickers_failed:
            n = len(result.tickers_failed)
            counts.insert(0, f"{n} ticker{'s' if n > 1 else ''} failed every session")
        output.warn(", ".join(counts) + ": " + "; ".join(result.failures[:5]))


# A ticker's (or all tickers') served forecasts over the range.
BACKTEST_COLUMNS: tuple[output.Column, ...] = (
    ("ticker", lambda v: v["name"]),
    ("predictions", lambda v: v.get("samples")),
    ("MAE", lambda v: formats.number(v.get("mae"))),
    ("naive MAE", lambda v: formats.number(v.get("naive_mae"))),
    ("skill", lambda v: formats.percent(v.get("skill"), 2)),
    (
        "skill 95% CI",
        lambda v: f"{formats.percent(v.get('skill_low'), 2)} to {formats.percent(v.get('skill_high'), 2)}",
    ),
    ("served by model", lambda v: formats.percent(v.get("share_model"), 0)),
    ("direction", lambda v: formats.percent(v.get("direction_accuracy"), 1)),
    ("80% cover", lambda v: formats.percent(v.get("coverage_80"), 1)),
    ("95% cover", lambda v: formats.percent(v.get("coverage_95"), 1)),
    ("Winkler 95", lambda v: formats.number(v.get("winkler_95"), 4)),
)
# An interval candidate's figures, its Winkler skill and one-sided DM p against GARCH.
CANDIDATE_COLUMNS: tuple[output.Column, ...] = (
    ("candidate", lambda v: v["name"]),
    ("80% cover", lambda v: formats.percent(v.get("coverage_80"), 1)),
    ("95% cover", lambda v: formats.percent(v.get("coverage_95"), 1)),
    ("Winkler 95", lambda v: formats.number(v.get("winkler_95"), 4)),
    ("pinball", lambda v: formats.number(v.get("pinball"), 5)),
    ("skill W95", lambda v: formats.percent((v.get("skill_vs_garch") or {}).get("winkler_95"), 2)),
    ("p", lambda v: output.p_value(v.get("p_value_vs_garch"))),
)
