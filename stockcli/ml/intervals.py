"""Prediction intervals: quantile levels, interval metrics, conformal calibration and its online update.

Every forecast carries five quantiles of the next log return (`QUANTILES`), giving an 80% and a 95% central
interval. One definition of the interval metrics and their shape (`interval_block`), of split conformal
calibration on normalized residuals z = (y - mu) / sigma, and of adaptive conformal inference (Gibbs & Candès
2021), which keeps coverage when the volatility regime shifts. NaN marks a missing value and is skipped by
every metric.
"""

from __future__ import annotations

import math

import numpy as np

from stockcli.errors import InputDataError

QUANTILES: tuple[float, ...] = (0.025, 0.1, 0.5, 0.9, 0.975)
"""Quantile levels of every forecast, in column order of every (n, 5) quantile array."""

INTERVALS: dict[int, tuple[float, float]] = {80: (0.1, 0.9), 95: (0.025, 0.975)}
"""Central intervals by nominal coverage in percent: (lower level, upper level) from `QUANTILES`."""

MISCOVERAGE: dict[int, float] = {level: (100 - level) / 100.0 for level in INTERVALS}

INTERVAL_COLUMNS: dict[int, tuple[int, int]] = {
    level: (QUANTILES.index(low), QUANTILES.index(high)) for level, (low, high) in INTERVALS.items()
}

INTERVAL_METRIC_KEYS = (
    *(f"{figure}_{level}" for figure in ("coverage", "width", "winkler") for level in INTERVALS),
    "pinball",
    "n",
)

BEYOND_MAX_SCORE_FACTOR = 1.5


def winkler_scores(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, alpha: float) -> np.ndarray:
    """Winkler (1972) score of each observation for a (1 - alpha) interval, NaN where missing: the width plus
    (2 / alpha) times the distance outside it (Gneiting & Raftery's interval score; lower is better)."""
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"Winkler alpha must lie strictly between 0 and 1, got {alpha}.")
    low, high, value = _broadcast_float(lower, upper, actual)
    penalty = (2.0 / alpha) * (np.maximum(low - value, 0.0) + np.maximum(value - high, 0.0))
    return (high - low) + penalty


def pinball_losses(
    quantiles: np.ndarray, actual: np.ndarray, levels: tuple[float, ...] = QUANTILES
) -> np.ndarray:
    """Pinball loss (tau - 1{actual < q}) * (actual - q) of each observation, averaged over the levels; NaN
    where any quantile or the actual is missing, so paired tests drop the row on both sides."""
    predicted, value = _quantile_rows(quantiles, actual, len(levels))
    tau = np.asarray(levels, dtype=np.float64)[None, :]
    error = value[:, None] - predicted
    return np.maximum(tau * error, (tau - 1.0) * error).mean(axis=1)


def misses(quantiles: np.ndarray, actual: np.ndarray, level: int) -> np.ndarray:
    """Per observation: 1.0 when `actual` fell outside the `level`% interval, 0.0 inside, NaN when incomplete
    (the observations and inside rule of `interval_block`)."""
    predicted = np.asarray(quantiles, dtype=np.float64).reshape(-1, len(QUANTILES))
    value = np.asarray(actual, dtype=np.float64).reshape(-1)
    low_column, high_column = INTERVAL_COLUMNS[level]
    complete = np.isfinite(predicted).all(axis=1) & np.isfinite(value)
    inside = (predicted[:, low_column] <= value) & (value <= predicted[:, high_column])
    return np.where(complete, np.where(inside, 0.0, 1.0), np.nan)


def interval_block(quantiles: np.ndarray, actual: np.ndarray) -> dict[str, float | int | None]:
    """THE interval metrics shape: exactly the keys of `INTERVAL_METRIC_KEYS` over the `n` observations with
    all five quantiles and the actual value (None where there is none)."""
    predicted, value = _quantile_rows(quantiles, actual, len(QUANTILES))
    complete = np.isfinite(predicted).all(axis=1) & np.isfinite(value)
    predicted, value = predicted[complete], value[complete]
    block: dict[str, float | int | None] = {}
    for level, (low_column, high_column) in INTERVAL_COLUMNS.items():
        lower, upper = predicted[:, low_column], predicted[:, high_column]
        block[f"coverage_{level}"] = _nan_mean(
            (lower <= value) & (value <= upper)
        )  # the bounds count as inside
        block[f"width_{level}"] = _nan_mean(upper - lower)
        block[f"winkler_{level}"] = _nan_mean(winkler_scores(lower, upper, value, MISCOVERAGE[level]))
    block["pinball"] = _nan_mean(pinball_losses(predicted, value))
    block["n"] = int(value.size)
    return {key: block[key] for key in INTERVAL_METRIC_KEYS}


