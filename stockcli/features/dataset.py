"""Datasets as arrays: alignment, next-session targets, the chronological split, windows, scalers,
and the forecasting input primitive. Pure: frames and arrays in, arrays out.

The rules, in the order they are applied:

1. **Features per ticker** on that ticker's own bars from the dataset's `start_date` (recursive
   indicators such as EMA 200 depend on where history starts, so the start is part of the spec);
   warm-up rows are dropped, never back-filled.
2. **Alignment** on the union of the tickers' bar dates. A ticker without a bar on a date takes its
   previous row for at most `ffill_limit` sessions; a longer gap, or a date before a ticker's first
   valid row, drops that session for every ticker.
3. **Targets**: for aligned session t, the close of the next session t+1, as a price and as the log
   return log(close[t+1] / close[t]). There is no target (NaN) when the next market session was
   dropped or when any ticker's bar on it was forward-filled: such a target would not be the real
   close of the next session.
4. **Windows** of `sequence_length` aligned sessions ending at a base session b with a target; the
   window's target is dated at the session after b. The split is chronological by target date:
   the first `train_fraction` of windows train, the next `validation_fraction` validate, the rest
   test; every training target is dated before every validation target, and so on.
5. **Scalers** fit on the sessions covered by training windows only (each session once): a standard
   scaler per ticker and feature; for the target either a standard scaler of the log return per
   ticker (`return`) or a MinMax scaler of the close per ticker (`price`). All as JSON numbers.
6. **Storage layout**: a split part is stored as its scaled feature slab (the contiguous sessions its
   windows cover, float32) and its windows are strided *views* into that slab, never copies: 500
   tickers x 2,500 sessions x 33 features x 30-session windows would be ~4.5 GB as float32 windows,
   but ~0.16 GB as a slab.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from stockcli.errors import InputDataError, NoDataError, UsageError
from stockcli.features.indicators import OHLCV, compute_feature_array, resolve_indicators

if TYPE_CHECKING:
    import pandas as pd

SPEC_VERSION = 1
PARTS = ("train", "validation", "test")
Progress = Callable[[str, int, int], None]

_EPOCH = date(1970, 1, 1).toordinal()


def _to_days(index: Any) -> np.ndarray:
    """A DatetimeIndex (or dates) as int64 days since 1970-01-01."""
    values = np.asarray(index, dtype="datetime64[D]")
    return values.astype(np.int64)


def days_to_dates(days: np.ndarray) -> list[date]:
    return [date.fromordinal(int(d) + _EPOCH) for d in days]


def dates_to_days(dates: Sequence[date]) -> np.ndarray:
    return np.array([d.toordinal() - _EPOCH for d in dates], dtype=np.int64)


# --- process: features, alignment, targets ----------------------------------------------------------


@dataclass(frozen=True)
class DatasetArrays:
    """An aligned dataset: sessions x tickers x features, closes and next-session targets."""

    tickers: tuple[str, ...]
    feature_names: tuple[str, ...]
    dates: list[date]
    features: np.ndarray  # (sessions, tickers, features) float64
    closes: np.ndarray  # (sessions, tickers) float64
    target_price: np.ndarray  # (sessions, tickers) close of the next session; NaN: no honest target
    target_return: np.ndarray  # (sessions, tickers) log(next close / close); NaN where target_price is

    @property
    def n_sessions(self) -> int:
        return len(self.dates)

    @property
    def has_target(self) -> np.ndarray:
        return np.isfinite(self.target_return).all(axis=1)


def _bars_arrays(
    frame: pd.DataFrame, start: date | None, end: date | None
) -> tuple[np.ndarray, list[np.ndarray]]:
    days = _to_days(frame.index)
    keep = np.ones(len(days), dtype=bool)
    if start is not None:
        keep &= days >= start.toordinal() - _EPOCH
    if end is not None:
        keep &= days <= end.toordinal() - _EPOCH
    columns = [frame[c].to_numpy(dtype=np.float64)[keep] for c in OHLCV]
    days = days[keep]
    if len(days) > 1 and not (np.diff(days) > 0).all():
        raise InputDataError("Bars are not sorted by date or hold a date twice.", hint="Re-fetch the ticker.")
    return days, columns


def make_dataset(
    bars: Mapping[str, pd.DataFrame],
    *,
    tickers: Sequence[str],
    indicators: Sequence[Mapping[str, Any]],
    ffill_limit: int,
    start_date: date | None = None,
    end_date: date | None = None,
    progress: Progress | None = None,
) -> DatasetArrays:
    """Features, alignment and next-session targets for `tickers` (see the module docstring).

    `bars[ticker]` has a DatetimeIndex and OHLCV columns; rows before `start_date` or after
    `end_date` are ignored. A ticker with too few rows simply has no valid session; callers check
    history length first to give a precise error.
    """
    resolved = resolve_indicators(indicators)
    warmup = max((item.warmup for item in resolved), default=0)
    names = tuple(list(OHLCV) + [c for item in resolved for c in item.columns])
    tickers = tuple(tickers)

    # Pass 1, dates only: the union of bar dates, each ticker's source row per union date
    # (forward-filled at most `ffill_limit` sessions), and the sessions every ticker covers.
    per_ticker: list[tuple[np.ndarray, list[np.ndarray]]] = [
        _bars_arrays(bars[t], start_date, end_date) for t in tickers
    ]
    all_days = [days for days, _ in per_ticker]
    union = np.unique(np.concatenate(all_days)) if all_days else np.zeros(0, dtype=np.int64)
    n_union = len(union)
    positions = np.arange(n_union)
    sources = np.full((n_union, len(tickers)), -1, dtype=np.int64)
    real = np.zeros((n_union, len(tickers)), dtype=bool)
    for s, days in enumerate(all_days):
        if len(days) <= warmup:
            continue
        rows = np.searchsorted(union, days[warmup:])
        direct = np.full(n_union, -1, dtype=np.int64)
        direct[rows] = np.arange(warmup, len(days))
        real[rows, s] = True
        last = np.maximum.accumulate(np.where(direct >= 0, positions, -1))
        ok = (last >= 0) & (positions - last <= ffill_limit)
        sources[:, s] = np.where(ok, direct[np.maximum(last, 0)], -1)
    keep = np.flatnonzero((sources >= 0).all(axis=1)) if len(tickers) else np.zeros(0, dtype=np.int64)

    # Pass 2: features per ticker, gathered straight into the aligned tensor.
    n_sessions = len(keep)
    features = np.empty((n_sessions, len(tickers), len(names)), dtype=np.float64)
    for s, (ticker, (_days, columns)) in enumerate(zip(tickers, per_ticker, strict=True)):
        if n_sessions:
            open_, high, low, close, volume = columns
            values = compute_feature_array(open_, high, low, close, volume, resolved)
            features[:, s, :] = values[sources[keep, s]]
        if progress is not None:
            progress(f"features {ticker}", s + 1, len(tickers))

    close_index = names.index("close")
    closes = features[:, :, close_index].copy()
    target_price = np.full_like(closes, np.nan)
    if n_sessions > 1:
        consecutive = keep[1:] == keep[:-1] + 1
        next_real = real[keep[1:]].all(axis=1)
        valid = consecutive & next_real
        target_price[:-1][valid] = closes[1:][valid]
    with np.errstate(divide="ignore", invalid="ignore"):
        target_return = np.log(target_price / closes)
    bad = ~np.isfinite(target_return).all(axis=1)
    target_price[bad] = np.nan
    target_return[bad] = np.nan
    return DatasetArrays(
        tickers=tickers,
        feature_names=names,
        dates=days_to_dates(union[keep]),
        features=features,
        closes=closes,
        target_price=target_price,
        target_return=target_return,
    )


# --- build: split, scalers, windows -------------------------------------------------------------------


def split_counts(n_windows: int, train_fraction: float, validation_fraction: float) -> tuple[int, int, int]:
    """Windows per part: floor of the fractions for train and validation, the rest for test."""
    n_train = math.floor(n_windows * train_fraction + 1e-9)
    n_validation = math.floor(n_windows * validation_fraction + 1e-9)
    return n_train, n_validation, n_windows - n_train - n_validation


def min_windows(train_fraction: float, validation_fraction: float) -> int:
    """The fewest windows that give every part of the split at least one window."""
    n = 3
    while min(split_counts(n, train_fraction, validation_fraction)) < 1:
        n += 1
    return n


def required_sessions(
    *, warmup: int, sequence_length: int, train_fraction: float, validation_fraction: float
) -> int:
    """Bars a ticker needs: warm-up, one window, and enough later sessions for every split part."""
    return warmup + sequence_length + min_windows(train_fraction, validation_fraction)


def window_bases(has_target: np.ndarray, sequence_length: int) -> np.ndarray:
    """Rows that can end a window: a full window behind them and an honest next-session target."""
    rows = np.flatnonzero(has_target)
    return rows[rows >= sequence_length - 1]


def covered_rows(bases: np.ndarray, sequence_length: int, n_rows: int) -> np.ndarray:
    """A mask of the rows that at least one window ending at `bases` covers."""
    marks = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(marks, bases - sequence_length + 1, 1)
    np.add.at(marks, bases + 1, -1)
    return np.cumsum(marks[:-1]) > 0


def correlation_filter(rows: np.ndarray, feature_names: Sequence[str], threshold: float) -> list[int]:
    """Feature indexes kept after dropping near-duplicates, decided on `rows` (training part only).

    For each pair, |correlation| is averaged over tickers; walking the features with `close` first
    and then in their order, a feature is dropped when it exceeds `threshold` with one already kept.
    Constant features correlate with nothing. `threshold <= 0` keeps everything.
    """
    n_features = rows.shape[2]
    if threshold <= 0 or n_features < 2:
        return list(range(n_features))
    total = np.zeros((n_features, n_features))
    for s in range(rows.shape[1]):
        block = rows[:, s, :]
        centred = block - block.mean(axis=0)
        norms = np.sqrt((centred**2).sum(axis=0))
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = (centred.T @ centred) / np.outer(norms, norms)
        total += np.abs(np.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0))
    mean_abs = total / max(rows.shape[1], 1)
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
    features: np.ndarray, rows_mask: np.ndarray, kept: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale per ticker and kept feature over the masked rows: shapes (tickers, features)."""
    rows = np.flatnonzero(rows_mask)
    if len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        block = features[rows[0] : rows[-1] + 1]
    else:
        block = features[rows]
    if len(kept) != features.shape[2]:
        block = block[:, :, list(kept)]
    mean = block.mean(axis=0)
    std = block.std(axis=0)
    return mean, _safe_scale(std, mean)


def scale_features(
    features: np.ndarray, mean: np.ndarray, scale: np.ndarray, kept: Sequence[int]
) -> np.ndarray:
    """(features - mean) / scale as float32, in row chunks so the float64 temporary stays small."""
    kept = list(kept)
    out = np.empty((features.shape[0], features.shape[1], len(kept)), dtype=np.float32)
    all_kept = len(kept) == features.shape[2]
    for start in range(0, features.shape[0], 256):
        block = features[start : start + 256]
        if not all_kept:
            block = block[:, :, kept]
        out[start : start + 256] = (block - mean) / scale
    return out


def fit_target_scaler(
    target_kind: str, train_returns: np.ndarray, train_closes: np.ndarray
) -> dict[str, Any]:
    """The target scaler's JSON parameters, fit on the training windows' targets only."""
    if target_kind == "return":
        mean = train_returns.mean(axis=0)
        scale = _safe_scale(train_returns.std(axis=0), np.zeros_like(mean))
        return {"kind": "return", "method": "standard", "mean": _floats(mean), "scale": _floats(scale)}
    if target_kind == "price":
        low = train_closes.min(axis=0)
        high = train_closes.max(axis=0)
        span = np.where(high > low, high - low, 1.0)
        return {"kind": "price", "method": "minmax", "min": _floats(low), "max": _floats(low + span)}
    raise UsageError(f"Unknown target kind {target_kind!r}.", hint="Use `return` or `price`.")


