"""Forecast metrics: the one definition of every accuracy figure that train, promote, monitor, report,
backtest and the dashboard show.

Per ticker, for the forecast and for naive persistence (next close = last close) on the same days: MAE, RMSE,
MAPE (a fraction: 0.0123 is 1.23%), directional accuracy (`direction_scores`; naive's is 0.5 by construction)
and skill = 1 - MAE / MAE_naive with its 95% interval. Interval metrics are on log returns from the base
close, so they compare across tickers. The average block is the mean over tickers of each point figure, so a
high-priced index does not drown a cheap stock; its skill and interval are the panel's
(`stats.skill_interval`). Undefined figures are None.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date
from typing import Any

import numpy as np

from stockcli.errors import InputDataError, UsageError
from stockcli.ml.intervals import (
    INTERVAL_COLUMNS,
    INTERVAL_METRIC_KEYS,
    MISCOVERAGE,
    interval_block,
    misses,
    pinball_losses,
    winkler_scores,
)
from stockcli.ml.stats import paired_loss_test, skill_interval

# What `[promotion] metric` may name: a point loss or an interval score, all "lower is better".
LOSS_METRICS = ("mae", "rmse", "mape", "winkler_95", "pinball")
INTERVAL_LOSSES = ("winkler_95", "pinball")


# --- typed results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PointFigures:
    """MAE, RMSE, MAPE (a fraction) and directional accuracy of one forecast; None where undefined."""

    mae: float | None = None
    rmse: float | None = None
    mape: float | None = None
    direction_accuracy: float | None = None

    def to_json(self) -> dict[str, float | None]:
        plain = asdict(self)
        plain["directional_accuracy"] = plain.pop("direction_accuracy")  # the stored key
        return plain


@dataclass(frozen=True)
class IntervalFigures:
    """`intervals.interval_block` on log returns, over `n` complete observations."""

    coverage_80: float | None
    coverage_95: float | None
    width_80: float | None
    width_95: float | None
    winkler_80: float | None
    winkler_95: float | None
    pinball: float | None
    n: int

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class ScoredFigures:
    """What `summarize_scored` adds to a block: rows, distinct target dates, the share served by the model and
    a one-sided Diebold-Mariano p-value of worse than naive."""

    samples: int
    sessions: int
    served_model_share: float | None
    p_worse: float | None


@dataclass(frozen=True)
class MetricBlock:
    """One ticker's (or the average's) figures: forecast and naive on the same days, skill with its 95%
    interval, the intervals and each baseline's."""

    model: PointFigures
    naive: PointFigures
    skill: float | None
    skill_low: float | None
    skill_high: float | None
    n_days: int
    up_fraction: float | None
    intervals: IntervalFigures | None = None
    baselines: dict[str, IntervalFigures | None] = field(default_factory=dict)
    scored: ScoredFigures | None = None

    def to_json(self) -> dict[str, Any]:
        """The fields in order, point figures under their stored keys, `scored`'s figures flat at the end."""
        plain = asdict(self)
        scored = plain.pop("scored") or {}
        plain["model"], plain["naive"] = self.model.to_json(), self.naive.to_json()
        return plain | scored


@dataclass(frozen=True)
class Evaluation:
    """`evaluate`'s result: per-ticker blocks (in first-seen order) and their average."""

    n_days: int
    tickers: dict[str, MetricBlock]
    average: MetricBlock

    def to_json(self) -> dict[str, Any]:
        """`{"n_days", "tickers": {ticker: block}, "average": block}`: the shape stored and shown."""
        return {
            "n_days": self.n_days,
            "tickers": {ticker: block.to_json() for ticker, block in self.tickers.items()},
            "average": self.average.to_json(),
        }

    def naive_json(self) -> dict[str, Any]:
        """Naive's point figures alone: `{"tickers": {ticker: figures}, "average": figures}`."""
        return {
            "tickers": {ticker: block.naive.to_json() for ticker, block in self.tickers.items()},
            "average": self.average.naive.to_json(),
        }


# --- per-row definitions ----------------------------------------------------------------------------


