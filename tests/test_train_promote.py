"""`train` and `promote` with real tiny training on a real MLflow store and a real SQLite database.

One module-wide dataset and MLflow store (opening a store costs seconds); each test registers its
versions under its own model name, so aliases never leak between tests.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db import promotions
from stockcli.db.datasets import load_built
from stockcli.db.engine import make_engine, open_database
from stockcli.db.models import OptimizationResult, Promotion
from stockcli.db.store import utcnow
from stockcli.errors import NoDataError, RegistryError, UsageError
from stockcli.features.dataset import BuiltDataset
from stockcli.ml import registry
from stockcli.ml.forecast import predict_windows
from stockcli.ml.metrics import evaluate
from stockcli.services.promote import promote
from stockcli.services.train import TrainSummary, train
from tests.conftest import Cli
from tests.model_helpers import build_dataset, tiny_config_toml, tiny_settings


@dataclass(frozen=True)
class World:
    settings: Settings  # model name of the trained source model
    engine: Engine
    data_dir: Path
    dataset: BuiltDataset
    trained: TrainSummary
    broken_before_train: str  # the version that was Production while `train` ran
    good: registry.ModelBundle


def broken_copy(model: Any) -> Any:
    """All weights zero, head bias +5 standard deviations: predicts a ~+8% move every day."""
    import torch

    broken = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in broken.named_parameters():
            parameter.zero_()
            if name.endswith("head.bias"):
                parameter.fill_(5.0)
    return broken.eval()


def register(settings: Settings, bundle: registry.ModelBundle, model: Any = None) -> str:
    """Register `model` (default: the bundle's own) with the bundle's dataset spec and scalers."""
    with registry.training_run(settings, run_name="test-register") as run:
        return registry.register_version(
            settings,
            run,
            model=model if model is not None else bundle.model,
            model_config=bundle.model_config,
            spec=bundle.spec,
            scalers=bundle.scalers,
            tickers=bundle.tickers,
            sequence_length=bundle.sequence_length,
            target_kind=bundle.target_kind,
            dataset_run_id=bundle.dataset_run_id,
        )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("train") / "data"
    settings = tiny_settings(data_dir, mlflow={"model_name": "source"})
    engine = open_database(settings)
    run_id = build_dataset(settings, engine)
    dataset = load_built(engine, run_id)
    registry.clear_caches()

    # A Production version exists before training: `train` must leave it alone.
    import torch

    from stockcli.ml.networks import model_from_config

    torch.manual_seed(0)
    config = {
        "model_type": "lstm",
        "n_stocks": 2,
        "n_features": int(dataset.train.x.shape[3]),
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    placeholder = registry.ModelBundle(
        model=broken_copy(model_from_config(config)),
        model_config=config,
        spec=dataset.spec,
        scalers=dataset.scalers,
        tickers=dataset.tickers,
        sequence_length=dataset.sequence_length,
        target_kind=dataset.target_kind,
        dataset_run_id=run_id,
    )
    before = register(settings, placeholder)
    registry.set_production(settings, before)

    trained = train(settings=settings, engine=engine, run_id=run_id)
    good = registry.load_bundle(settings, trained.model_version)
    yield World(settings, engine, data_dir, dataset, trained, before, good)
    registry.clear_caches()
    engine.dispose()


@pytest.fixture
def fresh(world: World) -> Settings:
    """The module's settings under a model name of its own (no versions, no alias)."""
    return world.settings.replace(mlflow={"model_name": f"m-{uuid.uuid4().hex[:8]}"})


def promotion_row(engine: Engine, promotion_id: int) -> Promotion:
    [row] = [p for p in promotions.list_promotions(engine, limit=1000) if p.id == promotion_id]
    return row


def window_metrics(
    world: World, model: Any, dataset: BuiltDataset | None = None, scalers: dict[str, Any] | None = None
) -> dict[str, Any]:
    test = (dataset or world.dataset).test
    predicted = predict_windows(model, scalers or world.dataset.scalers, test.x, test.base_closes)
    return evaluate(
        predicted_close=predicted,
        actual_close=test.target_closes,
        base_close=test.base_closes,
        tickers=list(world.dataset.tickers),
    )


# --- train --------------------------------------------------------------------------------------------


def test_train_registers_a_version_and_never_moves_production(world: World) -> None:
    trained = world.trained
    assert registry.resolve_alias(world.settings) == world.broken_before_train
    assert int(trained.model_version) == int(world.broken_before_train) + 1
    assert trained.dataset_run_id == world.dataset.run_id
    assert trained.params_source == "config" and trained.params["hidden_size"] == 8
    assert 1 <= trained.best_epoch <= trained.epochs_run <= 3
    assert trained.n_test == len(world.dataset.test)
    assert (trained.test_start, trained.test_end) == (
        world.dataset.test.target_dates[0],
        world.dataset.test.target_dates[-1],
    )
    for block in [*trained.test_metrics["tickers"].values(), trained.test_metrics["average"]]:
        assert set(block["model"]) == set(block["naive"]) == {"mae", "rmse", "mape", "directional_accuracy"}
    for ticker, block in trained.test_metrics["tickers"].items():
        assert block["skill"] == pytest.approx(1 - block["model"]["mae"] / block["naive"]["mae"])
        assert (ticker in trained.worse_than_naive) == (block["model"]["mae"] > block["naive"]["mae"])
    # The registered version predicts exactly what training evaluated.
    assert window_metrics(world, world.good.model, scalers=world.good.scalers) == trained.test_metrics
    # The shrink factors were fit on the validation split and travel with the version.
    shrink = world.good.scalers["calibration"]["shrink"]
    assert len(shrink) == len(world.dataset.tickers) and all(0.0 <= f <= 1.0 for f in shrink)
    assert world.good.dataset_run_id == world.dataset.run_id and world.good.spec == world.dataset.spec


def test_train_logs_params_epoch_losses_metrics_plots_and_spec_to_mlflow(world: World) -> None:
    trained = world.trained
    client = registry.client(world.settings)
    run = client.get_run(trained.mlflow_run_id)
    params = run.data.params
    assert params["dataset_run_id"] == world.dataset.run_id
    assert params["seed"] == "42" and params["code_version"].startswith("0.1.0")
    for name in ("model_type", "hidden_size", "num_layers", "dropout", "learning_rate", "batch_size", "loss"):
        assert name in params
    history = client.get_metric_history(trained.mlflow_run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, trained.epochs_run + 1))
    metrics = run.data.metrics
    assert metrics["test.avg.mae"] == pytest.approx(trained.test_metrics["average"]["model"]["mae"])
    assert metrics["test.avg.naive_mae"] == pytest.approx(trained.test_metrics["average"]["naive"]["mae"])
    assert "test.GOOG.skill" in metrics
    artifacts = {a.path for a in client.list_artifacts(trained.mlflow_run_id)}
    assert {"plots", "dataset_spec.json", "model"} <= artifacts
    plots = {a.path for a in client.list_artifacts(trained.mlflow_run_id, "plots")}
    assert plots == {"plots/test_GOOG.png", "plots/test_MSFT.png"}
    local = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (local / "plots" / "test_GOOG.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((local / "dataset_spec.json").read_text())["spec"] == world.dataset.spec
    assert run.info.status == "FINISHED"
    [info] = [v for v in registry.list_versions(world.settings) if v.version == trained.model_version]
    assert info.training_run_id == trained.mlflow_run_id
    assert info.test_metrics["mae"] == pytest.approx(trained.test_metrics["average"]["model"]["mae"])


# --- promote ------------------------------------------------------------------------------------------


def test_candidate_that_wins_on_the_same_window_is_promoted(world: World, fresh: Settings) -> None:
    production = register(fresh, world.good, broken_copy(world.good.model))
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good)

    result = promote(settings=fresh, engine=world.engine, pipeline_run_id=None)

    assert result.candidate_version == candidate and result.production_version == production
    assert result.promoted and result.would_promote and not result.dry_run
    assert registry.resolve_alias(fresh) == candidate
    test = world.dataset.test
    assert (result.window_start, result.window_end, result.n_days) == (
        test.target_dates[0],
        test.target_dates[-1],
        len(test),
    )
    # Production was re-evaluated from raw bars on exactly the candidate's window.
    expected_production = window_metrics(world, broken_copy(world.good.model), scalers=world.good.scalers)
    assert result.production_metrics is not None
    assert result.production_value == pytest.approx(expected_production["average"]["model"]["mae"], rel=1e-6)
    assert result.candidate_metrics == world.trained.test_metrics
    assert result.candidate_value < result.production_value
    assert "better" in result.reason

    row = promotion_row(world.engine, result.promotion_id)
    assert row.promoted and not row.dry_run
    assert (row.candidate_version, row.production_version, row.metric) == (candidate, production, "mae")
    assert row.candidate_metrics["average"]["model"]["mae"] == pytest.approx(result.candidate_value)
    assert row.production_metrics is not None
    assert row.production_metrics["average"]["model"]["mae"] == pytest.approx(result.production_value)
    assert row.naive_metrics["average"]["mae"] == pytest.approx(
        world.trained.test_metrics["average"]["naive"]["mae"]
    )
    assert (row.window_start, row.window_end) == (test.target_dates[0], test.target_dates[-1])
    assert row.dataset_run_id == world.dataset.run_id and row.reason == result.reason


