"""Replay `daily` over every trading session of a range, with the clock set to each.

The replay runs in a scratch workspace (its own database, MLflow and Optuna stores); the user's are only
read. With the `yahoo` source it replays the user's stored bars (exported as CSV), so needs no network.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockcli.clock import TradingCalendar, trading_calendar
from stockcli.config import Settings
from stockcli.errors import EXIT_NOTHING, EXIT_OK, EXIT_PARTIAL, NoDataError, StockCliError, UsageError

if TYPE_CHECKING:
    from stockcli.ml.metrics import MetricBlock
    from stockcli.services.retrain import RetrainResult

WORKSPACE_MARKER = ".stockcli-backtest"


def claim_workspace(workspace: Path) -> Path:
    """Check that `workspace` may hold a backtest, then mark it (WORKSPACE_MARKER); returns the folder.

    Raises UsageError (exit 2), writing nothing, unless it is new, empty or an earlier backtest's.
    """
    folder = workspace.expanduser().resolve()
    if folder.exists() and not folder.is_dir():
        raise UsageError(
            f"The backtest workspace {folder} is a file, not a folder; nothing was written in it.",
            hint="Pass a new or empty folder with --workspace.",
        )
    if folder.is_dir():
        try:
            used = any(folder.iterdir())
        except OSError as exc:
            raise UsageError(f"Cannot read the backtest workspace {folder}: {exc.strerror}.") from None
        if used and not (folder / WORKSPACE_MARKER).is_file():
            raise UsageError(
                f"The backtest workspace {folder} is not empty and was not created by a backtest; "
                "nothing was written in it.",
                hint="Pass a new or empty folder with --workspace, or leave it out for one under the data dir.",
            )
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / WORKSPACE_MARKER).write_text(
            "A stockcli backtest workspace: `stockcli backtest` may reuse and overwrite this folder.\n",
            encoding="utf-8",
        )
    except OSError as exc:
        raise UsageError(
            f"Cannot create the backtest workspace {folder}: {exc.strerror}.",
            hint="Pass a writable new or empty folder with --workspace.",
        ) from None
    return folder


def exit_code_for(result: BacktestResult) -> int:
    """0 when every session was replayed for every ticker, 3 when some sessions failed or a ticker got
    no prediction in any of them, 4 when none could be replayed."""
    if result.sessions_failed >= result.sessions:
        return EXIT_NOTHING
    return EXIT_PARTIAL if result.sessions_failed or result.tickers_failed else EXIT_OK


@dataclass(frozen=True)
class RetrainEvent:
    as_of: date
    reason: str
    model_version: str | None
    promoted: bool
    promotion_reason: str | None
    p_value: float | None = None  # the promotion test's one-sided p-value (None: nothing to compare)
    improvement: float | None = None
    improvement_low: float | None = None
    improvement_high: float | None = None


@dataclass(frozen=True)
class BacktestResult:
    """What a backtest gave; `horizons`, `risk` and `risk_vs_garch` are `horizon_summary`'s."""

    start: date
    end: date
    workspace: str
    sessions: int
    sessions_failed: int
    predictions: int
    evaluated: int
    retrains: tuple[RetrainEvent, ...]
    promotions: int
    metrics: dict[str, Any]  # served forecasts over the range
    per_ticker: dict[str, dict[str, Any]]
    wall_s: float
    sessions_per_s: float
    failures: tuple[str, ...] = ()  # tickers never predicted ("TICKER: why"), then failed sessions
    tickers_failed: tuple[str, ...] = ()
    data_end: date | None = None  # the newest bar the replay had, of any ticker
    sessions_past_data_end: int = 0
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)  # garch / rolling on the same rows
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)  # each, served or not
    promotion_decisions: tuple[dict[str, Any], ...] = ()  # every promotion test, promoted or not
    network_vs_best_statistical: dict[str, Any] | None = None
    horizons: dict[str, dict[str, Any]] = field(default_factory=dict)
    risk: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    risk_vs_garch: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)


