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
from typing import get_args

import pytest
from sqlalchemy import insert, update

from stockcli.choices import IntervalSource
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
    body = strict_json(response.text)
    assert isinstance(body, dict) and body["status"] == "success"
    rows = body["data"]
    assert [row["ticker"] for row in rows] == ["GOOG", "MSFT", "^GSPC"]
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
    assert response.json() == {"status": "success", "tickers": ["GOOG", "MSFT", "^GSPC"]}  # configured order


def test_historical_context_chart(client: TestClient, filled: report_data.Filled) -> None:
    response = client.get("/historical_context_chart/goog", params={"sessions": 10})  # case does not matter
    assert response.status_code == 200
    body = strict_json(response.text)
    assert isinstance(body, dict)
    recent = filled.closes["GOOG"][-10:]
    assert body["status"] == "success" and body["ticker"] == "GOOG"
    assert body["dates"] == body["historical_dates"] == [day.isoformat() for day, _ in recent]
    assert body["actual"] == body["historical_actuals"] == pytest.approx([close for _, close in recent])
    assert body["predicted"]["date"] == body["prediction_reference_date"] == "2013-03-04"
    assert body["predicted"]["value"] == body["predicted_price_for_ref_date"]
    assert body["predicted"]["value"] == pytest.approx(filled.predicted["GOOG"])
    assert body["naive"] == {"date": "2013-03-04", "value": pytest.approx(recent[-1][1])}
    predicted = body["predicted"]
    assert predicted["lower_95"] < predicted["lower_80"] < predicted["value"] < predicted["upper_80"]
    assert predicted["upper_80"] < predicted["upper_95"] and predicted["source"] == "model"
    assert predicted["unseen"] is False and predicted["p_value"] == pytest.approx(0.012)

    index = client.get("/historical_context_chart/%5Egspc")  # ^GSPC, URL-encoded
    assert index.status_code == 200 and index.json()["ticker"] == "^GSPC"
    assert len(index.json()["dates"]) == 60


# --- the kept endpoints' shapes ---------------------------------------------------------------------
# The replaced system (github.com/chienlax/MLOps_StockPricePrediction, src/api/main.py and
# src/utils/db_utils.py) answered these keys with these JSON types; its dashboard script read them.
# Ours keep every one of them, with the same type, and add keys beside them (never instead of them).
NULL = type(None)
Shape = dict[str, type | tuple[type, ...]]  # key -> the JSON value's Python type(s)
REPLACED_TABLE: Shape = {"status": str, "data": list}
REPLACED_TABLE_ROW: Shape = {
    "ticker": str,
    "predicted_price": (float, NULL),
    "date": str,
    "model_mlflow_run_id": (str, NULL),
}
REPLACED_TICKERS: Shape = {"status": str, "tickers": list}
REPLACED_CHART: Shape = {
    "status": str,
    "ticker": str,
    "historical_dates": list,
    "historical_actuals": list,
    "prediction_reference_date": (str, NULL),
    "predicted_price_for_ref_date": (float, NULL),
}
OUR_TABLE_ROW: Shape = {
    "target_date": str,
    "predicted_close": (float, NULL),
    "base_date": str,
    "base_close": (float, NULL),
    "change": (float, NULL),
    "change_pct": (float, NULL),
    "model_version": str,
    "as_of": str,
    "dataset_run_id": str,
    "created_at": (str, NULL),
}
OUR_CHART: Shape = {"dates": list, "actual": list, "predicted": (dict, NULL), "naive": (dict, NULL)}
# Gained with the calibrated intervals (issue 11) and the tested choice of what is served (issue 12):
# every table row and the chart's `predicted` object carry them.
GAINED: Shape = {
    "lower_80": (float, NULL),
    "upper_80": (float, NULL),
    "lower_95": (float, NULL),
    "upper_95": (float, NULL),
    "median": (float, NULL),
    "p_up": (float, NULL),
    "source": (str, NULL),
    "p_value": (float, NULL),
    "interval_source": (str, NULL),
    "interval_p_value": (float, NULL),
    "unseen": bool,
}
ERROR: Shape = {"detail": str}


def assert_shape(body: object, shape: Shape) -> None:
    """`body` is an object holding every key of `shape` with a value of its type (more keys are fine);
    true and false count as numbers only where the shape says `bool`."""
    assert isinstance(body, dict), body
    for key, kind in shape.items():
        assert key in body, f"missing {key!r} in {sorted(body)}"
        assert isinstance(body[key], kind), (key, body[key])
        assert kind is bool or not isinstance(body[key], bool), (key, body[key])


def assert_band(row: dict[str, object], stored: dict[str, object]) -> None:
    """The quantiles, chance of an up day and sources of `row` are the stored ones, in order."""
    bounds = [row[key] for key in ("lower_95", "lower_80", "median", "upper_80", "upper_95")]
    assert bounds == pytest.approx([stored[column] for column in report_data.QUANTILE_COLUMNS])
    assert bounds == sorted(bounds)  # type: ignore[type-var]
    assert row["p_up"] == pytest.approx(stored["p_up"])
    for key in ("source", "p_value", "interval_source", "interval_p_value", "unseen"):
        assert (
            row[key] == pytest.approx(stored[key]) if key.endswith("p_value") else row[key] == stored[key]
        ), key


