"""The `promotions` audit table: one row per promotion decision, promoted or not, dry runs flagged.

A row is written before the alias moves; `promoted` is true only once the Production alias really
points at the candidate (a failed alias move flips it back and says why in `reason`).
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
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[index]


def mark_not_promoted(engine: Engine, promotion_id: int, *, reason: str) -> None:
    """Flip a decision row to not promoted (the alias move failed), replacing its reason."""
    with engine.begin() as connection:
        connection.execute(
            update(Promotion).where(Promotion.id == promotion_id).values(promoted=False, reason=reason)
        )


def list_promotions(engine: Engine, *, limit: int = 20, include_dry_runs: bool = True) -> list[Promotion]:
    """The newest decisions first."""
    query = select(Promotion).order_by(Promotion.id.desc()).limit(limit)
    if not include_dry_runs:
        query = query.where(Promotion.dry_run.is_(False))
    with Session(engine) as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def last_promotion(engine: Engine) -> Promotion | None:
    """The newest decision that really moved the Production alias, if any."""
    query = (
        select(Promotion)
        .where(Promotion.promoted.is_(True), Promotion.dry_run.is_(False))
        .order_by(Promotion.id.desc())
        .limit(1)
    )
    with Session(engine) as session:
        row = session.scalars(query).first()
        session.expunge_all()
        return row