def sort_quantiles(quantiles: np.ndarray) -> np.ndarray:
    """Quantiles made non-decreasing along the last axis by sorting each row; rows with a NaN unchanged.

    Rearrangement never moves crossing quantiles further from the true quantile function, in any Lp norm
    (Chernozhukov, Fernández-Val & Galichon 2010); a running maximum lacks that guarantee.
    """
    predicted = np.asarray(quantiles, dtype=np.float64)
    rearranged = np.sort(predicted, axis=-1)
    incomplete = np.isnan(predicted).any(axis=-1, keepdims=True)
    return np.where(incomplete, predicted, rearranged)


def conformal_scores(actual_z: np.ndarray) -> np.ndarray:
    """Conformity scores |z| of normalized residuals, sorted ascending, NaN dropped."""
    z = np.asarray(actual_z, dtype=np.float64).ravel()
    return np.sort(np.abs(z[np.isfinite(z)]))


def conformal_quantile(sorted_scores: np.ndarray, miscoverage: float) -> float:
    """Split-conformal half-width at miscoverage alpha: the ceil((n + 1)(1 - alpha))-th smallest of the
    ascending `sorted_scores` (covers a fresh score with probability >= 1 - alpha; Vovk et al. 2005).

    alpha >= 1 gives 0.0. Where that rank exceeds n (alpha < 1 / (n + 1), or alpha <= 0 as adaptive conformal
    inference may ask) the exact answer is an infinite interval, which no price can show: the largest score
    times `BEYOND_MAX_SCORE_FACTOR` stands in, and a miss beyond it only pushes alpha down once more.
    """
    scores = np.asarray(sorted_scores, dtype=np.float64).ravel()
    if miscoverage >= 1.0:
        return 0.0
    n = scores.size
    if n == 0:
        raise InputDataError("No calibration scores: conformal calibration needs held-out residuals.")
    # The tolerance keeps (n + 1) * 0.8 = 800.0000000000001 from rounding up to 801.
    rank = math.ceil((n + 1) * (1.0 - miscoverage) - 1e-9)
    if rank > n:
        return float(scores[-1]) * BEYOND_MAX_SCORE_FACTOR
    if rank < 1:
        return 0.0
    return float(scores[rank - 1])


def half_widths(scores: np.ndarray, alpha_80: float, alpha_95: float) -> tuple[float, float]:
    """Conformal half-widths (in units of sigma) of the 80% and 95% intervals at the current levels, the 95%
    one raised to the 80% one when adaptive conformal inference has crossed the levels."""
    hw80 = conformal_quantile(scores, alpha_80)
    hw95 = max(conformal_quantile(scores, alpha_95), hw80)
    return hw80, hw95


def quantiles_from_halfwidths(
    center: np.ndarray | float, scale: np.ndarray | float, hw80: float, hw95: float
) -> np.ndarray:
    """(n, 5) quantiles in `QUANTILES` order: center -/+ scale * hw95, center -/+ scale * hw80, center
    (per-observation arrays or scalars, in log-return space)."""
    mu, sigma = (np.asarray(a, dtype=np.float64).reshape(-1, 1) for a in np.broadcast_arrays(center, scale))
    if np.any(sigma < 0):
        raise InputDataError("Interval scale (sigma) must be non-negative.")
    return mu + sigma * np.array([-hw95, -hw80, 0.0, hw80, hw95], dtype=np.float64)


def aci_update(alpha_t: float, target_alpha: float, miss: bool, gamma: float) -> float:
    """One step of adaptive conformal inference (Gibbs & Candès, NeurIPS 2021).

    alpha_{t+1} = alpha_t + gamma * (target - miss): a miss widens the next interval, a hit narrows it
    slowly; over T steps |mean(miss) - target| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma * T).
    Larger gamma adapts faster but jumps more.
    """
    return float(alpha_t + gamma * (target_alpha - float(bool(miss))))


def _quantile_rows(quantiles: np.ndarray, actual: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    predicted = np.asarray(quantiles, dtype=np.float64)
    if predicted.ndim == 1:
        predicted = predicted[None, :]
    if predicted.ndim != 2 or predicted.shape[1] != n_levels:
        raise InputDataError(f"quantiles must be (n, {n_levels}), got shape {predicted.shape}.")
    value = np.asarray(actual, dtype=np.float64).reshape(-1)
    if value.size != predicted.shape[0]:
        raise InputDataError(f"{predicted.shape[0]} quantile rows for {value.size} actual values.")
    return predicted, value


def _broadcast_float(*arrays: np.ndarray) -> list[np.ndarray]:
    converted = [np.asarray(array, dtype=np.float64) for array in arrays]
    try:
        return [
            array.reshape(-1) if array.ndim else array.reshape(1) for array in np.broadcast_arrays(*converted)
        ]
    except ValueError as error:
        shapes = ", ".join(str(array.shape) for array in converted)
        raise InputDataError(f"Interval metric inputs do not line up: shapes {shapes}.") from error


def _nan_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else None
