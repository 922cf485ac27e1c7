"""The one small interface every market-data source implements, plus what they share.

A source returns a normalized frame (naive DatetimeIndex `date`, oldest first, each date once; float64
prices, int64 volume); invalid rows are dropped and counted. The fetch service applies
`drop_implausible_jumps`, which needs the last stored close.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Protocol

from stockcli.db.models import BAR_COLUMNS, PRICE_COLUMNS
from stockcli.errors import TransientSourceError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

# Prices are published rounded, so High can sit a rounding step below Close.
ROUNDING_ABS = 0.01
ROUNDING_REL = 1e-6

CONFLICTING_DUPLICATE = "conflicting duplicate date"
IMPLAUSIBLE_JUMP = "implausible jump"
PRICE_OUT_OF_RANGE = "price out of range"
VOLUME_OUT_OF_RANGE = "volume out of range"

# A day's own move around a split: a close within this (relative) of a whole ratio reads as one.
SPLIT_RATIO_TOLERANCE = 0.1

# A volume beyond BigInteger (the first float64 above 2**63 - 1) is a corrupt row, never wrapped around.
VOLUME_LIMIT = 2.0**63


@dataclass(frozen=True, eq=False)
class SourceBars:
    """What a source returns for one ticker: clean bars, and how many rows it rejected and why."""

    ticker: str
    bars: pd.DataFrame
    rejected: int = 0
    rejected_reasons: Mapping[str, int] = field(default_factory=dict)
    note: str | None = None  # why `bars` is empty, when the source knows


class BarSource(Protocol):
    """A market-data source: daily bars of one ticker from `start` to `end`, both included."""

    name: str

    def fetch(self, ticker: str, *, start: date, end: date) -> SourceBars:
        """Normalized, validated bars; empty bars mean the source has no data for the range.

        Raises InputDataError for malformed input, TransientSourceError for failures worth
        retrying (timeouts, rate limits) and SourceError for other failures.
        """
        ...


def empty_bars() -> pd.DataFrame:
    """A normalized frame with no rows."""
    import pandas as pd

    return pd.DataFrame(
        {name: pd.Series([], dtype="float64") for name in PRICE_COLUMNS}
        | {"volume": pd.Series([], dtype="int64")},
        index=pd.DatetimeIndex([], name="date").as_unit("s"),
    )


def adjusted_to_close(frame: pd.DataFrame) -> pd.DataFrame:
    """A raw frame with its `adj_close` column, if any, applied to every price."""
    if "adj_close" in frame.columns:
        ratio = frame["adj_close"] / frame["close"]
        for name in PRICE_COLUMNS:
            frame[name] = frame[name] * ratio
        frame = frame.drop(columns="adj_close")
    return frame


def validate_bars(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows that cannot be real bars; return the clean frame and rejection counts by reason
    (each row under the first that applies).

    A date given twice keeps one row when its rows are identical and none when they differ (a later
    fetch re-reads it in its overlap).
    """
    import numpy as np
    import pandas as pd

    reasons: dict[str, int] = {}
    if raw.index.has_duplicates:
        raw, conflicting = _resolve_duplicate_dates(raw)
        if conflicting:
            reasons[CONFLICTING_DUPLICATE] = conflicting
    prices = raw[list(PRICE_COLUMNS)].astype("float64")
    volume = raw["volume"].astype("float64")
    top = prices[["open", "close"]].max(axis=1)
    bottom = prices[["open", "close"]].min(axis=1)
    tolerance = ROUNDING_ABS + ROUNDING_REL * prices["high"].abs()
    checks = (
        ("missing price", prices.isna().any(axis=1)),
        (PRICE_OUT_OF_RANGE, np.isinf(prices).any(axis=1)),
        ("non-positive price", (prices <= 0).any(axis=1)),
        ("high below low", prices["high"] < prices["low"]),
        ("high below open/close", prices["high"] < top - tolerance),
        ("low above open/close", prices["low"] > bottom + tolerance),
        ("missing volume", volume.isna()),
        ("negative volume", volume < 0),
        (VOLUME_OUT_OF_RANGE, volume.round() >= VOLUME_LIMIT),
    )
    rejected = np.zeros(len(raw), dtype=bool)
    for reason, mask in checks:
        new = mask.to_numpy(dtype=bool) & ~rejected
        if new.any():
            reasons[reason] = int(new.sum())
            rejected |= new
    keep = ~rejected
    clean = prices[keep].copy()
    clean["volume"] = np.round(volume[keep].to_numpy()).astype("int64")
    clean.index = pd.DatetimeIndex(raw.index[keep], name="date").as_unit("s")
    return clean.sort_index(), reasons


