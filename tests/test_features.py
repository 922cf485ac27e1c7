"""Indicators: equal to ta (tests/ta_oracles.py), causal, warm-up dropped (placeholders included),
degenerate inputs finite; scale-free model features by column kind; the bounded lookback the
forecasting primitive reads; many tickers at once equal to one at a time."""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest
import ta

from stockcli.config import DEFAULT_INDICATORS
from stockcli.errors import ConfigError, InputDataError
from stockcli.features import indicators as ind
from stockcli.features import kernels
from stockcli.features.indicators import OHLCV, SERVING_LOOKBACK, feature_names
from tests import ta_oracles as oracle
from tests.bars_data import SAMPLE_TICKERS, sample_frame, synthetic_frame, weekdays
from tests.ta_oracles import warmup_sessions

# Every indicator of the registry, with the parameters the previous release used by default (EMA 200:
# warm-up 199 bars). Tests of indicator arithmetic use this fixed list, so they do not move when the
# defaults (DEFAULT_INDICATORS) change; the rules about the defaults use DEFAULT_INDICATORS itself.
EVERY_INDICATOR: list[dict[str, Any]] = [
    {"name": "ema", "window": 50},
    {"name": "ema", "window": 200},
    {"name": "rsi", "window": 14},
    {"name": "macd", "window_slow": 26, "window_fast": 12, "window_sign": 9},
    {"name": "bollinger", "window": 15, "window_dev": 2},
    {"name": "atr", "window": 14},
    {"name": "obv"},
    {"name": "mfi", "window": 14},
    {"name": "adx", "window": 14},
    {"name": "sma", "window": 50},
    {"name": "vwap", "window": 14},
    {"name": "psar", "step": 0.02, "max_step": 0.2},
    {"name": "stoch", "window": 14, "smooth_window": 3},
    {"name": "cci", "window": 20},
    {"name": "williams_r", "lbp": 14},
    {"name": "donchian", "window": 20},
    {"name": "keltner", "window": 20, "window_atr": 10},
    {"name": "log_return"},
    {"name": "roc", "window": 12},
    {"name": "volume_sma", "window": 20},
    {"name": "cmf", "window": 20},
    {"name": "force_index", "window": 13},
    {"name": "realized_vol", "window": 20},
    {"name": "ewm_vol", "decay": 0.94},
    {"name": "parkinson", "window": 5},
    {"name": "garman_klass", "window": 22},
    {"name": "overnight_gap", "window": 1},
]


def test_every_registered_indicator_is_tested() -> None:
    assert {entry["name"] for entry in EVERY_INDICATOR} == set(ind.INDICATORS) == set(oracle.TA_COMPUTE)


def _bars(frame: pd.DataFrame) -> list[np.ndarray]:
    return [frame[c].to_numpy(dtype=np.float64) for c in OHLCV]


def compute_features(frame: pd.DataFrame, indicators: list[dict[str, Any]]) -> pd.DataFrame:
    """Production's raw features (OHLCV, then the indicator columns, not yet scale-free) of one
    ticker's bars, its indicator warm-up rows dropped."""
    resolved = ind.resolve_indicators(indicators)
    warmup = warmup_sessions(indicators)
    bars = ind.Bars(*(values[None, :] for values in _bars(frame)))
    raw = np.stack([column[0] for column in ind.feature_columns(bars, resolved)], axis=1)
    return pd.DataFrame(raw[warmup:], index=frame.index[warmup:], columns=feature_names(resolved))


def many_model_features(
    series: list[list[np.ndarray]], indicators: list[dict[str, Any]], block_cells: int = ind.MANY_BLOCK_CELLS
) -> list[np.ndarray]:
    """Production's model features of many tickers at once, one (bars, features) array each."""
    n_features = len(feature_names(indicators))
    out = [np.full((len(bars[0]), n_features), np.nan) for bars in series]
    for k, values in ind.iter_model_features(series, indicators, block_cells=block_cells):
        out[k] = values
    return out


def model_features(*bars_then_indicators: Any) -> np.ndarray:
    """Production's model features of one ticker's bars (open, high, low, close, volume, indicators)."""
    *bars, indicators = bars_then_indicators
    return many_model_features([bars], indicators)[0]


def _series(frame: pd.DataFrame) -> tuple[pd.Series, ...]:
    # ta gets RangeIndex series (see the indicators module docstring about PSAR and pandas 3).
    return tuple(pd.Series(frame[c].to_numpy(dtype=float)) for c in ("high", "low", "close", "volume"))


def _frames() -> list[pd.DataFrame]:
    # Real bars through calm and wild markets (2000-2002, 2008), and two synthetic walks; short
    # enough that ta's own slow PSAR stays cheap.
    days = weekdays(date(2000, 1, 3), 400)
    return [
        sample_frame("MSFT", end=date(2001, 6, 30)),
        sample_frame("GOOG", end=date(2006, 1, 31)),
        sample_frame("^GSPC", start=date(2008, 6, 1), end=date(2009, 6, 30)),
        synthetic_frame(days, seed=3),
        synthetic_frame(days, seed=4, price=5.0),
    ]


