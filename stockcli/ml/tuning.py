"""Hyper-parameter search with Optuna: seeded TPE, a median pruner, a resumable study.

The objective gets the training and validation splits only, so tuning cannot see the test split. The study
lives in persistent storage (a SQLite file in the data dir, or PostgreSQL, where several workers share one
study), one per built dataset, opened with `load_if_exists=True`. `n_trials` is a target for the whole study:
a rerun only runs what is missing (with several workers the study can end a few trials above it); failed
trials do not count. Optuna's `alembic_version` table never collides with ours (`stockcli_alembic_version`).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import sqlite3
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockcli.config import TrainingSettings, TuningSettings, redact_url
from stockcli.errors import ConfigError
from stockcli.ml.training import EpochCallback, TrainParams, train_model

if TYPE_CHECKING:
    import optuna

    from stockcli.features.dataset import WindowSet

# Seconds between heartbeats of a running trial, and how long a silent trial stays "running" before
# the next worker marks it failed (a worker killed mid-trial leaves such a trial behind).
HEARTBEAT_INTERVAL_S = 60
HEARTBEAT_GRACE_S = 180

# The search space, sampled in this order (the sampler's draws depend on it): the model type, then each
# number between `[tuning] <name>_min` and `<name>_max`.
TUNED_PARAMS = ("model_type", "hidden_size", "num_layers", "dropout", "learning_rate", "batch_size")
_INTEGERS = ("hidden_size", "num_layers", "batch_size")
_LOG_SCALE = ("hidden_size", "learning_rate", "batch_size")

ProgressCallback = Callable[[int, float | None], None]


@dataclass(frozen=True)
class StudyOutcome:
    """Where a study stands after a tune: totals over the whole study, not only this invocation."""

    study_name: str
    best_params: dict[str, Any]
    best_value: float | None
    best_trial_number: int | None
    n_trials: int  # every trial in the study, whatever its state
    n_complete: int
    n_pruned: int
    n_failed: int
    n_run: int  # trials this invocation finished
    wall_s: float


def study_name_for(run_id: str) -> str:
    """The study name of a dataset: one study per built dataset."""
    return f"stockcli-{run_id}"


def suggest_params(trial: optuna.Trial, *, tuning: TuningSettings, training: TrainingSettings) -> TrainParams:
    """Sample one point of the search space (integer ranges on a log scale too: batch 16 vs 32 matters as much
    as 64 vs 128); the other parameters come from `[training]`."""
    if not tuning.model_types:
        raise ConfigError("[tuning] model_types is empty.", hint="List at least one model type to search.")
    sampled: dict[str, Any] = {
        "model_type": trial.suggest_categorical("model_type", list(tuning.model_types))
    }
    for name in TUNED_PARAMS[1:]:
        suggest = trial.suggest_int if name in _INTEGERS else trial.suggest_float
        sampled[name] = suggest(name, *_bounds(tuning, name), log=name in _LOG_SCALE)
    return TrainParams.from_settings(training, sampled)


def _bounds(tuning: TuningSettings, name: str) -> tuple[Any, Any]:
    return getattr(tuning, f"{name}_min"), getattr(tuning, f"{name}_max")


def in_search_space(params: dict[str, Any], tuning: TuningSettings) -> bool:
    """Whether tuned parameters lie inside `[tuning]`'s search space (Optuna refuses a trial outside it)."""
    if params.get("model_type") not in tuning.model_types:
        return False
    for name in TUNED_PARAMS[1:]:
        value = params.get(name)
        low, high = _bounds(tuning, name)
        if value is None or not low <= value <= high:
            return False
    return True


def pruning_callback(trial: optuna.Trial) -> EpochCallback:
    """An `on_epoch` hook that reports each validation loss and raises TrialPruned when told to."""
    import optuna

    def report(epoch: int, train_loss: float, val_loss: float) -> None:
        if not math.isfinite(val_loss):
            raise optuna.TrialPruned(f"Validation loss became {val_loss} at epoch {epoch} (diverged).")
        trial.report(val_loss, step=epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"Pruned at epoch {epoch} with validation loss {val_loss:.6g}.")

    return report


