"""Predict the next trading session's close, with calibrated intervals, for every ticker of the watchlist.

Prediction is per ticker. The Production model (resolved once) is one global network, so it serves
every ticker of `[data] tickers`, including one it was never trained on (`unseen`) as soon as that
ticker has a full window of history. A ticker whose bars are missing or stale (a failed fetch, a
halted or delisted stock), or that is too young, is reported in `failed` with its reason (and, when
too young, the first session it becomes predictable) while the others are predicted and stored.

What is served for each ticker was decided by `promote` on the promotion window (`serving_selection`):
the model's point forecast where it beat the naive forecast significantly, the naive forecast (the
last close) elsewhere; the model's calibrated intervals where they beat GARCH(1,1)-t significantly,
GARCH's elsewhere. The intervals' miscoverage levels come from adaptive conformal inference, whose
state `monitor` keeps in the database. Before predicting, matured predictions are scored (so the
state has learned from yesterday's close).
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.clock import calendar_for
from stockcli.config import Settings
from stockcli.db import bars as bars_db
from stockcli.db import predictions as predictions_db
from stockcli.db.store import utcnow
from stockcli.errors import NoProductionModelError
from stockcli.ml.intervals import INTERVALS, MISCOVERAGE

# A prediction made from this many of the most recent returns' volatility (see `[predict] max_move_vol`).
RECENT_VOLATILITY_SESSIONS = 20


@dataclass(frozen=True)
class Prediction:
    """One ticker's next-session forecast: the served point, the served intervals and their origin."""

    ticker: str
    base_date: date
    base_close: float
    predicted_close: float
    target_date: date
    model_version: str
    dataset_run_id: str
    lower_80: float | None = None
    upper_80: float | None = None
    lower_95: float | None = None
    upper_95: float | None = None
    median: float | None = None  # the median of the served interval distribution
    p_up: float | None = None
    source: str = "model"  # what the point forecast is: "model" or "naive"
    p_value: float | None = None  # the test that chose it (model vs naive on the promotion window)
    interval_source: str = "model"  # "model", "garch" or "rolling"
    interval_p_value: float | None = None
    unseen: bool = False  # the model was not trained on this ticker
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def change_pct(self) -> float:
        return (self.predicted_close / self.base_close - 1.0) * 100.0

    @property
    def quantiles(self) -> tuple[float | None, ...]:
        return (self.lower_95, self.lower_80, self.median, self.upper_80, self.upper_95)


@dataclass(frozen=True)
class FailedTicker:
    """A ticker that got no prediction, and why."""

    ticker: str
    reason: str
    kind: str  # no_bars, stale, too_little_history, implausible
    predictable_from: date | None = None


@dataclass(frozen=True)
class PredictResult:
    as_of: date
    model_version: str
    dataset_run_id: str
    base_date: date
    target_date: date
    predictions: tuple[Prediction, ...]
    files: tuple[str, ...]
    failed: tuple[FailedTicker, ...] = ()

    @property
    def refused(self) -> tuple[FailedTicker, ...]:
        """Tickers whose forecast was refused as implausible (a damaged model: exit 1)."""
        return tuple(f for f in self.failed if f.kind == "implausible")


def exit_code_for(result: PredictResult) -> int:
    """0 every ticker predicted; 3 some failed (the rest saved); 4 none could be predicted; 1 a
    forecast was refused as implausible (a damaged model)."""
    from stockcli.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, EXIT_UNEXPECTED

    if result.refused:
        return EXIT_UNEXPECTED
    if not result.predictions:
        return EXIT_NOTHING
    return EXIT_PARTIAL if result.failed else EXIT_OK


def production_version(settings: Settings) -> str:
    """The version holding the Production alias, resolved once; NoProductionModelError if none."""
    from stockcli.ml import registry

    version = registry.resolve_alias(settings, "Production")
    if version is None:
        raise NoProductionModelError(
            "No production model yet.", hint="Run `stockcli retrain --force` first (or `stockcli daily`)."
        )
    return str(version)


def required_base_date(settings: Settings, as_of: date, *, now: datetime | None = None) -> date:
    """The newest session whose bar must be stored for an honest prediction as of `as_of`."""
    return calendar_for(settings).last_closed_session(as_of, now=now)


