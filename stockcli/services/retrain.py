"""Retrain: process -> build -> tune -> train -> promote, only when needed unless forced.

Every step is idempotent or only adds, and the alias moves last (in `promote`): a retrain killed at
any point leaves Production as it was, and a re-run completes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db.runs import mark_retrained
from stockcli.services.runtime import RunHandle, checkpoint

if TYPE_CHECKING:
    from stockcli.ml.metrics import Evaluation
    from stockcli.services.train import TrainSummary

Progress = Callable[[str], None]
# What a retrain's result keeps of its promotion test.
PROMOTION_KEYS = ("p_value", "improvement", "improvement_low", "improvement_high", "selection")
T = TypeVar("T")


@dataclass(frozen=True)
class RetrainResult:
    ran: bool
    reason: str
    dataset_run_id: str | None = None
    n_trials: int | None = None
    best_params: dict[str, Any] | None = None
    model_version: str | None = None
    test_metrics: Evaluation | None = None
    promoted: bool = False
    promotion_reason: str | None = None
    steps_s: dict[str, float] = field(default_factory=dict)
    promotion: dict[str, Any] | None = None  # the promotion test: p_value, improvement and its interval


def should_retrain(
    *, force: bool, production_version: str | None, monitor_result: Any = None
) -> tuple[bool, str]:
    """Whether to retrain, and why (or why not)."""
    if force:
        return True, "Forced with --force."
    if production_version is None:
        return True, "No production model yet: bootstrapping one."
    if monitor_result is None:
        return False, "Not needed. Use --force to retrain anyway."
    if monitor_result.retrain_needed:
        return True, f"Monitor: {monitor_result.reason}"
    return False, f"Not needed: {monitor_result.reason} Use --force to retrain anyway."


def judged_on(monitor_result: Any) -> str:
    """What a retrain's candidate is judged on: "interval" when only the coverage tests asked for it."""
    triggers = tuple(getattr(monitor_result, "triggers", ()) or ())
    return "interval" if triggers and all(t.startswith("coverage") for t in triggers) else "point"


@dataclass
class _Ledger:
    """A retrain's steps: what each produced, kept in the run's details at once, and how long each took."""

    run: RunHandle | None
    progress: Progress | None
    steps: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)

    def record(self, **values: Any) -> None:
        self.steps.update(values)
        if self.run is not None:
            self.run.details["retrain"] = dict(self.steps)

    def start(self, name: str) -> float:
        if self.progress:
            self.progress(name)
        return time.perf_counter()

    def timed(self, name: str, work: Callable[[], T]) -> T:
        """`work()`, announced to `progress` and timed as step `name`."""
        started = self.start(name)
        result = work()
        self.timings[name] = time.perf_counter() - started
        return result


def retrain(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    force: bool = False,
    production_version: str | None = None,
    monitor_result: Any = None,
    run: RunHandle | None = None,
    n_trials: int | None = None,
    progress: Progress | None = None,
) -> RetrainResult:
    """Run the whole retraining chain when needed (or forced); record each step's ids in the ledger."""
    needed, reason = should_retrain(
        force=force, production_version=production_version, monitor_result=monitor_result
    )
    if not needed:
        return RetrainResult(ran=False, reason=reason)

    from stockcli.services.build import build
    from stockcli.services.process import process
    from stockcli.services.promote import promote

    ledger = _Ledger(run, progress, {"reason": reason})
    processed = ledger.timed("process", lambda: process(settings=settings, engine=engine, as_of=as_of))
    ledger.record(dataset_run_id=processed.run_id)
    checkpoint(settings, "retrain:after_process")
    ledger.timed("build", lambda: build(settings=settings, engine=engine, run_id=processed.run_id))
    checkpoint(settings, "retrain:after_build")
    trained, searched, best_params = _tune_and_train(
        settings=settings,
        engine=engine,
        ledger=ledger,
        dataset_run_id=processed.run_id,
        production_version=production_version,
        n_trials=n_trials,
    )
    decision = ledger.timed(
        "promote",
        lambda: promote(
            settings=settings,
            engine=engine,
            version=trained.model_version,
            pipeline_run_id=run.run_id if run is not None else None,
            judged_on=judged_on(None if force else monitor_result),
        ),
    )
    steps_s = {k: round(v, 3) for k, v in ledger.timings.items()}
    ledger.record(promoted=decision.promoted, promotion_reason=decision.reason, steps_s=steps_s)
    if run is not None:
        mark_retrained(run.details, True)
    return RetrainResult(
        ran=True,
        reason=reason,
        dataset_run_id=processed.run_id,
        n_trials=searched,
        best_params=best_params,
        model_version=trained.model_version,
        test_metrics=trained.test_metrics,
        promoted=decision.promoted,
        promotion_reason=decision.reason,
        steps_s=ledger.timings,
        promotion={key: getattr(decision, key) for key in PROMOTION_KEYS},
    )


