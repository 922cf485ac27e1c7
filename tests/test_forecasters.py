"""The range-based and GARCH-family forecasters (stockcli.ml.forecasters), on the real sample bars.

Each is held to an independent reference: GARCH and GJR to `arch` itself (fit and one-step
forecast), HAR to a (weighted) least-squares fit built here from pandas rolling means, and its
variance proxy to a hand computation. Causality is tested by perturbing every bar after a date, the
market's included.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockcli.errors import InputDataError
from stockcli.ml.forecasters import Forecaster, TickerBars, ticker_bars
from stockcli.ml.forecasters.blend import Blend
from stockcli.ml.forecasters.garch import Garch, Gjr, standardized_t_ppf
from stockcli.ml.forecasters.har import (
    EARLIER_DESIGN,
    MIN_HAR_ROWS,
    OVERNIGHT_MODES,
    TARGETS,
    VARIANCE_FLOOR,
    Z_LEVELS,
    HarDesign,
    HarRange,
    daily_variance,
    intraday_variance,
    overnight_variance,
)
from stockcli.ml.forecasters.rolling import RollingBand
from stockcli.ml.intervals import QUANTILES
from tests.bars_data import sample_frame, sample_frames

FIT_SESSIONS = 1200
CUT = 1500
"""Session after which the causality tests perturb every bar."""

HORIZONS = (1, 5, 20)
LEVELS = (0.001, 0.01, 0.025, 0.1, 0.3, 0.5, 0.7, 0.9, 0.975, 0.99, 0.999)
MARKET = "^GSPC"
OLS_HAR_X = HarDesign(market=False, half_life=0, residual_window=0)
"""The next session's design as it was before the market term and the recency weighting."""
FORECASTERS: dict[str, Forecaster] = {
    "garch": Garch(),
    "gjr": Gjr(),
    "har_gk": HarRange(),
    "har_parkinson": HarRange("parkinson"),
    "har_ols": HarRange(design=OLS_HAR_X),
    "har_earlier": HarRange(design=EARLIER_DESIGN),
}


# The table's other members: fit-free, or composed of members' fits. Causal and ordered too.
COMPOSED: dict[str, Forecaster] = {
    **FORECASTERS,
    "rolling": RollingBand(20),
    "blend": Blend(FORECASTERS["har_gk"], FORECASTERS["garch"]),
}


@pytest.fixture(scope="module")
def goog() -> TickerBars:
    """GOOG's bars with the market's (^GSPC) variance, as the services give them."""
    bars = ticker_bars(sample_frames(("GOOG", MARKET)), "GOOG", MARKET)
    assert bars.market is not None and np.isfinite(bars.market).all()
    return bars


@pytest.fixture(scope="module")
def fitted(goog: TickerBars) -> dict[str, dict[str, Any]]:
    params = {name: forecaster.fit(goog.head(FIT_SESSIONS)) for name, forecaster in FORECASTERS.items()}
    assert all(value is not None for value in params.values())
    return {name: value for name, value in params.items() if value is not None}