def test_kept_endpoints_keep_the_replaced_keys_and_types(
    client: TestClient, filled: report_data.Filled
) -> None:
    table = strict_json(client.get("/predictions/latest_for_table").text)
    assert_shape(table, REPLACED_TABLE)
    assert isinstance(table, dict) and table["status"] == "success" and len(table["data"]) == 3
    for row in table["data"]:
        assert_shape(row, REPLACED_TABLE_ROW | OUR_TABLE_ROW | GAINED)
        assert isinstance(row["predicted_price"], float)
        date.fromisoformat(row["date"])
        assert_band(row, filled.newest[row["ticker"]])
    assert [row["unseen"] for row in table["data"]] == [False, False, True]
    assert [row["source"] for row in table["data"]] == ["model", "naive", "model"]
    assert [row["interval_source"] for row in table["data"]] == ["model", "garch", "rolling"]

    tickers = strict_json(client.get("/tickers").text)
    assert_shape(tickers, REPLACED_TICKERS)
    assert isinstance(tickers, dict) and tickers["status"] == "success"
    assert all(isinstance(ticker, str) for ticker in tickers["tickers"])

    chart = strict_json(client.get("/historical_context_chart/MSFT").text)
    assert_shape(chart, REPLACED_CHART | OUR_CHART)
    assert isinstance(chart, dict) and chart["status"] == "success" and chart["ticker"] == "MSFT"
    assert all(isinstance(day, str) for day in chart["historical_dates"])
    assert all(isinstance(close, float) for close in chart["historical_actuals"])
    assert len(chart["historical_dates"]) == len(chart["historical_actuals"]) == 60
    assert isinstance(chart["predicted_price_for_ref_date"], float)
    date.fromisoformat(chart["prediction_reference_date"])
    assert_shape(chart["predicted"], {"date": str, "value": float} | GAINED)
    assert_band(chart["predicted"], filled.newest["MSFT"])
    assert chart["predicted"]["source"] == "naive"  # MSFT serves the last close, p 0.62
    assert chart["predicted"]["value"] == chart["naive"]["value"]


def test_kept_endpoints_with_bars_but_no_predictions_yet(settings: Settings) -> None:
    """A ticker without a prediction: empty rows and nulls in the same shapes, never a missing key."""
    from sqlalchemy import delete

    filled = report_data.fill(settings)
    with filled.engine.begin() as connection:
        connection.execute(delete(LatestPrediction))
    with TestClient(create_app(settings, warm_registry=False)) as client:
        table = strict_json(client.get("/predictions/latest_for_table").text)
        assert table == {"status": "success", "data": []}
        tickers = strict_json(client.get("/tickers").text)
        assert tickers == {"status": "success", "tickers": ["GOOG", "MSFT", "^GSPC"]}
        response = client.get("/historical_context_chart/GOOG", params={"sessions": 5})
        assert response.status_code == 200
        chart = strict_json(response.text)
        assert_shape(chart, REPLACED_CHART | OUR_CHART)
        assert isinstance(chart, dict)
        assert chart["prediction_reference_date"] is None and chart["predicted_price_for_ref_date"] is None
        assert chart["predicted"] is None and chart["naive"] is None
        assert len(chart["historical_dates"]) == len(chart["historical_actuals"]) == 5


def test_kept_endpoints_error_shapes(client: TestClient, make_settings) -> None:  # type: ignore[no-untyped-def]
    """404 (unknown ticker), 422 (malformed) and 503 (empty database) are JSON objects with a `detail`."""
    unknown = client.get("/historical_context_chart/NOPE")
    assert unknown.status_code == 404
    assert_shape(strict_json(unknown.text), ERROR | {"hint": str})
    malformed = client.get("/historical_context_chart/bad$$")
    assert malformed.status_code == 422
    assert_shape(strict_json(malformed.text), ERROR | {"hint": str})
    with TestClient(create_app(make_settings(), warm_registry=False)) as empty:
        for path in ("/predictions/latest_for_table", "/tickers", "/historical_context_chart/GOOG"):
            response = empty.get(path)
            assert response.status_code == 503, path
            body = strict_json(response.text)
            assert_shape(body, ERROR | {"hint": str, "command": str})
            assert "ETag" not in response.headers  # errors are never cached


def test_latest_for_table_documents_every_key(client: TestClient) -> None:
    """The typed response model (in /openapi.json) names every key a real answer holds, each described."""
    from stockcli.web.responses import LatestTable, LatestTableRow

    body = strict_json(client.get("/predictions/latest_for_table").text)
    LatestTable.model_validate(body)  # extra keys are refused: a new key must be documented
    assert isinstance(body, dict) and body["data"]
    assert all(list(row) == list(LatestTableRow.model_fields) for row in body["data"])

    openapi = client.get("/openapi.json").json()
    answered = openapi["paths"]["/predictions/latest_for_table"]["get"]["responses"]["200"]
    assert answered["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/LatestTable"}
    for name in ("LatestTable", "LatestTableRow"):
        properties = openapi["components"]["schemas"][name]["properties"]
        undescribed = [key for key, schema in properties.items() if not schema.get("description")]
        assert undescribed == [], name
    assert set(openapi["components"]["schemas"]["LatestTableRow"]["properties"]) == set(body["data"][0])


