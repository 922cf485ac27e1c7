"""Daily predictions and their live evaluation: `latest_predictions` and `model_performance_log`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, select, tuple_
from sqlalchemy.engine import Engine

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


def save_performance(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    with engine.begin() as connection:
        return upsert(connection, ModelPerformance, rows, key=("target_date", "ticker", "model_version"))


def performance_window(
    engine: Engine, *, through: date, sessions: int, model_version: str | None = None
) -> list[ModelPerformance]:
    """Evaluated predictions of the last `sessions` evaluated target sessions up to `through`."""
    from sqlalchemy.orm import Session

    dates_query = select(ModelPerformance.target_date).where(ModelPerformance.target_date <= through)
    if model_version is not None:
        dates_query = dates_query.where(ModelPerformance.model_version == model_version)
    dates_query = dates_query.distinct().order_by(ModelPerformance.target_date.desc()).limit(sessions)
    with Session(engine) as session:
        window_dates = list(session.scalars(dates_query))
        if not window_dates:
            return []
        query = select(ModelPerformance).where(ModelPerformance.target_date.in_(window_dates))
        if model_version is not None:
            query = query.where(ModelPerformance.model_version == model_version)
        rows = list(session.scalars(query.order_by(ModelPerformance.target_date, ModelPerformance.ticker)))
        session.expunge_all()
        return rows


def predictions_for(engine: Engine, *, keys: Sequence[tuple[date, str, str]]) -> list[LatestPrediction]:
    from sqlalchemy.orm import Session

    if not keys:
        return []
    with Session(engine) as session:
        query = select(LatestPrediction).where(
            tuple_(LatestPrediction.target_date, LatestPrediction.ticker, LatestPrediction.model_version).in_(
                keys
            )
        )
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows
