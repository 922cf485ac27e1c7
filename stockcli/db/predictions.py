"""Daily predictions and their live evaluation: `latest_predictions` and `model_performance_log`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import HorizonPrediction, LatestPrediction, ModelPerformance, RawStockData
from stockcli.db.store import upsert


def save_predictions(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> int:
    """Upsert predictions on (target_date, ticker, model_version): a re-run rewrites the same rows."""
    with engine.begin() as connection:
        return upsert(connection, LatestPrediction, rows, key=("target_date", "ticker", "model_version"))


def unevaluated_predictions(engine: Engine, *, through: date) -> list[dict[str, Any]]:
    """Unscored predictions with a target session on or before `through`, with its close when stored."""
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
        .where(perf.c.target_date.is_(None), pred.c.target_date <= through, pred.c.void_reason.is_(None))
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
    """THE rolling window (monitor, report, dashboard, backtest): scored predictions of the newest
    `sessions` scored target dates up to `through`, oldest first.

    One row per (ticker, target date): of several model versions, the one scored last.
    """
    perf = ModelPerformance.__table__
    filters: list[Any] = [perf.c.void_reason.is_(None)]
    if model_version is not None:
        filters.append(perf.c.model_version == model_version)
    if ticker is not None:
        filters.append(perf.c.ticker == ticker)
    dates_query = select(perf.c.target_date).distinct().where(*filters)
    if through is not None:
        dates_query = dates_query.where(perf.c.target_date <= through)
    dates_query = dates_query.order_by(perf.c.target_date.desc()).limit(sessions)
    with engine.connect() as connection:
        window_dates = [row[0] for row in connection.execute(dates_query)]
        if not window_dates:
            return []
        query = (
            select(perf)
            .where(perf.c.target_date.in_(window_dates), *filters)
            .order_by(
                perf.c.target_date, perf.c.ticker, perf.c.evaluated_at.desc(), perf.c.model_version.desc()
            )
        )
        rows = [dict(row._mapping) for row in connection.execute(query)]
    kept: dict[tuple[str, date], dict[str, Any]] = {}
    for row in rows:
        kept.setdefault((row["ticker"], row["target_date"]), row)
    return list(kept.values())


def scored_between(
    engine: Engine, *, start: date, end: date, tickers: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Every scored prediction with a target date in [start, end] (of `tickers` when given)."""
    perf = ModelPerformance.__table__
    query = (
        select(perf)
        .where(perf.c.target_date >= start, perf.c.target_date <= end, perf.c.void_reason.is_(None))
        .order_by(perf.c.target_date, perf.c.ticker)
    )
    if tickers is not None:
        query = query.where(perf.c.ticker.in_(list(tickers)))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


# The prices a prediction and a score hold; `detail`'s are restated apart.
QUANTILE_PRICES = ("q025", "q10", "q50", "q90", "q975")
PREDICTION_PRICES = ("base_close", "predicted_close", *QUANTILE_PRICES)
SCORE_PRICES = (*PREDICTION_PRICES, "actual_close", "abs_error", "naive_abs_error")
PREDICTION_KEY = ("ticker", "target_date", "model_version")

# How a restatement treats one prediction, from its (base date, target date): (factor, None) rescales
# its prices by the factor, (None, reason) voids it, (None, None) leaves it as it is.
Restatement = Callable[[date, date], tuple[float | None, str | None]]


def restate_predictions(connection: Connection, ticker: str, decide: Restatement) -> tuple[int, int]:
    """Restate the predictions and scores of `ticker` with its restated bars, in the caller's
    transaction; returns how many rows were (rescaled, voided). Ratios and levels do not change."""
    from stockcli.db.horizons import HORIZON_KEY, HORIZON_PRICES  # it reads this module

    rescaled = voided = 0
    tables: tuple[tuple[Any, tuple[str, ...], tuple[str, ...], str], ...] = (
        (LatestPrediction, PREDICTION_PRICES, PREDICTION_KEY, "detail"),
        (ModelPerformance, SCORE_PRICES, PREDICTION_KEY, "detail"),
        # A horizon row's candidates are closes too; its tail quantiles are log returns.
        (HorizonPrediction, HORIZON_PRICES, HORIZON_KEY, "candidates"),
    )
    for model, prices, key, json_column in tables:
        table = model.__table__
        names = dict.fromkeys((*key, "base_date", "target_date", *prices, json_column))
        rows = connection.execute(
            select(*(table.c[name] for name in names)).where(
                table.c.ticker == ticker, table.c.void_reason.is_(None)
            )
        ).all()
        for row in rows:
            factor, reason = decide(row.base_date, row.target_date)
            if reason is not None:
                values: dict[str, Any] = {"void_reason": reason}
                voided += 1
            elif factor is not None:
                values = {name: _times(row._mapping[name], factor) for name in prices}
                values[json_column] = _rescale_json(json_column, row._mapping[json_column], factor)
                rescaled += 1
            else:
                continue
            connection.execute(
                update(table).where(*(table.c[name] == row._mapping[name] for name in key)).values(**values)
            )
    return rescaled, voided


def _rescale_json(column: str, value: Any, factor: float) -> Any:
    """A prediction's `detail`, or a horizon row's `candidates` ({name: five closes}), times `factor`."""
    if column == "detail":
        return rescale_detail(value, factor)
    return None if value is None else (rescale_detail({"candidates": value}, factor) or {})["candidates"]


def rescale_detail(detail: Mapping[str, Any] | None, factor: float) -> dict[str, Any] | None:
    """A prediction's `detail` (`services.predict`; older rows keep the baselines apart) with its
    prices times `factor`; returns, scales, chances and levels kept."""
    if detail is None:
        return None
    out = dict(detail)
    model = detail.get("model")
    if isinstance(model, Mapping):
        out["model"] = {**model, "predicted_close": _times(model.get("predicted_close"), factor)}
        if "quantiles" in model:
            out["model"]["quantiles"] = [_times(q, factor) for q in model.get("quantiles") or []]
    for part in ("candidates", "baselines"):
        quantiles = detail.get(part)
        if isinstance(quantiles, Mapping):
            out[part] = {
                name: [_times(q, factor) for q in values or []] for name, values in quantiles.items()
            }
    return out


def _times(value: Any, factor: float) -> Any:
    return None if value is None else float(value) * factor
