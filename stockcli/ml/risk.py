"""Risk figures (Value at Risk, Expected Shortfall) from forecast quantiles, and their backtests.

One definition of each risk rule (design notes, core idea 13), for a LONG position over a horizon
of h sessions; losses are positive simple returns, loss = 1 - exp(log return). VaR is a quantile at
one of `TAIL_LEVELS`; ES_a = (1 / (1 - a)) * integral of the loss quantile over the tail (0, 1 - a),
a quadrature over a graded grid of tail cells (`_tail_grid`). The backtests (Kupiec, Christoffersen,
the Basel traffic light, Acerbi–Székely's Z2) run on the `non_overlapping` subsample, all through
`risk_backtest` and its one JSON shape. Pure functions; scipy is imported where it is needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml.intervals import sort_quantiles

VAR_TAILS: dict[int, float] = {95: 0.05, 99: 0.01}
"""Tail probability of each VaR / ES confidence level in percent: VaR_95 is the loss of the 5% quantile."""

ES_TEST_TAIL = 0.025
"""Tail of the Expected Shortfall that `acerbi_szekely_z2` tests: ES at 97.5%, the Basel FRTB level.
At 99% a 250-session window holds 2.5 exceptions on average, too few for a test of their size; at
97.5% it holds 6.25, and this tail lies between the two served ES levels."""

_GRADED_CELLS = 20
"""Cells of (0, 0.01), graded as 0.01 * (i / 20)^2: the quantile function is singular at 0."""

_GRADING_POWER = 2
_EVEN_CELLS = ((0.01, 0.025, 4), (0.025, 0.05, 4))
"""Equal cells (from, to, count) of the smooth part of the tail."""


def _tail_grid() -> tuple[np.ndarray, np.ndarray]:
    """Cell edges (0 .. 0.05) and nodes of the tail quadrature.

    A midpoint rule on equal slices of (0, a) converges slowly where the quantile function goes to
    -infinity (q(u) ~ -u^(-1/nu) for a Student t): 240 equal slices of (0, 0.01) are needed for a
    1e-3 relative ES error on a t(5). Cells graded as u = 0.01 s^2 (midpoint in s) reach it with
    20; beyond 0.01 the quantile function is smooth and 4 equal cells per segment suffice. Every
    ES level is a cell edge, so ES_a sums whole cells (mass-weighted node values).
    """
    steps = np.arange(_GRADED_CELLS + 1) / _GRADED_CELLS
    edges = [0.01 * steps**_GRADING_POWER]
    nodes = [0.01 * ((steps[:-1] + steps[1:]) / 2) ** _GRADING_POWER]
    for start, stop, count in _EVEN_CELLS:
        even = np.linspace(start, stop, count + 1)
        edges.append(even[1:])
        nodes.append((even[:-1] + even[1:]) / 2)
    return np.concatenate(edges), np.concatenate(nodes)


_CELL_EDGES, _CELL_NODES = _tail_grid()
_CELL_MASS = np.diff(_CELL_EDGES)

TAIL_LEVELS: tuple[float, ...] = tuple(
    float(level) for level in np.sort(np.concatenate([_CELL_NODES, [0.01, ES_TEST_TAIL, 0.05]]))
)
"""Levels (ascending, 31 of them) at which a forecaster's quantiles of the log return are read for
risk: the quadrature nodes of the tail (0, 0.05) plus the VaR levels 0.01, 0.025 and 0.05. Every
(n, len(TAIL_LEVELS)) "tail quantile" matrix in this module has its columns in this order."""

_NODE_COLUMNS = np.searchsorted(TAIL_LEVELS, _CELL_NODES)
_LEVEL_COLUMN = {tail: TAIL_LEVELS.index(tail) for tail in (0.01, ES_TEST_TAIL, 0.05)}

RISK_KEYS: tuple[str, ...] = ("var_95", "var_99", "es_95", "es_99")
"""The risk figures of one forecast (`RiskFigures.row`), losses as positive simple returns."""

MIN_SESSIONS = 10
"""With fewer (non-overlapping) forecasts than this a backtest reports counts but no p-value or
zone (the monitor's `min_samples` rule)."""

ES_SIMULATIONS = 2000
"""Draws of the Z2 statistic under H0 (the p-value's resolution is 1 / 2001)."""

Zone = Literal["green", "yellow", "red"]
BASEL_YELLOW = 0.95
BASEL_RED = 0.9999
"""Basel Committee (1996) traffic light: with x exceptions, yellow from P(X <= x) >= 95%, red from 99.99%."""


# --- figures ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RiskFigures:
    """VaR and ES at 95% and 99% of a long position, one value per forecast row (shape (n,)).

    Losses as positive simple returns (0.03 = 3% of the position); NaN where a row is incomplete.
    A negative VaR (the 5% quantile is a gain, e.g. a strong drift) is kept as it is.
    """

    var_95: np.ndarray
    var_99: np.ndarray
    es_95: np.ndarray
    es_99: np.ndarray

    def row(self, index: int) -> dict[str, float | None]:
        """The figures of one forecast under `RISK_KEYS`; None where missing."""
        values = {key: float(getattr(self, key)[index]) for key in RISK_KEYS}
        return {key: value if math.isfinite(value) else None for key, value in values.items()}


def risk_figures(tail_quantiles: np.ndarray) -> RiskFigures:
    """VaR and ES at 95% and 99% from log-return quantiles at `TAIL_LEVELS` ((n, 31) or (31,)).

    Crossing quantiles are rearranged first (`sort_quantiles`). ES averages the loss 1 - exp(q),
    not the log return, so it is the expected simple loss beyond VaR.
    """
    losses = -np.expm1(_tail_quantiles(tail_quantiles))
    return RiskFigures(
        var_95=losses[:, _LEVEL_COLUMN[VAR_TAILS[95]]],
        var_99=losses[:, _LEVEL_COLUMN[VAR_TAILS[99]]],
        es_95=_expected_shortfall(losses, VAR_TAILS[95]),
        es_99=_expected_shortfall(losses, VAR_TAILS[99]),
    )


def loss_price(base_close: float | np.ndarray, loss: float | np.ndarray) -> np.ndarray:
    """The close at which a long position from `base_close` has lost `loss` (a VaR or an ES)."""
    return np.asarray(base_close, dtype=np.float64) * (1.0 - np.asarray(loss, dtype=np.float64))


def _tail_quantiles(tail_quantiles: np.ndarray) -> np.ndarray:
    """The (n, len(TAIL_LEVELS)) quantile matrix, rows rearranged; InputDataError on a wrong shape."""
    quantiles = np.asarray(tail_quantiles, dtype=np.float64)
    if quantiles.ndim == 1:
        quantiles = quantiles[None, :]
    if quantiles.ndim != 2 or quantiles.shape[1] != len(TAIL_LEVELS):
        raise InputDataError(
            f"Tail quantiles must be (n, {len(TAIL_LEVELS)}) at TAIL_LEVELS, got shape {quantiles.shape}."
        )
    return sort_quantiles(quantiles)


def _expected_shortfall(losses: np.ndarray, tail: float) -> np.ndarray:
    """Mean loss over the tail (0, tail): mass-weighted losses of the cells below `tail`."""
    cells = _CELL_EDGES[1:] <= tail + 1e-12
    return losses[:, _NODE_COLUMNS[cells]] @ _CELL_MASS[cells] / tail


# --- coverage tests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LikelihoodRatio:
    """A likelihood-ratio statistic and its asymptotic chi-square p-value with `df` degrees of freedom."""

    statistic: float
    p_value: float
    df: int


def kupiec_pof(exceptions: int, n: int, p: float) -> LikelihoodRatio:
    """Kupiec's (1995) proportion-of-failures test: are `exceptions` in `n` forecasts consistent
    with an exception probability `p`? (two-sided; LR ~ chi-square(1) under H0; 0 log 0 = 0, so 0
    and n exceptions give finite statistics).
    """
    from scipy.special import xlogy
    from scipy.stats import chi2

    _check_counts(exceptions, n, p)
    observed = exceptions / n
    log_null = xlogy(n - exceptions, 1.0 - p) + xlogy(exceptions, p)
    log_alternative = xlogy(n - exceptions, 1.0 - observed) + xlogy(exceptions, observed)
    statistic = max(0.0, float(-2.0 * (log_null - log_alternative)))
    return LikelihoodRatio(statistic, float(chi2.sf(statistic, 1)), 1)


@dataclass(frozen=True)
class ChristoffersenTest:
    """Christoffersen (1998): independence of exceptions (1 df) and conditional coverage (2 df).

    `transitions` are the counts (n00, n01, n10, n11) of consecutive pairs, n_ij = i then j.
    """

    independence: LikelihoodRatio
    conditional_coverage: LikelihoodRatio
    transitions: tuple[int, int, int, int]


def christoffersen(hits: Sequence[bool] | np.ndarray, p: float) -> ChristoffersenTest:
    """Christoffersen's (1998) Markov test that an exception today does not make one tomorrow more
    likely, and his conditional-coverage test LR_cc = LR_pof + LR_ind (2 df).

    `hits` is the exception sequence in time order (one element per independent forecast). The
    independence test compares a first-order Markov chain (pi01 = P(hit | no hit before),
    pi11 = P(hit | hit before)) with a constant hit rate on the n - 1 transitions; 0 log 0 = 0, so
    no exception, or no two in a row, give finite statistics (LR_ind = 0 without any exception).
    LR_pof is Kupiec's on all n forecasts, as in Christoffersen (1998) and Jorion.
    """
    from scipy.special import xlogy
    from scipy.stats import chi2

    sequence = np.asarray(hits, dtype=bool).reshape(-1)
    if sequence.size < 2:
        raise InputDataError(f"Christoffersen's test needs at least 2 forecasts, got {sequence.size}.")
    before, after = sequence[:-1], sequence[1:]
    n00 = int(np.sum(~before & ~after))
    n01 = int(np.sum(~before & after))
    n10 = int(np.sum(before & ~after))
    n11 = int(np.sum(before & after))
    pi01 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi11 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    log_markov = xlogy(n00, 1 - pi01) + xlogy(n01, pi01) + xlogy(n10, 1 - pi11) + xlogy(n11, pi11)
    log_constant = xlogy(n00 + n10, 1 - pi) + xlogy(n01 + n11, pi)
    independence = max(0.0, float(-2.0 * (log_constant - log_markov)))
    conditional = kupiec_pof(int(sequence.sum()), int(sequence.size), p).statistic + independence
    return ChristoffersenTest(
        independence=LikelihoodRatio(independence, float(chi2.sf(independence, 1)), 1),
        conditional_coverage=LikelihoodRatio(conditional, float(chi2.sf(conditional, 2)), 2),
        transitions=(n00, n01, n10, n11),
    )


def basel_zone(exceptions: int, n: int, p: float = 0.01) -> Zone:
    """The Basel traffic light of `exceptions` in `n` forecasts of a VaR with tail `p`.

    The Basel Committee's (1996) rule on the cumulative binomial probability P(X <= exceptions),
    X ~ Binomial(n, p): green below 95%, yellow below 99.99%, red from there. For n = 250 and
    p = 0.01: green up to 4, yellow 5 to 9, red from 10. Other n scale by the same rule.
    """
    from scipy.stats import binom

    _check_counts(exceptions, n, p)
    cumulative = float(binom.cdf(exceptions, n, p))
    if cumulative < BASEL_YELLOW:
        return "green"
    return "yellow" if cumulative < BASEL_RED else "red"


def _check_counts(exceptions: int, n: int, p: float) -> None:
    if n < 1 or not 0 <= exceptions <= n:
        raise InputDataError(f"Need 0 <= exceptions <= n and n >= 1, got {exceptions} exceptions in {n}.")
    if not 0.0 < p < 1.0:
        raise InputDataError(f"The exception probability must be in (0, 1), got {p}.")


# --- Expected Shortfall --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Z2Test:
    """Acerbi–Székely's Z2: 0 in expectation under H0, negative when ES is underestimated.

    `p_value` is the one-sided simulated P(Z2 <= statistic | H0); `exceptions` the sessions
    beyond the VaR of the tested tail.
    """

    statistic: float
    p_value: float
    exceptions: int


def acerbi_szekely_z2(
    realized_log_returns: np.ndarray,
    tail_quantiles: np.ndarray,
    *,
    seed: int = 0,
) -> Z2Test:
    """Acerbi & Székely's (2014) test 2 of the 97.5% Expected Shortfall (`ES_TEST_TAIL`).

    Z2 = sum_t X_t I_t / (T alpha ES_t) + 1, with X_t = exp(r_t) - 1 the realized simple return,
    I_t = 1 when r_t fell below the forecast alpha-quantile (the VaR), ES_t the forecast ES > 0
    and T the number of forecasts. E[Z2] = 0 when every forecast distribution is right in its tail;
    ES underestimated gives Z2 < 0, so the test is one-sided: p = P(Z2 <= observed | H0).

    The null distribution is simulated (seeded, so deterministic): each draw takes, for every
    session, U ~ Uniform(0, 1) and, where U < alpha (only those draws matter), the forecast loss of
    the tail cell holding U (inverse-transform sampling through the quadrature of `TAIL_LEVELS`,
    whose mean is exactly ES_t). Assumes: the forecasts are independent across sessions (use a
    non-overlapping subsample for multi-session horizons) and each session's tail is the quantile
    function it was read from (a step function on the tail cells). p = (1 + #{Z2* <= Z2}) / (1 + M).
    """
    realized = np.asarray(realized_log_returns, dtype=np.float64).reshape(-1)
    quantiles = _tail_quantiles(tail_quantiles)
    losses = -np.expm1(quantiles)
    if losses.shape[0] != realized.size or realized.size == 0:
        raise InputDataError(f"{losses.shape[0]} forecasts for {realized.size} realized returns.")
    if not (np.isfinite(realized).all() and np.isfinite(losses).all()):
        raise InputDataError("The ES test needs complete forecasts and realized returns (drop NaN rows).")
    alpha = ES_TEST_TAIL
    shortfall = _expected_shortfall(losses, alpha)
    if not (shortfall > 0).all():
        raise InputDataError("The ES test needs a positive Expected Shortfall on every session.")
    sessions = realized.size
    hits = realized < quantiles[:, _LEVEL_COLUMN[alpha]]
    statistic = float(np.sum(np.expm1(realized[hits]) / shortfall[hits]) / (sessions * alpha) + 1.0)

    cells = np.flatnonzero(_CELL_EDGES[1:] <= alpha + 1e-12)
    cell_losses = losses[:, _NODE_COLUMNS[cells]]
    cell_upper_edges = _CELL_EDGES[1 : cells.size + 1]
    draw, session, tail_uniforms = _tail_draws(np.random.default_rng(seed), ES_SIMULATIONS, sessions, alpha)

    cell = np.minimum(np.searchsorted(cell_upper_edges, tail_uniforms, side="right"), cells.size - 1)
    scaled = -cell_losses[session, cell] / shortfall[session]
    simulated = np.bincount(draw, weights=scaled, minlength=ES_SIMULATIONS) / (sessions * alpha) + 1.0
    p_value = (1.0 + np.count_nonzero(simulated <= statistic + 1e-12)) / (1.0 + ES_SIMULATIONS)
    return Z2Test(statistic, float(p_value), int(hits.sum()))


def _tail_draws(
    rng: np.random.Generator, simulations: int, sessions: int, alpha: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The (draw, session, U) of every U < alpha among simulations x sessions iid uniforms.

    Drawn directly, not by filtering a full matrix (5x faster for 2000 x 250): successes of iid
    Bernoulli(alpha) trials are at geometric gaps, and U given U < alpha is Uniform(0, alpha).
    """
    trials = simulations * sessions
    expected = trials * alpha
    gaps = rng.geometric(alpha, size=int(expected + 8 * math.sqrt(expected) + 16))
    positions = np.cumsum(gaps) - 1
    while positions[-1] < trials:  # Practically never: 8 standard deviations of margin.
        more = np.cumsum(rng.geometric(alpha, size=max(16, int(expected // 8)))) + positions[-1]
        positions = np.concatenate([positions, more])
    positions = positions[positions < trials]
    return positions // sessions, positions % sessions, alpha * rng.random(positions.size)


# --- horizons and the one backtest ------------------------------------------------------------------------


def non_overlapping(base_sessions: Sequence[int] | np.ndarray, horizon: int) -> np.ndarray:
    """Indices (ascending) of the forecasts a horizon-h backtest uses: the newest, then going back,
    each next one whose base session is at least `horizon` sessions before the last one chosen.

    `base_sessions` are the forecasts' base sessions as increasing session numbers (positions in
    the exchange calendar, so a missing day counts as a session). Why: two h-session windows less
    than h sessions apart share returns, so their exceptions are dependent by construction; a
    correct VaR would show clustered exceptions and too-wide count dispersion, and the binomial
    and chi-square laws of these tests would not hold. Windows h or more sessions apart share none.
    With consecutive sessions this is every h-th base session, counted back from the newest (so
    the newest matured forecast always counts; the subsample's phase moves with it).
    """
    if horizon < 1:
        raise InputDataError(f"The horizon must be at least 1 session, got {horizon}.")
    sessions = np.asarray(base_sessions, dtype=np.int64).reshape(-1)
    if sessions.size > 1 and not (np.diff(sessions) > 0).all():
        raise InputDataError(
            "Base sessions must be strictly increasing (one forecast per session, in order)."
        )
    if horizon == 1:
        return np.arange(sessions.size)
    chosen: list[int] = []
    for index in range(sessions.size - 1, -1, -1):
        if not chosen or sessions[chosen[-1]] - sessions[index] >= horizon:
            chosen.append(index)
    return np.asarray(chosen[::-1], dtype=np.int64)


@dataclass(frozen=True)
class RiskBacktest:
    """The risk backtest of one ticker and horizon over its non-overlapping forecasts.

    `n` forecasts used; exceptions of the 95% and 99% VaR; `kupiec_p` (99%) and `kupiec_p_95`:
    Kupiec's POF p-values; `christoffersen_p`: independence of the 99% exceptions;
    `conditional_coverage_p`: Christoffersen's joint test (99%); `zone`: the Basel traffic light of
    the 99% VaR scaled to n; `es_z2` / `es_p`: Acerbi–Székely's Z2 of the 97.5% ES and its
    one-sided p-value. p-values and zone are None below `MIN_SESSIONS` forecasts.
    """

    n: int
    exceptions_95: int
    exceptions_99: int
    kupiec_p_95: float | None
    kupiec_p: float | None
    christoffersen_p: float | None
    conditional_coverage_p: float | None
    zone: Zone | None
    es_z2: float | None
    es_p: float | None

    def to_json(self) -> dict[str, float | int | str | None]:
        """The figures under `RISK_BACKTEST_KEYS` (`es_level` = 0.975, the ES level tested)."""
        return {**asdict(self), "es_level": 1.0 - ES_TEST_TAIL}


RISK_BACKTEST_KEYS: tuple[str, ...] = (*(item.name for item in fields(RiskBacktest)), "es_level")
"""The keys of `RiskBacktest.to_json`, the one shape of a risk backtest everywhere."""


def risk_backtest(
    realized_log_returns: np.ndarray,
    tail_quantiles: np.ndarray,
    horizon: int,
    *,
    base_sessions: Sequence[int] | np.ndarray | None = None,
    es_test: bool = True,
) -> RiskBacktest:
    """Every risk test of one ticker and horizon: counts, Kupiec, Christoffersen, Basel zone, Z2
    (without `es_test`, the simulated Z2 is left out: `es_z2` and `es_p` None).

    `realized_log_returns[i]` is the h-session log return that followed base session i and
    `tail_quantiles[i]` its forecast at `TAIL_LEVELS`, in base-session order (the caller picks the
    window, e.g. the last 250 scored sessions). Rows with a missing value are dropped, then the
    tests run on the `non_overlapping` subsample (`base_sessions`: session numbers, consecutive by
    default). An exception is a realized log return below the forecast quantile (the VaR).
    """
    realized = np.asarray(realized_log_returns, dtype=np.float64).reshape(-1)
    quantiles = _tail_quantiles(tail_quantiles)
    if quantiles.shape[0] != realized.size:
        raise InputDataError(f"{quantiles.shape[0]} forecasts for {realized.size} realized returns.")
    sessions = np.arange(realized.size) if base_sessions is None else np.asarray(base_sessions)
    if sessions.shape != realized.shape:
        raise InputDataError(f"{sessions.size} base sessions for {realized.size} realized returns.")
    complete = np.isfinite(realized) & np.isfinite(quantiles).all(axis=1)
    used = np.flatnonzero(complete)[non_overlapping(sessions[complete], horizon)]
    realized, quantiles = realized[used], quantiles[used]
    hits = {level: realized < quantiles[:, _LEVEL_COLUMN[tail]] for level, tail in VAR_TAILS.items()}
    exceptions = {level: int(hit.sum()) for level, hit in hits.items()}
    n = int(realized.size)
    if n < MIN_SESSIONS:
        return RiskBacktest(n, exceptions[95], exceptions[99], None, None, None, None, None, None, None)
    markov = christoffersen(hits[99], VAR_TAILS[99])
    z2: Z2Test | None = None
    if es_test and (_expected_shortfall(-np.expm1(quantiles), ES_TEST_TAIL) > 0).all():
        z2 = acerbi_szekely_z2(realized, quantiles)
    return RiskBacktest(
        n=n,
        exceptions_95=exceptions[95],
        exceptions_99=exceptions[99],
        kupiec_p_95=kupiec_pof(exceptions[95], n, VAR_TAILS[95]).p_value,
        kupiec_p=kupiec_pof(exceptions[99], n, VAR_TAILS[99]).p_value,
        christoffersen_p=markov.independence.p_value,
        conditional_coverage_p=markov.conditional_coverage.p_value,
        zone=basel_zone(exceptions[99], n, VAR_TAILS[99]),
        es_z2=None if z2 is None else z2.statistic,
        es_p=None if z2 is None else z2.p_value,
    )
