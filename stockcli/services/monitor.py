"""Score matured predictions against what really happened, and decide whether to retrain.

A prediction is matched to the bar of exactly its target session. The decision looks at rolling
figures over the last `window_sessions` evaluated sessions of the production model, all tickers
together, needs `min_samples` sessions, respects a cooldown after a retrain, and ignores a breach
that rests on a single session: one bad day never triggers a retrain (the replaced system retrained
whenever one ticker had one bad day, i.e. on nearly every day's noise).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import MonitorSettings, Settings
from stockcli.db import predictions as predictions_db
from stockcli.db.models import PipelineRun
from stockcli.db.store import utcnow


@dataclass(frozen=True)
class WindowMetrics:
    """Live accuracy over the rolling window, next to the naive forecast on the same days."""

    samples: int
    sessions: int
    mae: float | None
    mape: float | None
    direction_accuracy: float | None
    naive_mae: float | None
    skill: float | None


@dataclass(frozen=True)
class MonitorResult:
    as_of: date
    model_version: str | None
    evaluated: int
    pending: int
    overall: WindowMetrics
    per_ticker: dict[str, WindowMetrics] = field(default_factory=dict)
    retrain_needed: bool = False
    reason: str = ""
    cooldown_active: bool = False
    last_retrain_as_of: date | None = None


def window_metrics(rows: Iterable[Any]) -> WindowMetrics:
    """MAE, MAPE, directional accuracy and skill (1 - MAE/MAE_naive) of performance rows."""
    rows = list(rows)
    if not rows:
        return WindowMetrics(0, 0, None, None, None, None, None)
    mae = sum(r.abs_error for r in rows) / len(rows)
    mape = sum(r.abs_pct_error for r in rows) / len(rows)
    direction = _directional_accuracy(rows)
    naive_mae = sum(r.naive_abs_error for r in rows) / len(rows)
    skill = 1.0 - mae / naive_mae if naive_mae > 0 else None
    sessions = len({r.target_date for r in rows})
    return WindowMetrics(len(rows), sessions, mae, mape, direction, naive_mae, skill)


def _directional_accuracy(rows: list[Any]) -> float | None:
    """As in training metrics (`ml.metrics`): days without a move are left out, and a forecast of
    no change scores half a hit, a coin flip. A model that falls back to the naive forecast then
    scores 0.5, not 0, so the direction threshold does not fire on it."""
    scores = []
    for row in rows:
        actual_move = row.actual_close - row.base_close
        if actual_move == 0:
            continue
        predicted_move = row.predicted_close - row.base_close
        if predicted_move == 0:
            scores.append(0.5)
        else:
            scores.append(1.0 if (predicted_move > 0) == (actual_move > 0) else 0.0)
    return sum(scores) / len(scores) if scores else None


def threshold_breaches(metrics: WindowMetrics, config: MonitorSettings) -> list[str]:
    """What in `metrics` breaches the configured thresholds, in words (empty: nothing)."""
    breaches: list[str] = []
    if metrics.mape is not None and metrics.mape > config.mape_max:
        breaches.append(f"MAPE {metrics.mape:.2%} above {config.mape_max:.2%}")
    if metrics.direction_accuracy is not None and metrics.direction_accuracy < config.direction_min:
        breaches.append(
            f"directional accuracy {metrics.direction_accuracy:.1%} below {config.direction_min:.1%}"
        )
    if metrics.skill is not None and metrics.skill < config.skill_min:
        breaches.append(f"skill against naive {metrics.skill:+.1%} below {config.skill_min:+.1%}")
    return breaches


def single_bad_session(rows: Sequence[Any], config: MonitorSettings) -> date | None:
    """The one session whose removal brings the window back within thresholds, if there is one.

    Rolling means are sensitive to one outlier: a single very bad day (a data glitch, a shock the
    model got badly wrong) can breach a threshold on its own. A breach that disappears when one
    session is left out does not call for a retrain; when several sessions qualify, the one with
    the largest mean absolute percentage error is named.
    """
    by_session: dict[date, list[Any]] = defaultdict(list)
    for row in rows:
        by_session[row.target_date].append(row)
    if len(by_session) < 2:
        return None
    clearing = [
        day
        for day in by_session
        if not threshold_breaches(window_metrics(r for r in rows if r.target_date != day), config)
    ]
    if not clearing:
        return None
    return max(clearing, key=lambda day: sum(r.abs_pct_error for r in by_session[day]) / len(by_session[day]))


def evaluate_matured(engine: Engine, *, through: date) -> tuple[int, int]:
    """Write a performance row for every prediction whose target bar is stored. Returns (evaluated, pending)."""
    candidates = predictions_db.unevaluated_predictions(engine, through=through)
    evaluated_at = utcnow()
    rows = []
    pending = 0
    for item in candidates:
        actual = item["actual_close"]
        if actual is None or not math.isfinite(actual):
            pending += 1
            continue
        predicted, base = item["predicted_close"], item["base_close"]
        actual_change, predicted_change = actual - base, predicted - base
        rows.append(
            {
                "target_date": item["target_date"],
                "ticker": item["ticker"],
                "model_version": item["model_version"],
                "base_date": item["base_date"],
                "base_close": base,
                "predicted_close": predicted,
                "actual_close": actual,
                "abs_error": abs(predicted - actual),
                "abs_pct_error": abs(predicted - actual) / abs(actual),
                # A flat day counts as a hit only for a flat prediction.
                "direction_hit": (actual_change > 0) == (predicted_change > 0)
                and (actual_change < 0) == (predicted_change < 0),
                "naive_abs_error": abs(base - actual),
                "evaluated_at": evaluated_at,
            }
        )
    predictions_db.save_performance(engine, rows)
    return len(rows), pending


def last_retrain_as_of(engine: Engine, *, before_or_on: date) -> date | None:
    """The as-of date of the newest successful retrain in the ledger."""
    query = (
        select(PipelineRun.details, PipelineRun.as_of)
        .where(PipelineRun.status == "ok", PipelineRun.as_of <= before_or_on)
        .where(PipelineRun.command.in_(("retrain", "daily")))
        .order_by(PipelineRun.as_of.desc(), PipelineRun.id.desc())
    )
    with engine.connect() as connection:
        for details, as_of in connection.execute(query):
            if details and details.get("retrained"):
                return as_of
    return None


def monitor(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    model_version: str | None = None,
) -> MonitorResult:
    """Evaluate matured predictions, then compute the rolling window and the retrain decision."""
    config = settings.monitor
    calendar = trading_calendar(settings.data.exchange, cache_dir=settings.data_dir / "cache")
    through = calendar.session_on_or_before(as_of)
    evaluated, pending = evaluate_matured(engine, through=through)
    rows = predictions_db.performance_window(
        engine, through=through, sessions=config.window_sessions, model_version=model_version
    )
    overall = window_metrics(rows)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for row in rows:
        grouped[row.ticker].append(row)
    per_ticker = {ticker: window_metrics(items) for ticker, items in sorted(grouped.items())}

    last_retrain = last_retrain_as_of(engine, before_or_on=as_of)
    cooldown = False
    if last_retrain is not None:
        sessions_since = len(calendar.sessions(last_retrain, through)) - 1
        cooldown = sessions_since < config.cooldown_sessions

    breaches = threshold_breaches(overall, config)
    lone_session = single_bad_session(rows, config) if breaches else None

    retrain_needed = False
    if not breaches:
        reason = "Live accuracy within thresholds."
        if overall.sessions < config.min_samples:
            reason = (
                f"Only {overall.sessions} evaluated sessions (need {config.min_samples}); no decision yet."
            )
    elif overall.sessions < config.min_samples:
        reason = (
            f"{'; '.join(breaches)}, but only {overall.sessions} evaluated sessions "
            f"(need {config.min_samples}): waiting for more evidence."
        )
    elif cooldown:
        reason = f"{'; '.join(breaches)}, but a retrain ran on {last_retrain}: cooldown of {config.cooldown_sessions} sessions."
    elif lone_session is not None:
        reason = (
            f"{'; '.join(breaches)}, but only because of the session of {lone_session.isoformat()}: without "
            f"it the other {overall.sessions - 1} sessions are within thresholds. One bad day is not a trend."
        )
    else:
        retrain_needed = True
        reason = f"{'; '.join(breaches)} over the last {overall.sessions} sessions."
    return MonitorResult(
        as_of=as_of,
        model_version=model_version,
        evaluated=evaluated,
        pending=pending,
        overall=overall,
        per_ticker=per_ticker,
        retrain_needed=retrain_needed,
        reason=reason,
        cooldown_active=cooldown,
        last_retrain_as_of=last_retrain,
    )
