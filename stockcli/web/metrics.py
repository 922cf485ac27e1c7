"""`GET /metrics` of `stockcli serve`: the dashboard's figures in Prometheus' text format, from the same
read-only queries, cached per data version by the app like every other response."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.services import report as report_service

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_text(
    settings: Settings, engine: Engine | None, models: report_service.ModelsInfo | None
) -> bytes:
    """The exposition text; `engine` None: the database holds nothing yet (`stockcli_database_ready 0`)."""
    from prometheus_client import generate_latest

    families = list(_families(settings, engine, models))

    class Collector:  # all that generate_latest asks of a registry
        def collect(self) -> list[Any]:
            return families

    return generate_latest(Collector())


def _gauge(name: str, documentation: str, *labels: str) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=labels)


def _families(
    settings: Settings, engine: Engine | None, models: report_service.ModelsInfo | None
) -> Iterator[Any]:
    ready = _gauge("stockcli_database_ready", "1 when the database holds bars or predictions.")
    ready.add_metric([], 0 if engine is None else 1)
    yield ready
    if engine is None:
        return
    yield from _run_families(engine)
    predictions = _gauge(
        "stockcli_predictions_stored",
        "Predictions stored (one per target session, ticker and model version).",
    )
    predictions.add_metric([], report_service.prediction_count(engine))
    yield predictions
    yield from _serving_families(engine)
    yield from _live_families(settings, engine)
    if models is not None:
        production = _gauge(
            "stockcli_production_model_info", "The model version holding the Production alias.", "version"
        )
        if models.production_version is not None:
            production.add_metric([models.production_version], 1)
        yield production


def _run_families(engine: Engine) -> Iterator[Any]:
    finished = _gauge(
        "stockcli_last_run_timestamp_seconds", "When the newest run of each command finished.", "command"
    )
    status = _gauge(
        "stockcli_last_run_status", "1 for the status of the newest run of each command.", "command", "status"
    )
    duration = _gauge(
        "stockcli_last_run_duration_seconds", "How long the newest run of each command took.", "command"
    )
    success = _gauge(
        "stockcli_last_success_timestamp_seconds",
        "When the newest successful (status ok) run of each command finished.",
        "command",
    )
    for run in report_service.newest_runs(engine):
        finished.add_metric([run.command], _seconds(run.finished_at))
        status.add_metric([run.command, run.status], 1)
        if run.duration_s is not None:
            duration.add_metric([run.command], run.duration_s)
    for run in report_service.newest_runs(engine, status="ok"):
        success.add_metric([run.command], _seconds(run.finished_at))
    yield from (finished, status, duration, success)


def _serving_families(engine: Engine) -> Iterator[Any]:
    interval = _gauge(
        "stockcli_interval_source",
        "1 for what serves each ticker's newest intervals (model, garch or rolling).",
        "ticker",
        "source",
    )
    point = _gauge(
        "stockcli_point_source", "1 for what serves each ticker's newest point forecast.", "ticker", "source"
    )
    target = _gauge(
        "stockcli_latest_prediction_target_timestamp_seconds",
        "The target session of each ticker's newest prediction (midnight UTC).",
        "ticker",
    )
    for row in report_service.latest_predictions(engine):
        if row.interval_source:
            interval.add_metric([row.ticker, row.interval_source], 1)
        if row.source:
            point.add_metric([row.ticker, row.source], 1)
        target.add_metric([row.ticker], _seconds(datetime(*row.target_date.timetuple()[:3])))
    yield from (interval, point, target)


def _live_families(settings: Settings, engine: Engine) -> Iterator[Any]:
    window = f" over the last {settings.monitor.window_sessions} scored sessions"
    sessions = _gauge("stockcli_live_sessions", "Scored sessions" + window + ".", "ticker")
    skill = _gauge(
        "stockcli_live_skill", "Skill against naive (1 - MAE / naive MAE)" + window + ".", "ticker"
    )
    coverage = _gauge(
        "stockcli_live_coverage_ratio",
        "Share of closes inside the interval" + window + ".",
        "ticker",
        "level",
    )
    for row in report_service.live_performance(settings, engine=engine):
        sessions.add_metric([row.ticker], row.sessions)
        if row.skill is not None:
            skill.add_metric([row.ticker], row.skill)
        for level, value in (("80", row.coverage_80), ("95", row.coverage_95)):
            if value is not None:
                coverage.add_metric([row.ticker, level], value)
    yield from (sessions, skill, coverage)


def _seconds(moment: datetime | None) -> float:
    """Seconds since the epoch; a naive datetime (a target session) is UTC."""
    if moment is None:
        return float("nan")
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
