"""What Production serves per ticker (`serving_selection`, ticker "*" for unseen tickers), the
adaptive interval state (`interval_state`, updated in the transaction that stores the scores it
learned from) and the scheduled refits (`forecaster_fits`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import date
from typing import Any, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Connection, Engine

from stockcli.db.models import ForecasterFit, IntervalState, ServingSelection
from stockcli.db.store import upsert, utcnow

POOLED = "*"
SELECTION_KEY = ("model_version", "ticker")
_Row = TypeVar("_Row")


@dataclass(frozen=True)
class Selection:
    """What one model version serves for one ticker, and the evidence."""

    ticker: str
    point_source: str  # model | naive
    point_p_value: float | None
    point_skill: float | None
    interval_source: str  # model | garch
    interval_p_value: float | None
    interval_skill: float | None
    window_start: date | None
    window_end: date | None
    n_sessions: int
    p_up_source: str | None = None  # whose P(up) is served; "base_rate" (or None): the training up-share
    p_up_p_value: float | None = None


def save_selection(
    engine: Engine, *, model_version: str, selections: Iterable[Selection], promotion_id: int | None
) -> None:
    """Replace the selection rows of `model_version` with `selections`, in one transaction."""
    now = utcnow()
    rows = [
        {
            **asdict(item),
            "model_version": str(model_version),
            "n_sessions": int(item.n_sessions),
            "promotion_id": promotion_id,
            "decided_at": now,
        }
        for item in selections
    ]
    with engine.begin() as connection:
        connection.execute(
            delete(ServingSelection).where(ServingSelection.model_version == str(model_version))
        )
        upsert(connection, ServingSelection, rows, key=SELECTION_KEY)


def load_selection(engine: Engine, model_version: str) -> dict[str, Selection]:
    """ticker -> Selection for `model_version` ({} when it has none)."""
    query = select(ServingSelection).where(ServingSelection.model_version == str(model_version))
    with engine.connect() as connection:
        found = connection.execute(query).mappings().all()
    return {row["ticker"]: _from_row(Selection, row) for row in found}


def _from_row(cls: type[_Row], row: Any) -> _Row:
    """The dataclass `cls` of a stored row (the row's columns named like its fields)."""
    return cls(**{field.name: row[field.name] for field in fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class AciState:
    """The adaptive miscoverage level of one ticker's interval."""

    ticker: str
    level: int
    model_version: str
    source: str
    alpha: float
    n_updates: int
    misses: int
    last_target_date: date | None


def load_interval_state(
    engine: Engine, tickers: Sequence[str] | None = None
) -> dict[tuple[str, int], AciState]:
    """(ticker, level) -> state, for `tickers` (default: all)."""
    query = select(IntervalState)
    if tickers is not None:
        query = query.where(IntervalState.ticker.in_(list(tickers)))
    with engine.connect() as connection:
        rows = connection.execute(query).mappings().all()
    return {(row["ticker"], int(row["level"])): _from_row(AciState, row) for row in rows}


def save_interval_state(connection: Connection, states: Iterable[AciState]) -> None:
    """Upsert states inside the caller's transaction (the one storing the scored predictions)."""
    now = utcnow()
    rows = [{**asdict(state), "updated_at": now} for state in states]
    upsert(connection, IntervalState, rows, key=("ticker", "level"))


# --- scheduled refits of the statistical candidates -------------------------------------------------


def save_fits(engine: Engine, rows: Sequence[Mapping[str, Any]]) -> None:
    """Record refits: rows of (ticker, forecaster, fit_end, fit_start, n_sessions, params), one transaction."""
    now = utcnow()
    with engine.begin() as connection:
        upsert(connection, ForecasterFit, [{**row, "created_at": now} for row in rows], key=FIT_KEY)


FIT_KEY = ("ticker", "forecaster", "fit_end")


def forget_fits(connection: Connection, ticker: str) -> None:
    """Drop `ticker`'s refits (its history was restated), in the caller's transaction."""
    connection.execute(delete(ForecasterFit).where(ForecasterFit.ticker == ticker))


def last_fit_ends(engine: Engine, through: date) -> dict[str, date]:
    """ticker -> the newest refit's last session on or before `through`."""
    query = (
        select(ForecasterFit.ticker, func.max(ForecasterFit.fit_end))
        .where(ForecasterFit.fit_end <= through)
        .group_by(ForecasterFit.ticker)
    )
    with engine.connect() as connection:
        return {str(ticker): end for ticker, end in connection.execute(query)}


def load_fits(engine: Engine, *, since: date, through: date) -> dict[str, dict[str, Any]]:
    """{forecaster: {ticker: params}} of the newest refit of each in (since, through]; failed fits left out."""
    newest = (
        select(ForecasterFit.ticker, ForecasterFit.forecaster, func.max(ForecasterFit.fit_end).label("end"))
        .where(ForecasterFit.fit_end <= through, ForecasterFit.fit_end > since)
        .group_by(ForecasterFit.ticker, ForecasterFit.forecaster)
        .subquery()
    )
    query = select(ForecasterFit.ticker, ForecasterFit.forecaster, ForecasterFit.params).join(
        newest,
        (ForecasterFit.ticker == newest.c.ticker)
        & (ForecasterFit.forecaster == newest.c.forecaster)
        & (ForecasterFit.fit_end == newest.c.end),
    )
    out: dict[str, dict[str, Any]] = {}
    with engine.connect() as connection:
        for ticker, forecaster, params in connection.execute(query):
            if params is not None:
                out.setdefault(str(forecaster), {})[str(ticker)] = params
    return out


def update_interval_choices(
    engine: Engine, *, model_version: str, choices: Mapping[str, Mapping[str, Any]]
) -> None:
    """Replace the interval decision of `model_version`'s selection rows ({ticker: column values});
    a ticker without a row gets one with the point decision of the pooled row "*" (else naive)."""
    now = utcnow()
    existing = load_selection(engine, model_version)
    pooled = existing.get(POOLED)
    with engine.begin() as connection:
        for ticker, values in choices.items():
            if ticker in existing:
                connection.execute(
                    update(ServingSelection)
                    .where(
                        ServingSelection.model_version == str(model_version),
                        ServingSelection.ticker == ticker,
                    )
                    .values(**values, decided_at=now)
                )
                continue
            row = {
                "model_version": str(model_version),
                "ticker": ticker,
                "point_source": pooled.point_source if pooled else "naive",
                "point_p_value": pooled.point_p_value if pooled else None,
                "point_skill": pooled.point_skill if pooled else None,
                **values,
                "promotion_id": None,
                "decided_at": now,
            }
            upsert(connection, ServingSelection, [row], key=SELECTION_KEY)
