"""The statistics behind every decision: is a difference real, is a coverage plausible.

One definition of each test, for promotion, retrain triggers, the choice between the model and a baseline, and
the reports: Diebold–Mariano on a (sessions, tickers) loss panel, each ticker scaled so that an index does not
drown a $20 stock (`paired_loss_test`, `skill_interval`), and exact binomial coverage tests, alone or on a
panel whose misses cluster by session (`clustered_coverage_test`). Results are frozen dataclasses of plain
floats, never NaN, so they go straight into JSON.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from stockcli.errors import InputDataError

Alternative = Literal["less", "greater", "two-sided"]
ALTERNATIVES: tuple[Alternative, ...] = ("less", "greater", "two-sided")

CONFIDENCE = 0.95

MIN_OBSERVATIONS = 3
"""Fewer paired observations than this carry no evidence: p-value 1.0."""

MIN_PERIODS = 12
"""Non-overlapping h-session periods a test of h-session losses reads at least (`min_test_sessions`): on
fewer, the test of overlapping losses rejects a true null more than 7% of the time at 5% (MA(h - 1)
differentials: 6.5% at h = 5 on 60 sessions, 6.9% at h = 20 on 240, 14% at h = 20 on 60)."""


def min_test_sessions(horizon: int) -> int:
    """The fewest sessions of `horizon`-session losses a test reads (fewer: no test, p-value 1.0)."""
    return MIN_OBSERVATIONS if horizon <= 1 else MIN_PERIODS * horizon


@dataclass(frozen=True)
class DMResult:
    """A Diebold–Mariano test on the loss differential d = loss_a - loss_b: `mean_diff` < 0 means a
    had lower losses; `ci_low`/`ci_high` bound it (95%); `lag` is the HAC lag used."""

    n: int
    mean_diff: float
    statistic: float
    p_value: float
    ci_low: float
    ci_high: float
    lag: int


@dataclass(frozen=True)
class PairedTestResult(DMResult):
    """A Diebold–Mariano test on a scaled panel, plus a's relative improvement over b (0.05: a's losses are 5%
    lower) with its 95% interval, None when undefined; `n_sessions` = `n`."""

    relative_improvement: float | None
    improvement_low: float | None
    improvement_high: float | None
    n_sessions: int
    n_tickers: int


def default_lag(n: int) -> int:
    """Newey–West's rule-of-thumb truncation lag, floor(4 * (n / 100) ** (2 / 9)); 0 for n <= 1."""
    return math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)) if n > 1 else 0