FAST = {
    "psar": (
        lambda h, lo, c, v: kernels.psar(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 0.02, 0.2),
        lambda h, lo, c, v: ta.trend.PSARIndicator(h, lo, c, step=0.02, max_step=0.2).psar(),
    ),
    "psar_fast_steps": (
        lambda h, lo, c, v: kernels.psar(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 0.05, 0.3),
        lambda h, lo, c, v: ta.trend.PSARIndicator(h, lo, c, step=0.05, max_step=0.3).psar(),
    ),
    "atr": (
        lambda h, lo, c, v: oracle.atr(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14),
        lambda h, lo, c, v: ta.volatility.AverageTrueRange(h, lo, c, 14).average_true_range(),
    ),
    "adx": (
        lambda h, lo, c, v: oracle.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14)[0],
        lambda h, lo, c, v: ta.trend.ADXIndicator(h, lo, c, 14).adx(),
    ),
    "adx_pos": (
        lambda h, lo, c, v: oracle.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14)[1],
        lambda h, lo, c, v: ta.trend.ADXIndicator(h, lo, c, 14).adx_pos(),
    ),
    "adx_neg": (
        lambda h, lo, c, v: oracle.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14)[2],
        lambda h, lo, c, v: ta.trend.ADXIndicator(h, lo, c, 14).adx_neg(),
    ),
    "mfi": (
        lambda h, lo, c, v: kernels.mfi(h.to_numpy(), lo.to_numpy(), c.to_numpy(), v.to_numpy(), 14),
        lambda h, lo, c, v: ta.volume.MFIIndicator(h, lo, c, v, 14).money_flow_index(),
    ),
    "cci": (
        lambda h, lo, c, v: kernels.cci(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 20, 0.015),
        lambda h, lo, c, v: ta.trend.CCIIndicator(h, lo, c, 20, 0.015).cci(),
    ),
}


@pytest.mark.parametrize("name", sorted(FAST))
def test_fast_indicators_equal_ta(name: str) -> None:
    mine_fn, ta_fn = FAST[name]
    for frame in _frames():
        h, lo, c, v = _series(frame)
        mine = np.asarray(mine_fn(h, lo, c, v), dtype=float)
        reference = np.asarray(ta_fn(h, lo, c, v), dtype=float)
        assert mine.shape == reference.shape
        assert np.array_equal(np.isnan(mine), np.isnan(reference))
        if name.startswith(("psar", "atr", "adx", "mfi")):
            # Same arithmetic in the same order: bit for bit.
            np.testing.assert_array_equal(mine, reference)
        else:
            np.testing.assert_allclose(mine, reference, rtol=1e-9, atol=1e-9)


def test_psar_matches_ta_through_many_reversals() -> None:
    rng = np.random.default_rng(11)
    for trial in range(12):
        n = 200
        close = 50 + np.cumsum(rng.normal(0, 1.5 if trial % 2 else 0.3, n))
        high = close + rng.uniform(0, 1, n)
        low = close - rng.uniform(0, 1, n)
        reference = (
            ta.trend.PSARIndicator(pd.Series(high), pd.Series(low), pd.Series(close)).psar().to_numpy()
        )
        np.testing.assert_array_equal(kernels.psar(high, low, close), reference)


def test_compute_features_values_equal_ta_and_drop_warmup() -> None:
    frame = sample_frame("MSFT", end=date(2004, 12, 31))
    features = compute_features(frame, EVERY_INDICATOR)
    warmup = warmup_sessions(EVERY_INDICATOR)
    assert warmup == 199  # EMA 200
    assert list(features.columns) == feature_names(EVERY_INDICATOR)
    assert features.index[0] == frame.index[warmup]
    assert len(features) == len(frame) - warmup
    assert np.isfinite(features.to_numpy()).all()
    h, lo, c, v = _series(frame)
    tail = slice(warmup, None)
    expected = {
        "ema_200": ta.trend.EMAIndicator(c, 200).ema_indicator(),
        "rsi_14": ta.momentum.RSIIndicator(c, 14).rsi(),
        "macd_12_26": ta.trend.MACD(c, 26, 12, 9).macd(),
        "bb_low_15_2": ta.volatility.BollingerBands(c, 15, 2).bollinger_lband(),
        "vwap_14": ta.volume.VolumeWeightedAveragePrice(h, lo, c, v, 14).volume_weighted_average_price(),
        "stoch_d_14_3": ta.momentum.StochasticOscillator(h, lo, c, 14, 3).stoch_signal(),
        "keltner_high_20": ta.volatility.KeltnerChannel(h, lo, c, 20, 10).keltner_channel_hband(),
        "log_return": ta.others.DailyLogReturnIndicator(c).daily_log_return(),
        "force_index_13": ta.volume.ForceIndexIndicator(c, v, 13).force_index(),
        "psar_0.02_0.2": ta.trend.PSARIndicator(h, lo, c, 0.02, 0.2).psar(),
        "adx_neg_14": ta.trend.ADXIndicator(h, lo, c, 14).adx_neg(),
    }
    for column, reference in expected.items():
        np.testing.assert_allclose(
            features[column].to_numpy(), reference.to_numpy()[tail], rtol=1e-12, err_msg=column
        )


