"""The forecasting primitive and the distribution it returns: raw bars through the model's own spec
and scalers give exactly the stored dataset windows' distributions; nothing after an as-of date is
used; a ticker that cannot be forecast is reported beside the others; quantiles never cross; P(up);
split-conformal calibration per ticker with a pooled fallback, and its coverage on a known process."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stockcli.db.bars import load_bars
from stockcli.db.datasets import load_built
from stockcli.db.engine import open_database
from stockcli.features.dataset import BuiltDataset, WindowSet
from stockcli.ml.bundle import ModelBundle
from stockcli.ml.forecast import (
    MIN_TICKER_CALIBRATION,
    POOLED,
    ForecastResult,
    calibrated_quantiles,
    calibration_scores,
    distribution_quantiles,
    fit_calibration,
    forecast,
    forecast_windows,
    prob_up,
)
from stockcli.ml.intervals import MISCOVERAGE, QUANTILES, conformal_quantile
from stockcli.ml.networks import model_config
from stockcli.ml.training import TrainParams, train_model
from tests.model_helpers import (
    AS_OF,
    build_dataset,
    build_model,
    rows_between,
    subset,
    tiny_settings,
    volatility_process,
)
from tests.oracles import binomial_bounds

CONTEXT = "^GSPC"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, BuiltDataset]]:
    """GOOG and MSFT with ^GSPC as a context covariate, built from the sample bars by the services."""
    settings = tiny_settings(
        tmp_path_factory.mktemp("forecast") / "data", data={"context_tickers": [CONTEXT]}
    )
    engine = open_database(settings)
    run_id = build_dataset(settings, engine)
    yield engine, load_built(engine, run_id)
    engine.dispose()


def bundle_for(dataset: BuiltDataset, model_type: str = "lstm_cross_attention") -> ModelBundle:
    import torch

    torch.manual_seed(3)
    kwargs: dict[str, Any] = {
        "n_features": dataset.train.n_features,
        "n_own_features": dataset.train.n_own_features,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    return ModelBundle(
        model=build_model(model_type, **kwargs).eval(),
        model_config=model_config(model_type, **kwargs),
        spec=dataset.spec,
        scalers=dataset.scalers,
        tickers=dataset.tickers,
        sequence_length=dataset.sequence_length,
        target_kind=dataset.target_kind,
        dataset_run_id=dataset.run_id,
        version="7",
        context_tickers=(CONTEXT,),
    )


def _by_key(result: ForecastResult) -> dict[tuple[date, str], np.ndarray]:
    return {
        (d, t): np.array([result.loc[i], result.scale[i], result.df[i], result.base_closes[i]])
        for i, (d, t) in enumerate(zip(result.base_dates, result.tickers, strict=True))
    }


def _all_bars(engine: Any, dataset: BuiltDataset, end: date) -> dict[str, Any]:
    return load_bars(engine, [*dataset.tickers, CONTEXT], end=end)


@pytest.mark.parametrize("model_type", ["lstm", "lstm_cross_attention"])
@pytest.mark.parametrize("part", ["train", "test"])
def test_forecast_from_raw_bars_equals_the_stored_windows(
    built: tuple[Any, BuiltDataset], part: str, model_type: str
) -> None:
    engine, dataset = built
    presence = dataset.train.context[:, -1]  # the context covariate really is part of the input
    assert dataset.train.context.shape[1] > 1 and presence.mean() > 0.9
    bundle = bundle_for(dataset, model_type)
    windows = getattr(dataset, part)
    dates = sorted(set(windows.base_dates))
    if part == "train":
        dates = [dates[0], dates[1], dates[len(dates) // 2], dates[-1]]
    chosen = np.flatnonzero([d in set(dates) for d in windows.base_dates])
    bars = _all_bars(engine, dataset, max(dates))

    served = forecast(bundle, bars, dates)
    stored = forecast_windows(bundle, dataset.scalers, subset(windows, chosen))

    assert served.missing == [] and served.model_version == "7"
    assert len(served) == len(stored) == len(chosen)
    live, frozen = _by_key(served), _by_key(stored)
    assert live.keys() == frozen.keys()
    for key, values in frozen.items():
        np.testing.assert_allclose(live[key][:2], values[:2], rtol=1e-5, atol=1e-7, err_msg=str(key))
        assert live[key][2] == pytest.approx(values[2], rel=1e-6)  # degrees of freedom
        assert live[key][3] == values[3]  # the same base close, exactly
    # The comparison is not trivial: the distributions differ from window to window.
    assert np.ptp(stored.loc) > 1e-5 and np.ptp(stored.scale) > 1e-5
    np.testing.assert_allclose(np.sort(served.predicted_closes), np.sort(stored.predicted_closes), rtol=1e-6)


def test_bars_after_the_as_of_date_change_nothing(built: tuple[Any, BuiltDataset]) -> None:
    import pandas as pd

    engine, dataset = built
    bundle = bundle_for(dataset)
    as_of = dataset.test.base_dates[5]
    bars = _all_bars(engine, dataset, as_of)
    honest = forecast(bundle, bars, [as_of])

    future = {}
    for ticker, frame in bars.items():
        extra = pd.DataFrame(
            {"open": 1e6, "high": 1e6, "low": 1e6, "close": 1e6, "volume": 10**12},
            index=pd.DatetimeIndex([pd.Timestamp(as_of + timedelta(days=d)) for d in (1, 2, 3)], name="date"),
        )
        future[ticker] = pd.concat([frame, extra])
    leaked = forecast(bundle, future, [as_of])
    np.testing.assert_array_equal(leaked.loc, honest.loc)
    np.testing.assert_array_equal(leaked.scale, honest.scale)
    # A weekend as-of date uses the session before it.
    saturday = next(d for d in (as_of + timedelta(days=k) for k in range(1, 8)) if d.weekday() == 5)
    weekend = forecast(bundle, _all_bars(engine, dataset, saturday), [saturday])
    assert weekend.base_dates[0] < saturday and weekend.base_dates[0].weekday() == 4
    assert weekend.as_of_dates == [saturday, saturday]


def test_tickers_that_cannot_be_forecast_are_reported_beside_the_others(
    built: tuple[Any, BuiltDataset],
) -> None:
    engine, dataset = built
    bundle = bundle_for(dataset, "lstm")  # windows read on their own: GOOG's numbers cannot move
    as_of = dataset.test.base_dates[-1]
    bars = _all_bars(engine, dataset, as_of)
    full = forecast(bundle, bars, [as_of])
    google = full.tickers.index("GOOG")

    young = dict(bars)
    young["MSFT"] = bars["MSFT"].iloc[-25:]  # listed 25 sessions ago: past its warm-up, short of a window
    result = forecast(bundle, young, [as_of], tickers=("GOOG", "MSFT", "NEWCO"))
    assert result.tickers == ["GOOG"]
    assert result.loc[0] == pytest.approx(full.loc[google], abs=1e-9)
    reasons = {m.ticker: m for m in result.missing}
    assert set(reasons) == {"MSFT", "NEWCO"}
    warmup, window = dataset.spec.warmup_sessions, dataset.sequence_length
    assert reasons["MSFT"].kind == "too_little_history"
    assert reasons["MSFT"].sessions_missing == window + warmup - 25
    assert "too little history" in reasons["MSFT"].reason
    assert reasons["NEWCO"].kind == "no_bars"

    stale = dict(bars)
    stale["MSFT"] = bars["MSFT"].iloc[:-3]  # its newest bar is three sessions old
    result = forecast(bundle, stale, [as_of])
    assert result.tickers == ["GOOG"]
    assert [(m.ticker, m.kind) for m in result.missing] == [("MSFT", "no_bar_on_date")]


def test_a_ticker_still_in_its_indicator_warm_up_is_reported_as_too_young(
    built: tuple[Any, BuiltDataset],
) -> None:
    """Issue 10, item 5: a ticker with too little history is reported with the first date it becomes
    predictable. One listed 5 sessions ago has a bar on the as-of date; it is too young, not barless."""
    engine, dataset = built
    bundle = bundle_for(dataset, "lstm")
    as_of = dataset.test.base_dates[-1]
    bars = _all_bars(engine, dataset, as_of)
    bars["MSFT"] = bars["MSFT"].iloc[-5:]
    assert bars["MSFT"].index[-1].date() == as_of
    result = forecast(bundle, bars, [as_of])
    [missing] = result.missing
    warmup, window = dataset.spec.warmup_sessions, dataset.sequence_length
    assert (missing.ticker, missing.kind) == ("MSFT", "too_little_history"), missing.reason
    assert missing.sessions_missing == window + warmup - 5


def test_an_unseen_ticker_is_served_and_a_missing_context_is_masked(built: tuple[Any, BuiltDataset]) -> None:
    engine, dataset = built
    bundle = bundle_for(dataset, "lstm")
    as_of = dataset.test.base_dates[-1]
    bars = _all_bars(engine, dataset, as_of)
    # A ticker the model never saw, with GOOG's moves at ten times its price: the features are
    # scale-free, so the global model gives it GOOG's distribution of the next return.
    newco = bars["GOOG"].copy()
    newco[["open", "high", "low", "close"]] *= 10.0
    with_new = forecast(bundle, {**bars, "NEWCO": newco}, [as_of], tickers=(*dataset.tickers, "NEWCO"))
    assert with_new.tickers == [*dataset.tickers, "NEWCO"] and with_new.missing == []
    google, new = with_new.tickers.index("GOOG"), with_new.tickers.index("NEWCO")
    assert with_new.loc[new] == pytest.approx(with_new.loc[google], abs=1e-6)
    assert with_new.scale[new] == pytest.approx(with_new.scale[google], rel=1e-5)
    assert with_new.base_closes[new] == pytest.approx(10 * with_new.base_closes[google])
    # Without the context series the inputs are masked, not refused, and they do differ.
    assert not bars[CONTEXT].empty
    no_context = {t: f for t, f in bars.items() if t != CONTEXT}
    masked = forecast(bundle, no_context, [as_of])
    assert masked.tickers == list(dataset.tickers) and masked.missing == []
    assert np.abs(masked.scale - with_new.scale[:2]).max() > 1e-7


def test_fetch_stores_the_configured_context_series(tmp_path: Path) -> None:
    """Issue 10, item 2: configured context tickers enter as covariates. A context series outside
    the watchlist must be fetched by `fetch` (and so by `daily`); otherwise every dataset and every
    forecast sees it masked on every date, and refetching never fixes it."""
    from stockcli.services.fetch import fetch

    settings = tiny_settings(tmp_path / "data", data={"context_tickers": [CONTEXT]})
    engine = open_database(settings)
    try:
        fetch(settings=settings, engine=engine, as_of=AS_OF)
        stored = load_bars(engine, [*settings.data.tickers, CONTEXT], end=AS_OF)
        assert not stored["GOOG"].empty
        assert not stored[CONTEXT].empty, f"`fetch` did not store the context series {CONTEXT}"
    finally:
        engine.dispose()


# --- the distribution: quantiles and P(up) ---------------------------------------------------------


def _result(loc: np.ndarray, scale: np.ndarray, df: np.ndarray, tickers: list[str]) -> ForecastResult:
    n = len(loc)
    return ForecastResult(
        tickers=tickers,
        as_of_dates=[date(2020, 1, 1)] * n,
        base_dates=[date(2020, 1, 1)] * n,
        base_closes=np.full(n, 50.0),
        loc=np.asarray(loc, dtype=np.float64),
        scale=np.asarray(scale, dtype=np.float64),
        df=np.asarray(df, dtype=np.float64),
    )


def test_quantiles_never_cross_for_any_levels() -> None:
    rng = np.random.default_rng(0)
    n = 300
    loc = rng.normal(0, 0.02, n)
    scale = rng.uniform(1e-4, 0.05, n)
    df = np.where(rng.random(n) < 0.3, np.inf, rng.uniform(2.01, 40, n))
    raw = distribution_quantiles(loc, scale, df)
    assert raw.shape == (n, len(QUANTILES))
    assert (np.diff(raw, axis=1) > 0).all()
    np.testing.assert_allclose(raw[:, QUANTILES.index(0.5)], loc, atol=1e-15)  # the median is the location
    # Heavier tails (smaller df) give a wider 95% interval for the same scale.
    wide = distribution_quantiles(np.zeros(2), np.ones(2), np.array([3.0, np.inf]))
    assert wide[0, -1] > wide[1, -1] > 1.95

    tickers = [f"T{i % 3}" for i in range(n)]
    result = _result(loc, scale, df, tickers)
    calibration = fit_calibration(result, loc + scale * rng.standard_t(5, n))
    levels = [-0.3, -0.01, 0.0, 1e-4, 0.01, 0.05, 0.2, 0.5, 0.99, 1.0, 1.2]
    for a80 in levels:
        for a95 in levels:  # including levels pushed beyond each other by ACI (a80 < a95)
            alphas = {"T0": (a80, a95), "T1": (a95, a80)}
            q = calibrated_quantiles(result, calibration, alphas)
            assert (np.diff(q, axis=1) >= 0).all(), (a80, a95)
            assert np.isfinite(q).all()
    assert (np.diff(calibrated_quantiles(result, {}), axis=1) >= 0).all()


def test_without_calibration_the_model_quantiles_are_served() -> None:
    result = _result(np.array([0.001, -0.002]), np.array([0.01, 0.03]), np.array([5.0, np.inf]), ["A", "B"])
    np.testing.assert_array_equal(calibrated_quantiles(result, {}), result.raw_quantiles())


def test_prob_up_is_one_half_at_zero_and_grows_with_the_location() -> None:
    from scipy import stats

    for df in (3.0, 8.0, np.inf):
        locs = np.linspace(-0.05, 0.05, 41)
        p = prob_up(locs, np.full(41, 0.02), np.full(41, df))
        assert p[20] == pytest.approx(0.5, abs=1e-12)
        assert (np.diff(p) > 0).all() and 0 < p[0] < 0.5 < p[-1] < 1
        np.testing.assert_allclose(p + p[::-1], 1.0, atol=1e-12)  # a symmetric distribution
        expected = 1 - (stats.norm.cdf(0, locs, 0.02) if np.isinf(df) else stats.t.cdf(0, df, locs, 0.02))
        np.testing.assert_allclose(p, expected, rtol=1e-10)
    # A wider distribution is less sure of the same positive location.
    assert (
        prob_up(np.array([0.01]), np.array([0.05]), np.array([5.0]))[0]
        < prob_up(np.array([0.01]), np.array([0.01]), np.array([5.0]))[0]
    )
    result = _result(np.array([0.0, 0.01]), np.array([0.02, 0.02]), np.array([5.0, 5.0]), ["A", "B"])
    assert result.p_up[0] == pytest.approx(0.5) and result.p_up[1] > 0.5


# --- split conformal calibration -----------------------------------------------------------------


def test_calibration_is_per_ticker_with_a_pooled_fallback() -> None:
    rng = np.random.default_rng(1)
    n_big, n_small = MIN_TICKER_CALIBRATION + 20, MIN_TICKER_CALIBRATION - 1
    tickers = ["BIG"] * n_big + ["SMALL"] * n_small
    loc = rng.normal(0, 0.01, len(tickers))
    scale = rng.uniform(0.01, 0.02, len(tickers))
    z = np.concatenate([3.0 * rng.standard_normal(n_big), 0.5 * rng.standard_normal(n_small)])
    result = _result(loc, scale, np.full(len(tickers), 5.0), tickers)
    calibration = fit_calibration(result, loc + scale * z)

    assert set(calibration["scores"]) == {"BIG", POOLED}
    assert calibration["n"] == {"BIG": n_big, "SMALL": n_small}
    big, pooled = calibration_scores(calibration, "BIG"), calibration_scores(calibration, "SMALL")
    np.testing.assert_allclose(big, np.sort(np.abs(z[:n_big])), rtol=1e-5)
    np.testing.assert_allclose(pooled, np.sort(np.abs(z)), rtol=1e-5)
    np.testing.assert_array_equal(calibration_scores(calibration, "UNSEEN"), pooled)

    fresh = _result(np.zeros(3), np.full(3, 0.01), np.full(3, 5.0), ["BIG", "SMALL", "UNSEEN"])
    q = calibrated_quantiles(fresh, calibration)
    hw80_big = conformal_quantile(big, MISCOVERAGE[80])
    hw80_pooled = conformal_quantile(pooled, MISCOVERAGE[80])
    assert q[0, 3] == pytest.approx(0.01 * hw80_big, rel=1e-9)
    assert q[1, 3] == pytest.approx(0.01 * hw80_pooled, rel=1e-9)
    assert q[2, 3] == pytest.approx(q[1, 3])
    assert q[0, 3] > 1.2 * q[1, 3]  # the wild ticker gets its own, wider intervals
    # ACI's levels move one ticker's interval only.
    moved = calibrated_quantiles(fresh, calibration, {"BIG": (0.4, 0.05)})
    assert moved[0, 3] < q[0, 3] and moved[1, 3] == q[1, 3]


def _scalers() -> dict[str, Any]:
    return {"target": {"kind": "return", "method": "standard", "mean": 0.0005, "scale": 0.01}}


def _log_returns(windows: WindowSet) -> np.ndarray:
    target = _scalers()["target"]
    return windows.y.astype(np.float64) * target["scale"] + target["mean"]


def test_calibrated_intervals_cover_a_known_process_at_their_nominal_rate() -> None:
    """A Student-t(5) process whose scale is a known function of an input: train a tiny model,
    conformalize on a validation part, then count misses on fresh data from the same process."""
    windows, _ = volatility_process(11, n_rows=1300, n_series=2)
    train, validation = rows_between(windows, 0, 300), rows_between(windows, 300, 1300)
    params = TrainParams(model_type="lstm", hidden_size=8, dropout=0.0, learning_rate=1e-2, batch_size=32)
    model = train_model(train=train, validation=validation, params=params, epochs=2, patience=5, seed=0).model

    calibration = fit_calibration(forecast_windows(model, _scalers(), validation), _log_returns(validation))
    assert set(calibration["scores"]) == {"S0", "S1", POOLED}  # ~1,000 windows each: their own scores

    fresh, true_scale = volatility_process(12, n_rows=1000, n_series=2)
    result = forecast_windows(model, _scalers(), fresh)
    quantiles = calibrated_quantiles(result, calibration)
    actual = _log_returns(fresh)
    n = len(actual)
    for level, (low, high) in ((80, (1, 3)), (95, (0, 4))):
        covered = float(np.mean((quantiles[:, low] <= actual) & (actual <= quantiles[:, high])))
        bounds = binomial_bounds(n, level / 100, 0.01)
        assert bounds[0] <= covered <= bounds[1], f"{level}%: coverage {covered:.3f} outside {bounds}"
    # The intervals adapt: wide where the true scale is large, narrow where it is small.
    width = quantiles[:, 4] - quantiles[:, 0]
    assert np.corrcoef(width, true_scale)[0, 1] > 0.8


# --- baselines on the same rows --------------------------------------------------------------------------


def _baseline_bars() -> dict[str, Any]:
    from tests.bars_data import sample_frames

    return sample_frames(("GOOG", "MSFT"), start=date(2009, 1, 1), end=date(2013, 3, 1))


def test_candidate_quantiles_are_each_forecasters_rows_on_each_tickers_own_bars() -> None:
    from stockcli.config import load_settings
    from stockcli.ml.forecasters import TickerBars, build_table, candidate_quantiles, fit_all
    from stockcli.ml.intervals import QUANTILES

    bars = _baseline_bars()
    table = build_table(load_settings(None, environ={}))
    own = {t: TickerBars.from_frame(frame) for t, frame in bars.items()}
    fits: dict[str, dict[str, Any]] = {name: {} for name in table}
    for ticker, history in own.items():
        for name, params in fit_all(table, history.head(700)).items():
            fits[name][ticker] = params
    days = {t: [d.date() for d in frame.index] for t, frame in bars.items()}
    # GOOG's and MSFT's last session, GOOG on two earlier ones, MSFT before its rolling band exists.
    rows = [("GOOG", -1), ("MSFT", -1), ("GOOG", 800), ("GOOG", 500), ("MSFT", 10)]
    candidates = candidate_quantiles(table, fits, bars, [t for t, _ in rows], [days[t][i] for t, i in rows])
    found = {name: got.quantiles for name, got in candidates.items()}
    p_up = {name: got.p_up for name, got in candidates.items()}
    for i, (ticker, position) in enumerate(rows):
        row = np.array([position % len(own[ticker])])
        for name, forecaster in table.items():
            expected = forecaster.quantiles_at(fits[name][ticker], own[ticker], row, QUANTILES)[0]
            np.testing.assert_allclose(found[name][i], expected, rtol=1e-12, atol=0)
    assert np.isnan(found["rolling"][4]).all() and np.isfinite(found["rolling"][:4]).all()
    assert (
        np.isfinite(p_up["har_range"][:4]).all()
        and ((p_up["garch"][:4] > 0.3) & (p_up["garch"][:4] < 0.7)).all()
    )


def test_a_ticker_without_parameters_is_fitted_only_when_asked_and_only_on_its_past() -> None:
    """An evaluation (promote, train) fits a ticker without stored parameters on its bars before its
    first requested date; the daily forecast (`fit_missing=False`) never fits: NaN rows, the rolling
    band (which needs no fit) still there."""
    from stockcli.config import load_settings
    from stockcli.ml.forecasters import TickerBars, build_table, candidate_quantiles, fit_all
    from stockcli.ml.intervals import QUANTILES

    bars = _baseline_bars()
    table = build_table(load_settings(None, environ={}))
    goog = fit_all(table, TickerBars.from_frame(bars["GOOG"]).head(700))
    stored = {name: {"GOOG": params} for name, params in goog.items()}  # MSFT: none (never seen)
    first, last = bars["MSFT"].index[600].date(), bars["MSFT"].index[-1].date()
    tickers, base_dates = ["GOOG", "MSFT", "MSFT"], [last, first, last]

    fitted = {
        name: got.quantiles
        for name, got in candidate_quantiles(
            table, stored, bars, tickers, base_dates, fit_missing=True
        ).items()
    }
    assert all(np.isfinite(values).all() for values in fitted.values())
    # MSFT's fit saw its bars up to its first requested date only.
    expected = fit_all(table, TickerBars.from_frame(bars["MSFT"]).head(601))
    msft = TickerBars.from_frame(bars["MSFT"])
    row = np.array([len(msft) - 1])
    np.testing.assert_allclose(
        fitted["har_range"][2],
        table["har_range"].quantiles_at(expected["har_range"], msft, row, QUANTILES)[0],
        rtol=1e-12,
        atol=0,
    )
    served = {
        name: got.quantiles
        for name, got in candidate_quantiles(
            table, stored, bars, tickers, base_dates, fit_missing=False
        ).items()
    }
    np.testing.assert_allclose(served["garch"][0], fitted["garch"][0], rtol=1e-12, atol=0)
    assert np.isnan(served["garch"][1:]).all() and np.isnan(served["har_range"][1:]).all()
    np.testing.assert_allclose(served["rolling"], fitted["rolling"], rtol=1e-12, atol=0)