def test_latest_for_table_names_the_mlflow_run_of_the_version_that_predicted(
    make_settings,  # type: ignore[no-untyped-def]
) -> None:
    """`model_mlflow_run_id` is the training run of each prediction's own version, in a real MLflow store."""
    from stockcli.db import store
    from stockcli.ml import registry
    from tests.test_registry import register, tiny_model

    settings = make_settings()
    filled = report_data.fill(settings)  # the newest predictions come from version "2"
    registry.clear_caches()
    model, config = tiny_model()
    for _ in range(3):
        with registry.training_run(settings, run_name="web") as run:
            register(settings, model, config, run)
    run_of = {info.version: info.training_run_id for info in registry.list_versions(settings)}
    assert sorted(run_of) == ["1", "2", "3"] and len(set(run_of.values())) == 3
    newer = newer_prediction(filled.engine, "GOOG", 900.0)  # version "3"
    unknown = newer_prediction(filled.engine, "^GSPC", 1500.0) | {"model_version": "9"}
    with filled.engine.begin() as connection:
        store.upsert(
            connection, LatestPrediction, [newer, unknown], key=("target_date", "ticker", "model_version")
        )

    with TestClient(create_app(settings, warm_registry=False)) as client:
        rows = strict_json(client.get("/predictions/latest_for_table").text)["data"]  # type: ignore[index]
    by_ticker = {row["ticker"]: (row["model_version"], row["model_mlflow_run_id"]) for row in rows}
    assert by_ticker == {"GOOG": ("3", run_of["3"]), "MSFT": ("2", run_of["2"]), "^GSPC": ("9", None)}
    assert registry.client(settings).get_run(run_of["3"]).info.run_name == "web"  # a real MLflow run
    registry.clear_caches()


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
            update(LatestPrediction)
            .where(LatestPrediction.ticker == "GOOG")
            .values(predicted_close=bad, q975=math.inf, p_up=bad)
        )
        connection.execute(
            update(ModelPerformance)
            .where(ModelPerformance.ticker == "GOOG", ModelPerformance.target_date == date(2013, 3, 1))
            .values(abs_pct_error=math.inf, abs_error=bad)
        )
    client = TestClient(create_app(settings, warm_registry=False))
    table = strict_json(client.get("/predictions/latest_for_table").text)
    assert isinstance(table, dict)
    goog = next(row for row in table["data"] if row["ticker"] == "GOOG")
    assert goog["predicted_price"] is None and goog["change"] is None
    chart = strict_json(client.get("/historical_context_chart/GOOG").text)
    assert isinstance(chart, dict) and chart["predicted"]["value"] is None
    assert chart["predicted_price_for_ref_date"] is None
    assert chart["predicted"]["upper_95"] is None and chart["predicted"]["p_up"] is None
    assert isinstance(chart["predicted"]["lower_80"], float)
    performance = strict_json(client.get("/performance", params={"ticker": "GOOG"}).text)
    assert isinstance(performance, dict)
    assert performance["history"][0]["abs_pct_error"] is None
    assert performance["summary"][0]["sessions"] == 20
    page = client.get("/", params={"ticker": "GOOG"})
    assert page.status_code == 200 and "nan" not in page.text.lower().replace("naive", "")
    assert "inf" not in page.text.lower().replace("info", "")
    svg = re.search(r'<svg id="price-chart".*?</svg>', page.text, re.S)
    assert svg is not None  # the 80% band is still drawn; the 95% band without its upper bound is not
    assert 'class="band band-80"' in svg.group(0) and 'class="band band-95"' not in svg.group(0)