def predict(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    model_version: str | None = None,
    bundle: Any = None,
    pipeline_run_id: int | None = None,
    now: datetime | None = None,
    write_files: bool = True,
    bundle_loader: Callable[[str], Any] | None = None,
    tickers: Sequence[str] | None = None,
) -> PredictResult:
    """Predict every watchlist ticker's close for the session after the newest closed session.

    The model version is resolved once (Production unless given) and used throughout. Tickers that
    cannot be predicted are returned in `failed`; the caller decides the exit code (3 when some
    failed, 4 when none could be predicted, 1 when a forecast was refused as implausible). Raises
    NoProductionModelError without a model.
    """
    from stockcli.db.serving import load_interval_state, load_selection
    from stockcli.features.dataset import serving_lookback
    from stockcli.ml import registry
    from stockcli.ml.forecast import baseline_quantiles, calibrated_quantiles, forecast
    from stockcli.services.monitor import evaluate_matured

    if bundle is None:
        version = model_version or production_version(settings)
        bundle = bundle_loader(version) if bundle_loader else registry.load_bundle(settings, version=version)
    version = str(bundle.version)
    calendar = calendar_for(settings)
    base_date = required_base_date(settings, as_of, now=now)
    target_date = calendar.next_session(base_date)
    # Score what has matured first: adaptive conformal inference learns from yesterday's close.
    evaluate_matured(engine, through=base_date, settings=settings)

    watchlist = list(tickers or settings.data.tickers)
    series = list(dict.fromkeys([*watchlist, *bundle.context_tickers]))
    spec_start = _spec_start(bundle.spec)
    lookback = int(bundle.spec.get("serving_lookback") or serving_lookback(bundle.spec["indicators"]))
    needed = lookback + int(bundle.sequence_length) + int(bundle.spec.get("warmup_sessions", 0)) + 5
    start = _lookback_start(calendar, base_date, needed)
    if spec_start is not None and spec_start > start:
        start = spec_start
    bars = bars_db.load_bars(engine, series, start=start, end=base_date)

    failed: list[FailedTicker] = []
    ready: list[str] = []
    absent = [t for t in watchlist if bars.get(t) is None or bars[t].empty]
    # Bars that all end before the lookback (a ticker delisted years ago) are stale, not missing.
    older = _newest_bars(engine, absent, base_date) if absent else {}
    for ticker in watchlist:
        frame = bars.get(ticker)
        if frame is None or frame.empty:
            if ticker not in older:
                failed.append(
                    FailedTicker(
                        ticker,
                        f"no stored bars up to {base_date.isoformat()}; run `stockcli fetch`",
                        "no_bars",
                    )
                )
                continue
            newest = older[ticker]
        else:
            newest = frame.index[-1].date()
        if newest < base_date:
            failed.append(
                FailedTicker(
                    ticker,
                    f"stale: its newest bar is {newest.isoformat()}, the newest closed session is "
                    f"{base_date.isoformat()} (a failed fetch, or a halted or delisted stock)",
                    "stale",
                )
            )
            continue
        ready.append(ticker)

    result = None
    if ready:
        sessions = calendar.sessions(start, base_date)
        result = forecast(bundle, bars, [base_date], tickers=ready, sessions=sessions, use_spec_start=False)
        for missing in result.missing:
            predictable_from = None
            if missing.kind == "too_little_history" and missing.sessions_missing > 0:
                predictable_from = _sessions_after(calendar, base_date, missing.sessions_missing)
            reason = missing.reason + (
                f"; predictable from {predictable_from.isoformat()}" if predictable_from else ""
            )
            failed.append(FailedTicker(missing.ticker, reason, missing.kind, predictable_from))

    predictions: list[Prediction] = []
    if result is not None and len(result):
        selection = load_selection(engine, version)
        states = load_interval_state(engine, result.tickers)
        known = set(bundle.tickers)
        rows = list(range(len(result)))
        choices = [_choice(selection, t) for t in result.tickers]
        alphas_model = {
            t: _alphas(states, t, version, "model") for t, c in zip(result.tickers, choices, strict=True)
        }
        model_q = calibrated_quantiles(result, bundle.calibration, alphas_model)
        base = result.base_closes
        baselines = baseline_quantiles(
            bundle.baselines,
            bars,
            result.tickers,
            result.base_dates,
            rolling_window=settings.intervals.baseline_window,
            fit_missing=False,  # a ticker without fitted GARCH parameters is served the rolling band
        )
        model_p_up = result.p_up
        for i in rows:
            ticker = result.tickers[i]
            choice = choices[i]
            interval_source = choice["interval_source"]
            garch_q = baselines["garch"][i]
            rolling_q = baselines["rolling"][i]
            if interval_source == "garch" and not np.isfinite(garch_q).all():
                interval_source = "rolling"
            if interval_source == "rolling" and not np.isfinite(rolling_q).all():
                interval_source = "model"
            if interval_source == "model":
                served_q = model_q[i]
                p_up = float(model_p_up[i])
                alphas = alphas_model[ticker]
            else:
                nominal_q = garch_q if interval_source == "garch" else rolling_q
                alphas = _alphas(states, ticker, version, interval_source)
                nu = _garch_nu(bundle.baselines, ticker) if interval_source == "garch" else math.inf
                served_q = adapt_baseline_quantiles(nominal_q, alphas, nu)
                p_up = baseline_p_up(served_q, nu)
            closes = base[i] * np.exp(served_q)
            model_close = float(result.predicted_closes[i])
            point_source = choice["point_source"]
            predicted = model_close if point_source == "model" else float(base[i])
            recent = _recent_returns(bars[ticker])
            refused = implausible_move(
                predicted=float(result.base_closes[i] * np.exp(result.loc[i])),
                base=float(base[i]),
                recent_returns=recent,
                limit=settings.predict.max_move_vol,
            )
            if refused is not None:
                failed.append(
                    FailedTicker(
                        ticker,
                        f"the forecast was refused as implausible: {refused} Model version {version} may be "
                        "damaged; retrain (`stockcli retrain --force`).",
                        "implausible",
                    )
                )
                continue
            predictions.append(
                Prediction(
                    ticker=ticker,
                    base_date=result.base_dates[i],
                    base_close=float(base[i]),
                    predicted_close=predicted,
                    target_date=target_date,
                    model_version=version,
                    dataset_run_id=str(bundle.dataset_run_id),
                    lower_95=float(closes[0]),
                    lower_80=float(closes[1]),
                    median=float(closes[2]),
                    upper_80=float(closes[3]),
                    upper_95=float(closes[4]),
                    p_up=p_up,
                    source=point_source,
                    p_value=choice["point_p_value"],
                    interval_source=interval_source,
                    interval_p_value=choice["interval_p_value"],
                    unseen=ticker not in known,
                    detail={
                        "model": {
                            "predicted_close": model_close,
                            "quantiles": _floats(base[i] * np.exp(model_q[i])),
                            "p_up": float(model_p_up[i]),
                            "loc": float(result.loc[i]),
                            "scale": float(result.scale[i]),
                            "df": _finite_or_none(float(result.df[i])),
                        },
                        "baselines": {
                            "garch": _floats(base[i] * np.exp(garch_q)),
                            "rolling": _floats(base[i] * np.exp(rolling_q)),
                        },
                        "alphas": {"80": alphas[0], "95": alphas[1]},
                        "selection": choice["basis"],
                    },
                )
            )
    created = utcnow()
    predictions_db.save_predictions(
        engine,
        [
            {
                "target_date": p.target_date,
                "ticker": p.ticker,
                "model_version": p.model_version,
                "as_of": as_of,
                "base_date": p.base_date,
                "base_close": p.base_close,
                "predicted_close": p.predicted_close,
                "dataset_run_id": p.dataset_run_id,
                "pipeline_run_id": pipeline_run_id,
                "created_at": created,
                "q025": p.lower_95,
                "q10": p.lower_80,
                "q50": p.median,
                "q90": p.upper_80,
                "q975": p.upper_95,
                "p_up": p.p_up,
                "source": p.source,
                "p_value": p.p_value,
                "interval_source": p.interval_source,
                "interval_p_value": p.interval_p_value,
                "unseen": p.unseen,
                "detail": p.detail,
            }
            for p in predictions
        ],
    )
    order = {t: i for i, t in enumerate(watchlist)}
    predictions.sort(key=lambda p: order.get(p.ticker, len(order)))
    failed.sort(key=lambda f: order.get(f.ticker, len(order)))
    files = _write_files(settings, as_of, target_date, version, predictions, failed) if write_files else ()
    return PredictResult(
        as_of=as_of,
        model_version=version,
        dataset_run_id=str(bundle.dataset_run_id),
        base_date=base_date,
        target_date=target_date,
        predictions=tuple(predictions),
        files=files,
        failed=tuple(failed),
    )


