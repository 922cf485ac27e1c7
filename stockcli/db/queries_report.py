"""Read-only queries behind `stockcli report` and `stockcli serve`.

Nothing here writes: no upserts, no schema upgrades, no run lock, so the dashboard can read while the
daily job writes (SQLite in WAL mode lets readers and one writer work side by side). A SQLite file that
does not exist yet is reported as missing instead of being created by the first connection.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any, Literal

from sqlalchemy import func, inspect, select, union
from sqlalchemy.engine import Connection, Engine

from stockcli.config import Settings
from stockcli.db.engine import make_engine
from stockcli.db.models import LatestPrediction, ModelPerformance, PipelineRun, Promotion, RawStockData

DatabaseState = Literal["missing", "no_schema", "empty", "ready"]

# The tables report and serve read; a database without them has never seen `stockcli daily`.
REPORT_TABLES = (
    "raw_stock_data",
    "latest_predictions",
    "model_performance_log",
    "pipeline_runs",
    "promotions",
)


def connect_readonly(settings: Settings) -> Engine | None:
    """An engine that only reads, or None when the SQLite file does not exist (it is not created).

    Works in a read-only data dir. Raises ConfigError when the data dir is a file.
    """
    from stockcli.storage import check_data_dir, sqlite_file

    check_data_dir(settings.data_dir)
    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        return None
    return make_engine(
        settings.database_url, busy_timeout_s=settings.storage.sqlite_busy_timeout_s, read_only=True
    )


def database_state(engine: Engine | None) -> DatabaseState:
    """`missing` (no file), `no_schema` (no stockcli tables), `empty` (no bars, no predictions), `ready`.

    A database that cannot be reached raises SQLAlchemy's error: that is not the same as empty.
    """
    if engine is None:
        return "missing"
    names = set(inspect(engine).get_table_names())
    if not set(REPORT_TABLES) <= names:
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


def latest_predictions(
    engine: Engine, *, as_of: date | None = None, tickers: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """The newest prediction per ticker (latest target date, then latest created), made on or before as_of.

    One indexed `LIMIT 1` query per ticker: the table grows every day, and a window over all of it
    would make every page view slower.
    """
    columns = [
        LatestPrediction.ticker,
        LatestPrediction.target_date,
        LatestPrediction.model_version,
        LatestPrediction.as_of,
        LatestPrediction.base_date,
        LatestPrediction.base_close,
        LatestPrediction.predicted_close,
        LatestPrediction.dataset_run_id,
        LatestPrediction.pipeline_run_id,
        LatestPrediction.created_at,
        LatestPrediction.q025,
        LatestPrediction.q10,
        LatestPrediction.q50,
        LatestPrediction.q90,
        LatestPrediction.q975,
        LatestPrediction.p_up,
        LatestPrediction.source,
        LatestPrediction.p_value,
        LatestPrediction.interval_source,
        LatestPrediction.interval_p_value,
        LatestPrediction.unseen,
    ]
    rows: list[dict[str, Any]] = []
    with engine.connect() as connection:
        if tickers is None:
            tickers = [row[0] for row in connection.execute(select(LatestPrediction.ticker).distinct())]
        for ticker in sorted(set(tickers)):
            query = select(*columns).where(
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


_PERFORMANCE_COLUMNS = (
    ModelPerformance.ticker,
    ModelPerformance.target_date,
    ModelPerformance.model_version,
    ModelPerformance.base_date,
    ModelPerformance.base_close,
    ModelPerformance.predicted_close,
    ModelPerformance.actual_close,
    ModelPerformance.abs_error,
    ModelPerformance.abs_pct_error,
    ModelPerformance.direction_score,
    ModelPerformance.naive_abs_error,
    ModelPerformance.evaluated_at,
    ModelPerformance.q025,
    ModelPerformance.q10,
    ModelPerformance.q50,
    ModelPerformance.q90,
    ModelPerformance.q975,
    ModelPerformance.source,
    ModelPerformance.interval_source,
)


def _newest_sessions(
    connection: Connection, *, count: int, ticker: str | None, as_of: date | None
) -> list[dict[str, Any]]:
    """The newest `count` scored sessions (one row per ticker and target date), newest first.

    When two model versions were scored for the same session (a re-run after a promotion), the one
    evaluated last counts. Reads a little more than needed through the primary key's order and
    widens the read only when duplicates ate into it.
    """
    limit = count + 8
    while True:
        query = select(*_PERFORMANCE_COLUMNS).where(ModelPerformance.void_reason.is_(None))
        if ticker is not None:
            query = query.where(ModelPerformance.ticker == ticker)
        if as_of is not None:
            query = query.where(ModelPerformance.target_date <= as_of)
        query = query.order_by(
            ModelPerformance.target_date.desc(),
            ModelPerformance.ticker,
            ModelPerformance.evaluated_at.desc(),
            ModelPerformance.model_version.desc(),
        ).limit(limit)
        fetched = connection.execute(query).all()
        kept: list[dict[str, Any]] = []
        seen: set[tuple[str, date]] = set()
        for row in fetched:
            key = (row.ticker, row.target_date)
            if key not in seen:
                seen.add(key)
                kept.append(dict(row._mapping))
        if len(kept) >= count or len(fetched) < limit:
            return kept[:count]
        limit *= 4


def performance_history(
    engine: Engine, *, limit: int, as_of: date | None = None, ticker: str | None = None
) -> list[dict[str, Any]]:
    """Every scored session (one per ticker and target date), newest first, at most `limit` rows in all."""
    with engine.connect() as connection:
        return _newest_sessions(connection, count=limit, ticker=ticker, as_of=as_of)


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
    query = (
        select(
            PipelineRun.id,
            PipelineRun.command,
            PipelineRun.as_of,
            PipelineRun.status,
            PipelineRun.started_at,
            PipelineRun.finished_at,
            PipelineRun.duration_s,
            PipelineRun.error,
            PipelineRun.warnings,
        )
        .order_by(PipelineRun.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def recent_promotions(engine: Engine, *, limit: int) -> list[dict[str, Any]]:
    """The newest promotion decisions, promoted or not, newest first."""
    query = (
        select(
            Promotion.id,
            Promotion.decided_at,
            Promotion.candidate_version,
            Promotion.production_version,
            Promotion.metric,
            Promotion.candidate_metrics,
            Promotion.production_metrics,
            Promotion.naive_metrics,
            Promotion.window_start,
            Promotion.window_end,
            Promotion.dataset_run_id,
            Promotion.promoted,
            Promotion.dry_run,
            Promotion.reason,
            Promotion.test,
            Promotion.p_value,
            Promotion.improvement,
            Promotion.improvement_low,
            Promotion.improvement_high,
        )
        .order_by(Promotion.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def newest_runs_per_command(engine: Engine, *, status: str | None = None) -> list[dict[str, Any]]:
    """The newest finished ledger row of each command (only rows with `status` when given)."""
    newest = select(func.max(PipelineRun.id)).where(PipelineRun.finished_at.is_not(None))
    if status is not None:
        newest = newest.where(PipelineRun.status == status)
    query = select(
        PipelineRun.command, PipelineRun.status, PipelineRun.finished_at, PipelineRun.duration_s
    ).where(PipelineRun.id.in_(newest.group_by(PipelineRun.command)))
    with engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query)]


def prediction_count(engine: Engine) -> int:
    """How many predictions are stored (one per target session, ticker and model version)."""
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(LatestPrediction)).scalar_one())
