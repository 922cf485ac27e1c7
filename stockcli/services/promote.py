"""Promote a model version to Production only when it is better on the same data, by a paired test.

Candidate and Production are scored on the candidate's test window (Production re-made from raw bars
through the forecasting primitive), on the (date, ticker) rows both cover. The candidate is promoted
when a one-sided Diebold-Mariano test (HAC; each ticker's losses scaled by Production's mean, so a
high-priced index does not decide alone) gives p < `[promotion] alpha` and the improvement reaches
`min_improvement`. The same test decides what the kept model serves per ticker ("*": pooled, for
unseen tickers). Every decision is recorded before the alias moves, as pending; only a move that
happened says "promoted", and the next `promote` settles a pending row left by a killed run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.db.serving import Selection
from stockcli.errors import NoDataError, RegistryError, StockCliError
from stockcli.jsonable import to_plain
from stockcli.ml.stats import PairedTestResult
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    from stockcli.ml.bundle import ModelBundle
    from stockcli.ml.metrics import Evaluation


@dataclass(frozen=True)
class PromotionResult:
    """One promotion decision and the numbers behind it."""

    candidate_version: str
    production_version: str | None  # the version Production pointed at when the run started
    metric: str
    candidate_value: float | None
    production_value: float | None
    naive_value: float | None
    improvement: float | None  # relative: 1 - candidate / production on `metric` (scaled per ticker)
    improvement_low: float | None  # its 95% interval (HAC)
    improvement_high: float | None
    p_value: float | None  # one-sided Diebold-Mariano: is the candidate better than Production?
    candidate_metrics: Evaluation  # on the window, next to naive and the baselines
    production_metrics: Evaluation | None
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
    selection: dict[str, Any] = field(default_factory=dict)  # ticker -> what the kept model serves, and why
    selection_version: str | None = None  # the version the selection belongs to


def promote(
    *,
    settings: Settings,
    engine: Engine,
    version: str | None = None,
    dry_run: bool = False,
    run_lock_held: bool = True,
    pipeline_run_id: int | None = None,
    judged_on: str = "point",
) -> PromotionResult:
    """Decide whether `version` (default: the newest) replaces Production, record it, move the alias.

    `judged_on` ("point" or "interval") picks the metrics (`judging_metrics`); without `run_lock_held`
    the run lock is taken here. Raises NoDataError when nothing is registered, UsageError for an
    unknown version, RegistryError when the registry fails (the alias is then unchanged).
    """
    from stockcli.db import promotions
    from stockcli.db.lock import run_lock
    from stockcli.ml import registry
    from stockcli.services.models import production_version as resolve_production

    lock = (
        contextlib.nullcontext()
        if run_lock_held
        else run_lock(engine, settings.data_dir / "stockcli.lock", "promote")
    )
    with lock:
        if version is None:
            version = registry.latest_version(settings)
            if version is None:
                raise NoDataError(
                    "No registered model version to promote.", hint="Run `stockcli train` first."
                )
        candidate_version = str(version)
        registry.require_version(settings, candidate_version)
        production_version = resolve_production(settings)  # resolved once for the whole run
        promotions.settle_pending(engine, production_version=production_version)

        window = _evaluation_window(
            settings=settings,
            engine=engine,
            candidate_version=candidate_version,
            production_version=production_version,
        )
        decision = _judge(
            settings=settings,
            window=window,
            metrics=judging_metrics(settings, judged_on),
            candidate_version=candidate_version,
            production_version=production_version,
            dry_run=dry_run,
        )
        selected = _with_selection(settings=settings, window=window, decision=decision)
        return _record_and_move(
            settings=settings,
            engine=engine,
            decision=selected.decision,
            selections=selected.selections,
            pipeline_run_id=pipeline_run_id,
        )


@dataclass(frozen=True)
class WindowForecasts:
    """One model's forecasts on a window's rows: point, calibrated quantiles (closes)."""

    predicted: np.ndarray  # (n,) closes
    quantiles: np.ndarray  # (n, 5) closes
    p_up: np.ndarray | None = None  # (n,) the chance of an up session


@dataclass(frozen=True)
class EvaluationWindow:
    """The candidate's test window, both models' forecasts on it and the baselines' quantiles;
    `rows` index the (date, ticker) rows that both models forecast."""

    candidate: ModelBundle
    tickers: list[str]
    base_dates: list[date]
    target_dates: list[date]
    actual: np.ndarray  # (n,) target closes
    base: np.ndarray  # (n,) base closes
    candidate_fc: WindowForecasts
    baselines: dict[str, np.ndarray]  # interval candidate -> (n, 5) quantiles (closes)
    baseline_p_ups: dict[str, np.ndarray | None]
    rows: np.ndarray
    production: ModelBundle | None = None  # when Production is another version than the candidate
    production_fc: WindowForecasts | None = None
    note: str = ""  # says so when fewer rows than the window's are compared

    def compared(self) -> dict[str, Any]:
        """The rows compared, as `paired_test` and `select_sources` take them."""
        return {
            "rows": self.rows,
            "tickers": self.tickers,
            "dates": self.target_dates,
            "actual": self.actual,
            "base": self.base,
        }

    @property
    def compared_dates(self) -> list[date]:
        return [self.target_dates[i] for i in self.rows]

    def score(self, fc: WindowForecasts) -> Evaluation:
        """`metrics.evaluate` of `fc` on the rows compared, next to naive and the baselines."""
        from stockcli.ml.metrics import evaluate

        rows = self.rows
        return evaluate(
            tickers=[self.tickers[i] for i in rows],
            dates=self.compared_dates,
            predicted_close=fc.predicted[rows],
            actual_close=self.actual[rows],
            base_close=self.base[rows],
            quantiles=fc.quantiles[rows],
            baselines={name: values[rows] for name, values in self.baselines.items()},
        )


def _evaluation_window(
    *, settings: Settings, engine: Engine, candidate_version: str, production_version: str | None
) -> EvaluationWindow:
    """The candidate's test window with its, Production's and the interval baselines' forecasts."""
    from stockcli.db.bars import load_bars
    from stockcli.db.datasets import load_built
    from stockcli.ml import registry
    from stockcli.ml.forecast import calibrated_quantiles, forecast_windows
    from stockcli.ml.forecasters import with_market
    from stockcli.services.train import baseline_forecasts

    candidate = registry.load_bundle(settings, candidate_version)
    test = load_built(engine, candidate.dataset_run_id).test
    if len(test) == 0:
        raise NoDataError(
            f"The test split of dataset {candidate.dataset_run_id} (model version {candidate_version}) is empty.",
            hint="Train on a dataset with a test split.",
        )
    tickers = test.tickers
    base_dates = list(test.base_dates)
    base = np.asarray(test.base_closes, dtype=np.float64)
    candidate_result = forecast_windows(candidate.model, candidate.scalers, test)

    # Raw bars of every series involved, for Production's inputs and the baselines' histories.
    series = set(tickers) | set(candidate.context_tickers)
    start = candidate.spec.start_date
    production = None
    if production_version is not None and production_version != candidate_version:
        production = registry.load_bundle(settings, production_version)
        series |= set(production.context_tickers)
        start = min(start, production.spec.start_date)
    market = settings.forecasters.har_market
    bars = load_bars(engine, with_market(sorted(series), market), start=start, end=max(base_dates))
    baselines = baseline_forecasts(settings, candidate.baselines, bars, test)
    window = EvaluationWindow(
        candidate=candidate,
        tickers=tickers,
        base_dates=base_dates,
        target_dates=list(test.target_dates),
        actual=np.asarray(test.target_closes, dtype=np.float64),
        base=base,
        candidate_fc=WindowForecasts(
            predicted=candidate_result.predicted_closes,
            quantiles=np.exp(calibrated_quantiles(candidate_result, candidate.calibration)) * base[:, None],
            p_up=candidate_result.p_up,
        ),
        baselines=baselines.quantiles,
        baseline_p_ups=baselines.p_ups,
        rows=np.arange(len(tickers)),
    )
    return window if production is None else _with_production(settings, window, production, bars, start)


