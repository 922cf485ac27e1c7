"""Tuning: search space from config, a pruner that really prunes through our objective (the
likelihood of the next return), a resumable and reproducible study in persistent storage, Production's
parameters as the first trial of a retrain, Optuna and stockcli sharing one PostgreSQL database, the
`tune` service and command (including two processes working on one study)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from stockcli.config import Settings, TrainingSettings, TuningSettings
from stockcli.ml import tuning
from stockcli.ml.training import TrainParams
from stockcli.ml.tuning import make_objective, open_study, pruning_callback, run_study, suggest_params
from tests.ledger import recent_runs
from tests.model_helpers import Splits, rows_between, volatility_process

# One batch size and one hidden size keep the number of distinct tensor shapes (each costs a one-off
# oneDNN kernel build of tens of milliseconds) small; the search still spans model type, rate, dropout.
TINY_TUNING = TuningSettings(
    epochs=3,
    batch_size_min=16,
    batch_size_max=16,
    hidden_size_min=8,
    hidden_size_max=8,
    num_layers_min=1,
    num_layers_max=1,
    pruner_startup_trials=2,
    pruner_warmup_epochs=1,
)
TRAINING = TrainingSettings(num_heads=2, patience=5, seed=5)


def _splits(seed: int = 0) -> Splits:
    """Pooled windows of two series whose next-return scale follows an input: 64 to train on, 32 to
    validate on (later dates)."""
    windows, _ = volatility_process(seed, n_rows=51, n_series=2)
    return {"train": rows_between(windows, 0, 35), "validation": rows_between(windows, 35, 51)}


def _objective(
    tuning_settings: TuningSettings = TINY_TUNING, **extra: Any
) -> Callable[[optuna.Trial], float]:
    return make_objective(
        **_splits(),
        tuning=tuning_settings,
        training=TRAINING,
        epochs=tuning_settings.epochs,
        patience=5,
        seed=5,
        **extra,
    )


def _study(tmp_path: Path, name: str = "stockcli-test", **overrides: Any) -> optuna.Study:
    options: dict[str, Any] = {
        "storage_url": f"sqlite:///{tmp_path / 'optuna.db'}",
        "study_name": name,
        "seed": 5,
        "pruning": True,
        "pruner_startup_trials": 2,
        "pruner_warmup_epochs": 1,
    }
    options.update(overrides)
    return open_study(**options)


def test_suggestions_stay_inside_the_configured_space() -> None:
    space = TuningSettings(
        model_types=("lstm", "lstm_cross_attention"), hidden_size_min=32, hidden_size_max=256
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen: list[TrainParams] = []

    def collect(trial: optuna.Trial) -> float:
        seen.append(suggest_params(trial, tuning=space, training=TrainingSettings(distribution="normal")))
        return 0.0

    study.optimize(collect, n_trials=40)
    assert {p.model_type for p in seen} == {"lstm", "lstm_cross_attention"}
    assert all(
        32 <= p.batch_size <= 256 and 32 <= p.hidden_size <= 256 and 1 <= p.num_layers <= 3 for p in seen
    )
    assert all(0.1 <= p.dropout <= 0.5 and 1e-4 <= p.learning_rate <= 1e-2 for p in seen)
    assert all(p.distribution == "normal" for p in seen)  # not searched: from [training]
    assert set(study.trials[0].params) == set(tuning.TUNED_PARAMS)
    assert study.trials[0].distributions["learning_rate"].log  # type: ignore[attr-defined]


def test_pruning_callback_reports_every_epoch_and_prunes_a_hopeless_trial() -> None:
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1))
    for _ in range(2):
        trial = study.ask()
        report = pruning_callback(trial)
        for epoch in (1, 2, 3):
            report(epoch, 0.0, 1.0 / epoch)
        study.tell(trial, 1.0 / 3)
    hopeless = study.ask()
    report = pruning_callback(hopeless)
    with pytest.raises(optuna.TrialPruned, match="epoch 1"):
        report(1, 0.0, 1000.0)
    assert hopeless.storage.get_trial(hopeless._trial_id).intermediate_values == {1: 1000.0}
    good = study.ask()
    report = pruning_callback(good)
    report(1, 0.0, 0.5)  # better than the median: carries on
    with pytest.raises(optuna.TrialPruned, match="diverged"):
        report(2, 0.0, math.nan)


GOOD = {
    "model_type": "lstm",
    "hidden_size": 8,
    "num_layers": 1,
    "dropout": 0.1,
    "learning_rate": 1e-2,
    "batch_size": 16,
}
# The smallest learning rate of the space and heavy dropout: after one epoch it is far behind.
HOPELESS = {**GOOD, "learning_rate": 1e-4, "dropout": 0.5}


def test_the_pruner_prunes_a_hopeless_trial_through_our_objective(tmp_path: Path) -> None:
    study = _study(tmp_path)
    for _ in range(2):
        study.enqueue_trial(GOOD)
    study.enqueue_trial(HOPELESS)
    outcome = run_study(study, _objective(), n_trials=3)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    hopeless = study.trials[2]
    assert max(hopeless.intermediate_values) < TINY_TUNING.epochs  # stopped before its last epoch
    assert all(
        len(t.intermediate_values) == TINY_TUNING.epochs for t in study.trials[:2]
    )  # reported every epoch
    assert outcome.n_pruned == 1 and outcome.n_complete == 2 and outcome.best_value is not None


def test_without_pruning_nothing_is_pruned(tmp_path: Path) -> None:
    study = _study(tmp_path, pruning=False)
    for _ in range(2):
        study.enqueue_trial(GOOD)
    study.enqueue_trial(HOPELESS)
    outcome = run_study(study, _objective(), n_trials=3)
    assert outcome.n_pruned == 0 and outcome.n_complete == 3
    assert len(study.trials[2].intermediate_values) == TINY_TUNING.epochs  # still reported every epoch


def test_the_objective_cannot_see_the_test_split() -> None:
    accepted = set(inspect.signature(make_objective).parameters)
    assert not any("test" in name for name in accepted)
    assert {"train", "validation"} <= accepted


def test_an_interrupted_tune_resumes_the_same_study(tmp_path: Path) -> None:
    first = run_study(_study(tmp_path), _objective(), n_trials=2)
    assert (first.n_trials, first.n_run) == (2, 2)
    second_study = _study(tmp_path)  # a new process would open it the same way
    second = run_study(second_study, _objective(), n_trials=4)
    assert second.n_run == 2 and second.n_complete + second.n_pruned == 4
    assert [t.number for t in second_study.trials] == [0, 1, 2, 3]
    # The resumed sampler does not replay the first suggestions.
    params = [t.params for t in second_study.trials]
    assert params[2] != params[0] and params[3] != params[1]
    again = run_study(_study(tmp_path), _objective(), n_trials=4)
    assert again.n_run == 0 and again.n_trials == 4  # the target is already met: nothing to do


def test_a_fresh_study_is_reproducible(tmp_path: Path) -> None:
    runs = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        study = _study(tmp_path / folder)
        run_study(study, _objective(), n_trials=2)
        runs.append([(t.params, t.value, t.state) for t in study.trials])
    assert runs[0] == runs[1]
    (tmp_path / "c").mkdir()
    other_seed = _study(tmp_path / "c", seed=6)
    run_study(other_seed, _objective(), n_trials=1)
    assert other_seed.trials[0].params != runs[0][0][0]


def test_progress_reports_each_trial_with_the_best_value_so_far(tmp_path: Path) -> None:
    seen: list[tuple[int, float | None]] = []
    study = _study(tmp_path)
    outcome = run_study(study, _objective(), n_trials=3, progress=lambda n, best: seen.append((n, best)))
    assert [n for n, _ in seen] == [0, 1, 2]
    bests = [b for _, b in seen if b is not None]
    assert len(bests) == len(seen) and bests == sorted(bests, reverse=True)
    assert bests[-1] == outcome.best_value
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete
    for trial in complete:  # a finished trial's value is its best epoch's validation loss
        assert trial.value == pytest.approx(min(trial.intermediate_values.values()))
        assert trial.value == trial.intermediate_values[trial.user_attrs["best_epoch"]]


def test_timeout_stops_starting_new_trials(tmp_path: Path) -> None:
    outcome = run_study(_study(tmp_path), _objective(), n_trials=50, timeout_s=0.01)
    assert 1 <= outcome.n_run < 50


@pytest.mark.postgres
@pytest.mark.parametrize("optuna_first", [False, True])
def test_optuna_and_stockcli_migrations_share_one_postgres_database(
    postgres_url: str, make_settings: Callable[..., Settings], optuna_first: bool
) -> None:
    from sqlalchemy import inspect as sql_inspect
    from sqlalchemy import text

    from stockcli.db.engine import VERSION_TABLE, current_revision, head_revision, open_database

    settings = make_settings(postgres_url, tuning={"storage_url": postgres_url})
    if optuna_first:
        tuning.make_storage(settings.optuna_storage_url)
    engine = open_database(settings)
    storage = tuning.make_storage(settings.optuna_storage_url)
    study = optuna.create_study(storage=storage, study_name="shared", load_if_exists=True)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    engine = open_database(settings)  # reopening runs our upgrade check again
    tuning.make_storage(settings.optuna_storage_url)  # and Optuna's

    assert current_revision(engine) == head_revision()
    tables = set(sql_inspect(engine).get_table_names())
    assert {
        VERSION_TABLE,
        "alembic_version",
        "studies",
        "trials",
        "raw_stock_data",
        "optimization_results",
    } <= tables
    with engine.connect() as connection:
        ours = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        theirs = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    assert ours == [head_revision()]
    assert len(theirs) == 1 and theirs != ours
    assert len(optuna.load_study(study_name="shared", storage=storage).trials) == 2


def test_bad_storage_urls_give_clear_errors(tmp_path: Path) -> None:
    from stockcli.errors import ConfigError, StockCliError

    with pytest.raises(ConfigError, match="Invalid Optuna storage URL"):
        tuning.make_storage("not a url")
    with pytest.raises(StockCliError, match="Cannot reach the Optuna storage") as caught:
        tuning.make_storage("postgresql+psycopg://someone:secret@127.0.0.1:1/nowhere")
    assert "secret" not in str(caught.value)


# --- tune workers share the run lock with each other, never with other commands ---------------------


def test_tune_workers_share_the_run_lock_but_other_commands_wait(settings: Settings) -> None:
    from datetime import date

    from stockcli.errors import LockHeldError
    from stockcli.services.runtime import pipeline_run

    as_of = date(2013, 3, 1)
    with pipeline_run(settings, command="tune", as_of=as_of, shared_lock=True) as first:
        with pipeline_run(settings, command="tune", as_of=as_of, shared_lock=True, engine=first.engine):
            statuses = {r.id: r.status for r in recent_runs(first.engine, command="tune")}
            assert statuses[first.run_id] == "running"  # the second worker did not mark it interrupted
        refused = pipeline_run(settings, command="daily", as_of=as_of, engine=first.engine)
        with pytest.raises(LockHeldError, match="Another run holds the lock"), refused:
            pass
    with pipeline_run(settings, command="daily", as_of=as_of, engine=first.engine) as daily:
        refused = pipeline_run(settings, command="tune", as_of=as_of, shared_lock=True, engine=daily.engine)
        with pytest.raises(LockHeldError), refused:
            pass
    runs = recent_runs(first.engine, limit=3)
    assert [(r.command, r.status) for r in runs] == [("daily", "ok"), ("tune", "ok"), ("tune", "ok")]
    first.engine.dispose()


# --- the service and the command, on a tiny real dataset built from the sample bars ----------------

# A short history (~370 training windows of GOOG and MSFT) keeps a trial well under a second.
START = "2012-01-01"
TUNE_OVERRIDES: dict[str, Any] = {
    "epochs": 2,
    "hidden_size_min": 8,
    "hidden_size_max": 8,
    "batch_size_min": 32,
    "batch_size_max": 32,
    "num_layers_max": 1,
    "pruner_startup_trials": 2,
    "pruner_warmup_epochs": 1,
}


class World:
    def __init__(self, settings: Settings, engine: Any, run_id: str) -> None:
        self.settings, self.engine, self.run_id = settings, engine, run_id

    def with_storage(self, path: Path) -> Settings:
        return self.settings.replace(tuning={"storage_url": f"sqlite:///{path}"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from stockcli.db.engine import open_database
    from tests.model_helpers import build_dataset, tiny_settings

    data_dir = tmp_path_factory.mktemp("tune") / "data"
    settings = tiny_settings(data_dir, data={"start": START}, tuning=TUNE_OVERRIDES)
    engine = open_database(settings)
    run_id = build_dataset(settings, engine)
    yield World(settings, engine, run_id)
    engine.dispose()


def _row(engine: Any, run_id: str) -> Any:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from stockcli.db.models import OptimizationResult

    with Session(engine) as session:
        row = session.scalars(
            select(OptimizationResult).where(OptimizationResult.run_id == run_id)
        ).one_or_none()
        session.expunge_all()
        return row


def test_tune_saves_the_best_params_and_a_rerun_completes_the_study(world: World, tmp_path: Path) -> None:
    from stockcli.db.optimization import best_params_for
    from stockcli.services.tune import tune

    settings = world.with_storage(tmp_path / "optuna.db")
    seen: list[tuple[int, float | None]] = []
    first = tune(
        settings=settings, engine=world.engine, n_trials=2, progress=lambda n, b: seen.append((n, b))
    )
    assert first.run_id == world.run_id  # the newest dataset by default
    assert first.study_name == f"stockcli-{world.run_id}"
    assert (first.n_trials, first.n_run) == (2, 2) and [n for n, _ in seen] == [0, 1]
    assert set(first.best_params) == set(tuning.TUNED_PARAMS) and first.best_value is not None
    row = _row(world.engine, world.run_id)
    assert row.best_params == first.best_params and row.best_value == pytest.approx(first.best_value)
    assert best_params_for(world.engine, world.run_id) == first.best_params
    assert best_params_for(world.engine, "ds-unknown") is None

    second = tune(settings=settings, engine=world.engine, run_id=world.run_id, n_trials=3)
    assert second.n_run == 1 and second.n_trials == 3 and second.n_complete + second.n_pruned == 3
    assert second.best_value is not None and second.best_value <= first.best_value
    assert _row(world.engine, world.run_id).n_trials == 3  # upserted, still one row
    # The saved parameters train a model as they are.
    TrainParams.from_settings(settings.training, best_params_for(world.engine, world.run_id))


class _Tripwire:
    """Stands in for the test split: any use of it fails the test."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"tuning touched the test split (.{name})")

    def __len__(self) -> int:
        raise AssertionError("tuning touched the test split (len)")


