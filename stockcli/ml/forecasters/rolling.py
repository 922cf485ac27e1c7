"""The rolling band: normal quantiles from the standard deviation of the last `window` returns.

Centred on 0, i.e. on the naive persistence forecast. It needs no fit, so it serves any ticker with
`window` sessions of history: the fallback of every other candidate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stockcli.ml.forecasters import TickerBars


class RollingBand:
    """A rolling-window normal band (`[intervals] baseline_window` sessions)."""

    name = "rolling"
    needs_fit = False

    def __init__(self, window: int = 20) -> None:
        self.window = int(window)

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        return {"window": self.window}

    def quantiles_at(
        self, params: Mapping[str, Any], bars: TickerBars, rows: np.ndarray, levels: Sequence[float]
    ) -> np.ndarray:
        from scipy.special import ndtri

        from stockcli.ml.baselines import rolling_band_quantiles_at

        window = int(params.get("window", self.window))
        # rolling_band_quantiles_at gives sd x the five normal quantiles; its 97.5% column over
        # ndtri(0.975) is the standard deviation.
        band = rolling_band_quantiles_at(bars.returns, np.asarray(rows), window)
        sd = band[:, -1] / float(ndtri(0.975))
        return sd[:, None] * np.asarray(ndtri(np.asarray(levels, dtype=np.float64)))[None, :]