def test_keltner_atr_version_equals_ta() -> None:
    frame = sample_frame("GOOG", end=date(2006, 1, 1))
    spec = [{"name": "keltner", "window": 20, "window_atr": 10, "original_version": False}]
    features = compute_features(frame, spec)
    h, lo, c, _ = _series(frame)
    channel = ta.volatility.KeltnerChannel(h, lo, c, 20, 10, original_version=False)
    warmup = warmup_sessions(spec)
    np.testing.assert_allclose(
        features["keltner_high_20_10"], channel.keltner_channel_hband()[warmup:], rtol=1e-12
    )
    np.testing.assert_allclose(
        features["keltner_low_20_10"], channel.keltner_channel_lband()[warmup:], rtol=1e-12
    )


def test_features_are_causal_prefix_stable() -> None:
    """A value dated t uses only bars up to t: features of a prefix equal the full run's rows."""
    frame = sample_frame("GOOG", end=date(2007, 6, 30))
    full = compute_features(frame, EVERY_INDICATOR)
    for cut in (260, 333, 500, len(frame) - 1):
        prefix = compute_features(frame.iloc[:cut], EVERY_INDICATOR)
        pd.testing.assert_frame_equal(prefix, full.loc[: prefix.index[-1]], check_exact=True)
    # And changing every bar after t leaves every feature up to t untouched.
    t = frame.index[400]
    changed = frame.copy()
    later = changed.index > t
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.7
    changed.loc[later, "volume"] = changed.loc[later, "volume"] * 3 + 7
    after = compute_features(changed, EVERY_INDICATOR)
    pd.testing.assert_frame_equal(after.loc[:t], full.loc[:t], check_exact=True)
    assert not np.allclose(after.loc[t:].iloc[1:].to_numpy(), full.loc[t:].iloc[1:].to_numpy())


@pytest.mark.parametrize(
    ("spec", "placeholder_rows"),
    [
        ({"name": "adx", "window": 14}, 27),  # ta emits 0 for rows 0..26
        ({"name": "atr", "window": 14}, 13),  # ta emits 0 for rows 0..12
        ({"name": "psar"}, 2),  # ta repeats the close in rows 0..1
        ({"name": "keltner", "window": 20}, 19),  # ta averages fewer than 20 bars there
    ],
)
def test_zero_and_partial_placeholders_count_as_warmup(spec: dict, placeholder_rows: int) -> None:
    frame = sample_frame("MSFT", end=date(2000, 12, 31))
    raw = oracle.compute_feature_array(*(frame[c].to_numpy() for c in OHLCV), [spec])
    warmup = warmup_sessions([spec])
    assert warmup >= placeholder_rows
    if spec["name"] in ("adx", "atr"):
        assert (raw[:placeholder_rows, len(OHLCV)] == 0).all()  # the placeholders ta emits...
    features = compute_features(frame, [spec])
    assert features.index[0] == frame.index[warmup]  # ...never reach the features
    indicator = features.iloc[:, len(OHLCV) :].to_numpy()
    assert np.isfinite(indicator).all()
    if spec["name"] in ("adx", "atr"):
        assert (indicator[0] != 0).all()


def test_zero_volume_and_flat_prices_give_finite_neutral_values() -> None:
    days = weekdays(date(2010, 1, 4), 400)
    index_like = synthetic_frame(days, seed=5, zero_volume=True)  # an index with volume 0
    features = compute_features(index_like, EVERY_INDICATOR)
    assert np.isfinite(features.to_numpy()).all()
    assert (features["mfi_14"] == 50).all()
    assert (features["cmf_20"] == 0).all()
    assert (features["obv"] == 0).all()
    typical = (features["high"] + features["low"] + features["close"]) / 3
    np.testing.assert_allclose(features["vwap_14"], typical)

    flat = index_like.copy()
    flat[["open", "high", "low", "close"]] = 42.0
    flat["volume"] = 1000
    flat_features = compute_features(flat, EVERY_INDICATOR)
    assert np.isfinite(flat_features.to_numpy()).all()
    assert (flat_features["stoch_k_14"] == 50).all()
    assert (flat_features["williams_r_14"] == -50).all()
    assert (flat_features["cci_20"] == 0).all()
    assert (flat_features["log_return"] == 0).all()


def test_unknown_indicator_or_parameter_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Unknown indicator 'ichimoku'") as unknown:
        ind.resolve_indicators([{"name": "ichimoku"}])
    assert unknown.value.exit_code == 2
    assert "ema" in (unknown.value.hint or "")
    with pytest.raises(ConfigError, match="parameter `windw` for indicator `rsi`"):
        ind.resolve_indicators([{"name": "rsi", "windw": 14}])
    with pytest.raises(ConfigError, match=r"`window`.*whole number"):
        ind.resolve_indicators([{"name": "ema", "window": 0}])
    with pytest.raises(ConfigError, match=r"`step`.*positive number"):
        ind.resolve_indicators([{"name": "psar", "step": "fast"}])
    with pytest.raises(ConfigError, match="`ema_50`"):
        ind.resolve_indicators([{"name": "ema", "window": 50}, {"name": "ema", "window": 50}])
    with pytest.raises(ConfigError):
        compute_features(sample_frame("MSFT", end=date(1999, 6, 1)), [{"name": "nope"}])


