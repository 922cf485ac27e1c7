"""Stored daily bars: reads and idempotent writes of `raw_stock_data` [ticker, date]."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import RawStockData

if TYPE_CHECKING:
    import pandas as pd

BAR_COLUMNS = ("open", "high", "low", "close", "volume")


def upsert_bars(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert bar rows (ticker, date, open, high, low, close, volume, source, fetched_at).

    One executemany of a single-row `insert ... on conflict do update`: compiling one multi-row
    VALUES statement per batch (as `store.upsert` does) costs about a second per thousand bars.
    """
    if not rows:
        return 0
    insert_fn = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    statement = insert_fn(RawStockData)
    columns = [name for name in rows[0] if name not in ("ticker", "date")]
    statement = statement.on_conflict_do_update(
        index_elements=["ticker", "date"], set_={name: statement.excluded[name] for name in columns}
    )
    connection.execute(statement, [dict(row) for row in rows])
    return len(rows)


def delete_bars(connection: Connection, ticker: str) -> int:
    """Delete every stored bar of `ticker` (inside the caller's transaction); returns the count."""
    result = connection.execute(delete(RawStockData).where(RawStockData.ticker == ticker))
    return int(result.rowcount or 0)


def last_dates(
    engine: Engine, tickers: Iterable[str] | None = None, *, end: date | None = None
) -> dict[str, date]:
    """The newest stored date per ticker (on or before `end` when given)."""
    query = select(RawStockData.ticker, func.max(RawStockData.date)).group_by(RawStockData.ticker)
    if tickers is not None:
        query = query.where(RawStockData.ticker.in_(list(tickers)))
    if end is not None:
        query = query.where(RawStockData.date <= end)
    with engine.connect() as connection:
        return {ticker: last for ticker, last in connection.execute(query)}


def bar_counts(engine: Engine, tickers: Iterable[str] | None = None) -> dict[str, int]:
    """How many bars are stored per ticker."""
    query = select(RawStockData.ticker, func.count()).group_by(RawStockData.ticker)
    if tickers is not None:
        query = query.where(RawStockData.ticker.in_(list(tickers)))
    with engine.connect() as connection:
        return {ticker: int(count) for ticker, count in connection.execute(query)}


def ticker_sources(connection: Connection, ticker: str) -> set[str]:
    """The sources the stored bars of `ticker` came from (more than one would mean mixed bases)."""
    query = select(RawStockData.source).where(RawStockData.ticker == ticker).distinct()
    return {source for (source,) in connection.execute(query)}


def _bars_query(tickers: Sequence[str], start: date | None, end: date | None) -> Any:
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
    return query.order_by(RawStockData.ticker, RawStockData.date)


def _frames(rows: Sequence[Any], tickers: Sequence[str]) -> dict[str, pd.DataFrame]:
    import pandas as pd

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
    """Stored bars per ticker as frames indexed by a DatetimeIndex named `date`, oldest first.

    Columns: open, high, low, close (float64), volume (int64). Nothing after `end` is returned, so
    passing the run's as-of keeps every later bar invisible. Tickers without bars map to empty frames.
    """
    with engine.connect() as connection:
        rows = connection.execute(_bars_query(tickers, start, end)).all()
    return _frames(rows, tickers)