def scale_target(
    target: Mapping[str, Any], target_returns: np.ndarray, target_closes: np.ndarray
) -> np.ndarray:
    """Scaled targets (windows, tickers) as float32."""
    if target["kind"] == "return":
        return ((target_returns - np.asarray(target["mean"])) / np.asarray(target["scale"])).astype(
            np.float32
        )
    low, high = np.asarray(target["min"]), np.asarray(target["max"])
    return ((target_closes - low) / (high - low)).astype(np.float32)


def inverse_target(y_scaled: np.ndarray, base_closes: np.ndarray, scalers: Mapping[str, Any]) -> np.ndarray:
    """Predicted closes (n, tickers) from scaled model outputs and the closes of the base sessions."""
    target = scalers["target"]
    y = np.asarray(y_scaled, dtype=np.float64)
    if target["kind"] == "return":
        log_return = y * np.asarray(target["scale"]) + np.asarray(target["mean"])
        return np.asarray(base_closes, dtype=np.float64) * np.exp(log_return)
    low, high = np.asarray(target["min"]), np.asarray(target["max"])
    return y * (high - low) + low


def _floats(values: np.ndarray) -> list[Any]:
    return np.asarray(values, dtype=np.float64).tolist()


@dataclass(frozen=True)
class WindowSet:
    """The windows of one split part.

    `x` (windows, sequence, tickers, features) float32 is a read-only strided view into the part's
    scaled slab (take batches with `x[indexes]`, which copies only those windows). `y` (windows,
    tickers) float32 holds scaled targets; `base_closes`/`target_closes` the real closes of each
    window's last session and of the next session.
    """

    x: np.ndarray
    y: np.ndarray
    base_dates: list[date]
    target_dates: list[date]
    base_closes: np.ndarray
    target_closes: np.ndarray

    def __len__(self) -> int:
        return len(self.base_dates)


