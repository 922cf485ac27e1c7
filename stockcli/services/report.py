"""What `stockcli report` and the dashboard show, read (never written) from the tables and the registry.

Rates are fractions (0.012 is 1.2%); skill is 1 - MAE_model / MAE_naive over the same sessions.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from types import UnionType
from typing import TYPE_CHECKING, Any, TypeVar, Union, cast, get_args, get_origin, get_type_hints

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from stockcli.config import Settings, redact_url
from stockcli.db import queries_report as queries
from stockcli.db.predictions import QUANTILE_PRICES
from stockcli.errors import NoDataError, StockCliError, UsageError
from stockcli.formats import finite

if TYPE_CHECKING:
    from stockcli.ml.metrics import MetricBlock

FILL_HINT = "Run `stockcli daily` to fetch bars, train a first model and predict."


@dataclass(frozen=True)
class PredictionRow:
    """The newest next-session prediction of one ticker."""

    ticker: str
    target_date: date
    base_date: date
    base_close: float
    predicted_close: float
    change: float | None  # predicted_close / base_close - 1
    model_version: str
    as_of: date
    dataset_run_id: str
    created_at: datetime | None
    lower_80: float | None = None
    upper_80: float | None = None
    lower_95: float | None = None
    upper_95: float | None = None
    median: float | None = None
    p_up: float | None = None
    source: str | None = None  # the point forecast served: "model" or "naive"
    p_value: float | None = None  # the test that chose it
    interval_source: str | None = None  # "model", "garch" or "rolling"
    interval_p_value: float | None = None
    unseen: bool = False  # the model was not trained on this ticker


@dataclass(frozen=True)
class PerformanceRow:
    """Live accuracy of one ticker over its newest scored sessions (the monitoring window)."""

    ticker: str
    sessions: int
    mape: float | None
    mae: float | None
    naive_mae: float | None
    directional_accuracy: float | None
    skill: float | None
    worse_than_naive: bool
    enough_samples: bool
    first_target_date: date | None
    last_target_date: date | None
    model_versions: tuple[str, ...]
    skill_low: float | None = None
    skill_high: float | None = None
    p_worse: float | None = None  # one-sided DM: the served forecast worse than naive
    coverage_80: float | None = None
    coverage_95: float | None = None
    winkler_95: float | None = None
    served_model_share: float | None = None
    interval_source: str | None = None  # the newest session's served interval source
    interval_skill_vs_garch: float | None = None  # the served Winkler 95% skill against GARCH(1,1)-t


_PERFORMANCE_FIELDS = {item.name for item in fields(PerformanceRow)}


@dataclass(frozen=True)
class ScoredSession:
    """One matured prediction against the real close."""

    ticker: str
    target_date: date
    model_version: str
    base_date: date
    base_close: float
    predicted_close: float
    actual_close: float
    abs_error: float
    abs_pct_error: float
    direction_score: float | None  # 1 hit, 0 miss, 0.5 flat forecast, None flat day
    naive_abs_error: float
    lower_80: float | None = None
    upper_80: float | None = None
    lower_95: float | None = None
    upper_95: float | None = None
    source: str | None = None
    interval_source: str | None = None


@dataclass(frozen=True)
class ModelVersionRow:
    """One version of the registered model."""

    version: str
    aliases: tuple[str, ...]
    test_metrics: dict[str, float | None]
    dataset_run_id: str | None
    created_at: datetime | None
    model_type: str | None = None


@dataclass(frozen=True)
class RunRow:
    id: int
    command: str
    as_of: date | None
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    error: str | None
    warnings: tuple[str, ...] = ()  # e.g. a notification not delivered (the run's outcome unchanged)


@dataclass(frozen=True)
class PromotionRow:
    id: int
    decided_at: datetime | None
    candidate_version: str
    production_version: str | None
    metric: str
    candidate_metrics: dict[str, Any]
    production_metrics: dict[str, Any] | None
    naive_metrics: dict[str, Any]
    window_start: date | None
    window_end: date | None
    dataset_run_id: str | None
    promoted: bool
    dry_run: bool
    reason: str
    candidate_value: float | None = None
    production_value: float | None = None
    naive_value: float | None = None
    test: str | None = None  # one-sided Diebold-Mariano; improvement_low/high: its 95% CI
    p_value: float | None = None
    improvement: float | None = None
    improvement_low: float | None = None
    improvement_high: float | None = None


@dataclass(frozen=True)
class FanPoint:
    """The served quantiles (prices) of the close `horizon` sessions after a base session."""

    horizon: int
    target_date: date
    lower_95: float | None
    lower_80: float | None
    median: float | None
    upper_80: float | None
    upper_95: float | None
    actual_close: float | None = None  # once the target session's close is scored
    source: str | None = None


@dataclass(frozen=True)
class HorizonFan:
    """One ticker's newest forecasts at every horizon, and the scored 1-session bands of the risk window."""

    ticker: str
    base_date: date
    base_close: float
    sessions: tuple[date, ...]  # every session after base_date through the farthest target date
    horizons: tuple[FanPoint, ...]  # ascending horizon
    past: tuple[FanPoint, ...]  # horizon 1, oldest target first, each with its actual close


