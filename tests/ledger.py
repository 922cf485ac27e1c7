"""What the tests read of the run ledger (`pipeline_runs`). Not used by the package."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stockcli.db.models import PipelineRun


def recent_runs(engine: Engine, *, limit: int = 20, command: str | None = None) -> list[PipelineRun]:
    """The newest ledger rows first, of `command` only when given."""
    query = select(PipelineRun).order_by(PipelineRun.id.desc()).limit(limit)
    if command is not None:
        query = query.where(PipelineRun.command == command)
    with Session(engine) as session:
        runs = list(session.scalars(query))
        session.expunge_all()
        return runs
