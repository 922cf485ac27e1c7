"""One interface for every statistical forecaster of the log return over the next sessions.

A forecaster is fitted on a ticker's own bars up to a date and then, with its parameters FIXED,
filtered over the bars up to any later date to give quantiles of the log return `horizon` of the
ticker's own sessions ahead, log(close[t + horizon] / close[t]), at any levels (horizon 1 by
default: the next session). Parameters are plain JSON (stored in the model version
and in `forecaster_fits`): nothing is pickled. Every candidate is one class in `FORECASTERS`;
callers (predict, promote, monitor, backtest) loop over the table and never branch on a name.

Causality is part of the contract: `quantiles_at(params, bars, rows, levels, horizon)` row i
depends on `bars` rows `0 .. rows[i]` only, at every horizon (tests perturb later bars and require
bit-identical output).

The network is the other kind of candidate: it is served through the forecasting primitive
(`stockcli.ml.forecast`) and takes part in selection under the name `NETWORK`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stockcli.errors import InputDataError
from stockcli.ml.intervals import QUANTILES

NETWORK = "network"
"""The name under which the network's own intervals compete with the statistical forecasters."""

Params = Mapping[str, Any]
"""A forecaster's fitted parameters: plain JSON (`fit`'s result, as stored)."""

P_UP_GRID: tuple[float, ...] = tuple(float(x) for x in np.linspace(0.01, 0.99, 99))
"""Levels at which a forecaster's distribution is read to find P(next return > 0)."""


@dataclass(frozen=True)
class TickerBars:
    """One ticker's own sessions, oldest first: float64 arrays of equal length (no missing rows).

    `open`, `high` and `low` may hold NaN where a source lacks them; range-based estimators fall
    back to the close-to-close return on those sessions. `market`, where given, is the market's
    daily range variance on the ticker's sessions (`market_variance`).
    """

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    market: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.close.size)

    @property
    def returns(self) -> np.ndarray:
        """Log returns aligned with the closes: returns[t] = log(close[t] / close[t - 1]), NaN at 0."""
        from stockcli.ml.forecast import close_log_returns

        return close_log_returns(self.close)

    def head(self, rows: int) -> TickerBars:
        """The first `rows` sessions (what a fit up to session rows - 1 may see)."""
        market = None if self.market is None else self.market[:rows]
        return TickerBars(self.open[:rows], self.high[:rows], self.low[:rows], self.close[:rows], market)

    @classmethod
    def from_frame(cls, frame: Any, market: Any = None) -> TickerBars:
        """From a bars frame with `open`, `high`, `low`, `close` columns (the store's layout), with
        the market's variance from the market's bars frame `market` where given."""
        columns = {
            name: frame[name].to_numpy(dtype=np.float64) if name in frame else np.full(len(frame), np.nan)
            for name in ("open", "high", "low", "close")
        }
        aligned = None if market is None or len(market) == 0 else market_variance(frame.index, market)
        return cls(**columns, market=aligned)


def market_variance(index: Any, market: Any) -> np.ndarray:
    """The market's daily intraday range variance (Garman–Klass, `har.intraday_variance`) on the
    sessions of `index`: each session's value is that of the market's newest bar dated on or before
    it (carried forward over the market's missing days), NaN before the market's first bar."""
    from stockcli.features.dataset import dates_to_days
    from stockcli.ml.forecasters.har import intraday_variance

    variance = intraday_variance(TickerBars.from_frame(market))
    position = np.searchsorted(dates_to_days(market.index), dates_to_days(index), side="right") - 1
    return np.where(position >= 0, variance[np.maximum(position, 0)], np.nan)


def ticker_bars(frames: Mapping[str, Any], ticker: str, market: str = "") -> TickerBars:
    """`ticker`'s bars from `frames` (ticker -> bars frame), with the market's variance from
    `frames[market]` for every ticker but the market itself (none where `market` is "" or its
    frame is missing: `har_range` then fits without the market term)."""
    found = frames.get(market) if market and market != ticker else None
    return TickerBars.from_frame(frames[ticker], found)


