"""The dashboard's API and page on a real database (SQLite and PostgreSQL) through FastAPI's TestClient."""

from __future__ import annotations

import json
import math
import re
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import update

from stockcli.config import Settings, load_settings
from stockcli.db.engine import open_database
from stockcli.db.lock import run_lock
from stockcli.db.models import LatestPrediction, ModelPerformance
from stockcli.web.app import create_app
from tests import report_data
from tests.conftest import PG_URL, _require_postgres

with warnings.catch_warnings():  # Starlette suggests httpx2 for its TestClient; httpx works the same here
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

JSON_ENDPOINTS = (
    "/predictions/latest_for_table",
    "/tickers",
    "/historical_context_chart/GOOG",
    "/performance",
    "/models",
    "/health",
)


def strict_json(text: str) -> object:
    """Parse JSON the way a browser does: NaN and Infinity are errors."""

    def refuse(constant: str) -> object:
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    """One filled database per backend for the tests that only read (filling costs most of a second)."""
    folder = tmp_path_factory.mktemp("web")
    schema = None
    if request.param == "sqlite":
        url = f"sqlite:///{folder / 'data' / 'stockcli.db'}"
    else:
        _require_postgres()
        import psycopg

        schema = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True
        ) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        url = f"{PG_URL}{'&' if '?' in PG_URL else '?'}options=-csearch_path%3D{schema}"
    settings = load_settings(
        None, environ={}, overrides={"storage": {"data_dir": str(folder / "data"), "database_url": url}}
    )
    filled = report_data.fill(settings)
    try:
        with TestClient(create_app(settings, warm_registry=False)) as test_client:
            yield Shared(settings, filled, test_client)
    finally:
        filled.engine.dispose()
        if schema is not None:
            import psycopg

            with psycopg.connect(
                PG_URL.replace("postgresql+psycopg", "postgresql"), autocommit=True
            ) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass(frozen=True)
class Shared:
    settings: Settings
    filled: report_data.Filled
    client: TestClient


@pytest.fixture
def client(shared: Shared) -> TestClient:
    return shared.client


@pytest.fixture
def filled(shared: Shared) -> report_data.Filled:
    return shared.filled


def test_latest_for_table_keeps_the_replaced_shape(client: TestClient, filled: report_data.Filled) -> None:
    response = client.get("/predictions/latest_for_table")
    assert response.status_code == 200
    rows = strict_json(response.text)
    assert isinstance(rows, list) and [row["ticker"] for row in rows] == ["GOOG", "MSFT", "^GSPC"]
    for row in rows:
        assert row["date"] == row["target_date"] == "2013-03-04"
        assert (
            row["predicted_price"] == row["predicted_close"] == pytest.approx(filled.predicted[row["ticker"]])
        )
        assert row["base_date"] == "2013-03-01"
        assert row["base_close"] == pytest.approx(filled.closes[row["ticker"]][-1][1])
        assert row["change_pct"] == pytest.approx(100.0 * row["change"])
        assert row["model_version"] == "2"


def test_tickers(client: TestClient) -> None:
    response = client.get("/tickers")
    assert response.status_code == 200
    assert response.json() == ["GOOG", "MSFT", "^GSPC"]  # the configured order


def test_historical_context_chart(client: TestClient, filled: report_data.Filled) -> None:
    response = client.get("/historical_context_chart/goog", params={"sessions": 10})  # case does not matter
    assert response.status_code == 200
    body = strict_json(response.text)
    assert isinstance(body, dict)
    recent = filled.closes["GOOG"][-10:]
    assert body["ticker"] == "GOOG"
    assert body["dates"] == [day.isoformat() for day, _ in recent]
    assert body["actual"] == pytest.approx([close for _, close in recent])
    assert body["predicted"]["date"] == "2013-03-04"
    assert body["predicted"]["value"] == pytest.approx(filled.predicted["GOOG"])
    assert body["naive"] == {"date": "2013-03-04", "value": pytest.approx(recent[-1][1])}

    index = client.get("/historical_context_chart/%5Egspc")  # ^GSPC, URL-encoded
    assert index.status_code == 200 and index.json()["ticker"] == "^GSPC"
    assert len(index.json()["dates"]) == 60


def test_performance_and_history(client: TestClient) -> None:
    body = client.get("/performance").json()
    assert body["window_sessions"] == 20
    summary = {row["ticker"]: row for row in body["summary"]}
    assert summary["MSFT"]["worse_than_naive"] is True and summary["MSFT"]["skill"] < 0
    assert summary["GOOG"]["worse_than_naive"] is False and summary["GOOG"]["sessions"] == 20
    assert len(body["history"]) == 3 * 25  # every scored session, not just the window
    assert body["history"][0]["target_date"] == "2013-03-01"

    one = client.get("/performance", params={"ticker": "msft", "limit": 5}).json()
    assert [row["ticker"] for row in one["summary"]] == ["MSFT"]
    assert len(one["history"]) == 5 and {row["ticker"] for row in one["history"]} == {"MSFT"}


def test_models_without_a_registry(shared: Shared) -> None:
    body = shared.client.get("/models").json()
    assert body["versions"] == [] and body["production_version"] is None
    assert "stockcli daily" in body["note"]
    assert not (shared.settings.data_dir / "mlflow.db").exists()  # looking never creates the registry


def test_unknown_ticker_is_404_json(client: TestClient) -> None:
    for ticker in ("NOPE", "zzzz", "BRK-B"):
        response = client.get(f"/historical_context_chart/{ticker}")
        assert response.status_code == 404, ticker
        assert response.headers["content-type"].startswith("application/json")
        assert ticker.upper() in response.json()["detail"]
        assert "GOOG" in response.json()["hint"]
        assert client.get("/performance", params={"ticker": ticker}).status_code == 404


def test_malformed_ticker_is_422(client: TestClient) -> None:
    for ticker in ("bad$$", "%3Cscript%3E", "A" * 30, "-X", "^", "GO OG"):
        response = client.get(f"/historical_context_chart/{ticker}")
        assert response.status_code == 422, ticker
        assert "Malformed ticker" in response.json()["detail"]
        assert client.get("/performance", params={"ticker": ticker.replace("%3C", "<")}).status_code == 422
    assert client.get("/", params={"ticker": "bad$$"}).status_code == 422


def test_bad_query_values_are_422(client: TestClient) -> None:
    assert client.get("/historical_context_chart/GOOG", params={"sessions": "many"}).status_code == 422
    assert client.get("/historical_context_chart/GOOG", params={"sessions": 0}).status_code == 422
    assert client.get("/performance", params={"limit": 10**9}).status_code == 422


def test_only_get_is_allowed(client: TestClient) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        for path in ("/", *JSON_ENDPOINTS, "/static/style.css"):
            response = client.request(method, path)
            assert response.status_code == 405, (method, path)


def test_not_finite_numbers_become_null(settings: Settings) -> None:
    filled = report_data.fill(settings)
    # SQLite stores NaN as NULL (refused by NOT NULL), but keeps infinities; PostgreSQL keeps both.
    bad = math.nan if filled.engine.dialect.name == "postgresql" else math.inf
    with filled.engine.begin() as connection:
        connection.execute(
            update(LatestPrediction).where(LatestPrediction.ticker == "GOOG").values(predicted_close=bad)
        )
        connection.execute(
            update(ModelPerformance)
            .where(ModelPerformance.ticker == "GOOG", ModelPerformance.target_date == date(2013, 3, 1))
            .values(abs_pct_error=math.inf, abs_error=bad)
        )
    client = TestClient(create_app(settings, warm_registry=False))
    rows = strict_json(client.get("/predictions/latest_for_table").text)
    assert isinstance(rows, list)
    goog = next(row for row in rows if row["ticker"] == "GOOG")
    assert goog["predicted_price"] is None and goog["change"] is None
    chart = strict_json(client.get("/historical_context_chart/GOOG").text)
    assert isinstance(chart, dict) and chart["predicted"]["value"] is None
    performance = strict_json(client.get("/performance", params={"ticker": "GOOG"}).text)
    assert isinstance(performance, dict)
    assert performance["history"][0]["abs_pct_error"] is None
    assert performance["summary"][0]["sessions"] == 20
    page = client.get("/", params={"ticker": "GOOG"})
    assert page.status_code == 200 and "nan" not in page.text.lower().replace("naive", "")