def test_a_prediction_without_quantiles_draws_no_band(settings: Settings) -> None:
    """A prediction stored before intervals existed: the points and "-" in the table, no band, no legend."""
    filled = report_data.fill(settings)
    with filled.engine.begin() as connection:
        connection.execute(
            update(LatestPrediction)
            .where(LatestPrediction.ticker == "GOOG")
            .values(q025=None, q10=None, q50=None, q90=None, q975=None, p_up=None, source=None, unseen=None)
        )
    with TestClient(create_app(settings, warm_registry=False)) as client:
        page = client.get("/", params={"ticker": "GOOG"}).text
        chart = client.get("/historical_context_chart/GOOG").json()
    svg = re.search(r'<svg id="price-chart".*?</svg>', page, re.S)
    assert svg is not None and 'class="predicted point"' in svg.group(0)
    assert "band" not in svg.group(0) and 'class="median"' not in svg.group(0)
    assert "dark band" not in page
    assert chart["predicted"]["lower_80"] is None and chart["predicted"]["unseen"] is False


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
    # The fan at the predicted session: the light 95% band, the dark 80% band on it, the median.
    msft = filled.newest["MSFT"]
    light = re.search(r'<polygon class="band band-95"[^>]*points="([^"]+)"', chart.group(0))
    dark = re.search(r'<polygon class="band band-80"[^>]*points="([^"]+)"', chart.group(0))
    assert light is not None and dark is not None and light.start() < dark.start()
    light_y = sorted(float(point.split(",")[1]) for point in light.group(1).split())
    dark_y = sorted(float(point.split(",")[1]) for point in dark.group(1).split())
    assert light_y[0] < dark_y[0] <= dark_y[-1] < light_y[-1]  # the 80% band lies inside the 95% band
    assert (
        f"95% interval for 2013-03-04: {msft['q025']:,.2f} – {msft['q975']:,.2f} (garch interval, p 0.47)"
        in page
    )
    assert chart.group(0).count('class="median"') == 1
    assert "80% of closes should fall in the dark band and 95% in the light one" in page
    panel = re.search(r'<div id="prediction-panel".*?</section>', page, re.S)
    assert panel is not None
    assert f"{msft['q10']:,.2f} – {msft['q90']:,.2f}" in panel.group(0)
    assert f"{msft['q025']:,.2f} – {msft['q975']:,.2f}" in panel.group(0)
    assert 'P(up) <strong class="p-up">50%</strong>' in panel.group(0)
    assert ">naive</span>" in panel.group(0) and "p 0.62" in panel.group(0)
    assert ">garch</span>" in panel.group(0) and "p 0.47" in panel.group(0)
    assert "unseen" not in panel.group(0)
    unseen = client.get("/", params={"ticker": "^GSPC"}).text
    unseen_panel = re.search(r'<div id="prediction-panel".*?</section>', unseen, re.S)
    assert unseen_panel is not None and 'class="tag unseen"' in unseen_panel.group(0)
    assert ">rolling</span>" in unseen_panel.group(0) and "p 0.044" in unseen_panel.group(0)
    promotions = re.search(r'<table id="promotions-table".*?</table>', page, re.S)
    assert promotions is not None and ">0.0042<" in promotions.group(0) and ">0.83<" in promotions.group(0)
    assert "+10.9%" in promotions.group(0) and "+4.1% to +17.7%" in promotions.group(0)
    performance = re.search(r'<table id="performance-table".*?</table>', page, re.S)
    assert performance is not None and performance.group(0).count('class="muted ci"') == 3
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
            insert(LatestPrediction).values(
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
                q025=0.5,
                q10=0.8,
                q50=1.5,
                q90=2.2,
                q975=3.0,
                source="<b>m</b>",  # 16 characters at most
                interval_source="<i>g</i>",
                unseen=True,
            )
        )
    with TestClient(create_app(settings, warm_registry=False)) as client:
        page = client.get("/").text
        assert "<script>x</script>" not in page and "<b>9</b>" not in page
        assert "<b>m</b>" not in page and "<i>g</i>" not in page and "&lt;i&gt;g&lt;/i&gt;" in page
        chart = client.get("/", params={"ticker": "GOOG"}).text
        assert "<b>" not in chart and "<i>" not in chart
        assert "&lt;script&gt;x&lt;/script&gt;" in page
        assert "<script>alert" not in page and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
        assert evil_ticker in client.get("/tickers").json()["tickers"]  # JSON carries it verbatim, as data
        assert client.get("/historical_context_chart/%3Cscript%3Ex%3C%2Fscript%3E").status_code in (404, 422)


def test_fan_chart_escapes_its_text_and_draws_the_bands_in_order() -> None:
    """The chart's own text (ticker, version, sources) is escaped; the bands surround the served point."""
    from xml.etree import ElementTree

    from stockcli.services.report import CloseSeries, PredictionRow
    from stockcli.web.charts import fan_chart_svg

    evil = "<script>x</script>"
    prediction = PredictionRow(
        ticker=evil,
        target_date=date(2013, 3, 4),
        base_date=date(2013, 3, 1),
        base_close=10.0,
        predicted_close=10.2,
        change=0.02,
        model_version="<b>9</b>",
        as_of=date(2013, 3, 1),
        dataset_run_id="ds",
        created_at=None,
        lower_80=9.8,
        upper_80=10.6,
        lower_95=9.5,
        upper_95=10.9,
        median=10.2,
        p_up=0.7,
        source="model",
        p_value=0.01,
        interval_source="<i>g</i>",
        interval_p_value=0.2,
        unseen=True,
    )
    series = CloseSeries(evil, (date(2013, 2, 28), date(2013, 3, 1)), (9.9, 10.0), prediction)
    svg = str(fan_chart_svg(series, element_id='x"><script>'))
    assert "<script>" not in svg and "<b>" not in svg and "<i>" not in svg
    root = ElementTree.fromstring(svg)  # well-formed: every text and attribute escaped
    namespace = "{http://www.w3.org/2000/svg}"
    assert root.get("data-ticker") == evil and root.get("id") == 'x"><script>'
    polygons = {p.get("class"): p for p in root.iter(f"{namespace}polygon")}
    assert set(polygons) == {"band band-95", "band band-80"}

    def span(polygon: ElementTree.Element) -> tuple[float, float]:
        ys = [float(point.split(",")[1]) for point in (polygon.get("points") or "").split()]
        return min(ys), max(ys)

    (light_top, light_bottom), (dark_top, dark_bottom) = (
        span(polygons["band band-95"]),
        span(polygons["band band-80"]),
    )
    served = next(c for c in root.iter(f"{namespace}circle") if c.get("class") == "predicted point")
    assert light_top < dark_top < float(served.get("cy") or 0) < dark_bottom < light_bottom
    titles = " ".join(t.text or "" for t in root.iter(f"{namespace}title"))
    assert "(<i>g</i> interval, p 0.2)" in titles and "never trained on <script>x</script>" in titles