# --- serving decisions ----------------------------------------------------------------------------------


def _choice(selection: Mapping[str, Any], ticker: str) -> dict[str, Any]:
    """What to serve for `ticker`: its own tested decision, the pooled one ("*") for an unseen ticker,
    or, for a version without a recorded selection, the baselines (nothing was shown to beat them)."""
    item = selection.get(ticker) or selection.get("*")
    if item is None:
        return {
            "point_source": "naive",
            "point_p_value": None,
            "interval_source": "garch",
            "interval_p_value": None,
            "basis": "no selection recorded for this version: baselines served",
        }
    return {
        "point_source": item.point_source,
        "point_p_value": item.point_p_value,
        "interval_source": item.interval_source,
        "interval_p_value": item.interval_p_value,
        "basis": "own" if item.ticker == ticker else "pooled (unseen ticker)",
    }


def _alphas(
    states: Mapping[tuple[str, int], Any], ticker: str, version: str, source: str
) -> tuple[float, float]:
    """The miscoverage levels adaptive conformal inference has reached for (ticker, version, source)."""
    out = []
    for level in (80, 95):
        state = states.get((ticker, level))
        if state is not None and state.model_version == version and state.source == source:
            out.append(float(state.alpha))
        else:
            out.append(MISCOVERAGE[level])
    return out[0], out[1]


