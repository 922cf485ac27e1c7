"""The rolling band: normal quantiles from the standard deviation of the last `window` returns.

Centred on 0, i.e. on the naive persistence forecast. It needs no fit, so it serves any ticker with
`window` sessions of history: the fallback of every other candidate.

Over h sessions the same rule reads the h-session log returns log(close[t] / close[t - h]): the
sample standard deviation of the last `window * h` of them (overlapping), so that the window holds
`window` non-overlapping h-session periods, as many as the one-session band holds sessions. A normal
band rather than those returns' empirical quantiles: with 20 independent periods an empirical 2.5%
quantile is the sample's extreme, while their standard deviation is a stable estimate (and the
one-session band is the same rule at h = 1, bit for bit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stockcli.ml.forecasters import Params, TickerBars, check_horizon


class RollingBand:
    """A rolling-window normal band (`[intervals] baseline_window` sessions)."""

    name = "rolling"
    needs_fit = False

    def __init__(self, window: int = 20) -> None:
        self.window = int(window)

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        return {"window": self.window}

    def quantiles_at(
        self, params: Params, bars: TickerBars, rows: np.ndarray, levels: Sequence[float], horizon: int = 1
    ) -> np.ndarray:
        from scipy.special import ndtri

        from stockcli.ml.baselines import rolling_band_quantiles_at
        from stockcli.ml.forecast import close_log_returns

        horizon = check_horizon(horizon)
        window = int(params.get("window", self.window))
        returns = close_log_returns(bars.close, horizon)
        # rolling_band_quantiles_at gives sd x the five normal quantiles; its 97.5% column over
        # ndtri(0.975) is the standard deviation.
        band = rolling_band_quantiles_at(returns, np.asarray(rows), window * horizon)
        sd = band[:, -1] / float(ndtri(0.975))
        return sd[:, None] * np.asarray(ndtri(np.asarray(levels, dtype=np.float64)))[None, :]
