"""The day's work: fetch -> resolve Production once -> monitor -> predict -> retrain when needed.

The monitor runs first so that today's intervals have learned from yesterday's scored prediction.
The CLI (`stockcli daily`, cron), the daemon and `backtest` run exactly this function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db.runs import mark_base_date, mark_retrained
from stockcli.errors import NoProductionModelError
from stockcli.services.monitor import MonitorResult, monitor
from stockcli.services.predict import (
    EXIT_CODES,
    FailedTicker,
    Prediction,
    PredictResult,
    failed_json,
    predict,
    prediction_json,
    refuse_inside_training_data,
    status_of,
)
from stockcli.services.refit import refit_if_due
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


@dataclass(frozen=True)
class _Day:
    """What the steps of one daily run share: where they run, and the messages they say."""

    settings: Settings
    engine: Engine
    as_of: date
    run: RunHandle | None
    n_trials: int | None
    progress: Callable[[str], None] | None
    messages: list[str] = field(default_factory=list)

    def say(self, message: str) -> None:
        self.messages.append(message)
        if self.progress:
            self.progress(message)

    def retrain(self, *, production_version: str | None, monitored: MonitorResult | None) -> RetrainResult:
        return retrain(
            settings=self.settings,
            engine=self.engine,
            as_of=self.as_of,
            production_version=production_version,
            monitor_result=monitored,
            run=self.run,
            n_trials=self.n_trials,
        )


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
    from stockcli.services.fetch import fetch

    day = _Day(settings=settings, engine=engine, as_of=as_of, run=run, n_trials=n_trials, progress=progress)
    details: dict[str, Any] = run.details if run is not None else {}
    calendar_for(settings)  # first, so that every step shares the calendar read from the cache

    day.say("fetch")
    fetched = fetch(settings=settings, engine=engine, as_of=as_of, now=now)
    checkpoint(settings, "daily:after_fetch")
    details["fetch"] = {"status": fetched.status}

    version, bootstrap = _production_or_bootstrap(day, allow_retrain=allow_retrain)
    details["model_version"] = version

    day.say("monitor")
    monitored = monitor(settings=settings, engine=engine, as_of=as_of, model_version=version)
    details["monitor"] = {"retrain_needed": monitored.retrain_needed, "reason": monitored.reason}

    day.say(f"predict with model version {version}")
    bundle = _load_bundle(settings, version=version, cache=bundle_cache)
    refuse_inside_training_data(bundle, as_of)  # before the refits write anything
    # The scheduled refits before the predictions (a ticker without the session's bar waits for it):
    # a re-run of the day predicts what its first run did.
    base = calendar_for(settings).last_closed_session(as_of, now=now)
    refit_if_due(settings=settings, engine=engine, bundle=bundle, through=base)
    predicted, failed = _predict_watchlist(day, bundle=bundle, fetched=fetched, now=now)
    predictions = predicted.predictions
    for failure in failed:
        day.say(f"no prediction for {failure.ticker}: {failure.reason}")
    checkpoint(settings, "daily:after_predict")

    retrained = bootstrap
    if bootstrap is None and monitored.retrain_needed and predictions:
        if allow_retrain:
            day.say(f"retrain: {monitored.reason}")
            retrained = day.retrain(production_version=version, monitored=monitored)
        else:
            day.say(f"retrain needed but skipped (--no-retrain): {monitored.reason}")
    result = DailyResult(
        status=status_of(predicted, degraded=bool(failed) or fetched.status != "ok"),
        as_of=as_of,
        model_version=version,
        predictions=predictions,
        monitor=monitored,
        retrained=bool(retrained and retrained.ran),
        promoted=bool(retrained and retrained.promoted),
        fetch=fetched,
        retrain=retrained,
        bootstrapped=bootstrap is not None,
        messages=tuple(day.messages),
        failed=failed,
    )
    if run is not None:
        _record_run(run, result)
    return result


def _production_or_bootstrap(day: _Day, *, allow_retrain: bool) -> tuple[str, RetrainResult | None]:
    """The Production version, bootstrapping the first model when there is none; with the
    bootstrap's result (None when Production already existed)."""
    from stockcli.services.models import production_version

    version = production_version(day.settings)
    if version is not None:
        return str(version), None
    check_registry_knows_database(day.settings, day.engine)  # a lost MLflow store is not "no model yet"
    if not allow_retrain:
        raise NoProductionModelError(
            "No production model yet, and --no-retrain forbids bootstrapping one.",
            hint="Run `stockcli retrain --force` first.",
        )
    day.say("no production model: bootstrapping one (process, build, tune, train, promote)")
    # No production version: `retrain` runs unforced and records why ("no production model yet").
    bootstrap = day.retrain(production_version=None, monitored=None)
    version = production_version(day.settings)
    if version is None:  # the first model is always promoted; only a failed alias move gets here
        raise NoProductionModelError(
            f"Trained model version {bootstrap.model_version}, but it was not promoted: "
            f"{bootstrap.promotion_reason}",
            hint="Run `stockcli promote` to retry the promotion.",
        )
    return str(version), bootstrap