def test_dashboard_page(client: TestClient, filled: report_data.Filled) -> None:
    response = client.get("/", params={"ticker": "msft"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert '<option value="MSFT" selected>' in page
    chart = re.search(r'<svg id="price-chart"[^>]*data-ticker="MSFT".*?</svg>', page, re.S)
    assert chart is not None
    points = re.search(r'<polyline class="actual" fill="none" points="([^"]+)"', chart.group(0))
    assert points is not None and len(points.group(1).split()) == 60
    assert chart.group(0).count('class="predicted point"') == 1
    assert chart.group(0).count('class="naive point"') == 1
    table = re.search(r'<table id="predictions-table".*?</table>', page, re.S)
    assert table is not None
    for ticker, value in filled.predicted.items():
        assert f"{value:,.2f}" in table.group(0) and f'data-ticker="{ticker}"' in table.group(0)
    assert 'id="performance-table"' in page and "Worse than naive" in page
    assert 'id="production-model"' in page
    # Everything it loads is served by the app: no CDN, no fonts from the network.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    for asset in re.findall(r"""(?:src|href)="(/static/[^"]+)""", page):
        assert client.get(asset).status_code == 200
    assert client.get("/docs").status_code == 404  # FastAPI's docs page would pull from a CDN


def test_default_ticker_and_unknown_ticker_page(client: TestClient) -> None:
    page = client.get("/").text
    assert '<option value="GOOG" selected>' in page
    response = client.get("/", params={"ticker": "NOPE"})
    assert response.status_code == 404 and "Unknown ticker" in response.text


def test_stored_text_is_escaped(settings: Settings) -> None:
    filled = report_data.fill(settings, evil_text=True)
    evil_ticker = "<script>x</script>"
    with filled.engine.begin() as connection:
        connection.execute(
            LatestPrediction.__table__.insert().values(
                target_date=report_data.NEXT_SESSION,
                ticker=evil_ticker,
                model_version="<b>9</b>",
                as_of=report_data.AS_OF,
                base_date=report_data.AS_OF,
                base_close=1.0,
                predicted_close=2.0,
                dataset_run_id="<i>ds</i>",
                pipeline_run_id=None,
                created_at=datetime(2013, 3, 1, tzinfo=UTC),
            )
        )
    with TestClient(create_app(settings, warm_registry=False)) as client:
        page = client.get("/").text
        assert "<script>x</script>" not in page and "<b>9</b>" not in page
        assert "&lt;script&gt;x&lt;/script&gt;" in page
        assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
        assert evil_ticker in client.get("/tickers").json()  # JSON carries it verbatim, as data
        assert client.get("/historical_context_chart/%3Cscript%3Ex%3C%2Fscript%3E").status_code in (404, 422)


def test_missing_database_gives_a_page_and_json_naming_the_command(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    with TestClient(create_app(settings, warm_registry=False)) as client:
        page = client.get("/")
        assert page.status_code == 200 and "stockcli daily" in page.text
        for path in JSON_ENDPOINTS[:4]:
            response = client.get(path)
            assert response.status_code == 503, path
            assert response.json()["command"] == "stockcli daily"
            assert "does not exist" in response.json()["detail"]
        assert client.get("/health").json()["status"] == "empty"
        assert not (settings.data_dir / "stockcli.db").exists()  # serving never creates it

        report_data.fill(settings)  # the first daily run lands while the dashboard is up
        assert client.get("/tickers").status_code == 200
        assert client.get("/health").json()["status"] == "ok"


def test_empty_schema_gives_the_same_answer(settings: Settings) -> None:
    open_database(settings)  # tables exist, no rows
    with TestClient(create_app(settings, warm_registry=False)) as client:
        assert "stockcli daily" in client.get("/").text
        response = client.get("/predictions/latest_for_table")
        assert response.status_code == 503 and "no bars and no predictions" in response.json()["detail"]


def test_no_schema_at_all(settings: Settings) -> None:
    engine = open_database(settings)
    from stockcli.db.engine import downgrade_schema

    downgrade_schema(engine, "base")
    with TestClient(create_app(settings, warm_registry=False)) as client:
        response = client.get("/tickers")
        assert response.status_code == 503 and "no stockcli tables" in response.json()["detail"]


def test_serves_while_a_run_holds_the_lock(make_settings) -> None:  # type: ignore[no-untyped-def]
    # The dashboard never takes the run lock: it answers while `daily` holds it, and never blocks it.
    # (SQLite only: PostgreSQL's advisory lock is database-wide, and other test runs may hold it.)
    settings = make_settings()
    filled = report_data.fill(settings)
    with TestClient(create_app(settings, warm_registry=False)) as client:
        with run_lock(filled.engine, settings.data_dir / "stockcli.lock", "daily"):
            assert client.get("/").status_code == 200
            assert client.get("/predictions/latest_for_table").status_code == 200
        with run_lock(filled.engine, settings.data_dir / "stockcli.lock", "daily"):
            pass  # and a run can take the lock while the dashboard is up


@pytest.mark.slow
def test_api_on_a_database_filled_by_the_real_pipeline(tmp_path: Path) -> None:
    """`daily` bootstraps a tiny model and runs four sessions; the API shows exactly what it stored."""
    from sqlalchemy import select

    from stockcli.services.daily import daily
    from stockcli.services.runtime import pipeline_run
    from tests.model_helpers import tiny_settings

    settings = tiny_settings(tmp_path / "data", tuning={"n_trials": 1, "epochs": 1}, training={"epochs": 1})
    sessions = [date(2013, 2, 26), date(2013, 2, 27), date(2013, 2, 28), date(2013, 3, 1)]
    for as_of in sessions:
        with pipeline_run(settings, command="daily", as_of=as_of) as run:
            result = daily(settings=settings, engine=run.engine, as_of=as_of, run=run, n_trials=1)
        assert result.status == "ok" and len(result.predictions) == 2

    engine = open_database(settings)
    with engine.connect() as connection:
        stored = {
            row.ticker: row
            for row in connection.execute(
                select(LatestPrediction).where(LatestPrediction.target_date == date(2013, 3, 4))
            )
        }
    assert set(stored) == {"GOOG", "MSFT"}

    with TestClient(create_app(settings, warm_registry=False)) as client:
        rows = strict_json(client.get("/predictions/latest_for_table").text)
        assert isinstance(rows, list)
        assert {row["ticker"]: row["predicted_price"] for row in rows} == pytest.approx(
            {ticker: row.predicted_close for ticker, row in stored.items()}
        )
        assert {row["date"] for row in rows} == {"2013-03-04"}
        assert {row["model_version"] for row in rows} == {stored["GOOG"].model_version}
        assert client.get("/tickers").json() == ["GOOG", "MSFT"]

        chart = client.get("/historical_context_chart/GOOG").json()
        assert chart["dates"][-1] == "2013-03-01" and len(chart["dates"]) == 60
        assert chart["predicted"]["value"] == pytest.approx(stored["GOOG"].predicted_close)
        assert chart["naive"]["value"] == pytest.approx(chart["actual"][-1])

        performance = client.get("/performance").json()
        # Predictions made on 02-26, 02-27 and 02-28 have matured; 03-01's targets 03-04.
        assert {row["ticker"]: row["sessions"] for row in performance["summary"]} == {"GOOG": 3, "MSFT": 3}
        assert {row["target_date"] for row in performance["history"]} == {
            "2013-02-27",
            "2013-02-28",
            "2013-03-01",
        }

        models = client.get("/models").json()
        assert models["production_version"] == stored["GOOG"].model_version
        production = next(v for v in models["versions"] if v["version"] == models["production_version"])
        assert "Production" in production["aliases"]
        assert production["dataset_run_id"] == stored["GOOG"].dataset_run_id
        assert production["test_metrics"]  # the registry's test metrics reach the dashboard

        page = client.get("/").text
        assert f"Production model: <strong>v{models['production_version']}</strong>" in page
        assert 'id="price-chart"' in page

    from stockcli.db.queries_report import connect_readonly
    from stockcli.services.report import build_report

    report = build_report(settings, engine=connect_readonly(settings))
    assert report.production_version == models["production_version"]
    assert [run.command for run in report.runs] == ["daily"] * 4 and {run.status for run in report.runs} == {
        "ok"
    }
    bootstrap = report.promotions[-1]  # the bootstrap's decision, audited with its figures
    assert bootstrap.promoted and bootstrap.candidate_value is not None and bootstrap.naive_value is not None


def test_serve_refuses_a_busy_port(sqlite_cli) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = sqlite_cli("serve", "--port", str(port))
    assert result.exit_code == 2
    assert f"Cannot listen on 127.0.0.1:{port}" in result.output
    assert sqlite_cli("serve", "--port", "70000").exit_code == 2  # out of range


def test_unreachable_database_is_503_without_a_fill_command(make_settings) -> None:  # type: ignore[no-untyped-def]
    # Nothing listens on port 1.
    settings = make_settings("postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    with TestClient(create_app(settings, warm_registry=False)) as client:
        response = client.get("/tickers")
        assert response.status_code == 503
        body = response.json()
        assert body["detail"].startswith("Cannot read the database") and "command" not in body
        assert "secret" not in response.text  # the password never shows
        page = client.get("/")
        assert "cannot be read" in page.text and "fill-command" not in page.text
        assert client.get("/health").json()["status"] == "unavailable"
