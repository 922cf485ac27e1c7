"""The numeric kernels of the indicators: (tickers, bars) float64 arrays in, the same shape out.

Each ticker is one LEFT-aligned row (the columns after its last bar repeat it; every kernel is causal,
so they cannot change its values). ta's rolling and ewm calls run through pandas so that each ticker
gets ta's bits; ta's Python loops step through time with one vector of tickers (tests/ta_oracles.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

# Below this many rows PSAR's scalar loop, row by row, is faster (a vector step costs ~60 us, a row 0.65 us).
PSAR_MIN_VECTOR_ROWS = 96


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
        max_high, min_low, previous = highs[i], lows[i], out[i - 1]
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
                low1, low2 = lows[i - 1], lows[i - 2]
                current = low2 if low2 < current else (low1 if low1 < current else current)
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
                high1, high2 = highs[i - 1], highs[i - 2]
                current = high2 if high2 > current else (high1 if high1 > current else current)
        out[i] = current
        up_trend = up_trend != reversal
    return np.asarray(out, dtype=np.float64)


def directional_indices(
    trs: np.ndarray, dip: np.ndarray, din: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ta's +DI, -DI and DX from the Wilder sums of true range, +DM and -DM (0 where a sum is 0)."""
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


def _window_view(values: np.ndarray, window: int) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(values, window, axis=-1)


def mfi(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray, window: int = 14
) -> np.ndarray:
    """Money flow index with ta's definition (its `rolling().apply` sums, vectorised)."""
    out = np.full(close.shape, np.nan)
    if close.shape[-1] < window:
        return out
    typical = (high + low + close) / 3.0
    previous = shift_rows(typical, 1)
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


# --- many tickers at once ------------------------------------------------------------------------


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


def rolling(
    values: np.ndarray, window: int, how: str, *, min_periods: int | None = None, **kwargs: Any
) -> np.ndarray:
    """pandas' `rolling(window, min_periods).<how>(**kwargs)` of each row (ta's `min_periods` default: window).

    One call over the rows laid end to end, windows cut at each row's start (pandas restarts there,
    so each row gets a Series' bits; ~5x faster than a DataFrame's columns).
    """
    import pandas as pd

    rows, n = values.shape
    end = np.arange(1, rows * n + 1, dtype=np.int64)
    start = end - np.minimum(np.tile(np.arange(1, n + 1, dtype=np.int64), rows), window)
    windows = _row_windows_class()(start=start, end=end)
    series = pd.Series(np.ascontiguousarray(values, dtype=np.float64).ravel(), copy=False)
    rolling = series.rolling(windows, min_periods=window if min_periods is None else min_periods)
    return np.asarray(getattr(rolling, how)(**kwargs).to_numpy(dtype=np.float64)).reshape(rows, n)


def ewm_mean(values: np.ndarray, **kwargs: Any) -> np.ndarray:
    """pandas' `ewm(**kwargs).mean()` of each row."""
    import pandas as pd

    frame = pd.DataFrame(values.T, copy=False)
    return np.asarray(frame.ewm(**kwargs).mean().to_numpy(dtype=np.float64).T)


def ema_rows(values: np.ndarray, window: int) -> np.ndarray:
    # ta.utils._ema without fillna
    return ewm_mean(values, span=window, min_periods=window, adjust=False)


def shift_rows(values: np.ndarray, periods: int) -> np.ndarray:
    """`values` `periods` bars later along the last axis, NaN before."""
    out = np.full(values.shape, np.nan)
    if periods < values.shape[-1]:
        out[..., periods:] = values[..., : values.shape[-1] - periods]
    return out


def psar_many(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, step: float = 0.02, max_step: float = 0.2
) -> np.ndarray:
    """`psar` of each row of (tickers, bars) arrays, stepping through time with a vector of tickers."""
    rows, n = close.shape
    if rows < PSAR_MIN_VECTOR_ROWS or n < 3:
        return np.stack([psar(*row, step, max_step) for row in zip(high, low, close, strict=True)])
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


def atr_many(high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14) -> np.ndarray:
    """Average true range of each row with ta's arithmetic (Wilder smoothing seeded by a plain mean)."""
    rows, n = close.shape
    if n < window:
        return np.full((rows, n), np.nan)
    previous = shift_rows(close, 1)
    with np.errstate(invalid="ignore"):
        stacked = np.stack([high - low, np.abs(high - previous), np.abs(low - previous)])
    true_range = np.nanmax(stacked, axis=0)  # ta: DataFrame.max(axis=1), which skips the NaN of row 0
    return _wilder_mean(true_range, window)