def _polygon_spans(points: str) -> dict[float, float]:
    """x -> the vertical extent of a band polygon (its upper edge, then its lower edge reversed)."""
    ys: dict[float, list[float]] = {}
    for point in points.split():
        x, y = (float(v) for v in point.split(","))
        ys.setdefault(x, []).append(y)
    return {x: max(values) - min(values) for x, values in ys.items()}


def test_dashboard_draws_the_horizon_fan_and_the_var_exceptions(settings: Settings) -> None:
    """With stored horizons: the fan reaches 20 sessions ahead on the session axis (wider at 20 than at
    1), the closes over the 1-session bands served for them, and the VaR exceptions chart marks the one
    loss beyond its 99% VaR at its date. Without (MSFT): the next-session fan, and an empty VaR chart."""
    filled = report_data.fill(settings)
    horizons = report_data.add_horizons(settings, filled)
    with TestClient(create_app(settings, warm_registry=False)) as client:
        page = client.get("/", params={"ticker": "GOOG"}).text
        other = client.get("/", params={"ticker": "MSFT"}).text
    chart = re.search(r'<svg id="price-chart".*?</svg>', page, re.S)
    assert chart is not None
    svg = chart.group(0)
    assert 'class="band band-95"' not in svg  # the next-session triangle gives way to the long fan
    light = re.search(r'<polygon class="fan fan-95"[^>]*points="([^"]+)"', svg)
    dark = re.search(r'<polygon class="fan fan-80"[^>]*points="([^"]+)"', svg)
    assert light is not None and dark is not None and light.start() < dark.start()
    spans = _polygon_spans(light.group(1))
    xs = sorted(spans)
    assert len(xs) == 21  # the last close and every session up to 20 ahead
    assert spans[xs[0]] == 0 and 0 < spans[xs[1]] < spans[xs[5]] < spans[xs[20]]
    whiskers = {
        int(h): float(y2) - float(y1)
        for h, y1, y2 in re.findall(
            r'data-horizon="(\d+)"><title>[^<]*</title><line class="horizon-whisker" x1="[^"]+" x2="[^"]+" '
            r'y1="([^"]+)" y2="([^"]+)"',
            svg,
        )
    }
    assert set(whiskers) == {1, 5, 20} and whiskers[20] > whiskers[5] > whiskers[1] > 0
    # The session axis: 60 stored closes and 20 sessions ahead, evenly spaced (Good Friday skipped).
    closes = re.search(r'<polyline class="actual" fill="none" points="([^"]+)"', svg)
    assert closes is not None
    close_xs = [float(point.split(",")[0]) for point in closes.group(1).split()]
    step = close_xs[1] - close_xs[0]
    assert len(close_xs) == 60 and xs[0] == pytest.approx(close_xs[-1], abs=0.1)
    assert xs[20] - xs[0] == pytest.approx(20 * step, abs=0.2)
    assert ">2013-04-01</text>" in svg and ">+20</text>" in svg
    past = re.findall(r'<path class="past-band past-band-(\d+)"[^>]*d="([^"]+)"', svg)
    assert [(level, d.count("M")) for level, d in past] == [("95", horizons.scored), ("80", horizons.scored)]
    assert "interpolated in the square root of time" in svg and "drawn over the 1-session" in svg
    newest = horizons.newest[20]
    table = re.search(r'<table class="data horizon-table".*?</table>', page, re.S)
    assert table is not None and table.group(0).count('<tr data-horizon="') == 3
    assert f"{newest['q025']:,.2f} – {newest['q975']:,.2f}" in table.group(0)

    var = re.search(r'<svg id="var-chart".*?</svg>', page, re.S)
    assert var is not None
    marked = re.findall(r'<circle class="exception exception-(\d+)" data-date="([^"]+)"', var.group(0))
    assert marked == [("99", horizons.exception_date.isoformat())]
    assert var.group(0).count('<circle cx="') == horizons.scored
    assert 'class="var-line var-99"' in var.group(0) and 'class="var-line var-95"' in var.group(0)
    caption = f"1 exception of the 1-session 99% VaR (1 of the 95% VaR) in {horizons.scored} scored sessions"
    assert caption in var.group(0) and "Basel zone green" in var.group(0)

    empty = re.search(r'<svg id="price-chart".*?</svg>', other, re.S)
    assert empty is not None and 'class="band band-95"' in empty.group(0) and "fan" not in empty.group(0)
    assert "horizon-table" not in other
    assert "No scored 1-session VaR forecasts for MSFT yet." in other


def test_sqrt_time_path_goes_through_the_stored_horizons() -> None:
    from stockcli.web.charts import sqrt_time_path

    path = sqrt_time_path(100.0, [(1, 101.0), (5, None), (5, 104.0), (20, 110.0)], 22)
    assert path[0] == 100.0 and path[1] == pytest.approx(101.0) and path[5] == pytest.approx(104.0)
    assert path[20] == pytest.approx(110.0) and path[21] is None and path[22] is None
    share = (math.sqrt(3) - 1) / (math.sqrt(5) - 1)
    expected = math.log(1.01) + (math.log(1.04) - math.log(1.01)) * share
    assert path[3] == pytest.approx(100.0 * math.exp(expected))