def scratch_settings(settings: Settings, workspace: Path) -> Settings:
    """The same settings pointed at a scratch workspace: database, MLflow and Optuna inside it."""
    return settings.replace(
        storage={"data_dir": workspace, "database_url": ""},
        mlflow={"tracking_uri": ""},
        tuning={"storage_url": ""},
    )


def _export_stored_bars(settings: Settings, folder: Path, end: date) -> None:
    """Write the user's stored bars as <TICKER>.csv files for the replay's csv source."""
    from stockcli.db.bars import load_bars
    from stockcli.db.engine import open_database
    from stockcli.ml.forecasters import with_market

    engine = open_database(settings, upgrade=False)
    try:
        series = with_market(settings.data.tickers, settings.forecasters.har_market)
        bars = load_bars(engine, series, end=end)
    finally:
        engine.dispose()  # leave no open handle (nor WAL files) on the user's database
    # The market's bars are replayed where stored; without them har_range fits without its term.
    bars = {t: frame for t, frame in bars.items() if t in settings.data.tickers or not frame.empty}
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


_TEST_FIGURES = ("p_value", "improvement", "improvement_low", "improvement_high")
_DECISION_KEYS = (
    "decided_at",
    "candidate_version",
    "production_version",
    "metric",
    "promoted",
    *_TEST_FIGURES,
    "window_start",
    "window_end",
    "reason",
)


@dataclass(frozen=True)
class _Replay:
    """A checked range in a claimed workspace: the scratch settings and the sessions to replay."""

    settings: Settings
    workspace: Path
    sessions: list[date]
    calendar: TradingCalendar


@dataclass(frozen=True)
class _Replayed:
    """`BacktestResult`'s fields that the replay itself counts."""

    sessions_failed: int
    predictions: int
    retrains: tuple[RetrainEvent, ...]
    promotions: int
    failures: tuple[str, ...]  # tickers never predicted first, then failed sessions
    tickers_failed: tuple[str, ...]
    wall_s: float


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
    from stockcli.db.bars import newest_bar_date
    from stockcli.db.engine import open_database
    from stockcli.db.predictions import scored_between
    from stockcli.db.promotions import list_promotions

    replay = _prepare_replay(settings, start=start, end=end, workspace=workspace)
    sessions = replay.sessions
    engine = open_database(replay.settings)
    replayed = _replay_sessions(
        replay.settings, sessions, engine=engine, n_trials=n_trials, progress=progress
    )
    data_end = newest_bar_date(engine)
    rows = scored_between(engine, start=sessions[0], end=sessions[-1])
    summary = summarize_range(rows)
    horizons, risk, risk_vs_garch = horizon_summary(engine, sessions[0], sessions[-1], replay.calendar)
    candidates = summary["candidates"]
    decisions = tuple(
        {key: getattr(row, key) for key in _DECISION_KEYS}
        for row in reversed(list_promotions(engine, limit=1000, include_dry_runs=False))
    )
    engine.dispose()
    return BacktestResult(
        start=sessions[0],
        end=sessions[-1],
        workspace=str(replay.workspace),
        sessions=len(sessions),
        **vars(replayed),
        evaluated=len(rows),
        metrics=summary["overall"],
        per_ticker=summary["per_ticker"],
        sessions_per_s=len(sessions) / replayed.wall_s if replayed.wall_s > 0 else float("inf"),
        data_end=data_end,
        sessions_past_data_end=sum(1 for s in sessions if data_end is None or s > data_end),
        baselines={name: candidates[name] for name in ("garch", "rolling") if name in candidates},
        candidates=candidates,
        promotion_decisions=decisions,
        network_vs_best_statistical=summary.get("network_vs_best_statistical"),
        horizons=horizons,
        risk=risk,
        risk_vs_garch=risk_vs_garch,
    )


