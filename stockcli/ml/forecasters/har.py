"""Log-HAR on a range-based daily variance, with quantiles by filtered historical simulation.

A daily bar holds more about the day's volatility than its close: the overnight gap and the
intraday range estimate the session's variance 5-8x more efficiently than the squared
close-to-close return (Parkinson 1980, Garman & Klass 1980). The HAR model (Corsi 2009) forecasts
the log of that variance from its 1-, 5- and 22-session averages, which captures volatility's long
memory with a linear regression; two leverage terms let falls raise it more than rises. The
forecast is a scale only: the quantiles come from the empirical distribution of the fit period's
returns divided by their forecast scale (filtered historical simulation), so fat tails and skew
are the data's, not an assumed t's.

Everything is causal: the proxy of session t uses bars t - 1 and t; the design row t uses sessions
up to t.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml.forecasters import TickerBars

ESTIMATORS = ("garman_klass", "parkinson")
"""Intraday range estimators `HarRange` accepts; the first is the default."""

DEFAULT_ESTIMATOR = ESTIMATORS[0]
"""Garman–Klass uses the open and close as well as the range: the more efficient of the two."""

MIN_HAR_ROWS = 250
"""Fewest usable regression rows (about a year) `HarRange.fit` accepts.

Six coefficients need far fewer; the tails do not: with 250 standardized returns the 1% and 99%
quantiles already rest on two or three points each.
"""

VARIANCE_FLOOR = 1e-10
"""Smallest daily variance proxy (a 0.001% move squared), so that the log of a flat session is finite."""

HAR_WINDOWS = (1, 5, 22)
"""Sessions averaged in the daily, weekly and monthly terms."""

LEVERAGE_WINDOW = 5
"""Sessions averaged in the weekly leverage term (the daily one is min(r_t, 0))."""

TERMS = ("const", "log_rv_1", "log_rv_5", "log_rv_22", "neg_return_1", "neg_return_5")
"""Regression terms, in the order of `coefficients` in the params."""

Z_LEVELS: tuple[float, ...] = (
    0.001,
    0.005,
    *(round(0.01 * k, 2) for k in range(1, 100)),
    0.995,
    0.999,
)
"""Levels at which the standardized returns' quantiles are stored; others are interpolated.

