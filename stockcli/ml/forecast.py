"""The one forecasting primitive: raw bars -> the model's own inputs -> the next close's distribution.

Prediction, promotion and backtests all call `forecast`, which rebuilds the inputs with the bundle's own
feature spec and scalers, so training and serving cannot drift apart. The result is, per (as-of date, ticker),
the next log return's location (the median), scale and Student-t degrees of freedom; calibrated quantiles come
from split conformal scores on the validation split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from stockcli.ml.intervals import (
    MISCOVERAGE,
    QUANTILES,
    half_widths,
    quantiles_from_halfwidths,
    sort_quantiles,
)

if TYPE_CHECKING:
    import pandas as pd

    from stockcli.features.dataset import Unforecastable, WindowSet
    from stockcli.ml.bundle import ModelBundle

# A ticker with fewer validation windows than this is calibrated with the pooled scores of all tickers.
MIN_TICKER_CALIBRATION = 100
# The pooled calibration scores are stored as this many order statistics (bounded bundle size).
POOLED_SCORES_KEPT = 2000
POOLED = "*"


@dataclass(frozen=True)
class ForecastResult:
    """Next-session distributions: row i is `tickers[i]` forecast with bars up to `base_dates[i]`."""

    tickers: list[str]
    as_of_dates: list[date]
    base_dates: list[date]
    base_closes: np.ndarray  # (n,) the last known close of each row
    loc: np.ndarray  # (n,) location (median) of the next log return
    scale: np.ndarray  # (n,) scale of the next log return
    df: np.ndarray  # (n,) Student-t degrees of freedom (inf for a normal head)
    missing: list[Unforecastable] = field(default_factory=list)
    model_version: str | None = None

    def __len__(self) -> int:
        return len(self.tickers)

    @property
    def predicted_closes(self) -> np.ndarray:
        """The model's point forecast: the median of the next close."""
        return self.base_closes * np.exp(self.loc)

    @property
    def p_up(self) -> np.ndarray:
        """The model's probability that the next close is above the base close."""
        return prob_up(self.loc, self.scale, self.df)

    def raw_quantiles(self) -> np.ndarray:
        """(n, 5) log-return quantiles of the model's own distribution (before calibration)."""
        return distribution_quantiles(self.loc, self.scale, self.df)


def forecast(
    bundle: ModelBundle,
    bars: Mapping[str, pd.DataFrame],
    as_of_dates: Sequence[date],
    *,
    tickers: Sequence[str] | None = None,
    sessions: Sequence[date] | None = None,
    use_spec_start: bool = True,
    device: str = "cpu",
) -> ForecastResult:
    """The next-session distribution of each ticker for each date in `as_of_dates`.

    `bars` maps ticker -> raw daily bars, the model's context series included. `tickers` defaults to the
    model's own; any other is served by the same global model. Pairs that cannot be forecast are listed in
    `missing` instead of failing the others.
    """
    from stockcli.features.dataset import build_inputs

    inputs = build_inputs(
        spec=bundle.spec,
        scalers=bundle.scalers,
        bars=bars,
        as_of_dates=list(as_of_dates),
        tickers=tickers,
        sessions=sessions,
        use_spec_start=use_spec_start,
    )
    with _single_thread_for(len(inputs.windows)):
        result = forecast_windows(bundle, bundle.scalers, inputs.windows, device=device)
    return replace(
        result,
        as_of_dates=list(inputs.as_of_dates),
        missing=list(inputs.missing),
        model_version=bundle.version,
    )


def forecast_windows(
    bundle_or_model: Any, scalers: Mapping[str, Any], windows: WindowSet, *, device: str = "cpu"
) -> ForecastResult:
    """The same result for prepared windows (a built dataset's split), in return units."""
    from stockcli.features.dataset import unscale_return
    from stockcli.ml.training import predict_distribution

    raw = predict_distribution(getattr(bundle_or_model, "model", bundle_or_model), windows, device=device)
    target = scalers["target"]
    return ForecastResult(
        tickers=windows.tickers,
        as_of_dates=list(windows.base_dates),
        base_dates=list(windows.base_dates),
        base_closes=np.asarray(windows.base_closes, dtype=np.float64),
        loc=unscale_return(target, raw[:, 0]),
        scale=raw[:, 1] * float(target["scale"]),
        df=raw[:, 2].copy(),
    )


# Up to this many windows, inference runs on one thread (see `_single_thread_for`).
SINGLE_THREAD_WINDOWS = 64


@contextlib.contextmanager
def _single_thread_for(n_windows: int) -> Iterator[None]:
    """Run a small inference on one torch thread, then restore the thread count.

    Each LSTM step is a parallel region ending in a barrier; with the other core busy every barrier waits for
    a scheduler slice (one window's forecast took 0.8 s instead of 1 ms on 2 busy cores).
    """
    import torch

    threads = torch.get_num_threads()
    if n_windows > SINGLE_THREAD_WINDOWS or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# Quantiles and P(up) come from scipy, not torch.distributions: torch's StudentT has no cdf or icdf
# (the likelihood the network is trained by is torch's: `networks.predictive_distribution`).
def _standard(function: str, x: np.ndarray, df: np.ndarray) -> np.ndarray:
    """scipy's `function` ("ppf" or "cdf") at `x`: Student's t with `df` degrees of freedom, the normal
    where `df` is infinite (the two broadcast together)."""
    from scipy import stats

    x, df = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(df, dtype=np.float64))
    out = np.array(getattr(stats.norm, function)(x), dtype=np.float64)
    finite = np.isfinite(df)
    if finite.any():
        out[finite] = getattr(stats.t, function)(x[finite], df[finite])
    return out


