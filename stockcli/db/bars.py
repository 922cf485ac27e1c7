"""Stored daily bars: reads and idempotent writes of `raw_stock_data` [ticker, date]."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import RawStockData
from stockcli.db.store import upsert

if TYPE_CHECKING:
    import pandas as pd

BAR_COLUMNS = ("open", "high", "low", "close", "volume")


def upsert_bars(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert bar rows (ticker, date, open, high, low, close, volume, source, fetched_at)."""
    return upsert(connection, RawStockData, rows, key=("ticker", "date"))


def last_dates(engine: Engine, tickers: Iterable[str] | None = None) -> dict[str, date]:
    """The newest stored date per ticker."""
    query = select(RawStockData.ticker, func.max(RawStockData.date)).group_by(RawStockData.ticker)
    if tickers is not None:
        query = query.where(RawStockData.ticker.in_(list(tickers)))
    with engine.connect() as connection:
        return {ticker: last for ticker, last in connection.execute(query)}


def load_bars(
    engine: Engine,
    tickers: Sequence[str],
    *,
    start: date | None = None,
    end: date | None = None,
) -> dict[str, pd.DataFrame]:
    """Stored bars per ticker as frames indexed by a DatetimeIndex named `date`, oldest first.

    Columns: open, high, low, close (float64), volume (int64). Nothing after `end` is returned, so
    passing the run's as-of keeps every later bar invisible. Tickers without bars map to empty frames.
    """
    import pandas as pd

    query = select(
        RawStockData.ticker,
        RawStockData.date,
        RawStockData.open,
        RawStockData.high,
        RawStockData.low,
        RawStockData.close,
        RawStockData.volume,
    ).where(RawStockData.ticker.in_(list(tickers)))
    if start is not None:
        query = query.where(RawStockData.date >= start)
    if end is not None:
        query = query.where(RawStockData.date <= end)
    query = query.order_by(RawStockData.ticker, RawStockData.date)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    frame = pd.DataFrame(rows, columns=["ticker", "date", *BAR_COLUMNS])
    result: dict[str, pd.DataFrame] = {}
    for ticker in tickers:
        part = frame[frame["ticker"] == ticker]
        bars = pd.DataFrame(
            {
                "open": part["open"].astype("float64").to_numpy(),
                "high": part["high"].astype("float64").to_numpy(),
                "low": part["low"].astype("float64").to_numpy(),
                "close": part["close"].astype("float64").to_numpy(),
                "volume": part["volume"].astype("int64").to_numpy(),
            },
            index=pd.DatetimeIndex(pd.to_datetime(part["date"]), name="date"),
        )
        result[ticker] = bars
    return result
