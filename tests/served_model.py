"""One tiny real model, trained once per test session and shared by test_train_promote and test_predict.

`trained_world(tmp_path_factory)` fetches the bundled sample bars (GOOG, MSFT from 2011-06-01 up to
2013-03-01) into a SQLite database, processes and builds a dataset (10-session windows, three
indicators), registers a broken placeholder as Production, then trains a hidden-size-8 LSTM for two
epochs with `train` (which must leave that Production alone). The MLflow store lives in the world's
data dir; each test registers what it needs under a model name of its own.

Also here: copies of real bars under other ticker names (a stale, delisted, young or unseen ticker
made from real prices), and the registration of a bundle, or a broken twin of it, as a new version.
"""

from __future__ import annotations

import copy
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db.bars import load_bars, upsert_bars
from stockcli.db.store import utcnow
from stockcli.features.dataset import BuiltDataset
from stockcli.ml.bundle import ModelBundle
from stockcli.services.train import TrainSummary
from tests.model_helpers import AS_OF, build_dataset, tiny_settings

EPOCHS = 2


@dataclass(frozen=True)
class World:
    settings: Settings  # model name "source": the broken placeholder is Production there
    engine: Engine  # the world's SQLite database (bars, datasets, promotions)
    data_dir: Path  # holds the MLflow store shared by every test of the session
    dataset: BuiltDataset
    trained: TrainSummary
    placeholder_version: str  # the version that was Production while `train` ran
    good: ModelBundle  # the trained version, loaded back from the registry


_WORLD: dict[str, World] = {}


def trained_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The session's trained world (built on first use). Never move the "source" alias after this."""
    if "world" in _WORLD:
        return _WORLD["world"]
    from stockcli.db.datasets import load_built
    from stockcli.db.engine import open_database
    from stockcli.ml import registry
    from stockcli.services.train import train

    data_dir = tmp_path_factory.mktemp("trained") / "data"
    settings = tiny_settings(data_dir, mlflow={"model_name": "source"}, training={"epochs": EPOCHS})
    engine = open_database(settings)
    run_id = build_dataset(settings, engine)
    dataset = load_built(engine, run_id)
    registry.clear_caches()

    # A Production version exists before training: a broken twin of an untrained network of the
    # same architecture (`train` must leave it alone).
    import torch

    from stockcli.ml.networks import model_config
    from tests.model_helpers import build_model

    torch.manual_seed(0)
    n_features = int(dataset.train.n_features)
    kwargs = {
        "n_features": n_features,
        "n_own_features": n_features,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    placeholder = ModelBundle(
        model=broken_copy(build_model("lstm", **kwargs)),
        model_config=model_config("lstm", **kwargs),
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
    world = World(settings, engine, data_dir, dataset, trained, before, good)
    _WORLD["world"] = world
    return world


def own_name(world: World, prefix: str = "m") -> Settings:
    """The world's settings under a fresh model name (no versions, no alias)."""
    return world.settings.replace(mlflow={"model_name": f"{prefix}-{uuid.uuid4().hex[:8]}"})


def broken_copy(model: Any) -> Any:
    """All weights zero, the head's bias +5: a model that predicts a move of ~+8% every day."""
    import torch

    broken = copy.deepcopy(model)
    with torch.no_grad():
        for name, parameter in broken.named_parameters():
            parameter.zero_()
            if name.startswith("head") and name.endswith("bias"):
                parameter.fill_(5.0)
    return broken.eval()


def register(settings: Settings, bundle: ModelBundle, model: Any = None) -> str:
    """Register `model` (default: the bundle's own) with the bundle's spec, scalers, calibration and
    baselines as a new version of `settings.mlflow.model_name`; returns the version."""
    from stockcli.ml import registry

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
            context_tickers=bundle.context_tickers,
            calibration=bundle.calibration,
            baselines=bundle.baselines,
            training_params=bundle.training_params,
        )


# --- bars ---------------------------------------------------------------------------------------------


def fetch_sample(settings: Settings, engine: Engine, as_of: date = AS_OF) -> None:
    """The real sample bars of `settings`' tickers, fetched into `engine`'s database."""
    from stockcli.services.fetch import fetch

    result = fetch(settings=settings, engine=engine, as_of=as_of, tickers=["GOOG", "MSFT"])
    assert result.status == "ok", result


def copy_bars(
    engine: Engine,
    *,
    source: str,
    name: str,
    factor: float = 1.0,
    start: date | None = None,
    end: date | None = None,
) -> list[date]:
    """Store `source`'s real bars between `start` and `end` as ticker `name`, prices times `factor`.

    Returns the dates written, oldest first.
    """
    frame = load_bars(engine, [source], start=start, end=end)[source]
    assert len(frame), f"no bars of {source} between {start} and {end}"
    now = utcnow()
    rows = [
        {
            "ticker": name,
            "date": stamp.date(),
            "open": float(bar.open) * factor,
            "high": float(bar.high) * factor,
            "low": float(bar.low) * factor,
            "close": float(bar.close) * factor,
            "volume": int(bar.volume),
            "source": "test",
            "fetched_at": now,
        }
        for stamp, bar in frame.iterrows()
    ]
    with engine.begin() as connection:
        upsert_bars(connection, rows)
    return [row["date"] for row in rows]