def test_defaults_are_filled_in_and_listed() -> None:
    resolved = ind.canonical_indicators([{"name": "macd"}, {"name": "bollinger", "window": 15}])
    assert resolved[0] == {"name": "macd", "window_slow": 26, "window_fast": 12, "window_sign": 9}
    assert resolved[1] == {"name": "bollinger", "window": 15, "window_dev": 2.0}
    names = {entry["name"] for entry in DEFAULT_INDICATORS}
    assert names <= set(ind.INDICATORS)


def test_too_short_history_gives_an_empty_frame() -> None:
    frame = sample_frame("MSFT", end=date(1999, 6, 1))
    assert len(frame) < warmup_sessions(EVERY_INDICATOR)
    features = compute_features(frame, EVERY_INDICATOR)
    assert features.empty
    assert list(features.columns) == feature_names(EVERY_INDICATOR)


# --- the volatility indicators --------------------------------------------------------------------------


def test_realized_vol_is_the_log_std_of_the_last_window_returns() -> None:
    close = np.array([100.0, 101.0, 99.0, 102.0, 102.0, 98.0, 103.0])
    values = kernels.realized_vol_many(close[None, :], window=3)[0]
    returns = np.log(close[1:] / close[:-1])
    assert np.isnan(values[:3]).all()  # the first value needs 3 returns, i.e. 4 closes
    for t in range(3, len(close)):
        expected = np.log(np.std(returns[t - 3 : t], ddof=1) + 1e-8)  # returns r_(t-2), r_(t-1), r_t
        assert values[t] == pytest.approx(expected, rel=1e-12)
    # A flat price: log of the 1e-8 floor, finite.
    assert kernels.realized_vol_many(np.full((1, 10), 5.0), window=3)[0, 5] == pytest.approx(np.log(1e-8))


def test_ewm_vol_follows_the_riskmetrics_recursion() -> None:
    rng = np.random.default_rng(5)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, 40)))
    returns = np.log(close[1:] / close[:-1])  # returns[k] is r_(k+1)
    values = kernels.ewm_vol_many(close[None, :], decay=0.9, seed_window=5)[0]
    assert np.isnan(values[:5]).all()
    variance = float(np.mean(returns[:5] ** 2))  # r_1..r_5, dated t = 5
    assert values[5] == pytest.approx(np.log(np.sqrt(variance) + 1e-8), rel=1e-12)
    for t in range(6, 40):
        variance = 0.9 * variance + 0.1 * returns[t - 1] ** 2
        assert values[t] == pytest.approx(np.log(np.sqrt(variance) + 1e-8), rel=1e-12)
    with pytest.raises(ConfigError, match="between 0 and 1"):
        ind.resolve_indicators([{"name": "ewm_vol", "decay": 1.5}])


def test_volatility_indicators_through_the_registry() -> None:
    frame = sample_frame("MSFT", end=date(2001, 12, 31))
    spec = [{"name": "realized_vol", "window": 10}, {"name": "ewm_vol"}]
    assert feature_names(spec)[len(OHLCV) :] == ["realized_vol_10", "ewm_vol_0.94"]
    assert warmup_sessions(spec) == 20
    features = compute_features(frame, spec)
    close = frame["close"].to_numpy()
    np.testing.assert_array_equal(features["realized_vol_10"], oracle.realized_vol(close, 10)[20:])
    np.testing.assert_array_equal(features["ewm_vol_0.94"], oracle.ewm_vol(close, 0.94)[20:])


# --- the range-based variances and the overnight gap -------------------------------------------------

RANGE_INDICATORS: list[dict[str, Any]] = [
    {"name": name, "window": window}
    for name in ("parkinson", "garman_klass", "overnight_gap")
    for window in (1, 5, 22)
]


def test_range_features_by_hand_on_three_bars() -> None:
    """Three bars whose variances and gaps are written out by hand."""
    frame = pd.DataFrame(
        {
            "open": [10.0, 10.5, 9.8],
            "high": [10.4, 11.0, 10.1],
            "low": [9.9, 10.2, 9.5],
            "close": [10.2, 10.9, 9.6],
            "volume": [1e6, 1e6, 1e6],
        },
        index=pd.date_range("2010-01-04", periods=3, freq="B"),
    )
    spec = [
        {"name": "parkinson"},
        {"name": "garman_klass", "window": 2},
        {"name": "overnight_gap", "window": 2},
    ]
    features = compute_features(frame, spec)  # warm-up 2: the row of bar 2 only
    ln2 = np.log(2.0)
    gap1, gap2 = np.log(10.5 / 10.2), np.log(9.8 / 10.9)
    parkinson2 = gap2**2 + np.log(10.1 / 9.5) ** 2 / (4 * ln2)
    gk1 = gap1**2 + 0.5 * np.log(11.0 / 10.2) ** 2 - (2 * ln2 - 1) * np.log(10.9 / 10.5) ** 2
    gk2 = gap2**2 + 0.5 * np.log(10.1 / 9.5) ** 2 - (2 * ln2 - 1) * np.log(9.6 / 9.8) ** 2
    assert features["parkinson_1"].iloc[0] == pytest.approx(np.log(parkinson2), rel=1e-12)
    assert features["garman_klass_2"].iloc[0] == pytest.approx(np.log((gk1 + gk2) / 2), rel=1e-12)
    assert features["overnight_gap_2"].iloc[0] == pytest.approx((gap1 + gap2) / 2, rel=1e-12)
    assert warmup_sessions(spec) == 2