def test_how_the_views_write_numbers() -> None:
    from stockcli import formats

    assert [formats.p_value(v) for v in (0.0123, 0.62, 0.0004, None, math.nan)] == [
        "0.012",
        "0.62",
        "< 0.001",
        "-",
        "-",
    ]
    assert formats.percent(-1e-12, 1, True) == "+0.0%" and formats.percent(-0.0124, 1, True) == "-1.2%"
    assert formats.interval(796.891, 1822.14) == "796.89 – 1,822.14" and formats.interval(1.0, None) == "-"
    assert formats.percent_interval(0.041, 0.177) == "+4.1% to +17.7%"
    assert formats.number("v2") == "v2" and formats.number(math.inf) == "-" and formats.number(True) == "-"


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
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "empty"
        assert health.json()["command"] == "stockcli daily"
        assert not (settings.data_dir / "stockcli.db").exists()  # serving never creates it

        report_data.fill(settings)  # the first daily run lands while the dashboard is up
        assert client.get("/tickers").status_code == 200
        health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"


def test_empty_schema_gives_the_same_answer(settings: Settings) -> None:
    open_database(settings)  # tables exist, no rows
    with TestClient(create_app(settings, warm_registry=False)) as client:
        assert "stockcli daily" in client.get("/").text
        response = client.get("/predictions/latest_for_table")
        assert response.status_code == 503 and "no bars and no predictions" in response.json()["detail"]


def test_no_schema_at_all(settings: Settings) -> None:
    engine = open_database(settings)
    from alembic import command

    from stockcli.db.engine import alembic_config

    command.downgrade(alembic_config(engine), "base")
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

    from stockcli.ml import registry
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
        table = strict_json(client.get("/predictions/latest_for_table").text)
        assert isinstance(table, dict)
        rows = table["data"]
        assert {row["ticker"]: row["predicted_price"] for row in rows} == pytest.approx(
            {ticker: row.predicted_close for ticker, row in stored.items()}
        )
        assert {row["date"] for row in rows} == {"2013-03-04"}
        assert {row["model_version"] for row in rows} == {stored["GOOG"].model_version}
        run_of = {info.version: info.training_run_id for info in registry.list_versions(settings)}
        assert (
            {row["model_mlflow_run_id"] for row in rows} == {run_of[stored["GOOG"].model_version]} != {None}
        )
        # The watchlist first, then the market series har_range reads (stored bars, no predictions).
        assert client.get("/tickers").json()["tickers"] == ["GOOG", "MSFT", "^GSPC"]

        chart = client.get("/historical_context_chart/GOOG").json()
        assert chart["dates"][-1] == "2013-03-01" and len(chart["dates"]) == 60
        assert chart["predicted"]["value"] == pytest.approx(stored["GOOG"].predicted_close)
        assert chart["naive"]["value"] == pytest.approx(chart["actual"][-1])
        # What `predict` stored reaches the chart: ordered quantiles, the chance of an up day, the sources.
        band = chart["predicted"]
        assert_shape(band, GAINED)
        assert band["lower_95"] <= band["lower_80"] <= band["median"] <= band["upper_80"] <= band["upper_95"]
        assert band["lower_95"] == pytest.approx(stored["GOOG"].q025) and 0 <= band["p_up"] <= 1
        assert band["source"] in ("model", "naive")
        assert band["interval_source"] == stored["GOOG"].interval_source in get_args(IntervalSource)
        assert band["unseen"] is False

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
        # The real `predict` stored horizons 1, 5 and 20: the fan reaches 20 sessions ahead.
        assert page.count('<polygon class="fan fan-95"') == page.count('<polygon class="fan fan-80"') == 1
        assert re.findall(r'class="horizon-mark" data-horizon="(\d+)"', page) == ["1", "5", "20"]
        assert 'id="var-chart"' in page

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
        assert "nobody:***@127.0.0.1:1/none" in body["detail"] and "command" not in body  # names it, hidden
        assert "secret" not in response.text  # the password never shows
        page = client.get("/")
        assert "cannot be read" in page.text and "fill-command" not in page.text
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert health.json()["detail"] == body["detail"] and health.json()["command"] is None
        assert "secret" not in health.text


# --- /health --------------------------------------------------------------------------------------