def _prepare_replay(settings: Settings, *, start: date, end: date, workspace: Path) -> _Replay:
    """Check the range, claim the workspace and (yahoo source) export the stored bars into it."""
    if end < start:
        raise UsageError(f"--end {end} is before --start {start}.", hint="Give a range with start <= end.")
    calendar = trading_calendar(settings.data.exchange)
    sessions = calendar.sessions(start, end)
    if not sessions:
        raise UsageError(f"No trading sessions between {start} and {end} on {settings.data.exchange}.")
    workspace = workspace.expanduser().resolve()
    if workspace == settings.data_dir.resolve():
        raise UsageError("The backtest workspace must not be the data dir.", hint="Pass another --workspace.")
    workspace = claim_workspace(workspace)
    scratch = scratch_settings(settings, workspace)
    if settings.data.source == "yahoo":
        bars_dir = workspace / "bars"
        _export_stored_bars(settings, bars_dir, end)
        scratch = scratch.replace(data={"source": "csv", "csv_dir": bars_dir})
    return _Replay(settings=scratch, workspace=workspace, sessions=sessions, calendar=calendar)


def _replay_sessions(
    settings: Settings,
    sessions: list[date],
    *,
    engine: Any,
    n_trials: int | None,
    progress: Callable[[int, int, str], None] | None,
) -> _Replayed:
    """Run `daily` for each session with the clock set after its close, counting what each gave."""
    from stockcli.services.daily import daily
    from stockcli.services.runtime import pipeline_run

    bundle_cache: dict[str, Any] = {}
    retrains: list[RetrainEvent] = []
    failures: list[str] = []
    why_not: dict[str, str] = {}  # ticker -> why it got no prediction, in the latest session it had none
    predicted: set[str] = set()
    replayed = predictions = 0
    started = time.perf_counter()
    for index, session in enumerate(sessions):
        try:
            with pipeline_run(settings, command="daily", as_of=session, engine=engine) as run:
                result = daily(
                    settings=settings,
                    engine=engine,
                    as_of=session,
                    run=run,
                    # The session's bar is final: the replayed clock stands after that day's close.
                    now=datetime.combine(session, datetime.max.time(), tzinfo=UTC),
                    bundle_cache=bundle_cache,
                    n_trials=n_trials,
                )
        except StockCliError as exc:
            failures.append(f"{session}: {exc.message}")
            status = "failed"
        else:
            status = result.status
            if status == "stale":  # nothing predicted: the session was not replayed
                failures.append(
                    f"{session}: " + next((m for m in result.messages if "no prediction" in m), "stale")
                )
            predictions += len(result.predictions)
            replayed += 1
            predicted.update(p.ticker for p in result.predictions)
            why_not.update((f.ticker, f.reason) for f in result.failed)
            if result.retrain is not None and result.retrain.ran:
                retrains.append(_retrain_event(session, result.retrain))
        if progress:
            progress(index + 1, len(sessions), f"{session}: {status}")
    wall_s = time.perf_counter() - started
    # A ticker never predicted while others were: named, not simply missing from the summary.
    never = tuple(t for t in why_not if t not in predicted) if predicted else ()
    named = [f"{t}: no prediction in any of the {replayed} sessions: {why_not[t]}" for t in never]
    return _Replayed(
        sessions_failed=len(failures),
        predictions=predictions,
        retrains=tuple(retrains),
        promotions=sum(int(event.promoted) for event in retrains),
        failures=(*named, *failures),
        tickers_failed=never,
        wall_s=wall_s,
    )


def _retrain_event(session: date, retrained: RetrainResult) -> RetrainEvent:
    decision = retrained.promotion or {}
    return RetrainEvent(
        as_of=session,
        reason=retrained.reason,
        model_version=retrained.model_version,
        promoted=retrained.promoted,
        promotion_reason=retrained.promotion_reason,
        **{key: decision.get(key) for key in _TEST_FIGURES},
    )


