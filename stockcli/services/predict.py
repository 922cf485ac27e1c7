"""Predict the next trading session's close, with calibrated intervals, for every ticker of the watchlist.

The Production model (resolved once) is one global network: it serves every watchlist ticker, even one
it was not trained on (`unseen`), once that ticker has a full window. A ticker with missing, stale or
too little history goes to `failed` with its reason while the others are stored. What is served per
ticker (model or naive point, model or baseline intervals) was decided by `promote`; the intervals'
levels come from adaptive conformal inference, whose state `monitor` keeps.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.engine import Engine

from stockcli.clock import calendar_for
from stockcli.config import Settings
from stockcli.db import bars as bars_db
from stockcli.db import predictions as predictions_db
from stockcli.db.horizons import save_horizon_predictions
from stockcli.db.models import Base, HorizonPrediction, LatestPrediction
from stockcli.db.store import utcnow
from stockcli.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, EXIT_UNEXPECTED, UsageError
from stockcli.formats import finite
from stockcli.ml.intervals import INTERVALS, MISCOVERAGE
from stockcli.ml.selection import BASE_RATE

# A prediction made from this many of the most recent returns' volatility (see `[predict] max_move_vol`).
RECENT_VOLATILITY_SESSIONS = 20


@dataclass(frozen=True)
class Horizon:
    """One ticker's forecast of the close `horizon` sessions ahead, in prices, with its risk figures
    (losses of a long position as positive simple returns, from the served distribution)."""

    horizon: int
    target_date: date
    quantiles: tuple[float, ...]  # five closes at `QUANTILES`: lower 95, lower 80, median, upper 80, upper 95
    p_up: float | None
    var_95: float | None
    var_99: float | None
    es_95: float | None
    es_99: float | None
    source: str
    p_value: float | None
    tail: tuple[float | None, ...]  # log-return quantiles at `ml.risk.TAIL_LEVELS`
    candidates: dict[str, list[float | None]]  # every candidate's five closes, served or not
    p_up_source: str | None = None  # whose P(up): a candidate's, or "base_rate" (the horizon's)
    p_ups: dict[str, float | None] = field(default_factory=dict)  # every candidate's P(up), the base rate's


@dataclass(frozen=True)
class Prediction:
    """One ticker's next-session forecast: the served point, the served intervals and their origin.
    Fields named as columns of `latest_predictions` are stored there (`_row`)."""

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
    p_up_source: str | None = None  # whose chance of an up session: a candidate's, or "base_rate"
    unseen: bool = False  # the model was not trained on this ticker
    detail: dict[str, Any] = field(default_factory=dict)
    horizons: tuple[Horizon, ...] = ()  # every `[forecasters] horizons`, 1 included

    @property
    def change_pct(self) -> float:
        return (self.predicted_close / self.base_close - 1.0) * 100.0

    @property
    def quantiles(self) -> tuple[float | None, ...]:
        return tuple(getattr(self, name) for name in QUANTILE_FIELDS)


# The fields of a prediction's five closes, in quantile order (`ml.metrics.QUANTILE_COLUMNS`), and in
# the order of its JSON; then the JSON's keys before "horizons" (README, "JSON output").
QUANTILE_FIELDS = ("lower_95", "lower_80", "median", "upper_80", "upper_95")
JSON_QUANTILES = ("lower_80", "upper_80", "lower_95", "upper_95", "median")
RISK_FIELDS = ("var_95", "var_99", "es_95", "es_99")  # a horizon's, in the order of its JSON
PREDICTION_KEYS = (
    *("ticker", "base_date", "base_close", "predicted_close", "change_pct", "target_date"),
    *JSON_QUANTILES,
    *("p_up", "p_up_source", "source", "p_value", "interval_source", "interval_p_value", "unseen"),
    *("model_version", "dataset_run_id"),
)


@dataclass(frozen=True)
class FailedTicker:
    """A ticker that got no prediction, and why."""

    ticker: str
    reason: str
    kind: str  # no_bars, stale, too_little_history, implausible, rejected_rows (fetch, in `daily`)
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


# The exit code of each status: 3 some tickers failed (the rest saved), 4 none could be predicted,
# 1 a forecast was refused as implausible (a damaged model).
EXIT_CODES = {"ok": EXIT_OK, "partial": EXIT_PARTIAL, "stale": EXIT_NOTHING, "refused": EXIT_UNEXPECTED}


def status_of(result: PredictResult, *, degraded: bool = False) -> str:
    """ok, partial (some tickers failed, or the caller says `degraded`), stale (no prediction at all)
    or refused (a forecast implausible)."""
    if result.refused:
        return "refused"
    if not result.predictions:
        return "stale"
    return "partial" if result.failed or degraded else "ok"


def exit_code_for(result: PredictResult) -> int:
    """The documented exit code of a prediction (`EXIT_CODES`)."""
    return EXIT_CODES[status_of(result)]


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
    tickers: Sequence[str] | None = None,
) -> PredictResult:
    """Predict every watchlist ticker's close for the session after the newest closed session.

    Unpredictable tickers go to `failed` (exit code: `exit_code_for`). Raises NoProductionModelError
    without a model, UsageError for an as-of inside the model's training data.
    """
    from stockcli.features.indicators import serving_sessions
    from stockcli.ml import registry
    from stockcli.ml.forecast import forecast
    from stockcli.ml.forecasters import with_market
    from stockcli.services.models import require_production_version
    from stockcli.services.monitor import evaluate_matured

    if bundle is None:
        version = model_version or require_production_version(settings)
        bundle = registry.load_bundle(settings, version=version)
    version = str(bundle.version)
    refuse_inside_training_data(bundle, as_of)
    calendar = calendar_for(settings)
    base_date = calendar.last_closed_session(as_of, now=now)
    targets = target_sessions(calendar, base_date, settings.forecasters.horizons)
    # Score what has matured first: adaptive conformal inference learns from yesterday's close.
    evaluate_matured(engine, through=base_date, settings=settings)

    watchlist = list(settings.data.tickers if tickers is None else tickers)
    # The watchlist's, the context series' and the market's bars, as far back as the model needs.
    needed = serving_sessions(bundle.spec.indicators, int(bundle.sequence_length))
    # Before the calendar's first session: take everything.
    before = base_date - timedelta(days=int(needed * 1.6) + 30)
    start = max(calendar.sessions_back(base_date, needed, otherwise=before), bundle.spec.start_date)
    series = with_market([*watchlist, *bundle.context_tickers], settings.forecasters.har_market)
    bars = bars_db.load_bars(engine, series, start=start, end=base_date)
    failed = _without_current_bars(engine=engine, watchlist=watchlist, bars=bars, base_date=base_date)
    unready = {f.ticker for f in failed}
    ready = [t for t in watchlist if t not in unready]
    predictions: list[Prediction] = []
    if ready:
        sessions = calendar.sessions(start, base_date)
        result = forecast(bundle, bars, [base_date], tickers=ready, sessions=sessions, use_spec_start=False)
        failed += [_unforecastable(calendar, base_date, missing) for missing in result.missing]
        if len(result):
            served = _serve(settings, engine, bundle, result, bars, base_date, targets)
            failed += [item for item in served if isinstance(item, FailedTicker)]
            predictions = [item for item in served if isinstance(item, Prediction)]
    _store(engine, predictions, as_of=as_of, pipeline_run_id=pipeline_run_id)
    order = {t: i for i, t in enumerate(watchlist)}
    predictions.sort(key=lambda p: order.get(p.ticker, len(order)))
    failed.sort(key=lambda f: order.get(f.ticker, len(order)))
    # A day with no prediction keeps the last forecasts in the files (what the old API's readers get).
    files = (
        _write_files(settings, as_of, targets[1], version, predictions, failed)
        if write_files and predictions
        else ()
    )
    return PredictResult(
        as_of=as_of,
        model_version=version,
        dataset_run_id=str(bundle.dataset_run_id),
        base_date=base_date,
        target_date=targets[1],
        predictions=tuple(predictions),
        files=files,
        failed=tuple(failed),
    )


def _without_current_bars(
    *, engine: Engine, watchlist: Sequence[str], bars: Mapping[str, Any], base_date: date
) -> list[FailedTicker]:
    """The watchlist tickers without a bar of `base_date`: none stored at all, or only older ones."""
    absent = [t for t in watchlist if bars.get(t) is None or bars[t].empty]
    # Bars that all end before the lookback (a ticker delisted years ago) are stale, not missing.
    newest = bars_db.last_dates(engine, absent, end=base_date) if absent else {}
    newest.update({t: bars[t].index[-1].date() for t in watchlist if t not in absent})
    failed = []
    for ticker in watchlist:
        if ticker not in newest:
            reason = f"no stored bars up to {base_date.isoformat()}; run `stockcli fetch`"
            failed.append(FailedTicker(ticker, reason, "no_bars"))
        elif newest[ticker] < base_date:
            reason = (
                f"stale: its newest bar is {newest[ticker].isoformat()}, the newest closed session is "
                f"{base_date.isoformat()} (a failed fetch, or a halted or delisted stock)"
            )
            failed.append(FailedTicker(ticker, reason, "stale"))
    return failed


def _unforecastable(calendar: Any, base_date: date, missing: Any) -> FailedTicker:
    """A ticker the network could not forecast, with the first session it becomes predictable."""
    predictable_from = None
    if missing.kind == "too_little_history" and (count := missing.sessions_missing) > 0:
        with contextlib.suppress(Exception):  # beyond the calendar's range
            predictable_from = target_sessions(calendar, base_date, [count])[count]
    reason = missing.reason + (
        f"; predictable from {predictable_from.isoformat()}" if predictable_from else ""
    )
    return FailedTicker(missing.ticker, reason, missing.kind, predictable_from)


def refuse_inside_training_data(bundle: Any, as_of: date) -> None:
    """UsageError when `as_of` is inside the model's dataset: it would be scored as live accuracy."""
    data_end = bundle.data_end
    if data_end is not None and as_of < data_end:
        raise UsageError(
            f"--as-of {as_of} is inside the training data of model version {bundle.version}: it was "
            f"trained on sessions up to {data_end}, so its predictions there would be scored as live "
            "accuracy on sessions it has seen.",
            hint=f"Predict as of {data_end} or later; to replay the past, use `stockcli backtest` "
            "(it trains each model on the data up to its as-of).",
        )


