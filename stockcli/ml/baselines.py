"""The two volatility baselines every interval is compared with: a rolling band and GARCH(1,1)-t.

Both give the five `QUANTILES` of the next log return; the rolling band is centred on 0 (the naive persistence
forecast), GARCH on its fitted constant mean. `fit_garch` fits with the `arch` library; `_garch_variance_path`
filters the fitted model, parameters fixed, without arch: the recursion run as one linear filter
(`scipy.signal.lfilter`, arch's backcast and variance bounds reproduced) took 0.2-0.3 ms a ticker against
arch's 2-7 ms on 2 busy cores, with variances equal to the last bit (tests hold them to 1e-8). NaN returns
(sessions not traded) are dropped: each ticker's history is the sequence of its own sessions.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml.intervals import QUANTILES

ROLLING_WINDOW = 20

GARCH_SCALE = 100.0
"""GARCH is fitted on percent returns (100 x log return): arch's optimiser is tuned for that scale."""

MIN_GARCH_RETURNS = 100
"""Shortest history `fit_garch` accepts: below it a GARCH-t's four parameters are not identified."""

BACKCAST_RETURNS = 75
"""arch starts the variance recursion with an EWMA (lambda 0.94) of the first 75 squared residuals."""

MIN_FILTER_RETURNS = BACKCAST_RETURNS
"""Shortest history the GARCH filter gives quantiles over (NaN below, as the rolling band)."""

_EWMA_LAMBDA = 0.94
_GARCH_PARAMETERS = ("mu", "omega", "alpha", "beta", "nu")


def rolling_band_quantiles_at(
    log_returns: np.ndarray, rows: np.ndarray, window: int = ROLLING_WINDOW
) -> np.ndarray:
    """Quantiles (len(rows), 5) of the return after each of `rows`: std of the last `window` finite returns up
    to the row (ddof 1) x normal quantiles; NaN where the row's own return is missing or with fewer than
    `window` finite returns."""
    values = np.asarray(log_returns, dtype=np.float64).ravel()
    if window < 2:
        raise InputDataError(f"The rolling band needs a window of at least 2 returns, got {window}.")
    finite_index, place, enough = _rows_among_finite(values, rows, window)
    output = np.full((enough.size, len(QUANTILES)), np.nan)
    if enough.any():
        returns = values[finite_index]
        windows = np.lib.stride_tricks.sliding_window_view(returns, window)[place[enough] - (window - 1)]
        output[enough] = np.std(windows, axis=1, ddof=1)[:, None] * _normal_ppf()[None, :]
    return output


