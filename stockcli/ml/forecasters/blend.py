"""The weighted quantile average of two candidates (`[forecasters] blend`, `blend_weight`).

Averaging quantiles (Vincentization) keeps them ordered and gives a distribution between the two:
a cheap hedge when neither member wins everywhere. The first member's weight is a setting, recorded
in the blend's parameters; a blend fitted before it was (no `weight`) stays an equal-weight one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml.forecasters import Forecaster, Params, TickerBars

EQUAL_WEIGHT = 0.5
"""The first member's weight in a blend whose parameters name none."""


class Blend:
    """Weighted average of two members' quantiles at the same levels: `weight` x the first's +
    (1 - `weight`) x the second's."""

    name = "blend"
    needs_fit = True

    def __init__(self, first: Forecaster, second: Forecaster, weight: float = EQUAL_WEIGHT) -> None:
        if not 0.0 < float(weight) < 1.0:
            raise InputDataError(f"A blend's weight lies strictly between 0 and 1, got {weight!r}.")
        self.members = (first, second)
        self.weight = float(weight)

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        before = (previous or {}).get("members") or {}
        return self.compose(
            {member.name: member.fit(bars, before.get(member.name)) for member in self.members}
        )

    def compose(self, fitted: Mapping[str, Mapping[str, Any] | None]) -> dict[str, Any] | None:
        """The blend's parameters from its members' (already fitted), None if either is missing."""
        members = {member.name: fitted.get(member.name) for member in self.members}
        if any(params is None for params in members.values()):
            return None
        return {"members": members, "weight": self.weight}

    def quantiles_at(
        self, params: Params, bars: TickerBars, rows: np.ndarray, levels: Sequence[float], horizon: int = 1
    ) -> np.ndarray:
        """The members' quantiles at the same levels and horizon, averaged with the weight of
        `params` (NaN where either is)."""
        return self.combine(
            params,
            [
                member.quantiles_at(params["members"][member.name], bars, rows, levels, horizon)
                for member in self.members
            ],
        )

    def combine(self, params: Params, parts: Sequence[np.ndarray]) -> np.ndarray:
        """The blend of its members' values (first, second) read at the same levels, with the
        weight of `params`: what serving uses where the members were already filtered."""
        first, second = parts
        weight = float(params.get("weight", EQUAL_WEIGHT))
        if weight == EQUAL_WEIGHT:
            # As before the weight was a setting, bit for bit.
            return np.asarray((first + second) / 2.0, dtype=np.float64)
        return np.asarray(weight * first + (1.0 - weight) * second, dtype=np.float64)
