"""What one ticker is served: every candidate's forecast, the chosen one adapted, and the fallbacks.

Each statistical candidate is filtered once over the ticker's bars at every level needed (the nominal five for
scoring, the five adaptive conformal inference moved it to, the P(up) grid); the network's come from the
forecasting primitive.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stockcli.ml.forecasters import NETWORK, P_UP_GRID, Forecaster, TickerBars, p_up_from_grid, params_for
from stockcli.ml.intervals import QUANTILES, sort_quantiles
from stockcli.ml.selection import BASE_RATE

FALLBACKS = ("garch", "rolling", NETWORK)
"""Tried in this order, after the incumbent, when the chosen source cannot forecast a ticker (the blend
cannot where one of its members has no fit yet): the yardstick, the rolling band, the network."""

Alphas = tuple[float, float]


@dataclass(frozen=True)
class CandidateForecast:
    """One candidate's forecast of one ticker's next log return."""

    nominal: np.ndarray  # (5,) quantiles at `QUANTILES`: what scoring and selection compare
    adapted: np.ndarray  # (5,) quantiles at the levels adaptive conformal inference reached
    p_up: float
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0))  # at the `extra_levels` asked for

    @property
    def usable(self) -> bool:
        return bool(np.isfinite(self.adapted).all() and np.isfinite(self.p_up))


def adapted_levels(alphas: Alphas) -> tuple[float, ...]:
    """The five quantile levels of 80% and 95% intervals at miscoverage levels (alpha_80, alpha_95)."""
    a80, a95 = (min(max(float(a), 1e-4), 0.9999) for a in alphas)
    return (a95 / 2.0, a80 / 2.0, 0.5, 1.0 - a80 / 2.0, 1.0 - a95 / 2.0)


def statistical_forecasts(
    table: Mapping[str, Forecaster],
    fits: Mapping[str, Mapping[str, object]],
    ticker: str,
    bars: TickerBars,
    alphas_for: Callable[[str], Alphas],
    *,
    horizon: int = 1,
    extra_levels: Sequence[float] = (),
) -> dict[str, CandidateForecast]:
    """Every statistical candidate's forecast of the log return `horizon` sessions after the last of `bars`
    (absent: no parameters), also read at `extra_levels` (the risk tails). A composed candidate (the blend)
    combines its members' values instead of filtering again."""
    row = np.array([len(bars) - 1])
    adapted = {name: adapted_levels(alphas_for(name)) for name in table}
    levels = (*QUANTILES, *P_UP_GRID, *extra_levels, *(level for name in table for level in adapted[name]))
    first_extra = 5 + len(P_UP_GRID)
    where = {name: first_extra + len(extra_levels) + 5 * k for k, name in enumerate(table)}
    values: dict[str, np.ndarray] = {}
    for name, forecaster in table.items():
        params = params_for(forecaster, fits, ticker)  # type: ignore[arg-type]
        if params is None or len(bars) == 0:
            continue
        members = getattr(forecaster, "members", None)
        if members is not None and all(m.name in values for m in members):
            values[name] = forecaster.combine(params, [values[m.name] for m in members])  # type: ignore[attr-defined]
        else:
            values[name] = forecaster.quantiles_at(params, bars, row, levels, horizon=horizon)[0]
    out: dict[str, CandidateForecast] = {}
    for name, found in values.items():
        own = found[where[name] : where[name] + 5]
        p_up = float(p_up_from_grid(found[5:first_extra])[0])
        extra = found[first_extra : first_extra + len(extra_levels)]
        out[name] = CandidateForecast(found[:5], sort_quantiles(own[None, :])[0], p_up, extra)
    return out


@dataclass(frozen=True)
class HorizonForecast:
    """What one ticker is served `horizon` sessions ahead: log-return quantiles of the served source."""

    horizon: int
    source: str
    p_value: float | None  # the test that chose the source (None: the incumbent or a fallback)
    quantiles: np.ndarray  # (5,) at `QUANTILES`, at the levels adaptive conformal inference reached
    p_up: float
    tail: np.ndarray  # (len(TAIL_LEVELS),) the served distribution's lower tail (`ml.risk`)
    candidates: dict[str, np.ndarray]  # every candidate's nominal (5,) quantiles, served or not
    p_up_source: str  # whose P(up) (`served_p_up`): a candidate's, or the base rate's
    p_ups: dict[str, float]  # every candidate's P(up) and the base rate's, served or not