def _with_production(
    settings: Settings, window: EvaluationWindow, production: ModelBundle, bars: Any, start: date | None
) -> EvaluationWindow:
    """`window` with Production's forecasts from raw `bars`, compared on the rows it forecast."""
    from stockcli.clock import calendar_for
    from stockcli.ml.forecast import calibrated_quantiles, forecast

    tickers, base_dates, base = window.tickers, window.base_dates, window.base
    sessions = calendar_for(settings).sessions(start, max(base_dates)) if start else None
    result = forecast(
        production, bars, sorted(set(base_dates)), tickers=sorted(set(tickers)), sessions=sessions
    )
    position = {(d, t): i for i, (d, t) in enumerate(zip(result.base_dates, result.tickers, strict=True))}
    rows = np.array(
        [i for i, key in enumerate(zip(base_dates, tickers, strict=True)) if key in position], dtype=int
    )
    if rows.size == 0:
        target_dates = window.target_dates
        raise NoDataError(
            f"Production (version {production.version}) could not forecast any day of the "
            f"candidate's test window {target_dates[0]}..{target_dates[-1]}.",
            hint="Check that the stored bars cover that window (`stockcli fetch`).",
        )
    picked = [position[(base_dates[i], tickers[i])] for i in rows]

    def on_window_rows(values: np.ndarray) -> np.ndarray:  # NaN where Production made no forecast
        spread = np.full((len(tickers), *values.shape[1:]), np.nan)
        spread[rows] = values
        return spread

    production_fc = WindowForecasts(
        predicted=on_window_rows(result.predicted_closes[picked]),
        quantiles=on_window_rows(
            np.exp(calibrated_quantiles(result, production.calibration)[picked]) * base[rows][:, None]
        ),
        p_up=on_window_rows(result.p_up[picked]),
    )
    note = ""
    if rows.size < len(tickers):
        note = f" Compared on {rows.size} of {len(tickers)} (date, ticker) rows that both models forecast."
    return replace(window, rows=rows, production=production, production_fc=production_fc, note=note)


