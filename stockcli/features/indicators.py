"""Technical indicators, each ONE definition (parameters, columns, warm-up, memory, column kinds,
computation over many tickers at once), strictly causal, and held to the `ta` library's numbers by
tests/ta_oracles.py (ta is a test dependency only).

The warm-up covers the rows where ta gives NaN or a placeholder (ADX and ATR emit 0, PSAR repeats the
close); the memory is how long a recursive value (EMA, Wilder, EWMA) depends on where history started
(`serving_sessions`). A 0/0 after warm-up becomes ta's own `fillna` value or, for price lines, the
close (VWAP: the typical price), never a later row's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import numpy as np

from stockcli.errors import ConfigError, InputDataError
from stockcli.features.kernels import (
    adx_many,
    atr_many,
    cci,
    ema_rows,
    ewm_mean,
    ewm_vol_many,
    in_row_chunks,
    mfi,
    psar_many,
    realized_vol_many,
    rolling,
    shift_rows,
    trailing_mean,
)

OHLCV: tuple[str, ...] = ("open", "high", "low", "close", "volume")

# Fallback for a non-finite value after warm-up: a number, or the `Bars` line "close" or "typical".
Fallback = float | str


@dataclass(frozen=True)
class Bars:
    """Many tickers' bars as (tickers, bars) float64 arrays, one left-aligned ticker per row."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray

    @property
    def typical(self) -> np.ndarray:
        return (self.high + self.low + self.close) / 3.0


# --- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndicatorDef:
    """One indicator: parameters (type and default), output columns, warm-up, memory, computation."""

    name: str
    params: Mapping[str, tuple[type, Any]]
    warmup: Callable[[Mapping[str, Any]], int]
    compute: Callable[[Bars, Mapping[str, Any]], list[np.ndarray]]
    description: str
    kind: str = "level"  # every column's (`SCALE_KINDS`)
    # None: the close for a "price" indicator, else 0 (ta's `fillna`); a callable is asked on use.
    fallback: Fallback | Callable[[], float] | None = None
    memory: Callable[[Mapping[str, Any]], int] = lambda p: 0  # 0: a finite window
    # None: one column named by the indicator and every parameter (`psar_0.02_0.2`).
    columns: Callable[[Mapping[str, Any]], list[str]] | None = None

    def column_names(self, params: Mapping[str, Any]) -> list[str]:
        if self.columns is not None:
            return self.columns(params)
        return ["_".join([self.name, *(_fmt(params[key]) for key in self.params)])]

    def run(self, bars: Bars, params: Mapping[str, Any]) -> list[np.ndarray]:
        """`compute` with a 0/0 or a log(0) silent: after warm-up it gets the fallback (`with_fallback`)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.compute(bars, params)

    def fill(self) -> Fallback:
        if self.fallback is None:
            return "close" if self.kind == "price" else 0.0
        return self.fallback() if callable(self.fallback) else self.fallback


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Sessions after which the start weighs < 1e-9: EMA (1 - 2/(w+1))^n, Wilder (1 - 1/w)^n, EWMA decay^n.
_FORGET = 20.7  # ln(1e9)


def _ema_memory(span: int) -> int:
    return math.ceil(_FORGET * (span + 1) / 2)


def _wilder_memory(window: int) -> int:
    return math.ceil(_FORGET * window)


def _compute_rsi(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    window = p["window"]
    diff = m.close - shift_rows(m.close, 1)
    emaup = ewm_mean(np.where(diff > 0, diff, 0.0), alpha=1 / window, min_periods=window, adjust=False)
    emadn = ewm_mean(-np.where(diff < 0, diff, 0.0), alpha=1 / window, min_periods=window, adjust=False)
    return [np.where(emadn == 0, 100, 100 - (100 / (1 + emaup / emadn))).astype(np.float64)]


def _compute_bollinger(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    average = rolling(m.close, p["window"], "mean")
    deviation = rolling(m.close, p["window"], "std", ddof=0)
    return [average + p["window_dev"] * deviation, average - p["window_dev"] * deviation]


def _compute_stoch(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    smin = rolling(m.low, p["window"], "min")
    stoch_k = 100 * (m.close - smin) / (rolling(m.high, p["window"], "max") - smin)
    return [stoch_k, rolling(stoch_k, p["smooth_window"], "mean")]


def _compute_williams_r(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    highest_high = rolling(m.high, p["lbp"], "max")
    return [-100 * (highest_high - m.close) / (highest_high - rolling(m.low, p["lbp"], "min"))]


def _compute_keltner(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    if p["original_version"]:
        # ta.volatility.KeltnerChannel, original version: its bands average from the first bar on.
        high_band = ((4 * m.high) - (2 * m.low) + m.close) / 3.0
        low_band = ((-2 * m.high) + (4 * m.low) + m.close) / 3.0
        return [rolling(band, p["window"], "mean", min_periods=0) for band in (high_band, low_band)]
    centre = ema_rows(m.close, p["window"])
    true_range = atr_many(m.high, m.low, m.close, p["window_atr"])
    return [centre + p["multiplier"] * true_range, centre - p["multiplier"] * true_range]


def _compute_roc(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    earlier = shift_rows(m.close, p["window"])
    return [((m.close - earlier) / earlier) * 100]


def _compute_cmf(m: Bars, p: Mapping[str, Any]) -> list[np.ndarray]:
    flow = ((m.close - m.low) - (m.high - m.close)) / (m.high - m.low)
    flow = np.where(np.isnan(flow), 0.0, flow) * m.volume
    return [rolling(flow, p["window"], "sum") / rolling(m.volume, p["window"], "sum")]


# Range-based variances and the overnight gap (issue 17), as trailing means over `window` sessions.


def _range_variance(m: Bars, estimator: str) -> np.ndarray:
    """Each row's daily variance proxy, as the HAR forecaster defines it (`har.daily_variance`)."""
    from stockcli.ml.forecasters import TickerBars
    from stockcli.ml.forecasters.har import daily_variance

    rows = [TickerBars(m.open[k], m.high[k], m.low[k], m.close[k]) for k in range(m.close.shape[0])]
    return np.stack([daily_variance(bars, estimator) for bars in rows]) if rows else np.empty(m.close.shape)