def _rows_among_finite(
    values: np.ndarray, rows: np.ndarray, needed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices of the finite `values`, each row's place among them, whether the row's own value is finite
    with `needed` finite values up to it)."""
    rows = np.asarray(rows, dtype=np.int64).ravel()
    finite_index = np.flatnonzero(np.isfinite(values))
    place = np.searchsorted(finite_index, rows)
    if finite_index.size == 0:
        return finite_index, place, np.zeros(rows.size, dtype=bool)
    own = (place < finite_index.size) & (finite_index[np.minimum(place, finite_index.size - 1)] == rows)
    return finite_index, place, own & (place >= needed - 1)


def fit_garch(
    log_returns: np.ndarray, *, asymmetric: bool = False, previous: Mapping[str, Any] | None = None
) -> dict[str, Any] | None:
    """Fit GARCH(1,1) (GJR with `asymmetric`) with Student-t errors and a constant mean on a history of log
    returns, starting from `previous` parameters when given (about half the iterations).

    Returns plain JSON parameters (mu and omega in percent scale) with `n_obs` and `converged` (False when the
    optimiser failed or warned), or None for too short or flat a history or invalid parameters: the caller
    falls back to another candidate.
    """
    returns = _finite(log_returns)
    # A standard deviation below 1e-10 (log-return units) is a flat series up to rounding.
    if returns.size < MIN_GARCH_RETURNS or float(np.std(returns)) < 1e-10:
        return None
    from arch import arch_model

    names = {"mu": "mu", "omega": "omega", "alpha": "alpha[1]"}
    names |= {"gamma": "gamma[1]"} if asymmetric else {}
    names |= {"beta": "beta[1]", "nu": "nu"}
    model = arch_model(
        GARCH_SCALE * returns, mean="Constant", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t"
    )
    start = None
    if previous is not None and all(key in previous for key in names):
        start = np.array([float(previous[key]) for key in names])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = model.fit(disp="off", show_warning=False, starting_values=start)
        except (ValueError, np.linalg.LinAlgError, ZeroDivisionError, FloatingPointError):
            return None
    values = {key: float(result.params[column]) for key, column in names.items()}
    if not all(np.isfinite(value) for value in values.values()):
        return None
    if asymmetric and -1e-8 < values["alpha"] + values["gamma"] < 0:
        # The optimiser stops on the constraint alpha + gamma >= 0 up to rounding (seen on GOOG).
        values["gamma"] = -values["alpha"]
    if not (values["omega"] > 0 and values["alpha"] >= 0 and values["beta"] >= 0 and values["nu"] > 2):
        return None
    if asymmetric and values["alpha"] + values["gamma"] < 0:
        return None
    converged = int(result.convergence_flag) == 0 and not any(
        warning.category.__name__ == "ConvergenceWarning" for warning in caught
    )
    return {**values, "scale": GARCH_SCALE, "n_obs": int(returns.size), "converged": bool(converged)}


def _garch_variance_path(
    residuals: np.ndarray, omega: float, alpha: float, beta: float, gamma: float = 0.0
) -> np.ndarray:
    """Conditional variances (n + 1,) of GJR-GARCH(1,1) on percent residuals, the last one the forecast.

    e[-1]**2 and sigma2[-1] are arch's backcast (the leverage term starts from half of it) and in-sample
    values obey arch's variance bounds. Linear in sigma2, so one IIR filter; only where a bound binds (never
    with real prices) does it fall back to arch's exact loop.
    """
    from scipy.signal import lfilter

    squared = residuals**2
    backcast = _backcast(squared)
    drive = np.empty(squared.size + 1)
    drive[0] = omega + alpha * backcast + gamma * 0.5 * backcast
    drive[1:] = omega + (alpha + gamma * (residuals < 0)) * squared
    variance, _ = lfilter([1.0], [1.0, -beta], drive, zi=[beta * backcast])
    lower, upper = _variance_bounds(residuals, squared, backcast)
    in_sample = variance[:-1]
    if np.any(in_sample < lower) or np.any(in_sample > upper):
        return _garch_variance_loop(drive, beta, backcast, lower, upper)
    return np.asarray(variance, dtype=np.float64)


def _backcast(squared: np.ndarray) -> float:
    """arch's starting value: EWMA (weights 0.94**k, normalised) of the first 75 squared residuals."""
    tau = min(BACKCAST_RETURNS, squared.size)
    weights = _EWMA_LAMBDA ** np.arange(tau)
    weights = weights / weights.sum()
    return float(np.sum(squared[:tau] * weights))


def _variance_bounds(
    residuals: np.ndarray, squared: np.ndarray, backcast: float
) -> tuple[np.ndarray, np.ndarray]:
    """arch's `VolatilityProcess.variance_bounds`: an EWMA variance / 1e6 and x 1e6, clipped globally."""
    from scipy.signal import lfilter

    drive = np.empty(squared.size)
    drive[0] = (1.0 - _EWMA_LAMBDA) * backcast
    drive[1:] = (1.0 - _EWMA_LAMBDA) * squared[:-1]
    ewma, _ = lfilter([1.0], [1.0, -_EWMA_LAMBDA], drive, zi=[_EWMA_LAMBDA * backcast])
    largest = 1.0 + float(np.max(squared))
    lower = np.maximum(ewma / 1e6, float(np.var(residuals)) / 1e8)
    upper = np.clip(ewma * 1e6, largest, 1e7 * largest)
    return lower, upper


def _garch_variance_loop(
    drive: np.ndarray, beta: float, backcast: float, lower: np.ndarray, upper: np.ndarray
) -> np.ndarray:
    n = drive.size - 1
    variance = np.empty(n + 1)
    previous = backcast
    for t in range(n + 1):
        value = float(drive[t]) + beta * previous
        if t < n:
            if value < lower[t]:
                value = float(lower[t])
            elif value > upper[t]:
                value = float(upper[t]) + float(np.log(value / upper[t]))
        variance[t] = value
        previous = value
    return variance


def _parameters(params: dict[str, Any]) -> tuple[float, float, float, float, float, float]:
    missing = [name for name in _GARCH_PARAMETERS if name not in params]
    if missing:
        raise InputDataError(f"GARCH parameters lack {', '.join(missing)}; refit with `fit_garch`.")
    mu, omega, alpha, beta, nu = (float(params[name]) for name in _GARCH_PARAMETERS)
    scale = float(params.get("scale", GARCH_SCALE))
    if not (omega > 0 and alpha >= 0 and beta >= 0 and nu > 2 and scale > 0):
        raise InputDataError(f"Invalid GARCH parameters: {dict(params)}.")
    return mu, omega, alpha, beta, nu, scale


@functools.cache
def _normal_ppf() -> np.ndarray:
    # Cached: scipy's ppf costs ~0.1 ms a call, more than a ticker's rolling band.
    from scipy.stats import norm

    values = np.asarray(norm.ppf(np.asarray(QUANTILES, dtype=np.float64)), dtype=np.float64)
    values.setflags(write=False)
    return values


def _finite(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]
