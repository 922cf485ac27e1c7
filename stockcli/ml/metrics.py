"""Forecast metrics in prices, always next to the naive persistence forecast on the same days.

For every ticker: MAE, RMSE, MAPE (a fraction: 0.0123 is 1.23%) and directional accuracy, for the
model and for the naive forecast (next close = last known close), plus skill = 1 - MAE / MAE_naive
(above 0: better than naive; below 0: worse).

Directional accuracy compares the sign of the predicted change (predicted close - base close) with
the sign of the actual change (actual close - base close). Days on which the actual close did not
move carry no direction and are left out of that ratio; a forecast of no change makes no call and
scores half a hit, the value of a coin flip. The naive forecast never calls a direction, so its
directional accuracy is 0.5 by construction: the level a model has to beat. `up_fraction` (the
share of days the close rose) is the accuracy of "always up", the other baseline worth knowing.

The average block is the mean over tickers of each per-ticker figure (skill included), so a
high-priced index does not drown out a cheap stock. Every number is a plain float, or None when it
is undefined (no usable day), so the result goes straight into JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from stockcli.errors import InputDataError

METRIC_NAMES = ("mae", "rmse", "mape", "directional_accuracy")


def evaluate(
    *,
    predicted_close: np.ndarray,
    actual_close: np.ndarray,
    base_close: np.ndarray,
    tickers: Sequence[str],
) -> dict[str, Any]:
    """Per-ticker and averaged metrics of `predicted_close` against naive, all (days, tickers) arrays.

    Days where any of the three values is missing (NaN) are skipped for that ticker only.
    Returns `{"n_days", "tickers": {ticker: block}, "average": block}` where a block is
    `{"model": {...}, "naive": {...}, "skill", "n_days", "up_fraction"}`.
    """
    predicted = _as_2d("predicted_close", predicted_close, len(tickers))
    actual = _as_2d("actual_close", actual_close, len(tickers))
    base = _as_2d("base_close", base_close, len(tickers))
    if not (predicted.shape == actual.shape == base.shape):
        raise InputDataError(
            f"Metric inputs differ in shape: predicted {predicted.shape}, actual {actual.shape}, base {base.shape}."
        )
    per_ticker: dict[str, Any] = {}
    for column, ticker in enumerate(tickers):
        per_ticker[str(ticker)] = _ticker_block(predicted[:, column], actual[:, column], base[:, column])
    return {
        "n_days": int(predicted.shape[0]),
        "tickers": per_ticker,
        "average": _average(list(per_ticker.values())),
    }


def _as_2d(name: str, values: np.ndarray, n_tickers: int) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1 and n_tickers == 1:
        array = array[:, None]
    if array.ndim != 2 or array.shape[1] != n_tickers:
        raise InputDataError(f"{name} must be (days, {n_tickers} tickers), got shape {array.shape}.")
    return array


def _forecast_block(forecast: np.ndarray, actual: np.ndarray, base: np.ndarray) -> dict[str, float | None]:
    if forecast.size == 0:
        return dict.fromkeys(METRIC_NAMES)
    error = forecast - actual
    nonzero_price = actual != 0
    mape = (
        float(np.mean(np.abs(error[nonzero_price]) / np.abs(actual[nonzero_price])))
        if nonzero_price.any()
        else None
    )
    actual_sign = np.sign(actual - base)
    predicted_sign = np.sign(forecast - base)
    moved = actual_sign != 0
    if moved.any():
        hits = np.where(
            predicted_sign[moved] == 0, 0.5, (predicted_sign[moved] == actual_sign[moved]).astype(float)
        )
        direction: float | None = float(np.mean(hits))
    else:
        direction = None
    return {
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mape": mape,
        "directional_accuracy": direction,
    }


def _skill(model_mae: float | None, naive_mae: float | None) -> float | None:
    if model_mae is None or naive_mae is None:
        return None
    if naive_mae == 0:
        # The price never moved: only a perfect forecast ties naive; anything else is infinitely worse.
        return 0.0 if model_mae == 0 else None
    return float(1.0 - model_mae / naive_mae)


def _ticker_block(predicted: np.ndarray, actual: np.ndarray, base: np.ndarray) -> dict[str, Any]:
    usable = np.isfinite(predicted) & np.isfinite(actual) & np.isfinite(base)
    predicted, actual, base = predicted[usable], actual[usable], base[usable]
    model = _forecast_block(predicted, actual, base)
    naive = _forecast_block(base, actual, base)
    moves = np.sign(actual - base)
    return {
        "model": model,
        "naive": naive,
        "skill": _skill(model["mae"], naive["mae"]),
        "n_days": int(predicted.size),
        "up_fraction": float(np.mean(moves[moves != 0] > 0)) if (moves != 0).any() else None,
    }


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _average(blocks: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": {name: _mean([b["model"][name] for b in blocks]) for name in METRIC_NAMES},
        "naive": {name: _mean([b["naive"][name] for b in blocks]) for name in METRIC_NAMES},
        "skill": _mean([b["skill"] for b in blocks]),
        "n_days": int(min((b["n_days"] for b in blocks), default=0)),
        "up_fraction": _mean([b["up_fraction"] for b in blocks]),
    }


def flatten(metrics: dict[str, Any]) -> dict[str, float]:
    """`evaluate`'s result as flat `name: value` pairs for a metrics logger (undefined values dropped).

    Names look like `avg.mae`, `avg.naive_mae`, `avg.skill`, `GOOG.mae`, `GSPC.naive_directional_accuracy`;
    characters other than letters, digits, `_`, `-` and `.` are removed from tickers (MLflow refuses `^`).
    """
    flat: dict[str, float] = {}

    def add(prefix: str, block: dict[str, Any]) -> None:
        for name in METRIC_NAMES:
            for source, label in (("model", name), ("naive", f"naive_{name}")):
                value = block[source].get(name)
                if value is not None:
                    flat[f"{prefix}.{label}"] = float(value)
        for extra in ("skill", "up_fraction"):
            if block.get(extra) is not None:
                flat[f"{prefix}.{extra}"] = float(block[extra])

    add("avg", metrics["average"])
    for ticker, block in metrics["tickers"].items():
        add("".join(c for c in ticker if c.isalnum() or c in "_-.") or "ticker", block)
    return flat
