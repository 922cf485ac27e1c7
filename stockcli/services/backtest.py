"""Replay `daily` over history: every trading session of a range, with the clock set to it.

The replay runs in a scratch workspace (its own SQLite database, MLflow store and Optuna storage);
the user's database and registry are only read, never written. With the `yahoo` source the replay
reads the bars already stored by the user (exported to a CSV folder in the scratch workspace), so
it needs no network. This is how a user picks monitoring thresholds before going live.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from stockcli.clock import trading_calendar
from stockcli.config import Settings
from stockcli.errors import NoDataError, StockCliError, UsageError


@dataclass(frozen=True)
class RetrainEvent:
    as_of: date
    reason: str
    model_version: str | None
    promoted: bool
    promotion_reason: str | None


@dataclass(frozen=True)
class BacktestResult:
    start: date
    end: date
    workspace: str
    sessions: int
    sessions_failed: int
    predictions: int
    evaluated: int
    retrains: tuple[RetrainEvent, ...]
    promotions: int
    metrics: dict[str, Any]
    per_ticker: dict[str, dict[str, Any]]
    wall_s: float
    sessions_per_s: float
    failures: tuple[str, ...] = field(default_factory=tuple)


def scratch_settings(settings: Settings, workspace: Path) -> Settings:
    """The same settings pointed at a scratch workspace: database, MLflow and Optuna inside it."""
    return settings.replace(
        storage={"data_dir": workspace, "database_url": ""},
        mlflow={"tracking_uri": ""},
        tuning={"storage_url": ""},
    )


def _export_stored_bars(settings: Settings, folder: Path, end: date) -> None:
    """Write the user's stored bars (read-only) as <TICKER>.csv files for the replay's csv source."""
    from stockcli.db.bars import load_bars
    from stockcli.db.engine import open_database

    engine = open_database(settings, upgrade=False)
    try:
        bars = load_bars(engine, list(settings.data.tickers), end=end)
    finally:
        engine.dispose()  # leave no open handle (nor WAL files) on the user's database
    missing = [t for t, frame in bars.items() if frame.empty]
    if missing:
        raise NoDataError(
            f"No stored bars for {', '.join(missing)} to replay.",
            hint="Run `stockcli fetch` first: with the yahoo source the backtest replays the stored bars.",
        )
    folder.mkdir(parents=True, exist_ok=True)
    for ticker, frame in bars.items():
        out = frame.rename(columns=str.capitalize)
        out.index.name = "Date"
        out.to_csv(folder / f"{ticker}.csv", float_format="%.10g")


def backtest(
    *,
    settings: Settings,
    start: date,
    end: date,
    workspace: Path,
    n_trials: int | None = None,
    progress: Callable[[int, int, str], None] | None = None,
) -> BacktestResult:
    """Run `daily` for every session from `start` to `end` in `workspace`, then summarize."""
    from stockcli.db.engine import open_database
    from stockcli.services.daily import daily
    from stockcli.services.monitor import window_metrics
    from stockcli.services.runtime import pipeline_run

    if end < start:
        raise UsageError(f"--end {end} is before --start {start}.", hint="Give a range with start <= end.")
    calendar = trading_calendar(settings.data.exchange)
    sessions = calendar.sessions(start, end)
    if not sessions:
        raise UsageError(f"No trading sessions between {start} and {end} on {settings.data.exchange}.")
    workspace = workspace.resolve()
    if workspace == settings.data_dir.resolve():
        raise UsageError("The backtest workspace must not be the data dir.", hint="Pass another --workspace.")
    workspace.mkdir(parents=True, exist_ok=True)
    scratch = scratch_settings(settings, workspace)
    if settings.data.source == "yahoo":
        bars_dir = workspace / "bars"
        _export_stored_bars(settings, bars_dir, end)
        scratch = scratch.replace(data={"source": "csv", "csv_dir": bars_dir})

    engine = open_database(scratch)
    bundle_cache: dict[str, Any] = {}
    retrains: list[RetrainEvent] = []
    failures: list[str] = []
    predictions = 0
    promotions = 0
    started = time.perf_counter()
    for index, session in enumerate(sessions):
        # The session's bar is final: the replayed clock stands after that day's close.
        now = datetime.combine(session, datetime.max.time(), tzinfo=UTC)
        try:
            with pipeline_run(scratch, command="daily", as_of=session, engine=engine) as run:
                result = daily(
                    settings=scratch,
                    engine=engine,
                    as_of=session,
                    run=run,
                    now=now,
                    bundle_cache=bundle_cache,
                    n_trials=n_trials,
                )
        except StockCliError as exc:
            failures.append(f"{session}: {exc.message}")
            if progress:
                progress(index + 1, len(sessions), f"{session}: failed")
            continue
        predictions += len(result.predictions)
        if result.retrain is not None and result.retrain.ran:
            retrains.append(
                RetrainEvent(
                    as_of=session,
                    reason=result.retrain.reason,
                    model_version=result.retrain.model_version,
                    promoted=result.retrain.promoted,
                    promotion_reason=result.retrain.promotion_reason,
                )
            )
            promotions += int(result.retrain.promoted)
        if progress:
            progress(index + 1, len(sessions), f"{session}: {result.status}")
    wall_s = time.perf_counter() - started

    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from stockcli.db.models import ModelPerformance

    with Session(engine) as db:
        rows = list(
            db.scalars(
                select(ModelPerformance).where(
                    ModelPerformance.target_date >= sessions[0], ModelPerformance.target_date <= sessions[-1]
                )
            )
        )
    overall = window_metrics(rows)
    per_ticker = {
        ticker: window_metrics([r for r in rows if r.ticker == ticker]).__dict__
        for ticker in sorted({r.ticker for r in rows})
    }
    return BacktestResult(
        start=sessions[0],
        end=sessions[-1],
        workspace=str(workspace),
        sessions=len(sessions),
        sessions_failed=len(failures),
        predictions=predictions,
        evaluated=len(rows),
        retrains=tuple(retrains),
        promotions=promotions,
        metrics=overall.__dict__,
        per_ticker=per_ticker,
        wall_s=wall_s,
        sessions_per_s=len(sessions) / wall_s if wall_s > 0 else float("inf"),
        failures=tuple(failures),
    )
