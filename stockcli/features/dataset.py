"""Datasets as arrays: the panel, next-session targets, the calendar split, pooled windows, scalers
and the forecasting input primitive (DESIGN, core idea 9). Pure: frames and arrays in, arrays out.

1. Features per series on its own bars, scale-free; warm-up rows dropped, nothing back-filled.
2. The panel's rows are the union of every series' dates and the exchange's sessions. A series
   without a bar takes its previous row for at most `ffill_limit` rows (`valid`, not `real`); one
   series' gap never removes another's rows.
3. Target of a real row t: the close of the series' bar on row t+1 (price and log return); NaN
   when that bar is missing.
4. Windows are (row, series) pairs: L valid rows of a watchlist series ending at a real row with a
   target, pooled over series, split by target date (shared by every series, so promotion compares
   on one window).
5. Scalers are pooled (one mean and scale per feature) and fit on training dates only.
6. Context series (an index) add a few features and a presence flag to every row; missing is
   masked, never a reason to drop the row.
7. A part is stored as its scaled slab (rows x series x features, float32) plus (row, series) index
   pairs: one slab, not a copy per window.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from stockcli.errors import InputDataError, NoDataError, UsageError
from stockcli.features.indicators import (
    OHLCV,
    column_kinds,
    feature_names,
    iter_model_features,
    model_warmup,
    resolve_indicators,
)
from stockcli.jsonable import to_plain

if TYPE_CHECKING:
    import pandas as pd

SPEC_VERSION = 2
PARTS = ("train", "validation", "test")


Progress = Callable[[str, int, int], None]

_EPOCH = date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's feature spec: everything needed to recompute its features (what `process` stores)."""

    version: int
    tickers: tuple[str, ...]
    context_tickers: tuple[str, ...]
    series: tuple[str, ...]  # tickers, then context series that are not tickers
    indicators: tuple[dict[str, Any], ...]  # every parameter spelled out
    feature_names: tuple[str, ...]
    feature_kinds: tuple[str, ...]
    ffill_limit: int
    start_date: date
    warmup_sessions: int
    serving_lookback: int

    def to_json(self) -> dict[str, Any]:
        """The spec as stored: dates as ISO text, tuples as lists, an absent (None) field left out."""
        return {name: to_plain(value) for name, value in asdict(self).items() if value is not None}

    @classmethod
    def from_json(cls, plain: Mapping[str, Any]) -> Self:
        """A spec from its stored JSON; raises TypeError when a required key is missing."""
        names = [item.name for item in fields(cls) if plain.get(item.name) is not None]
        return cls(**{name: _from_plain(name, plain[name]) for name in names})

    def built(
        self,
        kept_names: Sequence[str],
        context_names: Sequence[str],
        sequence_length: int,
        *,
        dataset_run_id: str | None = None,
        end_date: date | None = None,
    ) -> BuiltSpec:
        """This spec plus what building it decided: the model's exact input contract."""
        own = {item.name: getattr(self, item.name) for item in fields(DatasetSpec)}
        return BuiltSpec(
            **{**own, "feature_names": tuple(kept_names)},
            all_feature_names=self.feature_names,
            context_features=tuple(context_names),
            sequence_length=int(sequence_length),
            target_kind="return",
            dataset_run_id=dataset_run_id,
            end_date=end_date,
        )


@dataclass(frozen=True)
class BuiltSpec(DatasetSpec):
    """A built dataset's spec, what a model version carries: `feature_names` are the kept features in
    input order; `dataset_run_id` and `end_date` (the last session seen) may be None in older bundles."""

    all_feature_names: tuple[str, ...]  # every feature before the correlation filter
    context_features: tuple[str, ...]
    sequence_length: int
    target_kind: str
    dataset_run_id: str | None = None
    end_date: date | None = None


def _from_plain(name: str, value: Any) -> Any:
    if name.endswith("_date"):
        return date.fromisoformat(value)
    return tuple(value) if isinstance(value, list) else value


def dates_to_days(dates: Any) -> np.ndarray:
    """Dates (a DatetimeIndex or a sequence of dates) as int64 days since 1970-01-01."""
    return np.asarray(dates, dtype="datetime64[D]").astype(np.int64)