def _wilder_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Each row's Wilder mean with ta's arithmetic: 0 before its first full window, that window's
    plain mean, then (previous x (window - 1) + value) / window."""
    rows, n = values.shape
    out = np.zeros((n, rows))
    out[window - 1] = value = values[:, 0:window].mean(axis=1)
    by_session = np.ascontiguousarray(values.T)
    for t in range(window, n):
        value = (value * (window - 1) + by_session[t]) / float(window)
        out[t] = value
    return np.ascontiguousarray(out.T)


def adx_many(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, window: int = 14
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ADX, +DI and −DI of each row with ta's `ADXIndicator` arithmetic (zeros during warm-up, as ta emits)."""
    rows, n = close.shape
    if n < 2 * window:
        nan = np.full((rows, n), np.nan)
        return nan, nan.copy(), nan.copy()
    previous = shift_rows(close, 1)
    movement = np.maximum(high, previous) - np.minimum(low, previous)
    size = n - (window - 1)

    with np.errstate(invalid="ignore"):
        diff_up = high - shift_rows(high, 1)
        diff_down = shift_rows(low, 1) - low
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

    di_pos, di_neg, directional = directional_indices(trs, dip, din)
    adx_out = np.concatenate(
        [np.zeros((rows, window)), _wilder_mean(directional[:, : size - 1], window)], axis=1
    )
    pos_out = np.zeros((rows, n))
    neg_out = np.zeros((rows, n))
    pos_out[:, window + 1 : window + size - 1] = di_pos[:, 1 : size - 1]
    neg_out[:, window + 1 : window + size - 1] = di_neg[:, 1 : size - 1]
    return adx_out, pos_out, neg_out


# Rows per call of a sliding-window indicator: its temporaries stay in cache (~2 MB, not ~50 MB).
_WINDOW_CHUNK_ROWS = 16


def in_row_chunks(
    function: Callable[..., np.ndarray], arrays: Sequence[np.ndarray], *args: Any
) -> np.ndarray:
    rows = arrays[0].shape[0]
    if rows <= _WINDOW_CHUNK_ROWS:
        return function(*arrays, *args)
    chunks = range(0, rows, _WINDOW_CHUNK_ROWS)
    return np.concatenate([function(*(a[i : i + _WINDOW_CHUNK_ROWS] for a in arrays), *args) for i in chunks])


def log_returns_many(close: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(close / shift_rows(close, 1))


def realized_vol_many(close: np.ndarray, window: int = 20) -> np.ndarray:
    """log of the standard deviation (ddof 1) of the last `window` daily log returns of each row."""
    returns = log_returns_many(close)
    rows, n = close.shape
    out = np.full((rows, n), np.nan)
    if n > window:
        std = _window_view(returns[:, 1:], window).std(axis=2, ddof=1)
        with np.errstate(divide="ignore"):
            out[:, window:] = np.log(std + 1e-8)
    return out


def ewm_vol_many(close: np.ndarray, decay: float = 0.94, seed_window: int = 20) -> np.ndarray:
    """log of the exponentially weighted volatility of each row's daily log returns (RiskMetrics):
    seeded by the first `seed_window` squared returns, then v_t = decay v_(t-1) + (1 - decay) r_t^2."""
    rows, n = close.shape
    out = np.full((rows, n), np.nan)
    if n <= seed_window:
        return out
    squared = log_returns_many(close) ** 2
    variance = squared[:, 1 : seed_window + 1].mean(axis=1)
    values = np.empty((n - seed_window, rows))
    values[0] = variance
    by_session = np.ascontiguousarray(squared.T)
    for t in range(seed_window + 1, n):
        variance = decay * variance + (1.0 - decay) * by_session[t]
        values[t - seed_window] = variance
    out[:, seed_window:] = np.log(np.sqrt(values.T) + 1e-8)
    return out


def trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of each row's last `window` values (NaN before a full window or over a NaN); summed
    window by window, so row t depends on nothing outside its window (bit for bit)."""
    out = np.full(values.shape, np.nan)
    if values.shape[-1] >= window:
        out[..., window - 1 :] = np.lib.stride_tricks.sliding_window_view(values, window, axis=-1).mean(
            axis=-1
        )
    return out