def _load_bundle(settings: Settings, *, version: str, cache: dict[str, Any] | None) -> Any:
    """The model bundle of `version`, loaded once per `cache` (a backtest replays many sessions)."""
    from stockcli.ml import registry

    cache = {} if cache is None else cache
    if cache.get(version) is None:
        cache[version] = registry.load_bundle(settings, version=version)
    return cache[version]


def _predict_watchlist(
    day: _Day, *, bundle: Any, fetched: Any, now: datetime | None
) -> tuple[PredictResult, tuple[FailedTicker, ...]]:
    """Predict the watchlist, but for the tickers whose fetch rejected rows (a history with holes);
    returns the prediction and every failed ticker, in watchlist order."""
    watchlist = day.settings.data.tickers
    rejected = [
        FailedTicker(t.ticker, f"fetch: {t.error}" + (f". {t.hint}" if t.hint else ""), "rejected_rows")
        for t in fetched.tickers
        if t.status == "partial" and t.ticker in watchlist
    ]
    predicted = predict(
        settings=day.settings,
        engine=day.engine,
        as_of=day.as_of,
        bundle=bundle,
        pipeline_run_id=day.run.run_id if day.run else None,
        now=now,
        tickers=[t for t in watchlist if t not in {f.ticker for f in rejected}],
    )
    order = {t: i for i, t in enumerate(watchlist)}
    failed = tuple(sorted((*rejected, *predicted.failed), key=lambda f: order.get(f.ticker, len(order))))
    return predicted, failed


def _record_run(run: RunHandle, result: DailyResult) -> None:
    """The run's ledger status, error and details from a finished daily run."""
    run.status = {"ok": "ok", "partial": "partial", "stale": "failed", "refused": "failed"}[result.status]
    if result.status in ("stale", "refused"):
        run.error = "; ".join(f"{f.ticker}: {f.reason}" for f in result.failed) or "no prediction"
    mark_retrained(run.details, result.retrained)
    run.details["promoted"] = result.promoted
    run.details["predictions"] = len(result.predictions)
    run.details["failed"] = [f.ticker for f in result.failed]
    # The session predicted from: what the daemon's catch-up counts as covered.
    mark_base_date(run.details, result.predictions[0].base_date if result.predictions else None)


def daily_json(result: DailyResult) -> dict[str, Any]:
    """The `--json` shape of a daily run: the monitor's decision with its window figures."""
    monitored = result.monitor
    monitor_part: dict[str, Any] = {"retrain_needed": False, "reason": None}
    if monitored is not None:
        monitor_part = {
            "retrain_needed": monitored.retrain_needed,
            "reason": monitored.reason,
            "triggers": list(monitored.triggers),
            "evaluated": monitored.evaluated,
            "cooldown_active": monitored.cooldown_active,
            **asdict(monitored.overall),
        }
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
            key: getattr(result.retrain, key)
            for key in ("ran", "reason", "model_version", "promotion_reason")
        },
        "fetch_status": getattr(result.fetch, "status", None),
    }


def exit_code_for(result: DailyResult) -> int:
    """The documented exit code of a finished daily run (`predict.EXIT_CODES`)."""
    return EXIT_CODES[result.status]