@pytest.fixture(scope="module")
def fitted_all(goog: TickerBars, fitted: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    blend = COMPOSED["blend"].fit(goog.head(FIT_SESSIONS))
    assert blend is not None and blend["members"]["garch"] == fitted["garch"]
    return {**fitted, "rolling": {"window": 20}, "blend": blend}


def _perturbed_after(bars: TickerBars, cut: int) -> TickerBars:
    """Every bar after `cut` moved: prices x 1.5, the high raised, the low lowered, the open shifted."""
    later = np.arange(len(bars)) > cut
    rng = np.random.default_rng(7)
    wobble = np.where(later, rng.uniform(0.97, 1.03, len(bars)), 1.0)
    scale = np.where(later, 1.5, 1.0)
    close = bars.close * scale
    open_ = bars.open * scale * wobble
    high = np.maximum(bars.high * scale * np.where(later, 1.04, 1.0), np.maximum(open_, close))
    low = np.minimum(bars.low * scale * np.where(later, 0.95, 1.0), np.minimum(open_, close))
    market = None if bars.market is None else bars.market * np.where(later, 3.0, 1.0)
    return TickerBars(open_, high, low, close, market)


def _arch_next_variance(
    params: dict[str, Any], log_returns: np.ndarray, asymmetric: bool, horizon: int = 1
) -> float:
    """arch's own fix() + analytic forecast(horizon) on the finite returns, its per-step variances
    summed: the reference variance of the `horizon`-session return."""
    from arch import arch_model

    returns = log_returns[np.isfinite(log_returns)]
    names = ["mu", "omega", "alpha", *(["gamma"] if asymmetric else []), "beta", "nu"]
    model = arch_model(
        params["scale"] * returns, mean="Constant", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t"
    )
    fixed = model.fix([params[name] for name in names])
    forecast = fixed.forecast(horizon=horizon, method="analytic", reindex=False)
    assert forecast.mean.to_numpy()[-1] == pytest.approx([params["mu"]] * horizon)
    return float(forecast.variance.to_numpy()[-1].sum())


def _implied_variance(
    params: dict[str, Any], quantiles: np.ndarray, level: float, horizon: int = 1
) -> np.ndarray:
    """The percent-scale variance a GARCH-t quantile at `level` of the `horizon`-session return was
    built from (its mean: horizon x mu)."""
    ppf = float(standardized_t_ppf(params["nu"], [level])[0])
    return np.asarray(((params["scale"] * quantiles - horizon * params["mu"]) / ppf) ** 2)


# --- causality, shape, monotonicity, serialisation ---------------------------------------------


@pytest.mark.parametrize("horizon", HORIZONS)
@pytest.mark.parametrize("name", COMPOSED)
def test_quantiles_do_not_depend_on_later_bars(
    name: str, horizon: int, goog: TickerBars, fitted_all: dict[str, dict[str, Any]]
) -> None:
    forecaster, params = COMPOSED[name], fitted_all[name]
    rows = np.arange(len(goog))
    original = forecaster.quantiles_at(params, goog, rows, LEVELS, horizon)
    perturbed = forecaster.quantiles_at(params, _perturbed_after(goog, CUT), rows, LEVELS, horizon)
    assert np.array_equal(original[: CUT + 1], perturbed[: CUT + 1], equal_nan=True)
    assert np.isfinite(original[CUT]).all()
    # The perturbation does reach the later rows, so the comparison above could fail.
    assert not np.allclose(original[CUT + 2 :], perturbed[CUT + 2 :])


@pytest.mark.parametrize("name", COMPOSED)
def test_quantiles_rise_with_the_level(
    name: str, goog: TickerBars, fitted_all: dict[str, dict[str, Any]]
) -> None:
    levels = np.sort(np.random.default_rng(1).uniform(0.0005, 0.9995, 40))
    values = COMPOSED[name].quantiles_at(fitted_all[name], goog, np.arange(100, len(goog)), levels.tolist())
    assert values.shape == (len(goog) - 100, 40)
    assert np.isfinite(values).all()
    assert (np.diff(values, axis=1) >= 0).all()
    assert (values[:, 0] < 0).all() and (values[:, -1] > 0).all()


@pytest.mark.parametrize(("name", "first_row"), [("garch", 75), ("gjr", 75), ("har_gk", 22)])
def test_rows_with_too_short_a_history_are_nan(
    name: str, first_row: int, goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    values = FORECASTERS[name].quantiles_at(fitted[name], goog, np.arange(first_row + 5), QUANTILES)
    assert np.isnan(values[:first_row]).all()
    assert np.isfinite(values[first_row:]).all()


@pytest.mark.parametrize("name", FORECASTERS)
def test_params_survive_a_json_round_trip(
    name: str, goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    params = fitted[name]
    reloaded = json.loads(json.dumps(params))
    rows = np.array([300, 1199, len(goog) - 1])
    forecaster = FORECASTERS[name]
    assert np.array_equal(
        forecaster.quantiles_at(params, goog, rows, LEVELS),
        forecaster.quantiles_at(reloaded, goog, rows, LEVELS),
    )


@pytest.mark.parametrize("name", FORECASTERS)
def test_fit_refuses_short_and_flat_series(name: str, goog: TickerBars) -> None:
    forecaster = FORECASTERS[name]
    short = 100 if name in {"garch", "gjr"} else MIN_HAR_ROWS + 22
    assert forecaster.fit(goog.head(short)) is None
    flat = np.full(600, 50.0)
    assert forecaster.fit(TickerBars(flat, flat, flat, flat)) is None
    assert forecaster.fit(goog.head(short + 2)) is not None


# --- GARCH and GJR against arch -----------------------------------------------------------------


@pytest.mark.parametrize(("name", "asymmetric"), [("garch", False), ("gjr", True)])
def test_garch_family_fit_is_arch_fitted_directly(
    name: str, asymmetric: bool, goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    from arch import arch_model

    returns = goog.head(FIT_SESSIONS).returns[1:]
    model = arch_model(100.0 * returns, mean="Constant", vol="GARCH", p=1, o=int(asymmetric), q=1, dist="t")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        direct = model.fit(disp="off").params
    params = fitted[name]
    expected = {"mu": "mu", "omega": "omega", "alpha": "alpha[1]", "beta": "beta[1]", "nu": "nu"}
    if asymmetric:
        expected["gamma"] = "gamma[1]"
    else:
        assert "gamma" not in params
    for key, column in expected.items():
        assert params[key] == pytest.approx(float(direct[column]), rel=1e-9, abs=1e-12), key
    assert params["scale"] == 100.0
    assert params["n_obs"] == FIT_SESSIONS - 1
    assert params["converged"] is True


@pytest.mark.parametrize(("name", "asymmetric"), [("garch", False), ("gjr", True)])
def test_garch_family_next_variance_is_arch_forecast(
    name: str, asymmetric: bool, goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    params = fitted[name]
    rows = np.array([75, 76, 400, FIT_SESSIONS - 1, len(goog) - 1])
    values = FORECASTERS[name].quantiles_at(params, goog, rows, (0.975,))
    for row, variance in zip(rows, _implied_variance(params, values[:, 0], 0.975), strict=True):
        reference = _arch_next_variance(params, goog.returns[: row + 1], asymmetric)
        assert variance == pytest.approx(reference, rel=1e-8), row


@pytest.mark.parametrize("horizon", [2, 5, 20])
@pytest.mark.parametrize(("name", "asymmetric"), [("garch", False), ("gjr", True)])
def test_garch_family_multi_session_variance_is_arch_analytic_forecast(
    name: str, asymmetric: bool, horizon: int, goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    params = fitted[name]
    rows = np.array([75, 400, FIT_SESSIONS - 1, len(goog) - 1])
    values = FORECASTERS[name].quantiles_at(params, goog, rows, (0.025, 0.975), horizon)
    for row, upper, lower in zip(
        rows,
        _implied_variance(params, values[:, 1], 0.975, horizon),
        _implied_variance(params, values[:, 0], 0.025, horizon),
        strict=True,
    ):
        reference = _arch_next_variance(params, goog.returns[: row + 1], asymmetric, horizon)
        assert upper == pytest.approx(reference, rel=1e-8), row
        assert lower == pytest.approx(reference, rel=1e-8), row


def test_gjr_leverage_raises_the_variance_after_a_fall(
    goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    params = fitted["gjr"]
    assert params["gamma"] > 0
    symmetric = {**params, "gamma": 0.0}
    falls = np.flatnonzero(goog.returns < -0.02)
    falls = falls[falls > 100]
    with_leverage = Gjr().quantiles_at(params, goog, falls, (0.975,))
    without = Gjr().quantiles_at(symmetric, goog, falls, (0.975,))
    assert (with_leverage > without).mean() > 0.9


def test_gjr_without_leverage_is_garch(goog: TickerBars, fitted: dict[str, dict[str, Any]]) -> None:
    params = {**fitted["garch"], "gamma": 0.0}
    rows = np.arange(len(goog))
    assert np.array_equal(
        Gjr().quantiles_at(params, goog, rows, LEVELS),
        Garch().quantiles_at(fitted["garch"], goog, rows, LEVELS),
        equal_nan=True,
    )


@pytest.mark.parametrize(("name", "asymmetric"), [("garch", False), ("gjr", True)])
def test_garch_family_matches_arch_where_a_variance_bound_binds(name: str, asymmetric: bool) -> None:
    # 60 residuals of exactly zero with beta 0.5 and a tiny omega: the variance falls below arch's
    # lower bound (sample variance / 1e8), so arch clips it; the rows there, and the later rows
    # whose prefixes contain the clipped stretch, must still be arch's.
    rng = np.random.default_rng(3)
    mu = 0.05
    log_returns = rng.standard_t(5, 400) / 100.0
    log_returns[200:260] = mu / 100.0
    close = 100.0 * np.exp(np.cumsum(np.append(0.0, log_returns)))
    bars = TickerBars(
        np.full(close.size, np.nan), np.full(close.size, np.nan), np.full(close.size, np.nan), close
    )
    params = {"mu": mu, "omega": 1e-12, "alpha": 0.2, "beta": 0.5, "nu": 6.0, "scale": 100.0}
    if asymmetric:
        params["gamma"] = 0.1
    rows = np.array([150, 230, 261, 300, 400])
    values = FORECASTERS[name].quantiles_at(params, bars, rows, (0.975,))
    for row, variance in zip(rows, _implied_variance(params, values[:, 0], 0.975), strict=True):
        reference = _arch_next_variance(params, bars.returns[: row + 1], asymmetric)
        assert variance == pytest.approx(reference, rel=1e-8), row


def test_garch_rejects_invalid_params(goog: TickerBars) -> None:
    with pytest.raises(InputDataError):
        Gjr().quantiles_at(
            {"mu": 0.0, "omega": 0.1, "alpha": 0.1, "beta": 0.8, "nu": 5.0}, goog, np.arange(3), LEVELS
        )
    with pytest.raises(InputDataError):
        Garch().quantiles_at(
            {"mu": 0.0, "omega": -1, "alpha": 0.1, "beta": 0.8, "nu": 5}, goog, np.arange(3), LEVELS
        )


# --- HAR against least squares and a hand computation ------------------------------------------


def _oracle_parts(frame: pd.DataFrame, estimator: str) -> tuple[pd.DataFrame, pd.Series, pd.Series]:
    """Log prices, the previous log close and the intraday estimator, by the papers' formulas."""
    log = np.log(frame[["open", "high", "low", "close"]])
    previous_close = log["close"].shift(1)
    if estimator == "parkinson":
        intraday = (log["high"] - log["low"]) ** 2 / (4 * np.log(2))
    else:
        intraday = (
            0.5 * (log["high"] - log["low"]) ** 2 - (2 * np.log(2) - 1) * (log["close"] - log["open"]) ** 2
        )
    return log, previous_close, intraday


def _oracle_design(frame: pd.DataFrame, estimator: str) -> pd.DataFrame:
    """The HAR design built independently: pandas columns and rolling means."""
    log, previous_close, intraday = _oracle_parts(frame, estimator)
    variance = ((log["open"] - previous_close) ** 2 + intraday).clip(lower=VARIANCE_FLOOR)
    returns = log["close"] - previous_close
    negative = returns.clip(upper=0.0)
    return pd.DataFrame(
        {
            "const": 1.0,
            "d": np.log(variance),
            "w": np.log(variance.rolling(5).mean()),
            "m": np.log(variance.rolling(22).mean()),
            "neg": negative,
            "neg5": negative.rolling(5).mean(),
            "target": np.log(variance).shift(-1),
            "next_return": returns.shift(-1),
        }
    )


@pytest.mark.parametrize("estimator", ["garman_klass", "parkinson"])
def test_earlier_har_is_least_squares_on_the_log_variance(estimator: str) -> None:
    frame = sample_frame("MSFT").iloc[:1500]
    params = HarRange(estimator, design=EARLIER_DESIGN).fit(TickerBars.from_frame(frame))
    assert params is not None
    table = _oracle_design(frame, estimator).dropna()
    design = table[["const", "d", "w", "m", "neg", "neg5"]].to_numpy()
    target = table["target"].to_numpy()
    coefficients = np.linalg.solve(design.T @ design, design.T @ target)
    assert params["n_obs"] == len(table)
    assert np.allclose(params["coefficients"], coefficients, rtol=1e-7, atol=1e-10)
    standardized = table["next_return"].to_numpy() / np.exp(0.5 * design @ coefficients)
    z_quantiles = np.quantile(standardized, Z_LEVELS)
    assert np.allclose(params["z_quantiles"], z_quantiles, rtol=1e-7)
    # The quantile of the last row: its forecast scale x the standardized quantile, read off the grid.
    bars = TickerBars.from_frame(frame)
    value = HarRange(estimator, design=EARLIER_DESIGN).quantiles_at(
        params, bars, np.array([len(frame) - 1]), (0.975,)
    )
    last = _oracle_design(frame, estimator).iloc[-1][["const", "d", "w", "m", "neg", "neg5"]].to_numpy(float)
    expected = np.exp(0.5 * last @ coefficients) * np.interp(0.975, Z_LEVELS, z_quantiles)
    assert value[0, 0] == pytest.approx(expected, rel=1e-6)


def test_har_per_horizon_is_least_squares_on_the_log_mean_variance() -> None:
    horizon = 5
    frame = sample_frame("MSFT").iloc[:1500]
    bars = TickerBars.from_frame(frame)
    params = HarRange(horizons=(1, horizon)).fit(bars)
    assert params is not None and set(params["horizons"]) == {"5"}
    table = _oracle_design(frame, "garman_klass")
    variance = np.exp(table["d"])
    # Row t: log of the mean proxy over t+1 .. t+5, and log(close[t+5] / close[t]).
    table["target"] = np.log(variance.rolling(horizon).mean().shift(-horizon))
    table["next_return"] = np.log(frame["close"]).diff(horizon).shift(-horizon)
    table = table.dropna()
    design = table[["const", "d", "w", "m", "neg", "neg5"]].to_numpy()
    coefficients, *_ = np.linalg.lstsq(design, table["target"].to_numpy(), rcond=None)
    own = params["horizons"]["5"]
    assert own["n_obs"] == len(table) == params["n_obs"] - (horizon - 1)
    assert np.allclose(own["coefficients"], coefficients, rtol=1e-7, atol=1e-10)
    scale = np.sqrt(horizon * np.exp(design @ coefficients))
    z_quantiles = np.quantile(table["next_return"].to_numpy() / scale, Z_LEVELS)
    assert np.allclose(own["z_quantiles"], z_quantiles, rtol=1e-7)
    row = np.array([len(frame) - 1])
    value = HarRange().quantiles_at(params, bars, row, (0.1, 0.9), horizon)[0]
    last = _oracle_design(frame, "garman_klass").iloc[-1][["const", "d", "w", "m", "neg", "neg5"]]
    expected = np.sqrt(horizon * np.exp(last.to_numpy(float) @ coefficients)) * np.interp(
        [0.1, 0.9], Z_LEVELS, z_quantiles
    )
    assert value == pytest.approx(expected, rel=1e-6)
    # A horizon it was not fitted for: NaN, not a guess.
    assert np.isnan(HarRange().quantiles_at(params, bars, row, (0.1, 0.9), 20)).all()


def test_har_params_fitted_before_horizons_still_serve_the_next_session(
    goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    params = fitted["har_gk"]
    assert set(params["horizons"]) == {"5", "20"}
    old = json.loads(json.dumps({key: value for key, value in params.items() if key != "horizons"}))
    rows = np.arange(30, len(goog))
    forecaster = FORECASTERS["har_gk"]
    assert np.array_equal(
        forecaster.quantiles_at(old, goog, rows, LEVELS), forecaster.quantiles_at(params, goog, rows, LEVELS)
    )
    assert np.isnan(forecaster.quantiles_at(old, goog, rows, LEVELS, 5)).all()
    assert np.isfinite(forecaster.quantiles_at(params, goog, rows, LEVELS, 5)).all()
    blend = {"members": {"har_range": old, "garch": fitted["garch"]}}
    assert np.isnan(Blend(HarRange(), Garch()).quantiles_at(blend, goog, rows, LEVELS, 20)).all()


def _oracle_har_x(frame: pd.DataFrame, estimator: str) -> pd.DataFrame:
    """The next session's HAR-X design and regressand built independently: the intraday estimator
    alone, the overnight gap squared as its own 5-session regressor, the squared return as target."""
    log, previous_close, intraday = _oracle_parts(frame, estimator)
    # The first session has no previous close, so no proxy at all.
    intraday = intraday.where(previous_close.notna()).clip(lower=VARIANCE_FLOOR)
    gap = ((log["open"] - previous_close) ** 2).clip(lower=VARIANCE_FLOOR)
    returns = log["close"] - previous_close
    return pd.DataFrame(
        {
            "const": 1.0,
            "d": np.log(intraday),
            "w": np.log(intraday.rolling(5).mean()),
            "m": np.log(intraday.rolling(22).mean()),
            "gap5": np.log(gap.rolling(5).mean()),
            "target": np.log((returns**2).clip(lower=VARIANCE_FLOOR)).shift(-1),
            "next_return": returns.shift(-1),
        }
    )


@pytest.mark.parametrize("estimator", ["garman_klass", "parkinson"])
def test_har_x_is_least_squares_on_the_log_squared_return(estimator: str) -> None:
    frame = sample_frame("MSFT").iloc[:1500]
    bars = TickerBars.from_frame(frame)
    params = HarRange(estimator, design=OLS_HAR_X).fit(bars)
    assert params is not None
    assert params["terms"] == ["const", "log_rv_1", "log_rv_5", "log_rv_22", "log_overnight_5"]
    assert (params["overnight"], params["leverage"], params["target"]) == (
        "regressor",
        False,
        "squared_return",
    )
    assert (params["market"], params["half_life"], params["residual_window"]) == (False, 0, 0)
    columns = ["const", "d", "w", "m", "gap5"]
    table = _oracle_har_x(frame, estimator).dropna()
    design = table[columns].to_numpy()
    coefficients = np.linalg.solve(design.T @ design, design.T @ table["target"].to_numpy())
    assert params["n_obs"] == len(table)
    assert np.allclose(params["coefficients"], coefficients, rtol=1e-7, atol=1e-10)
    standardized = table["next_return"].to_numpy() / np.exp(0.5 * design @ coefficients)
    z_quantiles = np.quantile(standardized, Z_LEVELS)
    assert np.allclose(params["z_quantiles"], z_quantiles, rtol=1e-7)
    value = HarRange(estimator, design=OLS_HAR_X).quantiles_at(
        params, bars, np.array([len(frame) - 1]), (0.025, 0.975)
    )
    last = _oracle_har_x(frame, estimator).iloc[-1][columns].to_numpy(float)
    expected = np.exp(0.5 * last @ coefficients) * np.interp([0.025, 0.975], Z_LEVELS, z_quantiles)
    assert value[0] == pytest.approx(expected, rel=1e-6)


def _oracle_market(frame: pd.DataFrame, market: pd.DataFrame) -> pd.Series:
    """The market's intraday Garman-Klass variance on `frame`'s dates, built independently: each
    date takes the market's newest bar on or before it."""
    _log, previous_close, intraday = _oracle_parts(market, "garman_klass")
    own = intraday.where(previous_close.notna()).clip(lower=VARIANCE_FLOOR)
    return own.reindex(own.index.union(frame.index)).ffill().reindex(frame.index)


def test_har_with_the_market_is_weighted_least_squares_by_hand() -> None:
    """The default design: the HAR-X terms and the market's, fitted by least squares with weights
    0.5 ** (age / half-life), the quantiles from the last `residual_window` standardized returns."""
    design = HarDesign()
    assert (design.market, design.half_life, design.residual_window) == (True, 500, 1000)
    frame = sample_frame("MSFT").iloc[:1500]
    # Every seventh market bar missing: the day before stands in.
    market = sample_frame(MARKET)
    market = market.drop(market.index[market.index.isin(frame.index[::7])])
    bars = ticker_bars({"MSFT": frame, MARKET: market}, "MSFT", MARKET)
    params = HarRange(design=design).fit(bars)
    assert params is not None and "market_fallback" not in params
    assert params["terms"] == [
        "const",
        "log_rv_1",
        "log_rv_5",
        "log_rv_22",
        "log_overnight_5",
        "log_market_5",
    ]
    assert (params["market"], params["half_life"], params["residual_window"]) == (True, 500, 1000)
    oracle = _oracle_har_x(frame, "garman_klass")
    oracle["mkt5"] = np.log(_oracle_market(frame, market).rolling(5).mean())
    columns = ["const", "d", "w", "m", "gap5", "mkt5"]
    table = oracle.dropna()
    age = np.flatnonzero(oracle.index.isin(table.index))
    weights = 0.5 ** ((age[-1] - age) / 500)
    x, y = table[columns].to_numpy(), table["target"].to_numpy()
    coefficients, *_ = np.linalg.lstsq(x * np.sqrt(weights)[:, None], y * np.sqrt(weights), rcond=None)
    assert params["n_obs"] == len(table) > 1000
    assert np.allclose(params["coefficients"], coefficients, rtol=1e-7, atol=1e-10)
    # Not the unweighted fit: the weights matter.
    unweighted, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert not np.allclose(params["coefficients"], unweighted, rtol=1e-3)
    standardized = table["next_return"].to_numpy() / np.exp(0.5 * x @ coefficients)
    z_quantiles = np.quantile(standardized[-1000:], Z_LEVELS)
    assert np.allclose(params["z_quantiles"], z_quantiles, rtol=1e-7)
    value = HarRange().quantiles_at(params, bars, np.array([len(frame) - 1]), (0.025, 0.975))
    last = oracle.iloc[-1][columns].to_numpy(float)
    expected = np.exp(0.5 * last @ coefficients) * np.interp([0.025, 0.975], Z_LEVELS, z_quantiles)
    assert value[0] == pytest.approx(expected, rel=1e-6)


def test_quantiles_do_not_depend_on_the_markets_later_bars(fitted_all: dict[str, dict[str, Any]]) -> None:
    """The market's bars after a date, changed or missing, leave every earlier quantile bit-identical."""
    frames = sample_frames(("GOOG", MARKET))
    cut_date = frames["GOOG"].index[CUT]
    market = frames[MARKET].copy()
    later = market.index > cut_date
    market.loc[later, ["open", "high", "low", "close"]] *= np.linspace(0.5, 2.0, int(later.sum()))[:, None]
    market.loc[later, "high"] *= 1.05
    market = market.drop(market.index[later][::3])
    original = ticker_bars(frames, "GOOG", MARKET)
    perturbed = ticker_bars({"GOOG": frames["GOOG"], MARKET: market}, "GOOG", MARKET)
    assert original.market is not None and perturbed.market is not None
    assert np.array_equal(original.market[: CUT + 1], perturbed.market[: CUT + 1])
    rows = np.arange(len(original))
    for name in ("har_gk", "blend"):
        before = COMPOSED[name].quantiles_at(fitted_all[name], original, rows, LEVELS)
        after = COMPOSED[name].quantiles_at(fitted_all[name], perturbed, rows, LEVELS)
        assert np.array_equal(before[: CUT + 1], after[: CUT + 1], equal_nan=True)
        assert not np.allclose(before[CUT + 2 :], after[CUT + 2 :])


def test_the_market_is_carried_forward_and_nan_before_its_first_bar() -> None:
    frame = sample_frame("MSFT").iloc[:60]
    market = sample_frame(MARKET)
    market = market[market.index >= frame.index[10]].drop(frame.index[[20, 21]])
    bars = ticker_bars({"MSFT": frame, MARKET: market}, "MSFT", MARKET)
    assert bars.market is not None
    expected = _oracle_market(frame, market).to_numpy()
    assert np.isnan(bars.market[:11]).all() and np.isnan(expected[:11]).all()  # no close before it
    assert bars.market[11:] == pytest.approx(expected[11:], rel=1e-12)
    assert bars.market[20] == bars.market[21] == bars.market[19]
    # The market itself, an absent market and no market: no market variance.
    assert ticker_bars({MARKET: market}, MARKET, MARKET).market is None
    assert ticker_bars({"MSFT": frame}, "MSFT", MARKET).market is None
    assert ticker_bars({"MSFT": frame, MARKET: market}, "MSFT", "").market is None


def test_without_the_markets_bars_the_fit_leaves_the_term_out_and_says_so(goog: TickerBars) -> None:
    own = TickerBars(goog.open, goog.high, goog.low, goog.close)
    params = HarRange().fit(own.head(FIT_SESSIONS))
    assert params is not None
    assert params["market"] is False and params["market_fallback"] == "no market bars"
    assert "log_market_5" not in params["terms"]
    # Exactly the design without the term (weighted as configured).
    plain = HarRange(design=HarDesign(market=False)).fit(own.head(FIT_SESSIONS))
    assert plain is not None
    assert {k: v for k, v in params.items() if k != "market_fallback"} == plain
    # Market bars over too few sessions: the same fallback, with its reason.
    assert goog.market is not None
    short = np.where(np.arange(len(goog)) < FIT_SESSIONS - 100, np.nan, goog.market)
    partial = TickerBars(goog.open, goog.high, goog.low, goog.close, short)
    params = HarRange().fit(partial.head(FIT_SESSIONS))
    assert params is not None and params["market_fallback"] == "too few sessions with market bars"
    assert params["coefficients"] == plain["coefficients"]
    # Params with the term, served where the market's bars are missing: NaN, not an error.
    with_market = HarRange().fit(goog.head(FIT_SESSIONS))
    assert with_market is not None and with_market["market"] is True
    assert np.isnan(HarRange().quantiles_at(with_market, own, np.arange(100, 110), LEVELS)).all()


def test_intraday_and_overnight_proxies_by_hand() -> None:
    bars = _hand_bars()
    ln = np.log
    gk1 = 0.5 * ln(104 / 101) ** 2 - (2 * ln(2) - 1) * ln(103 / 102) ** 2
    gk2 = 0.5 * ln(103 / 100) ** 2 - (2 * ln(2) - 1) * ln(100 / 101) ** 2
    close_to_close = [ln(104 / 100) ** 2, ln(105 / 104) ** 2]  # missing open, then an inconsistent bar
    intraday = intraday_variance(bars, "garman_klass")
    overnight = overnight_variance(bars)
    assert np.isnan(intraday[0]) and np.isnan(overnight[0])
    assert intraday[1:] == pytest.approx([gk1, gk2, *close_to_close], rel=1e-12)
    # The gap of session 4 is read although its bar is inconsistent: its open and the close before are fine.
    gaps = [ln(102 / 100.5) ** 2, ln(101 / 103) ** 2, close_to_close[0], ln(105 / 104) ** 2]
    assert overnight[1:] == pytest.approx(gaps, rel=1e-12)
    # Together, where the bar is consistent, they are the daily variance.
    assert (intraday + overnight)[1:3] == pytest.approx(daily_variance(bars, "garman_klass")[1:3], rel=1e-12)


def test_longer_horizons_keep_the_earlier_design(goog: TickerBars) -> None:
    new = HarRange().fit(goog.head(FIT_SESSIONS))
    earlier = HarRange(design=EARLIER_DESIGN).fit(goog.head(FIT_SESSIONS))
    assert new is not None and earlier is not None
    assert new["horizons"] == earlier["horizons"]
    assert new["horizons"]["5"]["target"] == "range" and new["target"] == "squared_return"
    assert new["horizons"]["5"]["market"] is False and new["market"] is True
    assert len(new["coefficients"]) == 6 and len(earlier["coefficients"]) == 6
    assert new["terms"][-1] == "log_market_5" and "log_market_5" not in earlier["terms"]


@pytest.mark.parametrize(
    ("design", "keys"),
    [
        (EARLIER_DESIGN, tuple(EARLIER_DESIGN.to_json())),  # before the design was a choice
        (OLS_HAR_X, ("market", "half_life", "residual_window")),  # before the market and the weights
    ],
)
def test_params_naming_no_design_serve_as_they_were_fitted(
    design: HarDesign, keys: tuple[str, ...], goog: TickerBars
) -> None:
    """Fits recorded before a design field existed hold none of its keys: each missing field is the
    earlier design's, so they serve as fitted, even from bars that hold the market's."""
    own = TickerBars(goog.open, goog.high, goog.low, goog.close)
    params = HarRange(design=design).fit(own.head(FIT_SESSIONS))
    assert params is not None
    old = {key: value for key, value in params.items() if key not in keys}
    old["horizons"] = {
        h: {k: v for k, v in found.items() if k not in keys} for h, found in params["horizons"].items()
    }
    rows = np.arange(30, len(goog))
    for horizon in HORIZONS:
        # The params decide the design, not the instance serving them.
        served = HarRange().quantiles_at(old, goog, rows, LEVELS, horizon)
        assert np.array_equal(
            served, HarRange(design=design).quantiles_at(params, own, rows, LEVELS, horizon)
        )
        assert np.isfinite(served[-1]).all()


def test_har_design_choices_are_the_settings() -> None:
    from typing import get_args

    from stockcli.config import ForecasterSettings, Settings
    from stockcli.ml.forecasters import build_table

    fields = ForecasterSettings.model_fields
    assert get_args(fields["har_overnight"].annotation) == OVERNIGHT_MODES
    assert get_args(fields["har_target"].annotation) == TARGETS
    table = build_table(Settings())
    assert table["har_range"].design == HarDesign()  # type: ignore[attr-defined]
    assert table["blend"].weight == Settings().forecasters.blend_weight == 0.75  # type: ignore[attr-defined]
    with pytest.raises(InputDataError, match="regressor, added"):
        HarDesign(overnight="multiplied")
    with pytest.raises(InputDataError, match="squared_return, range"):
        HarDesign(target="log_range")


@pytest.mark.parametrize("name", COMPOSED)
def test_twenty_sessions_band_is_wider_than_one(
    name: str, goog: TickerBars, fitted_all: dict[str, dict[str, Any]]
) -> None:
    forecaster, params = COMPOSED[name], fitted_all[name]
    rows = np.arange(500, len(goog))
    widths = {
        horizon: np.diff(forecaster.quantiles_at(params, goog, rows, (0.025, 0.975), horizon), axis=1)[:, 0]
        for horizon in (1, 5, 20)
    }
    assert all(np.isfinite(width).all() for width in widths.values())
    assert (widths[20] > widths[1]).all()
    assert np.median(widths[1]) < np.median(widths[5]) < np.median(widths[20])
    # Roughly sqrt(h) wider (volatility mean-reverts and the tails thin): a median ratio in 3..6 for 20.
    assert 3.0 < float(np.median(widths[20] / widths[1])) < 6.0


@pytest.mark.parametrize("horizon", [0, -1, 2.5, True])
def test_a_horizon_must_be_sessions_ahead(horizon: Any, goog: TickerBars) -> None:
    with pytest.raises(InputDataError, match="horizon"):
        RollingBand().quantiles_at({}, goog, np.arange(3), LEVELS, horizon)


def _hand_bars() -> TickerBars:
    """Five sessions for hand computations: the fourth lacks its open, the fifth has high < low."""
    nan = float("nan")
    return TickerBars(
        open=np.array([100.0, 102.0, 101.0, nan, 105.0]),
        high=np.array([101.0, 104.0, 103.0, 106.0, 104.0]),
        low=np.array([99.0, 101.0, 100.0, 102.0, 106.0]),
        close=np.array([100.5, 103.0, 100.0, 104.0, 105.0]),
    )


def test_variance_proxy_by_hand() -> None:
    bars = _hand_bars()
    ln = np.log
    gk1 = ln(102 / 100.5) ** 2 + 0.5 * ln(104 / 101) ** 2 - (2 * ln(2) - 1) * ln(103 / 102) ** 2
    gk2 = ln(101 / 103) ** 2 + 0.5 * ln(103 / 100) ** 2 - (2 * ln(2) - 1) * ln(100 / 101) ** 2
    pk1 = ln(102 / 100.5) ** 2 + ln(104 / 101) ** 2 / (4 * ln(2))
    pk2 = ln(101 / 103) ** 2 + ln(103 / 100) ** 2 / (4 * ln(2))
    fallback = [ln(104 / 100) ** 2, ln(105 / 104) ** 2]  # missing open, then an inconsistent bar
    garman_klass = daily_variance(bars, "garman_klass")
    parkinson = daily_variance(bars, "parkinson")
    assert np.isnan(garman_klass[0]) and np.isnan(parkinson[0])
    assert garman_klass[1:] == pytest.approx([gk1, gk2, *fallback], rel=1e-12)
    assert parkinson[1:] == pytest.approx([pk1, pk2, *fallback], rel=1e-12)


def test_variance_proxy_is_floored_on_a_still_session() -> None:
    price = np.full(3, 20.0)
    assert daily_variance(TickerBars(price, price, price, price))[1:] == pytest.approx([VARIANCE_FLOOR] * 2)


def test_har_interpolates_levels_and_clamps_the_ends(
    goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    params = fitted["har_gk"]
    row = np.array([len(goog) - 1])
    at_grid = HarRange().quantiles_at(params, goog, row, (0.02, 0.03))[0]
    between = HarRange().quantiles_at(params, goog, row, (0.025,))[0, 0]
    assert between == pytest.approx(at_grid.mean(), rel=1e-12)
    ends = HarRange().quantiles_at(params, goog, row, (0.0001, 0.001, 0.999, 0.9999))[0]
    assert ends[0] == ends[1] and ends[2] == ends[3]


def test_har_rejects_an_unknown_estimator() -> None:
    with pytest.raises(InputDataError, match="garman_klass"):
        HarRange("rogers_satchell")


@pytest.mark.parametrize("horizon", HORIZONS)
def test_blend_is_the_average_of_its_members(
    horizon: int, goog: TickerBars, fitted_all: dict[str, dict[str, Any]]
) -> None:
    rows = np.arange(200, 260)
    members = [
        FORECASTERS[n].quantiles_at(fitted_all[n], goog, rows, LEVELS, horizon) for n in ("har_gk", "garch")
    ]
    blended = COMPOSED["blend"].quantiles_at(fitted_all["blend"], goog, rows, LEVELS, horizon)
    assert np.array_equal(blended, (members[0] + members[1]) / 2.0)


def test_a_weighted_blend_and_one_fitted_before_weights(
    goog: TickerBars, fitted_all: dict[str, dict[str, Any]]
) -> None:
    rows = np.arange(200, 260)
    first, second = (
        FORECASTERS[n].quantiles_at(fitted_all[n], goog, rows, LEVELS) for n in ("har_gk", "garch")
    )
    weighted = Blend(FORECASTERS["har_gk"], FORECASTERS["garch"], 0.75)
    params = weighted.compose({"har_range": fitted_all["har_gk"], "garch": fitted_all["garch"]})
    assert params is not None and params["weight"] == 0.75
    assert weighted.quantiles_at(params, goog, rows, LEVELS) == pytest.approx(0.75 * first + 0.25 * second)
    # Parameters without a weight (recorded before it was a setting) stay an equal-weight blend.
    old = {"members": params["members"]}
    assert np.array_equal(weighted.quantiles_at(old, goog, rows, LEVELS), (first + second) / 2.0)
    for weight in (0.0, 1.0, 1.5):
        with pytest.raises(InputDataError, match="weight"):
            Blend(FORECASTERS["har_gk"], FORECASTERS["garch"], weight)


@pytest.mark.parametrize("horizon", HORIZONS)
def test_rolling_band_is_the_sample_sd_times_normal_quantiles(horizon: int, goog: TickerBars) -> None:
    """Over h sessions: the sd of the last 20 * h overlapping h-session returns."""
    from scipy.stats import norm

    row = 700
    log_close = np.log(goog.close)
    returns = (
        log_close[row - 20 * horizon + 1 : row + 1] - log_close[row - 21 * horizon + 1 : row - horizon + 1]
    )
    expected = np.std(returns, ddof=1) * norm.ppf(LEVELS)
    found = COMPOSED["rolling"].quantiles_at({}, goog, np.array([row]), LEVELS, horizon)[0]
    assert np.allclose(found, expected)


@pytest.mark.parametrize("name", ["garch", "gjr"])
def test_a_refit_started_from_the_last_fit_reaches_the_cold_fit(
    name: str, goog: TickerBars, fitted: dict[str, dict[str, Any]]
) -> None:
    """A scheduled refit starts arch's optimiser at the previous parameters: same optimum, fewer steps."""
    forecaster = FORECASTERS[name]
    later = goog.head(FIT_SESSIONS + 21)
    cold, warm = forecaster.fit(later), forecaster.fit(later, fitted[name])
    assert cold is not None and warm is not None
    rows = np.arange(FIT_SESSIONS + 21, FIT_SESSIONS + 60)
    cold_q = forecaster.quantiles_at(cold, goog, rows, QUANTILES)
    warm_q = forecaster.quantiles_at(warm, goog, rows, QUANTILES)
    assert np.allclose(cold_q, warm_q, rtol=2e-3)


def test_candidate_quantiles_at_a_horizon_with_extra_tail_levels() -> None:
    """The table's rows at horizon 5: each candidate's quantiles, P(up) read off the same grid, and
    the extra (VaR) levels as their own columns, each equal to `quantiles_at` at that horizon."""
    from datetime import date

    from stockcli.config import load_settings
    from stockcli.ml.forecasters import P_UP_GRID, build_table, candidate_quantiles, fit_all, p_up_from_grid
    from tests.bars_data import sample_frames

    bars = sample_frames(("GOOG", "^GSPC"), start=date(2008, 1, 1), end=date(2013, 3, 1))
    table = build_table(load_settings(None, environ={}))
    own = {ticker: TickerBars.from_frame(frame) for ticker, frame in bars.items()}
    fits: dict[str, dict[str, Any]] = {name: {} for name in table}
    for ticker, history in own.items():
        for name, params in fit_all(table, history.head(800)).items():
            fits[name][ticker] = params
    rows = [("GOOG", 900), ("^GSPC", 1000), ("GOOG", -1)]
    tickers = [ticker for ticker, _ in rows]
    base_dates = [bars[ticker].index[i].date() for ticker, i in rows]
    extra = (0.01, 0.025)
    found = candidate_quantiles(table, fits, bars, tickers, base_dates, horizon=5, extra_levels=extra)
    assert set(found) == set(table)
    for name, forecaster in table.items():
        got = found[name]
        assert got.quantiles.shape == (3, len(QUANTILES)) and got.extra.shape == (3, 2)
        for i, (ticker, position) in enumerate(rows):
            row = np.array([position % len(own[ticker])])
            params = fits[name][ticker]
            expected = forecaster.quantiles_at(params, own[ticker], row, (*QUANTILES, *extra), 5)[0]
            np.testing.assert_allclose(got.quantiles[i], expected[: len(QUANTILES)], rtol=1e-12, atol=0)
            np.testing.assert_allclose(got.extra[i], expected[len(QUANTILES) :], rtol=1e-12, atol=0)
            grid = forecaster.quantiles_at(params, own[ticker], row, P_UP_GRID, 5)
            np.testing.assert_allclose(got.p_up[i], p_up_from_grid(grid)[0], rtol=1e-12, atol=0)
        assert (got.extra[:, 0] < got.extra[:, 1]).all() and (got.extra[:, 1] == got.quantiles[:, 0]).all()
    # Horizon 1 is what callers had before: no extra columns unless asked.
    assert candidate_quantiles(table, fits, bars, tickers, base_dates)["garch"].extra.shape == (3, 0)


def test_the_validation_script_never_reads_the_reported_year() -> None:
    from tests.benchmarks.validate_intervals import REPORTED_FROM, SAMPLE, load

    # Every ticker's bars and the market's (^GSPC, from 1999) are read through `load`.
    for name in ("GOOG.csv", "GSPC.csv"):
        index = load(SAMPLE / name, "2004-08-19").index
        assert index.max() < REPORTED_FROM <= index.max() + pd.Timedelta(days=5)
        assert index.min() == pd.Timestamp("2004-08-19") and len(index) > 1500
