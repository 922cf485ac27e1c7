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

import math
from collections.abc import Callable, Mapping, Sequence
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


def directional_indices(
    trs: np.ndarray, dip: np.ndarray, din: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ta's +DI, -DI and DX from the Wilder sums of true range, +DM and -DM (0 where a sum is 0).

    Elementwise, so the same for one ticker's (bars,) arrays as for many tickers' (tickers, bars).
    """
    nonzero = trs != 0
    safe = np.where(nonzero, trs, 1.0)
    di_pos = np.where(nonzero, 100 * (dip / safe), 0.0)
    di_neg = np.where(nonzero, 100 * (din / safe), 0.0)
    total = di_pos + di_neg
    with np.errstate(invalid="ignore", divide="ignore"):
        directional = np.where(
            total != 0, 100 * np.abs((di_pos - di_neg) / np.where(total != 0, total, 1.0)), 0.0
        )
    return di_pos, di_neg, directional


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


def _window_view(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing windows along the last axis (bars): (..., bars - window + 1, window)."""
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=-1)


# MFI and CCI take one ticker's (bars,) arrays or many tickers' (tickers, bars): bars on the last
# axis, and each ticker's values are the same either way.


def mfi(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, window: int = 14
) -> np.ndarray:
    """Money flow index with ta's definition (its `rolling().apply` sums, vectorised)."""
    out = np.full(close.shape, np.nan)
    if close.shape[-1] < window:
        return out
    typical = (high + low + close) / 3.0
    previous = np.full(typical.shape, np.nan)
    previous[..., 1:] = typical[..., :-1]
    with np.errstate(invalid="ignore"):
        up_down = np.where(typical > previous, 1, np.where(typical < previous, -1, 0))
    flow = typical * volume * up_down
    windows = _window_view(flow, window)
    positive = np.where(windows >= 0.0, windows, 0.0).sum(axis=-1)
    negative = np.abs(np.where(windows < 0.0, windows, 0.0).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out[..., window - 1 :] = 100 - (100 / (1 + positive / negative))
    return out


def cci(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 20, constant: float = 0.015
) -> np.ndarray:
    """Commodity channel index with ta's definition (mean absolute deviation, vectorised)."""
    out = np.full(close.shape, np.nan)
    if close.shape[-1] < window:
        return out
    typical = (high + low + close) / 3.0
    windows = _window_view(typical, window)
    means = windows.mean(axis=-1)
    mad = np.abs(windows - means[..., None]).mean(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[..., window - 1 :] = (typical[..., window - 1 :] - means) / (constant * mad)
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


# Bounds of every indicator parameter: a window longer than four years of sessions, or a factor
# above this, is a typo (and would make every ticker wait years for its first row).
MAX_WINDOW_SESSIONS = 1000
MAX_FACTOR = 1000.0


def _check_param(indicator: str, key: str, kind: type, value: Any) -> Any:
    where = f"Indicator `{indicator}` parameter `{key}`"
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WINDOW_SESSIONS:
            return int(value)
        raise ConfigError(
            f"{where} must be a whole number of sessions from 1 to {MAX_WINDOW_SESSIONS}, got {value!r}."
        )
    if key == "decay":  # a weight kept per session: a fraction
        if isinstance(value, int | float) and not isinstance(value, bool) and 0 < value < 1:
            return float(value)
        raise ConfigError(f"{where} must be between 0 and 1, got {value!r}.")
    number_ok = isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)
    if number_ok and 0 < value <= MAX_FACTOR:
        return float(value)
    raise ConfigError(f"{where} must be a positive number up to {MAX_FACTOR:g}, got {value!r}.")


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
