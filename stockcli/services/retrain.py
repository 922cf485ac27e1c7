"""Retrain: process -> build -> tune -> train -> promote, only when needed unless forced.

Every step is idempotent or only adds (a dataset with the same content gets the same id, the Optuna
study resumes, a new model version never moves the alias by itself) and the alias moves last, in
`promote`. So a retrain killed at any point leaves `Production` and the stored data as they were,
and a re-run completes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.services.runtime import RunHandle, checkpoint

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RetrainResult:
    ran: bool
    reason: str
    dataset_run_id: str | None = None
    n_trials: int | None = None
    best_params: dict[str, Any] | None = None
    model_version: str | None = None
    test_metrics: dict[str, Any] | None = None
    promoted: bool = False
    promotion_reason: str | None = None
    steps_s: dict[str, float] = field(default_factory=dict)


def should_retrain(
    *, settings: Settings, force: bool, production_version: str | None, monitor_result: Any = None
) -> tuple[bool, str]:
    """Whether to retrain, and why (or why not)."""
    if force:
        return True, "Forced with --force."
    if production_version is None:
        return True, "No production model yet: bootstrapping one."
    if monitor_result is not None and monitor_result.retrain_needed:
        return True, f"Monitor: {monitor_result.reason}"
    if monitor_result is not None:
        return False, f"Not needed: {monitor_result.reason} Use --force to retrain anyway."
    return False, "Not needed. Use --force to retrain anyway."


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
        settings=settings, force=force, production_version=production_version, monitor_result=monitor_result
    )
    if not needed:
        return RetrainResult(ran=False, reason=reason)

    from stockcli.services.build import build
    from stockcli.services.process import process
    from stockcli.services.promote import promote
    from stockcli.services.train import train
    from stockcli.services.tune import tune

    steps: dict[str, Any] = {"reason": reason}
    timings: dict[str, float] = {}

    def record(name: str, value: Any) -> None:
        steps[name] = value
        if run is not None:
            run.details["retrain"] = dict(steps)

    def step(name: str) -> float:
        if progress:
            progress(name)
        return time.perf_counter()

    started = step("process")
    processed = process(settings=settings, engine=engine, as_of=as_of)
    timings["process"] = time.perf_counter() - started
    record("dataset_run_id", processed.run_id)
    checkpoint(settings, "retrain:after_process")

    started = step("build")
    build(settings=settings, engine=engine, run_id=processed.run_id)
    timings["build"] = time.perf_counter() - started
    checkpoint(settings, "retrain:after_build")

    started = step("tune")
    tuned = tune(settings=settings, engine=engine, run_id=processed.run_id, n_trials=n_trials)
    timings["tune"] = time.perf_counter() - started
    record("study", tuned.study_name)
    record("n_trials", tuned.n_trials)
    checkpoint(settings, "retrain:after_tune")

    started = step("train")
    trained = train(settings=settings, engine=engine, run_id=processed.run_id, params=tuned.best_params)
    timings["train"] = time.perf_counter() - started
    record("model_version", trained.model_version)
    record("mlflow_run_id", trained.mlflow_run_id)
    checkpoint(settings, "retrain:after_train")

    started = step("promote")
    decision = promote(
        settings=settings,
        engine=engine,
        version=trained.model_version,
        pipeline_run_id=run.run_id if run is not None else None,
    )
    timings["promote"] = time.perf_counter() - started
    record("promoted", decision.promoted)
    record("promotion_reason", decision.reason)
    record("steps_s", {k: round(v, 3) for k, v in timings.items()})
    if run is not None:
        run.details["retrained"] = True
    return RetrainResult(
        ran=True,
        reason=reason,
        dataset_run_id=processed.run_id,
        n_trials=tuned.n_trials,
        best_params=tuned.best_params,
        model_version=trained.model_version,
        test_metrics=getattr(trained, "test_metrics", None),
        promoted=decision.promoted,
        promotion_reason=decision.reason,
        steps_s=timings,
    )