def _judge(
    *,
    settings: Settings,
    window: EvaluationWindow,
    metrics: tuple[str, str],
    candidate_version: str,
    production_version: str | None,
    dry_run: bool,
) -> PromotionResult:
    """Score both models on the window and decide by the paired tests on `metrics` (not recorded yet)."""
    from stockcli.ml.metrics import metric_value

    metric, guard_metric = metrics
    candidate_metrics = window.score(window.candidate_fc)
    average = candidate_metrics.average
    production_metrics = production_value = test = guard = None
    if window.production_fc is not None:
        production_metrics = window.score(window.production_fc)
        production_value = metric_value(production_metrics.average, metric)
        # `test`: is the candidate better on `metric`? `guard`: is it worse on `guard_metric`?
        candidate_fc, production_fc, compared = window.candidate_fc, window.production_fc, window.compared()
        test = paired_test(metric, candidate_fc, production_fc, alternative="less", **compared)
        guard = paired_test(guard_metric, candidate_fc, production_fc, alternative="greater", **compared)
    candidate_value = metric_value(average, metric)
    would_promote, reason, improvement = decide(
        settings=settings,
        metric=metric,
        candidate_version=candidate_version,
        production_version=production_version,
        candidate_value=candidate_value,
        production_value=production_value,
        test=test,
        guard=(guard_metric, guard),
    )
    reason += window.note
    if dry_run:
        reason = f"Dry run, nothing moved: {'would promote' if would_promote else 'would keep Production'}. {reason}"
    window_dates = window.compared_dates
    return PromotionResult(
        candidate_version=candidate_version,
        production_version=production_version,
        metric=metric,
        candidate_value=candidate_value,
        production_value=production_value,
        naive_value=getattr(average.naive, metric) if metric in ("mae", "rmse", "mape") else None,
        improvement=improvement,
        improvement_low=None if test is None else test.improvement_low,
        improvement_high=None if test is None else test.improvement_high,
        p_value=None if test is None else test.p_value,
        candidate_metrics=candidate_metrics,
        production_metrics=production_metrics,
        window_start=min(window_dates) if window_dates else None,
        window_end=max(window_dates) if window_dates else None,
        n_days=len(set(window_dates)),
        tickers=tuple(dict.fromkeys(window.tickers[i] for i in window.rows)),
        dataset_run_id=window.candidate.dataset_run_id,
        would_promote=would_promote,
        promoted=False,  # until the alias really moved
        dry_run=dry_run,
        reason=reason,
        promotion_id=0,  # until the decision is recorded
    )


@dataclass(frozen=True)
class _SelectedDecision:
    """A decision with the kept model's selection filled in, and that selection's rows to store."""

    decision: PromotionResult
    selections: list[Selection]


