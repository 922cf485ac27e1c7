"""The forecasting primitive: raw bars through the model's own spec and scalers give exactly the
predictions of the stored dataset windows, and nothing after an as-of date is used."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stockcli.db.bars import load_bars
from stockcli.db.datasets import load_built
from stockcli.db.engine import open_database
from stockcli.errors import NoDataError
from stockcli.features.dataset import BuiltDataset
from stockcli.ml.forecast import forecast, predict_windows
from stockcli.ml.networks import build_model, model_config
from stockcli.ml.registry import ModelBundle
from tests.model_helpers import build_dataset, tiny_settings


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, BuiltDataset]]:
    settings = tiny_settings(tmp_path_factory.mktemp("forecast") / "data")
    engine = open_database(settings)
    run_id = build_dataset(settings, engine)
    yield engine, load_built(engine, run_id)
    engine.dispose()


def bundle_for(dataset: BuiltDataset, model_type: str = "lstm_cross_attention") -> ModelBundle:
    import torch

    torch.manual_seed(3)
    kwargs = {
        "n_stocks": len(dataset.tickers),
        "n_features": int(dataset.train.x.shape[3]),
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    return ModelBundle(
        model=build_model(model_type, **kwargs).eval(),
        model_config=model_config(model_type, **kwargs),
        spec=dataset.spec,
        scalers=dataset.scalers,
        tickers=dataset.tickers,
        sequence_length=dataset.sequence_length,
        target_kind=dataset.target_kind,
        dataset_run_id=dataset.run_id,
        version="7",
    )


@pytest.mark.parametrize("part", ["train", "test"])
def test_forecast_from_raw_bars_equals_the_dataset_windows(
    built: tuple[Any, BuiltDataset], part: str
) -> None:
    engine, dataset = built
    bundle = bundle_for(dataset)
    windows = dataset.part(part)
    picks = [0, 1, len(windows) // 2, len(windows) - 1]
    as_of_dates = [windows.base_dates[i] for i in picks]
    bars = load_bars(engine, list(dataset.tickers), end=max(as_of_dates))

    result = forecast(bundle, bars, as_of_dates)
    from_windows = predict_windows(bundle.model, bundle.scalers, windows.x[picks], windows.base_closes[picks])

    assert result.base_dates == as_of_dates
    assert result.tickers == dataset.tickers and result.model_version == "7"
    np.testing.assert_allclose(result.base_closes, windows.base_closes[picks], rtol=0, atol=1e-9)
    np.testing.assert_allclose(result.predicted_closes, from_windows, rtol=1e-5)
    # The model really moves the forecast away from the last close (the comparison is not trivial).
    assert np.abs(result.predicted_closes - result.base_closes).max() > 1e-3


def test_bars_after_the_as_of_date_change_nothing(built: tuple[Any, BuiltDataset]) -> None:
    import pandas as pd

    engine, dataset = built
    bundle = bundle_for(dataset, "lstm")
    as_of = dataset.test.base_dates[5]
    bars = load_bars(engine, list(dataset.tickers), end=as_of)
    honest = forecast(bundle, bars, [as_of])

    future = {}
    for ticker, frame in bars.items():
        extra = pd.DataFrame(
            {"open": 1e6, "high": 1e6, "low": 1e6, "close": 1e6, "volume": 10**12},
            index=pd.DatetimeIndex([pd.Timestamp(as_of + timedelta(days=d)) for d in (1, 2, 3)], name="date"),
        )
        future[ticker] = pd.concat([frame, extra])
    leaked = forecast(bundle, future, [as_of])
    np.testing.assert_array_equal(leaked.predicted_closes, honest.predicted_closes)
    # A weekend as-of date uses the session before it.
    saturday = next(d for d in (as_of + timedelta(days=k) for k in range(1, 8)) if d.weekday() == 5)
    friday_bars = load_bars(engine, list(dataset.tickers), end=saturday)
    weekend = forecast(bundle, friday_bars, [saturday])
    assert weekend.base_dates[0] < saturday and weekend.base_dates[0].weekday() == 4


def test_missing_ticker_bars_are_a_clear_error(built: tuple[Any, BuiltDataset], tmp_path: Path) -> None:
    engine, dataset = built
    bundle = bundle_for(dataset, "lstm")
    bars = load_bars(engine, [dataset.tickers[0]], end=date(2013, 3, 1))
    with pytest.raises(NoDataError, match=dataset.tickers[1].replace("^", r"\^")):
        forecast(bundle, bars, [dataset.test.base_dates[0]])
