"""Prediction intervals: the quantile levels, their metrics, conformal calibration and its online update.

Every forecast carries five quantiles of the next log return (`QUANTILES`), which give an 80% and a
95% central interval (`INTERVALS`). This module is the one definition of:

- the interval metrics (coverage, width, Winkler score, pinball loss) and the one dict shape they
  are reported in (`interval_block`);
- split conformal calibration on normalized residuals z = (y - mu) / sigma: the half-width of an
  interval, in units of sigma, is an empirical quantile of |z| on held-out data;
- adaptive conformal inference (Gibbs & Candès 2021), which moves the miscoverage level used to
  pick that quantile after every observed close, so coverage holds over time even when the
  volatility regime shifts.

Pure functions on arrays; NaN marks a missing value and is skipped by every metric.
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
"""Target miss rate of each interval: 0.2 for the 80% interval, 0.05 for the 95% one."""

INTERVAL_COLUMNS: dict[int, tuple[int, int]] = {
    level: (QUANTILES.index(low), QUANTILES.index(high)) for level, (low, high) in INTERVALS.items()
}
"""Column indices of each interval's bounds in an (n, 5) quantile array."""

MEDIAN_COLUMN = QUANTILES.index(0.5)

INTERVAL_METRIC_KEYS = (
    "coverage_80",
    "coverage_95",
    "width_80",
    "width_95",
    "winkler_80",
    "winkler_95",
    "pinball",
    "n",
)
"""The keys of `interval_block`, the one shape of interval metrics everywhere."""

BEYOND_MAX_SCORE_FACTOR = 1.5
"""Half-width, as a multiple of the largest calibration score, when the level asked for is beyond the data."""


# --- metrics -------------------------------------------------------------------------------------


def coverage(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray) -> float | None:
    """Share of observations with lower <= actual <= upper; None when no observation is complete."""
    low, high, value = _broadcast_float(lower, upper, actual)
    complete = np.isfinite(low) & np.isfinite(high) & np.isfinite(value)
    if not complete.any():
        return None
    inside = (low[complete] <= value[complete]) & (value[complete] <= high[complete])
    return float(inside.mean())


def mean_width(lower: np.ndarray, upper: np.ndarray) -> float | None:
    """Mean of upper - lower over complete observations; None when there is none."""
    low, high = _broadcast_float(lower, upper)
    complete = np.isfinite(low) & np.isfinite(high)
    if not complete.any():
        return None
    return float(np.mean(high[complete] - low[complete]))


def winkler_scores(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, alpha: float) -> np.ndarray:
    """Winkler (1972) interval score of each observation for a (1 - alpha) interval; NaN where missing.

    width + (2 / alpha) * (lower - actual) when actual is below the interval,
    width + (2 / alpha) * (actual - upper) when above, the width alone when inside. Lower is better;
    it is the interval score of Gneiting & Raftery (2007), a proper scoring rule for the two quantiles.
    """
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"Winkler alpha must lie strictly between 0 and 1, got {alpha}.")
    low, high, value = _broadcast_float(lower, upper, actual)
    penalty = (2.0 / alpha) * (np.maximum(low - value, 0.0) + np.maximum(value - high, 0.0))
    return (high - low) + penalty


def winkler_score(lower: np.ndarray, upper: np.ndarray, actual: np.ndarray, alpha: float) -> float | None:
    """Mean Winkler score (see `winkler_scores`) over complete observations; None when there is none."""
    return _nan_mean(winkler_scores(lower, upper, actual, alpha))


def pinball_losses(
    quantiles: np.ndarray, actual: np.ndarray, levels: tuple[float, ...] = QUANTILES
) -> np.ndarray:
    """Pinball (quantile) loss of each observation, averaged over the levels; NaN where incomplete.

    For level tau and quantile q: (tau - 1{actual < q}) * (actual - q). `quantiles` is (n, levels),
    `actual` (n,). An observation missing any quantile or its actual value is NaN, so paired tests
    on these per-observation losses drop it on both sides.
    """
    predicted, value = _quantile_rows(quantiles, actual, len(levels))
    tau = np.asarray(levels, dtype=np.float64)[None, :]
    error = value[:, None] - predicted
    losses = np.maximum(tau * error, (tau - 1.0) * error)
    return losses.mean(axis=1)