def _with_selection(
    *, settings: Settings, window: EvaluationWindow, decision: PromotionResult
) -> _SelectedDecision:
    """`decision` with what the model it keeps serves per ticker, tested on the window."""
    from stockcli.ml.forecasters import NETWORK

    promoting = decision.would_promote
    kept_version = decision.candidate_version if promoting else decision.production_version
    kept_fc = window.candidate_fc if promoting else window.production_fc
    if kept_version is None or kept_fc is None:
        return _SelectedDecision(decision=decision, selections=[])
    kept = window.production if not promoting and window.production else window.candidate
    dates = window.compared_dates
    selections = select_sources(
        kept_fc,
        **window.compared(),
        candidates={**window.baselines, NETWORK: kept_fc.quantiles},
        p_ups={**window.baseline_p_ups, NETWORK: kept_fc.p_up},
        base_rate=base_rates(kept.baselines, window.tickers),
        incumbent=settings.forecasters.incumbent_at(1),
        interval_metric=settings.forecasters.metric,
        test_order=settings.forecasters.test_order,
        alpha=settings.promotion.alpha,
        window=(min(dates), max(dates)) if dates else (None, None),
    )
    selection = {item.ticker: to_plain(item, keep_non_finite=True) for item in selections}
    decision = replace(decision, selection=selection, selection_version=kept_version if selection else None)
    return _SelectedDecision(decision=decision, selections=selections)


def _record_and_move(
    *,
    settings: Settings,
    engine: Engine,
    decision: PromotionResult,
    selections: list[Selection],
    pipeline_run_id: int | None,
) -> PromotionResult:
    """Record `decision` (pending while the alias is to move), save the kept model's selection, then
    move the alias when promoting for real."""
    from stockcli.db import promotions
    from stockcli.db.serving import save_selection
    from stockcli.ml import registry

    moving = decision.would_promote and not decision.dry_run
    promotion_id = promotions.record_decision(
        engine,
        candidate_version=decision.candidate_version,
        production_version=decision.production_version,
        metric=decision.metric,
        candidate_metrics=decision.candidate_metrics.to_json(),
        production_metrics=None
        if decision.production_metrics is None
        else decision.production_metrics.to_json(),
        naive_metrics=decision.candidate_metrics.naive_json(),
        window_start=decision.window_start,
        window_end=decision.window_end,
        dataset_run_id=decision.dataset_run_id,
        promoted=False,  # until the alias really moved
        dry_run=decision.dry_run,
        reason=decision.reason + (promotions.PENDING_NOTE if moving else ""),
        pipeline_run_id=pipeline_run_id,
        test="diebold-mariano (HAC), one-sided" if decision.p_value is not None else None,
        p_value=decision.p_value,
        improvement=decision.improvement,
        improvement_low=decision.improvement_low,
        improvement_high=decision.improvement_high,
        selection=(
            {"version": decision.selection_version, "tickers": decision.selection}
            if decision.selection
            else None
        ),
    )
    if not decision.dry_run:  # decided now: no longer a version that no decision looked at
        with contextlib.suppress(StockCliError):
            registry.clear_unevaluated(settings, decision.candidate_version)
    if selections and not decision.dry_run and decision.selection_version is not None:
        # Before the alias moves: the moment Production points at a version, its selection exists.
        save_selection(
            engine, model_version=decision.selection_version, selections=selections, promotion_id=promotion_id
        )
    if moving:
        _move_alias(settings=settings, engine=engine, decision=decision, promotion_id=promotion_id)
    return replace(decision, promotion_id=promotion_id, promoted=moving)


def _move_alias(*, settings: Settings, engine: Engine, decision: PromotionResult, promotion_id: int) -> None:
    """Point Production at the candidate unless it moved meanwhile; the row says whether it did."""
    from stockcli.db import promotions
    from stockcli.ml import registry
    from stockcli.services.models import production_version as resolve_production

    try:
        current = resolve_production(settings)
        if current != decision.production_version:
            raise RegistryError(
                f"Production moved from version {decision.production_version} to {current} while version "
                f"{decision.candidate_version} was being evaluated.",
                hint="Run `stockcli promote` again to compare against the new Production.",
            )
        checkpoint(settings, "promote:before_alias")
        registry.set_production(settings, decision.candidate_version)
    except BaseException as exc:
        message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):
            promotions.mark_outcome(
                engine,
                promotion_id,
                promoted=False,
                reason=f"{decision.reason} The alias was NOT moved: {message}",
            )
        raise
    checkpoint(settings, "promote:after_alias")
    promotions.mark_outcome(engine, promotion_id, promoted=True, reason=decision.reason)