def current_fits(
    *, engine: Engine, bundle: Any, tickers: Sequence[str], base_date: date
) -> dict[str, dict[str, Any]]:
    """The statistical candidates' parameters: the newest refit up to `base_date`, else the version's."""
    from stockcli.ml.forecasters import bundle_fits
    from stockcli.services.refit import refits_in_force

    fits = bundle_fits(bundle.baselines)
    refitted = refits_in_force(engine=engine, bundle=bundle, through=base_date)
    wanted = set(tickers)
    for name, per_ticker in refitted.items():
        fits.setdefault(name, {}).update({t: p for t, p in per_ticker.items() if t in wanted})
    return fits


@dataclass(frozen=True)
class _Serving:
    """What serving each ticker of one network forecast reads, loaded once for all of them."""

    settings: Settings
    bundle: Any
    result: Any  # the network's `ml.forecast.ForecastResult`
    bars: Mapping[str, Any]
    targets: Mapping[int, date]
    fits: Mapping[str, Mapping[str, Any]]  # the statistical candidates' parameters (`current_fits`)
    table: Mapping[str, Any]  # the statistical candidates (`ml.forecasters.build_table`)
    selection: Mapping[str, Any]  # the tested choice of each ticker (`serving_selection`)
    states: Mapping[tuple[str, int], Any]  # adaptive conformal inference's levels; empty: nominal
    horizon_serving: Mapping[tuple[str, int], Mapping[str, Any]]
    network: tuple[np.ndarray, np.ndarray, np.ndarray]  # quantiles: nominal, adapted, tail


