"""The `promotions` audit table: one row per decision, promoted or not, dry runs flagged.

A row is written before the alias moves (with `PENDING_NOTE`), and `promoted` only once the alias
really points at the candidate; `settle_pending` decides a row a killed run left pending.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from stockcli.db.models import Promotion
from stockcli.db.store import utcnow


def record_decision(
    engine: Engine,
    *,
    candidate_version: str,
    production_version: str | None,
    metric: str,
    candidate_metrics: Mapping[str, Any],
    production_metrics: Mapping[str, Any] | None,
    naive_metrics: Mapping[str, Any],
    window_start: date | None,
    window_end: date | None,
    dataset_run_id: str | None,
    promoted: bool,
    dry_run: bool,
    reason: str,
    pipeline_run_id: int | None = None,
    test: str | None = None,
    p_value: float | None = None,
    improvement: float | None = None,
    improvement_low: float | None = None,
    improvement_high: float | None = None,
    selection: Mapping[str, Any] | None = None,
) -> int:
    """Insert one decision row; returns its id."""
    with engine.begin() as connection:
        result = connection.execute(
            insert(Promotion).values(
                decided_at=utcnow(),
                candidate_version=str(candidate_version),
                production_version=None if production_version is None else str(production_version),
                metric=metric,
                candidate_metrics=dict(candidate_metrics),
                production_metrics=None if production_metrics is None else dict(production_metrics),
                naive_metrics=dict(naive_metrics),
                window_start=window_start,
                window_end=window_end,
                dataset_run_id=dataset_run_id,
                promoted=promoted,
                dry_run=dry_run,
                reason=reason,
                pipeline_run_id=pipeline_run_id,
                test=test,
                p_value=p_value,
                improvement=improvement,
                improvement_low=improvement_low,
                improvement_high=improvement_high,
                selection=None if selection is None else dict(selection),
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


PENDING_NOTE = " [Production alias move pending]"


def mark_outcome(engine: Engine, promotion_id: int, *, promoted: bool, reason: str) -> None:
    """Settle a decision row once its alias move is done (`promoted`) or failed, replacing its reason."""
    with engine.begin() as connection:
        connection.execute(
            update(Promotion).where(Promotion.id == promotion_id).values(promoted=promoted, reason=reason)
        )


def settle_pending(engine: Engine, *, production_version: str | None) -> int:
    """Settle rows left pending by a run killed during its alias move (call under the run lock);
    returns how many. One whose candidate holds the alias was promoted, unless a later row says so."""
    query = (
        select(Promotion.id, Promotion.candidate_version, Promotion.reason)
        .where(Promotion.promoted.is_(False), Promotion.reason.endswith(PENDING_NOTE))
        .order_by(Promotion.id)
    )
    with engine.begin() as connection:
        pending = list(connection.execute(query))
        for row in pending:
            base = row.reason.removesuffix(PENDING_NOTE)
            confirmed_later = connection.execute(
                select(Promotion.id).where(
                    Promotion.id > row.id,
                    Promotion.candidate_version == row.candidate_version,
                    Promotion.promoted.is_(True),
                )
            ).first()
            moved = str(row.candidate_version) == str(production_version) and confirmed_later is None
            reason = (
                f"{base} (The run was interrupted after moving the alias.)"
                if moved
                else f"{base} The alias was NOT moved: the run was interrupted before moving it."
            )
            connection.execute(
                update(Promotion).where(Promotion.id == row.id).values(promoted=moved, reason=reason)
            )
    return len(pending)


def list_promotions(engine: Engine, *, limit: int = 20, include_dry_runs: bool = True) -> list[Promotion]:
    """The newest decisions first."""
    query = select(Promotion).order_by(Promotion.id.desc()).limit(limit)
    if not include_dry_runs:
        query = query.where(Promotion.dry_run.is_(False))
    with Session(engine) as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows
