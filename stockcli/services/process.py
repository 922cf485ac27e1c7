"""`process`: stored bars up to as-of -> a frozen, versioned dataset (features, alignment, targets).

The dataset id derives from a hash of its inputs and outputs: re-processing identical input reuses it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.config import Settings, normalize_ticker
from stockcli.errors import NoDataError
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    import pandas as pd

    from stockcli.features.dataset import DatasetSpec, Panel, Progress


@dataclass(frozen=True)
class TickerSessions:
    """One watchlist ticker in a dataset: its usable sessions and windows."""

    sessions: int
    first_session: date | None
    last_session: date | None
    windows: int


@dataclass(frozen=True)
class ProcessResult:
    """What `process` froze: the dataset id, its shape, and each ticker's own history."""

    run_id: str
    tickers: tuple[str, ...]
    sessions: int
    n_features: int
    feature_names: tuple[str, ...]
    start_date: date
    end_date: date
    content_hash: str
    reused: bool
    as_of: date
    windows_possible: int
    context_tickers: tuple[str, ...] = ()
    per_ticker: dict[str, TickerSessions] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class PanelWindows:
    """The windows a panel gives: each one's last row, its series and its split part (2: test)."""

    rows: np.ndarray
    series_index: np.ndarray
    parts_of: np.ndarray


def feature_spec(
    settings: Settings, tickers: Sequence[str], context_tickers: Sequence[str] | None = None
) -> DatasetSpec:
    """The dataset's feature spec: everything needed to recompute its features."""
    from stockcli.features import indicators as ind
    from stockcli.features.dataset import SPEC_VERSION, DatasetSpec, series_order

    indicators = ind.canonical_indicators(settings.features.indicators)
    context = (
        tuple(context_tickers) if context_tickers is not None else settings.data.context_tickers_resolved
    )
    return DatasetSpec(
        version=SPEC_VERSION,
        tickers=tuple(tickers),
        context_tickers=tuple(context),
        series=series_order(tickers, context),
        indicators=tuple(indicators),
        feature_names=tuple(ind.feature_names(indicators)),
        feature_kinds=tuple(ind.column_kinds(indicators)),
        ffill_limit=int(settings.features.ffill_limit),
        start_date=settings.data.start,
        warmup_sessions=ind.model_warmup(indicators),
        serving_lookback=ind.serving_lookback(indicators),
    )


def content_hash(spec: DatasetSpec, bars: Mapping[str, pd.DataFrame], panel: Panel) -> str:
    """SHA-256 of the spec, the bars read (dates and OHLCV) and every output array."""
    from stockcli.features.dataset import dates_to_days
    from stockcli.features.indicators import OHLCV

    digest = hashlib.sha256()
    digest.update(json.dumps(spec.to_json(), sort_keys=True, separators=(",", ":")).encode())
    for name in spec.series:
        frame = bars[name]
        digest.update(name.encode() + b"\0")
        digest.update(dates_to_days(frame.index).tobytes())
        for column in OHLCV:
            digest.update(np.ascontiguousarray(frame[column].to_numpy(dtype=np.float64)).tobytes())
    digest.update(dates_to_days(panel.dates).tobytes())
    for array in (panel.features, panel.closes, panel.target_price, panel.target_return, panel.mask()):
        digest.update(np.ascontiguousarray(array).data)  # the buffer itself: no copy of 300 MB
    return digest.hexdigest()


def dataset_run_id(end_date: date, digest: str) -> str:
    return f"ds-{end_date:%Y%m%d}-{digest[:12]}"