def test_candidate_that_loses_is_not_promoted(world: World, fresh: Settings) -> None:
    production = register(fresh, world.good)
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good, broken_copy(world.good.model))

    result = promote(settings=fresh, engine=world.engine)

    assert not result.promoted and not result.would_promote
    assert registry.resolve_alias(fresh) == production
    assert result.production_value is not None and result.candidate_value > result.production_value
    assert "not better" in result.reason
    row = promotion_row(world.engine, result.promotion_id)
    assert not row.promoted and row.candidate_version == candidate and row.production_version == production

    # The same weights again are not better either (ties keep Production), nor is a margin met.
    same = register(fresh, world.good)
    tie = promote(settings=fresh, engine=world.engine, version=same)
    assert (
        not tie.promoted
        and tie.improvement == pytest.approx(0.0)
        and registry.resolve_alias(fresh) == production
    )
    strict = fresh.replace(promotion={"min_improvement": 0.5})
    production_v3 = promote(settings=strict, engine=world.engine, version=production)
    assert not production_v3.promoted and "already is Production" in production_v3.reason


def test_no_production_promotes_and_the_naive_gate_can_refuse(world: World, fresh: Settings) -> None:
    broken = register(fresh, world.good, broken_copy(world.good.model))
    gated = fresh.replace(promotion={"require_beats_naive": True})

    refused = promote(settings=gated, engine=world.engine)
    assert not refused.promoted and "naive" in refused.reason and refused.production_version is None
    assert refused.naive_value is not None and refused.candidate_value > refused.naive_value
    assert registry.resolve_alias(fresh) is None
    assert not promotion_row(world.engine, refused.promotion_id).promoted

    accepted = promote(settings=fresh, engine=world.engine)
    assert accepted.promoted and "no production model" in accepted.reason.lower()
    assert accepted.production_metrics is None and registry.resolve_alias(fresh) == broken
    row = promotion_row(world.engine, accepted.promotion_id)
    assert row.promoted and row.production_version is None and row.production_metrics is None


