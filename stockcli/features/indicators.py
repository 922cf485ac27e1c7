"""Technical indicators as the `ta` library defines them, each strictly causal.

A value dated t uses only bars up to t. Each indicator knows its warm-up: the leading rows where ta
gives NaN *or a placeholder* (ta's ADX and ATR emit 0, its PSAR repeats the close, its Keltner bands
average fewer bars than the window); `compute_features` drops the first `warmup_sessions(...)` rows
and never back-fills anything.

Most indicators call ta directly. Five of ta's are Python loops or `rolling().apply` with a Python
callback and would dominate a 500-ticker run (PSAR alone ~0.35 s per ticker): PSAR, ATR, ADX (with
+DI/−DI), MFI and CCI. Those are re-implemented here with the very same arithmetic (PSAR, ATR and ADX
as loops over plain floats, MFI and CCI vectorised over sliding windows); tests compare every one of
them with ta's own output. ta is always fed RangeIndex series: under pandas 3, ta 0.11's PSAR writes
`series[i] = ...`, which on a DatetimeIndex appends a new row instead of assigning position i.

Degenerate inputs (an index with zero volume, a price that does not move) make some ratios 0/0. Such
values become the neutral value ta itself uses for `fillna` (RSI/MFI/stochastic 50, Williams %R −50,
CMF/CCI 0) or, for price-level lines, the close (VWAP: the typical price); never a value from a later
row, so nothing leaks and no NaN or inf goes downstream.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from stockcli.errors import ConfigError, InputDataError

if TYPE_CHECKING:
    import pandas as pd

OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")

# Fallback for a non-finite value after warm-up: a number, "close" or "typical" ((h + l + c) / 3).
Fallback = float | str


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
            import pandas as pd

            self._series[name] = pd.Series(getattr(self, name), copy=False)
        return self._series[name]

    @property
    def typical(self) -> np.ndarray:
        return (self.high + self.low + self.close) / 3.0


def _np(series: Any) -> np.ndarray:
    return np.asarray(series, dtype=np.float64)


# --- fast equivalents of ta's loop-based indicators (verified against ta in tests) ---------------


def psar(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, step: float = 0.02, max_step: float = 0.2
) -> np.ndarray:
    """Parabolic SAR with exactly ta's `PSARIndicator.psar()` arithmetic, as a loop over floats."""
    n = len(close)
    highs = high.tolist()
    lows = low.tolist()
    out = [float(v) for v in close.tolist()]
    if n < 3:
        return np.asarray(out, dtype=np.float64)
    up_trend = True
    acceleration = step
    up_trend_high = highs[0]
    down_trend_low = lows[0]
    for i in range(2, n):
        reversal = False
        max_high = highs[i]
        min_low = lows[i]
        previous = out[i - 1]
        if up_trend:
            current = previous + acceleration * (up_trend_high - previous)
            if min_low < current:
                reversal = True
                current = up_trend_high
                down_trend_low = min_low
                acceleration = step
            else:
                if max_high > up_trend_high:
                    up_trend_high = max_high
                    acceleration = min(acceleration + step, max_step)
                low1 = lows[i - 1]
                low2 = lows[i - 2]
                if low2 < current:
                    current = low2
                elif low1 < current:
                    current = low1
        else:
            current = previous - acceleration * (previous - down_trend_low)
            if max_high > current:
                reversal = True
                current = down_trend_low
                up_trend_high = max_high
                acceleration = step
            else:
                if min_low < down_trend_low:
                    down_trend_low = min_low
                    acceleration = min(acceleration + step, max_step)
                high1 = highs[i - 1]
                high2 = highs[i - 2]
                if high2 > current:
                    current = high2
                elif high1 > current:
                    current = high1
        out[i] = current
        up_trend = up_trend != reversal
    return np.asarray(out, dtype=np.float64)


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

    nonzero = trs != 0
    safe = np.where(nonzero, trs, 1.0)
    di_pos = np.where(nonzero, 100 * (dip / safe), 0.0)
    di_neg = np.where(nonzero, 100 * (din / safe), 0.0)
    total = di_pos + di_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        directional = np.where(
            total != 0, 100 * np.abs((di_pos - di_neg) / np.where(total != 0, total, 1.0)), 0.0
        )
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


