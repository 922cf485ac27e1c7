"""Which interval candidate to serve: each challenger against the incumbent, family-corrected.

With many candidates the luckiest beats the incumbent by chance alone, so each challenger is tested against
the incumbent (`[forecasters] incumbent`, the blend by default) by the one-sided Diebold-Mariano test of `stats.paired_loss_test`, and
the family-wise error rate is controlled: by default a fixed sequence in `[forecasters] test_order` (chosen on
the sample's validation years 2008-2011, best skill first), or Holm's step-down with an empty order. The
lowest-loss challenger that passes is served, otherwise the incumbent. The pooled choice ("*") is made first
on every ticker's sessions; each ticker is then tested against it, since one ticker's year rarely separates
candidates a few percent apart.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

BASE_RATE = "base_rate"
"""The incumbent of P(up): the up-share of the training dates (its naive forecast)."""


@dataclass(frozen=True)
class IntervalChoice:
    """The decision for one ticker (or the pooled "*"): `p_value` is the served challenger's adjusted p-value,
    or with the incumbent kept the smallest among the challengers; `skill` the served source's relative
    improvement over the incumbent (0 for the incumbent itself)."""

    source: str
    p_value: float | None
    skill: float | None
    p_values: dict[str, float] = field(default_factory=dict)  # every challenger's adjusted p-value
    n_sessions: int = 0


def ticker_incumbent(pooled: IntervalChoice | str | None, incumbent: str) -> str:
    """What a ticker's challengers are tested against: the pooled choice, else the configured incumbent."""
    source = pooled.source if isinstance(pooled, IntervalChoice) else pooled
    return source or incumbent


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values by the same names: the k-th smallest times (m - k + 1), made non-decreasing and
    capped at 1. statsmodels' `multipletests` gives the same numbers (a test holds them equal) at ~50 ms a
    call, ~50 s for a promotion over 500 tickers."""
    names = sorted(p_values, key=lambda name: p_values[name])
    return _running_max(p_values, names, [len(names) - k for k in range(len(names))])


def fixed_sequence(p_values: Mapping[str, float], order: Sequence[str]) -> dict[str, float]:
    """Adjusted p-values of a fixed-sequence procedure (Maurer, Hothorn & Lehmacher 1995): the running maximum
    along `order` (names not in it follow as given). It controls the family-wise error rate whatever the
    dependence, and a name added at the end cannot change the decisions before it."""
    sequence = [name for name in order if name in p_values]
    sequence += [name for name in p_values if name not in sequence]
    return _running_max(p_values, sequence, [1] * len(sequence))


def _running_max(p_values: Mapping[str, float], sequence: list[str], factors: list[int]) -> dict[str, float]:
    """Each p-value times its factor, capped at 1, made non-decreasing along `sequence`."""
    adjusted: dict[str, float] = {}
    running = 0.0
    for name, factor in zip(sequence, factors, strict=True):
        running = max(running, min(1.0, factor * float(p_values[name])))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


def choose_interval_source(
    panels: Mapping[str, np.ndarray],
    *,
    incumbent: str,
    alpha: float,
    order: Sequence[str] = (),
    horizon: int = 1,
) -> IntervalChoice:
    """Serve the best challenger that beats `incumbent` after the family correction (`fixed_sequence` of
    `order`, or Holm's without one), else the incumbent.

    `panels` is {candidate: (sessions, tickers) losses} on the same rows, NaN where missing. Without the
    incumbent's losses nothing is tested and the incumbent is kept: a challenger is served only on evidence.
    Losses of `horizon`-session forecasts overlap: the tests take it into account (`paired_loss_test`).
    """
    from stockcli.ml.stats import paired_loss_test

    present = {name: panel for name, panel in panels.items() if np.isfinite(panel).any()}
    if incumbent not in present:
        return IntervalChoice(source=incumbent, p_value=None, skill=None)
    base = present[incumbent]
    tests = {
        name: paired_loss_test(panel, base, alternative="less", horizon=horizon)
        for name, panel in present.items()
        if name != incumbent
    }
    raw = {name: float(test.p_value) for name, test in tests.items()}
    adjusted = fixed_sequence(raw, order) if order else holm(raw)
    winners = [
        name
        for name, test in tests.items()
        if adjusted[name] < alpha and (test.relative_improvement or 0.0) > 0
    ]
    sessions = int(np.isfinite(base).any(axis=1).sum())
    if not winners:
        closest = min(adjusted.values()) if adjusted else None
        return IntervalChoice(incumbent, closest, 0.0, adjusted, sessions)
    best = max(winners, key=lambda name: tests[name].relative_improvement or 0.0)
    return IntervalChoice(best, adjusted[best], tests[best].relative_improvement, adjusted, sessions)
