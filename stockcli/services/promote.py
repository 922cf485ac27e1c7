"""Promote a model version to Production only when it is better on the same data.

The candidate (default: the newest version) and the current Production version are evaluated on
the same window: the candidate's test window, i.e. the test target dates of the dataset it was
trained on. The candidate predicts its own stored test windows; Production is re-evaluated through
the forecasting primitive from raw bars with its own feature spec and scalers. Both are scored
against the same actual closes, next to the naive forecast, on the tickers and days both cover.

Every decision, promoted or not and dry runs included, is written to `promotions` before the alias
moves, as "not promoted" with a pending note; it says "promoted" only once the alias really moved. The
alias moves only under the run lock; a failed move leaves it where it was and says so in the row. A
run killed between the two writes leaves a pending row, which the next `promote` settles from where
the alias points.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.errors import NoDataError, RegistryError
from stockcli.services.runtime import checkpoint


@dataclass(frozen=True)
class PromotionResult:
    """One promotion decision and the numbers behind it."""

    candidate_version: str
    production_version: str | None  # the version Production pointed at when the run started
    metric: str
    candidate_value: float | None
    production_value: float | None
    naive_value: float | None
    improvement: float | None  # relative: 1 - candidate / production on `metric`
    candidate_metrics: dict[str, Any]  # metrics.evaluate() on the window
    production_metrics: dict[str, Any] | None
    naive_metrics: dict[str, Any]  # {"tickers": {ticker: naive block}, "average": naive block}
    window_start: date | None  # first and last target date compared
    window_end: date | None
    n_days: int
    tickers: tuple[str, ...]  # tickers compared (both models predict them)
    dataset_run_id: str
    would_promote: bool  # the decision
    promoted: bool  # the alias really moved (never in a dry run)
    dry_run: bool
    reason: str
    promotion_id: int


def promote(
    *,
    settings: Settings,
    engine: Engine,
    version: str | None = None,
    dry_run: bool = False,
    run_lock_held: bool = True,
    pipeline_run_id: int | None = None,
) -> PromotionResult:
    """Decide whether `version` (default: the newest) replaces Production, record it, move the alias.

    `run_lock_held` says the caller holds the run lock (the CLI's `pipeline_run`, `retrain`); when
    False the run lock is taken here. Raises NoDataError when nothing is registered, UsageError for an
    unknown version, RegistryError when the registry fails (the alias is then unchanged).
    """
    from stockcli.db.lock import run_lock

    lock = (
        contextlib.nullcontext()
        if run_lock_held
        else run_lock(engine, settings.data_dir / "stockcli.lock", "promote")
    )
    with lock:
        return _promote(
            settings=settings,
            engine=engine,
            version=version,
            dry_run=dry_run,
            pipeline_run_id=pipeline_run_id,
        )


def _promote(
    *, settings: Settings, engine: Engine, version: str | None, dry_run: bool, pipeline_run_id: int | None
) -> PromotionResult:
    import numpy as np

    from stockcli.db import promotions
    from stockcli.db.bars import load_bars
    from stockcli.db.datasets import load_built
    from stockcli.ml import registry
    from stockcli.ml.forecast import forecast, predict_windows
    from stockcli.ml.metrics import evaluate

    metric = settings.promotion.metric
    if version is None:
        version = registry.latest_version(settings)
        if version is None:
            raise NoDataError("No registered model version to promote.", hint="Run `stockcli train` first.")
    candidate_version = str(version)
    registry.check_version(settings, candidate_version)
    production_version = registry.resolve_alias(settings)  # resolved once for the whole run
    promotions.settle_pending(engine, production_version=production_version)

    candidate = registry.load_bundle(settings, candidate_version)
    built = load_built(engine, candidate.dataset_run_id)
    test = built.test
    if test.x.shape[0] == 0:
        raise NoDataError(
            f"The test split of dataset {candidate.dataset_run_id} (model version {candidate_version}) is empty.",
            hint="Train on a dataset with a test split.",
        )
    candidate_tickers = list(candidate.tickers)
    base_dates = list(test.base_dates)
    target_dates = list(test.target_dates)
    candidate_pred = predict_windows(candidate.model, candidate.scalers, test.x, test.base_closes)
    actual = np.asarray(test.target_closes, dtype=np.float64)
    base = np.asarray(test.base_closes, dtype=np.float64)

    rows = np.arange(len(base_dates))
    columns = list(range(len(candidate_tickers)))
    production_pred: np.ndarray | None = None
    note = ""
    if production_version is not None and production_version != candidate_version:
        production = registry.load_bundle(settings, production_version)
        shared = [t for t in candidate_tickers if t in production.tickers]
        if shared:
            bars = load_bars(engine, list(production.tickers), end=base_dates[-1])
            result = forecast(production, bars, base_dates)
            position = {day: index for index, day in enumerate(result.base_dates)}
            rows = np.array([i for i, day in enumerate(base_dates) if day in position], dtype=int)
            if rows.size == 0:
                raise NoDataError(
                    f"Production (version {production_version}) could not forecast any day of the "
                    f"candidate's test window {target_dates[0]}..{target_dates[-1]}.",
                    hint="Check that the stored bars cover that window (`stockcli fetch`).",
                )
            production_rows = [position[base_dates[i]] for i in rows]
            production_columns = [list(result.tickers).index(t) for t in shared]
            production_pred = result.predicted_closes[np.ix_(production_rows, production_columns)]
            columns = [candidate_tickers.index(t) for t in shared]
            if len(shared) < len(candidate_tickers) or rows.size < len(base_dates):
                note = f" Compared on {len(shared)} shared tickers and {rows.size} of {len(base_dates)} days."
        else:
            note = " Production predicts none of the candidate's tickers, so there is nothing to compare."

    compared = [candidate_tickers[c] for c in columns]
    pick = np.ix_(rows, np.array(columns, dtype=int))
    candidate_metrics = evaluate(
        predicted_close=candidate_pred[pick],
        actual_close=actual[pick],
        base_close=base[pick],
        tickers=compared,
    )
    production_metrics = (
        evaluate(
            predicted_close=production_pred,
            actual_close=actual[pick],
            base_close=base[pick],
            tickers=compared,
        )
        if production_pred is not None
        else None
    )
    naive_metrics = {
        "tickers": {t: block["naive"] for t, block in candidate_metrics["tickers"].items()},
        "average": candidate_metrics["average"]["naive"],
    }
    candidate_value = candidate_metrics["average"]["model"][metric]
    production_value = production_metrics["average"]["model"][metric] if production_metrics else None
    naive_value = candidate_metrics["average"]["naive"][metric]

    would_promote, reason, improvement = decide(
        settings=settings,
        candidate_version=candidate_version,
        production_version=production_version,
        candidate_value=candidate_value,
        production_value=production_value,
        naive_value=naive_value,
        comparable=production_metrics is not None,
    )
    reason += note
    if dry_run:
        reason = f"Dry run, nothing moved: {'would promote' if would_promote else 'would keep Production'}. {reason}"
    window_dates = [target_dates[i] for i in rows]
    window_start = window_dates[0] if window_dates else None
    window_end = window_dates[-1] if window_dates else None
    moving = would_promote and not dry_run
    promotion_id = promotions.record_decision(
        engine,
        candidate_version=candidate_version,
        production_version=production_version,
        metric=metric,
        candidate_metrics=candidate_metrics,
        production_metrics=production_metrics,
        naive_metrics=naive_metrics,
        window_start=window_start,
        window_end=window_end,
        dataset_run_id=candidate.dataset_run_id,
        promoted=False,  # until the alias really moved
        dry_run=dry_run,
        reason=reason + (promotions.PENDING_NOTE if moving else ""),
        pipeline_run_id=pipeline_run_id,
    )
    promoted = False
    if moving:
        try:
            current = registry.resolve_alias(settings)
            if current != production_version:
                raise RegistryError(
                    f"Production moved from version {production_version} to {current} while version "
                    f"{candidate_version} was being evaluated.",
                    hint="Run `stockcli promote` again to compare against the new Production.",
                )
            checkpoint(settings, "promote:before_alias")
            registry.set_production(settings, candidate_version)
        except BaseException as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            with contextlib.suppress(Exception):
                promotions.mark_not_promoted(
                    engine, promotion_id, reason=f"{reason} The alias was NOT moved: {message}"
                )
            raise
        checkpoint(settings, "promote:after_alias")
        promotions.mark_promoted(engine, promotion_id, reason=reason)
        promoted = True

    return PromotionResult(
        candidate_version=candidate_version,
        production_version=production_version,
        metric=metric,
        candidate_value=candidate_value,
        production_value=production_value,
        naive_value=naive_value,
        improvement=improvement,
        candidate_metrics=candidate_metrics,
        production_metrics=production_metrics,
        naive_metrics=naive_metrics,
        window_start=window_start,
        window_end=window_end,
        n_days=len(window_dates),
        tickers=tuple(compared),
        dataset_run_id=candidate.dataset_run_id,
        would_promote=would_promote,
        promoted=promoted,
        dry_run=dry_run,
        reason=reason,
        promotion_id=promotion_id,
    )


def decide(
    *,
    settings: Settings,
    candidate_version: str,
    production_version: str | None,
    candidate_value: float | None,
    production_value: float | None,
    naive_value: float | None,
    comparable: bool,
) -> tuple[bool, str, float | None]:
    """(promote?, why, relative improvement) from the metric values on the shared window."""
    metric = settings.promotion.metric.upper()
    margin = settings.promotion.min_improvement
    if candidate_value is None:
        return False, f"The candidate's {metric} is undefined on its test window.", None
    if settings.promotion.require_beats_naive and (naive_value is None or not candidate_value < naive_value):
        return (
            False,
            f"The candidate does not beat the naive forecast ({metric} {candidate_value:.4g} vs naive "
            f"{_fmt(naive_value)}), which [promotion] require_beats_naive demands.",
            None,
        )
    if production_version is None:
        return True, "No production model yet: promoting the candidate.", None
    if production_version == candidate_version:
        return False, f"Version {candidate_version} already is Production.", 0.0
    if not comparable:
        return True, f"Promoting version {candidate_version}.", None
    if production_value is None:
        return True, f"Production's {metric} is undefined on the window; promoting the candidate.", None
    improvement = 1.0 - candidate_value / production_value if production_value > 0 else None
    better = candidate_value < production_value * (1.0 - margin)
    summary = (
        f"{metric} {candidate_value:.4g} (candidate v{candidate_version}) vs {production_value:.4g} "
        f"(production v{production_version})"
        + (f", {improvement:+.2%} improvement" if improvement is not None else "")
    )
    if better:
        return True, f"The candidate is better: {summary}.", improvement
    needed = f" (at least {margin:.2%} needed)" if margin > 0 else ""
    return False, f"The candidate is not better: {summary}{needed}.", improvement


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.4g}"
