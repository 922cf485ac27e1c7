"""Model features of many tickers at once: the numbers of `indicators.compute_model_features`, batched.

Serving 500 tickers through `compute_model_features` cost ~20 ms a ticker, nearly all of it pandas
overhead (ta builds ~100 Series per ticker over a few hundred bars). `compute_model_features_many`
gives the very same numbers for many tickers at once: each ticker is one row of a (tickers, bars)
array, LEFT-aligned (row k holds its own bars in columns 0..len_k-1; the columns after it repeat its
last bar and are thrown away), and every indicator runs once over the whole array:

- ta's pandas arithmetic is replayed on numpy rows (elementwise operations are exact), and its
  rolling and ewm calls run on a DataFrame whose columns are the tickers: pandas applies the same
  kernel to each column as to a Series, so each ticker gets the same bits;
- the loops (PSAR, ATR, ADX, the EWMA volatility) step through time with one vector of tickers,
  each element doing the scalar loop's arithmetic;
- every indicator and transform is causal (`test_features_are_causal_prefix_stable`), so what
  follows a ticker's last bar in its row cannot change its values.

Tests hold every indicator of the registry to the per-ticker path on real and synthetic bars.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from stockcli.errors import ConfigError, InputDataError
from stockcli.features.indicators import (
    OHLCV,
    ResolvedIndicator,
    _Inputs,
    _resolved,
    _ScaleFree,
    adx,
    atr,
    cci,
    column_kinds,
    directional_indices,
    ewm_vol,
    mfi,
    model_warmup,
    psar,
)

if TYPE_CHECKING:
    import pandas as pd


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

    di_pos, di_neg, directional = directional_indices(trs, dip, din)
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
    return [_in_row_chunks(mfi, (m.high, m.low, m.close, m.volume), p["window"])]


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
    return [_in_row_chunks(cci, (m.high, m.low, m.close), p["window"], p["constant"])]


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
