"""`process`: stored bars up to as-of -> a frozen, versioned dataset (features, alignment, targets).

The dataset id is derived from its content hash (inputs: the bars read and the feature spec;
outputs: every array), so the same bars and config give the same hash and the same id, and
re-processing identical input is an idempotent upsert (`reused=True`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.config import Settings, normalize_ticker
from stockcli.errors import NoDataError
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    import pandas as pd

    from stockcli.features.dataset import DatasetArrays

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class ProcessResult:
    """What `process` froze: the dataset id and its shape."""

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


def feature_spec(settings: Settings, tickers: Sequence[str]) -> dict[str, Any]:
    """The dataset's feature spec (JSON-able): everything needed to recompute its features."""
    from stockcli.features.indicators import canonical_indicators, feature_names, warmup_sessions

    indicators = canonical_indicators(settings.features.indicators)
    return {
        "version": 1,
        "tickers": list(tickers),
        "indicators": indicators,
        "feature_names": feature_names(indicators),
        "ffill_limit": int(settings.features.ffill_limit),
        "start_date": settings.data.start.isoformat(),
        "warmup_sessions": warmup_sessions(indicators),
    }


def content_hash(spec: Mapping[str, Any], bars: Mapping[str, pd.DataFrame], dataset: DatasetArrays) -> str:
    """SHA-256 of the spec, the bars read (dates and OHLCV) and every output array."""
    from stockcli.features.dataset import dates_to_days

    digest = hashlib.sha256()
    digest.update(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode())
    for ticker in spec["tickers"]:
        frame = bars[ticker]
        digest.update(ticker.encode() + b"\0")
        digest.update(np.asarray(frame.index, dtype="datetime64[D]").astype(np.int64).tobytes())
        for column in ("open", "high", "low", "close", "volume"):
            digest.update(np.ascontiguousarray(frame[column].to_numpy(dtype=np.float64)).tobytes())
    digest.update(dates_to_days(dataset.dates).tobytes())
    for array in (dataset.features, dataset.closes, dataset.target_price, dataset.target_return):
        digest.update(np.ascontiguousarray(array).tobytes())
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
    """Turn the stored bars up to `as_of` into a dataset and save it.

    Raises ConfigError for a bad indicator config, NoDataError when tickers have no bars (listing
    them) or too little history (naming each ticker and how many sessions are missing).
    """
    from stockcli.db import bars as bars_db
    from stockcli.db import datasets as datasets_db
    from stockcli.features.dataset import make_dataset, min_windows, required_sessions, window_bases

    chosen = tuple(normalize_ticker(t) for t in (tickers or settings.data.tickers))
    spec = feature_spec(settings, chosen)  # validates the indicator config first (ConfigError)
    warmup = int(spec["warmup_sessions"])
    ds = settings.dataset
    start = settings.data.start

    _report(progress, "loading bars", 0, 1)
    bars = bars_db.load_bars(engine, list(chosen), start=start, end=as_of)
    _report(progress, "loading bars", 1, 1)
    missing = [t for t in chosen if bars[t].empty]
    if missing:
        raise NoDataError(
            f"No stored bars for {', '.join(missing)} between {start.isoformat()} and {as_of.isoformat()}.",
            hint="Run `stockcli fetch` first (or check [data] start and --as-of).",
        )
    needed = required_sessions(
        warmup=warmup,
        sequence_length=ds.sequence_length,
        train_fraction=ds.train_fraction,
        validation_fraction=ds.validation_fraction,
    )
    short = {t: len(bars[t]) for t in chosen if len(bars[t]) < needed}
    if short:
        details = "; ".join(f"{t} has {n} sessions, {needed - n} missing" for t, n in short.items())
        raise NoDataError(
            f"Too little history up to {as_of.isoformat()}: {details}. Each ticker needs {needed} sessions "
            f"({warmup} indicator warm-up + {ds.sequence_length} for a window + "
            f"{needed - warmup - ds.sequence_length} windows for the split).",
            hint="Fetch an earlier [data] start, use a later --as-of, or shorten the indicator windows / "
            "[dataset] sequence_length.",
        )

    dataset = make_dataset(
        bars,
        tickers=chosen,
        indicators=spec["indicators"],
        ffill_limit=int(spec["ffill_limit"]),
        start_date=start,
        end_date=as_of,
        progress=progress,
    )
    windows = len(window_bases(dataset.has_target, ds.sequence_length))
    wanted = min_windows(ds.train_fraction, ds.validation_fraction)
    if windows < wanted:
        latest = max(chosen, key=lambda t: bars[t].index[0])
        raise NoDataError(
            f"The tickers overlap on only {dataset.n_sessions} sessions after warm-up, giving {windows} "
            f"windows; the split needs {wanted}, so {wanted - windows} sessions are missing. "
            f"{latest} starts last, on {bars[latest].index[0].date().isoformat()}.",
            hint=f"Drop {latest} from the tickers, fetch more history, or use a later --as-of.",
        )

    _report(progress, "hashing", 0, 1)
    digest = content_hash(spec, bars, dataset)
    run_id = dataset_run_id(dataset.dates[-1], digest)
    config = {
        "data": {"tickers": list(chosen), "start": start.isoformat(), "exchange": settings.data.exchange},
        "features": {
            "indicators": spec["indicators"],
            "ffill_limit": int(settings.features.ffill_limit),
        },
    }
    _report(progress, "saving dataset", 0, 1)
    checkpoint(settings, "process:before_save")
    written = datasets_db.save_dataset(
        engine,
        run_id=run_id,
        as_of=as_of,
        tickers=chosen,
        feature_names=dataset.feature_names,
        feature_spec=spec,
        config=config,
        content_hash=digest,
        dates=dataset.dates,
        features=dataset.features,
        closes=dataset.closes,
        target_price=dataset.target_price,
        target_return=dataset.target_return,
    )
    _report(progress, "saving dataset", 1, 1)
    return ProcessResult(
        run_id=run_id,
        tickers=chosen,
        sessions=dataset.n_sessions,
        n_features=len(dataset.feature_names),
        feature_names=dataset.feature_names,
        start_date=dataset.dates[0],
        end_date=dataset.dates[-1],
        content_hash=digest,
        reused=not written,
        as_of=as_of,
        windows_possible=windows,
    )


def _report(progress: Progress | None, stage: str, done: int, total: int) -> None:
    if progress is not None:
        progress(stage, done, total)