def make_objective(
    *,
    train: WindowSet,
    validation: WindowSet,
    tuning: TuningSettings,
    training: TrainingSettings,
    epochs: int,
    patience: int,
    seed: int,
    device: str = "cpu",
    epoch_hook: Callable[[int, int], None] | None = None,
    deadline: float | None = None,
) -> Callable[[optuna.Trial], float]:
    """The objective: train with sampled parameters, return the best validation loss.

    `epoch_hook(trial_number, epoch)` runs after each epoch (a test hook). Past `deadline`
    (`time.monotonic()`) a running trial is pruned at its next epoch once the study holds a complete trial:
    Optuna's own timeout only stops *starting* trials.
    """

    def objective(trial: optuna.Trial) -> float:
        import optuna
        from optuna.trial import TrialState

        params = suggest_params(trial, tuning=tuning, training=training)
        report = pruning_callback(trial)

        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            trial.set_user_attr("epochs_run", epoch)
            report(epoch, train_loss, val_loss)
            if epoch_hook is not None:
                epoch_hook(trial.number, epoch)
            past_deadline = deadline is not None and time.monotonic() > deadline
            if past_deadline and trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
                raise optuna.TrialPruned(f"The tuning time budget ran out at epoch {epoch}.")

        result = train_model(
            train=train,
            validation=validation,
            params=params,
            epochs=epochs,
            patience=patience,
            seed=seed,
            device=device,
            on_epoch=on_epoch,
            num_threads=training.num_threads or None,
        )
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("epochs_run", result.epochs_run)
        trial.set_user_attr("hidden_size_used", result.config["hidden_size"])
        if not math.isfinite(result.best_val_loss):
            raise optuna.TrialPruned("No epoch reached a finite validation loss.")
        return float(result.best_val_loss)

    return objective


def make_storage(
    url: str, *, busy_timeout_s: float = 30.0, data_dir: Path | None = None
) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage for a SQLite file or a PostgreSQL database, with a trial heartbeat.

    SQLite gets WAL and a busy timeout so a second local process waits; PostgreSQL gets pre-ping (a long trial
    can outlive an idle connection) and a connect timeout. A SQLite file's folder is created only under
    `data_dir`. Raises StockCliError naming a damaged, missing or unreachable database.
    """
    import optuna
    from sqlalchemy.exc import DatabaseError

    from stockcli.storage import describe_database_error, parse_database_url, prepare_folder

    key = "[tuning] storage_url (or STOCKCLI_OPTUNA_STORAGE)"

    parsed = parse_database_url(url, what="Optuna storage", key=key)
    backend = parsed.get_backend_name()
    engine_kwargs: dict[str, Any]
    if backend == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            prepare_folder(path, data_dir=data_dir, what="Optuna storage", key=key)
            try:
                with sqlite3.connect(path, timeout=busy_timeout_s) as connection:  # WAL persists in the file
                    connection.execute("PRAGMA journal_mode=WAL")
            except sqlite3.DatabaseError as exc:
                raise describe_database_error("Optuna storage", url, exc, key=key) from None
        engine_kwargs = {"connect_args": {"timeout": busy_timeout_s}}
    elif backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine_kwargs = {"pool_pre_ping": True, "connect_args": {"connect_timeout": 10}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    full_url = parsed.render_as_string(hide_password=False)
    try:
        # Optuna creates its tables and stamps its Alembic version on first use; workers starting
        # together on an empty database would race on that, so they take turns.
        with _initialisation_lock(full_url, backend, engine_kwargs), warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url=full_url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=HEARTBEAT_GRACE_S,
            )
    except (DatabaseError, sqlite3.DatabaseError) as exc:
        raise describe_database_error("Optuna storage", url, exc, key=key) from None
    except ImportError as exc:
        raise ConfigError(f"Cannot use Optuna storage URL {redact_url(url)!r}: {exc}.") from None


# pg_advisory_lock key serialising Optuna's table creation ("optunaIN" in ASCII); not the run lock's key.
_INIT_LOCK_KEY = 0x6F7074756E61494E


@contextlib.contextmanager
def _initialisation_lock(url: str, backend: str, engine_kwargs: dict[str, Any]) -> Iterator[None]:
    """Serialise storage initialisation: an advisory lock on PostgreSQL, a file lock next to SQLite."""
    if backend == "postgresql":
        from sqlalchemy import create_engine, text

        engine = create_engine(url, **engine_kwargs)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _INIT_LOCK_KEY})
                connection.commit()
                try:
                    yield
                finally:
                    connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _INIT_LOCK_KEY})
                    connection.commit()
        finally:
            engine.dispose()
    elif backend == "sqlite" and ":memory:" not in url and url.startswith("sqlite:///"):
        from sqlalchemy.engine import make_url

        with open(f"{make_url(url).database}.init-lock", "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes
            yield
    else:
        yield


def open_study(
    *,
    storage_url: str,
    study_name: str,
    seed: int,
    pruning: bool,
    pruner_startup_trials: int,
    pruner_warmup_epochs: int,
    busy_timeout_s: float = 30.0,
    data_dir: Path | None = None,
) -> optuna.Study:
    """Create the study, or load it (a resumed or parallel tune), with a `trial_seeded_sampler`."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = make_storage(storage_url, busy_timeout_s=busy_timeout_s, data_dir=data_dir)
    if pruning:
        pruner: optuna.pruners.BasePruner = optuna.pruners.MedianPruner(
            n_startup_trials=pruner_startup_trials, n_warmup_steps=pruner_warmup_epochs, interval_steps=1
        )
    else:
        pruner = optuna.pruners.NopPruner()
    study = optuna.create_study(
        storage=storage, study_name=study_name, direction="minimize", pruner=pruner, load_if_exists=True
    )
    study.sampler = trial_seeded_sampler(seed)
    return study