def paired_test(
    metric: str,
    candidate: WindowForecasts,
    production: WindowForecasts,
    *,
    rows: np.ndarray,
    tickers: list[str],
    dates: list[date],
    actual: np.ndarray,
    base: np.ndarray,
    alternative: str = "less",
) -> PairedTestResult:
    """One-sided Diebold-Mariano test of the candidate against Production on `metric`'s losses
    ("less": is the candidate better? "greater": is it worse?)."""
    from stockcli.ml.metrics import loss_series, panel_of
    from stockcli.ml.stats import paired_loss_test

    def panel(fc: WindowForecasts) -> np.ndarray:
        losses = loss_series(
            metric,
            predicted=fc.predicted[rows],
            actual=actual[rows],
            base=base[rows],
            quantiles=fc.quantiles[rows],
        )
        return panel_of(losses, [dates[i] for i in rows], [tickers[i] for i in rows])[0]

    return paired_loss_test(panel(candidate), panel(production), alternative=alternative)  # type: ignore[arg-type]


def select_sources(
    fc: WindowForecasts,
    *,
    rows: np.ndarray,
    tickers: list[str],
    dates: list[date],
    actual: np.ndarray,
    base: np.ndarray,
    candidates: Mapping[str, np.ndarray],
    incumbent: str,
    interval_metric: str,
    alpha: float,
    window: tuple[date | None, date | None],
    p_ups: Mapping[str, np.ndarray | None] | None = None,
    base_rate: np.ndarray | None = None,
    test_order: Sequence[str] = (),
) -> list[Selection]:
    """Per ticker, pooled "*" first: the model's point forecast only where it beats naive
    significantly (one-sided DM, p < alpha), the interval candidate `choose_interval_source` picks
    (the pooled choice against `incumbent`, each ticker's against the pooled one) and a P(up) only
    where its Brier score beats the base rate's."""
    from stockcli.db.serving import POOLED, Selection
    from stockcli.ml.metrics import brier_scores, loss_series, panel_of
    from stockcli.ml.selection import BASE_RATE, choose_interval_source, ticker_incumbent
    from stockcli.ml.stats import paired_loss_test

    briers = {
        name: brier_scores(p, actual=actual, base=base) for name, p in (p_ups or {}).items() if p is not None
    }
    if base_rate is not None:
        briers[BASE_RATE] = brier_scores(base_rate, actual=actual, base=base)
    losses = {
        name: loss_series(interval_metric, predicted=base, actual=actual, base=base, quantiles=quantiles)
        for name, quantiles in candidates.items()
    }
    model_abs, naive_abs = np.abs(fc.predicted - actual), np.abs(base - actual)
    ticker_array = np.asarray(tickers)

    def panel(values: np.ndarray, chosen: np.ndarray) -> np.ndarray:
        return panel_of(values[chosen], [dates[i] for i in chosen], [tickers[i] for i in chosen])[0]

    # The pooled choice first: each ticker's challengers then face it (`selection.ticker_incumbent`).
    groups = [(POOLED, rows)]
    groups += [(t, rows[ticker_array[rows] == t]) for t in dict.fromkeys(tickers[i] for i in rows)]
    out: list[Selection] = []
    facing = incumbent
    for ticker, chosen in groups:
        chosen_dates = [dates[i] for i in chosen]
        point = paired_loss_test(panel(model_abs, chosen), panel(naive_abs, chosen), alternative="less")
        panels = {name: panel(loss, chosen) for name, loss in losses.items()}
        interval = choose_interval_source(panels, incumbent=facing, alpha=alpha, order=test_order)
        if ticker == POOLED:
            facing = ticker_incumbent(interval, incumbent)
        brier_panels = {name: panel(scores, chosen) for name, scores in briers.items()}
        p_up = choose_interval_source(brier_panels, incumbent=BASE_RATE, alpha=alpha)
        point_model = point.p_value < alpha and (point.relative_improvement or 0.0) > 0
        out.append(
            Selection(
                ticker=ticker,
                point_source="model" if point_model else "naive",
                point_p_value=float(point.p_value),
                point_skill=point.relative_improvement,
                interval_source=interval.source,
                interval_p_value=interval.p_value,
                interval_skill=interval.skill,
                p_up_source=p_up.source if briers else None,
                p_up_p_value=p_up.p_value if briers else None,
                window_start=min(chosen_dates) if chosen_dates else window[0],
                window_end=max(chosen_dates) if chosen_dates else window[1],
                n_sessions=len(set(chosen_dates)),
            )
        )
    return out


