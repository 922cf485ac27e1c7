"""Shared set-up for the model tests: a tiny real dataset from the bundled sample bars, and synthetic
WindowSets (hand-made slabs, a process with a known next-return distribution)."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.config import Settings, load_settings
from stockcli.features.dataset import BuiltSpec, WindowSet

AS_OF = date(2013, 3, 1)
TINY_INDICATORS = [{"name": "rsi", "window": 14}, {"name": "log_return"}, {"name": "sma", "window": 10}]
# A model bundle written (by `write_bundle`) before the spec was a typed model, and its recorded checksum.
FIXTURE_BUNDLE = Path(__file__).parent / "fixtures" / "bundle_format2"
FIXTURE_BUNDLE_SHA256 = "f80a5800bca83659f69928903e002fd299e57e222d3342a28025ba145dd7a171"


def gather(windows: WindowSet, indexes: np.ndarray | None = None) -> np.ndarray:
    """Windows `indexes` (default: all) as (n, L, features + context) float32, straight from the slab."""
    chosen = np.arange(len(windows)) if indexes is None else np.asarray(indexes, dtype=np.int64)
    steps = windows.rows[chosen][:, None] + np.arange(-windows.sequence_length + 1, 1)[None, :]
    own = windows.slab[steps, windows.series[chosen][:, None]]
    return np.concatenate([own, windows.context[steps]], axis=2).astype(np.float32, copy=False)


def subset(windows: WindowSet, indexes: np.ndarray) -> WindowSet:
    """The same slab with only `indexes` windows."""
    chosen = np.asarray(indexes, dtype=np.int64)
    return dataclasses.replace(
        windows,
        rows=windows.rows[chosen],
        series=windows.series[chosen],
        y=windows.y[chosen],
        base_dates=[windows.base_dates[i] for i in chosen],
        target_dates=[windows.target_dates[i] for i in chosen],
        base_closes=windows.base_closes[chosen],
        target_closes=windows.target_closes[chosen],
    )


def build_model(model_type: str, **kwargs: Any) -> Any:
    """A fresh network (see `networks.model_config` for the arguments)."""
    from stockcli.ml.networks import model_config, model_from_config

    return model_from_config(model_config(model_type, **kwargs))


def fixture_spec() -> BuiltSpec:
    """The fixture bundle's spec: two features (close, realized_vol_10), tickers AAA and BBB, context ^IDX."""
    return BuiltSpec.from_json(json.loads((FIXTURE_BUNDLE / "bundle.json").read_text())["spec"])


def tiny_settings(data_dir: Path, **overrides: dict[str, Any]) -> Settings:
    """Two tickers, ~20 months, three indicators, 10-session windows, a hidden size of 8, 3 epochs."""
    sections: dict[str, dict[str, Any]] = {
        "storage": {"data_dir": str(data_dir)},
        "data": {"tickers": ["GOOG", "MSFT"], "start": "2011-06-01"},
        "features": {"indicators": TINY_INDICATORS},
        "dataset": {"sequence_length": 10},
        "training": {"hidden_size": 8, "epochs": 3, "patience": 3, "batch_size": 32, "num_heads": 2},
    }
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    return load_settings(None, environ={}, overrides=sections)


def tiny_config_toml(data_dir: Path, model_name: str) -> str:
    """The same settings as a config file (for CLI tests)."""
    return f"""
[storage]
data_dir = "{data_dir}"
[data]
tickers = ["GOOG", "MSFT"]
start = 2011-06-01
[features]
indicators = [{{ name = "rsi", window = 14 }}, {{ name = "log_return" }}, {{ name = "sma", window = 10 }}]
[dataset]
sequence_length = 10
[training]
hidden_size = 8
epochs = 2
patience = 2
batch_size = 32
num_heads = 2
[mlflow]
model_name = "{model_name}"
"""


def build_dataset(settings: Settings, engine: Engine, as_of: date = AS_OF) -> str:
    """Fetch the sample bars, process and build; returns the dataset run id."""
    from stockcli.services.build import build
    from stockcli.services.fetch import fetch
    from stockcli.services.process import process

    # The context series are fetched by name: `fetch` alone fetches `[data] tickers` only (see
    # tests/test_forecast.py::test_fetch_stores_the_configured_context_series).
    context = [t for t in settings.data.context_tickers_resolved if t not in settings.data.tickers]
    fetch(settings=settings, engine=engine, as_of=as_of, tickers=[*settings.data.tickers, *context])
    processed = process(settings=settings, engine=engine, as_of=as_of)
    build(settings=settings, engine=engine, run_id=processed.run_id)
    return processed.run_id