def _serve(
    settings: Settings,
    engine: Engine,
    bundle: Any,
    result: Any,
    bars: Mapping[str, Any],
    base_date: date,
    targets: Mapping[int, date],
) -> list[Prediction | FailedTicker]:
    """Each ticker of the network's forecast served, or refused as implausible."""
    from stockcli.db.horizons import load_horizon_serving
    from stockcli.db.serving import load_interval_state, load_selection
    from stockcli.ml.forecast import calibrated_quantiles, calibrated_tail_quantiles
    from stockcli.ml.forecasters import NETWORK, build_table
    from stockcli.ml.risk import TAIL_LEVELS

    version = str(bundle.version)
    # Without `[intervals] aci`, every `_alphas` falls back to the nominal levels.
    states = load_interval_state(engine, result.tickers) if settings.intervals.aci else {}
    network_alphas = {t: _alphas(states, t, version, NETWORK) for t in result.tickers}
    serving = _Serving(
        settings=settings,
        bundle=bundle,
        result=result,
        bars=bars,
        targets=targets,
        fits=current_fits(engine=engine, bundle=bundle, tickers=result.tickers, base_date=base_date),
        table=build_table(settings),
        selection=load_selection(engine, version),
        states=states,
        horizon_serving=load_horizon_serving(engine, result.tickers),
        network=(
            calibrated_quantiles(result, bundle.calibration),
            calibrated_quantiles(result, bundle.calibration, network_alphas),
            calibrated_tail_quantiles(result, bundle.calibration, TAIL_LEVELS),
        ),
    )
    return [_serve_ticker(serving, i) for i in range(len(result.tickers))]