@dataclass(frozen=True)
class BuiltDataset:
    """A built dataset: its spec and scalers (what a model version carries) and the three parts."""

    run_id: str
    spec: dict[str, Any]
    scalers: dict[str, Any]
    tickers: tuple[str, ...]
    sequence_length: int
    target_kind: str
    train: WindowSet
    validation: WindowSet
    test: WindowSet
    split: dict[str, Any] = field(default_factory=dict)

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(self.spec["feature_names"])

    def part(self, name: str) -> WindowSet:
        if name not in PARTS:
            raise UsageError(f"Unknown split part {name!r}.", hint=f"Use one of {', '.join(PARTS)}.")
        return getattr(self, name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class PartSlab:
    """What is stored for one split part: the scaled slab and each window's last row in it."""

    name: str
    slab: np.ndarray  # (rows, tickers, features) float32
    window_ends: np.ndarray  # (windows,) int64
    y: np.ndarray
    base_dates: list[date]
    target_dates: list[date]
    base_closes: np.ndarray
    target_closes: np.ndarray


def window_view(slab: np.ndarray, window_ends: np.ndarray, sequence_length: int) -> np.ndarray:
    """Windows (n, sequence, tickers, features) ending at `window_ends`, as a view when they are
    consecutive (the usual case), else as a copy of just those windows."""
    n = len(window_ends)
    if n == 0:
        return np.zeros((0, sequence_length, *slab.shape[1:]), dtype=slab.dtype)
    windows = np.lib.stride_tricks.sliding_window_view(slab, sequence_length, axis=0)
    starts = np.asarray(window_ends, dtype=np.int64) - sequence_length + 1
    if (np.diff(starts) == 1).all():
        chosen = windows[starts[0] : starts[-1] + 1]
    else:
        chosen = windows[starts]
    return np.moveaxis(chosen, -1, 1)


def window_set(part: PartSlab, sequence_length: int) -> WindowSet:
    return WindowSet(
        x=window_view(part.slab, part.window_ends, sequence_length),
        y=part.y,
        base_dates=part.base_dates,
        target_dates=part.target_dates,
        base_closes=part.base_closes,
        target_closes=part.target_closes,
    )


@dataclass(frozen=True)
class BuildOutput:
    spec: dict[str, Any]
    scalers: dict[str, Any]
    split: dict[str, Any]
    parts: dict[str, PartSlab]
    dropped_features: tuple[str, ...]


def build_sets(
    dataset: DatasetArrays,
    *,
    spec: Mapping[str, Any],
    sequence_length: int,
    train_fraction: float,
    validation_fraction: float,
    target_kind: str,
    correlation_threshold: float = 0.0,
) -> BuildOutput:
    """Split, correlation filter, scalers and windows of a dataset; everything fit on training only.

    `spec` is the dataset's feature spec; the returned spec adds what the forecasting primitive
    needs (kept feature order, sequence length, target kind). Raises NoDataError when the dataset
    has too few windows for every part of the split.
    """
    L = sequence_length
    dates = dataset.dates
    bases = window_bases(dataset.has_target, L)
    needed = min_windows(train_fraction, validation_fraction)
    if len(bases) < needed:
        raise NoDataError(
            f"The dataset has {len(bases)} windows of {L} sessions with a next-session target; the "
            f"split needs at least {needed}.",
            hint="Process a longer date range (earlier [data] start or later --as-of) or shorten "
            "[dataset] sequence_length.",
        )
    n_train, n_validation, _n_test = split_counts(len(bases), train_fraction, validation_fraction)
    part_bases = {
        "train": bases[:n_train],
        "validation": bases[n_train : n_train + n_validation],
        "test": bases[n_train + n_validation :],
    }
    n_rows = dataset.n_sessions
    train_mask = covered_rows(part_bases["train"], L, n_rows)
    train_rows = np.flatnonzero(train_mask)
    first_row, last_row = int(train_rows[0]), int(train_rows[-1])
    if last_row - first_row + 1 == len(train_rows):
        train_block = dataset.features[first_row : last_row + 1]
    else:
        train_block = dataset.features[train_rows]
    kept = correlation_filter(train_block, dataset.feature_names, correlation_threshold)
    mean, scale = fit_feature_scaler(dataset.features, train_mask, kept)
    kept_names = [dataset.feature_names[j] for j in kept]
    dropped = tuple(n for n in dataset.feature_names if n not in kept_names)

    train_bases = part_bases["train"]
    target = fit_target_scaler(
        target_kind, dataset.target_return[train_bases], dataset.target_price[train_bases]
    )
    scalers: dict[str, Any] = {
        "version": SPEC_VERSION,
        "tickers": list(dataset.tickers),
        "feature_names": kept_names,
        "features": {"method": "standard", "mean": _floats(mean), "scale": _floats(scale)},
        "target": target,
        "fit": {
            "sessions": len(train_rows),
            "first_date": dates[first_row].isoformat(),
            "last_date": dates[last_row].isoformat(),
        },
    }
    scaled = scale_features(dataset.features, mean, scale, kept)

    parts: dict[str, PartSlab] = {}
    split: dict[str, Any] = {
        "train_fraction": train_fraction,
        "validation_fraction": validation_fraction,
        "sequence_length": L,
        "target_kind": target_kind,
        "correlation_threshold": correlation_threshold,
        "dropped_features": list(dropped),
    }
    for name, part in part_bases.items():
        slab_start = int(part[0]) - L + 1
        slab = scaled[slab_start : int(part[-1]) + 1]
        target_rows = part + 1
        parts[name] = PartSlab(
            name=name,
            slab=slab,
            window_ends=part - slab_start,
            y=scale_target(target, dataset.target_return[part], dataset.target_price[part]),
            base_dates=[dates[i] for i in part],
            target_dates=[dates[i] for i in target_rows],
            base_closes=dataset.closes[part].copy(),
            target_closes=dataset.target_price[part].copy(),
        )
        split[name] = {
            "windows": len(part),
            "first_base_date": dates[int(part[0])].isoformat(),
            "last_base_date": dates[int(part[-1])].isoformat(),
            "first_target_date": dates[int(part[0]) + 1].isoformat(),
            "last_target_date": dates[int(part[-1]) + 1].isoformat(),
        }
    built_spec = built_spec_from(spec, kept_names, L, target_kind)
    return BuildOutput(spec=built_spec, scalers=scalers, split=split, parts=parts, dropped_features=dropped)


def built_spec_from(
    dataset_spec: Mapping[str, Any], kept_names: Sequence[str], sequence_length: int, target_kind: str
) -> dict[str, Any]:
    """A dataset's spec plus what building it decided: the model's exact input contract."""
    spec = dict(dataset_spec)
    spec["all_feature_names"] = list(dataset_spec["feature_names"])
    spec["feature_names"] = list(kept_names)
    spec["sequence_length"] = int(sequence_length)
    spec["target_kind"] = target_kind
    return spec


# --- the forecasting input primitive --------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastInputs:
    """Model inputs for a list of as-of dates: scaled windows, their base sessions and closes."""

    x: np.ndarray  # (n, sequence, tickers, features) float32
    base_dates: list[date]
    base_closes: np.ndarray  # (n, tickers) float64
    tickers: tuple[str, ...] = ()


def build_inputs(
    *,
    spec: Mapping[str, Any],
    scalers: Mapping[str, Any],
    bars: Mapping[str, pd.DataFrame],
    as_of_dates: Sequence[date],
) -> ForecastInputs:
    """The exact model input window for each as-of date, rebuilt from raw bars.

    Uses the dataset's own spec (indicators, feature order, forward-fill limit, tickers, sequence
    length and history start, so recursive indicators see the same history) and its stored scalers.
    An as-of date that is not a session uses the last aligned session on or before it; bars after the
    latest as-of date are ignored. Raises NoDataError when a ticker has no bars or an as-of date has
    fewer than `sequence_length` aligned sessions behind it.
    """
    if not as_of_dates:
        raise UsageError("No as-of dates given to build model inputs for.")
    tickers = tuple(spec["tickers"])
    missing = [t for t in tickers if t not in bars or len(bars[t]) == 0]
    if missing:
        raise NoDataError(
            f"No bars for {', '.join(missing)}, which the model's dataset needs.",
            hint="Run `stockcli fetch` first.",
        )
    L = int(spec["sequence_length"])
    start = date.fromisoformat(spec["start_date"]) if spec.get("start_date") else None
    latest = max(as_of_dates)
    dataset = make_dataset(
        bars,
        tickers=tickers,
        indicators=spec["indicators"],
        ffill_limit=int(spec["ffill_limit"]),
        start_date=start,
        end_date=latest,
    )
    names = list(dataset.feature_names)
    wanted = list(spec["feature_names"])
    unknown = [n for n in wanted if n not in names]
    if unknown or list(scalers.get("feature_names", wanted)) != wanted:
        raise InputDataError(
            f"The spec's features {unknown or wanted} do not match what its indicators produce or its scalers.",
            hint="Rebuild the dataset (`stockcli build`) and retrain.",
        )
    kept = [names.index(n) for n in wanted]
    days = dates_to_days(dataset.dates)
    rows = np.searchsorted(days, dates_to_days(list(as_of_dates)), side="right") - 1
    short = [d for d, r in zip(as_of_dates, rows, strict=True) if r < L - 1]
    if short:
        have = int(max(rows.max() + 1, 0))
        raise NoDataError(
            f"Too little history before {short[0].isoformat()}: {L} aligned sessions are needed, "
            f"{max(int(rows[list(as_of_dates).index(short[0])]) + 1, 0)} are there "
            f"({have} in all up to {latest.isoformat()}).",
            hint="Fetch more history (earlier [data] start) or use a later as-of date.",
        )
    mean = np.asarray(scalers["features"]["mean"], dtype=np.float64)
    scale = np.asarray(scalers["features"]["scale"], dtype=np.float64)
    needed = np.unique(np.concatenate([np.arange(r - L + 1, r + 1) for r in rows]))
    scaled = np.zeros((dataset.n_sessions, len(tickers), len(kept)), dtype=np.float32)
    scaled[needed] = scale_features(dataset.features[needed], mean, scale, kept)
    x = np.stack([scaled[r - L + 1 : r + 1] for r in rows]).astype(np.float32, copy=False)
    return ForecastInputs(
        x=x,
        base_dates=[dataset.dates[r] for r in rows],
        base_closes=dataset.closes[rows].copy(),
        tickers=tickers,
    )
