"""The one small interface every market-data source implements, plus what they share.

A source turns a ticker and a date range into a *normalized* frame: a naive DatetimeIndex of session
dates named `date`, oldest first, columns open/high/low/close (float64) and volume (int64). Rows that
fail validation are dropped and counted, never stored. Structural problems (a CSV without a column,
an unparsable date...) raise `InputDataError`; transient network trouble raises
`TransientSourceError`, which the caller retries with backoff (`fetch_with_retries`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Protocol

from stockcli.errors import TransientSourceError

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = (*PRICE_COLUMNS, "volume")

# Prices are published rounded (cents, or 4 decimals for indices), so High can sit a rounding step
# below Close: only a gap beyond this counts as an inconsistent bar.
ROUNDING_ABS = 0.01
ROUNDING_REL = 1e-6


@dataclass(frozen=True, eq=False)
class SourceBars:
    """What a source returns for one ticker: clean bars, and how many rows it rejected and why."""

    ticker: str
    bars: pd.DataFrame
    rejected: int = 0
    rejected_reasons: Mapping[str, int] = field(default_factory=dict)
    # Why `bars` is empty, when the source knows (e.g. "possibly delisted").
    note: str | None = None


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

    frame = pd.DataFrame(
        {name: pd.Series([], dtype="float64") for name in PRICE_COLUMNS}
        | {"volume": pd.Series([], dtype="int64")},
        index=pd.DatetimeIndex([], name="date").as_unit("s"),
    )
    return frame


def validate_bars(raw: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Drop the rows that cannot be real bars; return the clean frame and rejection counts by reason.

    `raw` has a naive DatetimeIndex and float columns open, high, low, close, volume (NaN = missing).
    Each rejected row is counted once, under the first reason that applies.
    """
    import numpy as np
    import pandas as pd

    prices = raw[list(PRICE_COLUMNS)].astype("float64")
    volume = raw["volume"].astype("float64")
    top = prices[["open", "close"]].max(axis=1)
    bottom = prices[["open", "close"]].min(axis=1)
    tolerance = ROUNDING_ABS + ROUNDING_REL * prices["high"].abs()
    checks = (
        ("missing price", prices.isna().any(axis=1)),
        ("non-positive price", (prices <= 0).any(axis=1)),
        ("high below low", prices["high"] < prices["low"]),
        ("high below open/close", prices["high"] < top - tolerance),
        ("low above open/close", prices["low"] > bottom + tolerance),
        ("missing volume", volume.isna()),
        ("negative volume", volume < 0),
    )
    rejected = np.zeros(len(raw), dtype=bool)
    reasons: dict[str, int] = {}
    for reason, mask in checks:
        new = mask.to_numpy(dtype=bool) & ~rejected
        if new.any():
            reasons[reason] = int(new.sum())
            rejected |= new
    keep = ~rejected
    clean = prices[keep].copy()
    clean["volume"] = np.round(volume[keep].to_numpy()).astype("int64")
    # Second resolution, like the frames `db.bars.load_bars` returns.
    clean.index = pd.DatetimeIndex(raw.index[keep], name="date").as_unit("s")
    return clean.sort_index(), reasons


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
    """`source.fetch`, retried on TransientSourceError up to `max_retries` times with exponential backoff.

    The n-th retry waits `backoff_s * 2**(n-1)` seconds. After the last retry the error is raised
    with the number of attempts in its message.
    """
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