def _tune_and_train(
    *,
    settings: Settings,
    engine: Engine,
    ledger: _Ledger,
    dataset_run_id: str,
    production_version: str | None,
    n_trials: int | None,
) -> tuple[TrainSummary, int, dict[str, Any]]:
    """Tune (or fine-tune Production) and train a new version on the dataset, as steps of `ledger`:
    the new version, the trials searched and the parameters it was trained with.

    Production's network is fine-tuned when it fits the new dataset (no search, a few epochs); else
    the search runs with Production's parameters as its first trial and the retrain budget.
    """
    from stockcli.services.train import train
    from stockcli.services.tune import tune

    started = ledger.start("tune")
    start_from = _fine_tune_start(settings, engine, production_version, dataset_run_id)
    init_state: dict[str, Any] | None = None
    if start_from is not None:
        params, init_state = start_from
        ledger.record(fine_tuned_from=production_version)
        ledger.timings["tune"] = 0.0
        searched = 0
    else:
        warm = _production_params(settings, production_version) if settings.tuning.warm_start else None
        tuned = tune(
            settings=settings,
            engine=engine,
            run_id=dataset_run_id,
            n_trials=n_trials,
            timeout_s=settings.tuning.retrain_timeout_s if production_version is not None else None,
            enqueue=[warm] if warm else None,
        )
        ledger.timings["tune"] = time.perf_counter() - started
        ledger.record(study=tuned.study_name)
        params, searched = tuned.best_params, tuned.n_trials
    ledger.record(n_trials=searched)
    checkpoint(settings, "retrain:after_tune")
    trained = ledger.timed(
        "train",
        lambda: train(
            settings=settings,
            engine=engine,
            run_id=dataset_run_id,
            params=params,
            epochs=settings.tuning.epochs if start_from is not None else None,
            init_state=init_state,
        ),
    )
    ledger.record(model_version=trained.model_version, mlflow_run_id=trained.mlflow_run_id)
    checkpoint(settings, "retrain:after_train")
    return trained, searched, params


def _production_params(settings: Settings, production_version: str | None) -> dict[str, Any] | None:
    """Production's tuned hyper-parameters (enqueued as the first trial of a retrain's search)."""
    if production_version is None:
        return None
    from stockcli.ml import registry
    from stockcli.ml.tuning import TUNED_PARAMS, in_search_space

    try:
        bundle = registry.load_bundle(settings, production_version)
    except Exception:  # a damaged or unreadable Production must not stop a retrain
        return None
    params = {k: bundle.training_params[k] for k in TUNED_PARAMS if k in bundle.training_params}
    if len(params) != len(TUNED_PARAMS) or not in_search_space(params, settings.tuning):
        return None  # Production was found in another search space: nothing to start from here
    return params


def _fine_tune_start(
    settings: Settings, engine: Engine, production_version: str | None, dataset_run_id: str
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(Production's parameters, its weights) when `[tuning] warm_start` is on and Production is a
    single network whose inputs are the new dataset's; else None (the retrain searches)."""
    if production_version is None or not settings.tuning.warm_start or settings.promotion.seeds > 1:
        return None
    from stockcli.db.datasets import load_built
    from stockcli.ml import registry

    try:
        bundle = registry.load_bundle(settings, production_version)
    except Exception:  # a damaged or unreadable Production must not stop a retrain: search instead
        return None
    config = bundle.model_config
    built = load_built(engine, dataset_run_id)
    same_inputs = (
        config.get("model_type") != "ensemble"
        and int(config.get("n_features", -1)) == built.train.n_features
        and int(config.get("n_own_features", -1)) == built.train.n_own_features
        and bundle.spec.feature_names == built.spec.feature_names
        and bundle.spec.context_features == built.spec.context_features
        and bundle.context_tickers == built.spec.context_tickers
        and int(bundle.sequence_length) == int(built.sequence_length)
    )
    if not same_inputs:
        return None
    params = _production_params(settings, production_version)
    if params is None:
        return None
    state = {name: tensor.detach().cpu().clone() for name, tensor in bundle.model.state_dict().items()}
    return params, state


def retrain_if_needed(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    force: bool = False,
    run: RunHandle | None = None,
    n_trials: int | None = None,
    progress: Progress | None = None,
) -> RetrainResult:
    """`stockcli retrain`: resolve Production once, ask the monitor unless forced, retrain when needed."""
    from stockcli.services.models import production_version
    from stockcli.services.monitor import monitor

    version = production_version(settings)
    monitored = None
    if not force and version is not None:
        monitored = monitor(settings=settings, engine=engine, as_of=as_of, model_version=version)
    result = retrain(
        settings=settings,
        engine=engine,
        as_of=as_of,
        force=force,
        production_version=version,
        monitor_result=monitored,
        run=run,
        n_trials=n_trials,
        progress=progress,
    )
    if run is not None:
        mark_retrained(run.details, result.ran)
        if not result.ran:
            run.status = "skipped"
    return result