def _standard_ppf(levels: Sequence[float], df: np.ndarray) -> np.ndarray:
    return _standard("ppf", np.array([levels]), np.asarray(df, dtype=np.float64)[:, None])


def distribution_quantiles(loc: np.ndarray, scale: np.ndarray, df: np.ndarray) -> np.ndarray:
    """(n, 5) quantiles of the predicted log-return distributions at `QUANTILES`."""
    loc = np.asarray(loc, dtype=np.float64)
    return loc[:, None] + np.asarray(scale, dtype=np.float64)[:, None] * _standard_ppf(QUANTILES, df)


def prob_up(loc: np.ndarray, scale: np.ndarray, df: np.ndarray) -> np.ndarray:
    """P(next log return > 0) under the predicted distributions (a symmetric one: F(loc / scale))."""
    return _standard("cdf", np.asarray(loc, dtype=np.float64) / np.asarray(scale, dtype=np.float64), df)


def fit_calibration(result: ForecastResult, actual_returns: np.ndarray) -> dict[str, Any]:
    """Conformal scores |z| = |y - loc| / scale per ticker on held-out windows (the validation split).

    A ticker with fewer than MIN_TICKER_CALIBRATION windows, or one the model has never seen, uses the pooled
    scores (key "*").
    """
    from stockcli.ml.intervals import conformal_scores

    z = (np.asarray(actual_returns, dtype=np.float64) - result.loc) / result.scale
    tickers = np.asarray(result.tickers)
    scores: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    for ticker in sorted(set(result.tickers)):
        own = conformal_scores(z[tickers == ticker])
        counts[ticker] = int(own.size)
        if own.size >= MIN_TICKER_CALIBRATION:
            scores[ticker] = _rounded(own)
    pooled = conformal_scores(z)
    if pooled.size > POOLED_SCORES_KEPT:
        # Evenly spaced order statistics keep the empirical quantile function to ~1/2000.
        pooled = pooled[np.linspace(0, pooled.size - 1, POOLED_SCORES_KEPT).round().astype(int)]
    scores[POOLED] = _rounded(pooled)
    return {
        "method": "split conformal on |y - loc| / scale",
        "fit_on": "validation",
        "scores": scores,
        "n": counts,
        "n_pooled": int(np.isfinite(z).sum()),
    }


def _rounded(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def calibration_scores(calibration: Mapping[str, Any], ticker: str) -> np.ndarray:
    """The sorted conformal scores used for `ticker` (its own, else the pooled ones)."""
    scores = calibration.get("scores") or {}
    chosen = scores.get(ticker) or scores.get(POOLED) or []
    return np.asarray(chosen, dtype=np.float64)


def calibrated_quantiles(
    result: ForecastResult,
    calibration: Mapping[str, Any],
    alphas: Mapping[str, tuple[float, float]] | None = None,
) -> np.ndarray:
    """(n, 5) log-return quantiles, never crossing: loc -/+ scale x conformal half-width, per ticker.

    `alphas[ticker]` = the (80%, 95%) miscoverage levels adaptive conformal inference has moved to (nominal by
    default). Without calibration scores, the model's own quantiles.
    """
    out = np.empty((len(result), len(QUANTILES)))
    raw = None
    for i, ticker in enumerate(result.tickers):
        scores = calibration_scores(calibration, ticker)
        if scores.size == 0:
            raw = result.raw_quantiles() if raw is None else raw
            out[i] = raw[i]
            continue
        a80, a95 = (alphas or {}).get(ticker, (MISCOVERAGE[80], MISCOVERAGE[95]))
        hw80, hw95 = half_widths(scores, a80, a95)
        out[i] = quantiles_from_halfwidths(result.loc[i], result.scale[i], hw80, hw95)[0]
    return sort_quantiles(out)


def calibrated_tail_quantiles(
    result: ForecastResult, calibration: Mapping[str, Any], levels: Sequence[float]
) -> np.ndarray:
    """(n, len(levels)) lower-tail log-return quantiles (levels below 0.5), calibrated as
    `calibrated_quantiles`: the level-tau quantile is the lower end of the conformal interval at
    miscoverage 2 tau; the model's own without scores."""
    from stockcli.ml.intervals import conformal_quantile

    out = result.loc[:, None] + result.scale[:, None] * _standard_ppf(levels, result.df)
    for i, ticker in enumerate(result.tickers):
        scores = calibration_scores(calibration, ticker)
        if scores.size:
            widths = [conformal_quantile(scores, 2.0 * level) for level in levels]
            out[i] = result.loc[i] - result.scale[i] * np.asarray(widths)
    return np.asarray(out, dtype=np.float64)


def close_log_returns(closes: np.ndarray, sessions: int = 1) -> np.ndarray:
    """Log returns of a series of closes, aligned with them: log(close_t / close_(t-sessions)), NaN for the
    first `sessions` closes and wherever a close is missing."""
    returns = np.full(len(closes), np.nan)
    if len(closes) > sessions:
        with np.errstate(divide="ignore", invalid="ignore"):
            returns[sessions:] = np.log(closes[sessions:] / closes[:-sessions])
    return returns