# --- synthetic windows for the model tests (no database, no indicators) -----------------------------

_FIRST_DAY = date(2015, 1, 1)


def hand_windows(
    own: np.ndarray,
    target: np.ndarray,
    *,
    sequence_length: int,
    context: np.ndarray | None = None,
    series_names: tuple[str, ...] | None = None,
    rows: np.ndarray | None = None,
    series: np.ndarray | None = None,
) -> WindowSet:
    """A WindowSet over a hand-made slab.

    `own` (rows, series, features) are the scaled own features, `target` (rows, series) the scaled
    next-session target of each (row, series). Windows default to every (row, series) with a full
    window behind it, ordered by row then series. Row r is dated `_FIRST_DAY + r` days; closes walk
    from 100 with the unscaled target as the log return (scaler mean 0, scale 0.01).
    """
    own = np.asarray(own, dtype=np.float32)
    n_rows, n_series, _ = own.shape
    if context is None:
        context = np.zeros((n_rows, 0), dtype=np.float32)
    if rows is None or series is None:
        grid_rows, grid_series = np.meshgrid(
            np.arange(sequence_length - 1, n_rows), np.arange(n_series), indexing="ij"
        )
        rows, series = grid_rows.ravel(), grid_series.ravel()
    rows = np.asarray(rows, dtype=np.int64)
    series = np.asarray(series, dtype=np.int64)
    returns = 0.01 * np.asarray(target, dtype=np.float64)
    closes = 100.0 * np.exp(np.cumsum(returns, axis=0) - returns)  # close of row r: before its own move
    days = [_FIRST_DAY + timedelta(days=int(r)) for r in range(n_rows + 1)]
    return WindowSet(
        slab=own,
        context=np.asarray(context, dtype=np.float32),
        rows=rows,
        series=series,
        y=np.asarray(target, dtype=np.float32)[rows, series],
        base_dates=[days[r] for r in rows],
        target_dates=[days[r + 1] for r in rows],
        base_closes=closes[rows, series],
        target_closes=closes[rows, series] * np.exp(returns[rows, series]),
        series_names=series_names or tuple(f"S{s}" for s in range(n_series)),
        sequence_length=sequence_length,
    )


def random_windows(
    seed: int = 0, *, n_rows: int = 40, n_series: int = 3, n_features: int = 3, n_context: int = 2, L: int = 5
) -> WindowSet:
    """Random windows whose target is a fixed mix of the last step's features plus noise."""
    rng = np.random.default_rng(seed)
    own = rng.standard_normal((n_rows, n_series, n_features))
    context = rng.standard_normal((n_rows, n_context))
    mix = np.linspace(0.6, -0.4, n_features)
    target = own @ mix + 0.3 * context[:, :1] + 0.3 * rng.standard_normal((n_rows, n_series))
    return hand_windows(own, target, sequence_length=L, context=context)


class Splits(TypedDict):
    """Keyword arguments `train=` and `validation=` of `train_model` and `make_objective`."""

    train: WindowSet
    validation: WindowSet


def rows_between(windows: WindowSet, first: int, last: int) -> WindowSet:
    """The windows whose (slab) row lies in [first, last): a chronological part of a WindowSet."""
    return subset(windows, np.flatnonzero((windows.rows >= first) & (windows.rows < last)))


def true_scale(driver: np.ndarray) -> np.ndarray:
    """The known spread of the synthetic volatility process as a function of its driving feature."""
    return np.exp(0.8 * np.asarray(driver, dtype=np.float64))


def volatility_process(
    seed: int, *, n_rows: int, n_series: int = 2, L: int = 4, df: float = 5.0
) -> tuple[WindowSet, np.ndarray]:
    """Windows of a process with a known next-return distribution, and the true scale of each window.

    Feature 0 of each (row, series) is a driver v ~ U(-1.5, 1.5); the next scaled return is
    `true_scale(v) * t_df` (Student-t, `df` degrees of freedom; a normal one for df = inf), drawn
    independently for every window. Feature 1 is pure noise.
    """
    rng = np.random.default_rng(seed)
    driver = rng.uniform(-1.5, 1.5, size=(n_rows, n_series))
    own = np.stack([driver, rng.standard_normal((n_rows, n_series))], axis=2)
    noise = (
        rng.standard_t(df, size=(n_rows, n_series))
        if np.isfinite(df)
        else rng.standard_normal((n_rows, n_series))
    )
    windows = hand_windows(own, true_scale(driver) * noise, sequence_length=L)
    return windows, true_scale(driver)[windows.rows, windows.series]
