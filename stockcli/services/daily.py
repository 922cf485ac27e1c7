"""The day's work: fetch -> resolve Production once -> predict -> monitor -> retrain when needed.

The CLI (`stockcli daily`, cron), the daemon and `backtest` run exactly this function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.errors import NoDataError
from stockcli.services.monitor import MonitorResult, monitor
from stockcli.services.predict import Prediction, predict
from stockcli.services.retrain import RetrainResult, retrain
from stockcli.services.runtime import RunHandle, checkpoint


@dataclass(frozen=True)
class DailyResult:
    status: str  # ok, partial (some tickers failed to fetch), stale (no prediction: old bars)
    as_of: date
    model_version: str | None
    predictions: tuple[Prediction, ...]
    monitor: MonitorResult | None
    retrained: bool
    promoted: bool
    fetch: Any
    retrain: RetrainResult | None
    bootstrapped: bool
    messages: tuple[str, ...]


def daily(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    run: RunHandle | None = None,
    allow_retrain: bool = True,
    now: datetime | None = None,
    progress: Callable[[str], None] | None = None,
    bundle_cache: dict[str, Any] | None = None,
    n_trials: int | None = None,
) -> DailyResult:
    """One daily run. Raises PartialFailure (exit 3) after finishing when some tickers failed to fetch,
    NoDataError (exit 4) when the bars are too stale to predict from."""
    from stockcli.clock import calendar_for
    from stockcli.ml import registry
    from stockcli.services.fetch import fetch

    messages: list[str] = []
    calendar_for(settings)  # first, so that every step shares the calendar read from the cache

    def say(message: str) -> None:
        messages.append(message)
        if progress:
            progress(message)

    say("fetch")
    fetched = fetch(settings=settings, engine=engine, as_of=as_of, now=now)
    checkpoint(settings, "daily:after_fetch")
    if run is not None:
        run.details["fetch"] = {"status": fetched.status}

    version = registry.resolve_alias(settings, "Production")
    bootstrap: RetrainResult | None = None
    if version is None:
        if not allow_retrain:
            from stockcli.errors import NoProductionModelError

            raise NoProductionModelError(
                "No production model yet, and --no-retrain forbids bootstrapping one.",
                hint="Run `stockcli retrain --force` first.",
            )
        say("no production model: bootstrapping one (process, build, tune, train, promote)")
        # No production version: `retrain` runs unforced and records why ("no production model yet").
        bootstrap = retrain(
            settings=settings, engine=engine, as_of=as_of, production_version=None, run=run, n_trials=n_trials
        )
        version = registry.resolve_alias(settings, "Production")
        if version is None:  # the promotion gate refused the first model (require_beats_naive)
            from stockcli.errors import NoProductionModelError

            raise NoProductionModelError(
                f"Trained model version {bootstrap.model_version}, but it was not promoted: "
                f"{bootstrap.promotion_reason}",
                hint="No production model, so no prediction. Retrain with more data or budget, or set "
                "[promotion] require_beats_naive = false to accept a model that does not beat the naive forecast.",
            )
    version = str(version)
    if run is not None:
        run.details["model_version"] = version

    say(f"predict with model version {version}")
    predictions: tuple[Prediction, ...] = ()
    stale_error: NoDataError | None = None
    bundle = None
    if bundle_cache is not None:
        bundle = bundle_cache.get(version)
    if bundle is None:
        bundle = registry.load_bundle(settings, version=version)
        if bundle_cache is not None:
            bundle_cache[version] = bundle
    try:
        predicted = predict(
            settings=settings,
            engine=engine,
            as_of=as_of,
            bundle=bundle,
            pipeline_run_id=run.run_id if run else None,
            now=now,
        )
        predictions = predicted.predictions
    except NoDataError as exc:
        stale_error = exc
        say(f"no prediction: {exc.message}")
    checkpoint(settings, "daily:after_predict")

    say("monitor")
    monitored = monitor(settings=settings, engine=engine, as_of=as_of, model_version=version)
    if run is not None:
        run.details["monitor"] = {"retrain_needed": monitored.retrain_needed, "reason": monitored.reason}

    retrained = bootstrap
    if bootstrap is None and monitored.retrain_needed and stale_error is None:
        if allow_retrain:
            say(f"retrain: {monitored.reason}")
            retrained = retrain(
                settings=settings,
                engine=engine,
                as_of=as_of,
                production_version=version,
                monitor_result=monitored,
                run=run,
                n_trials=n_trials,
            )
        else:
            say(f"retrain needed but skipped (--no-retrain): {monitored.reason}")

    status = "ok"
    if stale_error is not None:
        status = "stale"
    elif fetched.status != "ok":
        status = "partial"
    result = DailyResult(
        status=status,
        as_of=as_of,
        model_version=version,
        predictions=predictions,
        monitor=monitored,
        retrained=bool(retrained and retrained.ran),
        promoted=bool(retrained and retrained.promoted),
        fetch=fetched,
        retrain=retrained,
        bootstrapped=bootstrap is not None,
        messages=tuple(messages),
    )
    if run is not None:
        run.status = {"ok": "ok", "partial": "partial", "stale": "failed"}[status]
        run.error = stale_error.message if stale_error is not None else None
        run.details["retrained"] = result.retrained
        run.details["promoted"] = result.promoted
        run.details["predictions"] = len(predictions)
        # The session predicted from: what the daemon's catch-up counts as covered.
        run.details["base_date"] = predictions[0].base_date.isoformat() if predictions else None
    return result


def daily_json(result: DailyResult) -> dict[str, Any]:
    """The `--json` shape of a daily run."""
    monitor_part: dict[str, Any] = {"retrain_needed": False, "reason": None}
    if result.monitor is not None:
        overall = result.monitor.overall
        monitor_part = {
            "retrain_needed": result.monitor.retrain_needed,
            "reason": result.monitor.reason,
            "evaluated": result.monitor.evaluated,
            "sessions": overall.sessions,
            "mape": overall.mape,
            "mae": overall.mae,
            "direction_accuracy": overall.direction_accuracy,
            "skill": overall.skill,
            "cooldown_active": result.monitor.cooldown_active,
        }
    return {
        "status": result.status,
        "as_of": result.as_of.isoformat(),
        "model_version": result.model_version,
        "predictions": [
            {
                "ticker": p.ticker,
                "target_date": p.target_date.isoformat(),
                "predicted_close": p.predicted_close,
                "base_close": p.base_close,
                "base_date": p.base_date.isoformat(),
            }
            for p in result.predictions
        ],
        "monitor": monitor_part,
        "retrained": result.retrained,
        "promoted": result.promoted,
        "bootstrapped": result.bootstrapped,
        "retrain": None
        if result.retrain is None
        else {
            "ran": result.retrain.ran,
            "reason": result.retrain.reason,
            "model_version": result.retrain.model_version,
            "promotion_reason": result.retrain.promotion_reason,
        },
        "fetch_status": getattr(result.fetch, "status", None),
    }


def exit_code_for(result: DailyResult) -> int:
    """The documented exit code of a finished daily run: 0 ok, 3 partial fetch, 4 stale bars."""
    from stockcli.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL

    return {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "stale": EXIT_NOTHING}[result.status]