@dataclass(frozen=True)
class ExceptionDay:
    """One scored 1-session forecast: the simple return that followed its base close, and its VaR."""

    target_date: date
    realized: float  # actual_close / base_close - 1
    var_95: float | None  # losses as positive returns
    var_99: float | None

    def beyond(self, var: float | None) -> bool:
        """An exception: the loss exceeds the VaR (the return falls below -VaR)."""
        return var is not None and self.realized < -var


@dataclass(frozen=True)
class VarExceptions:
    """One ticker's 1-session returns over the risk window against its VaR, with the window's backtest."""

    ticker: str
    risk_sessions: int
    days: tuple[ExceptionDay, ...]  # oldest first
    n: int
    exceptions_95: int
    exceptions_99: int
    zone: str | None
    min_sessions: int  # fewer scored sessions than this: no zone (`ml.risk.MIN_SESSIONS`)

    @property
    def beyond_99(self) -> tuple[ExceptionDay, ...]:
        """The sessions whose loss exceeded the 99% VaR."""
        return tuple(day for day in self.days if day.beyond(day.var_99))


@dataclass(frozen=True)
class CloseSeries:
    """Recent closes of one ticker, oldest first, with its newest prediction, fan and VaR exceptions."""

    ticker: str
    dates: tuple[date, ...]
    closes: tuple[float, ...]
    prediction: PredictionRow | None
    fan: HorizonFan | None = None
    exceptions: VarExceptions | None = None

    @property
    def naive(self) -> tuple[date, float] | None:
        """The persistence forecast for the predicted session: the last known close."""
        if self.prediction is None:
            return None
        return self.prediction.target_date, self.prediction.base_close


@dataclass(frozen=True)
class ModelsInfo:
    """Registry versions, newest first, the one holding the Production alias, and why a list is empty."""

    versions: tuple[ModelVersionRow, ...]
    production_version: str | None
    note: str | None = None
    run_ids: Mapping[str, str] = field(default_factory=dict)  # version -> the MLflow run that trained it


@dataclass(frozen=True)
class RiskRow:
    """One ticker's newest VaR and ES at one horizon (losses as positive returns), and its Basel zone."""

    ticker: str
    horizon: int
    base_date: date
    var_95: float | None
    var_99: float | None
    es_95: float | None
    es_99: float | None
    zone: str | None


REPORT_HORIZONS = (1, 5)  # the horizons of the report's compact risk table