def process(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    tickers: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ProcessResult:
    """Turn the stored bars up to `as_of` into a dataset (a panel of independent series) and save it.

    Tickers without bars, or too young to reach the test period, are named in `warnings`. Raises
    ConfigError for a bad indicator config, NoDataError when no ticker has bars or the tickers
    together give too few windows for the split.
    """
    from stockcli.clock import calendar_for
    from stockcli.db import bars as bars_db
    from stockcli.features.dataset import make_panel

    chosen = tuple(normalize_ticker(t) for t in (tickers or settings.data.tickers))
    spec = feature_spec(settings, chosen)  # validates the indicator config first (ConfigError)
    context = spec.context_tickers
    start = settings.data.start
    report = progress or (lambda stage, done, total: None)

    report("loading bars", 0, 1)
    bars = bars_db.load_bars(engine, list(spec.series), start=start, end=as_of)
    report("loading bars", 1, 1)
    missing, warnings = _missing_bars(bars, tickers=chosen, context=context, start=start, as_of=as_of)
    panel = make_panel(
        bars,
        tickers=chosen,
        context_tickers=tuple(context),
        indicators=spec.indicators,
        ffill_limit=spec.ffill_limit,
        start_date=start,
        end_date=as_of,
        sessions=calendar_for(settings).sessions(start, as_of),
        progress=progress,
    )
    windows = _split_windows(panel, settings=settings, spec=spec, as_of=as_of)
    per_ticker, too_young = _ticker_sessions(
        panel, windows=windows, missing=missing, settings=settings, spec=spec
    )

    report("hashing", 0, 1)
    digest = content_hash(spec, bars, panel)
    run_id = dataset_run_id(panel.dates[-1], digest)
    report("saving dataset", 0, 1)
    checkpoint(settings, "process:before_save")
    written = _save(
        settings=settings, engine=engine, run_id=run_id, as_of=as_of, spec=spec, panel=panel, digest=digest
    )
    report("saving dataset", 1, 1)
    return ProcessResult(
        run_id=run_id,
        tickers=chosen,
        sessions=panel.n_sessions,
        n_features=len(panel.feature_names),
        feature_names=panel.feature_names,
        start_date=panel.dates[0],
        end_date=panel.dates[-1],
        content_hash=digest,
        reused=not written,
        as_of=as_of,
        windows_possible=len(windows.rows),
        context_tickers=tuple(context),
        per_ticker=per_ticker,
        warnings=tuple(warnings + too_young),
    )


def _missing_bars(
    bars: Mapping[str, pd.DataFrame],
    *,
    tickers: Sequence[str],
    context: Sequence[str],
    start: date,
    as_of: date,
) -> tuple[list[str], list[str]]:
    """(the tickers without stored bars, a warning for each and each such context series).
    Raises NoDataError when no ticker has bars."""
    missing = [t for t in tickers if bars[t].empty]
    if len(missing) == len(tickers):
        raise NoDataError(
            f"No stored bars for {', '.join(missing)} between {start.isoformat()} and {as_of.isoformat()}.",
            hint="Run `stockcli fetch` first (or check [data] start and --as-of).",
        )
    warnings: list[str] = [
        f"{t} has no stored bars up to {as_of.isoformat()}: it adds no windows (run `stockcli fetch`)."
        for t in missing
    ]
    warnings += [
        f"Context series {c} has no stored bars up to {as_of.isoformat()}: it is masked everywhere."
        for c in context
        if bars[c].empty and c not in tickers
    ]
    return missing, warnings


def _split_windows(panel: Panel, *, settings: Settings, spec: DatasetSpec, as_of: date) -> PanelWindows:
    """The panel's windows and their chronological split. Raises NoDataError when too few."""
    from stockcli.features.dataset import dates_to_days, min_windows, split_parts, window_pairs

    ds = settings.dataset
    L = ds.sequence_length
    rows, series_index = window_pairs(panel, L)
    wanted = min_windows(ds.train_fraction, ds.validation_fraction)
    target_days = dates_to_days(panel.dates)[rows + 1]
    if (n_dates := len(np.unique(target_days))) < wanted:
        have = {t: int(panel.valid[:, i].sum()) for i, t in enumerate(spec.tickers)}
        details = "; ".join(f"{t} has {n} usable sessions" for t, n in have.items())
        raise NoDataError(
            f"Too little history up to {as_of.isoformat()}: the tickers give {len(rows)} windows of {L} sessions "
            f"on {n_dates} dates; the split needs windows on {wanted} dates ({details}; "
            f"each ticker needs {spec.warmup_sessions} sessions of indicator warm-up before its first window).",
            hint="Fetch an earlier [data] start, use a later --as-of, or shorten the indicator windows / "
            "[dataset] sequence_length.",
        )
    parts_of, _cuts = split_parts(target_days, ds.train_fraction, ds.validation_fraction)
    return PanelWindows(rows=rows, series_index=series_index, parts_of=parts_of)


def _ticker_sessions(
    panel: Panel,
    *,
    windows: PanelWindows,
    missing: Sequence[str],
    settings: Settings,
    spec: DatasetSpec,
) -> tuple[dict[str, TickerSessions], list[str]]:
    """Each ticker's own usable sessions and windows, and a warning for each with bars but no test
    windows (stopped trading before the test period, or too young)."""
    from stockcli.features.dataset import run_lengths, sessions_short

    L = settings.dataset.sequence_length
    warmup = spec.warmup_sessions
    series_index, parts_of = windows.series_index, windows.parts_of
    test_rows = windows.rows[parts_of == 2]
    test_start = panel.dates[int(test_rows.min()) + 1] if len(test_rows) else None
    runs = run_lengths(panel.valid)
    bars_so_far = np.cumsum(panel.real, axis=0)
    per_ticker: dict[str, TickerSessions] = {}
    warnings: list[str] = []
    for i, ticker in enumerate(spec.tickers):
        own_rows = np.flatnonzero(panel.valid[:, i] & panel.real[:, i])  # its own usable sessions
        per_ticker[ticker] = TickerSessions(
            sessions=len(own_rows),
            first_session=panel.dates[int(own_rows[0])] if len(own_rows) else None,
            last_session=panel.dates[int(own_rows[-1])] if len(own_rows) else None,
            windows=int((series_index == i).sum()),
        )
        if ticker in missing or ((series_index == i) & (parts_of == 2)).any():
            continue
        last = per_ticker[ticker].last_session
        if last is not None and test_start is not None and last < test_start:
            warnings.append(
                f"{ticker} stopped trading on {last.isoformat()}, before the test period starting "
                f"{test_start.isoformat()} (delisted or halted?): it adds training windows only, and "
                "promotion cannot judge it."
            )
            continue
        short = sessions_short(int(runs[-1, i]), int(bars_so_far[-1, i]), L, warmup) if len(runs) else L
        why = f"{len(own_rows)} usable sessions after its {warmup}-session indicator warm-up"
        warnings.append(
            f"{ticker} is too young to have test windows ({why}); the model learns from what it has, "
            "but promotion cannot judge it yet."
            + (f" It needs {short} more sessions for a first window." if short else "")
        )
    return per_ticker, warnings


def _save(
    *,
    settings: Settings,
    engine: Engine,
    run_id: str,
    as_of: date,
    spec: DatasetSpec,
    panel: Panel,
    digest: str,
) -> bool:
    """Upsert the dataset with the config it was made from; False when that content was stored already."""
    from stockcli.db import datasets as datasets_db

    config = {
        "data": {
            "tickers": list(spec.tickers),
            "context_tickers": list(spec.context_tickers),
            "start": settings.data.start.isoformat(),
            "exchange": settings.data.exchange,
        },
        "features": {
            "indicators": list(spec.indicators),
            "ffill_limit": int(settings.features.ffill_limit),
        },
    }
    return datasets_db.save_dataset(
        engine, run_id=run_id, as_of=as_of, feature_spec=spec, config=config, content_hash=digest, panel=panel
    )