@pytest.mark.parametrize("entry", RANGE_INDICATORS, ids=lambda e: f"{e['name']}_{e['window']}")
def test_range_features_equal_their_formulas_bar_by_bar(entry: dict[str, Any]) -> None:
    """Against the oracle's plain-Python loop over the textbook formulas, on real bars (an index, whose
    old bars open at the previous close, and stocks through calm and wild markets)."""
    spec = [entry]
    warmup = warmup_sessions(spec)
    assert warmup == entry["window"]  # the first variance needs the previous close
    for frame in _frames()[:3]:
        features = compute_features(frame, spec)
        reference = oracle.compute_feature_array(*_bars(frame), spec)[warmup:, len(OHLCV)]
        assert np.isfinite(features.to_numpy()).all()
        np.testing.assert_allclose(features.iloc[:, len(OHLCV)], reference, rtol=1e-11, atol=1e-14)


def test_range_features_are_causal() -> None:
    """Changing every bar after t (its open, high and low too) leaves every range feature up to t as it was."""
    frame = sample_frame("GOOG", end=date(2008, 12, 31))
    full = model_features(*_bars(frame), RANGE_INDICATORS)
    t = 600
    changed = frame.copy()
    changed.iloc[t + 1 :, 0] *= 1.05  # the overnight gaps after t
    changed.iloc[t + 1 :, 1] *= 1.02  # wider ranges
    changed.iloc[t + 1 :, 2] *= 0.97
    after = model_features(*_bars(changed), RANGE_INDICATORS)
    np.testing.assert_array_equal(after[: t + 1], full[: t + 1])
    own = slice(len(OHLCV), None)
    assert not np.isclose(after[t + 1 :, own], full[t + 1 :, own]).all(axis=0).any()  # every column moved


def test_range_features_are_not_in_the_defaults() -> None:
    # The network gets them once a validation run says they help (the lead's call, issue 17).
    assert {"parkinson", "garman_klass", "overnight_gap"}.isdisjoint(e["name"] for e in DEFAULT_INDICATORS)


# --- scale-free model features ----------------------------------------------------------------------------


def test_column_kinds_of_every_indicator() -> None:
    names = feature_names(EVERY_INDICATOR)
    kinds = dict(zip(names, ind.column_kinds(EVERY_INDICATOR), strict=True))
    assert len(kinds) == len(names) == 38
    assert set(kinds.values()) <= set(ind.SCALE_KINDS)
    expected = {
        "open": "price",
        "high": "price",
        "low": "price",
        "close": "return",
        "volume": "volume",
        "ema_200": "price",
        "sma_50": "price",
        "bb_high_15_2": "price",
        "vwap_14": "price",
        "psar_0.02_0.2": "price",
        "donchian_low_20": "price",
        "keltner_high_20": "price",
        "macd_12_26": "price_delta",
        "atr_14": "price_delta",
        "obv": "flow",
        "volume_sma_20": "volume",
        "force_index_13": "price_volume",
        "rsi_14": "level",
        "adx_14": "level",
        "stoch_k_14": "level",
        "cci_20": "level",
        "williams_r_14": "level",
        "log_return": "level",
        "roc_12": "level",
        "cmf_20": "level",
        "mfi_14": "level",
    }
    assert {name: kinds[name] for name in expected} == expected
    assert (kinds["realized_vol_20"], kinds["ewm_vol_0.94"]) == ("level", "level")
    # The range-based variances (logs) and the overnight gap are already scale-free.
    assert {kinds["parkinson_5"], kinds["garman_klass_22"], kinds["overnight_gap_1"]} == {"level"}
    assert set(ind.column_kinds(DEFAULT_INDICATORS)) <= set(ind.SCALE_KINDS)


@pytest.mark.parametrize(
    ("indicators", "warmup"),
    [
        (EVERY_INDICATOR, 199),  # EMA 200
        ([{"name": "rsi", "window": 3}], 19),  # the 20-bar volume base
        ([{"name": "obv"}], 20),  # a flow differences the volume base over 20 more bars
        ([{"name": "ema", "window": 300}], 299),
        ([], 19),
    ],
)
def test_model_warmup(indicators: list[dict[str, Any]], warmup: int) -> None:
    assert ind.model_warmup(indicators) == warmup


def _hand_raw() -> tuple[np.ndarray, list[str]]:
    """22 bars: close 10, 11, ..., 31; volume 100 except 2,100 on bar 20; one column per kind."""
    n = 22
    close = 10.0 + np.arange(n)
    volume = np.full(n, 100.0)
    volume[20] = 2100.0
    raw = np.column_stack(
        [
            close / 2,  # open: price
            close * 2,  # high: price
            close,  # low: price
            close,  # close: return
            volume,  # volume: volume
            np.full(n, 3.0),  # price_delta
            np.full(n, 42.0),  # level
            50.0 * np.arange(n),  # flow (a cumulative count growing 50 a bar)
            np.full(n, 7.0),  # price_volume
        ]
    )
    return raw, [
        "price",
        "price",
        "price",
        "return",
        "volume",
        "price_delta",
        "level",
        "flow",
        "price_volume",
    ]


