"""`GET /metrics` of the dashboard: Prometheus' text format, parsed with prometheus_client's own parser,
carrying the same figures as the dashboard (runs, predictions, live skill and coverage, serving, the
Production version) on a real database (SQLite and PostgreSQL)."""

from __future__ import annotations

import warnings
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from stockcli.config import Settings, load_settings
from stockcli.db import store
from stockcli.db.models import LatestPrediction
from stockcli.services import report as report_service
from stockcli.web.app import create_app
from tests import report_data
from tests.ledger import recent_runs

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of an exposition text, through the reference parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_metrics_carry_the_dashboard_figures(make_settings: Any, database_url: str) -> None:
    settings: Settings = make_settings(database_url)
    filled = report_data.fill(settings)
    try:
        slow = store.start_run(filled.engine, command="retrain", as_of=report_data.AS_OF)
        store.finish_run(filled.engine, slow, status="failed", error="boom")
        with TestClient(create_app(settings, warm_registry=False)) as client:
            response = client.get("/metrics")
            again = client.get("/metrics")
            health = client.get("/health")
        performance = report_service.live_performance(settings, engine=filled.engine)
        runs = recent_runs(filled.engine, limit=50)
        with filled.engine.connect() as connection:
            stored = connection.execute(select(func.count()).select_from(LatestPrediction)).scalar_one()
    finally:
        filled.engine.dispose()
    assert response.status_code == 200 and health.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert again.content == response.content  # cached per data version
    found = samples(response.text)
    assert value(found, "stockcli_database_ready") == 1
    assert value(found, "stockcli_predictions_stored") == stored > 0
    daily = next(r for r in runs if r.command == "daily")
    assert value(found, "stockcli_last_run_status", command="daily", status="ok") == 1
    assert value(found, "stockcli_last_run_status", command="retrain", status="failed") == 1
    assert ("stockcli_last_success_timestamp_seconds", (("command", "retrain"),)) not in found
    finished = daily.finished_at if daily.finished_at.tzinfo else daily.finished_at.replace(tzinfo=UTC)
    assert value(found, "stockcli_last_success_timestamp_seconds", command="daily") == pytest.approx(
        finished.timestamp()
    )
    assert value(found, "stockcli_last_run_duration_seconds", command="daily") == pytest.approx(
        daily.duration_s
    )
    assert performance
    for row in performance:
        assert value(found, "stockcli_live_sessions", ticker=row.ticker) == row.sessions
        assert value(found, "stockcli_live_skill", ticker=row.ticker) == pytest.approx(row.skill)
        assert value(found, "stockcli_live_coverage_ratio", ticker=row.ticker, level="95") == pytest.approx(
            row.coverage_95
        )
    for ticker, serving in report_data.SERVING.items():
        assert value(found, "stockcli_interval_source", ticker=ticker, source=serving.interval_source) == 1
        assert value(found, "stockcli_point_source", ticker=ticker, source=serving.source) == 1


def test_metrics_of_an_empty_database_say_not_ready(tmp_path: Path) -> None:
    settings = load_settings(None, environ={}, overrides={"storage": {"data_dir": str(tmp_path / "data")}})
    with TestClient(create_app(settings, warm_registry=False)) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert samples(response.text) == {("stockcli_database_ready", ()): 0.0}
    assert not (tmp_path / "data" / "stockcli.db").exists()  # read-only: nothing created


def test_metrics_name_the_production_version(make_settings: Any) -> None:
    from stockcli.web.metrics import metrics_text

    settings = make_settings()
    filled = report_data.fill(settings)
    try:
        info = report_service.ModelsInfo(versions=(), production_version="7")
        found = samples(metrics_text(settings, filled.engine, info).decode())
    finally:
        filled.engine.dispose()
    assert value(found, "stockcli_production_model_info", version="7") == 1