def with_market(tickers: Sequence[str], market: str) -> list[str]:
    """The series whose bars `ticker_bars` reads for `tickers`: they and the market, each once."""
    return list(dict.fromkeys([*tickers, *([market] if market else [])]))


class Forecaster(Protocol):
    """What every statistical candidate implements (see the module docstring)."""

    name: str

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Parameters (plain JSON) fitted on all of `bars`; None when too short or ill-posed.

        `previous` is the last fit of the same ticker, where an iterative fit may start from it."""
        ...

    def quantiles_at(
        self, params: Params, bars: TickerBars, rows: np.ndarray, levels: Sequence[float], horizon: int = 1
    ) -> np.ndarray:
        """(len(rows), len(levels)) quantiles of log(close[row + horizon] / close[row]) after each
        row, from bars up to it.

        NaN rows where the history up to the row is too short, or where `params` hold nothing for
        `horizon` (a fit made before that horizon was configured).
        """
        ...


def check_horizon(horizon: int) -> int:
    """`horizon` as a number of sessions ahead (>= 1), or a clear error."""
    if isinstance(horizon, bool) or int(horizon) != horizon or horizon < 1:
        raise InputDataError(f"A forecast horizon is a number of sessions from 1 up, got {horizon!r}.")
    return int(horizon)


def p_up_from_grid(values: np.ndarray) -> np.ndarray:
    """P(log return > 0) per row of quantiles read at `P_UP_GRID` (n, 99): one minus the level
    at which the (interpolated) quantile function crosses 0; NaN where a row is not finite."""
    grid = np.asarray(P_UP_GRID)
    rows = np.atleast_2d(np.asarray(values, dtype=np.float64))
    out = np.full(rows.shape[0], np.nan)
    for i, row in enumerate(rows):
        if np.isfinite(row).all():
            out[i] = 1.0 - float(np.interp(0.0, np.maximum.accumulate(row), grid, left=0.0, right=1.0))
    return out


# --- the table and what callers do with it --------------------------------------------------------------


def build_table(settings: Any) -> dict[str, Forecaster]:
    """The statistical candidates of `[forecasters] candidates`, by name, in the configured order."""
    from stockcli.ml.forecasters.blend import Blend
    from stockcli.ml.forecasters.garch import Garch, Gjr
    from stockcli.ml.forecasters.har import HarDesign, HarRange
    from stockcli.ml.forecasters.rolling import RollingBand

    config = settings.forecasters
    single: dict[str, Forecaster] = {
        "rolling": RollingBand(settings.intervals.baseline_window),
        "garch": Garch(),
        "gjr": Gjr(),
        "har_range": HarRange(
            config.har_estimator,
            config.horizons,
            design=HarDesign(
                config.har_overnight,
                config.har_leverage,
                config.har_target,
                market=bool(config.har_market),
                half_life=config.har_half_life,
                residual_window=config.har_residual_window,
            ),
        ),
    }
    first, second = config.blend
    single["blend"] = Blend(single[first], single[second], config.blend_weight)
    return {name: single[name] for name in config.candidates}


def fit_all(
    table: Mapping[str, Forecaster],
    bars: TickerBars,
    previous: Mapping[str, Mapping[str, Any] | None] | None = None,
) -> dict[str, dict[str, Any] | None]:
    """Every candidate's parameters on `bars` (each starting from its `previous` fit where it can),
    for every horizon the table was built with; a blend is composed from its members' fits, not
    refitted."""
    before = previous or {}
    fitted: dict[str, dict[str, Any] | None] = {}
    for name, forecaster in table.items():
        compose = getattr(forecaster, "compose", None)
        if compose is not None:
            fitted[name] = compose(
                {
                    m.name: fitted[m.name] if m.name in fitted else m.fit(bars, before.get(m.name))
                    for m in forecaster.members  # type: ignore[attr-defined]
                }
            )
        else:
            fitted[name] = forecaster.fit(bars, before.get(name))
    return fitted


def params_for(
    forecaster: Forecaster, fits: Mapping[str, Mapping[str, Any]], ticker: str
) -> Mapping[str, Any] | None:
    """The parameters `forecaster` serves `ticker` with: its fit, or none needed (rolling band)."""
    found = (fits.get(forecaster.name) or {}).get(ticker)
    if found is None and not getattr(forecaster, "needs_fit", True):
        return {}
    return found


@dataclass(frozen=True)
class CandidateRows:
    """One candidate's forecasts for the rows of `candidate_quantiles`, in log returns: NaN rows
    where it has no forecast."""

    quantiles: np.ndarray
    """(n, 5) at `QUANTILES`."""
    p_up: np.ndarray
    """(n,) P(log return > 0), read at `P_UP_GRID`."""
    extra: np.ndarray
    """(n, len(extra_levels)) at the caller's `extra_levels` (e.g. VaR / ES tail levels)."""