def _log_variance_floor() -> float:
    from stockcli.ml.forecasters.har import VARIANCE_FLOOR

    return math.log(VARIANCE_FLOOR)


def _range_variance_def(estimator: str, intraday: str) -> IndicatorDef:
    return IndicatorDef(
        estimator,
        {"window": (int, 1)},
        lambda p: p["window"],  # the first variance needs the previous close
        lambda m, p: [np.log(in_row_chunks(trailing_mean, (_range_variance(m, estimator),), p["window"]))],
        f"log of the mean over `window` sessions of the {estimator.replace('_', '-').title()} daily variance "
        f"(overnight gap squared + {intraday})",
        fallback=_log_variance_floor,
    )


INDICATORS: dict[str, IndicatorDef] = {
    d.name: d
    for d in (
        IndicatorDef(
            "ema",
            {"window": (int, 14)},
            lambda p: p["window"] - 1,
            lambda m, p: [ema_rows(m.close, p["window"])],
            "exponential moving average of the close",
            kind="price",
            memory=lambda p: _ema_memory(p["window"]),
        ),
        IndicatorDef(
            "sma",
            {"window": (int, 20)},
            lambda p: p["window"] - 1,
            lambda m, p: [rolling(m.close, p["window"], "mean")],
            "simple moving average of the close",
            kind="price",
        ),
        IndicatorDef(
            "rsi",
            {"window": (int, 14)},
            lambda p: p["window"],
            _compute_rsi,
            "relative strength index",
            fallback=50.0,
            memory=lambda p: _wilder_memory(p["window"]),
        ),
        IndicatorDef(
            "macd",
            {"window_slow": (int, 26), "window_fast": (int, 12), "window_sign": (int, 9)},
            lambda p: max(p["window_slow"], p["window_fast"]) - 1,
            lambda m, p: [ema_rows(m.close, p["window_fast"]) - ema_rows(m.close, p["window_slow"])],
            "MACD line (fast EMA minus slow EMA)",
            kind="price_delta",
            memory=lambda p: _ema_memory(max(p["window_slow"], p["window_fast"])),
            columns=lambda p: [f"macd_{p['window_fast']}_{p['window_slow']}"],
        ),
        IndicatorDef(
            "bollinger",
            {"window": (int, 20), "window_dev": (float, 2.0)},
            lambda p: p["window"] - 1,
            _compute_bollinger,
            "Bollinger high and low bands",
            kind="price",
            columns=lambda p: [
                f"bb_high_{p['window']}_{_fmt(p['window_dev'])}",
                f"bb_low_{p['window']}_{_fmt(p['window_dev'])}",
            ],
        ),
        IndicatorDef(
            "atr",
            {"window": (int, 14)},
            lambda p: p["window"] - 1,
            lambda m, p: [atr_many(m.high, m.low, m.close, p["window"])],
            "average true range",
            kind="price_delta",
            memory=lambda p: _wilder_memory(p["window"]),
        ),
        IndicatorDef(
            "obv",
            {},
            lambda p: 1,
            lambda m, p: [np.cumsum(np.where(m.close < shift_rows(m.close, 1), -m.volume, m.volume), axis=1)],
            "on-balance volume",
            kind="flow",
        ),
        IndicatorDef(
            "mfi",
            {"window": (int, 14)},
            lambda p: p["window"],
            lambda m, p: [in_row_chunks(mfi, (m.high, m.low, m.close, m.volume), p["window"])],
            "money flow index",
            fallback=50.0,
        ),
        IndicatorDef(
            "adx",
            {"window": (int, 14)},
            lambda p: max(2 * p["window"] - 1, p["window"] + 1),
            lambda m, p: list(adx_many(m.high, m.low, m.close, p["window"])),
            "average directional index with +DI and -DI",
            memory=lambda p: _wilder_memory(2 * p["window"]),
            columns=lambda p: [f"adx_{p['window']}", f"adx_pos_{p['window']}", f"adx_neg_{p['window']}"],
        ),
        IndicatorDef(
            "vwap",
            {"window": (int, 14)},
            lambda p: p["window"] - 1,
            lambda m, p: [
                rolling(m.typical * m.volume, p["window"], "sum") / rolling(m.volume, p["window"], "sum")
            ],
            "rolling volume-weighted average price",
            kind="price",
            fallback="typical",
        ),
        IndicatorDef(
            "psar",
            {"step": (float, 0.02), "max_step": (float, 0.2)},
            lambda p: 2,
            lambda m, p: [psar_many(m.high, m.low, m.close, p["step"], p["max_step"])],
            "parabolic stop and reverse",
            kind="price",
        ),
        IndicatorDef(
            "stoch",
            {"window": (int, 14), "smooth_window": (int, 3)},
            lambda p: p["window"] + p["smooth_window"] - 2,
            _compute_stoch,
            "stochastic %K and %D",
            fallback=50.0,
            columns=lambda p: [f"stoch_k_{p['window']}", f"stoch_d_{p['window']}_{p['smooth_window']}"],
        ),
        IndicatorDef(
            "cci",
            {"window": (int, 20), "constant": (float, 0.015)},
            lambda p: p["window"] - 1,
            lambda m, p: [in_row_chunks(cci, (m.high, m.low, m.close), p["window"], p["constant"])],
            "commodity channel index",
            columns=lambda p: [f"cci_{p['window']}"],
        ),
        IndicatorDef(
            "williams_r",
            {"lbp": (int, 14)},
            lambda p: p["lbp"] - 1,
            _compute_williams_r,
            "Williams %R",
            fallback=-50.0,
        ),
        IndicatorDef(
            "donchian",
            {"window": (int, 20)},
            lambda p: p["window"] - 1,
            lambda m, p: [rolling(m.high, p["window"], "max"), rolling(m.low, p["window"], "min")],
            "Donchian channel high and low",
            kind="price",
            columns=lambda p: [f"donchian_high_{p['window']}", f"donchian_low_{p['window']}"],
        ),
        IndicatorDef(
            "keltner",
            {
                "window": (int, 20),
                "window_atr": (int, 10),
                "original_version": (bool, True),
                "multiplier": (float, 2.0),
            },
            lambda p: p["window"] - 1 if p["original_version"] else max(p["window"], p["window_atr"]) - 1,
            _compute_keltner,
            "Keltner channel high and low (window_atr and multiplier apply when original_version = false)",
            kind="price",
            memory=lambda p: (
                0 if p["original_version"] else max(_ema_memory(p["window"]), _wilder_memory(p["window_atr"]))
            ),
            columns=lambda p: [
                f"keltner_{side}_{p['window']}" + ("" if p["original_version"] else f"_{p['window_atr']}")
                for side in ("high", "low")
            ],
        ),
        IndicatorDef(
            "log_return",
            {},
            lambda p: 1,
            lambda m, p: [(np.log(m.close) - shift_rows(np.log(m.close), 1)) * 100],
            "daily log return of the close, in percent",
        ),
        IndicatorDef(
            "roc",
            {"window": (int, 12)},
            lambda p: p["window"],
            _compute_roc,
            "rate of change of the close, in percent",
        ),
        IndicatorDef(
            "volume_sma",
            {"window": (int, 20)},
            lambda p: p["window"] - 1,
            lambda m, p: [rolling(m.volume, p["window"], "mean")],
            "simple moving average of the volume",
            kind="volume",
        ),
        IndicatorDef(
            "cmf",
            {"window": (int, 20)},
            lambda p: p["window"] - 1,
            _compute_cmf,
            "Chaikin money flow",
        ),
        IndicatorDef(
            "force_index",
            {"window": (int, 13)},
            lambda p: p["window"],
            lambda m, p: [ema_rows((m.close - shift_rows(m.close, 1)) * m.volume, p["window"])],
            "force index (EMA of close change x volume)",
            kind="price_volume",
            memory=lambda p: _ema_memory(p["window"]),
        ),
        IndicatorDef(
            "realized_vol",
            {"window": (int, 20)},
            lambda p: p["window"],
            lambda m, p: [in_row_chunks(realized_vol_many, (m.close,), p["window"])],
            "log of the standard deviation of the last `window` daily log returns",
            fallback=np.log(1e-8),
        ),
        IndicatorDef(
            "ewm_vol",
            {"decay": (float, 0.94)},
            lambda p: 20,
            lambda m, p: [ewm_vol_many(m.close, p["decay"])],
            "log of the exponentially weighted volatility of daily log returns (RiskMetrics, decay 0.94)",
            fallback=np.log(1e-8),
            memory=lambda p: math.ceil(_FORGET / -math.log(p["decay"])),
        ),
        _range_variance_def("parkinson", "(ln H/L)^2 / (4 ln 2)"),
        _range_variance_def("garman_klass", "0.5 (ln H/L)^2 - (2 ln 2 - 1) (ln C/O)^2"),
        IndicatorDef(
            "overnight_gap",
            {"window": (int, 1)},
            lambda p: p["window"],
            lambda m, p: [
                in_row_chunks(trailing_mean, (np.log(m.open / shift_rows(m.close, 1)),), p["window"])
            ],
            "mean over `window` sessions of the overnight gap log(open_t / close_(t-1))",
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


Indicators: TypeAlias = Sequence[Mapping[str, Any]] | Sequence[ResolvedIndicator]


# Beyond these bounds a parameter is a typo (a window of four years would delay every first row).
MAX_WINDOW_SESSIONS = 1000
MAX_FACTOR = 1000.0


def _check_param(indicator: str, key: str, kind: type, value: Any) -> Any:
    where = f"Indicator `{indicator}` parameter `{key}`"
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}.")
    if kind is int:
        if number and isinstance(value, int) and 1 <= value <= MAX_WINDOW_SESSIONS:
            return int(value)
        raise ConfigError(
            f"{where} must be a whole number of sessions from 1 to {MAX_WINDOW_SESSIONS}, got {value!r}."
        )
    if key == "decay":  # a weight kept per session: a fraction
        if number and 0 < value < 1:
            return float(value)
        raise ConfigError(f"{where} must be between 0 and 1, got {value!r}.")
    if number and np.isfinite(value) and 0 < value <= MAX_FACTOR:
        return float(value)
    raise ConfigError(f"{where} must be a positive number up to {MAX_FACTOR:g}, got {value!r}.")


def resolve_indicators(indicators: Sequence[Mapping[str, Any]]) -> list[ResolvedIndicator]:
    """Validate indicator entries and fill in defaults; ConfigError for an unknown indicator or
    parameter, a bad value, or a column produced twice."""
    resolved: list[ResolvedIndicator] = []
    seen: set[str] = set()
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
        columns = tuple(definition.column_names(params))
        for column in columns:
            if column in seen or column in OHLCV:
                raise ConfigError(
                    f"Indicator `{name}` with {params or 'no parameters'} produces column `{column}` "
                    f"that another entry already produces.",
                    hint="Remove the duplicate entry from [features] indicators.",
                )
            seen.add(column)
        resolved.append(ResolvedIndicator(name, params, columns, int(definition.warmup(params)), definition))
    return resolved


def canonical_indicators(indicators: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The indicator entries with every parameter spelled out (what a dataset's spec records)."""
    return [{"name": item.name, **item.params} for item in resolve_indicators(indicators)]


def feature_names(indicators: Indicators) -> list[str]:
    """OHLCV followed by every indicator column, in config order."""
    return [*OHLCV, *(column for item in _resolved(indicators) for column in item.columns)]


def _resolved(indicators: Indicators) -> list[ResolvedIndicator]:
    if indicators and all(isinstance(item, ResolvedIndicator) for item in indicators):
        return list(indicators)  # type: ignore[arg-type]
    return resolve_indicators(indicators)  # type: ignore[arg-type]


# --- scale-free model features (one network serves a $20 stock and a 3,000-point index) -----------
# price: log(value / close) · price_delta: value / close · level: as is · return: log(c_t / c_t-1)
# volume: log(1 + value / mean volume of 20 bars) · flow (OBV): change over 20 bars / their volume
# price_volume: value / (close x mean volume); 0 where a series trades no volume at all.

OHLCV_KINDS = {"open": "price", "high": "price", "low": "price", "close": "return", "volume": "volume"}
SCALE_KINDS = ("price", "price_delta", "level", "return", "volume", "flow", "price_volume")
VOLUME_BASE_WINDOW = 20


def column_kinds(indicators: Indicators) -> list[str]:
    """The scale-free kind of every feature column, in `feature_names` order."""
    kinds = [OHLCV_KINDS[name] for name in OHLCV]
    return kinds + [item.definition.kind for item in _resolved(indicators) for _ in item.columns]


def model_warmup(indicators: Indicators) -> int:
    """Leading bars of a ticker without a valid model feature row (indicator and transform warm-up)."""
    resolved = _resolved(indicators)
    transform = VOLUME_BASE_WINDOW if "flow" in column_kinds(resolved) else VOLUME_BASE_WINDOW - 1
    return max([transform, *(item.warmup for item in resolved)])


def _rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    out = np.full(values.shape, np.nan)
    if values.shape[-1] >= window:
        sums = np.cumsum(np.concatenate([np.zeros((*values.shape[:-1], 1)), values], axis=-1), axis=-1)
        out[..., window - 1 :] = (sums[..., window:] - sums[..., :-window]) / window
    return out


class ScaleFree:
    """The scale-free transform of one raw column (bars on the last axis) by kind (see above)."""

    def __init__(self, close: np.ndarray, volume: np.ndarray):
        self.close = close
        self.volume_base = _rolling_mean(volume, VOLUME_BASE_WINDOW)
        # An index may trade "zero shares": it gets neutral values instead of a 0/0.
        self.traded = np.isfinite(self.volume_base) & (self.volume_base > 0)
        self.safe_base = np.where(self.traded, self.volume_base, 1.0)
        self.untraded = np.where(np.isfinite(self.volume_base), 0.0, np.nan)  # what a volume kind gets

    def __call__(self, column: np.ndarray, kind: str) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            if kind == "price":
                return np.log(column / self.close)
            if kind == "price_delta":
                return column / self.close
            if kind == "level":
                return np.array(column, dtype=np.float64)
            if kind == "return":
                return np.log(column / shift_rows(column, 1))
            if kind == "volume":
                return np.where(
                    self.traded, np.log1p(np.maximum(column, 0.0) / self.safe_base), self.untraded
                )
            if kind == "flow":
                change = column - shift_rows(column, VOLUME_BASE_WINDOW)
                flow = change / (VOLUME_BASE_WINDOW * self.safe_base)
                untraded = np.where(np.isfinite(change + self.volume_base), 0.0, np.nan)
                return np.where(self.traded, flow, untraded)
            if kind == "price_volume":
                return np.where(self.traded, column / (self.close * self.safe_base), self.untraded)
        raise ConfigError(f"Unknown scale-free kind {kind!r}.")  # pragma: no cover - guarded by SCALE_KINDS


# --- the bars serving reads ------------------------------------------------------------------------

# Sessions read before a window, at least: with the default indicators, 600 sessions give features
# within 1e-10 of a full history (tests/test_features.py); a longer memory (an EMA 200) raises it.
SERVING_LOOKBACK = 600
SERVING_MARGIN = 5  # sessions for the calendar's edges


def serving_lookback(indicators: Indicators) -> int:
    """Sessions read before a window's first usable row: the longest indicator memory, at least
    `SERVING_LOOKBACK`."""
    memories = (int(item.definition.memory(item.params)) for item in _resolved(indicators))
    return max([SERVING_LOOKBACK, *memories])


def serving_sessions(indicators: Indicators, sequence_length: int) -> int:
    """Sessions of bars to load to serve one window: look-back, warm-up, window and a margin."""
    resolved = _resolved(indicators)
    return serving_lookback(resolved) + int(sequence_length) + model_warmup(resolved) + SERVING_MARGIN


# --- model features of many tickers at once -------------------------------------------------------

# Cells (tickers x bars) per block: as fast as one block of 472 tickers, 80 MB less peak memory.
MANY_BLOCK_CELLS = 1 << 17


def with_fallback(values: np.ndarray, fallback: Fallback, bars: Bars, warmup: int) -> np.ndarray:
    """`values` as float64, each non-finite one after `warmup` replaced by the indicator's fallback
    (a number, or the `bars` line it names)."""
    values = np.asarray(values, dtype=np.float64)
    tail = values[..., warmup:]
    bad = ~np.isfinite(tail)
    if not bad.any():
        return values
    fill = getattr(bars, fallback)[..., warmup:] if isinstance(fallback, str) else fallback
    return np.concatenate([values[..., :warmup], np.where(bad, fill, tail)], axis=-1)


def feature_columns(bars: Bars, resolved: Sequence[ResolvedIndicator]) -> Iterator[np.ndarray]:
    """Every raw feature column (OHLCV, then the indicators'), one (tickers, bars) array at a time."""
    warmup = max((item.warmup for item in resolved), default=0)
    yield from (bars.open, bars.high, bars.low, bars.close, bars.volume)
    for item in resolved:
        columns = item.definition.run(bars, item.params)
        yield from (with_fallback(values, item.definition.fill(), bars, warmup) for values in columns)


def iter_model_features(
    series: Sequence[Sequence[np.ndarray]],
    indicators: Indicators,
    *,
    block_cells: int = MANY_BLOCK_CELLS,
) -> Iterator[tuple[int, np.ndarray]]:
    """(k, features of `series[k]`) for every non-empty series, computed in blocks of tickers of
    similar lengths. Raises InputDataError for bars with missing or infinite values."""
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
        # After its last bar a row repeats it: ignored, since every value is causal.
        padded = [
            np.stack([np.pad(arrays[k][j], (0, longest - lengths[k]), mode="edge") for k in block])
            for j in range(len(OHLCV))
        ]
        block_bars = Bars(*padded)
        transform = ScaleFree(block_bars.close, block_bars.volume)
        # A feature at a time; each ticker gets a (bars, features) view (a transposed copy costs as much).
        by_feature = np.empty((len(kinds), len(block), longest))
        for j, raw in enumerate(feature_columns(block_bars, resolved)):
            values = transform(raw, kinds[j])
            values[:, : min(warmup, longest)] = np.nan
            values[~np.isfinite(values)] = np.nan  # a row with NaN is unusable: never reaches the network
            by_feature[j] = values
        for row, k in enumerate(block):
            yield k, by_feature[:, row, : lengths[k]].T
