"""Realistic rows for the report and dashboard tests, written through the real schema and upserts.

Bars are the real sample closes; predictions and scored sessions are built from them the way `predict`
and `monitor` store them: GOOG's model beats the naive forecast, MSFT's does worse than it.
"""

from __future__ import annotations

import csv
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


@dataclass(frozen=True)
class Filled:
    engine: Engine
    tickers: tuple[str, ...]
    closes: dict[str, list[tuple[date, float]]]
    predicted: dict[str, float]  # the stored next-session prediction per ticker


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
    with engine.begin() as connection:
        for ticker in tickers:
            history = sample_closes(ticker, sessions=sessions)
            closes[ticker] = [(day, close) for day, close, _ in history]
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
                predictions.append(
                    {
                        "target_date": target_day,
                        "ticker": ticker,
                        "model_version": version,
                        "as_of": base_day,
                        "base_date": base_day,
                        "base_close": base_close,
                        "predicted_close": guess,
                        "dataset_run_id": "ds-older" if version == "1" else "ds-newer",
                        "pipeline_run_id": None,
                        "created_at": now - timedelta(days=len(history) - index),
                    }
                )
                performance.append(
                    {
                        "target_date": target_day,
                        "ticker": ticker,
                        "model_version": version,
                        "base_date": base_day,
                        "base_close": base_close,
                        "predicted_close": guess,
                        "actual_close": actual,
                        "abs_error": abs(guess - actual),
                        "abs_pct_error": abs(guess - actual) / actual,
                        "direction_hit": (guess - base_close) * (actual - base_close) > 0,
                        "naive_abs_error": abs(actual - base_close),
                        "evaluated_at": now - timedelta(days=len(history) - index - 1),
                    }
                )
            last_day, last_close, _ = history[-1]
            predicted[ticker] = round(last_close * 1.004, 4)
            predictions.append(
                {
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
                }
            )
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
                "reason": "Candidate MAE 4.1000 beats production 4.6000 by 10.9% on the same window.",
                "pipeline_run_id": None,
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
    return Filled(engine=engine, tickers=tickers, closes=closes, predicted=predicted)
