"""Tune: search hyper-parameters for a built dataset on its validation split, save the best ones.

The study is persistent and named after the dataset, so `tune` resumes after an interruption and
several processes on one PostgreSQL storage (`[tuning] storage_url`) share the work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings, redact_url
from stockcli.db.optimization import save_best
from stockcli.errors import ConfigError, NoDataError
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class TuneResult:
    """The study of a dataset after this tune; counts cover the whole study."""

    run_id: str
    study_name: str
    best_params: dict[str, Any]
    best_value: float | None
    n_trials: int
    n_complete: int
    n_pruned: int
    wall_s: float
    n_failed: int = 0
    n_run: int = 0  # trials this invocation finished
    best_trial_number: int | None = None
    storage: str = ""  # the study storage URL, password hidden


def tune(
    *,
    settings: Settings,
    engine: Engine,
    run_id: str | None = None,
    n_trials: int | None = None,
    timeout_s: float | None = None,
    progress: Callable[[int, float | None], None] | None = None,
    enqueue: list[dict[str, Any]] | None = None,
) -> TuneResult:
    """Tune on the training/validation splits of a built dataset (default: the newest); upsert the best.

    `n_trials`: the finished trials the study should hold; `timeout_s` (0: none) stops starting trials.
    Raises NoDataError when there is no built dataset.
    """
    from stockcli.db import datasets
    from stockcli.ml.training import resolve_device
    from stockcli.ml.tuning import TUNED_PARAMS, make_objective, run_study, study_name_for

    if run_id is None:
        run_id = datasets.latest_dataset_id(engine)
        if run_id is None:
            raise NoDataError(
                "No built dataset to tune on.",
                hint="Run `stockcli process` and `stockcli build` first.",
            )
    target_trials = settings.tuning.n_trials if n_trials is None else n_trials
    if target_trials < 1:
        raise ConfigError(f"The number of trials must be at least 1, got {target_trials}.")
    limit_s = settings.tuning.timeout_s if timeout_s is None else timeout_s
    if limit_s < 0:
        raise ConfigError(f"The tune timeout must be 0 (none) or positive, got {limit_s}.")
    device = resolve_device(settings.training.device)

    built = datasets.load_built(engine, run_id)
    # Only the training and validation splits go in: the test split stays unseen while tuning.
    objective = make_objective(
        train=built.train,
        validation=built.validation,
        tuning=settings.tuning,
        training=settings.training,
        epochs=settings.tuning.epochs,
        patience=settings.training.patience,
        seed=settings.training.seed,
        device=device,
        epoch_hook=lambda trial, epoch: checkpoint(settings, f"tune:trial-{trial}-epoch-{epoch}"),
        deadline=time.monotonic() + limit_s if limit_s and limit_s > 0 else None,
    )
    study_name = study_name_for(run_id)
    study = _open_study(settings=settings, study_name=study_name, enqueue=enqueue)
    outcome = run_study(
        study,
        objective,
        n_trials=target_trials,
        timeout_s=limit_s,
        progress=progress,
        after_trial=lambda number: checkpoint(settings, f"tune:after-trial-{number}"),
    )
    # Upsert the study's best parameters for the dataset when a trial finished.
    best_params = {name: outcome.best_params[name] for name in TUNED_PARAMS if name in outcome.best_params}
    if outcome.best_value is not None:
        save_best(
            engine,
            run_id=run_id,
            study_name=study_name,
            best_params=best_params,
            best_value=outcome.best_value,
            n_trials=outcome.n_trials,
            n_complete=outcome.n_complete,
            n_pruned=outcome.n_pruned,
        )
    counts = {**asdict(outcome), "study_name": study_name, "best_params": best_params}
    return TuneResult(run_id=run_id, storage=redact_url(settings.optuna_storage_url), **counts)


def _open_study(*, settings: Settings, study_name: str, enqueue: list[dict[str, Any]] | None) -> optuna.Study:
    """The dataset's persistent study (created or resumed); a fresh one queues `enqueue` first."""
    from stockcli.ml.tuning import in_search_space, open_study

    study = open_study(
        storage_url=settings.optuna_storage_url,
        study_name=study_name,
        seed=settings.training.seed,
        pruning=settings.tuning.pruning,
        pruner_startup_trials=settings.tuning.pruner_startup_trials,
        pruner_warmup_epochs=settings.tuning.pruner_warmup_epochs,
        busy_timeout_s=settings.storage.sqlite_busy_timeout_s,
        data_dir=settings.data_dir,
    )
    if enqueue and not study.get_trials(deepcopy=False):
        # A fresh study of a retrain tries Production's parameters first (if still in the search space).
        for params in enqueue:
            if in_search_space(params, settings.tuning):
                study.enqueue_trial(dict(params), skip_if_exists=True)
    return study
