"""The `ta` library's indicators, one ticker at a time: the oracle the production kernels are held to.

Production computes every indicator for many tickers at once (`stockcli.features.indicators`, over
`stockcli.features.kernels`); this module gives the same columns per ticker the slow, obvious way:
ta itself where ta has the indicator, with the fast per-ticker loops of the kernels module only for
PSAR, ATR, ADX, MFI and CCI (ta's own are Python loops or `rolling().apply`, too slow to run over
every test series; `test_fast_indicators_equal_ta` holds those loops to ta bit for bit; the scalar
loops of ATR, ADX and the EWMA volatility live here), and plain
independent references for the indicators ta lacks (the volatilities, the range-based variances,
the overnight gap). ta is always fed RangeIndex series: under pandas 3, ta 0.11's PSAR writes
`series[i] = ...`, which on a DatetimeIndex appends a new row instead of assigning position i.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import ta

from stockcli.features.indicators import (
    INDICATORS,
    OHLCV,
    ScaleFree,
    column_kinds,
    model_warmup,
    resolve_indicators,
    with_fallback,
)
from stockcli.features.kernels import cci, directional_indices, mfi, psar


class _Inputs:
    """One ticker's bars as float64 arrays, and (lazily) as RangeIndex series for ta."""

    def __init__(
        self, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
    ):
        self.open, self.high, self.low, self.close, self.volume = open_, high, low, close, volume
        self._series: dict[str, pd.Series] = {}

    def __len__(self) -> int:
        return len(self.close)

    def s(self, name: str) -> pd.Series:
        if name not in self._series:
            self._series[name] = pd.Series(getattr(self, name), copy=False)
        return self._series[name]

    @property
    def typical(self) -> np.ndarray:
        return (self.high + self.low + self.close) / 3.0


# --- the scalar loops: one ticker's (bars,) arrays, ta's arithmetic ------------------------------


def _true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    previous = np.empty_like(close)
    previous[0] = np.nan
    previous[1:] = close[:-1]
    with np.errstate(invalid="ignore"):
        stacked = np.stack([high - low, np.abs(high - previous), np.abs(low - previous)])
    return np.nanmax(stacked, axis=0)  # ta: DataFrame.max(axis=1), which skips the NaN of row 0


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14) -> np.ndarray:
    """Average true range with ta's arithmetic (Wilder smoothing seeded by a plain mean; zeros before)."""
    n = len(close)
    out = np.zeros(n)
    if n < window:
        return np.full(n, np.nan)
    true_range = _true_range(high, low, close)
    value = float(true_range[0:window].mean())
    out[window - 1] = value
    tail = true_range[window:].tolist()
    values = []
    for tr in tail:
        value = (value * (window - 1) + tr) / float(window)
        values.append(value)
    out[window:] = values
    return out