def test_dry_run_records_the_decision_and_moves_nothing(world: World, fresh: Settings) -> None:
    production = register(fresh, world.good, broken_copy(world.good.model))
    registry.set_production(fresh, production)
    register(fresh, world.good)

    result = promote(settings=fresh, engine=world.engine, dry_run=True)

    assert result.would_promote and not result.promoted and result.dry_run
    assert result.reason.startswith("Dry run, nothing moved: would promote")
    assert registry.resolve_alias(fresh) == production
    row = promotion_row(world.engine, result.promotion_id)
    assert row.dry_run and not row.promoted


def test_production_from_another_dataset_is_reevaluated_with_its_own_spec(
    world: World, fresh: Settings
) -> None:
    """Production was trained on a dataset with other indicators and window length; the comparison
    still happens on the candidate's test window, with production's own features and scalers."""
    import torch

    from stockcli.ml.networks import build_model, model_config

    other_settings = tiny_settings(
        world.data_dir,
        features={"indicators": [{"name": "rsi", "window": 7}, {"name": "log_return"}]},
        dataset={"sequence_length": 6},
    )
    other = load_built(world.engine, build_dataset(other_settings, world.engine))
    assert other.spec["feature_names"] != world.dataset.spec["feature_names"]
    torch.manual_seed(1)
    kwargs = {
        "n_stocks": 2,
        "n_features": int(other.train.x.shape[3]),
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    other_bundle = registry.ModelBundle(
        model=build_model("lstm", **kwargs).eval(),
        model_config=model_config("lstm", **kwargs),
        spec=other.spec,
        scalers=other.scalers,
        tickers=other.tickers,
        sequence_length=other.sequence_length,
        target_kind=other.target_kind,
        dataset_run_id=other.run_id,
    )
    production = register(fresh, other_bundle)
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good)

    result = promote(settings=fresh, engine=world.engine, dry_run=True)
    assert result.candidate_version == candidate and result.n_days == len(world.dataset.test)

    # What production predicts on those days from its own dataset's windows:
    test = world.dataset.test
    parts = [other.train, other.validation, other.test]
    x = np.concatenate([p.x for p in parts])
    closes = np.concatenate([p.base_closes for p in parts])
    index = {d: i for i, d in enumerate(d for p in parts for d in p.base_dates)}
    rows = [index[d] for d in test.base_dates]
    own = predict_windows(other_bundle.model, other.scalers, x[rows], closes[rows])
    expected = evaluate(
        predicted_close=own,
        actual_close=test.target_closes,
        base_close=test.base_closes,
        tickers=list(world.dataset.tickers),
    )
    assert result.production_metrics is not None
    assert result.production_value == pytest.approx(expected["average"]["model"]["mae"], rel=1e-5)