def _garch_nu(baselines: Mapping[str, Any], ticker: str) -> float:
    params = ((baselines or {}).get("garch") or {}).get(ticker) or {}
    nu = params.get("nu")
    return float(nu) if nu is not None and np.isfinite(nu) and nu > 2 else math.inf


def _standardized_ppf(level: float, nu: float) -> float:
    return _standardized_ppf_cached(float(level), float(nu))


@functools.lru_cache(maxsize=4096)
def _standardized_ppf_cached(level: float, nu: float) -> float:
    # scipy.special's ndtri and stdtrit are what stats.norm.ppf and stats.t.ppf evaluate, without
    # their ~0.1 ms of argument handling per call (four calls a ticker, levels adapted per ticker).
    from scipy import special

    if not np.isfinite(nu):
        return float(special.ndtri(level))
    # The standardized t (unit variance) that GARCH-t uses.
    return float(special.stdtrit(nu, level) * math.sqrt((nu - 2.0) / nu))


def adapt_baseline_quantiles(quantiles: np.ndarray, alphas: tuple[float, float], nu: float) -> np.ndarray:
    """A baseline's five log-return quantiles at adapted miscoverage levels (80% and 95% intervals).

    The baseline's own distribution (normal for the rolling band, GARCH's standardized t) gives the
    half-width at any level: it scales with that distribution's quantile ratio. Quantiles never cross.
    """
    from stockcli.ml.intervals import sort_quantiles

    q = np.asarray(quantiles, dtype=np.float64)
    center = q[2]
    spread95 = (q[4] - q[0]) / 2.0
    unit = spread95 / _standardized_ppf(1.0 - MISCOVERAGE[95] / 2.0, nu)
    out = q.copy()
    for level, alpha in zip((80, 95), alphas, strict=True):
        low, high = (1, 3) if level == 80 else (0, 4)
        clipped = min(max(alpha, 1e-4), 0.9999)
        half = unit * _standardized_ppf(1.0 - clipped / 2.0, nu)
        out[low], out[high] = center - half, center + half
    return sort_quantiles(out[None, :])[0]


def baseline_p_up(quantiles: np.ndarray, nu: float) -> float:
    """P(next return > 0) under a baseline's (symmetric) distribution of the served quantiles."""
    # scipy.special's ndtr and stdtr are what stats.norm.cdf and stats.t.cdf evaluate, without
    # their ~0.1 ms of argument handling per call.
    from scipy import special

    center = float(quantiles[2])
    unit = float(quantiles[4] - quantiles[0]) / 2.0 / _standardized_ppf(1.0 - MISCOVERAGE[95] / 2.0, nu)
    if not unit > 0:
        return 0.5
    z = center / unit
    if not np.isfinite(nu):
        return float(special.ndtr(z))
    return float(special.stdtr(nu, z * math.sqrt(nu / (nu - 2.0))))