def days_to_dates(days: np.ndarray) -> list[date]:
    return [date.fromordinal(int(d) + _EPOCH) for d in days]


# --- process: the panel -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Panel:
    """Every series on one row axis: features, closes, validity and next-session targets.

    `series`: the watchlist `tickers`, then context series outside it. NaN where no value exists.
    """

    series: tuple[str, ...]
    tickers: tuple[str, ...]
    context_tickers: tuple[str, ...]
    feature_names: tuple[str, ...]
    dates: list[date]
    features: np.ndarray  # (rows, series, features) float64, scale-free; NaN where not valid
    closes: np.ndarray  # (rows, series) float64: the close of the row (forward-filled rows repeat it)
    valid: np.ndarray  # (rows, series) bool: a usable feature row
    real: np.ndarray  # (rows, series) bool: a real bar of the series on that row
    target_price: np.ndarray  # (rows, series): close of the next row's bar; NaN when there is none
    target_return: np.ndarray  # (rows, series): log(target_price / close)

    @property
    def n_sessions(self) -> int:
        return len(self.dates)

    def index_of(self, name: str) -> int:
        return self.series.index(name)

    def mask(self) -> np.ndarray:
        """`valid` and `real` packed into one int8 array (bit 1: valid, bit 2: real) for storage."""
        return (self.valid.astype(np.int8) | (self.real.astype(np.int8) << 1)).astype(np.int8)

    @staticmethod
    def unpack_mask(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (mask & 1).astype(bool), (mask & 2).astype(bool)


def _series_arrays(
    frame: pd.DataFrame, start: date | None, end: date | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    days = dates_to_days(frame.index)
    low = -np.inf if start is None else start.toordinal() - _EPOCH
    high = np.inf if end is None else end.toordinal() - _EPOCH
    keep = (days >= low) & (days <= high)
    columns = [frame[c].to_numpy(dtype=np.float64)[keep] for c in OHLCV]
    days = days[keep]
    if len(days) > 1 and not (np.diff(days) > 0).all():
        raise InputDataError("Bars are not sorted by date or hold a date twice.", hint="Re-fetch the ticker.")
    return days, columns


def series_order(tickers: Sequence[str], context_tickers: Sequence[str]) -> tuple[str, ...]:
    """The panel's series: the watchlist, then context series outside it."""
    tickers = tuple(tickers)
    return tickers + tuple(c for c in context_tickers if c not in tickers)


def make_panel(
    bars: Mapping[str, pd.DataFrame],
    *,
    tickers: Sequence[str],
    context_tickers: Sequence[str] = (),
    indicators: Sequence[Mapping[str, Any]],
    ffill_limit: int,
    start_date: date | None = None,
    end_date: date | None = None,
    sessions: Sequence[date] | None = None,
    progress: Progress | None = None,
) -> Panel:
    """The panel of `tickers` and `context_tickers` (see the module docstring).

    `bars[name]`: a DatetimeIndex and OHLCV columns, clipped to [`start_date`, `end_date`].
    `sessions` join the row axis, so a session without a bar is a gap (no target across it).
    """
    resolved = resolve_indicators(indicators)
    warmup = model_warmup(resolved)
    names = tuple(feature_names(resolved))
    tickers = tuple(tickers)
    series = series_order(tickers, context_tickers)
    empty = (np.zeros(0, dtype=np.int64), [np.zeros(0) for _ in OHLCV])
    per_series = [
        _series_arrays(bars[name], start_date, end_date) if name in bars else empty for name in series
    ]
    all_days = [days for days, _ in per_series if len(days)]
    axis = np.unique(np.concatenate(all_days)) if all_days else np.zeros(0, dtype=np.int64)
    if sessions is not None and len(axis):
        extra = dates_to_days(list(sessions))
        extra = extra[(extra >= axis[0]) & (extra <= axis[-1])]
        axis = np.union1d(axis, extra)
    n_rows, n_series, n_features = len(axis), len(series), len(names)
    positions = np.arange(n_rows)
    features = np.full((n_rows, n_series, n_features), np.nan)
    closes = np.full((n_rows, n_series), np.nan)
    valid = np.zeros((n_rows, n_series), dtype=bool)
    real = np.zeros((n_rows, n_series), dtype=bool)
    for s, (days, _) in enumerate(per_series):
        real[np.searchsorted(axis, days), s] = True  # a bar of its own, usable or still in its warm-up
    report = progress or (lambda stage, done, total: None)
    long_enough = [s for s, (days, _) in enumerate(per_series) if len(days) > warmup]
    short = [s for s in range(n_series) if s not in long_enough]  # still in its warm-up: no usable row
    for done, s in enumerate(short, 1):
        report(f"features {series[s]}", done, n_series)
    computed = iter_model_features([per_series[s][1] for s in long_enough], resolved)
    for done, (i, values) in enumerate(computed, len(short) + 1):
        s = long_enough[i]
        days, columns = per_series[s]
        usable = np.isfinite(values).all(axis=1)
        direct = np.full(n_rows, -1, dtype=np.int64)
        direct[np.searchsorted(axis, days)[usable]] = np.flatnonzero(usable)
        last = np.maximum.accumulate(np.where(direct >= 0, positions, -1))
        source = np.where((last >= 0) & (positions - last <= ffill_limit), direct[np.maximum(last, 0)], -1)
        valid[:, s] = source >= 0
        chosen = source[valid[:, s]]
        features[valid[:, s], s, :] = values[chosen]
        closes[valid[:, s], s] = columns[OHLCV.index("close")][chosen]
        report(f"features {series[s]}", done, n_series)
    target_price = np.full((n_rows, n_series), np.nan)
    has_next = real[:-1] & real[1:]
    target_price[:-1][has_next] = closes[1:][has_next]
    with np.errstate(divide="ignore", invalid="ignore"):
        target_return = np.log(target_price / closes)
    bad = ~np.isfinite(target_return)
    target_price[bad] = target_return[bad] = np.nan
    return Panel(
        series=series,
        tickers=tickers,
        context_tickers=tuple(context_tickers),
        feature_names=names,
        dates=days_to_dates(axis),
        features=features,
        closes=closes,
        valid=valid,
        real=real,
        target_price=target_price,
        target_return=target_return,
    )


def sessions_short(run: int, bars: int, sequence_length: int, warmup: int) -> int:
    """Sessions a series still needs before its first window (the rest of its warm-up plus L, or
    what its current run lacks)."""
    if bars <= warmup:
        return warmup - bars + sequence_length
    return max(sequence_length - run, 0)


def run_lengths(valid: np.ndarray) -> np.ndarray:
    """For each row (and column), how many consecutive valid rows end there (0 where not valid)."""
    valid = np.asarray(valid, dtype=bool)
    index = np.arange(valid.shape[0]).reshape((-1,) + (1,) * (valid.ndim - 1))
    last_invalid = np.maximum.accumulate(np.where(~valid, index, -1), axis=0)
    return np.where(valid, index - last_invalid, 0)


def window_pairs(panel: Panel, sequence_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, series) of every window, ordered by row, then series."""
    n = len(panel.tickers)
    with_target = panel.real[:, :n] & np.isfinite(panel.target_return[:, :n])
    rows, series = np.nonzero(with_target & (run_lengths(panel.valid[:, :n]) >= sequence_length))
    return rows.astype(np.int64), series.astype(np.int64)


# --- build: split, scalers, context, windows ----------------------------------------------------------


def split_counts(n_items: int, train_fraction: float, validation_fraction: float) -> tuple[int, int, int]:
    """Items per part: floor of the fractions for train and validation, the rest for test."""
    n_train = math.floor(n_items * train_fraction + 1e-9)
    n_validation = math.floor(n_items * validation_fraction + 1e-9)
    return n_train, n_validation, n_items - n_train - n_validation


def min_windows(train_fraction: float, validation_fraction: float) -> int:
    """The fewest target dates that give every part of the split at least one."""
    n = 3
    while min(split_counts(n, train_fraction, validation_fraction)) < 1:
        n += 1
    return n


def split_parts(
    target_days: np.ndarray, train_fraction: float, validation_fraction: float
) -> tuple[np.ndarray, tuple[int, int]]:
    """Each window's part (0 train, 1 validation, 2 test) by target date, and the last training and
    validation target days."""
    unique = np.unique(target_days)
    n_train, n_validation, _ = split_counts(len(unique), train_fraction, validation_fraction)
    train_last = int(unique[n_train - 1])
    validation_last = int(unique[n_train + n_validation - 1])
    parts = np.where(target_days <= train_last, 0, np.where(target_days <= validation_last, 1, 2))
    return parts.astype(np.int64), (train_last, validation_last)


def correlation_filter(
    block: np.ndarray, valid: np.ndarray, feature_names: Sequence[str], threshold: float
) -> list[int]:
    """Feature indexes kept after dropping near-duplicates (training rows only).

    |correlation| is averaged over series; walking features with `close` first, one is dropped when
    it exceeds `threshold` with one already kept. `threshold <= 0` keeps everything.
    """
    n_features = block.shape[2]
    if threshold <= 0 or n_features < 2:
        return list(range(n_features))
    total = np.zeros((n_features, n_features))
    counted = 0
    for s in range(block.shape[1]):
        rows = block[valid[:, s], s, :]
        if len(rows) < 3:
            continue
        centred = rows - rows.mean(axis=0)
        norms = np.sqrt((centred**2).sum(axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = (centred.T @ centred) / np.outer(norms, norms)
        total += np.abs(np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0))
        counted += 1
    mean_abs = total / max(counted, 1)
    names = list(feature_names)
    first = names.index("close") if "close" in names else 0
    order = [first] + [j for j in range(n_features) if j != first]
    kept: list[int] = []
    for j in order:
        if all(mean_abs[j, k] <= threshold for k in kept):
            kept.append(j)
    return sorted(kept)


def _safe_scale(std: np.ndarray, centre: np.ndarray) -> np.ndarray:
    # A constant column (an index's zero volume) has std 0, or a rounding residue of it: scale 1,
    # so it becomes (value - mean), i.e. 0, instead of NaN or a huge number.
    tiny = std <= 1e-10 * np.maximum(np.abs(centre), 1.0)
    return np.where(tiny | ~np.isfinite(std), 1.0, std)


def fit_feature_scaler(
    features: np.ndarray, valid: np.ndarray, last_row: int, kept: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pooled mean and scale per kept feature over every series' valid rows up to `last_row`."""
    block = features[: last_row + 1][valid[: last_row + 1]][:, list(kept)]  # (n, kept features)
    mean = block.mean(axis=0)
    return mean, _safe_scale(block.std(axis=0), mean)


def scale_features(
    features: np.ndarray, mean: np.ndarray, scale: np.ndarray, kept: Sequence[int]
) -> np.ndarray:
    """(features - mean) / scale as float32, invalid (NaN) entries as 0, in row chunks."""
    kept = list(kept)
    out = np.empty((*features.shape[:-1], len(kept)), dtype=np.float32)
    all_kept = len(kept) == features.shape[-1]
    for start in range(0, features.shape[0], 256):
        block = features[start : start + 256]
        if not all_kept:
            block = block[..., kept]
        scaled = (block - mean) / scale
        out[start : start + 256] = np.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0)
    return out


def context_feature_names(names: Sequence[str], indicators: Sequence[Mapping[str, Any]]) -> list[str]:
    """The features a context series contributes: its return, volume and volatility columns."""
    kinds = dict(zip(feature_names(indicators), column_kinds(indicators), strict=True))
    chosen = [
        name
        for name in names
        if kinds.get(name) in ("return", "volume") or name.startswith(("realized_vol", "ewm_vol"))
    ]
    return chosen or [names[0]]


def context_block(
    scaled: np.ndarray, valid: np.ndarray, context_series: Sequence[int], context_features: Sequence[int]
) -> np.ndarray:
    """(rows, contexts x (features + 1)) float32: each context's scaled features and a presence flag."""
    n_rows = scaled.shape[0]
    width = len(context_features) + 1
    out = np.zeros((n_rows, len(context_series) * width), dtype=np.float32)
    for k, s in enumerate(context_series):
        present = valid[:, s]
        block = scaled[:, s, :][:, list(context_features)]
        out[:, k * width : k * width + width - 1] = np.where(present[:, None], block, 0.0)
        out[:, k * width + width - 1] = present.astype(np.float32)
    return out


def fit_target_scaler(train_returns: np.ndarray) -> dict[str, Any]:
    """The target scaler's JSON parameters (pooled next-session log return), training windows only."""
    mean = float(np.mean(train_returns))
    scale = float(_safe_scale(np.asarray([np.std(train_returns)]), np.zeros(1))[0])
    return {"kind": "return", "method": "standard", "mean": mean, "scale": scale}


def scale_target(target: Mapping[str, Any], returns: np.ndarray) -> np.ndarray:
    """Scaled next-session log returns as float32."""
    return ((np.asarray(returns, dtype=np.float64) - float(target["mean"])) / float(target["scale"])).astype(
        np.float32
    )


def unscale_return(target: Mapping[str, Any], scaled: np.ndarray) -> np.ndarray:
    """Log returns from scaled values (a location); scales (a spread) use `* target["scale"]` only."""
    return np.asarray(scaled, dtype=np.float64) * float(target["scale"]) + float(target["mean"])


@dataclass(frozen=True)
class WindowSet:
    """Windows of one split part, or the model inputs of a forecast.

    `slab` (rows, series, features) and `context` (rows, context columns) hold the scaled rows;
    window i is series `series[i]` over rows `rows[i] - L + 1 .. rows[i]`.
    """

    slab: np.ndarray
    context: np.ndarray
    rows: np.ndarray  # (n,) int64, rows of the slab
    series: np.ndarray  # (n,) int64, index into series_names
    y: np.ndarray  # (n,) float32 scaled target (NaN for forecasts)
    base_dates: list[date]
    target_dates: list[date]
    base_closes: np.ndarray  # (n,) float64
    target_closes: np.ndarray  # (n,) float64 (NaN for forecasts)
    series_names: tuple[str, ...]
    sequence_length: int

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def n_features(self) -> int:
        return int(self.slab.shape[2] + self.context.shape[1])

    @property
    def n_own_features(self) -> int:
        return int(self.slab.shape[2])

    @functools.cached_property
    def tickers(self) -> list[str]:
        """The ticker of each window (built once: a test split of 500 tickers has 10^5 windows)."""
        return [self.series_names[int(s)] for s in self.series]


@dataclass(frozen=True)
class BuiltDataset:
    """A built dataset: its spec and scalers (what a model version carries) and the three parts."""

    run_id: str
    spec: BuiltSpec
    scalers: dict[str, Any]
    tickers: tuple[str, ...]
    sequence_length: int
    target_kind: str
    train: WindowSet
    validation: WindowSet
    test: WindowSet
    split: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildOutput:
    spec: BuiltSpec
    scalers: dict[str, Any]
    split: dict[str, Any]
    parts: dict[str, WindowSet]  # what `build` stores, by part name
    dropped_features: tuple[str, ...]
    windows_per_ticker: dict[str, dict[str, int]]


def build_sets(
    panel: Panel,
    *,
    spec: DatasetSpec,
    sequence_length: int,
    train_fraction: float,
    validation_fraction: float,
    correlation_threshold: float = 0.0,
) -> BuildOutput:
    """Split, correlation filter, scalers, context and windows of a panel; everything fit on training.

    Raises NoDataError when the target dates cannot give every part of the split one date.
    """
    L = sequence_length
    rows, series = window_pairs(panel, L)
    needed = min_windows(train_fraction, validation_fraction)
    target_days = dates_to_days(panel.dates)[rows + 1]
    if (n_dates := len(np.unique(target_days))) < needed:
        raise NoDataError(
            f"The dataset has {len(rows)} windows of {L} sessions on {n_dates} target "
            f"dates; the split needs at least {needed} dates.",
            hint="Process a longer date range (earlier [data] start or later --as-of) or shorten "
            "[dataset] sequence_length.",
        )
    parts_of, (train_last_day, _) = split_parts(target_days, train_fraction, validation_fraction)
    train_rows = rows[parts_of == 0]
    last_train_base = int(train_rows.max())
    # Features and the target scaler see the training dates only.
    fit_rows = slice(0, last_train_base + 1)
    kept = correlation_filter(
        panel.features[fit_rows], panel.valid[fit_rows], panel.feature_names, correlation_threshold
    )
    mean, scale = fit_feature_scaler(panel.features, panel.valid, last_train_base, kept)
    kept_names = [panel.feature_names[j] for j in kept]
    dropped = tuple(n for n in panel.feature_names if n not in kept_names)
    target = fit_target_scaler(panel.target_return[train_rows, series[parts_of == 0]])
    context_names = [
        n for n in context_feature_names(panel.feature_names, spec.indicators) if n in kept_names
    ]
    context_columns = [kept_names.index(n) for n in context_names]
    context_series = [panel.index_of(name) for name in panel.context_tickers]
    first_fit_date = panel.dates[int(np.flatnonzero(panel.valid.any(axis=1))[0])]
    scalers: dict[str, Any] = {
        "version": SPEC_VERSION,
        "feature_names": kept_names,
        "features": {"method": "standard", "pooled": True, "mean": mean.tolist(), "scale": scale.tolist()},
        "target": target,
        "context": {"tickers": list(panel.context_tickers), "features": context_names},
        "fit": {
            "first_date": first_fit_date.isoformat(),
            "last_date": panel.dates[last_train_base].isoformat(),
            "train_windows": len(train_rows),
        },
    }
    scaled = scale_features(panel.features, mean, scale, kept)
    context = context_block(scaled, panel.valid, context_series, context_columns)

    parts: dict[str, WindowSet] = {}
    split: dict[str, Any] = {
        "train_fraction": train_fraction,
        "validation_fraction": validation_fraction,
        "sequence_length": L,
        "target_kind": "return",
        "correlation_threshold": correlation_threshold,
        "dropped_features": list(dropped),
        "by": "target date, shared by every ticker",
    }
    windows_per_ticker: dict[str, dict[str, int]] = {t: dict.fromkeys(PARTS, 0) for t in panel.tickers}
    for code, name in enumerate(PARTS):
        part_rows, part_series = rows[parts_of == code], series[parts_of == code]
        first_row, last_row = int(part_rows.min()), int(part_rows.max())
        slab_start = first_row - L + 1
        parts[name] = WindowSet(
            slab=scaled[slab_start : last_row + 1],
            context=context[slab_start : last_row + 1],
            rows=part_rows - slab_start,
            series=part_series,
            y=scale_target(target, panel.target_return[part_rows, part_series]),
            base_dates=[panel.dates[i] for i in part_rows],
            target_dates=[panel.dates[i + 1] for i in part_rows],
            base_closes=panel.closes[part_rows, part_series].copy(),
            target_closes=panel.target_price[part_rows, part_series].copy(),
            series_names=panel.series,
            sequence_length=L,
        )
        for s in np.unique(part_series):
            windows_per_ticker[panel.series[int(s)]][name] = int((part_series == s).sum())
        split[name] = {
            "windows": len(part_rows),
            "first_base_date": panel.dates[first_row].isoformat(),
            "last_base_date": panel.dates[last_row].isoformat(),
            "first_target_date": panel.dates[first_row + 1].isoformat(),
            "last_target_date": panel.dates[last_row + 1].isoformat(),
        }
    split["train_last_target_date"] = date.fromordinal(train_last_day + _EPOCH).isoformat()
    return BuildOutput(
        spec=spec.built(kept_names, context_names, L),
        scalers=scalers,
        split=split,
        parts=parts,
        dropped_features=dropped,
        windows_per_ticker=windows_per_ticker,
    )


# --- the forecasting input primitive --------------------------------------------------------------------


@dataclass(frozen=True)
class Unforecastable:
    """A (date, ticker) the inputs could not be built for, and why."""

    as_of: date
    ticker: str
    reason: str
    kind: str  # "no_bars", "no_bar_on_date", "too_little_history"
    sessions_missing: int = 0  # for too_little_history: valid sessions still needed


@dataclass(frozen=True)
class ForecastInputs:
    """Model inputs for (as-of date, ticker) pairs: the windows, and the pairs that had none."""

    windows: WindowSet
    as_of_dates: list[date]  # the as-of date of each window
    missing: list[Unforecastable]


def build_inputs(
    *,
    spec: BuiltSpec,
    scalers: Mapping[str, Any],
    bars: Mapping[str, pd.DataFrame],
    as_of_dates: Sequence[date],
    tickers: Sequence[str] | None = None,
    sessions: Sequence[date] | None = None,
    use_spec_start: bool = True,
) -> ForecastInputs:
    """The exact model input window for each as-of date and ticker, from raw bars, the model's spec
    and its scalers.

    The base row is the last row on or before each as-of date; a ticker without its own bar there or
    with fewer than L valid rows is listed in `missing`. `use_spec_start=False` keeps bars from
    before the spec's start date (a caller that loads a bounded lookback).
    """
    if not as_of_dates:
        raise UsageError("No as-of dates given to build model inputs for.")
    chosen = tuple(tickers) if tickers is not None else spec.tickers
    L = spec.sequence_length
    panel = make_panel(
        bars,
        tickers=chosen,
        context_tickers=spec.context_tickers,
        indicators=spec.indicators,
        ffill_limit=spec.ffill_limit,
        start_date=spec.start_date if use_spec_start else None,
        end_date=max(as_of_dates),
        sessions=sessions,
    )
    names = list(panel.feature_names)
    wanted = list(spec.feature_names)
    unknown = [n for n in wanted if n not in names]
    if unknown or list(scalers.get("feature_names", wanted)) != wanted:
        raise InputDataError(
            f"The model's features {unknown or wanted} do not match what its indicators produce or its scalers.",
            hint="Retrain (`stockcli retrain --force`).",
        )
    kept = [names.index(n) for n in wanted]
    mean = np.asarray(scalers["features"]["mean"], dtype=np.float64)
    scale = np.asarray(scalers["features"]["scale"], dtype=np.float64)
    context_features = [wanted.index(n) for n in spec.context_features if n in wanted]
    context_series = [panel.index_of(n) for n in spec.context_tickers]

    days = dates_to_days(panel.dates)
    runs = run_lengths(panel.valid)
    bars_so_far = np.cumsum(panel.real, axis=0)
    warmup = model_warmup(spec.indicators)
    window_rows: list[int] = []
    window_series: list[int] = []
    window_as_of: list[date] = []
    missing: list[Unforecastable] = []
    for as_of in as_of_dates:
        row = int(np.searchsorted(days, as_of.toordinal() - _EPOCH, side="right")) - 1
        for ticker in chosen:
            s = panel.index_of(ticker)
            if ticker not in bars or len(bars[ticker]) == 0:
                missing.append(Unforecastable(as_of, ticker, "no bars stored", "no_bars"))
            elif row < 0 or not panel.real[row, s]:
                on = panel.dates[row].isoformat() if row >= 0 else as_of
                missing.append(Unforecastable(as_of, ticker, f"no bar on {on}", "no_bar_on_date"))
            elif runs[row, s] < L:
                have, stored = int(runs[row, s]), int(bars_so_far[row, s])
                reason = (
                    f"too little history: {stored} bars, {have} usable after the "
                    f"{warmup}-session indicator warm-up, {L} needed for a window"
                )
                short = sessions_short(have, stored, L, warmup)
                missing.append(Unforecastable(as_of, ticker, reason, "too_little_history", short))
            else:
                window_rows.append(row)
                window_series.append(s)
                window_as_of.append(as_of)
    rows = np.asarray(window_rows, dtype=np.int64)
    series = np.asarray(window_series, dtype=np.int64)
    needed = np.unique((rows[:, None] + np.arange(-L + 1, 1)[None, :]).ravel())
    first = int(needed.min()) if len(needed) else 0
    # Only the rows the windows cover are scaled (a daily forecast needs L rows, not the history).
    slab = np.zeros((panel.n_sessions - first, len(panel.series), len(kept)), dtype=np.float32)
    slab[needed - first] = scale_features(panel.features[needed], mean, scale, kept)
    context = context_block(slab, panel.valid[first:], context_series, context_features)
    windows = WindowSet(
        slab=slab,
        context=context,
        rows=rows - first,
        series=series,
        y=np.full(len(rows), np.nan, dtype=np.float32),
        base_dates=[panel.dates[r] for r in rows],
        target_dates=[],
        base_closes=panel.closes[rows, series],
        target_closes=np.full(len(rows), np.nan),
        series_names=panel.series,
        sequence_length=L,
    )
    return ForecastInputs(windows=windows, as_of_dates=window_as_of, missing=missing)
