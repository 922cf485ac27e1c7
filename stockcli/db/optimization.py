"""Best hyper-parameters found by `tune` for a dataset (`optimization_results` [run_id])."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stockcli.db import store
from stockcli.db.models import OptimizationResult


def save_best(
    engine: Engine,
    *,
    run_id: str,
    study_name: str,
    best_params: Mapping[str, Any],
    best_value: float,
    n_trials: int,
    n_complete: int,
    n_pruned: int,
) -> None:
    """Upsert the best parameters of a dataset's study."""
    with engine.begin() as connection:
        store.upsert(
            connection,
            OptimizationResult,
            [
                {
                    "run_id": run_id,
                    "study_name": study_name,
                    "best_params": dict(best_params),
                    "best_value": best_value,
                    "n_trials": n_trials,
                    "n_complete": n_complete,
                    "n_pruned": n_pruned,
                    "updated_at": store.utcnow(),
                }
            ],
            key=["run_id"],
        )


def best_params_for(engine: Engine, run_id: str) -> dict[str, Any] | None:
    """The best parameters `tune` saved for a dataset, or None when it was never tuned."""
    with engine.connect() as connection:
        params = connection.execute(
            select(OptimizationResult.best_params).where(OptimizationResult.run_id == run_id)
        ).scalar_one_or_none()
    return dict(params) if params is not None else None