def pinball_loss(
    quantiles: np.ndarray, actual: np.ndarray, levels: tuple[float, ...] = QUANTILES
) -> float | None:
    """Mean pinball loss over levels and complete observations (see `pinball_losses`); None when none."""
    return _nan_mean(pinball_losses(quantiles, actual, levels))


def misses(quantiles: np.ndarray, actual: np.ndarray, level: int) -> np.ndarray:
    """Per observation: 1.0 when `actual` fell outside the `level`% interval, 0.0 inside, NaN when
    the observation is incomplete (the same observations, and the same inside rule, as
    `interval_block`)."""
    predicted = np.asarray(quantiles, dtype=np.float64).reshape(-1, len(QUANTILES))
    value = np.asarray(actual, dtype=np.float64).reshape(-1)
    low_column, high_column = INTERVAL_COLUMNS[level]
    complete = np.isfinite(predicted).all(axis=1) & np.isfinite(value)
    inside = (predicted[:, low_column] <= value) & (value <= predicted[:, high_column])
    return np.where(complete, np.where(inside, 0.0, 1.0), np.nan)


def interval_block(quantiles: np.ndarray, actual: np.ndarray) -> dict[str, float | int | None]:
    """THE interval metrics shape: coverage, width and Winkler score of both intervals, and pinball loss.

    `quantiles` is (n, 5) in `QUANTILES` order, `actual` (n,). All metrics use the same
    observations: those with all five quantiles and the actual value present (`n` of them).
    Returns exactly the keys of `INTERVAL_METRIC_KEYS`; values are plain floats, None when no
    observation is complete, and `n` an int.
    """
    predicted, value = _quantile_rows(quantiles, actual, len(QUANTILES))
    complete = np.isfinite(predicted).all(axis=1) & np.isfinite(value)
    predicted = predicted[complete]
    value = value[complete]
    block: dict[str, float | int | None] = {}
    for level, (low_column, high_column) in INTERVAL_COLUMNS.items():
        lower, upper = predicted[:, low_column], predicted[:, high_column]
        block[f"coverage_{level}"] = coverage(lower, upper, value)
        block[f"width_{level}"] = mean_width(lower, upper)
        block[f"winkler_{level}"] = winkler_score(lower, upper, value, MISCOVERAGE[level])
    block["pinball"] = pinball_loss(predicted, value)
    block["n"] = int(value.size)
    return {key: block[key] for key in INTERVAL_METRIC_KEYS}


def sort_quantiles(quantiles: np.ndarray) -> np.ndarray:
    """Quantiles made non-decreasing along the last axis by sorting each row (rearrangement).

    Rearranging (sorting) estimated quantiles that cross never moves them further from the true
    quantile function, in any Lp norm, and leaves ones that do not cross untouched
    (Chernozhukov, Fernández-Val & Galichon 2010, Econometrica 78(3)). Sorting is that
    rearrangement; a running maximum would also be monotone but lacks the guarantee. Rows with
    a NaN are returned unchanged (they count as missing downstream).
    """
    predicted = np.asarray(quantiles, dtype=np.float64)
    rearranged = np.sort(predicted, axis=-1)
    incomplete = np.isnan(predicted).any(axis=-1, keepdims=True)
    return np.where(incomplete, predicted, rearranged)


# --- split conformal -----------------------------------------------------------------------------


def conformal_scores(actual_z: np.ndarray) -> np.ndarray:
    """Conformity scores |z| of normalized residuals z = (y - mu) / sigma, sorted ascending, NaN dropped."""
    z = np.asarray(actual_z, dtype=np.float64).ravel()
    return np.sort(np.abs(z[np.isfinite(z)]))


