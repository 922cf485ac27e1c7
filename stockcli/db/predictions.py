"""Daily predictions and their live evaluation: `latest_predictions` and `model_performance_log`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, select
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import LatestPrediction, ModelPerformance, RawStockData
from stockcli.db.store import upsert


def save_predictions(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert predictions on (target_date, ticker, model_version): a re-run rewrites the same rows."""
    with engine.begin() as connection:
        return upsert(connection, LatestPrediction, rows, key=("target_date", "ticker", "model_version"))


def unevaluated_predictions(engine: Engine, *, through: date) -> list[dict[str, Any]]:
    """Predictions whose target session is on or before `through`, with the real close when stored,
    and no performance row yet."""
    perf = ModelPerformance.__table__
    pred = LatestPrediction.__table__
    bars = RawStockData.__table__
    query = (
        select(pred, bars.c.close.label("actual_close"))
        .select_from(
            pred.outerjoin(
                perf,
                and_(
                    perf.c.target_date == pred.c.target_date,
                    perf.c.ticker == pred.c.ticker,
                    perf.c.model_version == pred.c.model_version,
                ),
            ).outerjoin(bars, and_(bars.c.ticker == pred.c.ticker, bars.c.date == pred.c.target_date))
        )
        .where(perf.c.target_date.is_(None), pred.c.target_date <= through)
        .order_by(pred.c.target_date, pred.c.ticker)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def save_performance(
    engine: Engine,
    rows: Sequence[Mapping[str, Any]],
    *,
    on_commit: Callable[[Connection], None] | None = None,
) -> int:
    """Upsert scored predictions; `on_commit(connection)` writes more in the same transaction."""
    with engine.begin() as connection:
        count = upsert(connection, ModelPerformance, rows, key=("target_date", "ticker", "model_version"))
        if on_commit is not None and rows:
            on_commit(connection)
        return count


def performance_window(
    engine: Engine,
    *,
    through: date | None,
    sessions: int,
    model_version: str | None = None,
    ticker: str | None = None,
) -> list[dict[str, Any]]:
    """THE rolling window: scored predictions of the newest `sessions` scored target dates up to
    `through` (all tickers together), optionally of one model version and one ticker.

    One row per (ticker, target date): when several model versions were scored for the same
    session (a re-run after a promotion) and no version is asked for, the one scored last counts.
    Monitor, report, the dashboard and backtest all read their windows here. Rows oldest first.
    """
    perf = ModelPerformance.__table__
    dates_query = select(perf.c.target_date).distinct()
    if through is not None:
        dates_query = dates_query.where(perf.c.target_date <= through)
    if model_version is not None:
        dates_query = dates_query.where(perf.c.model_version == model_version)
    if ticker is not None:
        dates_query = dates_query.where(perf.c.ticker == ticker)
    dates_query = dates_query.order_by(perf.c.target_date.desc()).limit(sessions)
    with engine.connect() as connection:
        window_dates = [row[0] for row in connection.execute(dates_query)]
        if not window_dates:
            return []
        query = select(perf).where(perf.c.target_date.in_(window_dates))
        if model_version is not None:
            query = query.where(perf.c.model_version == model_version)
        if ticker is not None:
            query = query.where(perf.c.ticker == ticker)
        query = query.order_by(
            perf.c.target_date, perf.c.ticker, perf.c.evaluated_at.desc(), perf.c.model_version.desc()
        )
        rows = [dict(row._mapping) for row in connection.execute(query)]
    kept: dict[tuple[str, date], dict[str, Any]] = {}
    for row in rows:
        kept.setdefault((row["ticker"], row["target_date"]), row)
    return list(kept.values())


def scored_between(engine: Engine, *, start: date, end: date) -> list[dict[str, Any]]:
    """Every scored prediction with a target date in [start, end] (a backtest's whole range)."""
    perf = ModelPerformance.__table__
    query = (
        select(perf)
        .where(perf.c.target_date >= start, perf.c.target_date <= end)
        .order_by(perf.c.target_date, perf.c.ticker)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]
