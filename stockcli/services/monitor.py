"""Score matured predictions against the real close, adapt the intervals, decide whether to retrain.

Scoring moves each ticker's interval levels by adaptive conformal inference (Gibbs & Candes 2021); the
state is written in the same transaction as the scored rows, so a crash neither loses nor repeats it.

The retrain decision asks two tested questions of the rolling window, never a raw threshold on a noisy
metric: is the served forecast significantly worse than naive (one-sided Diebold-Mariano, p <
`[monitor] alpha`)? Do the intervals cover significantly less than promised (binomial test of the
misses, under-coverage only, closes of one session clustered; p < `[monitor] coverage_alpha`)?
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.clock import calendar_for
from stockcli.config import Settings
from stockcli.db import predictions as predictions_db
from stockcli.db.serving import AciState, load_interval_state, save_interval_state
from stockcli.db.store import utcnow
from stockcli.services.horizons import score_horizons
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    from stockcli.ml.metrics import MetricBlock


@dataclass(frozen=True)
class WindowMetrics:
    """Live accuracy over the rolling window, next to the naive forecast on the same sessions."""

    samples: int
    sessions: int
    mae: float | None
    mape: float | None
    direction_accuracy: float | None
    naive_mae: float | None
    skill: float | None
    skill_low: float | None = None
    skill_high: float | None = None
    p_worse: float | None = None  # one-sided DM: served forecast worse than naive
    coverage_80: float | None = None
    coverage_95: float | None = None
    p_coverage_80: float | None = None  # exact binomial test of the misses, on the effective sample
    p_coverage_95: float | None = None
    effective_n_80: float | None = None  # what the window's closes are worth as independent trials
    effective_n_95: float | None = None
    winkler_95: float | None = None
    pinball: float | None = None
    served_model_share: float | None = None


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
    triggers: tuple[str, ...] = ()  # "skill", "coverage_80", "risk_zone_h5", "coverage_95_h20"...
    band_breaks: tuple[BandBreak, ...] = ()  # closes scored by this run outside their 95% interval
    # {horizon: {ticker: risk backtest JSON}} over the risk window, without the simulated ES test.
    risk: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)


EMPTY = WindowMetrics(0, 0, None, None, None, None, None)
_WINDOW_FIELDS = {item.name for item in fields(WindowMetrics)}


def window_metrics(rows: Sequence[Any]) -> tuple[WindowMetrics, dict[str, WindowMetrics]]:
    """Overall and per-ticker live metrics of scored rows (`metrics.summarize_scored`)."""
    from stockcli.ml.metrics import miss_panel, summarize_scored

    summary = summarize_scored(rows)
    if summary is None:
        return EMPTY, {}
    panels = {level: miss_panel(rows, level) for level in (80, 95)}  # once: columns serve each ticker
    per_ticker = {ticker: _window(block, panels, ticker) for ticker, block in summary.tickers.items()}
    return _window(summary.average, panels, None), per_ticker


def _window(
    block: MetricBlock, panels: dict[int, tuple[np.ndarray, list[str]]], ticker: str | None
) -> WindowMetrics:
    from stockcli.ml.metrics import block_figures
    from stockcli.ml.stats import clustered_coverage_test

    figures = block_figures(block)
    tested: dict[str, Any] = {}
    for level in (80, 95):
        if figures[f"coverage_{level}"] is not None and figures["intervals_n"]:
            panel, names = panels[level]
            test = clustered_coverage_test(
                panel if ticker is None else panel[:, [names.index(ticker)]], level / 100.0
            )
            tested |= {f"p_coverage_{level}": test.p_value, f"effective_n_{level}": test.effective_n}
    return WindowMetrics(**{k: v for k, v in figures.items() if k in _WINDOW_FIELDS}, **tested)


@dataclass(frozen=True)
class BandBreak:
    """A scored close outside its 95% interval (what `[notify] events = ["band_break"]` reports)."""

    ticker: str
    target_date: date
    actual_close: float
    lower_95: float
    upper_95: float
    model_version: str


def band_breaks(rows: Sequence[dict[str, Any]]) -> tuple[BandBreak, ...]:
    """The scored rows whose close fell outside their stored 95% interval."""
    from stockcli.ml.intervals import INTERVAL_COLUMNS
    from stockcli.ml.metrics import QUANTILE_COLUMNS

    low, high = (QUANTILE_COLUMNS[i] for i in INTERVAL_COLUMNS[95])
    return tuple(
        BandBreak(r["ticker"], r["target_date"], r["actual_close"], r[low], r[high], str(r["model_version"]))
        for r in sorted(rows, key=lambda r: (r["target_date"], r["ticker"]))
        if r.get(low) is not None and r.get(high) is not None and not r[low] <= r["actual_close"] <= r[high]
    )


def evaluate_matured(engine: Engine, *, through: date, settings: Settings) -> tuple[int, int]:
    """`score_matured`, the scored rows counted: (evaluated, pending)."""
    scored, pending = score_matured(engine, through=through, settings=settings)
    return len(scored), pending


def score_matured(engine: Engine, *, through: date, settings: Settings) -> tuple[list[dict[str, Any]], int]:
    """Score every prediction whose target bar is stored and move the interval levels (ACI), in one
    transaction; returns (the scored rows, pending)."""
    evaluated_at = utcnow()
    rows: list[dict[str, Any]] = []
    pending = 0
    for item in predictions_db.unevaluated_predictions(engine, through=through):
        actual = item["actual_close"]
        if actual is None or not np.isfinite(actual):
            pending += 1
        else:
            rows.append(_scored_row(item, evaluated_at=evaluated_at))
    states = load_interval_state(engine, sorted({r["ticker"] for r in rows})) if rows else {}
    changed = _adapted_states(rows, states, gamma=settings.intervals.aci_gamma)

    def save_state(connection: Any) -> None:
        # Test hook: a kill here must lose the scored rows and the state together.
        checkpoint(settings, "monitor:scoring")
        save_interval_state(connection, changed.values())

    predictions_db.save_performance(engine, rows, on_commit=save_state)
    score_horizons(engine, through=through, settings=settings)
    return rows, pending


def _scored_row(item: dict[str, Any], *, evaluated_at: datetime) -> dict[str, Any]:
    from stockcli.ml.metrics import QUANTILE_COLUMNS, direction_scores

    predicted, base, actual = item["predicted_close"], item["base_close"], item["actual_close"]
    score = direction_scores(
        predicted=np.array([predicted]), actual=np.array([actual]), base=np.array([base])
    )[0]
    return {
        **{key: item[key] for key in ("target_date", "ticker", "model_version", "base_date")},
        "base_close": base,
        "predicted_close": predicted,
        "actual_close": actual,
        "abs_error": abs(predicted - actual),
        "abs_pct_error": abs(predicted - actual) / abs(actual),
        "direction_score": None if np.isnan(score) else float(score),
        "naive_abs_error": abs(base - actual),
        "evaluated_at": evaluated_at,
        **{name: item.get(name) for name in (*QUANTILE_COLUMNS, "source", "interval_source", "detail")},
    }


def _adapted_states(
    rows: Sequence[dict[str, Any]], states: Mapping[tuple[str, int], AciState], *, gamma: float
) -> dict[tuple[str, int], AciState]:
    """The interval states (by ticker and level) that the scored `rows` move, in target order; a state
    restarts at the nominal level for another version or source, unless it has learned from later."""
    from stockcli.ml.intervals import INTERVAL_COLUMNS, MISCOVERAGE, aci_update
    from stockcli.ml.metrics import QUANTILE_COLUMNS

    changed: dict[tuple[str, int], AciState] = {}
    for row in sorted(rows, key=lambda r: (r["target_date"], r["ticker"])):
        quantiles = [row.get(name) for name in QUANTILE_COLUMNS]
        if any(q is None for q in quantiles) or row.get("interval_source") is None:
            continue
        for level in (80, 95):
            low, high = INTERVAL_COLUMNS[level]
            miss = not (quantiles[low] <= row["actual_close"] <= quantiles[high])
            key = (row["ticker"], level)
            state = changed.get(key) or states.get(key)
            served_by = (row["model_version"], row["interval_source"])
            if state is not None and (state.model_version, state.source) == served_by:
                alpha, n_updates, misses = state.alpha, state.n_updates, state.misses
            elif state is not None and state.last_target_date and state.last_target_date > row["target_date"]:
                continue  # an older prediction of another version: the current state is newer
            else:
                alpha, n_updates, misses = MISCOVERAGE[level], 0, 0
            changed[key] = AciState(
                ticker=row["ticker"],
                level=level,
                model_version=row["model_version"],
                source=row["interval_source"],
                alpha=aci_update(alpha, MISCOVERAGE[level], miss, gamma),
                n_updates=n_updates + 1,
                misses=misses + int(miss),
                last_target_date=row["target_date"],
            )
    return changed


def monitor(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    model_version: str | None = None,
) -> MonitorResult:
    """Score matured predictions, adapt intervals, then compute the rolling window and the decision."""
    from stockcli.db.runs import last_retrain_as_of
    from stockcli.services.horizons import horizon_coverage, horizon_findings, risk_backtests, risk_window

    config = settings.monitor
    calendar = calendar_for(settings)
    through = calendar.session_on_or_before(as_of)
    scored, pending = score_matured(engine, through=through, settings=settings)
    rows = predictions_db.performance_window(
        engine, through=through, sessions=config.window_sessions, model_version=model_version
    )
    overall, per_ticker = window_metrics(rows)

    last_retrain = last_retrain_as_of(engine, before_or_on=as_of)
    cooldown = (
        last_retrain is not None
        and len(calendar.sessions(last_retrain, through)) - 1 < config.cooldown_sessions
    )

    # Without the simulated ES test: no finding reads it, and over 500 tickers it costs a second a day.
    risk_rows = risk_window(settings, engine, through=through)
    risk = risk_backtests(risk_rows, calendar, es_test=False)
    coverage = horizon_coverage([r for r in risk_rows if int(r["horizon"]) > 1], calendar)
    findings = retrain_findings(overall, alpha=config.alpha, coverage_alpha=config.coverage_alpha)
    findings += horizon_findings(risk, coverage, coverage_alpha=config.coverage_alpha)
    triggers = tuple(name for name, _ in findings)
    described = "; ".join(text for _, text in findings)
    too_few = overall.sessions < config.min_samples
    if not findings:
        reason = _healthy(overall)
        if too_few:
            reason = f"Only {overall.sessions} scored sessions (need {config.min_samples}); no decision yet."
    elif too_few:
        reason = (
            f"{described}, but only {overall.sessions} scored sessions (need {config.min_samples}): "
            "waiting for more evidence."
        )
    elif cooldown:
        reason = f"{described}, but a retrain ran on {last_retrain}: cooldown of {config.cooldown_sessions} sessions."
    else:
        reason = f"{described} over the last {overall.sessions} sessions."
    return MonitorResult(
        as_of=as_of,
        model_version=model_version,
        evaluated=len(scored),
        pending=pending,
        overall=overall,
        per_ticker=per_ticker,
        retrain_needed=bool(findings) and not too_few and not cooldown,
        reason=reason,
        cooldown_active=cooldown,
        last_retrain_as_of=last_retrain,
        triggers=triggers,
        band_breaks=band_breaks(scored),
        risk=risk,
    )


def retrain_findings(metrics: WindowMetrics, *, alpha: float, coverage_alpha: float) -> list[tuple[str, str]]:
    """What in `metrics` calls for a retrain, by test: (trigger, words). Empty: nothing."""
    findings: list[tuple[str, str]] = []
    if metrics.p_worse is not None and metrics.p_worse < alpha and (metrics.skill or 0.0) < 0:
        words = (
            f"the served forecast is significantly worse than naive (skill {_pct(metrics.skill)}, "
            f"95% CI {_pct(metrics.skill_low)} to {_pct(metrics.skill_high)}, p = {metrics.p_worse:.3g} < {alpha:g})"
        )
        findings.append(("skill", words))
    for level in (80, 95):
        coverage = getattr(metrics, f"coverage_{level}")
        p_value = getattr(metrics, f"p_coverage_{level}")
        if None not in (coverage, p_value) and p_value < coverage_alpha and coverage < level / 100:
            words = (
                f"the {level}% interval covered {coverage:.1%} of {metrics.samples} closes "
                f"(binomial p = {p_value:.3g} < {coverage_alpha:g}{_effective(metrics, level)})"
            )
            findings.append((f"coverage_{level}", words))
    return findings


def _effective(metrics: WindowMetrics, level: int) -> str:
    effective = getattr(metrics, f"effective_n_{level}")
    if effective is None or round(effective) >= metrics.samples:
        return ""
    return f", counted as {effective:.0f} independent closes: misses on the same day move together"


def _healthy(metrics: WindowMetrics) -> str:
    parts = ["No significant loss against naive"]
    if metrics.coverage_95 is not None:
        parts.append(
            "interval coverage not significantly below what was promised "
            f"(80%: {_pct(metrics.coverage_80, signed=False)}, 95%: {_pct(metrics.coverage_95, signed=False)})"
        )
    return "; ".join(parts) + "."


def _pct(value: float | None, *, signed: bool = True) -> str:
    if value is None:
        return "undefined"
    return f"{value:+.1%}" if signed else f"{value:.1%}"
