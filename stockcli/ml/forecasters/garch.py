"""GARCH(1,1)-t and GJR-GARCH(1,1)-t behind the `Forecaster` interface.

Both are fitted by `arch` (Student-t errors, constant mean, on 100 x log returns) and then, with
their parameters FIXED, filtered over a ticker's returns without calling arch: the recursion is
linear in the variance, so one `scipy.signal.lfilter` pass gives the one-step variance after every
session (`stockcli.ml.baselines`' filter). GJR's gamma * e**2 on negative residuals only changes the
filter's input, so the same single pass serves it.

arch starts the recursion from a backcast of the first 75 residuals and clips in-sample variances
to loose bounds built from the whole sample it is given. A forecast as of session k must be what
arch gives on the returns up to k, so the bounds are those of that prefix: rows where the
one-pass values provably stay inside every prefix bound keep them (all rows on real prices); any
other row is recomputed on its own prefix, exactly as arch would (`_sigma2_at`). Either way, row k
depends on returns up to k only.

Over h sessions the log return is the sum of h one-session returns: mean h * mu and, the residuals
being uncorrelated, variance the sum of the expected one-step variances sigma2[t+1] + ... +
sigma2[t+h], each after the first from the analytic recursion sigma2[t+k] = omega + p *
sigma2[t+k-1] with persistence p = alpha + beta (GJR: alpha + gamma / 2 + beta, since a symmetric t
residual is negative half the time), exactly arch's `forecast(method="analytic")` summed over its
columns. The sum of h t-distributed residuals is not t; the quantiles are those of the fitted
standardized t scaled to the summed variance (a moment match). Aggregation thins the tails while the
unknown future variance fattens them; on the sample's validation year (2011-03..2012-03) the 80%
and 95% bands of 5 and 20 sessions covered 78-80% and 93-95% (see the README).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml.baselines import (
    GARCH_SCALE,
    MIN_FILTER_RETURNS,
    _backcast,
    _garch_variance_path,
    _parameters,
    _rows_among_finite,
    _variance_bounds,
    fit_garch,
)
from stockcli.ml.forecasters import Params, TickerBars, check_horizon

VariancePath = Callable[[np.ndarray], np.ndarray]
"""Percent residuals (n,) -> conditional variances (n + 1,), the last one the next-session forecast."""

_GJR_PARAMETERS = ("mu", "omega", "alpha", "gamma", "beta", "nu")


class Garch:
    """GARCH(1,1) with Student-t errors: the yardstick every other candidate is compared with.

    Params (plain JSON, from `stockcli.ml.baselines.fit_garch`): `mu`, `omega` (percent scale),
    `alpha`, `beta`, `nu`, `scale` (100.0), `n_obs`, `converged`.
    """

    name = "garch"
    needs_fit = True
    asymmetric = False

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """arch's fit on all finite returns of `bars`; None when too short, flat or failed."""
        return fit_garch(bars.returns, asymmetric=self.asymmetric, previous=previous)

    def quantiles_at(
        self, params: Params, bars: TickerBars, rows: np.ndarray, levels: Sequence[float], horizon: int = 1
    ) -> np.ndarray:
        """(h * mu + sqrt(summed sigma2) * standardized-t ppf(level, nu)) / scale at `rows`, h = `horizon`.

        Rows whose own return is missing, or with fewer than `MIN_FILTER_RETURNS` finite returns up to
        them, are NaN (the backcast needs 75 returns, which would otherwise come from after the row).
        """
        if self.asymmetric:
            mu, omega, alpha, gamma, beta, nu, scale = _gjr_parameters(params)
        else:
            mu, omega, alpha, beta, nu, scale = _parameters(dict(params))
            gamma = 0.0
        horizon = check_horizon(horizon)
        values = np.asarray(bars.returns, dtype=np.float64).ravel()
        finite_index, place, enough = _rows_among_finite(values, rows, MIN_FILTER_RETURNS)
        output = np.full((enough.size, len(levels)), np.nan)
        if finite_index.size < MIN_FILTER_RETURNS or not enough.any():
            return output
        path = functools.partial(_garch_variance_path, omega=omega, alpha=alpha, beta=beta, gamma=gamma)
        one_step = _sigma2_at(path, scale * values[finite_index] - mu, place[enough])
        # sigma2[t+1] + ... + sigma2[t+h] by arch's analytic recursion (module docstring).
        persistence = alpha + 0.5 * gamma + beta
        total, step = one_step, one_step
        for _ in range(horizon - 1):
            step = omega + persistence * step
            total = total + step
        ppf = standardized_t_ppf(nu, levels)
        output[enough] = (horizon * mu + np.sqrt(total)[:, None] * ppf[None, :]) / scale
        return output


