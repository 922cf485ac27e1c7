"""References the tests hold production code to: per-date versions of what production computes for
many dates at once, and the library computations production reproduces faster. Not used by the package."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml import baselines
from stockcli.ml.forecasters.garch import standardized_t_ppf
from stockcli.ml.intervals import QUANTILES
from stockcli.ml.stats import Alternative, PairedTestResult, binomial_coverage_test, paired_loss_test


def diebold_mariano(
    loss_a: np.ndarray,
    loss_b: np.ndarray,
    *,
    alternative: Alternative = "less",
    lag: int | None = None,
    horizon: int = 1,
) -> PairedTestResult:
    """The Diebold–Mariano test on one pair of loss series: `paired_loss_test` of one unscaled ticker."""
    return paired_loss_test(
        np.asarray(loss_a, dtype=np.float64).ravel(),
        np.asarray(loss_b, dtype=np.float64).ravel(),
        scale=np.ones(1),
        alternative=alternative,
        lag=lag,
        horizon=horizon,
    )


def binomial_bounds(n: int, nominal: float, alpha: float) -> tuple[float, float]:
    """The band of observed coverages (hits / n) that the exact binomial test accepts at level `alpha`.

    An observed coverage c lies within `(low, high)` exactly when
    `binomial_coverage_test(round(n * (1 - c)), n, nominal) >= alpha`. The accepted miss counts form
    one interval around the mode (the binomial is unimodal), found by bisection on each side.
    `n == 0` gives (0.0, 1.0).
    """
    if not 0.0 < alpha < 1.0:
        raise InputDataError(f"alpha must lie strictly between 0 and 1, got {alpha}.")
    if n == 0:
        return 0.0, 1.0

    def accepted(misses: int) -> bool:
        return binomial_coverage_test(misses, n, nominal) >= alpha

    # The most likely miss count: its p-value is 1, so the accepted set is never empty.
    mode = min(n, max(0, math.floor((n + 1) * (1.0 - nominal))))
    low_index, high_index = 0, mode  # the smallest accepted miss count in [0, mode]
    while low_index < high_index:
        middle = (low_index + high_index) // 2
        if accepted(middle):
            high_index = middle
        else:
            low_index = middle + 1
    fewest_misses = low_index
    low_index, high_index = mode, n  # the largest accepted miss count in [mode, n]
    while low_index < high_index:
        middle = (low_index + high_index + 1) // 2
        if accepted(middle):
            low_index = middle
        else:
            high_index = middle - 1
    return 1.0 - low_index / n, 1.0 - fewest_misses / n


def rolling_band_quantiles(log_returns: np.ndarray, window: int = baselines.ROLLING_WINDOW) -> np.ndarray:
    """Quantiles (5,) of the next log return: 0 + std(last `window` finite returns, ddof 1) x normal
    quantiles; NaN with fewer than `window` finite returns."""
    from scipy.stats import norm

    returns = _finite(log_returns)
    if returns.size < window:
        return np.full(len(QUANTILES), np.nan)
    return float(np.std(returns[-window:], ddof=1)) * norm.ppf(np.asarray(QUANTILES))


def garch_next_quantiles(params: dict[str, Any], log_returns: np.ndarray) -> np.ndarray:
    """Quantiles (5,) of the next log return, the fitted GARCH filtered over all of `log_returns`."""
    mu, omega, alpha, beta, nu, scale = baselines._parameters(params)
    returns = _finite(log_returns)
    if returns.size < baselines.MIN_FILTER_RETURNS:
        return np.full(len(QUANTILES), np.nan)
    variance = baselines._garch_variance_path(scale * returns - mu, omega, alpha, beta)
    return (mu + np.sqrt(variance[-1]) * standardized_t_ppf(nu, QUANTILES)) / scale


def arch_next_variance(params: dict[str, Any], log_returns: np.ndarray) -> float:
    """Next-period variance (percent scale) from arch's own fix() + forecast(horizon=1)."""
    from arch import arch_model

    mu, omega, alpha, beta, nu, scale = baselines._parameters(params)
    model = arch_model(scale * _finite(log_returns), mean="Constant", vol="GARCH", p=1, q=1, dist="t")
    forecast = model.fix([mu, omega, alpha, beta, nu]).forecast(horizon=1, reindex=False)
    return float(forecast.variance.to_numpy()[-1, 0])


def _finite(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    return array[np.isfinite(array)]