def _window_view(values: np.ndarray, window: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(values, window)


def mfi(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, window: int = 14
) -> np.ndarray:
    """Money flow index with ta's definition (its `rolling().apply` sums, vectorised)."""
    n = len(close)
    out = np.full(n, np.nan)
    if n < window:
        return out
    typical = (high + low + close) / 3.0
    previous = np.concatenate([[np.nan], typical[:-1]])
    with np.errstate(invalid="ignore"):
        up_down = np.where(typical > previous, 1, np.where(typical < previous, -1, 0))
    flow = typical * volume * up_down
    windows = _window_view(flow, window)
    positive = np.where(windows >= 0.0, windows, 0.0).sum(axis=1)
    negative = np.abs(np.where(windows < 0.0, windows, 0.0).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out[window - 1 :] = 100 - (100 / (1 + positive / negative))
    return out


def cci(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 20, constant: float = 0.015
) -> np.ndarray:
    """Commodity channel index with ta's definition (mean absolute deviation, vectorised)."""
    n = len(close)
    out = np.full(n, np.nan)
    if n < window:
        return out
    typical = (high + low + close) / 3.0
    windows = _window_view(typical, window)
    means = windows.mean(axis=1)
    mad = np.abs(windows - means[:, None]).mean(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[window - 1 :] = (typical[window - 1 :] - means) / (constant * mad)
    return out


# --- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndicatorDef:
    """One indicator: its parameters (type and default), output columns, warm-up and computation."""

    name: str
    params: Mapping[str, tuple[type, Any]]
    columns: Callable[[Mapping[str, Any]], list[str]]
    warmup: Callable[[Mapping[str, Any]], int]
    compute: Callable[[_Inputs, Mapping[str, Any]], list[np.ndarray]]
    fallbacks: Callable[[Mapping[str, Any]], list[Fallback]]
    description: str = ""
    # How each output column becomes scale-free for the model (see `SCALE_KINDS`).
    # None: every column is already scale-free ("level").
    kinds: Callable[[Mapping[str, Any]], list[str]] | None = None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _ta() -> Any:
    import ta

    return ta


def _compute_ema(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(_ta().trend.EMAIndicator(b.s("close"), window=p["window"]).ema_indicator())]


def _compute_sma(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(_ta().trend.SMAIndicator(b.s("close"), window=p["window"]).sma_indicator())]


def _compute_rsi(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(_ta().momentum.RSIIndicator(b.s("close"), window=p["window"]).rsi())]


def _compute_macd(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = _ta().trend.MACD(
        b.s("close"), window_slow=p["window_slow"], window_fast=p["window_fast"], window_sign=p["window_sign"]
    )
    return [_np(indicator.macd())]


def _compute_bollinger(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    bands = _ta().volatility.BollingerBands(b.s("close"), window=p["window"], window_dev=p["window_dev"])
    return [_np(bands.bollinger_hband()), _np(bands.bollinger_lband())]


def _compute_atr(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [atr(b.high, b.low, b.close, p["window"])]


def _compute_obv(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(_ta().volume.OnBalanceVolumeIndicator(b.s("close"), b.s("volume")).on_balance_volume())]


def _compute_mfi(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [mfi(b.high, b.low, b.close, b.volume, p["window"])]


def _compute_adx(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return list(adx(b.high, b.low, b.close, p["window"]))


def _compute_vwap(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = _ta().volume.VolumeWeightedAveragePrice(
        b.s("high"), b.s("low"), b.s("close"), b.s("volume"), window=p["window"]
    )
    return [_np(indicator.volume_weighted_average_price())]


def _compute_psar(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [psar(b.high, b.low, b.close, p["step"], p["max_step"])]


def _compute_stoch(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = _ta().momentum.StochasticOscillator(
        b.s("high"), b.s("low"), b.s("close"), window=p["window"], smooth_window=p["smooth_window"]
    )
    return [_np(indicator.stoch()), _np(indicator.stoch_signal())]


def _compute_cci(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [cci(b.high, b.low, b.close, p["window"], p["constant"])]


def _compute_williams_r(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = _ta().momentum.WilliamsRIndicator(b.s("high"), b.s("low"), b.s("close"), lbp=p["lbp"])
    return [_np(indicator.williams_r())]


def _compute_donchian(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    channel = _ta().volatility.DonchianChannel(b.s("high"), b.s("low"), b.s("close"), window=p["window"])
    return [_np(channel.donchian_channel_hband()), _np(channel.donchian_channel_lband())]


def _compute_keltner(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    if p["original_version"]:
        channel = _ta().volatility.KeltnerChannel(
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
    centre = _np(_ta().trend.EMAIndicator(b.s("close"), window=p["window"]).ema_indicator())
    true_range = atr(b.high, b.low, b.close, p["window_atr"])
    return [centre + p["multiplier"] * true_range, centre - p["multiplier"] * true_range]


def _compute_log_return(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        return [_np(_ta().others.DailyLogReturnIndicator(b.s("close")).daily_log_return())]


def _compute_roc(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(_ta().momentum.ROCIndicator(b.s("close"), window=p["window"]).roc())]


def _compute_volume_sma(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_np(_ta().trend.SMAIndicator(b.s("volume"), window=p["window"]).sma_indicator())]


def _compute_cmf(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = _ta().volume.ChaikinMoneyFlowIndicator(
        b.s("high"), b.s("low"), b.s("close"), b.s("volume"), window=p["window"]
    )
    return [_np(indicator.chaikin_money_flow())]


def _compute_force_index(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    indicator = _ta().volume.ForceIndexIndicator(b.s("close"), b.s("volume"), window=p["window"])
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
        windows = _window_view(returns[1:], window)
        std = windows.std(axis=1, ddof=1)
        with np.errstate(divide="ignore"):
            out[window:] = np.log(std + 1e-8)
    return out


def ewm_vol(close: np.ndarray, decay: float = 0.94, seed_window: int = 20) -> np.ndarray:
    """log of the exponentially weighted volatility of daily log returns (RiskMetrics' recursion).

    With r_t = log(close_t / close_(t-1)): v at t = seed_window is the mean of r_1..r_seed_window
    squared, then v_t = decay * v_(t-1) + (1 - decay) * r_t^2; the value at t uses returns up to t
    only. The seed's weight decays as decay^n, so a history cut 500 sessions earlier gives the same
    values to ~1e-13 (the forecasting primitive relies on that).
    """
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"Indicator `ewm_vol` parameter `decay` must be between 0 and 1, got {decay}.")
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


def _compute_realized_vol(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [realized_vol(b.close, p["window"])]


def _compute_ewm_vol(b: _Inputs, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [ewm_vol(b.close, p["decay"])]


def _one(value: Fallback) -> Callable[[Mapping[str, Any]], list[Fallback]]:
    return lambda p: [value]


def _two(value: Fallback) -> Callable[[Mapping[str, Any]], list[Fallback]]:
    return lambda p: [value, value]


_INT = int
_FLOAT = float

INDICATORS: dict[str, IndicatorDef] = {
    d.name: d
    for d in (
        IndicatorDef(
            "ema",
            {"window": (_INT, 14)},
            lambda p: [f"ema_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_ema,
            _one("close"),
            "exponential moving average of the close",
            kinds=lambda p: ["price"],
        ),
        IndicatorDef(
            "sma",
            {"window": (_INT, 20)},
            lambda p: [f"sma_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_sma,
            _one("close"),
            "simple moving average of the close",
            kinds=lambda p: ["price"],
        ),
        IndicatorDef(
            "rsi",
            {"window": (_INT, 14)},
            lambda p: [f"rsi_{p['window']}"],
            lambda p: p["window"],
            _compute_rsi,
            _one(50.0),
            "relative strength index",
        ),
        IndicatorDef(
            "macd",
            {"window_slow": (_INT, 26), "window_fast": (_INT, 12), "window_sign": (_INT, 9)},
            lambda p: [f"macd_{p['window_fast']}_{p['window_slow']}"],
            lambda p: max(p["window_slow"], p["window_fast"]) - 1,
            _compute_macd,
            _one(0.0),
            "MACD line (fast EMA minus slow EMA)",
            kinds=lambda p: ["price_delta"],
        ),
        IndicatorDef(
            "bollinger",
            {"window": (_INT, 20), "window_dev": (_FLOAT, 2.0)},
            lambda p: [
                f"bb_high_{p['window']}_{_fmt(p['window_dev'])}",
                f"bb_low_{p['window']}_{_fmt(p['window_dev'])}",
            ],
            lambda p: p["window"] - 1,
            _compute_bollinger,
            _two("close"),
            "Bollinger high and low bands",
            kinds=lambda p: ["price", "price"],
        ),
        IndicatorDef(
            "atr",
            {"window": (_INT, 14)},
            lambda p: [f"atr_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_atr,
            _one(0.0),
            "average true range",
            kinds=lambda p: ["price_delta"],
        ),
        IndicatorDef(
            "obv",
            {},
            lambda p: ["obv"],
            lambda p: 1,
            _compute_obv,
            _one(0.0),
            "on-balance volume",
            kinds=lambda p: ["flow"],
        ),
        IndicatorDef(
            "mfi",
            {"window": (_INT, 14)},
            lambda p: [f"mfi_{p['window']}"],
            lambda p: p["window"],
            _compute_mfi,
            _one(50.0),
            "money flow index",
        ),
        IndicatorDef(
            "adx",
            {"window": (_INT, 14)},
            lambda p: [f"adx_{p['window']}", f"adx_pos_{p['window']}", f"adx_neg_{p['window']}"],
            lambda p: max(2 * p["window"] - 1, p["window"] + 1),
            _compute_adx,
            lambda p: [0.0, 0.0, 0.0],
            "average directional index with +DI and -DI",
        ),
        IndicatorDef(
            "vwap",
            {"window": (_INT, 14)},
            lambda p: [f"vwap_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_vwap,
            _one("typical"),
            "rolling volume-weighted average price",
            kinds=lambda p: ["price"],
        ),
        IndicatorDef(
            "psar",
            {"step": (_FLOAT, 0.02), "max_step": (_FLOAT, 0.2)},
            lambda p: [f"psar_{_fmt(p['step'])}_{_fmt(p['max_step'])}"],
            lambda p: 2,
            _compute_psar,
            _one("close"),
            "parabolic stop and reverse",
            kinds=lambda p: ["price"],
        ),
        IndicatorDef(
            "stoch",
            {"window": (_INT, 14), "smooth_window": (_INT, 3)},
            lambda p: [f"stoch_k_{p['window']}", f"stoch_d_{p['window']}_{p['smooth_window']}"],
            lambda p: p["window"] + p["smooth_window"] - 2,
            _compute_stoch,
            _two(50.0),
            "stochastic %K and %D",
        ),
        IndicatorDef(
            "cci",
            {"window": (_INT, 20), "constant": (_FLOAT, 0.015)},
            lambda p: [f"cci_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_cci,
            _one(0.0),
            "commodity channel index",
        ),
        IndicatorDef(
            "williams_r",
            {"lbp": (_INT, 14)},
            lambda p: [f"williams_r_{p['lbp']}"],
            lambda p: p["lbp"] - 1,
            _compute_williams_r,
            _one(-50.0),
            "Williams %R",
        ),
        IndicatorDef(
            "donchian",
            {"window": (_INT, 20)},
            lambda p: [f"donchian_high_{p['window']}", f"donchian_low_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_donchian,
            _two("close"),
            "Donchian channel high and low",
            kinds=lambda p: ["price", "price"],
        ),
        IndicatorDef(
            "keltner",
            {
                "window": (_INT, 20),
                "window_atr": (_INT, 10),
                "original_version": (bool, True),
                "multiplier": (_FLOAT, 2.0),
            },
            lambda p: (
                [f"keltner_high_{p['window']}", f"keltner_low_{p['window']}"]
                if p["original_version"]
                else [
                    f"keltner_high_{p['window']}_{p['window_atr']}",
                    f"keltner_low_{p['window']}_{p['window_atr']}",
                ]
            ),
            lambda p: p["window"] - 1 if p["original_version"] else max(p["window"], p["window_atr"]) - 1,
            _compute_keltner,
            _two("close"),
            "Keltner channel high and low (window_atr and multiplier apply when original_version = false)",
            kinds=lambda p: ["price", "price"],
        ),
        IndicatorDef(
            "log_return",
            {},
            lambda p: ["log_return"],
            lambda p: 1,
            _compute_log_return,
            _one(0.0),
            "daily log return of the close, in percent",
        ),
        IndicatorDef(
            "roc",
            {"window": (_INT, 12)},
            lambda p: [f"roc_{p['window']}"],
            lambda p: p["window"],
            _compute_roc,
            _one(0.0),
            "rate of change of the close, in percent",
        ),
        IndicatorDef(
            "volume_sma",
            {"window": (_INT, 20)},
            lambda p: [f"volume_sma_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_volume_sma,
            _one(0.0),
            "simple moving average of the volume",
            kinds=lambda p: ["volume"],
        ),
        IndicatorDef(
            "cmf",
            {"window": (_INT, 20)},
            lambda p: [f"cmf_{p['window']}"],
            lambda p: p["window"] - 1,
            _compute_cmf,
            _one(0.0),
            "Chaikin money flow",
        ),
        IndicatorDef(
            "force_index",
            {"window": (_INT, 13)},
            lambda p: [f"force_index_{p['window']}"],
            lambda p: p["window"],
            _compute_force_index,
            _one(0.0),
            "force index (EMA of close change x volume)",
            kinds=lambda p: ["price_volume"],
        ),
        IndicatorDef(
            "realized_vol",
            {"window": (_INT, 20)},
            lambda p: [f"realized_vol_{p['window']}"],
            lambda p: p["window"],
            _compute_realized_vol,
            _one(np.log(1e-8)),
            "log of the standard deviation of the last `window` daily log returns",
        ),
        IndicatorDef(
            "ewm_vol",
            {"decay": (_FLOAT, 0.94)},
            lambda p: [f"ewm_vol_{_fmt(p['decay'])}"],
            lambda p: 20,
            _compute_ewm_vol,
            _one(np.log(1e-8)),
            "log of the exponentially weighted volatility of daily log returns (RiskMetrics, decay 0.94)",
        ),
    )
}


@dataclass(frozen=True)
class ResolvedIndicator:
    """A validated indicator entry: its name, every parameter (defaults filled in), columns, warm-up."""

    name: str
    params: dict[str, Any]
    columns: tuple[str, ...]
    warmup: int
    definition: IndicatorDef = field(repr=False, compare=False)

    def as_config(self) -> dict[str, Any]:
        """The canonical config entry (JSON-able): name plus every parameter."""
        return {"name": self.name, **self.params}


def _check_param(indicator: str, key: str, kind: type, value: Any) -> Any:
    where = f"Indicator `{indicator}` parameter `{key}`"
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return int(value)
        raise ConfigError(f"{where} must be a whole number of sessions (1 or more), got {value!r}.")
    if isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value) and value > 0:
        return float(value)
    raise ConfigError(f"{where} must be a positive number, got {value!r}.")


def resolve_indicators(indicators: Sequence[Mapping[str, Any]]) -> list[ResolvedIndicator]:
    """Validate indicator entries (name and parameters) and fill in defaults.

    Raises ConfigError naming an unknown indicator or parameter, a bad value, or an indicator whose
    output columns are listed twice.
    """
    resolved: list[ResolvedIndicator] = []
    seen: dict[str, str] = {}
    known = ", ".join(sorted(INDICATORS))
    for entry in indicators:
        if not isinstance(entry, Mapping):
            raise ConfigError(f"[features] indicators: every entry must be a table, got {entry!r}.")
        name = entry.get("name")
        if not isinstance(name, str) or name not in INDICATORS:
            raise ConfigError(
                f"Unknown indicator {name!r} in [features] indicators.", hint=f"Known indicators: {known}."
            )
        definition = INDICATORS[name]
        params: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "name":
                continue
            if key not in definition.params:
                allowed = ", ".join(definition.params) or "none"
                raise ConfigError(
                    f"Unknown parameter `{key}` for indicator `{name}` in [features] indicators.",
                    hint=f"Parameters of `{name}`: {allowed}.",
                )
            params[key] = _check_param(name, key, definition.params[key][0], value)
        for key, (_, default) in definition.params.items():
            params.setdefault(key, default)
        columns = tuple(definition.columns(params))
        for column in columns:
            if column in seen or column in OHLCV:
                raise ConfigError(
                    f"Indicator `{name}` with {params or 'no parameters'} produces column `{column}` "
                    f"that another entry already produces.",
                    hint="Remove the duplicate entry from [features] indicators.",
                )
            seen[column] = name
        resolved.append(ResolvedIndicator(name, params, columns, int(definition.warmup(params)), definition))
    return resolved


def canonical_indicators(indicators: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The indicator entries with every parameter spelled out (what a dataset's spec records)."""
    return [item.as_config() for item in resolve_indicators(indicators)]


def feature_names(indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator]) -> list[str]:
    """OHLCV followed by every indicator column, in config order."""
    names = list(OHLCV)
    for item in _resolved(indicators):
        names.extend(item.columns)
    return names


def warmup_sessions(indicators: Sequence[Mapping[str, Any]]) -> int:
    """Leading bars without a valid value for at least one indicator (dropped, never back-filled)."""
    return max((item.warmup for item in resolve_indicators(indicators)), default=0)


def compute_feature_array(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator],
) -> np.ndarray:
    """Features for one ticker's bars as a (bars, features) float64 array, warm-up rows included.

    Rows before `warmup_sessions` hold whatever the indicators give there (NaN or ta's
    placeholders); rows from it on are finite. Column order: OHLCV, then indicator columns.
    """
    resolved = _resolved(indicators)
    arrays = [np.asarray(a, dtype=np.float64) for a in (open_, high, low, close, volume)]
    if not all(np.isfinite(a).all() for a in arrays):
        raise InputDataError(
            "Bars contain missing or infinite prices or volumes.", hint="Re-fetch the ticker."
        )
    inputs = _Inputs(*arrays)
    n = len(inputs)
    warmup = max((item.warmup for item in resolved), default=0)
    n_columns = len(OHLCV) + sum(len(item.columns) for item in resolved)
    out = np.empty((n, n_columns), dtype=np.float64)
    for j, values in enumerate(arrays):
        out[:, j] = values
    column = len(OHLCV)
    for item in resolved:
        outputs = item.definition.compute(inputs, item.params)
        fallbacks = item.definition.fallbacks(item.params)
        for values, fallback in zip(outputs, fallbacks, strict=True):
            values = np.asarray(values, dtype=np.float64)
            if len(values) != n:  # pragma: no cover - a ta regression would land here
                raise InputDataError(f"Indicator `{item.name}` returned {len(values)} values for {n} bars.")
            tail = values[warmup:]
            bad = ~np.isfinite(tail)
            if bad.any():
                tail = tail.copy()
                if fallback == "close":
                    tail[bad] = inputs.close[warmup:][bad]
                elif fallback == "typical":
                    tail[bad] = inputs.typical[warmup:][bad]
                else:
                    tail[bad] = float(fallback)
                values = np.concatenate([values[:warmup], tail])
            out[:, column] = values
            column += 1
    return out


def _resolved(
    indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator],
) -> list[ResolvedIndicator]:
    if indicators and all(isinstance(item, ResolvedIndicator) for item in indicators):
        return list(indicators)  # type: ignore[arg-type]
    return resolve_indicators(indicators)  # type: ignore[arg-type]


def compute_features(bars: pd.DataFrame, indicators: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """OHLCV plus every indicator for one ticker's bars, warm-up rows dropped (never back-filled).

    `bars` has columns open, high, low, close, volume and is sorted by date. The result keeps the
    index of the rows that remain; every value in it is finite. Raises ConfigError for an unknown
    indicator or parameter.
    """
    import pandas as pd

    resolved = resolve_indicators(indicators)
    names = list(OHLCV) + [c for item in resolved for c in item.columns]
    warmup = max((item.warmup for item in resolved), default=0)
    if len(bars) <= warmup:
        return pd.DataFrame({name: pd.Series(dtype="float64") for name in names}, index=bars.index[:0])
    open_, high, low, close, volume = (bars[c].to_numpy() for c in OHLCV)
    values = compute_feature_array(open_, high, low, close, volume, resolved)
    return pd.DataFrame(values[warmup:], index=bars.index[warmup:], columns=names)


# --- scale-free model features ------------------------------------------------------------------------
#
# One global network serves a $20 stock and a 3,000-point index, so what it sees must not depend on
# the price level or the share count. Each column keeps its name and becomes scale-free by its kind:
#
# - `price`: a price line (EMA, bands, PSAR, open/high/low) -> log(value / close)
# - `price_delta`: a price difference (ATR, MACD) -> value / close
# - `level`: already scale-free (RSI, stochastics, ADX, returns in percent, log volatilities) -> as is
# - `return`: the close itself -> log(close_t / close_(t-1))
# - `volume`: a share count -> log(1 + value / mean volume of the last 20 bars)
# - `flow`: a cumulative share count (OBV) -> its change over 20 bars / the volume of those bars
# - `price_volume`: price x shares (force index) -> value / (close x mean volume of 20 bars)
# (0 where a series trades no volume at all, an index in some feeds.)
#
# Every transform is causal (row t uses bars up to t only).

OHLCV_KINDS: dict[str, str] = {
    "open": "price",
    "high": "price",
    "low": "price",
    "close": "return",
    "volume": "volume",
}
SCALE_KINDS = ("price", "price_delta", "level", "return", "volume", "flow", "price_volume")
VOLUME_BASE_WINDOW = 20


def column_kinds(indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator]) -> list[str]:
    """The scale-free kind of every feature column, in `feature_names` order."""
    kinds = [OHLCV_KINDS[name] for name in OHLCV]
    for item in _resolved(indicators):
        kinds_of = item.definition.kinds
        item_kinds = list(kinds_of(item.params)) if kinds_of else ["level"] * len(item.columns)
        if len(item_kinds) != len(item.columns):  # pragma: no cover - a registry mistake
            raise ConfigError(
                f"Indicator `{item.name}` declares {len(item_kinds)} kinds for {len(item.columns)} columns."
            )
        kinds.extend(item_kinds)
    return kinds


def model_warmup(indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator]) -> int:
    """Leading bars of a ticker without a valid model feature row (indicator and transform warm-up)."""
    resolved = _resolved(indicators)
    warmup = max((item.warmup for item in resolved), default=0)
    # The volume base needs VOLUME_BASE_WINDOW bars; `flow` differences over as many more.
    transform = (
        VOLUME_BASE_WINDOW if any(k in ("flow",) for k in column_kinds(resolved)) else VOLUME_BASE_WINDOW - 1
    )
    return max(warmup, transform, 1)


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last `window` values along the last axis (NaN before)."""
    out = np.full(values.shape, np.nan)
    if values.shape[-1] >= window:
        sums = np.cumsum(np.concatenate([np.zeros((*values.shape[:-1], 1)), values], axis=-1), axis=-1)
        out[..., window - 1 :] = (sums[..., window:] - sums[..., :-window]) / window
    return out


def scale_free(raw: np.ndarray, kinds: Sequence[str]) -> np.ndarray:
    """Scale-free model features from raw feature columns (OHLCV first), by kind (see above)."""
    transform = _ScaleFree(raw[:, OHLCV.index("close")], raw[:, OHLCV.index("volume")])
    return np.stack([transform(raw[:, j], kind) for j, kind in enumerate(kinds)], axis=1)


class _ScaleFree:
    """The scale-free transform of one raw feature column at a time, by kind (see above).

    Columns are (bars,) for one ticker or (tickers, bars) for many: bars on the last axis, and each
    ticker's values are the same either way.
    """

    def __init__(self, close: np.ndarray, volume: np.ndarray):
        self.close = close
        self.volume_base = _rolling_mean(volume, VOLUME_BASE_WINDOW)
        # Divide by the volume base only where it is positive (an index may trade "zero shares"): the
        # ratios are then exactly scale-free, and a ticker without volume gets neutral values.
        self.traded = np.isfinite(self.volume_base) & (self.volume_base > 0)
        self.safe_base = np.where(self.traded, self.volume_base, 1.0)

    def __call__(self, column: np.ndarray, kind: str) -> np.ndarray:
        close, volume_base, traded, safe_base = self.close, self.volume_base, self.traded, self.safe_base
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "price":
                return np.log(column / close)
            if kind == "price_delta":
                return column / close
            if kind == "level":
                return np.array(column, dtype=np.float64)
            if kind == "return":
                values = np.empty(column.shape)
                values[..., 0] = np.nan
                values[..., 1:] = np.log(column[..., 1:] / column[..., :-1])
                return values
            if kind == "volume":
                ratio = np.log1p(np.maximum(column, 0.0) / safe_base)
                return np.where(traded, ratio, np.where(np.isfinite(volume_base), 0.0, np.nan))
            if kind == "flow":
                change = np.full(column.shape, np.nan)
                change[..., VOLUME_BASE_WINDOW:] = (
                    column[..., VOLUME_BASE_WINDOW:] - column[..., :-VOLUME_BASE_WINDOW]
                )
                flow = change / (VOLUME_BASE_WINDOW * safe_base)
                return np.where(traded, flow, np.where(np.isfinite(change + volume_base), 0.0, np.nan))
            if kind == "price_volume":
                scaled = column / (close * safe_base)
                return np.where(traded, scaled, np.where(np.isfinite(volume_base), 0.0, np.nan))
        raise ConfigError(f"Unknown scale-free kind {kind!r}.")  # pragma: no cover - guarded by SCALE_KINDS


def compute_model_features(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator],
) -> np.ndarray:
    """Scale-free model features for one ticker's bars: (bars, features) float64, `feature_names`
    order; rows before `model_warmup(...)` are NaN (dropped, never back-filled), later rows finite."""
    resolved = _resolved(indicators)
    raw = compute_feature_array(open_, high, low, close, volume, resolved)
    features = scale_free(raw, column_kinds(resolved))
    warmup = model_warmup(resolved)
    features[: min(warmup, len(features))] = np.nan
    tail = features[warmup:]
    bad = ~np.isfinite(tail)
    if bad.any():
        # A zero price makes a ratio undefined; such bars never pass the source's validation, but a
        # feature row with NaN must never reach the network: it stays NaN and the row is unusable.
        tail[bad] = np.nan
    return features


# --- many tickers at once -----------------------------------------------------------------------------
#
# Serving 500 tickers through `compute_model_features` cost ~20 ms a ticker, nearly all of it pandas
# overhead (ta builds ~100 Series per ticker over a few hundred bars). `compute_model_features_many`
# gives the very same numbers for many tickers at once: each ticker is one row of a (tickers, bars)
# array, LEFT-aligned (row k holds its own bars in columns 0..len_k-1; the columns after it repeat its
# last bar and are thrown away), and every indicator runs once over the whole array:
#
# - ta's pandas arithmetic is replayed on numpy rows (elementwise operations are exact), and its
#   rolling and ewm calls run on a DataFrame whose columns are the tickers: pandas applies the same
#   kernel to each column as to a Series, so each ticker gets the same bits;
# - the loops (PSAR, ATR, ADX, the EWMA volatility) step through time with one vector of tickers,
#   each element doing the scalar loop's arithmetic;
# - every indicator and transform is causal (`test_features_are_causal_prefix_stable`), so what
#   follows a ticker's last bar in its row cannot change its values.
#
# Tests hold every indicator of the registry to the per-ticker path on real and synthetic bars.

# Cells (tickers x bars) per block: ~35 MB of features with the default 33 (190 tickers x 690 bars).
# Measured over 472 tickers x 690 bars: as fast as one block of all of them, 80 MB less peak memory.
MANY_BLOCK_CELLS = 1 << 17
# Below this many rows, a loop indicator runs its scalar loop row by row: a step of the vector loop is
# a few dozen numpy calls whatever the rows (PSAR ~60 us, 0.65 us a row for the scalar loop; ATR,
# ADX and the EWMA volatility ~5 us against 0.3 us; measured over 691 bars).
_MANY_MIN_VECTOR_ROWS = 16
_PSAR_MIN_VECTOR_ROWS = 96


class _Many:
    """Many tickers' bars as (tickers, bars) float64 arrays, one left-aligned ticker per row."""

    def __init__(
        self, open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
    ):
        self.open, self.high, self.low, self.close, self.volume = open_, high, low, close, volume

    @property
    def typical(self) -> np.ndarray:
        return (self.high + self.low + self.close) / 3.0


def _rows_frame(values: np.ndarray) -> pd.DataFrame:
    import pandas as pd

    # Columns are the rows (tickers): pandas' window kernels run column by column.
    return pd.DataFrame(values.T, copy=False)


@functools.cache
def _row_windows_class() -> type:
    from pandas.api.indexers import BaseIndexer

    class RowWindows(BaseIndexer):  # type: ignore[misc]
        """Trailing windows of a flattened (rows, bars) array that never reach into the previous row."""

        def get_window_bounds(
            self,
            num_values: int = 0,
            min_periods: int | None = None,
            center: bool | None = None,
            closed: str | None = None,
            step: int | None = None,
        ) -> tuple[np.ndarray, np.ndarray]:
            return self.start, self.end

    return RowWindows


def _rolling(
    values: np.ndarray, window: int, how: str, *, min_periods: int | None = None, **kwargs: Any
) -> np.ndarray:
    """pandas' `rolling(window, min_periods).<how>(**kwargs)` of each row (ta's `min_periods` default: window).

    One pandas call over the rows laid end to end, with windows cut at each row's start: pandas'
    kernels restart from scratch where a window does not overlap the previous one, so each row gets
    the bits a Series of its own would (and 463 rows cost ~5x less than a DataFrame's columns).
    """
    import pandas as pd

    rows, n = values.shape
    end = np.arange(1, rows * n + 1, dtype=np.int64)
    start = end - np.minimum(np.tile(np.arange(1, n + 1, dtype=np.int64), rows), window)
    windows = _row_windows_class()(start=start, end=end)
    series = pd.Series(np.ascontiguousarray(values, dtype=np.float64).ravel(), copy=False)
    rolling = series.rolling(windows, min_periods=window if min_periods is None else min_periods)
    return np.asarray(getattr(rolling, how)(**kwargs).to_numpy(dtype=np.float64)).reshape(rows, n)


def _ewm_mean(values: np.ndarray, **kwargs: Any) -> np.ndarray:
    """pandas' `ewm(**kwargs).mean()` of each row."""
    return np.asarray(_rows_frame(values).ewm(**kwargs).mean().to_numpy(dtype=np.float64).T)


def _ema_rows(values: np.ndarray, window: int) -> np.ndarray:
    # ta.utils._ema without fillna
    return _ewm_mean(values, span=window, min_periods=window, adjust=False)


def _shift_rows(values: np.ndarray, periods: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    if periods < values.shape[1]:
        out[:, periods:] = values[:, : values.shape[1] - periods]
    return out


def _scalar_rows(function: Callable[..., Any], arrays: Sequence[np.ndarray], *args: Any) -> list[np.ndarray]:
    """A per-ticker function applied to each row: a list of (rows, bars) arrays, one per output."""
    results = [function(*(a[k] for a in arrays), *args) for k in range(arrays[0].shape[0])]
    results = [r if isinstance(r, tuple) else (r,) for r in results]
    return [np.stack([r[j] for r in results]) for j in range(len(results[0]))]


def psar_many(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, step: float = 0.02, max_step: float = 0.2
) -> np.ndarray:
    """`psar` of each row of (tickers, bars) arrays, stepping through time with a vector of tickers."""
    rows, n = close.shape
    if rows < _PSAR_MIN_VECTOR_ROWS or n < 3:
        return _scalar_rows(psar, (high, low, close), step, max_step)[0]
    highs = np.ascontiguousarray(high.T)  # (bars, tickers): one contiguous vector per session
    lows = np.ascontiguousarray(low.T)
    out = np.array(close.T, dtype=np.float64, order="C")
    up_trend = np.ones(rows, dtype=bool)
    acceleration = np.full(rows, step)
    up_trend_high = highs[0].copy()
    down_trend_low = lows[0].copy()
    for i in range(2, n):
        previous = out[i - 1]
        max_high, min_low = highs[i], lows[i]
        rising = previous + acceleration * (up_trend_high - previous)
        falling = previous - acceleration * (previous - down_trend_low)
        down_trend = ~up_trend
        reversal_up = up_trend & (min_low < rising)  # an up trend that reverses
        reversal_down = down_trend & (max_high > falling)
        new_high = up_trend & ~reversal_up & (max_high > up_trend_high)
        new_low = down_trend & ~reversal_down & (min_low < down_trend_low)
        low1, low2 = lows[i - 1], lows[i - 2]
        kept_up = np.where(low2 < rising, low2, np.where(low1 < rising, low1, rising))
        high1, high2 = highs[i - 1], highs[i - 2]
        kept_down = np.where(high2 > falling, high2, np.where(high1 > falling, high1, falling))
        out[i] = np.where(
            up_trend,
            np.where(reversal_up, up_trend_high, kept_up),
            np.where(reversal_down, down_trend_low, kept_down),
        )
        reversal = reversal_up | reversal_down
        acceleration = np.where(
            reversal,
            step,
            np.where(new_high | new_low, np.minimum(acceleration + step, max_step), acceleration),
        )
        up_trend_high = np.where(reversal_down | new_high, max_high, up_trend_high)
        down_trend_low = np.where(reversal_up | new_low, min_low, down_trend_low)
        up_trend = up_trend != reversal
    return np.ascontiguousarray(out.T)


def _true_range_many(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    previous = _shift_rows(close, 1)
    with np.errstate(invalid="ignore"):
        stacked = np.stack([high - low, np.abs(high - previous), np.abs(low - previous)])
    return np.nanmax(stacked, axis=0)


def atr_many(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14) -> np.ndarray:
    """`atr` of each row of (tickers, bars) arrays."""
    rows, n = close.shape
    if n < window:
        return np.full((rows, n), np.nan)
    if rows < _MANY_MIN_VECTOR_ROWS:
        return _scalar_rows(atr, (high, low, close), window)[0]
    true_range = _true_range_many(high, low, close)
    out = np.zeros((n, rows))
    value = true_range[:, 0:window].mean(axis=1)
    out[window - 1] = value
    by_session = np.ascontiguousarray(true_range.T)
    for t in range(window, n):
        value = (value * (window - 1) + by_session[t]) / float(window)
        out[t] = value
    return np.ascontiguousarray(out.T)


def adx_many(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`adx` (ADX, +DI, −DI) of each row of (tickers, bars) arrays."""
    rows, n = close.shape
    if n < 2 * window:
        nan = np.full((rows, n), np.nan)
        return nan, nan.copy(), nan.copy()
    if rows < _MANY_MIN_VECTOR_ROWS:
        adx_rows, pos_rows, neg_rows = _scalar_rows(adx, (high, low, close), window)
        return adx_rows, pos_rows, neg_rows
    previous = _shift_rows(close, 1)
    movement = np.maximum(high, previous) - np.minimum(low, previous)
    size = n - (window - 1)

    with np.errstate(invalid="ignore"):
        diff_up = high - _shift_rows(high, 1)
        diff_down = _shift_rows(low, 1) - low
        pos = np.abs(((diff_up > diff_down) & (diff_up > 0)) * diff_up)
        neg = np.abs(((diff_down > diff_up) & (diff_down > 0)) * diff_down)
    # `adx`'s three Wilder sums (true range, +DM, -DM) in one loop over (3, tickers) vectors.
    stacked = np.stack([movement, pos, neg])
    sums = np.zeros((size, 3, rows))
    acc = stacked[:, :, 1 : window + 1].sum(axis=-1)
    sums[0] = acc
    by_session = np.ascontiguousarray(np.moveaxis(stacked[:, :, window + 1 : window + size - 1], -1, 0))
    for j in range(by_session.shape[0]):
        acc = acc - (acc / float(window)) + by_session[j]
        sums[1 + j] = acc
    trs, dip, din = np.ascontiguousarray(np.moveaxis(sums, 0, -1))  # row-major: reductions as `adx`'s

    nonzero = trs != 0
    safe = np.where(nonzero, trs, 1.0)
    di_pos = np.where(nonzero, 100 * (dip / safe), 0.0)
    di_neg = np.where(nonzero, 100 * (din / safe), 0.0)
    total = di_pos + di_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        directional = np.where(
            total != 0, 100 * np.abs((di_pos - di_neg) / np.where(total != 0, total, 1.0)), 0.0
        )
    adx_values = np.zeros((size, rows))
    value = directional[:, 0:window].mean(axis=1)
    adx_values[window] = value
    by_session = np.ascontiguousarray(directional[:, window : size - 1].T)
    for j in range(by_session.shape[0]):
        value = ((value * (window - 1)) + by_session[j]) / float(window)
        adx_values[window + 1 + j] = value
    adx_out = np.concatenate([np.zeros((rows, window - 1)), adx_values.T], axis=1)
    pos_out = np.zeros((rows, n))
    neg_out = np.zeros((rows, n))
    pos_out[:, window + 1 : window + size - 1] = di_pos[:, 1 : size - 1]
    neg_out[:, window + 1 : window + size - 1] = di_neg[:, 1 : size - 1]
    return adx_out, pos_out, neg_out


def _window_rows(values: np.ndarray, window: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=1)


# Rows per call of a sliding-window indicator: its (rows, bars, window) temporaries stay ~2 MB (all
# 500 tickers at once: ~50 MB each, slower for leaving the cache, and the run's peak memory).
_WINDOW_CHUNK_ROWS = 16


def _in_row_chunks(
    function: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], *args: Any
) -> np.ndarray:
    rows = arrays[0].shape[0]
    if rows <= _WINDOW_CHUNK_ROWS:
        return function(*arrays, *args)
    chunks = range(0, rows, _WINDOW_CHUNK_ROWS)
    return np.concatenate([function(*(a[i : i + _WINDOW_CHUNK_ROWS] for a in arrays), *args) for i in chunks])


def mfi_many(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, window: int = 14
) -> np.ndarray:
    """`mfi` of each row of (tickers, bars) arrays."""
    rows, n = close.shape
    out = np.full((rows, n), np.nan)
    if n < window:
        return out
    typical = (high + low + close) / 3.0
    previous = _shift_rows(typical, 1)
    with np.errstate(invalid="ignore"):
        up_down = np.where(typical > previous, 1, np.where(typical < previous, -1, 0))
    flow = typical * volume * up_down
    windows = _window_rows(flow, window)
    positive = np.where(windows >= 0.0, windows, 0.0).sum(axis=2)
    negative = np.abs(np.where(windows < 0.0, windows, 0.0).sum(axis=2))
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, window - 1 :] = 100 - (100 / (1 + positive / negative))
    return out


def cci_many(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 20, constant: float = 0.015
) -> np.ndarray:
    """`cci` of each row of (tickers, bars) arrays."""
    rows, n = close.shape
    out = np.full((rows, n), np.nan)
    if n < window:
        return out
    typical = (high + low + close) / 3.0
    windows = _window_rows(typical, window)
    means = windows.mean(axis=2)
    mad = np.abs(windows - means[:, :, None]).mean(axis=2)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[:, window - 1 :] = (typical[:, window - 1 :] - means) / (constant * mad)
    return out


def _log_returns_many(close: np.ndarray) -> np.ndarray:
    out = np.full(close.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        out[:, 1:] = np.log(close[:, 1:] / close[:, :-1])
    return out


def realized_vol_many(close: np.ndarray, window: int = 20) -> np.ndarray:
    """`realized_vol` of each row of (tickers, bars) arrays."""
    returns = _log_returns_many(close)
    rows, n = close.shape
    out = np.full((rows, n), np.nan)
    if n > window:
        std = _window_rows(returns[:, 1:], window).std(axis=2, ddof=1)
        with np.errstate(divide="ignore"):
            out[:, window:] = np.log(std + 1e-8)
    return out


def ewm_vol_many(close: np.ndarray, decay: float = 0.94, seed_window: int = 20) -> np.ndarray:
    """`ewm_vol` of each row of (tickers, bars) arrays."""
    if not 0.0 < decay < 1.0:
        raise ConfigError(f"Indicator `ewm_vol` parameter `decay` must be between 0 and 1, got {decay}.")
    rows, n = close.shape
    out = np.full((rows, n), np.nan)
    if n <= seed_window:
        return out
    if rows < _MANY_MIN_VECTOR_ROWS:
        return _scalar_rows(ewm_vol, (close,), decay, seed_window)[0]
    squared = _log_returns_many(close) ** 2
    variance = squared[:, 1 : seed_window + 1].mean(axis=1)
    values = np.empty((n - seed_window, rows))
    values[0] = variance
    by_session = np.ascontiguousarray(squared.T)
    for t in range(seed_window + 1, n):
        variance = decay * variance + (1.0 - decay) * by_session[t]
        values[t - seed_window] = variance
    out[:, seed_window:] = np.log(np.sqrt(values.T) + 1e-8)
    return out


def _many_ema(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_ema_rows(m.close, p["window"])]


def _many_sma(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_rolling(m.close, p["window"], "mean")]


def _many_rsi(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    # ta.momentum.RSIIndicator
    window = p["window"]
    with np.errstate(invalid="ignore", divide="ignore"):
        diff = m.close - _shift_rows(m.close, 1)
        up_direction = np.where(diff > 0, diff, 0.0)
        down_direction = -np.where(diff < 0, diff, 0.0)
        emaup = _ewm_mean(up_direction, alpha=1 / window, min_periods=window, adjust=False)
        emadn = _ewm_mean(down_direction, alpha=1 / window, min_periods=window, adjust=False)
        relative_strength = emaup / emadn
        return [np.where(emadn == 0, 100, 100 - (100 / (1 + relative_strength))).astype(np.float64)]


def _many_macd(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_ema_rows(m.close, p["window_fast"]) - _ema_rows(m.close, p["window_slow"])]


def _many_bollinger(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    average = _rolling(m.close, p["window"], "mean")
    deviation = _rolling(m.close, p["window"], "std", ddof=0)
    return [average + p["window_dev"] * deviation, average - p["window_dev"] * deviation]


def _many_atr(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [atr_many(m.high, m.low, m.close, p["window"])]


def _many_obv(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    with np.errstate(invalid="ignore"):
        signed = np.where(m.close < _shift_rows(m.close, 1), -m.volume, m.volume)
    return [np.cumsum(signed, axis=1)]


def _many_mfi(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_in_row_chunks(mfi_many, (m.high, m.low, m.close, m.volume), p["window"])]


def _many_adx(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return list(adx_many(m.high, m.low, m.close, p["window"]))


def _many_vwap(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    # ta.volume.VolumeWeightedAveragePrice
    typical_price_volume = ((m.high + m.low + m.close) / 3.0) * m.volume
    total_pv = _rolling(typical_price_volume, p["window"], "sum")
    total_volume = _rolling(m.volume, p["window"], "sum")
    with np.errstate(invalid="ignore", divide="ignore"):
        return [total_pv / total_volume]


def _many_psar(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [psar_many(m.high, m.low, m.close, p["step"], p["max_step"])]


def _many_stoch(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    # ta.momentum.StochasticOscillator
    smin = _rolling(m.low, p["window"], "min")
    smax = _rolling(m.high, p["window"], "max")
    with np.errstate(invalid="ignore", divide="ignore"):
        stoch_k = 100 * (m.close - smin) / (smax - smin)
    return [stoch_k, _rolling(stoch_k, p["smooth_window"], "mean")]


def _many_cci(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_in_row_chunks(cci_many, (m.high, m.low, m.close), p["window"], p["constant"])]


def _many_williams_r(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    # ta.momentum.WilliamsRIndicator
    highest_high = _rolling(m.high, p["lbp"], "max")
    lowest_low = _rolling(m.low, p["lbp"], "min")
    with np.errstate(invalid="ignore", divide="ignore"):
        return [-100 * (highest_high - m.close) / (highest_high - lowest_low)]


def _many_donchian(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_rolling(m.high, p["window"], "max"), _rolling(m.low, p["window"], "min")]


def _many_keltner(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    if p["original_version"]:
        # ta.volatility.KeltnerChannel, original version: its bands average from the first bar on.
        high_band = ((4 * m.high) - (2 * m.low) + m.close) / 3.0
        low_band = ((-2 * m.high) + (4 * m.low) + m.close) / 3.0
        return [
            _rolling(high_band, p["window"], "mean", min_periods=0),
            _rolling(low_band, p["window"], "mean", min_periods=0),
        ]
    centre = _ema_rows(m.close, p["window"])
    true_range = atr_many(m.high, m.low, m.close, p["window_atr"])
    return [centre + p["multiplier"] * true_range, centre - p["multiplier"] * true_range]


def _many_log_return(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    # ta.others.DailyLogReturnIndicator: diff of log(close), times 100
    with np.errstate(divide="ignore", invalid="ignore"):
        return [(np.log(m.close) - _shift_rows(np.log(m.close), 1)) * 100]


def _many_roc(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    earlier = _shift_rows(m.close, p["window"])
    with np.errstate(invalid="ignore", divide="ignore"):
        return [((m.close - earlier) / earlier) * 100]


def _many_volume_sma(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_rolling(m.volume, p["window"], "mean")]


def _many_cmf(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    # ta.volume.ChaikinMoneyFlowIndicator
    with np.errstate(invalid="ignore", divide="ignore"):
        flow = ((m.close - m.low) - (m.high - m.close)) / (m.high - m.low)
        flow = np.where(np.isnan(flow), 0.0, flow) * m.volume
        return [_rolling(flow, p["window"], "sum") / _rolling(m.volume, p["window"], "sum")]


def _many_force_index(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_ema_rows((m.close - _shift_rows(m.close, 1)) * m.volume, p["window"])]


def _many_realized_vol(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [_in_row_chunks(realized_vol_many, (m.close,), p["window"])]


def _many_ewm_vol(m: _Many, p: Mapping[str, Any]) -> list[np.ndarray]:
    return [ewm_vol_many(m.close, p["decay"])]


# Each indicator's computation over many tickers at once; an indicator missing here is computed per
# ticker with its `compute` (correct, only slower).
MANY_COMPUTE: dict[str, Callable[[_Many, Mapping[str, Any]], list[np.ndarray]]] = {
    "ema": _many_ema,
    "sma": _many_sma,
    "rsi": _many_rsi,
    "macd": _many_macd,
    "bollinger": _many_bollinger,
    "atr": _many_atr,
    "obv": _many_obv,
    "mfi": _many_mfi,
    "adx": _many_adx,
    "vwap": _many_vwap,
    "psar": _many_psar,
    "stoch": _many_stoch,
    "cci": _many_cci,
    "williams_r": _many_williams_r,
    "donchian": _many_donchian,
    "keltner": _many_keltner,
    "log_return": _many_log_return,
    "roc": _many_roc,
    "volume_sma": _many_volume_sma,
    "cmf": _many_cmf,
    "force_index": _many_force_index,
    "realized_vol": _many_realized_vol,
    "ewm_vol": _many_ewm_vol,
}


def _compute_one(
    open_: np.ndarray,
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    item: ResolvedIndicator,
) -> tuple[np.ndarray, ...]:
    return tuple(item.definition.compute(_Inputs(open_, high, low, close, volume), item.params))


def _feature_columns_many(bars: _Many, resolved: Sequence[ResolvedIndicator]) -> Iterator[np.ndarray]:
    """`compute_feature_array` of each row, one (tickers, bars) feature column after the other."""
    rows, n = bars.close.shape
    warmup = max((item.warmup for item in resolved), default=0)
    yield from (bars.open, bars.high, bars.low, bars.close, bars.volume)
    for item in resolved:
        many = MANY_COMPUTE.get(item.name)
        if many is not None:
            outputs = many(bars, item.params)
        else:
            arrays = (bars.open, bars.high, bars.low, bars.close, bars.volume)
            outputs = _scalar_rows(_compute_one, arrays, item)
        fallbacks = item.definition.fallbacks(item.params)
        for values, fallback in zip(outputs, fallbacks, strict=True):
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (rows, n):  # pragma: no cover - a kernel mistake would land here
                raise InputDataError(
                    f"Indicator `{item.name}` returned {values.shape} values for {(rows, n)} bars."
                )
            tail = values[:, warmup:]
            bad = ~np.isfinite(tail)
            if bad.any():
                tail = tail.copy()
                if fallback == "close":
                    tail[bad] = bars.close[:, warmup:][bad]
                elif fallback == "typical":
                    tail[bad] = bars.typical[:, warmup:][bad]
                else:
                    tail[bad] = float(fallback)
                values = np.concatenate([values[:, :warmup], tail], axis=1)
            yield values


def compute_model_features_many(
    series: Sequence[Sequence[np.ndarray]],
    indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator],
    *,
    block_cells: int = MANY_BLOCK_CELLS,
) -> list[np.ndarray]:
    """`compute_model_features` of many tickers at once (see the section comment above).

    `series[k]` is ticker k's (open, high, low, close, volume), each of its own length; the result's
    element k is its (bars, features) array, equal to `compute_model_features(*series[k], ...)`.
    """
    resolved = _resolved(indicators)
    n_columns = len(OHLCV) + sum(len(item.columns) for item in resolved)
    results = [np.full((len(bars[0]) if len(bars) else 0, n_columns), np.nan) for bars in series]
    for k, values in iter_model_features_many(series, resolved, block_cells=block_cells):
        results[k] = values
    return results


def iter_model_features_many(
    series: Sequence[Sequence[np.ndarray]],
    indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator],
    *,
    block_cells: int = MANY_BLOCK_CELLS,
) -> Iterator[tuple[int, np.ndarray]]:
    """(k, features of `series[k]`) for every non-empty series, a block of tickers at a time.

    Tickers of similar lengths are computed together in blocks of at most `block_cells` tickers x
    bars; a caller that stores each result before taking the next holds one block at a time.
    Raises InputDataError for bars with missing or infinite values.
    """
    resolved = _resolved(indicators)
    kinds = column_kinds(resolved)
    warmup = model_warmup(resolved)
    arrays = [[np.asarray(a, dtype=np.float64) for a in bars] for bars in series]
    for ticker_bars in arrays:
        if len(ticker_bars) != len(OHLCV) or len({len(a) for a in ticker_bars}) != 1:
            raise InputDataError("Every ticker needs open, high, low, close and volume of one length.")
        if not all(np.isfinite(a).all() for a in ticker_bars):
            raise InputDataError(
                "Bars contain missing or infinite prices or volumes.", hint="Re-fetch the ticker."
            )
    lengths = np.array([len(ticker_bars[0]) for ticker_bars in arrays], dtype=np.int64)
    order = [int(k) for k in np.argsort(-lengths, kind="stable") if lengths[k] > 0]
    begin = 0
    while begin < len(order):
        longest = int(lengths[order[begin]])
        end = begin + max(1, block_cells // longest)
        block = order[begin:end]
        begin = end
        padded = []
        for j in range(len(OHLCV)):
            values = np.empty((len(block), longest))
            for row, k in enumerate(block):
                own = arrays[k][j]
                values[row, : len(own)] = own
                values[row, len(own) :] = own[-1]  # after its last bar: ignored (every value is causal)
            padded.append(values)
        block_bars = _Many(*padded)
        transform = _ScaleFree(block_bars.close, block_bars.volume)
        # Stored a feature at a time; each ticker gets a (bars, features) view of its own rows, whose
        # few hundred KB a caller reads in cache (one transposing copy of the block would cost as much
        # time again, and its memory).
        by_feature = np.empty((len(kinds), len(block), longest))
        for j, raw in enumerate(_feature_columns_many(block_bars, resolved)):
            values = transform(raw, kinds[j])
            values[:, : min(warmup, longest)] = np.nan
            values[~np.isfinite(values)] = np.nan  # as `compute_model_features`: a NaN row is unusable
            by_feature[j] = values
        for row, k in enumerate(block):
            yield k, by_feature[:, row, : lengths[k]].T


# Sessions after which a recursive indicator has forgotten where its history started, to ~1e-9:
# an EMA of span w weighs the start by (1 - 2/(w+1))^n, Wilder smoothing (RSI, ATR, ADX) by
# (1 - 1/w)^n, an EWMA volatility by decay^n.
_FORGET = 20.7  # ln(1e9)


def memory_sessions(indicators: Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator]) -> int:
    """Bars of history after which every indicator's value no longer depends on where its history
    started (to ~1e-9): what the forecasting primitive must read before a window."""
    longest = 0
    for item in _resolved(indicators):
        p = item.params
        if item.name in ("ema", "force_index"):
            longest = max(longest, math.ceil(_FORGET * (p["window"] + 1) / 2))
        elif item.name == "macd":
            longest = max(longest, math.ceil(_FORGET * (max(p["window_slow"], p["window_fast"]) + 1) / 2))
        elif item.name == "keltner" and not p["original_version"]:
            longest = max(longest, math.ceil(_FORGET * max(p["window"] + 1, 2 * p["window_atr"]) / 2))
        elif item.name in ("rsi", "atr", "adx"):
            longest = max(longest, math.ceil(_FORGET * p["window"] * (2 if item.name == "adx" else 1)))
        elif item.name == "ewm_vol":
            longest = max(longest, math.ceil(_FORGET / -math.log(p["decay"])))
    return longest