def implausible_move(
    *, predicted: float, base: float, recent_returns: np.ndarray, limit: float
) -> str | None:
    """Why a model forecast is implausible, or None: a move beyond `limit` x the ticker's recent
    daily volatility (a damaged or tampered model, never a market move a daily model can foresee)."""
    if not (np.isfinite(predicted) and predicted > 0):
        return f"the predicted close {predicted!r} is not a positive number."
    if len(recent_returns) < 2:
        return None
    volatility = float(np.std(recent_returns, ddof=1))
    move = abs(math.log(predicted / base))
    if volatility > 0 and move > limit * volatility:
        return (
            f"a move of {math.expm1(move) * 100:+.1f}% is {move / volatility:.1f}x its recent daily volatility "
            f"({volatility * 100:.2f}%), above the limit of {limit:g}x ([predict] max_move_vol)."
        )
    return None


# --- helpers --------------------------------------------------------------------------------------------


def _recent_returns(frame: Any) -> np.ndarray:
    """The last RECENT_VOLATILITY_SESSIONS finite log returns of a ticker's bars (the newest last)."""
    from stockcli.ml.forecast import close_log_returns

    returns = close_log_returns(frame["close"].to_numpy(dtype=np.float64))
    return returns[np.isfinite(returns)][-RECENT_VOLATILITY_SESSIONS:]


def _newest_bars(engine: Engine, tickers: Sequence[str], through: date) -> dict[str, date]:
    """The newest stored bar of each ticker on or before `through` (tickers without any left out)."""
    return bars_db.last_dates(engine, tickers, end=through)


def _spec_start(spec: dict[str, Any]) -> date | None:
    value = spec.get("start_date") or spec.get("start")
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value if isinstance(value, date) else None


def _lookback_start(calendar: Any, base_date: date, sessions: int) -> date:
    from stockcli.errors import UsageError

    try:
        return calendar.sessions_back(base_date, sessions)  # type: ignore[no-any-return]
    except UsageError:  # before the calendar's first session: take everything
        return base_date - timedelta(days=int(sessions * 1.6) + 30)


def _sessions_after(calendar: Any, day: date, count: int) -> date | None:
    try:
        for _ in range(count):
            day = calendar.next_session(day)
    except Exception:  # beyond the calendar's range
        return None
    return day


def _floats(values: np.ndarray) -> list[float | None]:
    return [_finite_or_none(float(v)) for v in values]


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def prediction_json(p: Prediction) -> dict[str, Any]:
    """The JSON shape of one prediction (predict --json, daily --json, the prediction files)."""
    return {
        "ticker": p.ticker,
        "base_date": p.base_date.isoformat(),
        "base_close": p.base_close,
        "predicted_close": p.predicted_close,
        "change_pct": p.change_pct,
        "target_date": p.target_date.isoformat(),
        "lower_80": p.lower_80,
        "upper_80": p.upper_80,
        "lower_95": p.lower_95,
        "upper_95": p.upper_95,
        "median": p.median,
        "p_up": p.p_up,
        "source": p.source,
        "p_value": p.p_value,
        "interval_source": p.interval_source,
        "interval_p_value": p.interval_p_value,
        "unseen": p.unseen,
        "model_version": p.model_version,
        "dataset_run_id": p.dataset_run_id,
    }


def failed_json(f: FailedTicker) -> dict[str, Any]:
    """The JSON shape of a ticker without a prediction."""
    return {
        "ticker": f.ticker,
        "reason": f.reason,
        "kind": f.kind,
        "predictable_from": f.predictable_from.isoformat() if f.predictable_from else None,
    }


def _atomic_write(path: Path, text: str) -> None:
    from stockcli.storage import write_atomically  # names the file when the disk is full

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, text)


def _write_files(
    settings: Settings,
    as_of: date,
    target_date: date,
    version: str,
    predictions: Sequence[Prediction],
    failed: Sequence[FailedTicker],
) -> tuple[str, ...]:
    """`latest_predictions.json` and a dated history file in the data dir (what the old API served)."""
    payload = {
        "as_of": as_of.isoformat(),
        "target_date": target_date.isoformat(),
        "model_version": version,
        "predictions": [prediction_json(p) for p in predictions],
        "failed": [failed_json(f) for f in failed],
        "intervals": {f"{level}%": list(bounds) for level, bounds in INTERVALS.items()},
    }
    text = json.dumps(payload, indent=2)
    folder = settings.data_dir / "predictions"
    latest = folder / "latest_predictions.json"
    history = folder / "history" / f"predictions_{target_date.isoformat()}.json"
    _atomic_write(history, text)
    _atomic_write(latest, text)
    return (str(latest), str(history))