def _serve_ticker(serving: _Serving, i: int) -> Prediction | FailedTicker:
    """The `i`-th ticker served (the selected candidate at its adapted levels, every horizon) or refused."""
    from stockcli.ml.forecasters import NETWORK, ticker_bars
    from stockcli.ml.risk import TAIL_LEVELS
    from stockcli.ml.serving import (
        CandidateForecast,
        serve_horizon,
        served_p_up,
        served_source,
        statistical_forecasts,
    )

    settings, bundle, result = serving.settings, serving.bundle, serving.result
    version, ticker, base = str(bundle.version), result.tickers[i], result.base_closes[i]
    incumbent = settings.forecasters.incumbent_at(1)
    choice = _choice(serving.selection, ticker, incumbent, settings.promotion.alpha)
    history = ticker_bars(serving.bars, ticker, settings.forecasters.har_market)
    alphas_for = functools.partial(_alphas, serving.states, ticker, version)
    forecasts = statistical_forecasts(
        serving.table, serving.fits, ticker, history, alphas_for, extra_levels=TAIL_LEVELS
    )
    nominal, adapted, tails = serving.network
    forecasts[NETWORK] = CandidateForecast(nominal[i], adapted[i], float(result.p_up[i]), tails[i])
    source = served_source(choice["interval_source"], forecasts, incumbent) or NETWORK
    refused = _refused(serving, i)
    if refused is not None:
        return refused
    alphas = alphas_for(source)
    base_rate = _base_rate(bundle, ticker)
    p_up_source, p_up = served_p_up(choice["p_up_source"], forecasts, base_rate, source)
    interval_p_value = choice["interval_p_value"] if source == choice["interval_source"] else None
    first = serve_horizon(
        forecasts,
        horizon=1,
        chosen=source,
        p_value=interval_p_value,
        incumbent=source,
        p_up_choice=choice["p_up_source"],
        base_rate=base_rate,
    )
    horizons = further_horizons(serving, ticker, history)
    closes = base * np.exp(forecasts[source].adapted)
    model_close = float(result.predicted_closes[i])
    return Prediction(
        ticker=ticker,
        base_date=result.base_dates[i],
        base_close=float(base),
        predicted_close=model_close if choice["point_source"] == "model" else float(base),
        target_date=serving.targets[1],
        model_version=version,
        dataset_run_id=str(bundle.dataset_run_id),
        **dict(zip(QUANTILE_FIELDS, closes.tolist(), strict=True)),
        p_up=p_up,
        p_up_source=p_up_source,
        source=choice["point_source"],
        p_value=choice["point_p_value"],
        interval_source=source,
        interval_p_value=interval_p_value,
        unseen=ticker not in bundle.tickers,
        detail={
            **_candidates_detail(serving, i, forecasts),
            "p_up_source": p_up_source,
            "alphas": {"80": alphas[0], "95": alphas[1]},
            "selection": choice["basis"],
        },
        horizons=priced_horizons((first, *horizons), float(base), serving.targets),
    )


def _refused(serving: _Serving, i: int) -> FailedTicker | None:
    """The `i`-th ticker refused, when the network's move is implausible (`implausible_move`)."""
    result, base = serving.result, serving.result.base_closes[i]
    refused = implausible_move(
        predicted=float(base * np.exp(result.loc[i])),
        base=float(base),
        recent_returns=_recent_returns(serving.bars[result.tickers[i]]),
        limit=serving.settings.predict.max_move_vol,
    )
    if refused is None:
        return None
    return FailedTicker(
        result.tickers[i],
        f"the forecast was refused as implausible: {refused} Model version {serving.bundle.version} "
        "may be damaged; retrain (`stockcli retrain --force`).",
        "implausible",
    )


def _candidates_detail(serving: _Serving, i: int, forecasts: Mapping[str, Any]) -> dict[str, Any]:
    """The start of a prediction's `detail`: the network's distribution, every candidate's closes and P(up)."""
    result, base = serving.result, serving.result.base_closes[i]
    return {
        "model": {
            "predicted_close": float(result.predicted_closes[i]),
            "loc": float(result.loc[i]),
            "scale": float(result.scale[i]),
            "df": finite(float(result.df[i])),
        },
        "candidates": {name: _floats(base * np.exp(found.nominal)) for name, found in forecasts.items()},
        "p_up": {
            **{name: finite(found.p_up) for name, found in forecasts.items()},
            BASE_RATE: finite(_base_rate(serving.bundle, serving.result.tickers[i])),
        },
    }


