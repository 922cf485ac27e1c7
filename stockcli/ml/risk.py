"""Risk figures (Value at Risk, Expected Shortfall) of a long position from forecast quantiles, and their
backtests (Kupiec, Christoffersen, the Basel traffic light, Acerbi–Székely's Z2), all through
`risk_backtest` and its one JSON shape.

Losses are positive simple returns, loss = 1 - exp(log return). ES_a is the mean loss over the tail
(0, 1 - a), a quadrature over graded tail cells (`_tail_grid`).
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
"""Tail probability of each VaR / ES level in percent: VaR_95 is the loss of the 5% quantile."""

ES_TEST_TAIL = 0.025
"""The ES tail `acerbi_szekely_z2` tests: 97.5%, the Basel FRTB level (at 99% a 250-session window holds 2.5
exceptions on average, too few to test their size)."""

_GRADED_CELLS = 20
_GRADING_POWER = 2
_EVEN_CELLS = ((0.01, 0.025, 4), (0.025, 0.05, 4))


def _tail_grid() -> tuple[np.ndarray, np.ndarray]:
    """Cell edges (0 .. 0.05) and nodes of the tail quadrature.

    The quantile function is singular at 0 (q(u) ~ -u^(-1/nu) for a t): 240 equal midpoint slices of (0, 0.01)
    give a 1e-3 relative ES error on a t(5), 20 cells graded as u = 0.01 s^2 do too. Beyond 0.01, 4 equal
    cells per segment suffice. Every ES level is a cell edge.
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
"""The 31 ascending levels at which log-return quantiles are read for risk: the quadrature nodes plus 0.01,
0.025 and 0.05; the column order of every "tail quantile" matrix here."""

_NODE_COLUMNS = np.searchsorted(TAIL_LEVELS, _CELL_NODES)
_LEVEL_COLUMN = {tail: TAIL_LEVELS.index(tail) for tail in (0.01, ES_TEST_TAIL, 0.05)}

RISK_KEYS: tuple[str, ...] = ("var_95", "var_99", "es_95", "es_99")

MIN_SESSIONS = 10
"""Below this many (non-overlapping) forecasts a backtest gives counts but no p-value or zone."""

ES_SIMULATIONS = 2000

Zone = Literal["green", "yellow", "red"]
BASEL_YELLOW = 0.95
BASEL_RED = 0.9999
"""Basel (1996) traffic light: yellow from P(X <= exceptions) >= 95%, red from 99.99%."""


@dataclass(frozen=True)
class RiskFigures:
    """VaR and ES at 95% and 99% per forecast row, losses as positive simple returns (NaN where a row is
    incomplete; a negative VaR, a gain at the 5% quantile, is kept)."""

    var_95: np.ndarray
    var_99: np.ndarray
    es_95: np.ndarray
    es_99: np.ndarray

    def row(self, index: int) -> dict[str, float | None]:
        """The figures of one forecast under `RISK_KEYS`; None where missing."""
        values = {key: float(getattr(self, key)[index]) for key in RISK_KEYS}
        return {key: value if math.isfinite(value) else None for key, value in values.items()}


def risk_figures(tail_quantiles: np.ndarray) -> RiskFigures:
    """VaR and ES at 95% and 99% from log-return quantiles at `TAIL_LEVELS` ((n, 31) or (31,)), crossing
    quantiles rearranged first. ES averages the simple loss, not the log return."""
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


@dataclass(frozen=True)
class LikelihoodRatio:
    """A likelihood-ratio statistic and its chi-square p-value with `df` degrees of freedom."""

    statistic: float
    p_value: float
    df: int


def kupiec_pof(exceptions: int, n: int, p: float) -> LikelihoodRatio:
    """Kupiec's (1995) two-sided proportion-of-failures test of `exceptions` in `n` forecasts at exception
    probability `p` (0 log 0 = 0, so 0 and n exceptions give finite statistics)."""
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
    """Christoffersen (1998): independence of exceptions (1 df) and conditional coverage (2 df); `transitions`
    are the counts (n00, n01, n10, n11) of consecutive pairs."""

    independence: LikelihoodRatio
    conditional_coverage: LikelihoodRatio
    transitions: tuple[int, int, int, int]