def test_scale_free_transform_of_each_kind_by_hand() -> None:
    raw, kinds = _hand_raw()
    out = oracle.scale_free(raw, kinds)
    # price: log(value / close)
    np.testing.assert_allclose(out[:, 0], np.log(0.5), rtol=1e-15)
    np.testing.assert_allclose(out[:, 1], np.log(2.0), rtol=1e-15)
    np.testing.assert_allclose(out[:, 2], 0.0, atol=0)
    # return: log(close_t / close_(t-1)); nothing before the first bar
    assert np.isnan(out[0, 3])
    assert out[1, 3] == pytest.approx(np.log(11 / 10))
    assert out[21, 3] == pytest.approx(np.log(31 / 30))
    # volume: log(1 + v / mean of the last 20 volumes); NaN until 20 bars exist
    assert np.isnan(out[:19, 4]).all()
    assert out[19, 4] == pytest.approx(np.log(2.0))  # base 100, volume 100
    assert out[20, 4] == pytest.approx(np.log1p(2100 / 200))  # base (19 x 100 + 2,100) / 20 = 200
    assert out[21, 4] == pytest.approx(np.log1p(100 / 200))
    # price_delta: value / close
    assert out[2, 5] == pytest.approx(3 / 12)
    assert out[21, 5] == pytest.approx(3 / 31)
    # level: as is
    assert (out[:, 6] == 42.0).all()
    # flow: change over 20 bars / (20 x volume base); NaN until it has 21 bars
    assert np.isnan(out[:20, 7]).all()
    assert out[20, 7] == pytest.approx(1000 / 4000)
    assert out[21, 7] == pytest.approx(1000 / 4000)
    # price_volume: value / (close x volume base)
    assert np.isnan(out[:19, 8]).all()
    assert out[19, 8] == pytest.approx(7 / (29 * 100))
    assert out[20, 8] == pytest.approx(7 / (30 * 200))


def test_scale_free_rows_use_only_earlier_bars() -> None:
    raw, kinds = _hand_raw()
    full = oracle.scale_free(raw, kinds)
    changed = raw.copy()
    changed[15:] *= 3.0
    after = oracle.scale_free(changed, kinds)
    np.testing.assert_array_equal(after[:15], full[:15])
    assert not np.allclose(after[20:, 4], full[20:, 4])


def test_model_features_drop_warmup_and_are_finite_after_it() -> None:
    frame = sample_frame("GOOG", end=date(2007, 6, 30))
    values = model_features(*_bars(frame), EVERY_INDICATOR)
    warmup = ind.model_warmup(EVERY_INDICATOR)
    assert values.shape == (len(frame), 38)
    assert np.isnan(values[:warmup]).all()  # dropped rows stay NaN: never back-filled
    assert np.isfinite(values[warmup:]).all()
    # Same columns as compute_features, made scale-free: e.g. the EMA 200 as log(ema / close).
    raw = compute_features(frame, EVERY_INDICATOR)
    names = feature_names(EVERY_INDICATOR)
    j = names.index("ema_200")
    np.testing.assert_allclose(
        values[warmup:, j], np.log(raw["ema_200"] / raw["close"]).to_numpy(), rtol=1e-12
    )
    rsi = names.index("rsi_14")
    np.testing.assert_array_equal(values[warmup:, rsi], raw["rsi_14"].to_numpy())
    short = model_features(*_bars(frame.iloc[:warmup]), EVERY_INDICATOR)
    assert np.isnan(short).all()


def test_model_features_are_causal() -> None:
    frame = sample_frame("MSFT", end=date(2003, 12, 31))
    full = model_features(*_bars(frame), EVERY_INDICATOR)
    for cut in (230, 411, len(frame) - 1):
        prefix = model_features(*_bars(frame.iloc[:cut]), EVERY_INDICATOR)
        np.testing.assert_array_equal(prefix, full[:cut])
    t = 500
    changed = frame.copy()
    changed.iloc[t + 1 :, :4] *= 1.3
    changed.iloc[t + 1 :, 4] = changed.iloc[t + 1 :, 4] * 2 + 5
    after = model_features(*_bars(changed), EVERY_INDICATOR)
    np.testing.assert_array_equal(after[: t + 1], full[: t + 1])
    assert not np.allclose(after[t + 1 :], full[t + 1 :])


def test_every_default_model_feature_varies_on_real_bars() -> None:
    """A model feature that is constant on real bars carries nothing (and costs a column)."""
    frame = sample_frame("MSFT", end=date(2004, 12, 31))
    values = model_features(*_bars(frame), DEFAULT_INDICATORS)[ind.model_warmup(DEFAULT_INDICATORS) :]
    spread = values.std(axis=0)
    constant = [name for name, s in zip(feature_names(DEFAULT_INDICATORS), spread, strict=True) if s < 1e-9]
    assert constant == []


def test_zero_volume_index_has_finite_model_features() -> None:
    frame = synthetic_frame(weekdays(date(2010, 1, 4), 300), seed=5, zero_volume=True)
    values = model_features(*_bars(frame), EVERY_INDICATOR)
    warmup = ind.model_warmup(EVERY_INDICATOR)
    assert np.isfinite(values[warmup:]).all()
    names = feature_names(EVERY_INDICATOR)
    for name in ("volume", "obv", "volume_sma_20", "force_index_13"):
        assert (values[warmup:, names.index(name)] == 0).all(), name