def target_sessions(calendar: Any, base_date: date, horizons: Sequence[int]) -> dict[int, date]:
    """{horizon: the horizon-th exchange session after `base_date`} (holidays skipped)."""
    out: dict[int, date] = {}
    day = base_date
    for step in range(1, max(horizons) + 1):
        day = calendar.next_session(day)
        if step in horizons:
            out[step] = day
    return out


def further_horizons(serving: _Serving, ticker: str, history: Any) -> list[Any]:
    """The served forecasts of `ticker` at every horizon above 1: the tested choice (`horizon_serving`,
    else the horizon's incumbent), at its adapted levels when `[intervals] aci` is on; P(up) the horizon's base rate
    unless its Brier test chose a candidate (`horizon_serving.p_up_source`)."""
    from stockcli.ml.risk import TAIL_LEVELS
    from stockcli.ml.serving import serve_horizon, statistical_forecasts, tested_choice

    settings = serving.settings
    out = []
    for horizon in settings.forecasters.horizons:
        if horizon == 1:
            continue
        incumbent = settings.forecasters.incumbent_at(horizon)
        decided = serving.horizon_serving.get((ticker, horizon)) or {}

        def alphas(name: str, decided: Mapping[str, Any] = decided) -> tuple[float, float]:
            if settings.intervals.aci and decided.get("aci_source") == name:
                return float(decided["alpha_80"]), float(decided["alpha_95"])
            return MISCOVERAGE[80], MISCOVERAGE[95]

        forecasts = statistical_forecasts(
            serving.table, serving.fits, ticker, history, alphas, horizon=horizon, extra_levels=TAIL_LEVELS
        )
        found = serve_horizon(
            forecasts,
            horizon=horizon,
            chosen=tested_choice(decided, incumbent=incumbent, alpha=settings.promotion.alpha),
            p_value=decided.get("p_value"),
            incumbent=incumbent,
            p_up_choice=decided.get("p_up_source"),
            base_rate=_base_rate(serving.bundle, ticker, horizon),
        )
        if found is not None:
            out.append(found)
    return out


def priced_horizons(
    found: Sequence[Any], base_close: float, targets: Mapping[int, date]
) -> tuple[Horizon, ...]:
    """Served horizon forecasts (log returns) as closes from `base_close`, with VaR and ES."""
    from stockcli.ml.risk import risk_figures

    def priced(item: Any) -> Horizon:
        tail = np.asarray(item.tail, dtype=np.float64)
        figures = risk_figures(tail).row(0) if tail.size and np.isfinite(tail).all() else {}
        return Horizon(
            horizon=item.horizon,
            target_date=targets[item.horizon],
            quantiles=tuple(float(v) for v in base_close * np.exp(item.quantiles)),
            p_up=finite(float(item.p_up)),
            **{name: figures.get(name) for name in RISK_FIELDS},
            source=item.source,
            p_value=item.p_value,
            tail=tuple(finite(float(v)) for v in tail),
            candidates={name: _floats(base_close * np.exp(q)) for name, q in item.candidates.items()},
            p_up_source=item.p_up_source,
            p_ups={name: finite(float(value)) for name, value in item.p_ups.items()},
        )

    return tuple(priced(item) for item in found if item is not None)


def _store(
    engine: Engine, predictions: Sequence[Prediction], *, as_of: date, pipeline_run_id: int | None
) -> None:
    """Upsert `predictions` and their horizons, all created at one time."""
    stamp = {"as_of": as_of, "pipeline_run_id": pipeline_run_id, "created_at": utcnow()}
    points = [_row(LatestPrediction, p, **stamp) for p in predictions]
    horizons: list[dict[str, Any]] = []
    for p in predictions:
        common = {k: getattr(p, k) for k in ("ticker", "base_date", "model_version", "base_close")}
        horizons.extend(_row(HorizonPrediction, h, **common, **stamp, tail=list(h.tail)) for h in p.horizons)
    predictions_db.save_predictions(engine, points)  # every row built before anything is written
    save_horizon_predictions(engine, horizons)


def _row(table: type[Base], item: Prediction | Horizon, **others: Any) -> dict[str, Any]:
    """A row of `table`: `item`'s fields that are columns, then `others`, then its five quantiles."""
    names = {f.name for f in fields(item)}
    row = {c.name: getattr(item, c.name) for c in table.__table__.columns if c.name in names}
    return {**row, **others, **dict(zip(predictions_db.QUANTILE_PRICES, item.quantiles, strict=True))}


