"""Realistic rows for the report and dashboard tests, written through the real schema and upserts.

Bars are the real sample closes; predictions and scored sessions are built from them the way `predict`
and `monitor` store them: GOOG's model beats the naive forecast, MSFT's does worse than it (so MSFT's
newest prediction serves the naive forecast), ^GSPC was served naive before version 2 and is marked
unseen. Every prediction carries five quantiles of the next close (a log-normal band of the ticker's
own daily volatility around the served interval's centre), `p_up` and where they came from.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy.engine import Engine

import stockcli
from stockcli.config import Settings
from stockcli.db import store
from stockcli.db.engine import open_database
from stockcli.db.models import LatestPrediction, ModelPerformance, Promotion, RawStockData

SAMPLE_DIR = Path(stockcli.__file__).resolve().parent / "sources" / "data"
AS_OF = date(2013, 3, 1)
NEXT_SESSION = date(2013, 3, 4)  # the NYSE session after Friday 2013-03-01
EVIL = "<script>alert('x')</script>"
# Standard normal quantiles of the 2.5, 10, 50, 90 and 97.5 percentiles (the q025..q975 columns).
Z_SCORES = (-1.959964, -1.281552, 0.0, 1.281552, 1.959964)
QUANTILE_COLUMNS = ("q025", "q10", "q50", "q90", "q975")
DM_TEST = "diebold-mariano (HAC), one-sided"


@dataclass(frozen=True)
class Serving:
    """What the newest prediction of a ticker serves, and the p-values of the tests that chose it."""

    source: str  # the point forecast: "model" or "naive" (the last close)
    p_value: float
    interval_source: str  # "model", "garch" or "rolling"; the scored sessions use it too
    interval_p_value: float
    unseen: bool = False


SERVING = {
    "GOOG": Serving("model", 0.012, "model", 0.031),
    "MSFT": Serving("naive", 0.62, "garch", 0.47),
    "^GSPC": Serving("model", 0.044, "rolling", 0.38, unseen=True),
}
OTHER_SERVING = Serving("model", 0.21, "garch", 0.55)


@dataclass(frozen=True)
class Filled:
    engine: Engine
    tickers: tuple[str, ...]
    closes: dict[str, list[tuple[date, float]]]
    predicted: dict[str, float]  # the stored next-session prediction per ticker (the served point)
    newest: dict[str, dict[str, object]]  # the stored next-session prediction row per ticker
    scored: dict[str, list[dict[str, object]]]  # the scored sessions per ticker, oldest first


def quantiles(center: float, volatility: float) -> dict[str, float]:
    """q025..q975 of a log-normal next close around `center` with daily log volatility `volatility`."""
    return {
        column: center * math.exp(z * volatility)
        for column, z in zip(QUANTILE_COLUMNS, Z_SCORES, strict=True)
    }


def chance_up(center: float, base: float, volatility: float) -> float:
    """P(next close > base) under the same log-normal."""
    return 0.5 * (1.0 + math.erf(math.log(center / base) / volatility / math.sqrt(2.0)))


def direction_score(predicted: float, actual: float, base: float) -> float | None:
    """1 hit, 0 miss, 0.5 for a forecast of no change, None when the close did not move."""
    if actual == base:
        return None
    if predicted == base:
        return 0.5
    return 1.0 if (predicted > base) == (actual > base) else 0.0


def sample_closes(
    ticker: str, *, sessions: int, as_of: date = AS_OF
) -> list[tuple[date, float, dict[str, float]]]:
    path = SAMPLE_DIR / f"{ticker.lstrip('^')}.csv"
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            day = date.fromisoformat(record["Date"])
            if day <= as_of:
                bar = {k.lower(): float(record[k]) for k in ("Open", "High", "Low", "Close", "Volume")}
                rows.append((day, bar["close"], bar))
    return rows[-sessions:]


def fill(
    settings: Settings,
    *,
    tickers: tuple[str, ...] = ("GOOG", "MSFT", "^GSPC"),
    sessions: int = 60,
    scored_sessions: int = 25,
    evil_text: bool = False,
) -> Filled:
    """Write bars, an older and a newest prediction per ticker, scored sessions, runs and promotions."""
    engine = open_database(settings)
    now = datetime(2013, 3, 1, 22, 0, tzinfo=UTC)
    closes: dict[str, list[tuple[date, float]]] = {}
    predicted: dict[str, float] = {}
    newest: dict[str, dict[str, object]] = {}
    scored: dict[str, list[dict[str, object]]] = {}
    with engine.begin() as connection:
        for ticker in tickers:
            history = sample_closes(ticker, sessions=sessions)
            closes[ticker] = [(day, close) for day, close, _ in history]
            serving = SERVING.get(ticker, OTHER_SERVING)
            values = [close for _, close, _ in history]
            volatility = statistics.pstdev(math.log(b / a) for a, b in itertools.pairwise(values))
            if serving.interval_source == "model":  # GOOG's good model knows 70% of the move: a narrower band
                volatility *= 0.4
            store.upsert(
                connection,
                RawStockData,
                [
                    {
                        "ticker": ticker,
                        "date": day,
                        "open": bar["open"],
                        "high": bar["high"],
                        "low": bar["low"],
                        "close": bar["close"],
                        "volume": int(bar["volume"]),
                        "source": "sample",
                        "fetched_at": now,
                    }
                    for day, _, bar in history
                ],
                key=("ticker", "date"),
            )
            performance = []
            predictions = []
            for index in range(len(history) - scored_sessions, len(history)):
                base_day, base_close, _ = history[index - 1]
                target_day, actual, _ = history[index]
                if ticker == "MSFT":  # a bad model: 2% off, against the move
                    guess = base_close - 0.02 * base_close * (1 if actual >= base_close else -1)
                else:  # a good one: most of the way from the last close to the real close
                    guess = base_close + 0.7 * (actual - base_close)
                version = "1" if index < len(history) - 10 else "2"
                source = "naive" if ticker == "^GSPC" and version == "1" else "model"
                served = guess if source == "model" else base_close
                center = served if serving.interval_source == "model" else base_close
                band = quantiles(center, volatility)
                predictions.append(
                    {
                        "target_date": target_day,
                        "ticker": ticker,
                        "model_version": version,
                        "as_of": base_day,
                        "base_date": base_day,
                        "base_close": base_close,
                        "predicted_close": served,
                        "dataset_run_id": "ds-older" if version == "1" else "ds-newer",
                        "pipeline_run_id": None,
                        "created_at": now - timedelta(days=len(history) - index),
                        **band,
                        "p_up": chance_up(center, base_close, volatility),
                        "source": source,
                        "p_value": serving.p_value if source == "model" else 0.31,
                        "interval_source": serving.interval_source,
                        "interval_p_value": serving.interval_p_value,
                        "unseen": False,
                        "detail": {"model": {"predicted_close": guess}},
                    }
                )
                performance.append(
                    {
                        "target_date": target_day,
                        "ticker": ticker,
                        "model_version": version,
                        "base_date": base_day,
                        "base_close": base_close,
                        "predicted_close": served,
                        "actual_close": actual,
                        "abs_error": abs(served - actual),
                        "abs_pct_error": abs(served - actual) / actual,
                        "direction_score": direction_score(served, actual, base_close),
                        "naive_abs_error": abs(actual - base_close),
                        "evaluated_at": now - timedelta(days=len(history) - index - 1),
                        **band,
                        "source": source,
                        "interval_source": serving.interval_source,
                    }
                )
            last_day, last_close, _ = history[-1]
            model_close = round(last_close * 1.004, 4)
            predicted[ticker] = model_close if serving.source == "model" else last_close
            center = predicted[ticker] if serving.interval_source == "model" else last_close
            newest[ticker] = {
                "target_date": NEXT_SESSION,
                "ticker": ticker,
                "model_version": "2",
                "as_of": AS_OF,
                "base_date": last_day,
                "base_close": last_close,
                "predicted_close": predicted[ticker],
                "dataset_run_id": "ds-newer",
                "pipeline_run_id": None,
                "created_at": now,
                **quantiles(center, volatility),
                "p_up": chance_up(center, last_close, volatility),
                "source": serving.source,
                "p_value": serving.p_value,
                "interval_source": serving.interval_source,
                "interval_p_value": serving.interval_p_value,
                "unseen": serving.unseen,
                "detail": {"model": {"predicted_close": model_close}},
            }
            predictions.append(newest[ticker])
            scored[ticker] = performance
            store.upsert(
                connection, LatestPrediction, predictions, key=("target_date", "ticker", "model_version")
            )
            store.upsert(
                connection, ModelPerformance, performance, key=("target_date", "ticker", "model_version")
            )
        promotions = [
            {
                "decided_at": now - timedelta(days=12),
                "candidate_version": "2",
                "production_version": "1",
                "metric": "mae",
                # The shapes `promote` stores: per-ticker blocks and their average, model next to naive.
                "candidate_metrics": {
                    "average": {"model": {"mae": 4.1, "mape": 0.0102}, "naive": {"mae": 4.4}}
                },
                "production_metrics": {
                    "average": {"model": {"mae": 4.6, "mape": 0.0114}, "naive": {"mae": 4.4}}
                },
                "naive_metrics": {"average": {"mae": 4.4, "mape": 0.0109}},
                "window_start": date(2012, 10, 1),
                "window_end": date(2013, 2, 14),
                "dataset_run_id": "ds-newer",
                "promoted": True,
                "dry_run": False,
                "reason": "The candidate is significantly better: MAE 4.1000 against production 4.6000.",
                "pipeline_run_id": None,
                "test": DM_TEST,
                "p_value": 0.0042,
                "improvement": 0.109,
                "improvement_low": 0.041,
                "improvement_high": 0.177,
            },
            {
                "decided_at": now - timedelta(days=2),
                "candidate_version": "3",
                "production_version": "2",
                "metric": "mae",
                "candidate_metrics": {"mae": 4.9},  # a flat block is read too
                "production_metrics": {"mae": 4.1},
                "naive_metrics": {"mae": 4.4},
                "window_start": date(2012, 10, 15),
                "window_end": date(2013, 2, 27),
                "dataset_run_id": "ds-newest",
                "promoted": False,
                "dry_run": False,
                "reason": ("Kept production: " + EVIL)
                if evil_text
                else "Kept production: candidate MAE 4.9000 is worse.",
                "pipeline_run_id": None,
                "test": DM_TEST,
                "p_value": 0.83,
                "improvement": -0.195,
                "improvement_low": -0.412,
                "improvement_high": 0.022,
            },
        ]
        connection.execute(Promotion.__table__.insert(), promotions)
    ok_run = store.start_run(engine, command="daily", as_of=AS_OF)
    store.finish_run(engine, ok_run, status="ok", details={"predicted": len(tickers)})
    failed_run = store.start_run(engine, command="fetch", as_of=AS_OF)
    store.finish_run(
        engine,
        failed_run,
        status="failed",
        error="Source error for MSFT: timeout." + (EVIL if evil_text else ""),
    )
    return Filled(
        engine=engine, tickers=tickers, closes=closes, predicted=predicted, newest=newest, scored=scored
    )


@dataclass(frozen=True)
class HorizonsFilled:
    ticker: str
    base_date: date  # the newest base session (AS_OF)
    targets: dict[int, date]  # horizon -> target session of the newest forecasts
    newest: dict[int, dict[str, object]]  # horizon -> the stored row from the newest base
    exception_date: date  # the one session whose loss exceeds its 99% VaR
    scored: int  # scored 1-session forecasts in the risk window


def add_horizons(
    settings: Settings, filled: Filled, *, ticker: str = "GOOG", sessions: int = 40
) -> HorizonsFilled:
    """Store `horizon_predictions` rows the way `predict` and `monitor` do for `ticker`: a scored
    1-session forecast for each of its last `sessions` closes (log-normal around the last close,
    three times the real volatility, so no loss reaches the 99% VaR), except on the day of the
    largest fall, whose band is so narrow that the fall exceeds its 99% VaR; and the newest
    forecasts 1, 5 and 20 sessions ahead from AS_OF (unscored)."""
    from statistics import NormalDist

    import numpy as np

    from stockcli.clock import calendar_for
    from stockcli.db.horizons import save_horizon_predictions
    from stockcli.ml.risk import TAIL_LEVELS, risk_figures

    history = filled.closes[ticker]
    volatility = statistics.pstdev(math.log(b / a) for (_, a), (_, b) in itertools.pairwise(history))
    pairs = list(itertools.pairwise(history))[-sessions:]
    worst = min(pairs, key=lambda pair: pair[1][1] / pair[0][1])
    created = datetime(2013, 3, 1, 22, 0, tzinfo=UTC)

    def row(base: tuple[date, float], target: date, horizon: int, sigma: float) -> dict[str, object]:
        tail = [sigma * NormalDist().inv_cdf(level) for level in TAIL_LEVELS]
        figures = risk_figures(np.array(tail)).row(0)
        return {
            "ticker": ticker,
            "base_date": base[0],
            "horizon": horizon,
            "model_version": "2",
            "target_date": target,
            "as_of": base[0],
            "base_close": base[1],
            **quantiles(base[1], sigma),
            "p_up": 0.5,
            **figures,
            "source": "har_range",
            "p_value": 0.03,
            "tail": tail,
            "created_at": created,
        }

    rows = []
    for base, (target_day, actual) in pairs:
        fall = abs(math.log(actual / base[1]))
        sigma = fall / 4 if (base, (target_day, actual)) == worst else 3 * volatility
        rows.append({**row(base, target_day, 1, sigma), "actual_close": actual, "scored_at": created})
    calendar = calendar_for(settings)
    targets: dict[int, date] = {}
    day = AS_OF
    for step in range(1, 21):
        day = calendar.next_session(day)
        if step in (1, 5, 20):
            targets[step] = day
    newest = {h: row(history[-1], targets[h], h, volatility * math.sqrt(h)) for h in targets}
    save_horizon_predictions(filled.engine, rows)
    save_horizon_predictions(filled.engine, list(newest.values()))
    return HorizonsFilled(ticker, AS_OF, targets, newest, worst[1][0], len(rows))
