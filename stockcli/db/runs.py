"""What other commands read back from the run ledger (`pipeline_runs`): the `details` keys they
depend on, named here once."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from stockcli.db.models import PipelineRun

RETRAINED = "retrained"
BASE_DATE = "base_date"


@dataclass(frozen=True)
class RunDetails:
    """The ledger details other commands read."""

    retrained: bool = False
    base_date: date | None = None

    @classmethod
    def of(cls, details: Mapping[str, Any] | None) -> RunDetails:
        details = details or {}
        base = details.get(BASE_DATE)
        return cls(
            retrained=bool(details.get(RETRAINED)),
            base_date=date.fromisoformat(base) if isinstance(base, str) else None,
        )


def mark_retrained(details: MutableMapping[str, Any], retrained: bool) -> None:
    """Record in a run's details whether it retrained (what the monitor's cooldown reads)."""
    details[RETRAINED] = bool(retrained)


def mark_base_date(details: MutableMapping[str, Any], base_date: date | None) -> None:
    """Record the session a daily run predicted from (what the daemon's catch-up reads)."""
    details[BASE_DATE] = base_date.isoformat() if base_date is not None else None


def last_retrain_as_of(engine: Engine, *, before_or_on: date) -> date | None:
    """The as-of date of the newest successful run that retrained, on or before `before_or_on`."""
    query = (
        select(PipelineRun.details, PipelineRun.as_of)
        .where(PipelineRun.status.in_(("ok", "partial")), PipelineRun.as_of <= before_or_on)
        .where(PipelineRun.command.in_(("retrain", "daily")))
        .order_by(PipelineRun.as_of.desc(), PipelineRun.id.desc())
    )
    with engine.connect() as connection:
        for details, as_of in connection.execute(query):
            if RunDetails.of(details).retrained:
                return as_of  # type: ignore[no-any-return]
    return None


def recent_daily_runs(engine: Engine, *, limit: int = 20) -> list[tuple[date, RunDetails]]:
    """(as_of, details) of the newest daily runs that got their work done (ok or partial)."""
    query = (
        select(PipelineRun.as_of, PipelineRun.details)
        .where(PipelineRun.command == "daily", PipelineRun.status.in_(("ok", "partial")))
        .where(PipelineRun.as_of.is_not(None))
        .order_by(PipelineRun.as_of.desc(), PipelineRun.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        return [(as_of, RunDetails.of(details)) for as_of, details in connection.execute(query)]


def newest_run_since(engine: Engine, *, pid: int, since: datetime) -> tuple[int, str | None] | None:
    """(id, error) of the newest ledger row this process started at or after `since`, or None."""
    import socket

    query = (
        select(PipelineRun.id, PipelineRun.error, PipelineRun.started_at)
        .where(PipelineRun.pid == pid, PipelineRun.host == socket.gethostname())
        .order_by(PipelineRun.id.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        row = connection.execute(query).first()
    if row is None:
        return None
    started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
    return (int(row.id), row.error) if started >= since else None


def add_warnings(engine: Engine, run_id: int, warnings: Sequence[str]) -> None:
    """Append warnings (passwords and notification tokens hidden) to a ledger row, closed or not."""
    from stockcli.redact import redact_url

    with engine.begin() as connection:
        current = connection.execute(select(PipelineRun.warnings).where(PipelineRun.id == run_id)).scalar()
        combined = [*(current or []), *(redact_url(w) for w in warnings)]
        connection.execute(update(PipelineRun).where(PipelineRun.id == run_id).values(warnings=combined))