def newey_west_variance(d: np.ndarray, lag: int | None = None, *, truncated: bool = False) -> float:
    """Long-run variance of a series, non-finite values dropped (Bartlett-kernel HAC, Newey & West 1987):
    gamma_0 + 2 sum_k (1 - k / (L + 1)) gamma_k, L = `lag` (default `default_lag(n)`, at most n - 1);
    `truncated`: every weight 1 (Diebold & Mariano's for an MA(L) differential); 0 where negative."""
    values = np.asarray(d, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    n = values.size
    if n < 2:
        return 0.0
    lag_used = _resolve_lag(n, lag)
    centered = values - values.mean()
    variance = float(centered @ centered) / n
    for k in range(1, lag_used + 1):
        weight = 1.0 if truncated else 1.0 - k / (lag_used + 1.0)
        variance += 2.0 * weight * float(centered[k:] @ centered[:-k]) / n
    return max(variance, 0.0)


def paired_loss_test(
    losses_a: np.ndarray,
    losses_b: np.ndarray,
    *,
    scale: np.ndarray | None = None,
    alternative: Alternative = "less",
    lag: int | None = None,
    horizon: int = 1,
) -> PairedTestResult:
    """Diebold–Mariano test of a against b on a (sessions, tickers) panel of losses, NaN where missing.

    Each ticker's column is divided by `scale[ticker]` (default: its mean loss of b where both exist), so each
    ticker weighs the same whatever its price; tickers without a finite positive scale are left out. The
    per-session means of a and b are differenced and tested (`_dm_on_differential`). A 1-D input is one
    ticker. `relative_improvement` = 1 - mean(a) / mean(b) of the scaled losses, its interval by the delta
    method with the denominator fixed, so it excludes 0 exactly when the DM interval does.
    """
    a, b = _as_panel("losses_a", losses_a), _as_panel("losses_b", losses_b)
    if a.shape != b.shape:
        raise InputDataError(f"Paired loss panels differ in shape: {a.shape} and {b.shape}.")
    both = np.isfinite(a) & np.isfinite(b)
    a, b = np.where(both, a, np.nan), np.where(both, b, np.nan)
    if scale is None:
        with np.errstate(invalid="ignore"):
            counts = both.sum(axis=0)
            column_scale = np.where(counts > 0, np.nansum(b, axis=0) / np.maximum(counts, 1), np.nan)
    else:
        column_scale = np.asarray(scale, dtype=np.float64).ravel()
        if column_scale.size != a.shape[1]:
            raise InputDataError(f"scale has {column_scale.size} values for {a.shape[1]} tickers.")
    usable_tickers = np.isfinite(column_scale) & (column_scale > 0) & both.any(axis=0)
    a, b = (x[:, usable_tickers] / column_scale[usable_tickers] for x in (a, b))
    per_session_count = np.isfinite(a).sum(axis=1)
    sessions = per_session_count > 0
    session_a, session_b = (np.nansum(x[sessions], axis=1) / per_session_count[sessions] for x in (a, b))

    dm = _dm_on_differential(session_a - session_b, alternative=alternative, lag=lag, horizon=horizon)
    mean_b = float(session_b.mean()) if session_b.size else 0.0
    improvement: tuple[float | None, ...] = (None, None, None)
    if dm.n > 0 and mean_b > 0:
        # (+ 0.0 turns a -0.0 of identical losses into 0.0: no sign where there is no difference)
        improvement = tuple(-value / mean_b + 0.0 for value in (dm.mean_diff, dm.ci_high, dm.ci_low))
    return PairedTestResult(
        **asdict(dm),
        relative_improvement=improvement[0],
        improvement_low=improvement[1],
        improvement_high=improvement[2],
        n_sessions=dm.n,
        n_tickers=int(usable_tickers.sum()),
    )


def skill_interval(
    model_abs_errors: np.ndarray, naive_abs_errors: np.ndarray
) -> tuple[float | None, float | None, float | None]:
    """Skill = 1 - MAE_model / MAE_naive with its 95% interval, `(skill, low, high)`, from `paired_loss_test`
    on absolute errors; None when undefined (no usable day, or a naive MAE of 0)."""
    result = paired_loss_test(model_abs_errors, naive_abs_errors, alternative="two-sided")
    return result.relative_improvement, result.improvement_low, result.improvement_high


def binomial_coverage_test(misses: int, n: int, nominal_coverage: float) -> float:
    """Two-sided exact binomial p-value of `misses` misses in `n` trials at miss rate 1 - nominal; 1.0 for `n
    == 0`."""
    if n < 0 or not 0 <= misses <= n:
        raise InputDataError(f"Need 0 <= misses <= n, got misses={misses}, n={n}.")
    if not 0.0 < nominal_coverage < 1.0:
        raise InputDataError(f"Nominal coverage must lie strictly between 0 and 1, got {nominal_coverage}.")
    if n == 0:
        return 1.0
    return _binomial_p_value(int(misses), int(n), float(nominal_coverage))


@functools.lru_cache(maxsize=4096)
def _binomial_p_value(misses: int, n: int, nominal_coverage: float) -> float:
    # Cached: a monitor window asks the same few (misses, n) of every ticker, and each scipy call
    # costs ~0.7 ms (500 tickers x 2 levels: 0.8 s of a daily run, ~30 distinct questions).
    from scipy.stats import binomtest

    return float(min(1.0, binomtest(misses, n, 1.0 - nominal_coverage).pvalue))


@dataclass(frozen=True)
class CoverageTest:
    """A coverage test on a panel of misses: the p-value and what it was computed from."""

    p_value: float
    n: int  # forecasts with an interval
    misses: int
    effective_n: float  # n / design_effect: as many independent forecasts as the panel is worth
    design_effect: float  # 1 + (cluster size - 1) x intra-session correlation of the misses


def clustered_coverage_test(misses: np.ndarray, nominal_coverage: float) -> CoverageTest:
    """Is the coverage of a (sessions, tickers) panel of misses (1.0 miss, 0.0 hit, NaN none) consistent with
    `nominal_coverage`? Two-sided.

    A market shock sends every close outside its interval at once, so sessions are clusters: the exact
    binomial test runs on n / design effect trials, the design effect 1 + (n0 - 1) rho (Kish 1965) with rho
    the intra-session correlation by one-way ANOVA. One ticker gives `binomial_coverage_test`. Serial
    correlation within a ticker is not corrected (adaptive conformal inference keeps it small).
    """
    panel = np.asarray(misses, dtype=np.float64)
    if panel.ndim != 2:
        raise InputDataError(f"misses must be a (sessions, tickers) panel, got shape {panel.shape}.")
    known = np.isfinite(panel)
    if not np.all((panel[known] == 0.0) | (panel[known] == 1.0)):
        raise InputDataError("misses must be 1.0 (miss), 0.0 (hit) or NaN (no interval).")
    total = int(known.sum())
    missed = int(np.nansum(panel))
    design = _design_effect(panel, known)
    p_value = 1.0
    if total:
        trials = max(1, round(total / design))
        p_value = binomial_coverage_test(min(trials, round(missed / design)), trials, nominal_coverage)
    return CoverageTest(p_value, n=total, misses=missed, effective_n=total / design, design_effect=design)


def _design_effect(panel: np.ndarray, known: np.ndarray) -> float:
    """1 + (n0 - 1) rho for clusters = rows of `panel`; 1.0 when rho cannot be estimated."""
    if panel.shape[1] <= 1:  # one ticker: clusters of one
        return 1.0
    rows = [panel[i, known[i]] for i in range(panel.shape[0]) if known[i].any()]
    groups = len(rows)
    total = sum(len(r) for r in rows)
    if groups < 2 or total <= groups:
        return 1.0
    grand = float(np.mean(np.concatenate(rows)))
    between = sum(len(r) * (float(r.mean()) - grand) ** 2 for r in rows) / (groups - 1)
    within = sum(float(((r - r.mean()) ** 2).sum()) for r in rows) / (total - groups)
    n0 = (total - sum(len(r) ** 2 for r in rows) / total) / (groups - 1)
    denominator = between + (n0 - 1.0) * within
    if denominator <= 0.0:  # no miss, or every cell the same: nothing to correct
        return 1.0
    rho = min(1.0, max(0.0, (between - within) / denominator))
    return 1.0 + (n0 - 1.0) * rho


def _dm_on_differential(
    differential: np.ndarray, *, alternative: Alternative, lag: int | None, horizon: int = 1
) -> DMResult:
    """Diebold–Mariano test of mean(d) = 0 on the loss differential d (NaN dropped).

    mean(d) / sqrt(LRV / n) (Newey–West LRV) with the Harvey–Leybourne–Newbold factor, against a t with n - 1
    df; the 95% interval of mean(d) uses the same standard error. "less": H1 mean(d) < 0 (a is better). Fewer
    values than `min_test_sessions` or zero variance give statistic 0, p 1. Losses of `horizon`-session forecasts made on
    consecutive sessions overlap (an MA(h - 1)): without a `lag`, their long-run variance is the
    unweighted sum of h - 1 autocovariances, as Harvey, Leybourne & Newbold (1997) test them. On MA(19)
    differentials of 120 sessions that rejects a true null 16% of the time at 5% (Bartlett's at lag 19:
    20%; the next session's default lag: 40%), of 250 sessions 7% (33%); hence `MIN_PERIODS`.
    """
    if alternative not in ALTERNATIVES:
        raise InputDataError(f"Unknown alternative {alternative!r}; use one of {', '.join(ALTERNATIVES)}.")
    differential = differential[np.isfinite(differential)]
    n = int(differential.size)
    mean_diff = float(differential.mean()) if n else 0.0
    overlapping = horizon > 1 and lag is None
    lag_used = _resolve_lag(n, horizon - 1 if overlapping else lag) if n else 0
    long_run_variance = newey_west_variance(differential, lag_used, truncated=overlapping)
    if overlapping and long_run_variance == 0.0:  # the truncated sum can be negative: Bartlett's then
        long_run_variance = newey_west_variance(differential, lag_used)
    # HLN: the statistic times sqrt((n + 1 - 2h + h (h - 1) / n) / n), i.e. the standard error below.
    effective = n + 1 - 2 * horizon + horizon * (horizon - 1) / n if n else 0.0
    # Zero variance relative to the data's size (not only an exact 0.0, which rounding rarely gives).
    spread = float(np.max(np.abs(differential))) if n else 0.0
    statistic, p_value, ci_low, ci_high = 0.0, 1.0, mean_diff, mean_diff
    too_few = n < (min_test_sessions(horizon) if overlapping else MIN_OBSERVATIONS)
    if not (too_few or effective <= 0 or long_run_variance <= (1e-14 * spread) ** 2):
        from scipy.stats import t as student_t

        standard_error = math.sqrt(long_run_variance / effective)
        statistic = mean_diff / standard_error
        degrees_of_freedom = n - 1
        if alternative == "less":
            p_value = float(student_t.cdf(statistic, degrees_of_freedom))
        elif alternative == "greater":
            p_value = float(student_t.sf(statistic, degrees_of_freedom))
        else:
            p_value = float(min(1.0, 2.0 * student_t.sf(abs(statistic), degrees_of_freedom)))
        half_width = float(student_t.ppf(0.5 + CONFIDENCE / 2.0, degrees_of_freedom)) * standard_error
        ci_low, ci_high = mean_diff - half_width, mean_diff + half_width
    return DMResult(n, mean_diff, float(statistic), p_value, ci_low, ci_high, lag_used)


def _resolve_lag(n: int, lag: int | None) -> int:
    if lag is None:
        lag = default_lag(n)
    if lag < 0:
        raise InputDataError(f"HAC lag must be 0 or more, got {lag}.")
    return min(int(lag), max(n - 1, 0))


def _as_panel(name: str, values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise InputDataError(f"{name} must be (sessions, tickers), got shape {array.shape}.")
    return array