def horizon_summary(engine: Any, start: date, end: date, calendar: Any) -> tuple[dict[str, Any], ...]:
    """Every horizon's interval figures, every (horizon, ticker)'s risk backtest, and its 97.5% VaR
    next to GARCH's over the range."""
    from stockcli.db.horizons import scored_horizons
    from stockcli.services.horizons import horizon_figures, risk_against_garch, risk_backtests

    rows = scored_horizons(engine, start=start, end=end)
    risk, yardstick = (
        {str(horizon): table for horizon, table in tested(rows, calendar).items()}
        for tested in (risk_backtests, risk_against_garch)
    )
    return horizon_figures(rows), risk, yardstick


def _flat(block: MetricBlock, rows: list[dict[str, Any]], *, ticker: bool = False) -> dict[str, Any]:
    """One block of `metrics.summarize_scored` as the backtest's flat figures: for the served intervals
    and every candidate, the skill against GARCH (above 0: better) and the one-sided DM p-value of a
    lower pinball loss than GARCH's; a ticker's block adds the share of each interval source."""
    from stockcli.ml.metrics import INTERVAL_FIGURES, SERVED, block_figures, p_up_figures, skills_against

    figures = block_figures(block)
    share = figures.pop("served_model_share")
    skills = skills_against(rows, "garch")
    p_values = _p_values_vs("garch", rows)
    flat = {
        **figures,
        "share_model": share,
        "share_naive": None if share is None else 1.0 - share,
        "baselines": {
            name: {
                **{key: getattr(values, key, None) for key in INTERVAL_FIGURES},  # values None: all None
                "skill_vs_garch": skills.get(name),
                "p_value_vs_garch": p_values.get(name),
            }
            for name, values in block.baselines.items()
        },
        "skill_vs_garch": skills.get(SERVED),
        "p_value_vs_garch": p_values.get(SERVED),
    }
    if ticker:
        sources = [str(r.get("interval_source")) for r in rows]
        flat["interval_share"] = {s: sources.count(s) / len(sources) for s in sorted(set(sources))}
    return {**flat, "p_up": p_up_figures(rows)}


def summarize_range(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-ticker figures of the served forecasts in the range, and every candidate's on the
    same rows."""
    from stockcli.ml.metrics import summarize_scored

    summary = summarize_scored(rows)
    if summary is None:
        return {"overall": {"samples": 0, "sessions": 0}, "per_ticker": {}, "candidates": {}}
    overall = _flat(summary.average, rows)
    per_ticker = {
        name: _flat(block, [r for r in rows if r["ticker"] == name], ticker=True)
        for name, block in summary.tickers.items()
    }
    candidates = {
        name: {**values, "per_ticker": {t: v["baselines"].get(name) or {} for t, v in per_ticker.items()}}
        for name, values in overall["baselines"].items()
    }
    return {
        "overall": overall,
        "per_ticker": per_ticker,
        "candidates": candidates,
        "network_vs_best_statistical": _network_vs_best(rows, candidates),
    }


def _p_values_vs(reference: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    """The one-sided DM p-value of each candidate's (and the served) pinball loss being lower than
    `reference`'s."""
    from stockcli.ml.metrics import interval_loss_panels
    from stockcli.ml.stats import paired_loss_test

    panels = interval_loss_panels(rows, "pinball")
    against = panels.get(reference)
    if against is None:
        return {}
    return {
        name: float(paired_loss_test(panel, against, alternative="less").p_value)
        for name, panel in panels.items()
        if name != reference
    }


def _network_vs_best(rows: list[dict[str, Any]], candidates: dict[str, Any]) -> dict[str, Any] | None:
    """The network's skill against the statistical candidate with the lowest pinball loss over the range
    (what it has to beat to be served), with the one-sided DM p-value."""
    from stockcli.ml.forecasters import NETWORK
    from stockcli.ml.metrics import skills_against

    others = {n: v["pinball"] for n, v in candidates.items() if n != NETWORK and v.get("pinball") is not None}
    if NETWORK not in candidates or not others:
        return None
    best = min(others, key=lambda name: others[name])
    return {
        "candidate": best,
        "skill": skills_against(rows, best).get(NETWORK),
        "p_value": _p_values_vs(best, rows).get(NETWORK),
    }
