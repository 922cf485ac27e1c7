"""Forecasts of the close 1, 5 and 20 sessions ahead (`horizon_predictions`, scored in place once the
target close is stored) and what each horizon above 1 serves (`horizon_serving`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Text, and_, bindparam, cast, select, update
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import HorizonPrediction, HorizonServing, RawStockData
from stockcli.db.predictions import QUANTILE_PRICES
from stockcli.db.store import upsert, utcnow

HORIZON_KEY = ("ticker", "base_date", "horizon", "model_version")
SERVING_KEY = ("ticker", "horizon")
HORIZON_PRICES = ("base_close", *QUANTILE_PRICES, "actual_close")  # what a restatement rescales
# What the risk backtests, coverage tests and the VaR exceptions chart read of a scored row.
RISK_COLUMNS = (
    "ticker",
    "horizon",
    "base_date",
    "target_date",
    "base_close",
    "actual_close",
    *QUANTILE_PRICES,
    "var_95",
    "var_99",
    "tail",
)


def save_horizon_predictions(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert horizon forecasts on [ticker, base_date, horizon, model_version]: a re-run rewrites them."""
    with engine.begin() as connection:
        return upsert(connection, HorizonPrediction, rows, key=HORIZON_KEY)


def unscored_horizons(engine: Engine, *, through: date) -> list[dict[str, Any]]:
    """Unscored horizon rows with a target session on or before `through`, with its `close` (or None)."""
    rows = HorizonPrediction.__table__
    bars = RawStockData.__table__
    query = (
        select(rows, bars.c.close)
        .select_from(
            rows.outerjoin(bars, and_(bars.c.ticker == rows.c.ticker, bars.c.date == rows.c.target_date))
        )
        .where(rows.c.scored_at.is_(None), rows.c.target_date <= through, rows.c.void_reason.is_(None))
        .order_by(rows.c.target_date, rows.c.ticker, rows.c.horizon)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def mark_scored(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Set `actual_close` of scored horizon rows in the caller's transaction (one batched UPDATE)."""
    if not rows:
        return 0
    table: Any = HorizonPrediction.__table__
    statement = (
        update(table)
        .where(*(table.c[name] == bindparam(f"p_{name}") for name in HORIZON_KEY))
        .values(actual_close=bindparam("p_actual_close"), scored_at=utcnow())
    )
    connection.execute(
        statement, [{f"p_{name}": row[name] for name in (*HORIZON_KEY, "actual_close")} for row in rows]
    )
    return len(rows)


def scored_horizons(
    engine: Engine,
    *,
    start: date,
    end: date,
    horizons: Sequence[int] | None = None,
    tickers: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Scored horizon rows with a target date in [start, end], oldest first, one per (ticker, horizon,
    base date): of several model versions the one created last. With `columns` (holding ticker,
    horizon and base_date) only those are read, and `tail` comes as its JSON text."""
    table = HorizonPrediction.__table__
    selected: list[Any] = list(table.c)
    if columns is not None:
        selected = [cast(table.c[n], Text).label(n) if n == "tail" else table.c[n] for n in columns]
    query = (
        select(*selected)
        .where(
            table.c.scored_at.is_not(None),
            table.c.target_date >= start,
            table.c.target_date <= end,
            table.c.void_reason.is_(None),
        )
        .order_by(table.c.base_date, table.c.ticker, table.c.horizon, table.c.created_at.desc())
    )
    if horizons is not None:
        query = query.where(table.c.horizon.in_(list(horizons)))
    if tickers is not None:
        query = query.where(table.c.ticker.in_(list(tickers)))
    kept: dict[tuple[str, int, date], dict[str, Any]] = {}
    with engine.connect() as connection:
        result = connection.execute(query)
        names = list(result.keys())
        where = [names.index(name) for name in ("ticker", "horizon", "base_date")]
        for values in result:  # plain tuples: a RowMapping per row costs more than the row itself
            key = (values[where[0]], int(values[where[1]]), values[where[2]])
            if key not in kept:
                kept[key] = dict(zip(names, values, strict=True))
    return list(kept.values())


# --- what each horizon above 1 serves ----------------------------------------------------------------


def load_horizon_serving(engine: Engine, tickers: Sequence[str]) -> dict[tuple[str, int], dict[str, Any]]:
    """(ticker, horizon) -> its serving row (source, p_value, alphas, ...), for `tickers`."""
    query = select(HorizonServing).where(HorizonServing.ticker.in_(list(tickers)))
    with engine.connect() as connection:
        found = connection.execute(query).mappings().all()
    return {(row["ticker"], int(row["horizon"])): dict(row) for row in found}


def save_horizon_serving(connection: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert whole serving rows [ticker, horizon] in the caller's transaction."""
    now = utcnow()
    return upsert(connection, HorizonServing, [{**row, "updated_at": now} for row in rows], key=SERVING_KEY)


def newest_horizons(engine: Engine, *, as_of: date | None, horizons: Sequence[int]) -> list[dict[str, Any]]:
    """The newest forecast of each (ticker, horizon) made on or before `as_of` (of several model
    versions the one created last); empty on a database from before the horizons."""
    from sqlalchemy import func, inspect

    if not inspect(engine).has_table(HorizonPrediction.__tablename__):
        return []
    table = HorizonPrediction.__table__
    newest = select(table.c.ticker, table.c.horizon, func.max(table.c.base_date).label("base_date")).where(
        table.c.void_reason.is_(None), table.c.horizon.in_(list(horizons))
    )
    if as_of is not None:
        newest = newest.where(table.c.base_date <= as_of)
    latest = newest.group_by(table.c.ticker, table.c.horizon).subquery()
    query = (
        select(table)
        .join(latest, and_(*(table.c[name] == latest.c[name] for name in ("ticker", "horizon", "base_date"))))
        .where(table.c.void_reason.is_(None))
        .order_by(table.c.ticker, table.c.horizon, table.c.created_at.desc())
    )
    kept: dict[tuple[str, int], dict[str, Any]] = {}
    with engine.connect() as connection:
        for row in connection.execute(query):
            kept.setdefault((row.ticker, int(row.horizon)), dict(row._mapping))
    return list(kept.values())