def horizon_json(base_close: float, h: Horizon) -> dict[str, Any]:
    """The JSON shape of one horizon of one prediction (`"horizons"` of predict/daily --json): the
    closes as at the top level, the risk figures as positive returns and as the closes they reach."""
    from stockcli.ml.risk import loss_price

    quantiles = dict(zip(QUANTILE_FIELDS, h.quantiles, strict=True))
    risk = {name: getattr(h, name) for name in RISK_FIELDS}
    prices = {
        f"{name}_price": None if value is None else float(loss_price(base_close, value))
        for name, value in risk.items()
    }
    return {
        "horizon": h.horizon,
        "target_date": h.target_date.isoformat(),
        **{key: quantiles[key] for key in JSON_QUANTILES},
        "p_up": h.p_up,
        "p_up_source": h.p_up_source,
        **risk,
        **prices,
        "source": h.source,
        "p_value": h.p_value,
    }


def _choice(selection: Mapping[str, Any], ticker: str, incumbent: str, alpha: float) -> dict[str, Any]:
    """What to serve for `ticker`: its own decision, the pooled one ("*"), else the baselines; the
    interval source only where a test chose it (`serving.stored_interval_source`)."""
    from stockcli.ml.serving import stored_interval_source

    item = selection.get(ticker) or selection.get("*")
    if item is None:
        return {
            "point_source": "naive",
            "point_p_value": None,
            "interval_source": incumbent,
            "interval_p_value": None,
            "p_up_source": None,
            "basis": "no selection recorded for this version: baselines served",
        }
    source, p_value = stored_interval_source(selection, ticker, incumbent=incumbent, alpha=alpha)
    return {
        "point_source": item.point_source,
        "point_p_value": item.point_p_value,
        "interval_source": source,
        "interval_p_value": p_value,
        "p_up_source": item.p_up_source,
        "basis": "own" if item.ticker == ticker else "pooled (unseen ticker)",
    }


def _base_rate(bundle: Any, ticker: str, horizon: int = 1) -> float:
    """The up-share of the ticker's training dates (pooled for an unseen one), of its `horizon`-session
    returns above 1; NaN when not recorded."""
    from stockcli.services.promote import base_rates

    return float(base_rates(bundle.baselines, [ticker], horizon)[0])


def _alphas(
    states: Mapping[tuple[str, int], Any], ticker: str, version: str, source: str
) -> tuple[float, float]:
    """The miscoverage levels adaptive conformal inference has reached for (ticker, version, source)."""

    def alpha(level: int) -> float:
        state = states.get((ticker, level))
        if state is not None and state.model_version == version and state.source == source:
            return float(state.alpha)
        return MISCOVERAGE[level]

    return alpha(80), alpha(95)


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


def _recent_returns(frame: Any) -> np.ndarray:
    """The last RECENT_VOLATILITY_SESSIONS finite log returns of a ticker's bars (the newest last)."""
    from stockcli.ml.forecast import close_log_returns

    returns = close_log_returns(frame["close"].to_numpy(dtype=np.float64))
    return returns[np.isfinite(returns)][-RECENT_VOLATILITY_SESSIONS:]


def _floats(values: np.ndarray) -> list[float | None]:
    return [finite(float(v)) for v in values]


def prediction_json(p: Prediction) -> dict[str, Any]:
    """The JSON shape of one prediction (predict --json, daily --json, the prediction files)."""
    plain = {key: v.isoformat() if isinstance(v := getattr(p, key), date) else v for key in PREDICTION_KEYS}
    return {**plain, "horizons": {str(h.horizon): horizon_json(p.base_close, h) for h in p.horizons}}


def failed_json(f: FailedTicker) -> dict[str, Any]:
    """The JSON shape of a ticker without a prediction."""
    return {**asdict(f), "predictable_from": f.predictable_from.isoformat() if f.predictable_from else None}


def _write_files(
    settings: Settings,
    as_of: date,
    target_date: date,
    version: str,
    predictions: Sequence[Prediction],
    failed: Sequence[FailedTicker],
) -> tuple[str, ...]:
    """`latest_predictions.json` and a dated history file in the data dir (what the old API served)."""
    from stockcli.storage import write_atomically  # names the file when the disk is full

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
    for path in (history, latest):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)
    return (str(latest), str(history))