def test_tune_never_reads_the_test_split(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from stockcli.db import datasets
    from stockcli.services.tune import tune

    real_load_built = datasets.load_built
    monkeypatch.setattr(
        datasets,
        "load_built",
        lambda engine, run_id: dataclasses.replace(real_load_built(engine, run_id), test=_Tripwire()),  # type: ignore[arg-type]
    )
    guarded = tune(settings=world.with_storage(tmp_path / "guarded.db"), engine=world.engine, n_trials=2)
    monkeypatch.undo()
    plain = tune(settings=world.with_storage(tmp_path / "plain.db"), engine=world.engine, n_trials=2)
    assert guarded.best_value == plain.best_value and guarded.best_params == plain.best_params


# Production's parameters as the first trial of a retrain's search (services/retrain.py).
WARM = {
    "model_type": "lstm_attention",
    "hidden_size": 8,
    "num_layers": 1,
    "dropout": 0.25,
    "learning_rate": 0.003,
    "batch_size": 32,
}


def _study_of(settings: Settings, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=tuning.make_storage(settings.optuna_storage_url))


def test_enqueued_params_are_exactly_trial_0(world: World, tmp_path: Path) -> None:
    from stockcli.services.tune import tune

    settings = world.with_storage(tmp_path / "warm.db")
    result = tune(settings=settings, engine=world.engine, n_trials=2, enqueue=[dict(WARM)])
    study = _study_of(settings, result.study_name)
    first = study.trials[0]
    assert first.params == WARM and first.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert first.user_attrs["hidden_size_used"] == 8 and first.user_attrs["epochs_run"] >= 1
    assert study.trials[1].params != WARM  # the search goes on from there
    # A study that already has trials (a resumed tune) is not given the parameters again.
    again = {**WARM, "dropout": 0.4}
    tune(settings=settings, engine=world.engine, n_trials=3, enqueue=[again])
    assert [t.params for t in _study_of(settings, result.study_name).trials].count(again) == 0


def _production_bundle(monkeypatch: pytest.MonkeyPatch, params: dict[str, Any]) -> None:
    """Production's bundle as the train service registers it: TrainParams plus run details."""
    from types import SimpleNamespace

    from stockcli.ml import registry

    stored = {**TrainParams(**params, num_heads=2).to_dict(), "seed": 5, "epochs": 2, "patience": 3}
    monkeypatch.setattr(
        registry, "load_bundle", lambda settings, version=None, **_: SimpleNamespace(training_params=stored)
    )


def test_a_retrain_tries_productions_params_first(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockcli.services.retrain import _production_params
    from stockcli.services.tune import tune

    _production_bundle(monkeypatch, WARM)
    warm = _production_params(world.settings, "3")
    assert warm == WARM  # exactly the tuned parameters, nothing else (num_heads, seed... are not searched)
    assert _production_params(world.settings, None) is None
    settings = world.with_storage(tmp_path / "retrain.db")
    result = tune(settings=settings, engine=world.engine, n_trials=1, enqueue=[warm])
    assert _study_of(settings, result.study_name).trials[0].params == WARM


def test_productions_params_outside_the_search_space_do_not_break_a_retrain(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production was trained as lstm_cross_attention; since then [tuning] model_types was narrowed.
    Enqueuing its parameters as they are makes Optuna raise ValueError in trial 0, and the whole
    retrain fails (tune runs trials with catch=())."""
    from stockcli.services.retrain import _production_params
    from stockcli.services.tune import tune

    _production_bundle(monkeypatch, {**WARM, "model_type": "lstm_cross_attention"})
    warm = _production_params(world.settings, "3")
    settings = world.with_storage(tmp_path / "narrowed.db").replace(
        tuning={"model_types": ["lstm", "lstm_attention"]}
    )
    result = tune(settings=settings, engine=world.engine, n_trials=1, enqueue=[warm] if warm else None)
    assert result.n_complete + result.n_pruned == 1 and result.n_failed == 0


def test_tune_without_a_built_dataset_says_what_to_do(make_settings: Callable[..., Settings]) -> None:
    from stockcli.db.engine import open_database
    from stockcli.errors import NoDataError
    from stockcli.services.tune import tune

    settings = make_settings()
    with pytest.raises(NoDataError, match="No built dataset") as caught:
        tune(settings=settings, engine=open_database(settings), n_trials=1)
    assert "stockcli build" in str(caught.value) and caught.value.exit_code == 4


def _config(tmp_path: Path, data_dir: Path, *, database_url: str = "", **tuning_values: Any) -> Path:
    """The tiny settings as a config file, for the command and its subprocesses."""
    values = {**TUNE_OVERRIDES, **tuning_values}
    lines = [
        "[storage]",
        f'data_dir = "{data_dir}"',
        f'database_url = "{database_url}"',
        "[data]",
        'tickers = ["GOOG", "MSFT"]',
        f"start = {START}",
        "[features]",
        'indicators = [{ name = "rsi", window = 14 }, { name = "log_return" }, { name = "sma", window = 10 }]',
        "[dataset]",
        "sequence_length = 10",
        "[training]",
        "hidden_size = 8",
        "num_heads = 2",
        "patience = 3",
        "[tuning]",
        *(f"{k} = {v!r}".replace("'", '"') for k, v in values.items()),
    ]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_cli_tune_table_and_json(world: World, tmp_path: Path) -> None:
    import json

    from tests.conftest import Cli

    cli = Cli(_config(tmp_path, world.settings.data_dir))
    storage = {"STOCKCLI_OPTUNA_STORAGE": f"sqlite:///{tmp_path / 'cli-optuna.db'}"}
    shown = cli("tune", "--n-trials", "2", env=storage)
    assert shown.exit_code == 0, shown.output
    assert f"stockcli-{world.run_id}" in shown.output and "Best parameters" in shown.output
    assert "learning_rate" in shown.output

    result = cli("tune", "--n-trials", "3", "--run-id", world.run_id, "--json", env=storage)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "ok" and payload["run_id"] == world.run_id
    assert payload["n_trials"] == 3 and payload["n_run"] == 1
    assert set(payload["best_params"]) == set(tuning.TUNED_PARAMS)
    assert "cli-optuna.db" in payload["storage"]

    runs = recent_runs(world.engine, command="tune", limit=2)
    assert [r.status for r in runs] == ["ok", "ok"] and (runs[0].details or {})[
        "study"
    ] == f"stockcli-{world.run_id}"


def test_cli_tune_errors(world: World, tmp_path: Path) -> None:
    from tests.conftest import Cli

    empty = Cli(_config(tmp_path, tmp_path / "empty-data"))
    result = empty("tune", "--n-trials", "1")
    assert result.exit_code == 4 and "No built dataset" in result.output
    cli = Cli(_config(tmp_path, world.settings.data_dir))
    result = cli("tune", "--run-id", "ds-nope")
    assert result.exit_code == 2 and "ds-nope" in result.output
    result = cli("tune", "--n-trials", "0")
    assert result.exit_code == 2


def _run_cli(config: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    import os
    import subprocess
    import sys

    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    full_env.update({"STOCKCLI_CONFIG": str(config), **(env or {})})
    return subprocess.Popen(
        [sys.executable, "-m", "stockcli", *args],
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_a_killed_tune_resumes_where_it_stopped(world: World, tmp_path: Path) -> None:
    storage_url = f"sqlite:///{tmp_path / 'killed.db'}"
    config = _config(tmp_path, world.settings.data_dir, storage_url=storage_url)
    # Killed (SIGKILL) in the middle of trial 1: trial 0 is finished, trial 1 is left "running".
    killed = _run_cli(config, "tune", "--n-trials", "3", env={"STOCKCLI_KILL_AT": "tune:trial-1-epoch-1"})
    killed.communicate(timeout=120)
    assert killed.returncode == -9
    study = optuna.load_study(study_name=f"stockcli-{world.run_id}", storage=storage_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    first_params = study.trials[0].params

    from stockcli.services.tune import tune

    # The rerun (in this process: the service is what the command runs) continues the same study.
    resumed = tune(settings=world.with_storage(tmp_path / "killed.db"), engine=world.engine, n_trials=3)
    assert resumed.n_run == 2 and resumed.n_complete + resumed.n_pruned == 3
    study = optuna.load_study(study_name=f"stockcli-{world.run_id}", storage=storage_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 3 and study.trials[0].params == first_params  # same study, continued
    assert [t.number for t in study.trials] == list(range(len(study.trials)))
    # The killed trial stays out of the count (a later worker marks it failed once its heartbeat is stale).
    assert study.trials[1].state in (TrialState.RUNNING, TrialState.FAIL)


# Both workers start together and pay the same start-up (~20 s on a busy 2-core machine); trials of
# ~1 s each leave both of them several to take.
N_SHARED = 6


@pytest.mark.slow
@pytest.mark.postgres
def test_two_tune_processes_share_one_study_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    import json

    from stockcli.db.engine import open_database
    from tests.model_helpers import build_dataset, tiny_settings

    data_dir = tmp_path / "data"
    settings = tiny_settings(
        data_dir,
        data={"start": START},
        storage={"database_url": postgres_url},
        tuning={**TUNE_OVERRIDES, "storage_url": postgres_url},
    )
    engine = open_database(settings)
    run_id = build_dataset(settings, engine)
    # Both the app database and the study storage on PostgreSQL, as on a cluster of tune workers.
    config = _config(tmp_path, data_dir, database_url=postgres_url, storage_url=postgres_url)

    workers = [_run_cli(config, "--json", "tune", "--n-trials", str(N_SHARED)) for _ in range(2)]
    outputs = [w.communicate(timeout=240) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    results = [json.loads(out) for out, _ in outputs]

    study = optuna.load_study(study_name=f"stockcli-{run_id}", storage=tuning.make_storage(postgres_url))
    numbers = [t.number for t in study.trials]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(numbers) == len(set(numbers)) and sorted(numbers) == list(range(len(numbers)))
    assert N_SHARED <= len(finished) <= N_SHARED + 1  # the target, plus the trial the other was finishing
    assert all(r["n_run"] >= 1 for r in results)  # both really worked on it
    assert sum(r["n_run"] for r in results) == len(finished)
    assert {r["study_name"] for r in results} == {f"stockcli-{run_id}"}
    runs = recent_runs(engine, command="tune", limit=5)
    assert [r.status for r in runs] == ["ok", "ok"]  # both held the (shared) run lock at once
    engine.dispose()