@dataclass(frozen=True)
class Report:
    """Everything `stockcli report` shows."""

    generated_at: datetime
    as_of: date | None
    window_sessions: int
    predictions: tuple[PredictionRow, ...]
    performance: tuple[PerformanceRow, ...]
    models: tuple[ModelVersionRow, ...]
    production_version: str | None
    runs: tuple[RunRow, ...]
    promotions: tuple[PromotionRow, ...]
    recent_closes: tuple[CloseSeries, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    risk: tuple[RiskRow, ...] = ()


def report(settings: Settings, *, as_of: date | None = None) -> Report:
    """`stockcli report`: open the database read-only (never creating it), gather, close."""
    engine = connect(settings)
    try:
        return build_report(settings, engine=engine, as_of=as_of)
    finally:
        if engine is not None:
            engine.dispose()


def build_report(
    settings: Settings,
    *,
    engine: Engine | None,
    as_of: date | None = None,
    runs_limit: int = 10,
    promotions_limit: int = 10,
    models: ModelsInfo | None = None,
) -> Report:
    """Gather predictions, live performance, registry versions, runs, promotions and recent closes.

    `engine`: None when the database file does not exist. Nothing made after `as_of` is shown.
    Raises NoDataError (exit 4) when the database holds no bars and no predictions yet.
    """
    ensure_data(engine, settings=settings)
    assert engine is not None
    try:
        tickers = known_tickers(settings, engine)
        order = {ticker: index for index, ticker in enumerate(tickers)}
        predictions = sorted(
            latest_predictions(engine, as_of=as_of), key=lambda p: order.get(p.ticker, len(order))
        )
        performance = live_performance(settings, engine=engine, as_of=as_of)
        by_ticker = {row.ticker: row for row in predictions}
        closes = queries.recent_closes(engine, tickers, sessions=30, as_of=as_of)
        risk, fans, exceptions = horizon_views(settings, engine, as_of, order)
        series = tuple(
            _close_series(t, closes[t], by_ticker.get(t), fans.get(t), exceptions.get(t)) for t in tickers
        )
        info = models if models is not None else model_versions(settings)
        notes = [info.note] if info.note else []
        if not predictions:
            notes.append("No predictions stored yet. " + FILL_HINT)
        worse = [row.ticker for row in performance if row.worse_than_naive]
        if worse:
            notes.append(
                f"The model does worse than the naive forecast (next close = last close) for {', '.join(worse)} "
                f"over the last {settings.monitor.window_sessions} sessions."
            )
        return Report(
            generated_at=datetime.now(tz=UTC),
            as_of=as_of,
            window_sessions=settings.monitor.window_sessions,
            predictions=tuple(predictions),
            performance=tuple(performance),
            models=info.versions,
            production_version=info.production_version,
            runs=tuple(recent_runs(engine, limit=runs_limit)),
            promotions=tuple(
                _promotion_row(row) for row in queries.recent_promotions(engine, limit=promotions_limit)
            ),
            recent_closes=series,
            notes=tuple(notes),
            risk=risk,
        )
    except DBAPIError as exc:
        raise unreadable_database(settings, exc) from None


def horizon_views(
    settings: Settings, engine: Engine, as_of: date | None, order: Mapping[str, int]
) -> tuple[tuple[RiskRow, ...], dict[str, HorizonFan], dict[str, VarExceptions]]:
    """The compact risk table, and per ticker its fan and VaR exceptions over the risk window, of the
    newest forecasts made on or before `as_of` (the risk window read once)."""
    from stockcli.clock import calendar_for
    from stockcli.db.horizons import newest_horizons
    from stockcli.services.horizons import risk_backtests, risk_window

    wanted = sorted({*settings.forecasters.horizons, *REPORT_HORIZONS})
    newest = newest_horizons(engine, as_of=as_of, horizons=wanted)
    if not newest:
        return (), {}, {}
    calendar = calendar_for(settings)
    window = risk_window(settings, engine, through=max(row["base_date"] for row in newest))
    backtests = risk_backtests(window, calendar)
    return (
        risk_rows(newest, backtests, order),
        _fans(newest, window, calendar),
        _exceptions(window, backtests.get(1, {}), settings.monitor.risk_sessions),
    )


def risk_rows(
    newest: Sequence[Mapping[str, Any]], backtests: Mapping[int, Mapping[str, Any]], order: Mapping[str, int]
) -> tuple[RiskRow, ...]:
    """The newest VaR and ES of every ticker at `REPORT_HORIZONS`, with its zone, in watchlist order."""
    rows = [
        _from_row(
            RiskRow, row, zone=(backtests.get(int(row["horizon"])) or {}).get(row["ticker"], {}).get("zone")
        )
        for row in newest
        if int(row["horizon"]) in REPORT_HORIZONS
    ]
    return tuple(sorted(rows, key=lambda r: (order.get(r.ticker, len(order)), r.ticker, r.horizon)))


def _fans(
    newest: Sequence[Mapping[str, Any]], window: Sequence[Mapping[str, Any]], calendar: Any
) -> dict[str, HorizonFan]:
    from datetime import timedelta

    past: dict[str, list[FanPoint]] = {}
    for row in window:
        if int(row["horizon"]) == 1:
            past.setdefault(row["ticker"], []).append(_from_row(FanPoint, row))
    by_ticker: dict[str, list[Mapping[str, Any]]] = {}
    for row in newest:
        by_ticker.setdefault(row["ticker"], []).append(row)
    fans = {}
    for ticker, rows in by_ticker.items():
        base = max(row["base_date"] for row in rows)
        latest = sorted(
            (row for row in rows if row["base_date"] == base), key=lambda row: int(row["horizon"])
        )
        farthest = max(row["target_date"] for row in latest)
        fans[ticker] = HorizonFan(
            ticker=ticker,
            base_date=base,
            base_close=float(latest[0]["base_close"]),
            sessions=tuple(calendar.sessions(base + timedelta(days=1), farthest)),
            horizons=tuple(_from_row(FanPoint, row) for row in latest),
            past=tuple(sorted(past.get(ticker, ()), key=lambda point: point.target_date)),
        )
    return fans


def _exceptions(
    window: Sequence[Mapping[str, Any]], backtests: Mapping[str, Mapping[str, Any]], risk_sessions: int
) -> dict[str, VarExceptions]:
    from stockcli.ml.risk import MIN_SESSIONS

    days: dict[str, list[ExceptionDay]] = {}
    for row in window:
        base, actual = finite(row.get("base_close")), finite(row.get("actual_close"))
        if int(row["horizon"]) != 1 or not base or actual is None:
            continue
        days.setdefault(row["ticker"], []).append(
            ExceptionDay(
                row["target_date"], actual / base - 1.0, finite(row["var_95"]), finite(row["var_99"])
            )
        )
    out = {}
    for ticker, found in days.items():
        tested = backtests.get(ticker) or {}
        out[ticker] = VarExceptions(
            ticker=ticker,
            risk_sessions=risk_sessions,
            days=tuple(sorted(found, key=lambda day: day.target_date)),
            **{key: int(tested.get(key) or 0) for key in ("n", "exceptions_95", "exceptions_99")},
            zone=tested.get("zone"),
            min_sessions=MIN_SESSIONS,
        )
    return out


def write_html_report(settings: Settings, path: Path, html: str) -> Path:
    """Write the HTML report atomically once `html_report_target` allows it; returns the file written."""
    from stockcli.storage import write_atomically

    target = html_report_target(settings, path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(target, html)
    except OSError as exc:
        raise UsageError(
            f"Cannot write the HTML report to {path}: {exc.strerror or exc}.",
            hint="Pass a writable path with --html.",
        ) from None
    return target


def html_report_target(settings: Settings, path: Path) -> Path:
    """The file `report --html PATH` may write (symlinks resolved), checked before any work.

    Raises UsageError (exit 2) for stockcli's own files (stores, config), a data-dir file that is not
    an earlier report nor a new `.html` file, or a symlink to a file that is not an earlier report.
    """
    from stockcli.storage import is_within, sqlite_file

    given = Path(os.path.abspath(path.expanduser()))
    target = Path(os.path.realpath(given))
    protected: dict[Path, str] = {}
    for url, what in (
        (settings.database_url, "the database"),
        (settings.mlflow_tracking_uri, "the MLflow tracking store"),
        (settings.optuna_storage_url, "the Optuna storage"),
    ):
        store = sqlite_file(url)
        if store is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                protected[Path(os.path.realpath(f"{store}{suffix}"))] = what
    if settings.config_path is not None:
        protected[Path(os.path.realpath(settings.config_path))] = "the config file"
    hint = "Pass --html a new file outside the data dir (or an earlier report to replace)."
    if target in protected:
        raise UsageError(
            f"Refusing to write the HTML report to {path}: it is {protected[target]} ({target}).", hint=hint
        )
    foreign = target.exists() and not _is_report_file(target)  # an existing file, not an earlier report
    if is_within(target, settings.data_dir) and (foreign or target.suffix.lower() not in (".html", ".htm")):
        raise UsageError(
            f"Refusing to write the HTML report to {path}: {target} is in the data dir "
            f"({settings.data_dir}), where only an .html report may be written.",
            hint=hint,
        )
    if foreign and target != given:
        raise UsageError(
            f"Refusing to write the HTML report to {path}: a symlink leads to {target}, an existing "
            "file that is not an earlier report.",
            hint=hint,
        )
    return target


def _is_report_file(path: Path) -> bool:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as handle:
            head = handle.read(2048).lower()
    except OSError:
        return False
    return head.startswith("<!doctype html>") and "<title>stockcli report" in head


def unreadable_database(settings: Settings, exc: BaseException) -> StockCliError:
    """The error for a database that cannot be reached or read (down, wrong URL, damaged, schema behind)."""
    from stockcli.storage import describe_database_error

    described = describe_database_error(
        "database",
        settings.database_url,
        exc,
        key="[storage] database_url (or STOCKCLI_DATABASE_URL)",
        reading=True,
    )
    if "no such table" in described.message or "no such column" in described.message:
        described.hint = "The schema is behind this stockcli: run `stockcli db upgrade`."
    return described


def ensure_data(engine: Engine | None, *, settings: Settings) -> None:
    """Raise NoDataError (which command fills it) unless the database holds bars or predictions,
    StockCliError when it cannot be read."""
    try:
        state = queries.database_state(engine)
    except DBAPIError as exc:
        raise unreadable_database(settings, exc) from None
    if state != "ready":
        raise NoDataError(empty_database_message(state), hint=FILL_HINT)


def empty_database_message(state: str, database: str | None = None) -> str:
    """Why a database in `state` (not `ready`) shows nothing; `database` names it."""
    the = "The database" if database is None else f"The database {database}"
    return {
        "missing": f"{the} does not exist yet.",
        "no_schema": f"{the} has no stockcli tables yet.",
        "empty": f"{the} holds no bars and no predictions yet.",
    }[state]


# The web app reads these through this module (it never imports `db`).
connect = queries.connect_readonly  # read-only, never created: None for a SQLite file not there yet
database_state = queries.database_state
prediction_count = queries.prediction_count
ticker_exists = queries.ticker_exists


def newest_runs(engine: Engine, *, status: str | None = None) -> list[RunRow]:
    """The newest finished ledger row of each command (only rows with `status` when given)."""
    return [_from_row(RunRow, row) for row in queries.newest_runs_per_command(engine, status=status)]


def known_tickers(settings: Settings, engine: Engine) -> list[str]:
    """Tickers with stored bars or predictions, the watchlist's first, in its order."""
    return queries.known_tickers(engine, preferred=settings.data.tickers)


def recent_runs(engine: Engine, *, limit: int) -> list[RunRow]:
    """The newest ledger rows, newest first."""
    return [_from_row(RunRow, row) for row in queries.recent_runs(engine, limit=limit)]


def latest_predictions(engine: Engine, *, as_of: date | None = None) -> list[PredictionRow]:
    """The newest prediction per ticker."""
    return [_prediction_row(row) for row in queries.latest_predictions(engine, as_of=as_of)]


def live_performance(
    settings: Settings, *, engine: Engine, as_of: date | None = None, ticker: str | None = None
) -> list[PerformanceRow]:
    """Live accuracy per ticker over the rolling window: the same window and metrics as `monitor`."""
    from stockcli.db.predictions import performance_window
    from stockcli.ml.metrics import summarize_scored

    rows = performance_window(engine, through=as_of, sessions=settings.monitor.window_sessions, ticker=ticker)
    summary = summarize_scored(rows)
    blocks = {} if summary is None else summary.tickers
    known = known_tickers(settings, engine)
    ordered = [t for t in known if t in blocks] + sorted(set(blocks) - set(known))
    return [
        performance_row(t, blocks[t], [r for r in rows if r["ticker"] == t], settings.monitor.min_samples)
        for t in ordered
    ]


def performance_row(
    ticker: str, block: MetricBlock, rows: Sequence[Mapping[str, Any]], min_samples: int
) -> PerformanceRow:
    """One ticker's `metrics.summarize_scored` block as a report row."""
    from stockcli.ml.metrics import SERVED, block_figures, skills_against

    figures = block_figures(block)
    newest = max(rows, key=lambda r: r["target_date"]) if rows else None
    dates = [r["target_date"] for r in rows]
    return PerformanceRow(
        ticker=ticker,
        **{name: value for name, value in figures.items() if name in _PERFORMANCE_FIELDS},
        directional_accuracy=figures["direction_accuracy"],
        worse_than_naive=block.skill is not None and block.skill < 0,
        enough_samples=figures["sessions"] >= min_samples,
        first_target_date=min(dates, default=None),
        last_target_date=max(dates, default=None),
        model_versions=tuple(sorted({str(r["model_version"]) for r in rows}, key=_version_key)),
        interval_source=None if newest is None else newest.get("interval_source"),
        interval_skill_vs_garch=(skills_against(rows, "garch").get(SERVED) or {}).get("winkler_95"),
    )


def scored_sessions(engine: Engine, *, limit: int, ticker: str | None = None) -> list[ScoredSession]:
    """Scored sessions, newest first (one per ticker and target date)."""
    return [
        _from_row(ScoredSession, row)
        for row in queries.performance_history(engine, limit=limit, ticker=ticker)
    ]


def close_series(engine: Engine, ticker: str, *, sessions: int) -> CloseSeries:
    """Recent closes of one ticker with its newest prediction (for the dashboard's chart)."""
    closes = queries.recent_closes(engine, [ticker], sessions=sessions)[ticker]
    predictions = [_prediction_row(row) for row in queries.latest_predictions(engine, tickers=[ticker])]
    return _close_series(ticker, closes, predictions[0] if predictions else None)


def _close_series(
    ticker: str,
    closes: Sequence[tuple[date, float]],
    prediction: PredictionRow | None,
    fan: HorizonFan | None = None,
    exceptions: VarExceptions | None = None,
) -> CloseSeries:
    dates, values = tuple(d for d, _ in closes), tuple(c for _, c in closes)
    return CloseSeries(ticker, dates, values, prediction, fan, exceptions)


def model_versions(settings: Settings) -> ModelsInfo:
    """Registered versions; never raises: a failure becomes a note, never hiding the rest of the report.

    A local sqlite MLflow store that does not exist yet is not created: no model was trained.
    """
    from stockcli.storage import sqlite_file

    path = sqlite_file(settings.mlflow_tracking_uri)
    if path is not None and not path.is_file():
        return ModelsInfo((), None, "No model registry yet. Run `stockcli daily` (or `stockcli retrain`).")
    try:
        from stockcli.ml import registry

        items = registry.list_versions(settings)
    except StockCliError as exc:
        return ModelsInfo((), None, f"Model versions are not available: {exc}")
    except Exception as exc:  # the registry is optional here: report the rest anyway
        return ModelsInfo(
            (), None, redact_url(f"Model versions are not available: {type(exc).__name__}: {exc}")
        )
    versions = tuple(  # newest first, as the registry lists them
        _from_row(
            ModelVersionRow,
            vars(item),
            test_metrics={str(k): finite(v) for k, v in item.test_metrics.items()},
        )
        for item in items
    )
    alias = registry.PRODUCTION_ALIAS.lower()
    production = next((row.version for row in versions if alias in {a.lower() for a in row.aliases}), None)
    run_ids = {item.version: item.training_run_id for item in items if item.training_run_id}
    return ModelsInfo(versions, production, run_ids=run_ids)


def _version_key(version: str) -> tuple[int, str]:
    return (int(version), "") if version.isdigit() else (-1, version)


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns; they were written in UTC.
    if moment is not None and moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment


# How `_from_row` converts a stored value, by its field's type and whether it is optional.
_CONVERTERS: dict[tuple[Any, bool], Callable[[Any], Any]] = {
    (float, False): float,
    (float, True): finite,
    (int, False): int,
    (bool, False): bool,
    (str, False): str,
    (str, True): lambda raw: None if raw is None else str(raw),
    (datetime, True): _aware,
    (dict, False): lambda raw: dict(raw or {}),
    (dict, True): lambda raw: None if raw is None else dict(raw),
    (tuple, False): lambda raw: tuple(raw or ()),
}
_Row = TypeVar("_Row")


# The interval bounds and median of a stored row, by the quantile columns that hold them.
_QUANTILE_COLUMNS = dict(
    zip(("lower_95", "lower_80", "median", "upper_80", "upper_95"), QUANTILE_PRICES, strict=True)
)


def _converter(annotation: Any) -> Callable[[Any], Any] | None:
    """The `_CONVERTERS` entry for a field type, however its optional is spelled; None if not listed."""
    members = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    present = [member for member in members if member is not type(None)]
    if len(present) != 1:  # a union of two types: stored as read
        return None
    optional = len(present) < len(members)
    return _CONVERTERS.get((get_origin(present[0]) or present[0], optional))


@cache
def _field_converters(kind: Any) -> dict[str, Callable[[Any], Any] | None]:
    hints = get_type_hints(kind)
    return {item.name: _converter(hints[item.name]) for item in fields(kind)}


def _from_row(kind: type[_Row], row: Mapping[str, Any], **computed: Any) -> _Row:
    """A result dataclass from a stored row, each field read under its name (or quantile column) and
    converted by its type."""
    values = dict(computed)
    for name, convert in _field_converters(cast(Any, kind)).items():
        if name in values:
            continue
        raw = row.get(_QUANTILE_COLUMNS.get(name, name))
        values[name] = raw if convert is None else convert(raw)
    return kind(**values)


def _prediction_row(row: Mapping[str, Any]) -> PredictionRow:
    base, predicted = finite(row["base_close"]), finite(row["predicted_close"])
    return _from_row(
        PredictionRow, row, change=predicted / base - 1.0 if base and predicted is not None else None
    )


def decision_value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    """The value of `metric` in a stored promotion metrics block: `{"average": {"model": {...}}}` (a
    model), `{"average": {...}}` (naive) or flat."""
    average = (metrics or {}).get("average")
    average = average if isinstance(average, Mapping) else {}
    model = average.get("model")
    for block in (model if isinstance(model, Mapping) else {}, average, metrics or {}):
        if metric in block:
            return finite(block[metric])
    return None


def _promotion_row(row: Mapping[str, Any]) -> PromotionRow:
    roles = ("candidate", "production", "naive")
    values = {f"{role}_value": decision_value(row[f"{role}_metrics"], row["metric"]) for role in roles}
    return _from_row(PromotionRow, row, **values)
