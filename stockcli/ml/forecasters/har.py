"""Log-HAR-X on a range-based daily variance, with quantiles by filtered historical simulation.

A daily bar holds more about the day's volatility than its close: the intraday range estimates the
session's variance 5-8x more efficiently than the squared close-to-close return (Parkinson 1980,
Garman & Klass 1980). The HAR model (Corsi 2009) forecasts the log variance from the range
variance's 1-, 5- and 22-session averages, which captures volatility's long memory with a linear
regression. The overnight gap enters as its own regressor, the log of its 5-session mean squared
(HAR-RV-X, Korkusuz, Kambouroudis & McMillan 2023), rather than added into the range variance: the
gap's share of a session's variance is not one to one. The regressand is the log of the next
session's squared close-to-close return, the quantity the quantiles are about (its mean log bias is
a constant that the standardized returns absorb). The forecast is a scale only: the quantiles come
from the empirical distribution of the fit period's returns divided by their forecast scale
(filtered historical simulation), so fat tails and skew are the data's, not an assumed t's.

Volatility moves together across a market, so the log of the market's 5-session mean range variance
(`TickerBars.market`, e.g. ^GSPC's) is one more HAR-X term; a ticker without the market's bars (the
market itself among them) is fitted without it, and its parameters say so (`market_fallback`).
Persistence drifts over the years, so the least squares weight an older session less (its weight
halves every `half_life` sessions), and the quantiles come from the standardized returns of the last
`residual_window` fitted sessions only.

That is the next session's design (`HarDesign()`). Longer horizons keep the earlier design
(`EARLIER_DESIGN`: the gap added into the range variance, two leverage terms min(r, 0), the range
variance as regressand), and parameters that name no design were fitted with it and still serve as
they were fitted. On the validation years 2008-2011, at 5 and 20 sessions the earlier design had the
better 95% Winkler skill against GARCH(1,1)-t (mean +4.2% and +8.3% against +2.3% and +6.4%); the
next session's figures are in `config.toml`.

HAR is natively multi-horizon (Corsi 2009): for h sessions ahead a direct regression of the log of
the MEAN regressand proxy over sessions t+1 .. t+h on the same design row t gives the h-session scale
sigma_h = sqrt(h * exp(fitted log mean)), and the quantiles are the empirical ones of the fit
period's h-session returns log(close[t+h] / close[t]) divided by their sigma_h. Those returns
overlap (consecutive rows share h - 1 sessions): harmless for least squares and for the empirical
quantiles' consistency, at the cost of fewer independent points in the tails (about n / h).

Everything is causal: the proxies of session t use bars t - 1 and t (the market's: its bars dated up
to session t's date); the design row t uses sessions up to t; the fit's targets use sessions up to
the last fitted one only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from stockcli.choices import HORIZONS, check_choice
from stockcli.errors import InputDataError
from stockcli.features.kernels import trailing_mean
from stockcli.ml.forecasters import Params, TickerBars, check_horizon

ESTIMATORS = ("garman_klass", "parkinson")
"""Intraday range estimators `HarRange` accepts; the first is the default."""

DEFAULT_ESTIMATOR = ESTIMATORS[0]
"""Garman–Klass uses the open and close as well as the range: the more efficient of the two."""

MIN_HAR_ROWS = 250
"""Fewest usable regression rows (about a year) `HarRange.fit` accepts.

Six coefficients need far fewer; the tails do not: with 250 standardized returns the 1% and 99%
quantiles already rest on two or three points each.
"""

VARIANCE_FLOOR = 1e-10
"""Smallest daily variance proxy (a 0.001% move squared), so that the log of a flat session is finite."""

HAR_WINDOWS = (1, 5, 22)
"""Sessions averaged in the daily, weekly and monthly terms."""

LEVERAGE_WINDOW = 5
"""Sessions averaged in the weekly leverage term (the daily one is min(r_t, 0))."""

OVERNIGHT_WINDOW = 5
"""Sessions averaged in the overnight regressor (with `overnight="regressor"`)."""

OVERNIGHT_MODES = ("regressor", "added")
"""How the overnight gap enters: its own HAR-X regressor, or added into the range variance."""

TARGETS = ("squared_return", "range")
"""The regressand's daily proxy: the squared close-to-close return, or the range variance."""