def conformal_quantile(sorted_scores: np.ndarray, miscoverage: float) -> float:
    """Split-conformal half-width for miscoverage `miscoverage`: the ceil((n + 1)(1 - alpha))-th smallest score.

    With n exchangeable calibration scores this half-width covers a fresh one with probability at
    least 1 - alpha (Vovk et al. 2005; Lei et al. 2018). `sorted_scores` must be ascending (as from
    `conformal_scores`).

    - alpha >= 1: 0.0 (an empty interval meets any miss rate).
    - ceil((n + 1)(1 - alpha)) > n (alpha < 1 / (n + 1), or alpha <= 0 as adaptive conformal
      inference may ask): the exact answer is an infinite interval, which no price can show. We
      return the largest score times `BEYOND_MAX_SCORE_FACTOR` (1.5): wider than anything seen in
      calibration, so a miss there is rare, yet a finite price band. The cost: ACI's guarantee
      assumes no miss can happen in that state; a miss beyond 1.5x the largest score pushes alpha
      down once more, and the online update still pulls it back up after the next covered days.
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
    """Conformal half-widths (in units of sigma) of the 80% and 95% intervals at the current levels.

    `alpha_80` and `alpha_95` are the miscoverage levels in use (MISCOVERAGE at first, then as moved
    by `aci_update`). The 95% half-width is raised to the 80% one when ACI has driven the levels
    across each other, so the quantiles never cross.
    """
    hw80 = conformal_quantile(scores, alpha_80)
    hw95 = max(conformal_quantile(scores, alpha_95), hw80)
    return hw80, hw95


def quantiles_from_halfwidths(
    center: np.ndarray | float, scale: np.ndarray | float, hw80: float, hw95: float
) -> np.ndarray:
    """(n, 5) quantiles in `QUANTILES` order: center -/+ scale * hw95, center -/+ scale * hw80, center.

    `center` (mu) and `scale` (sigma) are per-observation arrays or scalars in log-return space;
    the half-widths come from `half_widths` in units of sigma.
    """
    mu = np.atleast_1d(np.asarray(center, dtype=np.float64))
    sigma = np.atleast_1d(np.asarray(scale, dtype=np.float64))
    mu, sigma = np.broadcast_arrays(mu, sigma)
    if np.any(sigma < 0):
        raise InputDataError("Interval scale (sigma) must be non-negative.")
    offsets = np.array([-hw95, -hw80, 0.0, hw80, hw95], dtype=np.float64)
    return mu.reshape(-1)[:, None] + sigma.reshape(-1)[:, None] * offsets[None, :]


# --- adaptive conformal inference ----------------------------------------------------------------


def aci_update(alpha_t: float, target_alpha: float, miss: bool, gamma: float) -> float:
    """One step of adaptive conformal inference: alpha_{t+1} = alpha_t + gamma * (target - miss).

    Gibbs & Candès, "Adaptive Conformal Inference Under Distribution Shift", NeurIPS 2021. After a
    miss the level drops (the next interval widens), after a hit it rises slowly. Whatever the
    data, alpha_t stays in [-gamma, 1 + gamma] and over T steps the realised miss rate obeys
    |mean(miss) - target| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma * T): larger gamma
    adapts faster but makes the interval jumpier. (The bound assumes an infinite interval once
    alpha_t <= 0; see `conformal_quantile` for the finite stand-in used here.)
    """
    return float(alpha_t + gamma * (target_alpha - float(bool(miss))))


# --- helpers -------------------------------------------------------------------------------------


def _quantile_rows(quantiles: np.ndarray, actual: np.ndarray, n_levels: int) -> tuple[np.ndarray, np.ndarray]:
    """`quantiles` as float rows of `n_levels` (one row if 1-d) and `actual` as one value per row."""
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