Levels outside [0.001, 0.999] get the end values: the fit period holds too few points to say more.
"""

_LN2 = float(np.log(2.0))


class HarRange:
    """Log-HAR(1, 5, 22) with leverage on a range-based daily variance; quantiles by FHS.

    Params (plain JSON): `estimator`, `terms` (= `TERMS`), `coefficients` (one per term),
    `z_levels` (= `Z_LEVELS`), `z_quantiles` (of the fit period's standardized returns), `n_obs`
    (regression rows used).
    """

    name = "har_range"
    needs_fit = True

    def __init__(self, estimator: str = DEFAULT_ESTIMATOR) -> None:
        if estimator not in ESTIMATORS:
            raise InputDataError(
                f"Unknown range estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}."
            )
        self.estimator = estimator

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """OLS of log RV[t + 1] on the design row t, then the quantiles of the standardized returns.

        None when fewer than `MIN_HAR_ROWS` rows have a full design and a next session, when the
        closes do not move, or when the regression gives non-finite coefficients.
        """
        returns = bars.returns
        design = har_design(bars, self.estimator)
        log_target = np.append(design[1:, 1], np.nan)
        next_return = np.append(returns[1:], np.nan)
        usable = np.isfinite(design).all(axis=1) & np.isfinite(log_target) & np.isfinite(next_return)
        finite_returns = returns[np.isfinite(returns)]
        if usable.sum() < MIN_HAR_ROWS or float(np.std(finite_returns)) < 1e-10:
            return None
        try:
            coefficients, *_ = np.linalg.lstsq(design[usable], log_target[usable], rcond=None)
        except np.linalg.LinAlgError:
            return None
        if not np.isfinite(coefficients).all():
            return None
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            standardized = next_return[usable] / np.exp(0.5 * design[usable] @ coefficients)
        z_quantiles = np.quantile(standardized, Z_LEVELS)
        if not np.isfinite(z_quantiles).all():
            return None
        return {
            "estimator": self.estimator,
            "terms": list(TERMS),
            "coefficients": [float(value) for value in coefficients],
            "z_levels": list(Z_LEVELS),
            "z_quantiles": [float(value) for value in z_quantiles],
            "n_obs": int(usable.sum()),
        }

    def quantiles_at(
        self, params: Mapping[str, Any], bars: TickerBars, rows: np.ndarray, levels: Sequence[float]
    ) -> np.ndarray:
        """sigma_row * (standardized-return quantile at each level); NaN rows before a full design.

        sigma_row = exp(0.5 * design_row . coefficients), the forecast scale of the next return.
        """
        coefficients, z_levels, z_quantiles = _har_parameters(params)
        estimator = str(params.get("estimator", self.estimator))
        if estimator not in ESTIMATORS:
            raise InputDataError(f"Invalid HAR parameters: unknown estimator {estimator!r}.")
        rows = np.asarray(rows, dtype=np.int64).ravel()
        # Row k needs bars up to k only: cut there, so nothing later is even read.
        design = har_design(bars.head(int(rows.max()) + 1), estimator) if rows.size else np.empty((0, 6))
        sigma = np.exp(0.5 * design[rows] @ coefficients)
        standardized = np.interp(np.asarray(levels, dtype=np.float64), z_levels, z_quantiles)
        return np.asarray(sigma[:, None] * standardized[None, :], dtype=np.float64)


def daily_variance(bars: TickerBars, estimator: str = DEFAULT_ESTIMATOR) -> np.ndarray:
    """Variance proxy (n,) of each session's log return: overnight gap squared + intraday estimator.

    Garman–Klass: 0.5 (ln H/L)^2 - (2 ln 2 - 1)(ln C/O)^2; Parkinson: (ln H/L)^2 / (4 ln 2). Where
    the open, high or low is missing, non-positive or inconsistent (H < L, or the open or close
    outside [L, H]) the squared close-to-close return stands in. Floored at `VARIANCE_FLOOR`; NaN
    on the first session and wherever the close-to-close return is missing.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        log_open, log_high, log_low, log_close = (
            np.log(np.where(values > 0, values, np.nan))
            for values in (bars.open, bars.high, bars.low, bars.close)
        )
        previous_close = np.append(np.nan, log_close[:-1])
        close_to_close = (log_close - previous_close) ** 2
        log_range = log_high - log_low
        if estimator == "parkinson":
            intraday = log_range**2 / (4.0 * _LN2)
        else:
            intraday = 0.5 * log_range**2 - (2.0 * _LN2 - 1.0) * (log_close - log_open) ** 2
        proxy = (log_open - previous_close) ** 2 + intraday
        consistent = (
            np.isfinite(proxy)
            & (log_high >= log_low)
            & (log_close >= log_low)
            & (log_close <= log_high)
            & (log_open >= log_low)
            & (log_open <= log_high)
        )
    proxy = np.where(consistent, proxy, close_to_close)
    return np.where(np.isfinite(proxy), np.maximum(proxy, VARIANCE_FLOOR), np.nan)


def har_design(bars: TickerBars, estimator: str = DEFAULT_ESTIMATOR) -> np.ndarray:
    """Design matrix (n, 6) in `TERMS` order: row t from sessions up to t; NaN where a window is short.

    [1, log RV_t, log mean RV_(t-4..t), log mean RV_(t-21..t), min(r_t, 0), mean min(r_(t-4..t), 0)].
    """
    variance = daily_variance(bars, estimator)
    negative_return = np.minimum(bars.returns, 0.0)
    columns = [np.ones(variance.size)]
    columns += [np.log(_trailing_mean(variance, window)) for window in HAR_WINDOWS]
    columns += [negative_return, _trailing_mean(negative_return, LEVERAGE_WINDOW)]
    return np.column_stack(columns)


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of values[t - window + 1 .. t] at each t (NaN before a full window or over a NaN).

    Summed window by window rather than by a running cumulative sum, so row t's value depends on
    nothing outside its window (bit for bit).
    """
    output = np.full(values.size, np.nan)
    if values.size >= window:
        output[window - 1 :] = np.lib.stride_tricks.sliding_window_view(values, window).mean(axis=1)
    return output


def _har_parameters(params: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coefficients, z_levels, z_quantiles) as arrays, checked."""
    try:
        coefficients = np.asarray(params["coefficients"], dtype=np.float64)
        z_levels = np.asarray(params["z_levels"], dtype=np.float64)
        z_quantiles = np.asarray(params["z_quantiles"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise InputDataError(f"HAR parameters are incomplete ({error}); refit the forecaster.") from error
    valid = (
        coefficients.shape == (len(TERMS),)
        and z_levels.ndim == 1
        and z_levels.shape == z_quantiles.shape
        and z_levels.size >= 2
        and np.isfinite(coefficients).all()
        and np.isfinite(z_quantiles).all()
        and bool(np.all(np.diff(z_levels) > 0))
        and bool(np.all(np.diff(z_quantiles) >= 0))
    )
    if not valid:
        raise InputDataError("Invalid HAR parameters; refit the forecaster.")
    return coefficients, z_levels, z_quantiles