def candidate_quantiles(
    table: Mapping[str, Forecaster],
    fits: Mapping[str, Mapping[str, Any]],
    bars: Mapping[str, Any],
    tickers: Sequence[str],
    base_dates: Sequence[Any],
    *,
    fit_missing: bool = False,
    horizon: int = 1,
    extra_levels: Sequence[float] = (),
    market: str = "",
) -> dict[str, CandidateRows]:
    """Every candidate's forecast of the `horizon`-session log return (the ticker's own sessions)
    for rows (tickers[i] as of base_dates[i]): nominal quantiles, P(up) and `extra_levels`.

    `fits` is {candidate: {ticker: params}}. A ticker without parameters gets NaN rows, or, with
    `fit_missing` (an evaluation window: promote, train), a fit on its own bars before its first
    requested date, so no row sees its future. The rolling band needs no fit. `market` names the
    market series of `bars` (`[forecasters] har_market`; see `ticker_bars`).
    """
    from stockcli.features.dataset import dates_to_days

    horizon = check_horizon(horizon)
    n = len(tickers)
    extra = tuple(float(level) for level in extra_levels)
    levels = (*QUANTILES, *P_UP_GRID, *extra)
    values = {name: np.full((n, len(levels)), np.nan) for name in table}
    wanted = dates_to_days(list(base_dates)) if n else np.zeros(0, dtype=np.int64)
    ticker_array = np.asarray(list(tickers), dtype=object)
    for ticker in dict.fromkeys(tickers):
        frame = bars.get(ticker)
        if frame is None or len(frame) == 0:
            continue
        rows = np.flatnonzero(ticker_array == ticker)
        positions = np.searchsorted(dates_to_days(frame.index), wanted[rows], side="right") - 1
        ok = positions >= 0
        if not ok.any():
            continue
        history = ticker_bars(bars, ticker, market)
        own = {name: params_for(forecaster, fits, ticker) for name, forecaster in table.items()}
        if fit_missing and any(params is None for params in own.values()):
            refitted = fit_all(table, history.head(int(positions[ok].min()) + 1))
            own = {name: own[name] if own[name] is not None else refitted[name] for name in table}
        for name, forecaster in table.items():
            params = own[name]
            if params is not None:
                values[name][rows[ok]] = forecaster.quantiles_at(
                    params, history, positions[ok], levels, horizon
                )
    grid = slice(len(QUANTILES), len(QUANTILES) + len(P_UP_GRID))
    return {
        name: CandidateRows(found[:, : len(QUANTILES)], p_up_from_grid(found[:, grid]), found[:, grid.stop :])
        for name, found in values.items()
    }


def bundle_fits(baselines: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """{candidate: {ticker: params}} recorded in a model version (`baselines`); a version saved
    before the forecaster table holds GARCH's alone."""
    found = dict(baselines or {})
    if "fits" in found:
        return {name: dict(values or {}) for name, values in found["fits"].items()}
    return {"garch": dict(found.get("garch") or {})}
