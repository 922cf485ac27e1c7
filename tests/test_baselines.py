"""The volatility baselines (stockcli.ml.baselines): rolling band and GARCH(1,1)-t, on real sample bars."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.stats import norm

import stockcli
from stockcli.errors import InputDataError
from stockcli.ml import baselines
from stockcli.ml.baselines import (
    MIN_FILTER_RETURNS,
    MIN_GARCH_RETURNS,
    fit_garch,
    rolling_band_quantiles_at,
)
from stockcli.ml.intervals import QUANTILES
from tests.oracles import arch_next_variance, garch_next_quantiles, rolling_band_quantiles

SAMPLE_DATA = Path(stockcli.__file__).parent / "sources" / "data"


def _sample_log_returns(ticker: str) -> np.ndarray:
    close = np.loadtxt(SAMPLE_DATA / f"{ticker}.csv", delimiter=",", skiprows=1, usecols=4)
    return np.diff(np.log(close))


@pytest.fixture(scope="module")
def goog_returns() -> np.ndarray:
    return _sample_log_returns("GOOG")


@pytest.fixture(scope="module")
def goog_params(goog_returns: np.ndarray) -> dict[str, Any]:
    params = fit_garch(goog_returns[:1200])
    assert params is not None
    return params


# --- rolling band --------------------------------------------------------------------------------


def test_rolling_band_on_constant_returns_is_a_point() -> None:
    assert rolling_band_quantiles(np.full(30, 0.01)) == pytest.approx(np.zeros(5))


def test_rolling_band_uses_the_last_window_only() -> None:
    rng = np.random.default_rng(0)
    old = rng.normal(0, 0.5, 100)  # a wild past that must not count
    recent = np.tile([0.01, -0.01], 10)
    expected = np.std(recent, ddof=1) * norm.ppf(QUANTILES)
    assert rolling_band_quantiles(np.concatenate([old, recent]), window=20) == pytest.approx(expected)
    assert np.isnan(rolling_band_quantiles(recent[:19], window=20)).all()
    # A missing session is skipped, not counted.
    gappy = np.concatenate([old, recent[:5], [np.nan], recent[5:]])
    assert rolling_band_quantiles(gappy, window=20) == pytest.approx(expected)


def test_rolling_band_path_matches_single_steps(goog_returns: np.ndarray) -> None:
    returns = goog_returns[:200].copy()
    returns[50] = np.nan
    path = rolling_band_quantiles_at(returns, np.arange(returns.size), window=20)
    assert path.shape == (200, 5)
    assert np.isnan(path[:19]).all() and np.isnan(path[50]).all()
    for t in (19, 49, 51, 120, 199):
        assert path[t] == pytest.approx(rolling_band_quantiles(returns[: t + 1], window=20))


# --- GARCH fit -----------------------------------------------------------------------------------


def _simulate_garch_t(
    n: int, *, mu: float, omega: float, alpha: float, beta: float, nu: float, seed: int
) -> np.ndarray:
    """Percent returns of a GARCH(1,1) with unit-variance Student-t shocks, written independently of arch."""
    rng = np.random.default_rng(seed)
    shocks = rng.standard_t(nu, size=n + 500) * np.sqrt((nu - 2) / nu)
    variance = omega / (1 - alpha - beta)
    residual_sq = variance
    out = np.empty(n + 500)
    for t in range(n + 500):
        variance = omega + alpha * residual_sq + beta * variance
        residual = np.sqrt(variance) * shocks[t]
        residual_sq = residual**2
        out[t] = mu + residual
    return out[500:]


def test_fit_garch_recovers_simulated_parameters() -> None:
    truth = {"mu": 0.05, "omega": 0.05, "alpha": 0.10, "beta": 0.85, "nu": 6.0}
    percent = _simulate_garch_t(3000, seed=1, **truth)
    params = fit_garch(percent / 100)
    assert params is not None
    assert params["converged"] is True
    assert params["scale"] == 100.0 and params["n_obs"] == 3000
    assert params["alpha"] == pytest.approx(truth["alpha"], abs=0.04)
    assert params["beta"] == pytest.approx(truth["beta"], abs=0.07)
    assert params["alpha"] + params["beta"] == pytest.approx(0.95, abs=0.05)
    assert params["nu"] == pytest.approx(truth["nu"], abs=2.5)
    assert params["mu"] == pytest.approx(truth["mu"], abs=0.06)
    assert set(params) == {"mu", "omega", "alpha", "beta", "nu", "scale", "n_obs", "converged"}


def test_fit_garch_refuses_short_or_flat_history_quietly() -> None:
    rng = np.random.default_rng(2)
    assert fit_garch(rng.normal(0, 0.01, MIN_GARCH_RETURNS - 1)) is None
    assert fit_garch(np.full(500, 0.001)) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Heavy-tailed, short and badly scaled: the kind of history that makes arch's optimiser complain.
        params = fit_garch(rng.standard_cauchy(MIN_GARCH_RETURNS) * 1e-4)
    assert [str(warning.message) for warning in caught] == []
    assert params is None or isinstance(params["converged"], bool)


# --- GARCH filtering -----------------------------------------------------------------------------


def _arch_quantiles(params: dict[str, Any], returns: np.ndarray) -> np.ndarray:
    """Quantiles from arch alone: its fixed-parameter forecast and its own standardized-t ppf."""
    from arch.univariate import StudentsT

    variance = arch_next_variance(params, returns)
    t_quantiles = StudentsT().ppf(np.asarray(QUANTILES), np.array([float(params["nu"])]))
    return (float(params["mu"]) + np.sqrt(variance) * t_quantiles) / 100


@pytest.mark.parametrize("ticker", ["GOOG", "GSPC"])
def test_numpy_recursion_equals_arch_forecast(ticker: str) -> None:
    returns = _sample_log_returns(ticker)
    params = fit_garch(returns[:1200])
    assert params is not None
    for end in (MIN_FILTER_RETURNS + 5, 400, 1300, 2000, returns.size):
        history = returns[max(0, end - 600) : end]
        ours = garch_next_quantiles(params, history)
        reference = _arch_quantiles(params, history)
        assert np.max(np.abs(ours - reference) / np.abs(reference)) < 1e-8, end


def _bound_cases() -> dict[str, tuple[np.ndarray, dict[str, float]]]:
    rng = np.random.default_rng(3)
    # A near-zero omega, fast decay and a long flat run: the variance sinks below arch's lower bound.
    sinking = np.concatenate([rng.normal(0, 0.02, 100), np.zeros(150)])
    # A huge omega on tiny returns: the variance rises past arch's upper bound (EWMA x 1e6).
    soaring = rng.normal(0, 1e-4, 200)
    return {
        "lower": (sinking, {"mu": 0.0, "omega": 1e-12, "alpha": 0.05, "beta": 0.5, "nu": 5.0}),
        "upper": (soaring, {"mu": 0.0, "omega": 1e4, "alpha": 0.05, "beta": 0.9, "nu": 5.0}),
    }


@pytest.mark.parametrize("case", ["lower", "upper"])
def test_recursion_fallback_when_arch_bounds_bind(case: str) -> None:
    from scipy.signal import lfilter

    returns, params = _bound_cases()[case]
    residuals = 100 * returns
    squared = residuals**2
    backcast = baselines._backcast(squared)
    lower, upper = baselines._variance_bounds(residuals, squared, backcast)
    omega, alpha, beta = params["omega"], params["alpha"], params["beta"]
    drive = np.concatenate([[omega + alpha * backcast], omega + alpha * squared])
    unbounded, _ = lfilter([1.0], [1.0, -beta], drive, zi=[beta * backcast])
    # The bounds do bind here, so the filter must switch to arch's bounded loop and still agree.
    assert np.any(unbounded[:-1] < lower) if case == "lower" else np.any(unbounded[:-1] > upper)
    reference = _arch_quantiles(params, returns)
    assert garch_next_quantiles(params, returns) == pytest.approx(reference, rel=1e-8)


def test_garch_quantiles_are_t_scaled_and_need_history(
    goog_returns: np.ndarray, goog_params: dict[str, Any]
) -> None:
    quantiles = garch_next_quantiles(goog_params, goog_returns[-600:])
    center = float(goog_params["mu"]) / 100
    assert quantiles[2] == pytest.approx(center)
    assert quantiles[4] - center == pytest.approx(center - quantiles[0])  # symmetric t
    assert np.isnan(garch_next_quantiles(goog_params, goog_returns[: MIN_FILTER_RETURNS - 1])).all()
    with pytest.raises(InputDataError):
        garch_next_quantiles({"mu": 0.0, "omega": 0.1}, goog_returns)
    with pytest.raises(InputDataError):
        garch_next_quantiles({**goog_params, "nu": 1.5}, goog_returns)


# --- only the rows asked for: the paths' own numbers ---------------------------------------------------


def _rows_to_check(n: int) -> list[np.ndarray]:
    return [
        np.array([n - 1]),  # a daily forecast: the last row only
        np.array([n - 2, n - 1]),
        np.array([0, 5, 18, 19, 20, 49, 50, 51, 73, 74, 75, 300, 301, n - 1, 120, 120]),  # any order, repeats
        np.arange(n),
        np.zeros(0, dtype=np.int64),
    ]


def test_rolling_band_at_rows_equals_the_path(goog_returns: np.ndarray) -> None:
    returns = goog_returns[:700].copy()
    returns[[50, 300]] = np.nan  # sessions without a return: NaN rows, skipped by the windows after
    path = rolling_band_quantiles_at(returns, np.arange(returns.size), window=20)
    for rows in _rows_to_check(len(returns)):
        at = rolling_band_quantiles_at(returns, rows, window=20)
        assert at.shape == (len(rows), 5)
        np.testing.assert_array_equal(at, path[rows])  # bit for bit, NaN where the path has NaN
    assert np.isnan(rolling_band_quantiles_at(returns[:10], np.array([9]), window=20)).all()