class Gjr(Garch):
    """GJR-GARCH(1,1) with Student-t errors: GARCH plus a leverage term for negative returns.

    sigma2[t] = omega + (alpha + gamma * 1[e[t-1] < 0]) * e[t-1]**2 + beta * sigma2[t-1].
    Params: those of `Garch` plus `gamma`.
    """

    name = "gjr"
    asymmetric = True


def _sigma2_at(path: VariancePath, residuals: np.ndarray, places: np.ndarray) -> np.ndarray:
    """Next-session variance after residual `places[i]`, as arch gives it on residuals[: places[i] + 1].

    One pass over the whole series, then a check per row that no bound arch would build from that
    row's prefix could have bound: every in-sample value strictly inside the whole-sample bounds
    (so the pass was the plain filter, and each value is above its EWMA / 1e6), the prefix's values
    at least twice its sample variance / 1e8 and at most 1 + its largest squared residual (under
    any upper bound arch builds from it). A row that fails is filtered again on its own prefix
    (arch's exact loop when a bound binds there): rare, and O(n) each.
    """
    variance = path(residuals)
    in_sample = variance[:-1]
    squared = residuals**2
    lower, upper = _variance_bounds(residuals, squared, _backcast(squared))
    # Inside the whole-sample bounds means the pass was the filter, not arch's bounded loop.
    clear = np.full(residuals.size, bool(np.all((in_sample > lower) & (in_sample <= upper))))
    count = np.arange(1, residuals.size + 1)
    prefix_variance = np.cumsum(squared) / count - (np.cumsum(residuals) / count) ** 2
    clear &= np.minimum.accumulate(in_sample) >= 2.0 * np.maximum(prefix_variance, 0.0) / 1e8
    clear &= np.maximum.accumulate(in_sample) <= 1.0 + np.maximum.accumulate(squared)
    sigma2 = variance[places + 1]
    for i in np.flatnonzero(~clear[places]):
        sigma2[i] = path(residuals[: places[i] + 1])[-1]
    return np.asarray(sigma2, dtype=np.float64)


def _gjr_parameters(params: Mapping[str, Any]) -> tuple[float, float, float, float, float, float, float]:
    """(mu, omega, alpha, gamma, beta, nu, scale), checked as arch constrains them."""
    missing = [name for name in _GJR_PARAMETERS if name not in params]
    if missing:
        raise InputDataError(f"GARCH parameters lack {', '.join(missing)}; refit the forecaster.")
    mu, omega, alpha, gamma, beta, nu = (float(params[name]) for name in _GJR_PARAMETERS)
    scale = float(params.get("scale", GARCH_SCALE))
    valid = omega > 0 and alpha >= 0 and alpha + gamma >= 0 and beta >= 0 and nu > 2 and scale > 0
    if not (valid and np.isfinite([mu, omega, alpha, gamma, beta, nu, scale]).all()):
        raise InputDataError(f"Invalid GARCH parameters: {dict(params)}.")
    return mu, omega, alpha, gamma, beta, nu, scale


def standardized_t_ppf(nu: float, levels: Sequence[float]) -> np.ndarray:
    """Quantiles at `levels` of a Student t with `nu` degrees of freedom rescaled to unit variance."""
    return np.asarray(_standardized_t_ppf_cached(float(nu), tuple(float(x) for x in levels)))


@functools.lru_cache(maxsize=4096)
def _standardized_t_ppf_cached(nu: float, levels: tuple[float, ...]) -> tuple[float, ...]:
    # scipy's t.ppf costs ~0.3 ms, more than a ticker's whole recursion; nu is fixed per fit.
    from scipy.stats import t as student_t

    values = student_t.ppf(np.asarray(levels, dtype=np.float64), nu) * np.sqrt((nu - 2.0) / nu)
    return tuple(float(value) for value in values)