MARKET_WINDOW = 5
"""Sessions averaged in the market regressor (with `market=True`)."""


@dataclass(frozen=True)
class HarDesign:
    """What a HAR regression is made of (module docstring); the defaults: the next session's."""

    overnight: str = OVERNIGHT_MODES[0]
    leverage: bool = False
    target: str = TARGETS[0]
    market: bool = True
    """The log of the market's `MARKET_WINDOW`-session mean range variance as one more term
    (`TickerBars.market`; fitted without it where the bars hold none)."""
    half_life: int = 500
    """Sessions after which an older session's weight in the least squares halves; 0: all alike."""
    residual_window: int = 1000
    """The standardized returns of the last this many fitted sessions give the quantiles; 0: all."""

    def __post_init__(self) -> None:
        check_choice("overnight mode", self.overnight, OVERNIGHT_MODES, InputDataError)
        check_choice("HAR target", self.target, TARGETS, InputDataError)
        for name in ("half_life", "residual_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise InputDataError(f"A HAR {name} is a number of sessions from 0 up, got {value!r}.")

    @property
    def terms(self) -> tuple[str, ...]:
        """The regression terms, in the order of the design's columns and coefficients."""
        terms = ["const", "log_rv_1", "log_rv_5", "log_rv_22"]
        if self.overnight == "regressor":
            terms.append(f"log_overnight_{OVERNIGHT_WINDOW}")
        if self.market:
            terms.append(f"log_market_{MARKET_WINDOW}")
        if self.leverage:
            terms += ["neg_return_1", f"neg_return_{LEVERAGE_WINDOW}"]
        return tuple(terms)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> HarDesign:
        """The design `params` (of one horizon) were fitted with: `EARLIER_DESIGN`'s for each field
        they name none of (fits stored before the field existed)."""
        earlier = EARLIER_DESIGN.to_json()
        try:
            return cls(**{name: type(value)(params.get(name, value)) for name, value in earlier.items()})
        except (InputDataError, TypeError, ValueError) as error:
            raise InputDataError(f"Invalid HAR parameters: {error}") from error


EARLIER_DESIGN = HarDesign("added", True, "range", market=False, half_life=0, residual_window=0)
"""The first design (gap added, leverage, range regressand, ordinary least squares on the whole fit
period): longer horizons' and old fits'."""


Z_LEVELS: tuple[float, ...] = (
    0.001,
    0.005,
    *(round(0.01 * k, 2) for k in range(1, 100)),
    0.995,
    0.999,
)
"""Levels at which the standardized returns' quantiles are stored; others are interpolated.

Levels outside [0.001, 0.999] get the end values: the fit period holds too few points to say more.
"""

_LN2 = float(np.log(2.0))


class HarRange:
    """Log-HAR(1, 5, 22)-X on a range-based daily variance; quantiles by FHS (module docstring).

    Params (plain JSON): `estimator`, `terms`, `z_levels` (= `Z_LEVELS`), and for the next session
    the `HarDesign` fields (`market_fallback` says why a design with the market term was fitted
    without it), `coefficients` (one per term), `z_quantiles` (of the fit period's standardized
    returns) and `n_obs` (regression rows used); `horizons` maps each further horizon ("5", "20") to
    the same per-horizon fields. Params without `horizons` (fitted before horizons existed) serve
    horizon 1 and give NaN at the others; params naming no design have the `EARLIER_DESIGN`.
    """

    name = "har_range"
    needs_fit = True

    def __init__(
        self,
        estimator: str = DEFAULT_ESTIMATOR,
        horizons: Sequence[int] = HORIZONS,
        *,
        design: HarDesign | None = None,
        longer_design: HarDesign = EARLIER_DESIGN,
    ) -> None:
        check_choice("range estimator", estimator, ESTIMATORS, InputDataError)
        self.estimator = estimator
        self.design = design or HarDesign()
        self.longer_design = longer_design
        self.horizons = tuple(sorted({1, *(check_horizon(h) for h in horizons)}))

    def fit(self, bars: TickerBars, previous: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Per horizon h, OLS of log mean proxy[t+1 .. t+h] on the design row t (the next session's
        design at h = 1, `longer_design` beyond), then the quantiles of the standardized h-session
        returns.

        None when fewer than `MIN_HAR_ROWS` rows have a full design and a next session, when the
        closes do not move, or when the regression gives non-finite coefficients; a longer horizon
        that fails so is left out (NaN quantiles there).
        """
        returns = bars.returns
        finite_returns = returns[np.isfinite(returns)]
        if finite_returns.size == 0 or float(np.std(finite_returns)) < 1e-10:
            return None
        first_design, fallback = self.design, None
        if first_design.market and bars.market is None:
            first_design, fallback = replace(first_design, market=False), "no market bars"
        designs = {h: first_design if h == 1 else self.longer_design for h in self.horizons}
        built = {design: self._arrays(bars, design) for design in set(designs.values())}
        fitted = {h: _fit_horizon(*built[designs[h]], bars.close, h, designs[h]) for h in self.horizons}
        first = fitted.pop(1)
        if first is None and first_design.market:
            # Too few sessions with the market's bars: the design without its term, said so.
            first_design = replace(first_design, market=False)
            fallback = "too few sessions with market bars"
            first = _fit_horizon(*self._arrays(bars, first_design), bars.close, 1, first_design)
        if first is None:
            return None
        return {
            "estimator": self.estimator,
            **first_design.to_json(),
            **({"market_fallback": fallback} if fallback else {}),
            "terms": list(first_design.terms),
            "coefficients": first["coefficients"],
            "z_levels": list(Z_LEVELS),
            "z_quantiles": first["z_quantiles"],
            "n_obs": first["n_obs"],
            "horizons": {
                str(h): {**designs[h].to_json(), **found} for h, found in fitted.items() if found is not None
            },
        }

    def _arrays(self, bars: TickerBars, design: HarDesign) -> tuple[np.ndarray, np.ndarray]:
        """(design matrix, regressand's daily proxy) of `design` on `bars`: the proxy is the squared
        close-to-close return (`target="squared_return"`) or `daily_variance` (`"range"`)."""
        if design.target == "range":
            return har_design(bars, self.estimator, design), daily_variance(bars, self.estimator)
        return har_design(bars, self.estimator, design), _floored(bars.returns**2)

    def quantiles_at(
        self, params: Params, bars: TickerBars, rows: np.ndarray, levels: Sequence[float], horizon: int = 1
    ) -> np.ndarray:
        """sigma_row * (standardized-return quantile at each level); NaN rows before a full design,
        and everywhere when `params` hold no fit for `horizon`.

        sigma_row = sqrt(h * exp(design_row . coefficients_h)), the forecast scale of the h-session
        return (at h = 1: exp(0.5 * design_row . coefficients)).
        """
        horizon = check_horizon(horizon)
        estimator = str(params.get("estimator", self.estimator))
        if estimator not in ESTIMATORS:
            raise InputDataError(f"Invalid HAR parameters: unknown estimator {estimator!r}.")
        rows = np.asarray(rows, dtype=np.int64).ravel()
        own = params if horizon == 1 else (params.get("horizons") or {}).get(str(horizon))
        if own is None:
            return np.full((rows.size, len(levels)), np.nan)
        design_of = HarDesign.of(own)
        coefficients, z_levels, z_quantiles = _har_parameters(
            {**own, "z_levels": params.get("z_levels")}, len(design_of.terms)
        )
        # Row k needs bars up to k only: cut there, so nothing later is even read.
        design = (
            har_design(bars.head(int(rows.max()) + 1), estimator, design_of)
            if rows.size
            else np.empty((0, len(design_of.terms)))
        )
        sigma = np.sqrt(float(horizon)) * np.exp(0.5 * design[rows] @ coefficients)
        standardized = np.interp(np.asarray(levels, dtype=np.float64), z_levels, z_quantiles)
        return np.asarray(sigma[:, None] * standardized[None, :], dtype=np.float64)


def _fit_horizon(
    design: np.ndarray, variance: np.ndarray, close: np.ndarray, horizon: int, choices: HarDesign
) -> dict[str, Any] | None:
    """{coefficients, z_quantiles, n_obs} of the direct regression of the log mean `variance` proxy
    over the next `horizon` sessions (weighted by `choices.half_life`, the quantiles from the last
    `choices.residual_window` standardized returns), or None."""
    from stockcli.ml.forecast import close_log_returns

    ahead = np.full(variance.size, np.nan)
    ahead_return = np.full(variance.size, np.nan)
    if variance.size > horizon:
        # Row t: the mean proxy over sessions t+1 .. t+h, and log(close[t+h] / close[t]).
        ahead[:-horizon] = trailing_mean(variance, horizon)[horizon:]
        ahead_return[:-horizon] = close_log_returns(close, horizon)[horizon:]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_target = np.log(ahead)
    usable = np.isfinite(design).all(axis=1) & np.isfinite(log_target) & np.isfinite(ahead_return)
    if usable.sum() < MIN_HAR_ROWS:
        return None
    # Weighted least squares: row t's weight 0.5 ** (sessions before the last fitted row / half-life),
    # so the fit follows a slowly changing persistence (all weights 1 without a half-life).
    used = np.flatnonzero(usable)
    root = (
        np.sqrt(0.5 ** ((used[-1] - used) / choices.half_life)) if choices.half_life else np.ones(used.size)
    )
    try:
        coefficients, *_ = np.linalg.lstsq(
            design[usable] * root[:, None], log_target[usable] * root, rcond=None
        )
    except np.linalg.LinAlgError:
        return None
    if not np.isfinite(coefficients).all():
        return None
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        sigma = np.sqrt(float(horizon)) * np.exp(0.5 * design[usable] @ coefficients)
        standardized = ahead_return[usable] / sigma
    if choices.residual_window:
        standardized = standardized[-choices.residual_window :]
    z_quantiles = np.quantile(standardized, Z_LEVELS)
    if not np.isfinite(z_quantiles).all():
        return None
    return {
        "coefficients": [float(value) for value in coefficients],
        "z_quantiles": [float(value) for value in z_quantiles],
        "n_obs": int(usable.sum()),
    }


def _range_parts(bars: TickerBars, estimator: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(overnight gap squared, intraday estimator, close-to-close return squared, bar consistent)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        log_open, log_high, log_low, log_close = (
            np.log(np.where(values > 0, values, np.nan))
            for values in (bars.open, bars.high, bars.low, bars.close)
        )
        previous_close = np.append(np.nan, log_close[:-1])
        close_to_close = (log_close - previous_close) ** 2
        log_range = log_high - log_low
        if estimator == "parkinson":
            intraday = log_range**2 / (4.0 * _LN2)
        else:
            intraday = 0.5 * log_range**2 - (2.0 * _LN2 - 1.0) * (log_close - log_open) ** 2
        overnight = (log_open - previous_close) ** 2
        # Low <= open, close <= high (so high >= low).
        consistent = (
            np.isfinite(overnight + intraday)
            & (log_low <= np.minimum(log_open, log_close))
            & (np.maximum(log_open, log_close) <= log_high)
        )
    return overnight, intraday, close_to_close, consistent


def _floored(proxy: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(proxy), np.maximum(proxy, VARIANCE_FLOOR), np.nan)


def daily_variance(bars: TickerBars, estimator: str = DEFAULT_ESTIMATOR) -> np.ndarray:
    """Variance proxy (n,) of each session's log return: overnight gap squared + intraday estimator.

    Garman–Klass: 0.5 (ln H/L)^2 - (2 ln 2 - 1)(ln C/O)^2; Parkinson: (ln H/L)^2 / (4 ln 2). Where
    the open, high or low is missing, non-positive or inconsistent (H < L, or the open or close
    outside [L, H]) the squared close-to-close return stands in. Floored at `VARIANCE_FLOOR`; NaN
    on the first session and wherever the close-to-close return is missing.
    """
    overnight, intraday, close_to_close, consistent = _range_parts(bars, estimator)
    return _floored(np.where(consistent, overnight + intraday, close_to_close))


def intraday_variance(bars: TickerBars, estimator: str = DEFAULT_ESTIMATOR) -> np.ndarray:
    """The intraday estimator alone (n,), open to close: `daily_variance` without the overnight gap
    (the same fallback to the squared close-to-close return, the same floor)."""
    _overnight, intraday, close_to_close, consistent = _range_parts(bars, estimator)
    return _floored(np.where(consistent, intraday, close_to_close))


def overnight_variance(bars: TickerBars) -> np.ndarray:
    """The overnight gap squared (n,), (ln O_t - ln C_(t-1))^2; the squared close-to-close return
    where the open is missing or non-positive; floored at `VARIANCE_FLOOR`, NaN on the first session."""
    overnight, _intraday, close_to_close, _consistent = _range_parts(bars, DEFAULT_ESTIMATOR)
    return _floored(np.where(np.isfinite(overnight), overnight, close_to_close))


def har_design(
    bars: TickerBars, estimator: str = DEFAULT_ESTIMATOR, design: HarDesign = EARLIER_DESIGN
) -> np.ndarray:
    """Design matrix (n, len(design.terms)): row t from sessions up to t; NaN where a window is short.

    [1, log RV_t, log mean RV_(t-4..t), log mean RV_(t-21..t)], RV the `daily_variance` (overnight
    "added") or the `intraday_variance` (overnight "regressor", then followed by log mean
    overnight_(t-4..t)); with the market, then log mean market_(t-4..t) (`TickerBars.market`, NaN
    where the bars hold none); with leverage, then [min(r_t, 0), mean min(r_(t-4..t), 0)].
    """
    regressor = design.overnight == "regressor"
    variance = intraday_variance(bars, estimator) if regressor else daily_variance(bars, estimator)
    columns = [np.ones(variance.size)]
    columns += [np.log(trailing_mean(variance, window)) for window in HAR_WINDOWS]
    if regressor:
        columns.append(np.log(trailing_mean(overnight_variance(bars), OVERNIGHT_WINDOW)))
    if design.market:
        market = bars.market if bars.market is not None else np.full(variance.size, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            columns.append(np.log(trailing_mean(market, MARKET_WINDOW)))
    if design.leverage:
        negative_return = np.minimum(bars.returns, 0.0)
        columns += [negative_return, trailing_mean(negative_return, LEVERAGE_WINDOW)]
    return np.column_stack(columns)


def _har_parameters(params: Mapping[str, Any], n_terms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coefficients, z_levels, z_quantiles) as arrays, checked (`n_terms` coefficients)."""
    try:
        coefficients = np.asarray(params["coefficients"], dtype=np.float64)
        z_levels = np.asarray(params["z_levels"], dtype=np.float64)
        z_quantiles = np.asarray(params["z_quantiles"], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as error:
        raise InputDataError(f"HAR parameters are incomplete ({error}); refit the forecaster.") from error
    valid = (
        coefficients.shape == (n_terms,)
        and z_levels.ndim == 1
        and z_levels.shape == z_quantiles.shape
        and z_levels.size >= 2
        and np.isfinite(coefficients).all()
        and np.isfinite(z_quantiles).all()
        and bool(np.all(np.diff(z_levels) > 0))
        and bool(np.all(np.diff(z_quantiles) >= 0))
    )
    if not valid:
        raise InputDataError("Invalid HAR parameters; refit the forecaster.")
    return coefficients, z_levels, z_quantiles
