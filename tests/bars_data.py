"""Bars for dataset tests: the bundled sample CSVs, synthetic random walks, and storing them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA_DIR = Path(__file__).resolve().parents[1] / "stockcli" / "sources" / "data"
SAMPLE_FILES = {"GOOG": "GOOG.csv", "MSFT": "MSFT.csv", "^GSPC": "GSPC.csv", "^IXIC": "IXIC.csv"}
SAMPLE_TICKERS = tuple(SAMPLE_FILES)

_cache: dict[str, pd.DataFrame] = {}


def sample_frame(ticker: str, start: date | None = None, end: date | None = None) -> pd.DataFrame:
    """One bundled sample ticker as load_bars returns it (DatetimeIndex `date`, OHLCV)."""
    if ticker not in _cache:
        raw = pd.read_csv(DATA_DIR / SAMPLE_FILES[ticker], parse_dates=["Date"])
        frame = pd.DataFrame(
            {
                "open": raw["Open"].astype("float64").to_numpy(),
                "high": raw["High"].astype("float64").to_numpy(),
                "low": raw["Low"].astype("float64").to_numpy(),
                "close": raw["Close"].astype("float64").to_numpy(),
                "volume": raw["Volume"].astype("int64").to_numpy(),
            },
            index=pd.DatetimeIndex(raw["Date"], name="date"),
        )
        _cache[ticker] = frame
    frame = _cache[ticker]
    if start is not None:
        frame = frame[frame.index >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame.index <= pd.Timestamp(end)]
    return frame.copy()


def sample_frames(
    tickers: Sequence[str] = SAMPLE_TICKERS, start: date | None = None, end: date | None = None
) -> dict[str, pd.DataFrame]:
    return {t: sample_frame(t, start, end) for t in tickers}


def weekdays(start: date, count: int) -> list[date]:
    """`count` Monday-to-Friday dates from `start` on (a stand-in calendar for synthetic bars)."""
    days: list[date] = []
    day = start
    while len(days) < count:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def synthetic_frame(
    days: Sequence[date], seed: int, *, zero_volume: bool = False, price: float = 100.0
) -> pd.DataFrame:
    """A random-walk OHLCV frame on `days` (seeded, so reproducible)."""
    rng = np.random.default_rng(seed)
    n = len(days)
    close = price * np.exp(np.cumsum(rng.normal(0.0003, 0.015, n)))
    open_ = close * np.exp(rng.normal(0, 0.004, n))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n))
    volume = np.zeros(n, dtype=np.int64) if zero_volume else rng.integers(100_000, 5_000_000, n)
    return pd.DataFrame(
        {"open": open_, "high": high, "low": low, "close": close, "volume": volume},
        index=pd.DatetimeIndex(pd.to_datetime(list(days)), name="date"),
    )


def bar_rows(frames: Mapping[str, pd.DataFrame], source: str = "sample") -> list[dict[str, Any]]:
    fetched = datetime(2013, 3, 2, tzinfo=UTC)
    rows = []
    for ticker, frame in frames.items():
        for day, o, h, lo, c, v in zip(
            frame.index.date,
            frame["open"],
            frame["high"],
            frame["low"],
            frame["close"],
            frame["volume"],
            strict=True,
        ):
            rows.append(
                {
                    "ticker": ticker,
                    "date": day,
                    "open": float(o),
                    "high": float(h),
                    "low": float(lo),
                    "close": float(c),
                    "volume": int(v),
                    "source": source,
                    "fetched_at": fetched,
                }
            )
    return rows


def store_frames(engine: Any, frames: Mapping[str, pd.DataFrame], source: str = "sample") -> int:
    """Upsert the frames' bars through the real `upsert_bars`."""
    from stockcli.db.bars import upsert_bars

    rows = bar_rows(frames, source)
    with engine.begin() as connection:
        upsert_bars(connection, rows)
    return len(rows)