def christoffersen(hits: Sequence[bool] | np.ndarray, p: float) -> ChristoffersenTest:
    """Christoffersen's (1998) Markov test that an exception today does not make one tomorrow more likely, and
    the conditional-coverage test LR_cc = LR_pof + LR_ind (2 df).

    `hits`: the exceptions in time order, one per independent forecast. LR_ind = 0 without exceptions; LR_pof
    is Kupiec's on all n forecasts, as in Christoffersen (1998) and Jorion.
    """
    from scipy.special import xlogy
    from scipy.stats import chi2

    sequence = np.asarray(hits, dtype=bool).reshape(-1)
    if sequence.size < 2:
        raise InputDataError(f"Christoffersen's test needs at least 2 forecasts, got {sequence.size}.")
    n00, n01, n10, n11 = (int(count) for count in np.bincount(2 * sequence[:-1] + sequence[1:], minlength=4))
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
    """The Basel (1996) traffic light of `exceptions` in `n` forecasts of a VaR with tail `p`, from P(X <=
    exceptions), X ~ Binomial(n, p): for n = 250, p = 0.01 green up to 4, red from 10."""
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


@dataclass(frozen=True)
class Z2Test:
    """Acerbi–Székely's Z2 (0 under H0, negative when ES is underestimated), its one-sided simulated p-value
    and the exceptions beyond the tested VaR."""

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

    Z2 = sum_t X_t I_t / (T alpha ES_t) + 1, X_t = exp(r_t) - 1, I_t = 1 when r_t fell below the VaR;
    one-sided p = (1 + #{Z2* <= Z2}) / (1 + M). The null is simulated (seeded) by inverse-transform draws
    through each session's tail cells, so the forecasts must be independent (use a non-overlapping subsample
    for multi-session horizons).
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
    """The (draw, session, U) of every U < alpha among simulations x sessions iid uniforms, drawn at geometric
    gaps rather than by filtering a full matrix (5x faster for 2000 x 250)."""
    trials = simulations * sessions
    expected = trials * alpha
    gaps = rng.geometric(alpha, size=int(expected + 8 * math.sqrt(expected) + 16))
    positions = np.cumsum(gaps) - 1
    while positions[-1] < trials:  # Practically never: 8 standard deviations of margin.
        more = np.cumsum(rng.geometric(alpha, size=max(16, int(expected // 8)))) + positions[-1]
        positions = np.concatenate([positions, more])
    positions = positions[positions < trials]
    return positions // sessions, positions % sessions, alpha * rng.random(positions.size)


def non_overlapping(base_sessions: Sequence[int] | np.ndarray, horizon: int) -> np.ndarray:
    """Indices (ascending) of the forecasts a horizon-h backtest uses: the newest, then back, each one at
    least `horizon` base sessions before the last chosen.

    `base_sessions` are positions in the exchange calendar. Windows less than h sessions apart share returns,
    so their exceptions would be dependent and the binomial and chi-square laws would not hold.
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
    """The risk backtest of one ticker and horizon over its non-overlapping forecasts: exceptions of the 95%
    and 99% VaR, Kupiec's p-values, Christoffersen's (99%), the Basel zone of the 99% VaR and Z2 of the
    97.5% ES. p-values and zone are None below `MIN_SESSIONS` forecasts."""

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


def risk_backtest(
    realized_log_returns: np.ndarray,
    tail_quantiles: np.ndarray,
    horizon: int,
    *,
    base_sessions: Sequence[int] | np.ndarray | None = None,
    es_test: bool = True,
) -> RiskBacktest:
    """Every risk test of one ticker and horizon (without `es_test`, Z2 is left out).

    Row i: the h-session log return after base session i and its forecast at `TAIL_LEVELS`, in base-session
    order. Rows with a missing value are dropped, then the tests run on the `non_overlapping` subsample
    (`base_sessions` consecutive by default).
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