def _resolve_duplicate_dates(raw: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """One row per date (identical repeats collapse, conflicting dates drop); the frame and the count."""
    import numpy as np

    values = raw[list(BAR_COLUMNS)].astype("float64")
    first_rows = values[~values.index.duplicated(keep="first")]
    aligned = first_rows.reindex(values.index)  # each row next to the first row of its date
    same = np.isclose(values.to_numpy(), aligned.to_numpy(), rtol=1e-12, atol=0.0, equal_nan=True).all(axis=1)
    conflicting_dates = values.index[~same].unique()
    conflicted = values.index.isin(conflicting_dates)
    keep = ~conflicted & ~values.index.duplicated(keep="first")
    return raw[keep], int(conflicted.sum())


def drop_implausible_jumps(
    bars: pd.DataFrame, *, max_jump_factor: float, previous_close: float | None = None
) -> tuple[pd.DataFrame, int]:
    """Drop the bars with a price beyond `max_jump_factor` (or its inverse) times the previous kept
    close (for the first bar, `previous_close`); a dropped bar is never a reference. 0 disables it.

    `bars` must be validated. Returns the kept bars and how many were dropped.
    """
    if max_jump_factor <= 0 or bars.empty:
        return bars, 0
    import numpy as np

    prices = bars[list(PRICE_COLUMNS)].to_numpy(dtype="float64")
    highest = prices.max(axis=1)
    lowest = prices.min(axis=1)
    closes = prices[:, PRICE_COLUMNS.index("close")]
    keep = np.ones(len(bars), dtype=bool)
    reference = previous_close if previous_close is not None and previous_close > 0 else None
    for row in range(len(bars)):
        if reference is not None and (
            highest[row] > reference * max_jump_factor or lowest[row] * max_jump_factor < reference
        ):
            keep[row] = False
        else:
            reference = float(closes[row])
    dropped = int((~keep).sum())
    return (bars[keep] if dropped else bars), dropped


def suspected_split(
    bars: pd.DataFrame, kept: pd.DataFrame, *, previous_close: float | None = None
) -> tuple[date, float] | None:
    """(first day, price factor) when the bars dropped from `bars` (leaving `kept`) look like an
    unadjusted split: every bar from one day on (at least two), moved by a near-integer ratio or its
    inverse from the close before. None otherwise.
    """
    import numpy as np

    dropped = ~bars.index.isin(kept.index)
    if dropped.sum() < 2:
        return None
    first = int(np.flatnonzero(dropped)[0])
    if not dropped[first:].all():  # a split persists; bars back at the old level are no split
        return None
    closes = bars["close"].to_numpy(dtype="float64")
    reference = closes[first - 1] if first > 0 else previous_close
    if reference is None or not reference > 0:
        return None
    ratio = float(closes[first] / reference)
    times = max(ratio, 1.0 / ratio)
    whole = round(times)
    if whole < 2 or abs(times / whole - 1.0) > SPLIT_RATIO_TOLERANCE:
        return None
    return bars.index[first].date(), float(whole) if ratio > 1 else 1.0 / whole


def clip_range(frame: pd.DataFrame, start: date, end: date) -> pd.DataFrame:
    """Rows dated from `start` to `end`, both included."""
    import pandas as pd

    return frame[(frame.index >= pd.Timestamp(start)) & (frame.index <= pd.Timestamp(end))]


def finish(ticker: str, raw: pd.DataFrame, start: date, end: date, *, note: str | None = None) -> SourceBars:
    """Clip a raw frame to the range, validate it and wrap it as SourceBars."""
    clean, reasons = validate_bars(clip_range(raw, start, end))
    return SourceBars(
        ticker=ticker, bars=clean, rejected=sum(reasons.values()), rejected_reasons=reasons, note=note
    )


def fetch_with_retries(
    source: BarSource,
    ticker: str,
    *,
    start: date,
    end: date,
    max_retries: int,
    backoff_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> SourceBars:
    """`source.fetch`, retried on TransientSourceError up to `max_retries` times, the n-th after
    `backoff_s * 2**(n-1)` seconds."""
    attempt = 0
    while True:
        try:
            return source.fetch(ticker, start=start, end=end)
        except TransientSourceError as exc:
            if attempt >= max_retries:
                raise TransientSourceError(
                    f"{exc.message} (gave up after {attempt + 1} attempt{'s' if attempt else ''}).",
                    hint=exc.hint
                    or "Try again later; raise [data] max_retries or retry_backoff_s if it persists.",
                ) from exc
            delay = backoff_s * (2**attempt)
            attempt += 1
            logger.warning(
                "%s: %s; retry %d of %d in %.1f s", ticker, exc.message, attempt, max_retries, delay
            )
            sleep(delay)
