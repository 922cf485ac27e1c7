"""Indicators: equal to ta, causal, warm-up dropped (placeholders included), degenerate inputs finite."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest
import ta

from stockcli.config import DEFAULT_INDICATORS
from stockcli.errors import ConfigError, InputDataError
from stockcli.features import indicators as ind
from stockcli.features.indicators import OHLCV, compute_features, feature_names, warmup_sessions
from tests.bars_data import sample_frame, synthetic_frame, weekdays


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
        lambda h, lo, c, v: ind.psar(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 0.02, 0.2),
        lambda h, lo, c, v: ta.trend.PSARIndicator(h, lo, c, step=0.02, max_step=0.2).psar(),
    ),
    "psar_fast_steps": (
        lambda h, lo, c, v: ind.psar(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 0.05, 0.3),
        lambda h, lo, c, v: ta.trend.PSARIndicator(h, lo, c, step=0.05, max_step=0.3).psar(),
    ),
    "atr": (
        lambda h, lo, c, v: ind.atr(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14),
        lambda h, lo, c, v: ta.volatility.AverageTrueRange(h, lo, c, 14).average_true_range(),
    ),
    "adx": (
        lambda h, lo, c, v: ind.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14)[0],
        lambda h, lo, c, v: ta.trend.ADXIndicator(h, lo, c, 14).adx(),
    ),
    "adx_pos": (
        lambda h, lo, c, v: ind.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14)[1],
        lambda h, lo, c, v: ta.trend.ADXIndicator(h, lo, c, 14).adx_pos(),
    ),
    "adx_neg": (
        lambda h, lo, c, v: ind.adx(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 14)[2],
        lambda h, lo, c, v: ta.trend.ADXIndicator(h, lo, c, 14).adx_neg(),
    ),
    "mfi": (
        lambda h, lo, c, v: ind.mfi(h.to_numpy(), lo.to_numpy(), c.to_numpy(), v.to_numpy(), 14),
        lambda h, lo, c, v: ta.volume.MFIIndicator(h, lo, c, v, 14).money_flow_index(),
    ),
    "cci": (
        lambda h, lo, c, v: ind.cci(h.to_numpy(), lo.to_numpy(), c.to_numpy(), 20, 0.015),
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
        np.testing.assert_array_equal(ind.psar(high, low, close), reference)


def test_compute_features_values_equal_ta_and_drop_warmup() -> None:
    frame = sample_frame("MSFT", end=date(2004, 12, 31))
    features = compute_features(frame, DEFAULT_INDICATORS)
    warmup = warmup_sessions(DEFAULT_INDICATORS)
    assert warmup == 199  # EMA 200
    assert list(features.columns) == feature_names(DEFAULT_INDICATORS)
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
    full = compute_features(frame, DEFAULT_INDICATORS)
    for cut in (260, 333, 500, len(frame) - 1):
        prefix = compute_features(frame.iloc[:cut], DEFAULT_INDICATORS)
        pd.testing.assert_frame_equal(prefix, full.loc[: prefix.index[-1]], check_exact=True)
    # And changing every bar after t leaves every feature up to t untouched.
    t = frame.index[400]
    changed = frame.copy()
    later = changed.index > t
    changed.loc[later, ["open", "high", "low", "close"]] *= 1.7
    changed.loc[later, "volume"] = changed.loc[later, "volume"] * 3 + 7
    after = compute_features(changed, DEFAULT_INDICATORS)
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
    raw = ind.compute_feature_array(*(frame[c].to_numpy() for c in OHLCV), [spec])
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
    features = compute_features(index_like, DEFAULT_INDICATORS)
    assert np.isfinite(features.to_numpy()).all()
    assert (features["mfi_14"] == 50).all()
    assert (features["cmf_20"] == 0).all()
    assert (features["obv"] == 0).all()
    typical = (features["high"] + features["low"] + features["close"]) / 3
    np.testing.assert_allclose(features["vwap_14"], typical)

    flat = index_like.copy()
    flat[["open", "high", "low", "close"]] = 42.0
    flat["volume"] = 1000
    flat_features = compute_features(flat, DEFAULT_INDICATORS)
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


def test_non_finite_bars_are_refused() -> None:
    frame = sample_frame("MSFT", end=date(1999, 12, 31))
    frame.iloc[10, frame.columns.get_loc("close")] = np.nan
    with pytest.raises(InputDataError):
        compute_features(frame, DEFAULT_INDICATORS)


def test_too_short_history_gives_an_empty_frame() -> None:
    frame = sample_frame("MSFT", end=date(1999, 6, 1))
    assert len(frame) < warmup_sessions(DEFAULT_INDICATORS)
    features = compute_features(frame, DEFAULT_INDICATORS)
    assert features.empty
    assert list(features.columns) == feature_names(DEFAULT_INDICATORS)
