"""Upserts on natural keys (one code path for SQLite and PostgreSQL), `.npy` bytes and the run ledger."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import Base, PipelineRun
from stockcli.errors import StockCliError
from stockcli.redact import redact_url


def utcnow() -> datetime:
    return datetime.now(tz=UTC)


def upsert(
    connection: Connection,
    model: type[Base],
    rows: Sequence[Mapping[str, Any]],
    *,
    key: Sequence[str],
) -> int:
    """Insert `rows`, updating the other columns where the natural `key` already exists."""
    if not rows:
        return 0
    table: Any = model.__table__
    dialect = connection.dialect.name
    insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
    columns = list(rows[0].keys())
    to_update = [c for c in columns if c not in key]
    statement = insert_fn(table)
    if to_update:
        statement = statement.on_conflict_do_update(
            index_elements=list(key),
            set_={name: statement.excluded[name] for name in to_update},
        )
    else:
        statement = statement.on_conflict_do_nothing(index_elements=list(key))
    # executemany: SQLAlchemy batches the rows ("insertmanyvalues") within each driver's limits.
    connection.execute(statement, [dict(row) for row in rows])
    return len(rows)


def array_to_bytes(array: np.ndarray) -> bytes:
    """An array as `.npy` bytes; object arrays are refused (they would need pickle)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def bytes_to_array(blob: bytes, *, what: str = "A stored array") -> np.ndarray:
    """Read `.npy` bytes and nothing else (`np.load` would open an `.npz` or detect a pickle).

    Raises StockCliError, naming `what`, when the bytes are not a plain `.npy` array.
    """
    try:
        return np.lib.format.read_array(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, EOFError, OSError, TypeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StockCliError(
            f"{what} is not a plain .npy array ({reason}); it was not loaded.",
            hint="The stored row is damaged or was altered outside stockcli: make it again "
            "(`stockcli process`, then `stockcli build`).",
        ) from None


def dates_to_array(days: Sequence[date]) -> np.ndarray:
    return np.array([d.toordinal() for d in days], dtype=np.int64)


def array_to_dates(array: np.ndarray) -> list[date]:
    return [date.fromordinal(int(v)) for v in array]


# --- the run ledger -------------------------------------------------------------------------------


def start_run(engine: Engine, *, command: str, as_of: date | None) -> int:
    """Record a run as `running`; returns its ledger id."""
    with engine.begin() as connection:
        result = connection.execute(
            PipelineRun.__table__.insert().values(  # type: ignore[attr-defined]
                command=command,
                as_of=as_of,
                status="running",
                started_at=utcnow(),
                pid=os.getpid(),
                host=socket.gethostname(),
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def mark_interrupted(engine: Engine) -> int:
    """Close ledger rows left `running` by a killed process (call only under the run lock)."""
    with engine.begin() as connection:
        result = connection.execute(
            update(PipelineRun)
            .where(PipelineRun.status == "running")
            .values(
                status="interrupted", error="The process ended before the run finished (killed or crashed)."
            )
        )
        return int(result.rowcount or 0)


def finish_run(
    engine: Engine,
    run_id: int,
    *,
    status: str,
    error: str | None = None,
    details: Mapping[str, Any] | None = None,
    warnings: Sequence[str] = (),
) -> None:
    """Close a ledger row with its status, duration, error, details and warnings (passwords in URLs hidden)."""
    with engine.begin() as connection:
        started = connection.execute(
            select(PipelineRun.started_at).where(PipelineRun.id == run_id)
        ).scalar_one()
        finished = utcnow()
        connection.execute(
            update(PipelineRun)
            .where(PipelineRun.id == run_id)
            .values(
                status=status,
                finished_at=finished,
                duration_s=(finished - started.replace(tzinfo=started.tzinfo or UTC)).total_seconds(),
                error=redact_url(error) if error else error,
                details=_redacted(details),  # a dict, or None
                warnings=[redact_url(w) for w in warnings] or None,
            )
        )


def _redacted(value: Any) -> Any:
    """`value` with every string in it passed through `redact_url` (dicts and lists walked)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


def model_versions_in_use(engine: Engine) -> set[str]:
    """Every model version the app's tables refer to (the numbers the MLflow registry must know)."""
    from sqlalchemy import union

    from stockcli.db.models import (
        IntervalState,
        LatestPrediction,
        ModelPerformance,
        Promotion,
        ServingSelection,
    )

    query: Any = union(
        select(LatestPrediction.model_version),
        select(ModelPerformance.model_version),
        select(ServingSelection.model_version),
        select(IntervalState.model_version),
        select(Promotion.candidate_version),
        select(Promotion.production_version).where(Promotion.production_version.is_not(None)),
    )
    with engine.connect() as connection:
        return {str(version) for version in connection.execute(query).scalars()}