def direction_scores(*, predicted: np.ndarray, actual: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per row: 1 hit, 0 miss, 0.5 for a forecast of no change, NaN when the close did not move."""
    predicted_sign = np.sign(np.asarray(predicted, dtype=np.float64) - base)
    actual_sign = np.sign(np.asarray(actual, dtype=np.float64) - base)
    scores = np.where(predicted_sign == 0, 0.5, (predicted_sign == actual_sign).astype(np.float64))
    return np.where(
        (actual_sign == 0) | ~np.isfinite(actual_sign) | ~np.isfinite(predicted_sign), np.nan, scores
    )


def brier_scores(p_up: np.ndarray, *, actual: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Per row: the Brier score (p_up - outcome)^2, the outcome 1.0 when the close ended above the base close;
    NaN where unknown."""
    actual, base = np.asarray(actual, dtype=np.float64), np.asarray(base, dtype=np.float64)
    up = np.where(np.isfinite(actual) & np.isfinite(base), (actual > base).astype(np.float64), np.nan)
    return (np.asarray(p_up, dtype=np.float64) - up) ** 2


def up_count(log_returns: np.ndarray, horizon: int = 1) -> tuple[int, int]:
    """(ups, n) of the `horizon`-session log returns, each the sum of `horizon` consecutive daily ones (every
    session a start, so windows overlap), among the finite ones: P(up)'s base rate at a horizon is ups / n."""
    returns = np.asarray(log_returns, dtype=np.float64)
    if returns.size < horizon:
        return 0, 0
    sums = np.lib.stride_tricks.sliding_window_view(returns, horizon).sum(axis=1)
    sums = sums[np.isfinite(sums)]
    return int((sums > 0).sum()), int(sums.size)


def log_quantiles(quantile_closes: np.ndarray, base: np.ndarray) -> np.ndarray:
    """(n, 5) close quantiles as log returns from the base close."""
    return _log_returns(quantile_closes, np.asarray(base, dtype=np.float64)[:, None])


def _log_returns(closes: np.ndarray, base: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(np.asarray(closes, dtype=np.float64) / np.asarray(base, dtype=np.float64))


def loss_series(
    metric: str,
    *,
    predicted: np.ndarray,
    actual: np.ndarray,
    base: np.ndarray,
    quantiles: np.ndarray | None = None,
) -> np.ndarray:
    """The per-row loss behind `metric` (what a paired test compares): absolute, squared or absolute
    percentage error, or the 95% Winkler score or pinball loss on log returns. NaN where a row has none."""
    predicted, actual, base = (np.asarray(v, dtype=np.float64) for v in (predicted, actual, base))
    if metric == "mae":
        return np.abs(predicted - actual)
    if metric == "rmse":
        return (predicted - actual) ** 2
    if metric == "mape":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.abs(predicted - actual) / np.abs(actual)
    if metric in INTERVAL_LOSSES:
        if quantiles is None:
            return np.full(len(actual), np.nan)
        q, y = log_quantiles(quantiles, base), _log_returns(actual, base)
        if metric == "winkler_95":
            low, high = INTERVAL_COLUMNS[95]
            return winkler_scores(q[:, low], q[:, high], y, MISCOVERAGE[95])
        return pinball_losses(q, y)
    raise UsageError(f"Unknown metric {metric!r}.", hint=f"Use one of {', '.join(LOSS_METRICS)}.")


# --- blocks -----------------------------------------------------------------------------------------


def point_block(predicted: np.ndarray, actual: np.ndarray, base: np.ndarray) -> PointFigures:
    """MAE, RMSE, MAPE and directional accuracy of one forecast (rows with any NaN skipped)."""
    usable = np.isfinite(predicted) & np.isfinite(actual) & np.isfinite(base)
    predicted, actual, base = predicted[usable], actual[usable], base[usable]
    if predicted.size == 0:
        return PointFigures()
    error = predicted - actual
    nonzero = actual != 0
    mape = float(np.mean(np.abs(error[nonzero]) / np.abs(actual[nonzero]))) if nonzero.any() else None
    directions = direction_scores(predicted=predicted, actual=actual, base=base)
    direction = float(np.nanmean(directions)) if np.isfinite(directions).any() else None
    return PointFigures(
        mae=float(np.mean(np.abs(error))),
        rmse=float(np.sqrt(np.mean(error**2))),
        mape=mape,
        direction_accuracy=direction,
    )


def skill(model_mae: float | None, naive_mae: float | None) -> float | None:
    """1 - loss / reference loss (e.g. MAE against naive's); above 0: better. None when undefined."""
    if model_mae is None or naive_mae is None:
        return None
    if naive_mae == 0:
        # The price never moved: only a perfect forecast ties naive; anything else is infinitely worse.
        return 0.0 if model_mae == 0 else None
    return float(1.0 - model_mae / naive_mae)


def interval_metrics(
    quantile_closes: np.ndarray | None, actual: np.ndarray, base: np.ndarray
) -> IntervalFigures | None:
    """`intervals.interval_block` of close quantiles, on log returns from the base close."""
    if quantile_closes is None:
        return None
    q = log_quantiles(quantile_closes, base)
    if not np.isfinite(q).all(axis=1).any():
        return None
    return IntervalFigures(**interval_block(q, _log_returns(actual, base)))  # type: ignore[arg-type]


def panel_of(
    values: np.ndarray, dates: Sequence[date], tickers: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """Long-format values as a (sessions, tickers) panel (NaN where missing), with the ticker order."""
    day_index = {day: i for i, day in enumerate(sorted(set(dates)))}
    name_index = {name: j for j, name in enumerate(sorted(set(tickers)))}
    panel = np.full((len(day_index), len(name_index)), np.nan)
    for value, day, ticker in zip(np.asarray(values, dtype=np.float64), dates, tickers, strict=True):
        panel[day_index[day], name_index[ticker]] = value
    return panel, list(name_index)


def miss_panel(rows: Sequence[Mapping[str, Any]] | Sequence[Any], level: int) -> tuple[np.ndarray, list[str]]:
    """Misses of the served `level`% interval of scored rows as a (sessions, tickers) panel (NaN: no
    interval), with the ticker order."""
    items = [_as_mapping(row) for row in rows]
    if not items:
        return np.empty((0, 0)), []
    actual = np.array([_num(r.get("actual_close")) for r in items])
    return panel_of(
        misses(_served_quantiles(items), actual, level),
        [r["target_date"] for r in items],
        [str(r["ticker"]) for r in items],
    )


def _error_panels(
    rows: np.ndarray,
    predicted: np.ndarray,
    actual: np.ndarray,
    base: np.ndarray,
    dates: Sequence[date],
    tickers: Sequence[str],
) -> tuple[np.ndarray, ...]:
    """(sessions, tickers) panels of the absolute errors of the forecast and of naive on `rows`."""
    days, names = [dates[i] for i in rows], [tickers[i] for i in rows]
    return tuple(panel_of(np.abs(f[rows] - actual[rows]), days, names)[0] for f in (predicted, base))


def evaluate(
    *,
    tickers: Sequence[str],
    dates: Sequence[date],
    predicted_close: np.ndarray,
    actual_close: np.ndarray,
    base_close: np.ndarray,
    quantiles: np.ndarray | None = None,
    baselines: Mapping[str, np.ndarray] | None = None,
) -> Evaluation:
    """Per-ticker and averaged metrics of a forecast next to naive, on long-format rows.

    Row i is `tickers[i]` on target date `dates[i]`; `quantiles` (n, 5) are close quantiles of the forecast,
    `baselines` {name: (n, 5) close quantiles} on the same rows. Raises InputDataError on length mismatch.
    """
    predicted = np.asarray(predicted_close, dtype=np.float64)
    actual = np.asarray(actual_close, dtype=np.float64)
    base = np.asarray(base_close, dtype=np.float64)
    n = len(predicted)
    if not (len(actual) == len(base) == len(tickers) == len(dates) == n):
        raise InputDataError(
            f"Metric inputs differ in length: predicted {n}, actual {len(actual)}, base {len(base)}, "
            f"tickers {len(tickers)}, dates {len(dates)}."
        )
    names = [str(ticker) for ticker in tickers]
    name_array, date_list = np.asarray(names, dtype=object), list(dates)
    columns = (predicted, actual, base, date_list, names, quantiles, baselines)
    per_ticker = {name: _block(np.flatnonzero(name_array == name), *columns) for name in dict.fromkeys(names)}
    pooled = _block(np.arange(n), *columns)
    blocks = list(per_ticker.values())
    average = replace(  # the pooled panel's block, each point figure averaged over tickers
        pooled,
        model=_mean_figures([b.model for b in blocks]),
        naive=_mean_figures([b.naive for b in blocks]),
        # Not `_block`'s fallback to the MAEs' ratio (used exactly when the panel skill, and so its interval,
        # is undefined).
        skill=pooled.skill if pooled.skill_low is not None else None,
        n_days=int(min((b.n_days for b in blocks), default=0)),
        up_fraction=_mean([b.up_fraction for b in blocks]),
    )
    return Evaluation(n_days=len(set(date_list)), tickers=per_ticker, average=average)


def _block(
    rows: np.ndarray,
    predicted: np.ndarray,
    actual: np.ndarray,
    base: np.ndarray,
    dates: list[date],
    tickers: list[str],
    quantiles: np.ndarray | None,
    baselines: Mapping[str, np.ndarray] | None,
) -> MetricBlock:
    kept = rows[np.isfinite(predicted[rows]) & np.isfinite(actual[rows]) & np.isfinite(base[rows])]
    p, a, b = predicted[kept], actual[kept], base[kept]
    model = point_block(p, a, b)
    naive = point_block(b, a, b)  # on the same days as the forecast
    skill_value, low, high = (None, None, None)
    if kept.size:
        # Panel skill with its 95% interval (HAC; each ticker scaled by its naive MAE).
        skill_value, low, high = skill_interval(*_error_panels(kept, predicted, actual, base, dates, tickers))
    if skill_value is None:
        skill_value = skill(model.mae, naive.mae)
    moves = np.sign(a - b)
    return MetricBlock(
        model=model,
        naive=naive,
        skill=skill_value,
        skill_low=low,
        skill_high=high,
        n_days=int(kept.size),
        up_fraction=float(np.mean(moves[moves != 0] > 0)) if (moves != 0).any() else None,
        intervals=interval_metrics(None if quantiles is None else quantiles[kept], a, b),
        baselines={name: interval_metrics(values[kept], a, b) for name, values in (baselines or {}).items()},
    )


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _mean_figures(figures: list[PointFigures]) -> PointFigures:
    return PointFigures(
        **{item.name: _mean([getattr(f, item.name) for f in figures]) for item in fields(PointFigures)}
    )


def metric_value(block: MetricBlock, metric: str) -> float | None:
    """The value of a `LOSS_METRICS` name in an `evaluate` block."""
    value = getattr(block.intervals if metric in INTERVAL_LOSSES else block.model, metric, None)
    return None if value is None else float(value)


# --- scored predictions (monitor, report, dashboard, backtest) ------------------------------------------


def summarize_scored(rows: Sequence[Mapping[str, Any]] | Sequence[Any]) -> Evaluation | None:
    """`evaluate` of scored predictions (`model_performance_log` rows, mappings or objects) with each block's
    `ScoredFigures`, baselines from each row's `detail`; None when there are none."""
    items = [_as_mapping(row) for row in rows]
    if not items:
        return None
    tickers, dates, actual, base = _columns(items)
    predicted = np.array([float(r["predicted_close"]) for r in items])
    quantiles = _served_quantiles(items)
    result = evaluate(
        tickers=tickers,
        dates=dates,
        predicted_close=predicted,
        actual_close=actual,
        base_close=base,
        quantiles=quantiles if np.isfinite(quantiles).any() else None,
        baselines=_candidate_closes(items),
    )
    sources = np.array([str(r.get("source") or "model") for r in items])
    ticker_array = np.array(tickers)

    def scored(block: MetricBlock, mask: np.ndarray) -> MetricBlock:
        chosen = np.flatnonzero(mask)
        panels = _error_panels(chosen, predicted, actual, base, dates, tickers)
        test = paired_loss_test(*panels, alternative="greater")
        figures = ScoredFigures(
            samples=len(chosen),
            sessions=len({dates[i] for i in chosen}),
            served_model_share=float(np.mean(sources[chosen] == "model")) if len(chosen) else None,
            p_worse=float(test.p_value),
        )
        return replace(block, scored=figures)

    return replace(
        result,
        tickers={t: scored(block, ticker_array == t) for t, block in result.tickers.items()},
        average=scored(result.average, np.ones(len(items), dtype=bool)),
    )


QUANTILE_COLUMNS = ("q025", "q10", "q50", "q90", "q975")


def _columns(items: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[date], np.ndarray, np.ndarray]:
    return (
        [str(r["ticker"]) for r in items],
        [r["target_date"] for r in items],
        np.array([float(r["actual_close"]) for r in items]),
        np.array([float(r["base_close"]) for r in items]),
    )


def _served_quantiles(items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.array([[_num(r.get(c)) for c in QUANTILE_COLUMNS] for r in items])


def stored_candidates(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """{candidate: five close quantiles} a scored prediction recorded. Rows stored before the forecaster table
    hold the baselines and the network's ("model") quantiles apart."""
    detail = detail or {}
    if "candidates" in detail:
        return dict(detail["candidates"] or {})
    found = dict(detail.get("baselines") or {})
    network = (detail.get("model") or {}).get("quantiles")
    if network is not None:
        found["network"] = network
    return found


def _candidate_closes(items: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for i, row in enumerate(items):
        for name, found in stored_candidates(row.get("detail")).items():
            if found is not None and len(found) == 5:
                if name not in out:
                    out[name] = np.full((len(items), 5), np.nan)
                out[name][i] = [_num(v) for v in found]
    return {name: values for name, values in out.items() if np.isfinite(values).any()}


def candidate_loss_panels(
    rows: Sequence[Mapping[str, Any]], metric: str
) -> tuple[dict[str, np.ndarray], list[date]]:
    """Each candidate's (sessions, tickers) panel of `metric` losses over scored rows, and the sessions."""
    items = [_as_mapping(row) for row in rows]
    return _loss_panels(items, metric, served=False), sorted({r["target_date"] for r in items})


SERVED = "served"
"""The name of what was served among the loss panels of `interval_loss_panels`."""


def interval_loss_panels(rows: Sequence[Mapping[str, Any]], metric: str) -> dict[str, np.ndarray]:
    """(sessions, tickers) panels of an interval `metric`'s losses of every recorded candidate and of the
    served quantiles (`SERVED`), on one session and ticker order."""
    return _loss_panels([_as_mapping(row) for row in rows], metric, served=True)


def _loss_panels(items: Sequence[Mapping[str, Any]], metric: str, *, served: bool) -> dict[str, np.ndarray]:
    if not items:
        return {}
    tickers, dates, actual, base = _columns(items)
    closes = _candidate_closes(items) | ({SERVED: _served_quantiles(items)} if served else {})
    panels: dict[str, np.ndarray] = {}
    for name, values in closes.items():
        losses = loss_series(metric, predicted=base, actual=actual, base=base, quantiles=values)
        panels[name] = panel_of(losses, dates, tickers)[0]
    return panels


def skills_against(rows: Sequence[Mapping[str, Any]], reference: str) -> dict[str, dict[str, float | None]]:
    """{name: {interval loss: skill}} of every candidate and the served forecast against `reference`, each on
    the rows where both have a forecast."""
    out: dict[str, dict[str, float | None]] = {}
    for metric in INTERVAL_LOSSES:
        panels = interval_loss_panels(rows, metric)
        against = panels.get(reference)
        for name, panel in panels.items():
            shared = np.isfinite(panel) & (np.isfinite(against) if against is not None else False)
            out.setdefault(name, {})[metric] = (
                skill(float(panel[shared].mean()), float(against[shared].mean()))
                if against is not None and shared.any()
                else None
            )
    return out


def brier_panels(rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """Each P(up) candidate's (sessions, tickers) panel of Brier scores over scored rows (the base rate among
    them), from each row's `detail["p_up"]`."""
    items = [_as_mapping(row) for row in rows]
    names = sorted({name for r in items for name in ((r.get("detail") or {}).get("p_up") or {})})
    tickers, dates, actual, base = _columns(items)
    panels = {}
    for name in names:
        p_up = np.array([_num(_recorded_p_up(r, name)) for r in items])
        panels[name] = panel_of(brier_scores(p_up, actual=actual, base=base), dates, tickers)[0]
    return panels


def _recorded_p_up(row: Mapping[str, Any], name: str | None) -> Any:
    return ((row.get("detail") or {}).get("p_up") or {}).get(name) if name else None


def p_up_figures(rows: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """The served P(up)'s mean Brier score next to the base rate's on the same rows, and its skill."""
    items = [_as_mapping(row) for row in rows]
    _tickers, _dates, actual, base = _columns(items)
    served = np.array([_num(_recorded_p_up(r, (r.get("detail") or {}).get("p_up_source"))) for r in items])
    rate = np.array([_num(_recorded_p_up(r, "base_rate")) for r in items])
    both = np.isfinite(served) & np.isfinite(rate)
    if not both.any():
        return {"brier": None, "brier_base": None, "skill": None}
    brier, brier_base = (
        float(np.mean(brier_scores(p_up[both], actual=actual[both], base=base[both])))
        for p_up in (served, rate)
    )
    return {"brier": brier, "brier_base": brier_base, "skill": skill(brier, brier_base)}


# The interval scores of `intervals.interval_metrics`, without its count.
INTERVAL_FIGURES = tuple(key for key in INTERVAL_METRIC_KEYS if key != "n")


def block_figures(block: MetricBlock) -> dict[str, Any]:
    """One `summarize_scored` block as the flat figures backtest shows."""
    intervals = block.intervals.to_json() if block.intervals is not None else {}
    scored = block.scored or ScoredFigures(samples=0, sessions=0, served_model_share=None, p_worse=None)
    return {
        "samples": scored.samples,
        "sessions": scored.sessions,
        "mae": block.model.mae,
        "naive_mae": block.naive.mae,
        "mape": block.model.mape,
        "naive_mape": block.naive.mape,
        "direction_accuracy": block.model.direction_accuracy,
        "skill": block.skill,
        "skill_low": block.skill_low,
        "skill_high": block.skill_high,
        "p_worse": scored.p_worse,
        **{name: intervals.get(name) for name in INTERVAL_FIGURES},
        "intervals_n": int(intervals.get("n") or 0),
        "served_model_share": scored.served_model_share,
    }


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def _as_mapping(row: Any) -> Mapping[str, Any]:
    if isinstance(row, Mapping):
        return row
    mapping = getattr(row, "_mapping", None)
    if mapping is not None:
        return dict(mapping)
    return {name: getattr(row, name) for name in dir(row) if not name.startswith("_")}


def flat_figures(block: MetricBlock) -> dict[str, float]:
    """One block's defined figures as flat `name: value` pairs: `mae`, `naive_mae`, `coverage_95`,
    `garch_winkler_95` (a baseline's)."""
    plain = block.to_json()
    values: dict[str, Any] = {}
    for name in plain["model"]:
        values |= {name: plain["model"][name], f"naive_{name}": plain["naive"][name]}
    values |= {extra: plain[extra] for extra in ("skill", "skill_low", "skill_high", "up_fraction")}
    groups = {"": plain["intervals"]} | {f"{name}_": figures for name, figures in plain["baselines"].items()}
    for label, figures in groups.items():
        values |= {f"{label}{name}": value for name, value in (figures or {}).items() if name != "n"}
    return {name: float(value) for name, value in values.items() if value is not None}


def flatten(metrics: Evaluation) -> dict[str, float]:
    """`flat_figures` of the average and of each ticker for a metrics logger: `avg.mae`, `GOOG.coverage_95`;
    tickers keep only letters, digits, `_-.` (MLflow refuses `^`)."""
    blocks = [("avg", metrics.average)] + [
        ("".join(c for c in ticker if c.isalnum() or c in "_-.") or "ticker", block)
        for ticker, block in metrics.tickers.items()
    ]
    return {
        f"{prefix}.{name}": value for prefix, block in blocks for name, value in flat_figures(block).items()
    }
