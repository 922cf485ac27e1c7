"""Which interval candidate to serve: each challenger against the incumbent, family-corrected.

With many candidates, the luckiest of them beats the incumbent on any window by chance alone; the
more candidates, the surer that is. So every challenger is compared with the incumbent (GARCH(1,1)-t
by default) by the one-sided Diebold-Mariano test of `stats.paired_loss_test` on the same sessions,
and the family of those tests is controlled, so that adding candidates can never raise the chance of
serving a challenger that is not really better (strong control of the family-wise error rate, no
assumption on how the tests depend on each other). The default correction is a fixed sequence:
challengers are tested in `[forecasters] test_order`, each at the full alpha while every earlier one
was rejected. The order was chosen on the validation years 2008-2011 of the sample (best skill
against GARCH first), so the power goes where the evidence was; Holm's step-down correction (every
challenger at alpha / m first) is the alternative with an empty order, and on one year of four
tickers it rarely lets anything beat GARCH (five challengers: the best must reach p < 0.01). Among
the challengers that pass, the one with the lowest loss is served; otherwise the incumbent.
Pure computation: loss panels in, a decision out.

Tickers are decided in two stages. The pooled choice ("*") is made first, on every ticker's
sessions together, against the configured incumbent; each ticker is then decided against the pooled
choice, so a ticker serves something else than what the pooled evidence favours only on its own
significant evidence. A single ticker's window (a year at most) rarely separates candidates a few
percent apart, while the panel of all tickers does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

BASE_RATE = "base_rate"
"""The incumbent of P(up): the up-share of the training dates (its naive forecast)."""


@dataclass(frozen=True)
class IntervalChoice:
    """The decision for one ticker (or the pooled "*"), with the evidence.

    `p_value` is the Holm-adjusted p-value of the served challenger, or, when the incumbent is kept,
    the smallest adjusted p-value among the challengers (the closest any came); `skill` is the served
    source's relative improvement over the incumbent (0 for the incumbent itself).
    """

    source: str
    p_value: float | None
    skill: float | None
    p_values: dict[str, float] = field(default_factory=dict)  # every challenger's adjusted p-value
    n_sessions: int = 0


def ticker_incumbent(pooled: IntervalChoice | str | None, incumbent: str) -> str:
    """What a ticker's challengers are tested against: the pooled choice where there is one, else
    the configured incumbent."""
    source = pooled.source if isinstance(pooled, IntervalChoice) else pooled
    return source or incumbent


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-adjusted p-values, by the same names: the k-th smallest times (m - k + 1), made
    non-decreasing in that order and capped at 1.

    Written here rather than called from statsmodels' `multipletests(method="holm")`, which gives
    the same numbers (a test holds them equal) but costs ~50 ms a call on these machines: a promotion
    over 500 tickers decides twice per ticker, so ~50 s against well under a millisecond.
    """
    names = sorted(p_values, key=lambda name: p_values[name])
    m = len(names)
    adjusted: dict[str, float] = {}
    running = 0.0
    for k, name in enumerate(names):
        running = max(running, min(1.0, (m - k) * float(p_values[name])))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


def fixed_sequence(p_values: Mapping[str, float], order: Sequence[str]) -> dict[str, float]:
    """Adjusted p-values of a fixed-sequence procedure (Maurer, Hothorn & Lehmacher 1995): the tests
    are made in `order` (names not in it follow, in the order given), each at the full alpha while
    every earlier one rejected, so the adjusted p-value is the running maximum along the order. The
    family-wise error rate is controlled at alpha whatever the dependence, and a name added at the
    end cannot change the decisions on the names before it."""
    sequence = [name for name in order if name in p_values]
    sequence += [name for name in p_values if name not in sequence]
    adjusted: dict[str, float] = {}
    running = 0.0
    for name in sequence:
        running = max(running, min(1.0, float(p_values[name])))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


def choose_interval_source(
    panels: Mapping[str, np.ndarray], *, incumbent: str, alpha: float, order: Sequence[str] = ()
) -> IntervalChoice:
    """Serve the best challenger that beats `incumbent` after the family correction, else the
    incumbent: the fixed sequence of `order` (`fixed_sequence`), or Holm's without one.

    `panels` is {candidate: (sessions, tickers) losses}, NaN where missing, all on the same rows.
    A candidate without any loss does not take part. Without the incumbent's losses (it could not
    forecast those rows, or a version recorded none) nothing is tested and the incumbent is kept:
    a challenger is served only on evidence.
    """
    from stockcli.ml.stats import paired_loss_test

    present = {name: panel for name, panel in panels.items() if np.isfinite(panel).any()}
    if incumbent not in present:
        return IntervalChoice(source=incumbent, p_value=None, skill=None)
    base = present[incumbent]
    tests = {
        name: paired_loss_test(panel, base, alternative="less")
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