def serve_horizon(
    forecasts: Mapping[str, CandidateForecast],
    *,
    horizon: int,
    chosen: str,
    p_value: float | None,
    incumbent: str,
    p_up_choice: str | None = None,
    base_rate: float = float("nan"),
) -> HorizonForecast | None:
    """The served forecast at `horizon`: the chosen source when it can forecast, else the incumbent, else a
    fallback (None: nothing can); its P(up) is `served_p_up`'s of the Brier test's `p_up_choice` against
    the horizon's `base_rate`."""
    source = served_source(chosen, forecasts, incumbent)
    if source is None:
        return None
    served = forecasts[source]
    p_up_source, p_up = served_p_up(p_up_choice, forecasts, base_rate, source)
    return HorizonForecast(
        horizon=horizon,
        source=source,
        p_value=p_value if source == chosen else None,
        quantiles=served.adapted,
        p_up=p_up,
        tail=served.extra,
        candidates={name: found.nominal for name, found in forecasts.items()},
        p_up_source=p_up_source,
        p_ups={**{name: found.p_up for name, found in forecasts.items()}, BASE_RATE: float(base_rate)},
    )


def served_source(chosen: str, forecasts: Mapping[str, CandidateForecast], incumbent: str) -> str | None:
    """The first of the choice, the incumbent and `FALLBACKS` that can forecast (None: none can)."""
    for name in (chosen, incumbent, *FALLBACKS):
        found = forecasts.get(name)
        if found is not None and found.usable:
            return name
    return None


def tested_choice(state: Mapping[str, object], *, incumbent: str, alpha: float) -> str:
    """The source a stored horizon decision serves: a challenger its test chose (p below `alpha`), else
    `incumbent` (an untested stored source is an older release's incumbent, not a choice)."""
    p_value = state.get("p_value")
    if state.get("source") and isinstance(p_value, float | int) and p_value < alpha:
        return str(state["source"])
    return incumbent


def stored_source(item: Any, *, incumbent: str, alpha: float) -> str:
    """The interval source a stored next-session decision (a `db.serving.Selection`; None: none) serves:
    `tested_choice` of it against `incumbent`, what it was tested against."""
    if item is None:
        return incumbent
    stored = {"source": item.interval_source, "p_value": item.interval_p_value}
    return tested_choice(stored, incumbent=incumbent, alpha=alpha)


def stored_interval_source(
    selection: Mapping[str, Any], ticker: str, *, incumbent: str, alpha: float
) -> tuple[str, float | None]:
    """(source, the p-value of the test that chose it; None: the incumbent) the stored next-session
    decisions give `ticker`: the pooled one ("*") against `incumbent`, then the ticker's own against the
    pooled one (`stored_source`)."""
    pooled_row, own = selection.get("*"), selection.get(ticker)
    pooled = stored_source(pooled_row, incumbent=incumbent, alpha=alpha)
    if own is not None and (source := stored_source(own, incumbent=pooled, alpha=alpha)) != pooled:
        return source, own.interval_p_value
    return pooled, pooled_row.interval_p_value if pooled_row is not None and pooled != incumbent else None


def served_p_up(
    chosen: str | None, forecasts: Mapping[str, CandidateForecast], base_rate: float, interval_source: str
) -> tuple[str, float]:
    """(whose, value) of the chance of an up session: the Brier test's choice when it can forecast, else the
    base rate; the interval source's for a version that recorded neither."""
    found = forecasts.get(chosen) if chosen else None
    if found is not None and np.isfinite(found.p_up):
        return str(chosen), float(found.p_up)
    if np.isfinite(base_rate):
        return BASE_RATE, float(base_rate)
    return interval_source, float(forecasts[interval_source].p_up)