def test_health_is_503_when_the_database_goes_away_after_start(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    report_data.fill(settings).engine.dispose()
    with TestClient(create_app(settings, warm_registry=False)) as client:
        assert client.get("/health").status_code == 200
        for path in settings.data_dir.glob("stockcli.db*"):
            path.unlink()  # every call asks the database: `ok` is never a stale answer
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        assert client.get("/predictions/latest_for_table").status_code == 503


def test_health_is_503_for_a_file_that_is_not_a_database(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    settings.data_dir.mkdir(parents=True)
    (settings.data_dir / "stockcli.db").write_bytes(b"this is not a database" * 100)
    with TestClient(create_app(settings, warm_registry=False)) as client:
        health = client.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
        tickers = client.get("/tickers")  # the same reason as the data endpoints, and no fill command
        assert tickers.status_code == 503 and health.json()["detail"] == tickers.json()["detail"]
        assert health.json()["command"] is None


# --- responses cached per data version --------------------------------------------------------------

CACHED_PATHS = (
    "/",
    "/?ticker=msft",
    "/predictions/latest_for_table",
    "/tickers",
    "/historical_context_chart/GOOG",
    "/historical_context_chart/GOOG?sessions=10",
    "/performance",
    "/performance?ticker=MSFT&limit=5",
    "/models",
)


def newer_prediction(engine, ticker: str, predicted_close: float) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """The newest stored prediction row of `ticker` (every column), as a newer model version would store it."""
    from datetime import timedelta

    from sqlalchemy import select

    table = LatestPrediction.__table__
    with engine.connect() as connection:
        row = dict(
            connection.execute(
                select(table).where(table.c.ticker == ticker).order_by(table.c.created_at.desc()).limit(1)
            )
            .mappings()
            .one()
        )
    row.update(
        model_version="3", predicted_close=predicted_close, created_at=row["created_at"] + timedelta(hours=1)
    )
    return row


def test_repeated_requests_get_the_same_bytes_and_etag_and_304(shared: Shared) -> None:
    client = shared.client
    for path in CACHED_PATHS:
        first, second = client.get(path), client.get(path)  # the second from the cache, before routing
        assert first.status_code == second.status_code == 200, path
        assert first.content == second.content, path
        for header in ("content-type", "content-length", "cache-control"):
            assert first.headers[header] == second.headers[header], (path, header)
        etag = first.headers["etag"]
        assert re.fullmatch(r'"[0-9a-f]{24}"', etag) and second.headers["etag"] == etag, path
        assert first.headers["cache-control"] == "no-cache", path
        not_modified = client.get(path, headers={"If-None-Match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b"", path
        assert not_modified.headers["etag"] == etag
        assert client.get(path, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
        assert client.get(path, headers={"If-None-Match": "*"}).status_code == 304
        changed = client.get(path, headers={"If-None-Match": '"0123456789abcdef01234567"'})
        assert changed.status_code == 200 and changed.content == first.content


def test_etags_survive_a_restart(shared: Shared) -> None:
    # The tag is a hash of the bytes: a browser's copy stays valid across `stockcli serve` restarts.
    with TestClient(create_app(shared.settings, warm_registry=False)) as restarted:
        for path in ("/predictions/latest_for_table", "/historical_context_chart/GOOG", "/"):
            assert restarted.get(path).headers["etag"] == shared.client.get(path).headers["etag"], path


def test_a_run_that_writes_changes_etag_and_content(settings: Settings) -> None:
    from stockcli.db import store

    filled = report_data.fill(settings)
    engine = filled.engine
    watched = ("/predictions/latest_for_table", "/historical_context_chart/GOOG", "/?ticker=GOOG", "/")
    with TestClient(create_app(settings, warm_registry=False)) as client:
        before = {path: client.get(path) for path in watched}
        run_id = store.start_run(engine, command="predict", as_of=report_data.AS_OF)
        new_close = round(filled.predicted["GOOG"] * 1.5, 4)
        with engine.begin() as connection:
            store.upsert(
                connection,
                LatestPrediction,
                [newer_prediction(engine, "GOOG", new_close)],
                key=("target_date", "ticker", "model_version"),
            )
        # Seen at once, even before the run finishes: the version follows every commit, not the ledger.
        during = client.get(
            "/predictions/latest_for_table", headers={"If-None-Match": before[watched[0]].headers["etag"]}
        )
        assert during.status_code == 200
        goog = next(row for row in during.json()["data"] if row["ticker"] == "GOOG")
        assert goog["predicted_price"] == pytest.approx(new_close) and goog["model_version"] == "3"
        store.finish_run(engine, run_id, status="ok")

        for path, old in before.items():
            new = client.get(path, headers={"If-None-Match": old.headers["etag"]})
            assert new.status_code == 200, path
            assert new.headers["etag"] != old.headers["etag"] and new.content != old.content, path
            assert client.get(path, headers={"If-None-Match": new.headers["etag"]}).status_code == 304
        chart = client.get("/historical_context_chart/GOOG").json()
        assert chart["predicted_price_for_ref_date"] == pytest.approx(new_close)
        assert f"{new_close:,.2f}" in client.get("/").text
        assert "predict" in client.get("/").text  # the finished run in the runs table


def test_a_write_outside_any_run_is_seen_too(settings: Settings) -> None:
    # A killed run's rows, or a hand-made fix: no ledger row finishes, the responses change anyway.
    filled = report_data.fill(settings)
    with TestClient(create_app(settings, warm_registry=False)) as client:
        old = client.get("/tickers")
        with filled.engine.begin() as connection:
            connection.execute(
                update(LatestPrediction).where(LatestPrediction.ticker == "MSFT").values(ticker="MSFT.X")
            )
        new = client.get("/tickers", headers={"If-None-Match": old.headers["etag"]})
        assert new.status_code == 200 and "MSFT.X" in new.json()["tickers"]


def test_a_cached_response_reads_no_data(make_settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from stockcli.services import report as report_service

    settings = make_settings()
    report_data.fill(settings).engine.dispose()
    app = create_app(settings, warm_registry=False)
    with TestClient(app) as client:
        first = client.get("/predictions/latest_for_table")
        builds = app.state.reader.responses.builds

        def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("a cached response queried the data again")

        monkeypatch.setattr(report_service, "latest_predictions", refuse)
        for _ in range(5):
            assert client.get("/predictions/latest_for_table").content == first.content
        assert app.state.reader.responses.builds == builds


def test_a_second_hit_on_a_registry_keyed_url_skips_the_routes(
    make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # The page, the table and /metrics are keyed by the registry too; their hits are answered before routing.
    from stockcli.web.app import Reader

    settings = make_settings()
    report_data.fill(settings).engine.dispose()
    paths = ("/", "/predictions/latest_for_table", "/metrics")
    with TestClient(create_app(settings, warm_registry=False)) as client:
        first = {path: client.get(path) for path in paths}

        async def refuse(*_args: object, **_kwargs: object) -> None:
            raise AssertionError("a cached hit went through the routes")

        monkeypatch.setattr(Reader, "serve", refuse)
        for path, old in first.items():
            again = client.get(path)
            assert again.status_code == 200 and again.content == old.content, path
            assert again.headers["content-type"] == old.headers["content-type"], path


def test_models_are_looked_up_again_when_a_run_finishes(
    make_settings, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    # The registry stands in for MLflow here (a real one is the slow end-to-end test's): what is
    # tested is when the dashboard looks again.
    from stockcli.db import store
    from stockcli.services import report as report_service

    settings = make_settings()
    filled = report_data.fill(settings)
    answers = [report_service.ModelsInfo((), None, "No model registry yet.")]
    lookups: list[int] = []

    def model_versions(_settings: Settings) -> report_service.ModelsInfo:
        lookups.append(1)
        return answers[-1]

    monkeypatch.setattr(report_service, "model_versions", model_versions)
    with TestClient(create_app(settings, warm_registry=False)) as client:
        first = client.get("/models")
        assert first.json()["production_version"] is None and len(lookups) == 1
        answers.append(
            report_service.ModelsInfo(
                (
                    report_service.ModelVersionRow(
                        version="3",
                        aliases=("Production",),
                        test_metrics={"mae": 1.5},
                        dataset_run_id="ds-newer",
                        created_at=None,
                    ),
                ),
                "3",
            )
        )
        assert client.get("/models").content == first.content and len(lookups) == 1  # no run since

        run_id = store.start_run(filled.engine, command="promote", as_of=report_data.AS_OF)
        store.finish_run(filled.engine, run_id, status="ok")
        after = client.get("/models", headers={"If-None-Match": first.headers["etag"]})
        assert after.status_code == 200 and after.json()["production_version"] == "3"
        assert "Production model: <strong>v3</strong>" in client.get("/").text
        looked = len(lookups)
        assert client.get("/models").status_code == 200 and len(lookups) == looked


def test_registry_cache_bounds_the_wait_and_keeps_the_newest_answer() -> None:
    import threading

    from stockcli.services.report import ModelsInfo
    from stockcli.web.cache import RegistryCache

    release = threading.Event()
    answers = iter([ModelsInfo((), None, "first"), ModelsInfo((), "7", None)])

    def lookup() -> ModelsInfo:
        answer = next(answers)
        if answer.production_version == "7":
            release.wait(10)  # a slow tracking server
        return answer

    registry = RegistryCache(lookup, ttl_s=3600, wait_s=0.05)
    info, generation = registry.current(epoch=1)
    assert info.note == "first"
    info, same = registry.current(epoch=2)  # a run finished: looked up again, waited at most 50 ms
    assert info.note == "first" and same == generation
    release.set()
    for _ in range(200):
        info, newer = registry.current(epoch=2)
        if newer != generation:
            break
        threading.Event().wait(0.01)
    assert info.production_version == "7" and newer == generation + 1


@pytest.mark.postgres
def test_postgres_data_version_from_the_event_loop(postgres_url: str) -> None:
    """The dashboard's event loop reads PostgreSQL's snapshot on its own async connection, one
    query for every request waiting, and every commit changes it (no thread, no missed write)."""
    import asyncio

    from sqlalchemy import text

    from stockcli.db.engine import make_engine
    from stockcli.web.cache import DataVersion

    engine = make_engine(postgres_url)
    version = DataVersion(engine)

    async def read_commit_read() -> tuple[list[str | None], str | None]:
        batch = await asyncio.gather(*(version.token_async() for _ in range(20)))
        with engine.begin() as connection:
            connection.execute(text("CREATE TEMPORARY TABLE touched (x int)"))
        return list(batch), await version.token_async()

    try:
        batch, after = asyncio.run(read_commit_read())
        assert batch[0] is not None and re.fullmatch(r"\d+:\d+:[\d,]*", batch[0])
        assert len(set(batch)) == 1  # twenty requests, one query
        assert after is not None and after != batch[0]
    finally:
        version.close()
        engine.dispose()
