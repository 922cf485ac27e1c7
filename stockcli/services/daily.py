"""The day's work: fetch -> resolve Production once -> monitor -> predict -> retrain when needed.

The monitor runs before the prediction: it scores yesterday's prediction against today's close and
moves the interval levels (adaptive conformal inference), so today's intervals have learned from it.
The CLI (`stockcli daily`, cron), the daemon and `backtest` run exactly this function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db.runs import mark_base_date, mark_retrained
from stockcli.services.monitor import MonitorResult, monitor
from stockcli.services.predict import FailedTicker, Prediction, failed_json, predict, prediction_json
from stockcli.services.retrain import RetrainResult, retrain
from stockcli.services.runtime import RunHandle, checkpoint
from stockcli.services.train import check_registry_knows_database


@dataclass(frozen=True)
class DailyResult:
    status: str  # ok, partial (some tickers failed), stale (no prediction at all), refused (implausible)
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
    failed: tuple[FailedTicker, ...] = ()


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
    """One daily run. Tickers that cannot be predicted are in `failed`; `exit_code_for` maps the
    result to the documented exit code. Raises NoProductionModelError without a model and with
    `allow_retrain=False`."""
    from stockcli.clock import calendar_for
    from stockcli.ml import registry
    from stockcli.services.fetch import fetch
    from stockcli.services.models import production_version

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

    version = production_version(settings)
    bootstrap: RetrainResult | None = None
    if version is None:
        check_registry_knows_database(settings, engine)  # a lost MLflow store is not "no model yet"
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
        version = production_version(settings)
        if version is None:  # the first model is always promoted; only a failed alias move gets here
            from stockcli.errors import NoProductionModelError

            raise NoProductionModelError(
                f"Trained model version {bootstrap.model_version}, but it was not promoted: "
                f"{bootstrap.promotion_reason}",
                hint="Run `stockcli promote` to retry the promotion.",
            )
    version = str(version)
    if run is not None:
        run.details["model_version"] = version

    say("monitor")
    monitored = monitor(settings=settings, engine=engine, as_of=as_of, model_version=version)
    if run is not None:
        run.details["monitor"] = {"retrain_needed": monitored.retrain_needed, "reason": monitored.reason}

    say(f"predict with model version {version}")
    bundle = None
    if bundle_cache is not None:
        bundle = bundle_cache.get(version)
    if bundle is None:
        bundle = registry.load_bundle(settings, version=version)
        if bundle_cache is not None:
            bundle_cache[version] = bundle
    # A ticker whose fetch rejected rows has a history with holes or cut short (an unadjusted split):
    # it fails here with the fetch's words, instead of being predicted from what is left.
    rejected = _rejected_by_fetch(fetched, settings.data.tickers)
    predicted = predict(
        settings=settings,
        engine=engine,
        as_of=as_of,
        bundle=bundle,
        pipeline_run_id=run.run_id if run else None,
        now=now,
        tickers=[t for t in settings.data.tickers if t not in {f.ticker for f in rejected}],
    )
    predictions = predicted.predictions
    order = {t: i for i, t in enumerate(settings.data.tickers)}
    failed = tuple(sorted((*rejected, *predicted.failed), key=lambda f: order.get(f.ticker, len(order))))
    for failure in failed:
        say(f"no prediction for {failure.ticker}: {failure.reason}")
    checkpoint(settings, "daily:after_predict")
    if predictions:  # the statistical candidates refitted for the next sessions, a few tickers a run
        from stockcli.services.refit import refit_if_due

        refit_if_due(settings=settings, engine=engine, bundle=bundle, through=predictions[0].base_date)

    retrained = bootstrap
    if bootstrap is None and monitored.retrain_needed and predictions:
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
    if predicted.refused:
        status = "refused"
    elif not predictions:
        status = "stale"
    elif failed or fetched.status != "ok":
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
        failed=failed,
    )
    if run is not None:
        run.status = {"ok": "ok", "partial": "partial", "stale": "failed", "refused": "failed"}[status]
        if status in ("stale", "refused"):
            run.error = "; ".join(f"{f.ticker}: {f.reason}" for f in failed) or "no prediction"
        mark_retrained(run.details, result.retrained)
        run.details["promoted"] = result.promoted
        run.details["predictions"] = len(predictions)
        run.details["failed"] = [f.ticker for f in failed]
        # The session predicted from: what the daemon's catch-up counts as covered.
        mark_base_date(run.details, predictions[0].base_date if predictions else None)
    return result


def _rejected_by_fetch(fetched: Any, watchlist: Sequence[str]) -> tuple[FailedTicker, ...]:
    """The watchlist tickers whose fetch stored their valid rows but rejected others, as failures."""
    return tuple(
        FailedTicker(
            t.ticker, f"fetch: {t.error}. {t.hint}" if t.hint else f"fetch: {t.error}", "rejected_rows"
        )
        for t in fetched.tickers
        if t.status == "partial" and t.ticker in watchlist
    )


def daily_json(result: DailyResult) -> dict[str, Any]:
    """The `--json` shape of a daily run."""
    monitor_part: dict[str, Any] = {"retrain_needed": False, "reason": None}
    if result.monitor is not None:
        monitor_part = monitor_json_part(result.monitor)
    return {
        "status": result.status,
        "as_of": result.as_of.isoformat(),
        "model_version": result.model_version,
        "predictions": [prediction_json(p) for p in result.predictions],
        "failed": [failed_json(f) for f in result.failed],
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


def monitor_json_part(monitored: MonitorResult) -> dict[str, Any]:
    """The monitor's decision and window figures, as `daily --json` shows them."""
    from dataclasses import asdict

    overall = asdict(monitored.overall)
    return {
        "retrain_needed": monitored.retrain_needed,
        "reason": monitored.reason,
        "triggers": list(monitored.triggers),
        "evaluated": monitored.evaluated,
        "cooldown_active": monitored.cooldown_active,
        **overall,
    }


def exit_code_for(result: DailyResult) -> int:
    """The documented exit code of a finished daily run: 0 ok, 3 partial (some tickers failed, the
    rest saved), 4 no prediction at all, 1 a forecast refused as implausible."""
    from stockcli.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, EXIT_UNEXPECTED

    return {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "stale": EXIT_NOTHING, "refused": EXIT_UNEXPECTED}[
        result.status
    ]