def adx(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADX, +DI and −DI with ta's `ADXIndicator` arithmetic (zeros during warm-up, as ta emits)."""
    n = len(close)
    if n < 2 * window:
        nan = np.full(n, np.nan)
        return nan, nan.copy(), nan.copy()
    previous = np.empty_like(close)
    previous[0] = np.nan
    previous[1:] = close[:-1]
    pdm = np.amax([high, previous], axis=0)
    pdn = np.amin([low, previous], axis=0)
    movement = pdm - pdn
    size = n - (window - 1)

    def wilder_sum(values: np.ndarray) -> np.ndarray:
        # ta: out[0] = sum of the first `window` non-NaN values (rows 1..window); out[i] for
        # 1 <= i <= size-2 by recursion; the last slot stays 0 (ta never fills it).
        out = np.zeros(size)
        acc = float(values[1 : window + 1].sum())
        out[0] = acc
        recursion = []
        for value in values[window + 1 : window + size - 1].tolist():
            acc = acc - (acc / float(window)) + value
            recursion.append(acc)
        out[1 : size - 1] = recursion
        return out

    trs = wilder_sum(movement)
    with np.errstate(invalid="ignore"):
        diff_up = high - np.concatenate([[np.nan], high[:-1]])
        diff_down = np.concatenate([[np.nan], low[:-1]]) - low
        pos = np.abs(((diff_up > diff_down) & (diff_up > 0)) * diff_up)
        neg = np.abs(((diff_down > diff_up) & (diff_down > 0)) * diff_down)
    dip = wilder_sum(pos)
    din = wilder_sum(neg)

    di_pos, di_neg, directional = directional_indices(trs, dip, din)
    adx_values = np.zeros(size)
    value = float(directional[0:window].mean())
    adx_values[window] = value
    smoothed = []
    for dx in directional[window : size - 1].tolist():
        value = ((value * (window - 1)) + dx) / float(window)
        smoothed.append(value)
    adx_values[window + 1 :] = smoothed
    adx_out = np.concatenate([np.zeros(window - 1), adx_values])

    pos_out = np.zeros(n)
    neg_out = np.zeros(n)
    pos_out[window + 1 : window + size - 1] = di_pos[1 : size - 1]
    neg_out[window + 1 : window + size - 1] = di_neg[1 : size - 1]
    return adx_out, pos_out, neg_out


def ewm_vol(close: np.ndarray, decay: float = 0.94, seed_window: int = 20) -> np.ndarray:
    """log of the exponentially weighted volatility of daily log returns (RiskMetrics' recursion).

    With r_t = log(close_t / close_(t-1)): v at t = seed_window is the mean of r_1..r_seed_window
    squared, then v_t = decay * v_(t-1) + (1 - decay) * r_t^2; the value at t uses returns up to t
    only. The seed's weight decays as decay^n, so a history cut 500 sessions earlier gives the same
    values to ~1e-13 (the forecasting primitive relies on that).
    """
    returns = _log_returns(close)
    n = len(close)
    out = np.full(n, np.nan)
    if n <= seed_window:
        return out
    squared = (returns**2).tolist()
    variance = float(np.mean(squared[1 : seed_window + 1]))
    values = [variance]
    for t in range(seed_window + 1, n):
        variance = decay * variance + (1.0 - decay) * squared[t]
        values.append(variance)
    out[seed_window:] = np.log(np.sqrt(np.asarray(values)) + 1e-8)
    return out


def _np(series: Any) -> np.ndarray:
    return np.asarray(series, dtype=np.float64)


def _compute_ema(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(ta.trend.EMAIndicator(b.s("close"), window=p["window"]).ema_indicator())]


def _compute_sma(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(ta.trend.SMAIndicator(b.s("close"), window=p["window"]).sma_indicator())]


def _compute_rsi(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(ta.momentum.RSIIndicator(b.s("close"), window=p["window"]).rsi())]


def _compute_macd(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = ta.trend.MACD(
        b.s("close"), window_slow=p["window_slow"], window_fast=p["window_fast"], window_sign=p["window_sign"]
    )
    return [_np(indicator.macd())]


def _compute_bollinger(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    bands = ta.volatility.BollingerBands(b.s("close"), window=p["window"], window_dev=p["window_dev"])
    return [_np(bands.bollinger_hband()), _np(bands.bollinger_lband())]


def _compute_atr(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [atr(b.high, b.low, b.close, p["window"])]


def _compute_obv(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(ta.volume.OnBalanceVolumeIndicator(b.s("close"), b.s("volume")).on_balance_volume())]


def _compute_mfi(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [mfi(b.high, b.low, b.close, b.volume, p["window"])]


def _compute_adx(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return list(adx(b.high, b.low, b.close, p["window"]))


def _compute_vwap(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = ta.volume.VolumeWeightedAveragePrice(
        b.s("high"), b.s("low"), b.s("close"), b.s("volume"), window=p["window"]
    )
    return [_np(indicator.volume_weighted_average_price())]


def _compute_psar(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [psar(b.high, b.low, b.close, p["step"], p["max_step"])]


def _compute_stoch(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = ta.momentum.StochasticOscillator(
        b.s("high"), b.s("low"), b.s("close"), window=p["window"], smooth_window=p["smooth_window"]
    )
    return [_np(indicator.stoch()), _np(indicator.stoch_signal())]


def _compute_cci(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [cci(b.high, b.low, b.close, p["window"], p["constant"])]


def _compute_williams_r(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = ta.momentum.WilliamsRIndicator(b.s("high"), b.s("low"), b.s("close"), lbp=p["lbp"])
    return [_np(indicator.williams_r())]


def _compute_donchian(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    channel = ta.volatility.DonchianChannel(b.s("high"), b.s("low"), b.s("close"), window=p["window"])
    return [_np(channel.donchian_channel_hband()), _np(channel.donchian_channel_lband())]


def _compute_keltner(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    if p["original_version"]:
        channel = ta.volatility.KeltnerChannel(
            b.s("high"),
            b.s("low"),
            b.s("close"),
            window=p["window"],
            window_atr=p["window_atr"],
            original_version=True,
            multiplier=p["multiplier"],
        )
        return [_np(channel.keltner_channel_hband()), _np(channel.keltner_channel_lband())]
    # ta's non-original version: EMA centre line +- multiplier * ATR (ATR computed fast, same values).
    centre = _np(ta.trend.EMAIndicator(b.s("close"), window=p["window"]).ema_indicator())
    true_range = atr(b.high, b.low, b.close, p["window_atr"])
    return [centre + p["multiplier"] * true_range, centre - p["multiplier"] * true_range]


def _compute_log_return(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [_np(ta.others.DailyLogReturnIndicator(b.s("close")).daily_log_return())]


def _compute_roc(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(ta.momentum.ROCIndicator(b.s("close"), window=p["window"]).roc())]


def _compute_volume_sma(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(ta.trend.SMAIndicator(b.s("volume"), window=p["window"]).sma_indicator())]


def _compute_cmf(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = ta.volume.ChaikinMoneyFlowIndicator(
        b.s("high"), b.s("low"), b.s("close"), b.s("volume"), window=p["window"]
    )
    return [_np(indicator.chaikin_money_flow())]


def _compute_force_index(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = ta.volume.ForceIndexIndicator(b.s("close"), b.s("volume"), window=p["window"])
    return [_np(indicator.force_index())]


def _log_returns(close: np.ndarray) -> np.ndarray:
    out = np.full(len(close), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[1:] = np.log(close[1:] / close[:-1])
    return out


def realized_vol(close: np.ndarray, window: int = 20) -> np.ndarray:
    """log of the standard deviation of the last `window` daily log returns (NaN before)."""
    returns = _log_returns(close)
    out = np.full(len(close), np.nan)
    if len(close) > window:
        windows = np.lib.stride_tricks.sliding_window_view(returns[1:], window)
        std = windows.std(axis=1, ddof=1)
        with np.errstate(divide="ignore"):
            out[window:] = np.log(std + 1e-8)
    return out


def _compute_realized_vol(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [realized_vol(b.close, p["window"])]


def _compute_ewm_vol(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [ewm_vol(b.close, p["decay"])]


# --- the range-based variances and the overnight gap, by their textbook formulas, one bar at a time ---


def range_variances(b: _Inputs, estimator: str) -> np.ndarray:
    """Each session's variance: overnight gap squared + Parkinson's or Garman-Klass's intraday term
    (NaN on the first session), floored at 1e-10, computed bar by bar in plain Python."""
    out = [math.nan]
    for t in range(1, len(b)):
        o, h, lo, c, previous = (
            float(b.open[t]),
            float(b.high[t]),
            float(b.low[t]),
            float(b.close[t]),
            float(b.close[t - 1]),
        )
        gap = math.log(o / previous) ** 2
        if estimator == "parkinson":
            intraday = math.log(h / lo) ** 2 / (4 * math.log(2))
        else:
            intraday = 0.5 * math.log(h / lo) ** 2 - (2 * math.log(2) - 1) * math.log(c / o) ** 2
        out.append(max(gap + intraday, 1e-10))
    return np.array(out)


def _trailing_means(values: Sequence[float], window: int) -> np.ndarray:
    return np.array(
        [
            math.fsum(values[t - window + 1 : t + 1]) / window if t >= window - 1 else math.nan
            for t in range(len(values))
        ]
    )


def _compute_range(estimator: str) -> Callable[[_Inputs, Mapping[str, Any]], list[np.ndarray]]:
    def compute(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
        return [np.log(_trailing_means(list(range_variances(b, estimator)), p["window"]))]

    return compute


def _compute_overnight_gap(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    gaps = [math.nan] + [math.log(float(b.open[t]) / float(b.close[t - 1])) for t in range(1, len(b))]
    return [_trailing_means(gaps, p["window"])]


TA_COMPUTE: dict[str, Callable[[_Inputs, Mapping[str, Any]], list[np.ndarray]]] = {
    **{name: globals()[f"_compute_{name}"] for name in INDICATORS if f"_compute_{name}" in globals()},
    "parkinson": _compute_range("parkinson"),
    "garman_klass": _compute_range("garman_klass"),
}


def warmup_sessions(indicators: Sequence[Mapping[str, Any]]) -> int:
    """Leading bars without a valid value for at least one indicator."""
    return max((item.warmup for item in resolve_indicators(indicators)), default=0)


def compute_feature_array(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    indicators: Sequence[Mapping[str, Any]],
) -> np.ndarray:
    """OHLCV and every indicator column of one ticker's bars, (bars, features), warm-up rows included
    (NaN or ta's placeholders there); after it, non-finite values replaced by their fallbacks."""
    resolved = resolve_indicators(indicators)
    arrays = [np.asarray(a, dtype=np.float64) for a in (open_, high, low, close, volume)]
    inputs = _Inputs(*arrays)
    warmup = max((item.warmup for item in resolved), default=0)
    columns = list(arrays)
    for item in resolved:
        fallback = item.definition.fill()
        for values in TA_COMPUTE[item.name](inputs, item.params):
            values = np.asarray(values, dtype=np.float64)
            assert values.shape == (len(inputs),), item.name
            columns.append(with_fallback(values, fallback, inputs, warmup))  # type: ignore[arg-type]  # an _Inputs has close and typical
    return np.column_stack(columns) if len(inputs) else np.empty((0, len(columns)))


def scale_free(raw: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
    """Scale-free model features from raw (bars, features) columns (OHLCV first), by kind."""
    transform = ScaleFree(raw[:, OHLCV.index("close")], raw[:, OHLCV.index("volume")])
    return np.stack([transform(raw[:, j], kind) for j, kind in enumerate(kinds)], axis=1)


def compute_model_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    indicators: Sequence[Mapping[str, Any]],
) -> np.ndarray:
    """Scale-free model features of one ticker's bars, (bars, features); rows before the model
    warm-up, and any non-finite value, NaN."""
    raw = compute_feature_array(open_, high, low, close, volume, indicators)
    features = scale_free(raw, column_kinds(indicators))
    features[: min(model_warmup(indicators), len(features))] = np.nan
    features[~np.isfinite(features)] = np.nan
    return features
