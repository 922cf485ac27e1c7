"""Read-only queries behind `stockcli report` and `stockcli serve`: no writes, no upgrade, no lock, so
the dashboard reads while the daily job writes (and a missing SQLite file is not created)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, Literal

from sqlalchemy import func, inspect, select, union
from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db.engine import make_engine
from stockcli.db.models import LatestPrediction, ModelPerformance, PipelineRun, Promotion, RawStockData

DatabaseState = Literal["missing", "no_schema", "empty", "ready"]

# The tables report and serve read; a database without them has never seen `stockcli daily`.
REPORT_TABLES = {
    model.__tablename__
    for model in (RawStockData, LatestPrediction, ModelPerformance, PipelineRun, Promotion)
}


def connect_readonly(settings: Settings) -> Engine | None:
    """An engine that only reads, or None when the SQLite file does not exist; ConfigError when the
    data dir is a file."""
    from stockcli.storage import check_data_dir, sqlite_file

    check_data_dir(settings.data_dir)
    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        return None
    return make_engine(
        settings.database_url, busy_timeout_s=settings.storage.sqlite_busy_timeout_s, read_only=True
    )


def database_state(engine: Engine | None) -> DatabaseState:
    """`missing` (no file), `no_schema` (no stockcli tables), `empty` (no bars, no predictions), `ready`;
    an unreachable database raises SQLAlchemy's error."""
    if engine is None:
        return "missing"
    names = set(inspect(engine).get_table_names())
    if not REPORT_TABLES.issubset(names):
        return "no_schema"
    with engine.connect() as connection:
        has_bars = connection.execute(select(RawStockData.ticker).limit(1)).first() is not None
        has_predictions = connection.execute(select(LatestPrediction.ticker).limit(1)).first() is not None
    return "ready" if (has_bars or has_predictions) else "empty"


def known_tickers(engine: Engine, *, preferred: Sequence[str] = ()) -> list[str]:
    """Tickers with stored bars or predictions: those in `preferred` first (in its order), then A-Z."""
    query = union(select(RawStockData.ticker).distinct(), select(LatestPrediction.ticker).distinct())
    with engine.connect() as connection:
        stored = {row[0] for row in connection.execute(query)}
    first = [ticker for ticker in preferred if ticker in stored]
    return first + sorted(stored - set(first))


def ticker_exists(engine: Engine, ticker: str) -> bool:
    with engine.connect() as connection:
        for model in (RawStockData, LatestPrediction):
            if connection.execute(select(model.ticker).where(model.ticker == ticker).limit(1)).first():
                return True
    return False


# Large JSON columns no page shows, left out of the reads every page view and `/metrics` scrape runs.
_UNSHOWN = frozenset({"detail", "details", "selection"})


def _shown(model: Any) -> Any:
    return select(*(column for column in model.__table__.columns if column.name not in _UNSHOWN))


def latest_predictions(
    engine: Engine, *, as_of: date | None = None, tickers: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The newest prediction per ticker made on or before as_of (one indexed `LIMIT 1` query each)."""
    rows: list[dict[str, Any]] = []
    with engine.connect() as connection:
        if tickers is None:
            tickers = [row[0] for row in connection.execute(select(LatestPrediction.ticker).distinct())]
        for ticker in sorted(set(tickers)):
            query = _shown(LatestPrediction).where(
                LatestPrediction.ticker == ticker, LatestPrediction.void_reason.is_(None)
            )
            if as_of is not None:
                query = query.where(LatestPrediction.as_of <= as_of)
            query = query.order_by(
                LatestPrediction.target_date.desc(),
                LatestPrediction.created_at.desc(),
                LatestPrediction.model_version.desc(),
            ).limit(1)
            row = connection.execute(query).first()
            if row is not None:
                rows.append(dict(row._mapping))
    return rows


def performance_history(engine: Engine, *, limit: int, ticker: str | None = None) -> list[dict[str, Any]]:
    """The newest `limit` scored sessions (one row per ticker and target date: of several model
    versions, the one evaluated last), newest first."""
    fetch = limit + 8
    with engine.connect() as connection:
        while True:
            query = _shown(ModelPerformance).where(ModelPerformance.void_reason.is_(None))
            if ticker is not None:
                query = query.where(ModelPerformance.ticker == ticker)
            query = query.order_by(
                ModelPerformance.target_date.desc(),
                ModelPerformance.ticker,
                ModelPerformance.evaluated_at.desc(),
                ModelPerformance.model_version.desc(),
            ).limit(fetch)
            fetched = connection.execute(query).all()
            kept: dict[tuple[str, date], dict[str, Any]] = {}
            for row in fetched:
                kept.setdefault((row.ticker, row.target_date), dict(row._mapping))
            if len(kept) >= limit or len(fetched) < fetch:
                return list(kept.values())[:limit]
            fetch *= 4


def recent_closes(
    engine: Engine, tickers: Sequence[str], *, sessions: int, as_of: date | None = None
) -> dict[str, list[tuple[date, float]]]:
    """The newest `sessions` closes per ticker, oldest first; nothing after as_of (indexed, per ticker)."""
    result: dict[str, list[tuple[date, float]]] = {}
    with engine.connect() as connection:
        for ticker in tickers:
            query = select(RawStockData.date, RawStockData.close).where(RawStockData.ticker == ticker)
            if as_of is not None:
                query = query.where(RawStockData.date <= as_of)
            query = query.order_by(RawStockData.date.desc()).limit(sessions)
            result[ticker] = [
                (row.date, float(row.close)) for row in reversed(connection.execute(query).all())
            ]
    return result


def recent_runs(engine: Engine, *, limit: int) -> list[dict[str, Any]]:
    """The newest ledger rows, newest first."""
    query = _shown(PipelineRun).order_by(PipelineRun.id.desc()).limit(limit)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def recent_promotions(engine: Engine, *, limit: int) -> list[dict[str, Any]]:
    """The newest promotion decisions, promoted or not, newest first."""
    query = _shown(Promotion).order_by(Promotion.id.desc()).limit(limit)
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def newest_runs_per_command(engine: Engine, *, status: str | None = None) -> list[dict[str, Any]]:
    """The newest finished ledger row of each command (only rows with `status` when given)."""
    newest = select(func.max(PipelineRun.id)).where(PipelineRun.finished_at.is_not(None))
    if status is not None:
        newest = newest.where(PipelineRun.status == status)
    query = _shown(PipelineRun).where(PipelineRun.id.in_(newest.group_by(PipelineRun.command)))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def prediction_count(engine: Engine) -> int:
    """How many predictions are stored (one per target session, ticker and model version)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(LatestPrediction)).scalar_one())
