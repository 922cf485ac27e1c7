"""What one ticker is served: every candidate's forecast, the chosen one adapted, and the fallbacks.

Serving is one pass per ticker: each statistical candidate is filtered once over the ticker's bars
at every level needed (the nominal five for scoring, the five adaptive conformal inference has moved
this candidate's intervals to, and the grid that gives P(up)); the network's come from the
forecasting primitive. The served source is the selection's choice when it can forecast the ticker,
else the rolling band (no fit needed), else the network. Pure computation: no database, no clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from stockcli.ml.forecasters import NETWORK, P_UP_GRID, Forecaster, TickerBars, params_for
from stockcli.ml.intervals import QUANTILES, sort_quantiles

FALLBACKS = ("rolling", NETWORK)
"""Tried in this order when the chosen source cannot forecast a ticker (no fit, too short a history)."""

Alphas = tuple[float, float]


@dataclass(frozen=True)
class CandidateForecast:
    """One candidate's forecast of one ticker's next log return."""

    nominal: np.ndarray  # (5,) quantiles at `QUANTILES`: what scoring and selection compare
    adapted: np.ndarray  # (5,) quantiles at the levels adaptive conformal inference reached
    p_up: float

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
) -> dict[str, CandidateForecast]:
    """Every statistical candidate's forecast after the last of `bars` (absent: no parameters)."""
    row = np.array([len(bars) - 1])
    grid = np.asarray(P_UP_GRID)
    out: dict[str, CandidateForecast] = {}
    for name, forecaster in table.items():
        params = params_for(forecaster, fits, ticker)  # type: ignore[arg-type]
        if params is None or len(bars) == 0:
            continue
        levels = (*QUANTILES, *adapted_levels(alphas_for(name)), *P_UP_GRID)
        values = forecaster.quantiles_at(params, bars, row, levels)[0]
        nominal, adapted, on_grid = values[:5], values[5:10], values[10:]
        p_up = np.nan
        if np.isfinite(on_grid).all():
            p_up = 1.0 - float(np.interp(0.0, np.maximum.accumulate(on_grid), grid, left=0.0, right=1.0))
        out[name] = CandidateForecast(nominal, sort_quantiles(adapted[None, :])[0], p_up)
    return out


def served_source(chosen: str, forecasts: Mapping[str, CandidateForecast]) -> str | None:
    """The selection's choice when it can forecast, else the first usable fallback (None: nothing)."""
    for name in (chosen, *FALLBACKS):
        found = forecasts.get(name)
        if found is not None and found.usable:
            return name
    return None