def trial_seeded_sampler(seed: int) -> optuna.samplers.BaseSampler:
    """A TPE sampler whose randomness for trial n depends only on (seed, n), so a resumed study proposes what
    an uninterrupted one would have, and parallel workers never share a random state."""
    import optuna

    class TrialSeededTPESampler(optuna.samplers.TPESampler):
        def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            trial_seed = zlib.crc32(f"{seed}:{trial.number}".encode())
            # Optuna keeps these generators private; reseeding them is the documented effect of
            # `reseed_rng`, only with a chosen seed instead of a random one.
            self._rng.rng.seed(trial_seed)
            self._random_sampler._rng.rng.seed(trial_seed)
            super().before_trial(study, trial)

    return TrialSeededTPESampler(seed=seed)


def run_study(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int,
    timeout_s: float | None = None,
    progress: ProgressCallback | None = None,
    after_trial: Callable[[int], None] | None = None,
) -> StudyOutcome:
    """Run trials until the study holds `n_trials` finished ones (or `timeout_s` passes).

    `progress(trial_number, best_value_so_far)` and `after_trial(trial_number)` (a test hook) run after every
    trial of this process. Exceptions other than pruning propagate.
    """
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    if n_trials < 1:
        raise ConfigError(f"n_trials must be at least 1, got {n_trials}.")
    started = time.perf_counter()
    finished_states = (TrialState.COMPLETE, TrialState.PRUNED)
    remaining = n_trials - len(study.get_trials(deepcopy=False, states=finished_states))
    ran: list[int] = []

    def on_trial(current: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial.number)
        if progress is not None:
            progress(trial.number, _best_value(current))
        if after_trial is not None:
            after_trial(trial.number)

    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            timeout=timeout_s if timeout_s and timeout_s > 0 else None,
            callbacks=[MaxTrialsCallback(n_trials, states=finished_states), on_trial],
            catch=(),
        )
    return summarize(study, n_run=len(ran), wall_s=time.perf_counter() - started)


def summarize(study: optuna.Study, *, n_run: int = 0, wall_s: float = 0.0) -> StudyOutcome:
    """Totals and the best trial of a study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    best = min(complete, key=lambda t: (t.value, t.number)) if complete else None
    return StudyOutcome(
        study_name=study.study_name,
        best_params=dict(best.params) if best else {},
        best_value=float(best.value) if best and best.value is not None else None,
        best_trial_number=best.number if best else None,
        n_trials=len(trials),
        n_complete=len(complete),
        n_pruned=sum(t.state == TrialState.PRUNED for t in trials),
        n_failed=sum(t.state == TrialState.FAIL for t in trials),
        n_run=n_run,
        wall_s=wall_s,
    )


def _best_value(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:  # no complete trial yet
        return None