# Every default indicator, and the two volatility indicators (not in the defaults, used as context).
SCALE_CASES = [*EVERY_INDICATOR, {"name": "realized_vol"}, {"name": "ewm_vol"}]


def _scaled(frame: pd.DataFrame, price: float, volume: float) -> pd.DataFrame:
    out = frame.copy().astype("float64")
    out[["open", "high", "low", "close"]] *= price
    out["volume"] *= volume
    return out


@pytest.fixture(scope="module")
def real_histories() -> list[pd.DataFrame]:
    return [sample_frame("GOOG"), sample_frame("MSFT")]


@pytest.mark.parametrize("indicator", SCALE_CASES, ids=[feature_names([c])[len(OHLCV)] for c in SCALE_CASES])
def test_model_features_do_not_depend_on_price_level_or_share_count(
    indicator: dict[str, Any], real_histories: list[pd.DataFrame]
) -> None:
    """A $20 stock and the same stock at $20,000 with 1/1000 the shares look alike to the network."""
    own = slice(len(OHLCV), None)
    for frame in real_histories:
        base = model_features(*_bars(frame), [indicator])[:, own]
        scaled = model_features(*_bars(_scaled(frame, 1024.0, 1 / 1024)), [indicator])[:, own]
        assert np.array_equal(np.isnan(base), np.isnan(scaled))
        np.testing.assert_allclose(scaled, base, rtol=1e-8, atol=1e-8, equal_nan=True)


def test_ohlcv_model_features_do_not_depend_on_price_level_or_share_count(
    real_histories: list[pd.DataFrame],
) -> None:
    for frame in real_histories:
        base = model_features(*_bars(frame), [])[:, : len(OHLCV)]
        scaled = model_features(*_bars(_scaled(frame, 1024.0, 1 / 1024)), [])[:, : len(OHLCV)]
        for j, name in enumerate(OHLCV):
            np.testing.assert_allclose(scaled[:, j], base[:, j], rtol=1e-8, atol=1e-8, err_msg=name)


# --- bounded lookback: the forecasting primitive reads SERVING_LOOKBACK bars, not the whole history ----

LOOKBACK_INDICATORS = list(DEFAULT_INDICATORS)


@pytest.fixture(scope="module")
def full_history_features() -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    out = {}
    for ticker in SAMPLE_TICKERS:
        frame = sample_frame(ticker)
        out[ticker] = (frame, model_features(*_bars(frame), LOOKBACK_INDICATORS))
    return out


def _lookback_error(
    full: dict[str, tuple[pd.DataFrame, np.ndarray]], lookback: int, step: int = 250
) -> tuple[float, str]:
    """The largest difference, over the given tickers and end dates `step` bars apart, between the
    last row computed from the last `lookback` bars and the same row from the whole history."""
    names = feature_names(LOOKBACK_INDICATORS)
    worst, where = 0.0, ""
    for ticker, (frame, values) in full.items():
        for end in range(lookback, len(frame) + 1, step):
            window = frame.iloc[end - lookback : end]
            last = model_features(*_bars(window), LOOKBACK_INDICATORS)[-1]
            error = np.abs(last - values[end - 1])
            if np.nanmax(error) > worst:
                j = int(np.nanargmax(error))
                worst, where = float(error[j]), f"{ticker} {frame.index[end - 1].date()} {names[j]}"
    return worst, where


def test_features_from_the_serving_lookback_equal_the_full_history(
    full_history_features: dict[str, tuple[pd.DataFrame, np.ndarray]],
) -> None:
    worst, where = _lookback_error(full_history_features, SERVING_LOOKBACK)
    assert worst < 1e-8, f"{SERVING_LOOKBACK} bars differ from the full history by {worst:.3g} ({where})"


def test_a_shorter_lookback_would_not_do(
    full_history_features: dict[str, tuple[pd.DataFrame, np.ndarray]],
) -> None:
    # 100 bars: past the model warm-up, so every value exists, but recursive indicators remember.
    assert ind.model_warmup(LOOKBACK_INDICATORS) < 100
    worst, _ = _lookback_error(full_history_features, 100, step=400)
    assert worst > 1e-6


def test_the_serving_lookback_also_covers_a_configured_long_ema() -> None:
    """An EMA 200 (the previous release's default, still in existing config files) is accepted by
    the config; served from SERVING_LOOKBACK bars it must still equal the trained-on features."""
    spec = [{"name": "ema", "window": 200}]
    lookback = ind.serving_lookback(spec)
    assert lookback > SERVING_LOOKBACK  # the lookback grows with the indicator's memory
    frame = sample_frame("GOOG")
    full = model_features(*_bars(frame), spec)
    worst = 0.0
    for end in range(lookback, len(frame) + 1, 300):
        last = model_features(*_bars(frame.iloc[end - lookback : end]), spec)[-1]
        worst = max(worst, float(np.nanmax(np.abs(last - full[end - 1]))))
    assert worst < 1e-8, f"ema_200 from {lookback} bars differs by {worst:.3g}"
    short = model_features(*_bars(frame.iloc[-SERVING_LOOKBACK:]), spec)[-1]
    assert np.nanmax(np.abs(short - full[-1])) > 1e-6  # 600 bars would not have done


