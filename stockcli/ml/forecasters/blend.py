"""The equal-weight quantile average of two candidates (`[forecasters] blend`).

Averaging quantiles (Vincentization) keeps them ordered and gives a distribution between the two:
a cheap hedge when neither member wins everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stockcli.ml.forecasters import Forecaster, Params, TickerBars


class Blend:
    """Equal-weight average of two members' quantiles at the same levels."""

    name = "blend"
    needs_fit = True

    def __init__(self, first: Forecaster, second: Forecaster) -> None:
        self.members = (first, second)

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
        return {"members": members}

    def quantiles_at(
        self, params: Params, bars: TickerBars, rows: np.ndarray, levels: Sequence[float], horizon: int = 1
    ) -> np.ndarray:
        """The members' quantiles at the same levels and horizon, averaged (NaN where either is)."""
        parts = [
            member.quantiles_at(params["members"][member.name], bars, rows, levels, horizon)
            for member in self.members
        ]
        return np.asarray((parts[0] + parts[1]) / 2.0, dtype=np.float64)