def test_failed_alias_move_leaves_production_and_says_so(
    world: World, fresh: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    production = register(fresh, world.good, broken_copy(world.good.model))
    registry.set_production(fresh, production)
    register(fresh, world.good)

    def locked(*args: object, **kwargs: object) -> None:
        raise MlflowException("database is locked")

    monkeypatch.setattr(registry.client(fresh), "set_registered_model_alias", locked)
    with pytest.raises(RegistryError) as caught:
        promote(settings=fresh, engine=world.engine)
    monkeypatch.undo()
    assert "Another process holds" in (caught.value.hint or "")
    assert registry.resolve_alias(fresh) == production
    newest = promotions.list_promotions(world.engine, limit=1)[0]
    assert not newest.promoted and "NOT moved" in newest.reason and newest.production_version == production


def test_promote_takes_the_run_lock_unless_the_caller_holds_it(world: World, fresh: Settings) -> None:
    from stockcli.db.lock import run_lock
    from stockcli.errors import LockHeldError

    candidate = register(fresh, world.good)
    with run_lock(world.engine, fresh.data_dir / "stockcli.lock", "daily"):
        with pytest.raises(LockHeldError, match="stockcli daily"):
            promote(settings=fresh, engine=world.engine, run_lock_held=False)
        assert registry.resolve_alias(fresh) is None
    result = promote(settings=fresh, engine=world.engine, run_lock_held=False)
    assert result.promoted and registry.resolve_alias(fresh) == candidate


def test_unreachable_registry_fails_before_any_decision(world: World, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    unreachable = world.settings.replace(mlflow={"tracking_uri": f"sqlite:///{blocker / 'mlflow.db'}"})
    before = len(promotions.list_promotions(world.engine, limit=10_000))
    with pytest.raises(RegistryError, match="Cannot"):
        promote(settings=unreachable, engine=world.engine)
    with pytest.raises(RegistryError):
        train(settings=unreachable, engine=world.engine, run_id=world.dataset.run_id, epochs=1)
    assert len(promotions.list_promotions(world.engine, limit=10_000)) == before
    assert registry.resolve_alias(world.settings) == world.broken_before_train


def test_unknown_version_and_empty_registry(world: World, fresh: Settings) -> None:
    with pytest.raises(NoDataError, match="No registered model version"):
        promote(settings=fresh, engine=world.engine)
    register(fresh, world.good)
    with pytest.raises(UsageError, match="no version 99") as caught:
        promote(settings=fresh, engine=world.engine, version="99")
    assert caught.value.exit_code == 2


# --- the promotions table on both databases ----------------------------------------------------------


def test_promotions_table_round_trip(database_url: str) -> None:
    from stockcli.db.engine import upgrade_schema

    engine = make_engine(database_url)
    upgrade_schema(engine)
    common: dict[str, Any] = {
        "candidate_version": "2",
        "production_version": "1",
        "metric": "mae",
        "candidate_metrics": {"average": {"model": {"mae": 1.0}}},
        "production_metrics": {"average": {"model": {"mae": 2.0}}},
        "naive_metrics": {"average": {"mae": 1.5}},
        "window_start": None,
        "window_end": None,
        "dataset_run_id": "ds-x",
    }
    first = promotions.record_decision(engine, **common, promoted=True, dry_run=False, reason="better")
    promotions.record_decision(engine, **common, promoted=False, dry_run=True, reason="dry")
    assert [p.reason for p in promotions.list_promotions(engine)] == ["dry", "better"]
    assert [p.reason for p in promotions.list_promotions(engine, include_dry_runs=False)] == ["better"]
    last = promotions.last_promotion(engine)
    assert last is not None and last.id == first and last.candidate_metrics["average"]["model"]["mae"] == 1.0
    promotions.mark_not_promoted(engine, first, reason="alias failed")
    assert promotions.last_promotion(engine) is None
    engine.dispose()


# --- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def model_cli(world: World, tmp_path: Path) -> Callable[..., Any]:
    config = tmp_path / "config.toml"
    config.write_text(tiny_config_toml(world.data_dir, f"cli-{uuid.uuid4().hex[:8]}"), encoding="utf-8")
    return Cli(config)


def test_cli_train_promote_models(world: World, model_cli: Cli) -> None:
    run_id = world.dataset.run_id
    with world.engine.begin() as connection:
        connection.execute(
            OptimizationResult.__table__.insert().values(
                run_id=run_id,
                study_name="s",
                best_params={"model_type": "lstm_attention", "hidden_size": 6},
                best_value=1.0,
                n_trials=1,
                n_complete=1,
                n_pruned=0,
                updated_at=utcnow(),
            )
        )
    try:
        trained = model_cli("--as-of", "2013-03-01", "train", "--run-id", run_id)
    finally:
        with world.engine.begin() as connection:
            connection.execute(delete(OptimizationResult).where(OptimizationResult.run_id == run_id))
    assert trained.exit_code == 0, trained.output
    assert "Registered model version 1" in trained.output
    assert "lstm_attention, tuned parameters" in trained.output
    assert "naive MAE" in trained.output and "skill" in trained.output and "average" in trained.output
    assert "naive forecast (next close = last close)" in trained.output
    assert "Production is unchanged" in trained.output

    decided = model_cli("--json", "promote", "--dry-run")
    assert decided.exit_code == 0, decided.output
    payload = json.loads(decided.stdout)
    assert payload["decision"]["would_promote"] and not payload["decision"]["promoted"]
    assert payload["production"] is None and payload["candidate"]["version"] == "1"
    assert set(payload["naive"]["average"]) == {"mae", "rmse", "mape", "directional_accuracy"}
    assert payload["window"]["n_days"] == len(world.dataset.test)

    promoted = model_cli("promote")
    assert promoted.exit_code == 0, promoted.output
    assert "Promoted" in promoted.output and "No production model yet" in promoted.output

    listed = model_cli("models")
    assert listed.exit_code == 0 and "Production" in listed.output and "lstm_attention" in listed.output
    as_json = json.loads(model_cli("models", "--json").stdout)
    assert as_json["versions"][0]["version"] == "1" and as_json["versions"][0]["aliases"] == ["Production"]

    unknown = model_cli("promote", "--version", "99")
    assert unknown.exit_code == 2 and "no version 99" in unknown.output

    with world.engine.connect() as connection:
        ledger = connection.execute(
            select(Promotion.pipeline_run_id).where(Promotion.id == payload["decision"]["promotion_id"])
        ).scalar_one()
    assert ledger is not None


def test_cli_promote_with_nothing_registered_exits_4(model_cli: Cli) -> None:
    result = model_cli("promote")
    assert result.exit_code == 4
    assert "No registered model version" in result.output and "stockcli train" in result.output