# --- many tickers at once: the same numbers as one ticker at a time -------------------------------------

# Every indicator of the registry, plus the parameter variants with their own code paths.
MANY_INDICATORS: list[dict[str, Any]] = [
    *EVERY_INDICATOR,
    {"name": "keltner", "window": 15, "window_atr": 12, "original_version": False, "multiplier": 1.5},
    {"name": "psar", "step": 0.05, "max_step": 0.3},
    {"name": "realized_vol", "window": 5},
    *(entry for entry in RANGE_INDICATORS if entry not in EVERY_INDICATOR),
]


def _many_series() -> list[list[np.ndarray]]:
    """Real bars (calm and wild markets, all four sample tickers, over lengths from a few hundred to
    the whole sample) and synthetic ones (a $5 stock, an index without volume, short histories)."""
    days = weekdays(date(2000, 1, 3), 900)
    frames = [
        sample_frame("GOOG"),
        sample_frame("MSFT", end=date(2001, 6, 30)),
        sample_frame("^GSPC", start=date(2008, 6, 1), end=date(2009, 6, 30)),
        sample_frame("^IXIC", start=date(2011, 1, 1)),
        sample_frame("MSFT", start=date(2007, 1, 1), end=date(2009, 12, 31)),
        synthetic_frame(days, seed=3),
        synthetic_frame(days[:650], seed=4, price=5.0),
        synthetic_frame(days, seed=5, zero_volume=True),
        synthetic_frame(days[:300], seed=6),
        synthetic_frame(days[:250], seed=7),
        synthetic_frame(days[:250], seed=8),  # two series of one length
        synthetic_frame(days[:120], seed=9),
        synthetic_frame(days[:30], seed=10),  # within the warm-up: no usable row
    ]
    return [_bars(frame) for frame in frames]


def _assert_same_features(many: np.ndarray, one: np.ndarray) -> None:
    assert many.shape == one.shape
    np.testing.assert_array_equal(np.isnan(many), np.isnan(one))
    np.testing.assert_allclose(many, one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("spec", [MANY_INDICATORS, list(DEFAULT_INDICATORS)], ids=["every", "defaults"])
def test_many_tickers_at_once_equal_one_at_a_time(spec: list[dict[str, Any]]) -> None:
    """Rows of different lengths in one block: each ticker's own bars, nothing from its neighbours."""
    series = _many_series()
    many = many_model_features(series, spec)
    assert len(many) == len(series)
    for bars, values in zip(series, many, strict=True):
        _assert_same_features(values, oracle.compute_model_features(*bars, spec))
    assert np.isnan(many[-1]).all() and np.isfinite(many[0][ind.model_warmup(spec) :]).all()


@pytest.mark.parametrize("entry", MANY_INDICATORS, ids=lambda e: "-".join(f"{v}" for v in e.values()))
def test_each_indicator_many_at_once_equals_one_at_a_time(
    entry: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each indicator alone, its loops stepping through time with a vector of tickers (PSAR: or row
    by row), in one block or in blocks split by size: equal to the per-ticker computation (ta's numbers)."""
    series = _many_series()
    one = [oracle.compute_model_features(*bars, [entry]) for bars in series]
    for vector_from in (1, 10**9):
        monkeypatch.setattr(kernels, "PSAR_MIN_VECTOR_ROWS", vector_from)
        for block_cells in (ind.MANY_BLOCK_CELLS, 2_000):  # everything in one block; blocks of 1-3 rows
            many = many_model_features(series, [entry], block_cells=block_cells)
            for values, expected in zip(many, one, strict=True):
                _assert_same_features(values, expected)


def test_many_tickers_at_once_as_a_daily_forecast_sees_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seventy tickers over a serving lookback, most of one length, the rest younger: the vector
    loops and the row layouts of a real run (a reduction over a column-major array would sum in
    another order and differ in the last bits)."""
    rng = np.random.default_rng(5)
    days = weekdays(date(2001, 1, 1), 690)
    frames = [sample_frame(t).iloc[-690:] for t in SAMPLE_TICKERS]
    frames += [synthetic_frame(days, seed=100 + i, price=float(rng.uniform(5, 500))) for i in range(50)]
    frames += [synthetic_frame(days[: int(rng.integers(60, 690))], seed=200 + i) for i in range(16)]
    series = [_bars(frame) for frame in frames]
    monkeypatch.setattr(kernels, "PSAR_MIN_VECTOR_ROWS", 16)
    for spec in (MANY_INDICATORS, list(DEFAULT_INDICATORS)):
        many = many_model_features(series, spec)
        for bars, values in zip(series, many, strict=True):
            _assert_same_features(values, oracle.compute_model_features(*bars, spec))


def test_many_at_once_refuses_non_finite_bars() -> None:
    series = _many_series()[:3]
    series[1][3] = series[1][3].copy()
    series[1][3][40] = np.nan
    with pytest.raises(InputDataError, match="missing or infinite"):
        many_model_features(series, DEFAULT_INDICATORS)