def base_rates(baselines: Mapping[str, Any] | None, tickers: list[str], horizon: int = 1) -> np.ndarray:
    """Per row, the up-share of its ticker's training dates (the pooled one for a ticker without); at a
    `horizon` above 1 of its `horizon`-session returns (all NaN for a version that did not record them)."""
    found = (baselines or {}).get("p_up_base")
    if horizon != 1:
        found = ((baselines or {}).get("p_up_base_horizons") or {}).get(str(horizon))
    rates = found or {}
    pooled = np.nan if rates.get("*") is None else float(rates["*"])
    return np.array([pooled if rates.get(t) is None else float(rates[t]) for t in tickers], dtype=np.float64)


def judging_metrics(settings: Settings, judged_on: str) -> tuple[str, str]:
    """(the metric a candidate must be significantly better on, the one it must not be worse on): the
    interval metric for a retrain asked for by coverage, else `[promotion] metric`; the guard is the
    other kind (MAE when `[promotion] metric` is itself an interval score)."""
    from stockcli.ml.metrics import INTERVAL_LOSSES

    configured = settings.promotion.metric
    interval = configured if configured in INTERVAL_LOSSES else settings.forecasters.metric
    point = "mae" if configured in INTERVAL_LOSSES else configured
    if judged_on == "interval":
        return interval, point
    return configured, interval if configured == point else point


def decide(
    *,
    settings: Settings,
    metric: str,
    candidate_version: str,
    production_version: str | None,
    candidate_value: float | None,
    production_value: float | None,
    test: PairedTestResult | None,
    guard: tuple[str, PairedTestResult | None] | None = None,
) -> tuple[bool, str, float | None]:
    """(promote?, why, relative improvement) from the paired test on the shared window; `guard` is
    (metric, the one-sided test "is the candidate worse on it?"), which vetoes a promotion."""
    name = metric.upper()
    alpha, margin = settings.promotion.alpha, settings.promotion.min_improvement
    if candidate_value is None:
        return False, f"The candidate's {name} is undefined on its test window.", None
    if production_version is None:
        return True, "No production model yet: promoting the candidate.", None
    if production_version == candidate_version:
        return False, f"Version {candidate_version} already is Production.", 0.0
    if test is None or test.relative_improvement is None:
        return False, f"Production's {name} is undefined on the window; keeping Production.", None
    improvement = test.relative_improvement
    summary = (
        f"{name} {candidate_value:.4g} (candidate v{candidate_version}) vs {_fmt(production_value)} "
        f"(production v{production_version}): improvement {improvement:+.2%} "
        f"(95% CI {_fmt(test.improvement_low, '+.2%')} to {_fmt(test.improvement_high, '+.2%')}), "
        f"one-sided Diebold-Mariano p = {test.p_value:.3g} over {test.n_sessions} sessions"
    )
    if not (test.p_value < alpha and improvement >= margin and improvement > 0):
        if test.p_value >= alpha:
            why = f"not significant at alpha {alpha:g}"
        else:
            why = f"below the minimum improvement of {margin:.2%}"
        return False, f"The candidate is not promoted ({why}): {summary}.", improvement
    if guard is not None and guard[1] is not None and guard[1].p_value < alpha:
        return (
            False,
            f"The candidate is not promoted: significantly worse on {guard[0].upper()} (one-sided "
            f"Diebold-Mariano p = {guard[1].p_value:.3g}), though the candidate is significantly better: "
            f"{summary}.",
            improvement,
        )
    return True, f"The candidate is significantly better: {summary}.", improvement


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "undefined" if value is None else format(value, spec)
