"""Stored daily bars: reads and idempotent writes of `raw_stock_data` [ticker, date]."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import String, delete, func, select, type_coerce
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import BAR_COLUMNS, RawStockData
from stockcli.db.store import upsert

if TYPE_CHECKING:
    import pandas as pd


def upsert_bars(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert bar rows (ticker, date, open, high, low, close, volume, source, fetched_at)."""
    return upsert(connection, RawStockData, rows, key=("ticker", "date"))


def delete_bars(connection: Connection, ticker: str) -> int:
    """Delete every stored bar of `ticker` (inside the caller's transaction); returns the count."""
    result = connection.execute(delete(RawStockData).where(RawStockData.ticker == ticker))
    return int(result.rowcount or 0)


def last_dates(engine: Engine, tickers: Iterable[str], *, end: date) -> dict[str, date]:
    """The newest stored date per ticker on or before `end`."""
    query = (
        select(RawStockData.ticker, func.max(RawStockData.date))
        .where(RawStockData.ticker.in_(list(tickers)), RawStockData.date <= end)
        .group_by(RawStockData.ticker)
    )
    with engine.connect() as connection:
        return {ticker: last for ticker, last in connection.execute(query)}


def sources_by_ticker(engine: Engine, tickers: Iterable[str]) -> dict[str, set[str]]:
    """The sources the stored bars of each ticker came from (tickers without bars left out)."""
    query = (
        select(RawStockData.ticker, RawStockData.source)
        .where(RawStockData.ticker.in_(list(tickers)))
        .distinct()
    )
    found: dict[str, set[str]] = {}
    with engine.connect() as connection:
        for ticker, source in connection.execute(query):
            found.setdefault(ticker, set()).add(source)
    return found


def _bars_query(tickers: Sequence[str], start: date | None, end: date | None) -> Any:
    # The date as the driver returns it (not a Python date a row): `_frames` converts the column at once.
    table = RawStockData.__table__
    query = select(
        table.c.ticker,
        type_coerce(table.c.date, String).label("date"),
        *(table.c[name] for name in BAR_COLUMNS),
    ).where(table.c.ticker.in_(list(tickers)))
    if start is not None:
        query = query.where(RawStockData.date >= start)
    if end is not None:
        query = query.where(RawStockData.date <= end)
    return query.order_by(RawStockData.ticker, RawStockData.date)


def _frames(rows: Sequence[Any], tickers: Sequence[str]) -> dict[str, pd.DataFrame]:
    import numpy as np
    import pandas as pd

    # Rows come ordered by ticker, then date: each ticker is one block of columns split once (~55 s
    # down to a few for 500 tickers x 10 years, against a frame filtered per ticker).
    columns = list(zip(*rows, strict=True)) if rows else [()] * (2 + len(BAR_COLUMNS))
    names = np.asarray(columns[0], dtype=object)
    if columns[1] and isinstance(columns[1][0], str):  # SQLite's ISO dates: numpy parses them in C
        dates = np.array(columns[1], dtype="datetime64[D]").astype("datetime64[s]")
    else:  # dates from PostgreSQL
        dates = pd.to_datetime(pd.Series(columns[1], dtype=object)).to_numpy().astype("datetime64[s]")
    every = pd.DataFrame(
        {
            name: np.asarray(columns[2 + i], dtype="int64" if name == "volume" else "float64")
            for i, name in enumerate(BAR_COLUMNS)
        },
        index=pd.DatetimeIndex(dates, name="date"),
    )
    blocks: dict[str, tuple[int, int]] = {}
    if len(names):
        starts = np.concatenate([[0], np.flatnonzero(names[1:] != names[:-1]) + 1])
        ends = np.append(starts[1:], len(names))
        blocks = {str(names[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)}
    # Each ticker's frame is a slice of one frame (copy-on-write: a caller's change stays its own).
    return {ticker: every.iloc[slice(*blocks.get(ticker, (0, 0)))] for ticker in tickers}


def stored_bars(
    connection: Connection, ticker: str, *, start: date | None = None, end: date | None = None
) -> pd.DataFrame:
    """The stored bars of one ticker, read on the caller's connection (so inside its transaction)."""
    rows = connection.execute(_bars_query([ticker], start, end)).all()
    return _frames(rows, [ticker])[ticker]


def load_bars(
    engine: Engine,
    tickers: Sequence[str],
    *,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, pd.DataFrame]:
    """Stored bars per ticker (float64 prices, int64 volume) indexed by `date`, oldest first, nothing
    after `end`; an empty frame for a ticker without bars."""
    with engine.connect() as connection, _collector_paused():
        rows = connection.execute(_bars_query(tickers, start, end)).all()
        return _frames(rows, tickers)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a bulk load holds ~10^6 row tuples (no cycles): 500
    tickers x 690 bars load in ~0.8 s instead of ~1.5 s."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def close_before(connection: Connection, ticker: str, day: date) -> float | None:
    """The newest stored close of `ticker` dated strictly before `day`, or None when there is none."""
    query = (
        select(RawStockData.close)
        .where(RawStockData.ticker == ticker, RawStockData.date < day)
        .order_by(RawStockData.date.desc())
        .limit(1)
    )
    value = connection.execute(query).scalar_one_or_none()
    return float(value) if value is not None else None


def newest_bar_date(engine: Engine) -> date | None:
    """The newest stored bar's date, of any ticker (None when nothing is stored)."""
    with engine.connect() as connection:
        return connection.execute(select(func.max(RawStockData.date))).scalar_one_or_none()  # type: ignore[no-any-return]
