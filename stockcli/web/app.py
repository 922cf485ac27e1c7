"""The read-only dashboard behind `stockcli serve`: FastAPI, Jinja2 templates, inline SVG charts.

It never writes: no schema upgrade, no upsert, no run lock, so it can stay up while cron or the daemon
runs the daily job. A SQLite file that does not exist yet is not created; the page (and every JSON
endpoint) then says which command fills it. Every script and style is served by the app itself.

Endpoints kept from the replaced system, with their shapes: `GET /predictions/latest_for_table`,
`GET /tickers`, `GET /historical_context_chart/{ticker}`. Added: `GET /performance`, `GET /models`,
`GET /health`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from stockcli.config import TICKER_PATTERN, Settings, redact_url
from stockcli.db import queries_report as queries
from stockcli.errors import NoDataError, StockCliError
from stockcli.services import report as report_service
from stockcli.web import pages

MODELS_TTL_S = 60.0
MAX_CHART_SESSIONS = 1000
MAX_HISTORY_ROWS = 5000


def to_plain(value: Any) -> Any:
    """JSON-ready values: dataclasses as dicts, dates as ISO text, NaN and infinities as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return to_plain(float(value))
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [to_plain(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        return to_plain(value.item())
    return str(value)


class SafeJSONResponse(JSONResponse):
    """JSON that never carries NaN or Infinity (invalid JSON): they become null."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            to_plain(content), allow_nan=False, ensure_ascii=False, separators=(",", ":")
        ).encode()


FILL_COMMAND = "stockcli daily"


class ApiError(Exception):
    """An error answered as JSON (or as a page for the HTML routes); `command` fills an empty database."""

    def __init__(
        self, status_code: int, detail: str, hint: str | None = None, *, command: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.hint = hint
        self.command = command


def _unreadable(settings: Settings, exc: BaseException) -> ApiError:
    error = report_service.unreadable_database(settings, exc)
    return ApiError(503, error.message, error.hint)


class Reader:
    """Lazy, read-only access to the database and the registry, shared by all requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database_label = redact_url(settings.database_url)
        self._engine: Engine | None = None
        self._ready = False
        self._lock = threading.Lock()
        self._models: report_service.ModelsInfo | None = None
        self._models_at = 0.0
        self._models_lock = threading.Lock()
        self._models_refreshing = False

    def engine(self) -> Engine:
        """The engine once the database holds data; raises ApiError 503 naming the command to run."""
        if self._ready and self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is None:
                self._engine = queries.connect_readonly(self.settings)
            try:
                state = queries.database_state(self._engine)
            except DBAPIError as exc:
                raise _unreadable(self.settings, exc) from None
            if state != "ready":
                raise ApiError(503, self.empty_message(state), report_service.FILL_HINT, command=FILL_COMMAND)
            self._ready = True
            assert self._engine is not None
            return self._engine

    def empty_message(self, state: str) -> str:
        return {
            "missing": f"The database {self.database_label} does not exist yet.",
            "no_schema": f"The database {self.database_label} has no stockcli tables yet.",
            "empty": f"The database {self.database_label} holds no bars and no predictions yet.",
        }.get(state, "The database is not ready.")

    def models(self) -> report_service.ModelsInfo:
        """Registry versions, cached for a minute (the first look-up imports MLflow: seconds).

        Only the very first look-up makes a request wait; later ones refresh in the background and
        answer with the previous list meanwhile, so a slow tracking server never stalls the page.
        """
        with self._models_lock:
            if self._models is None:
                self._refresh_models()
            elif time.monotonic() - self._models_at > MODELS_TTL_S and not self._models_refreshing:
                self._models_refreshing = True
                threading.Thread(
                    target=self._refresh_in_background, name="stockcli-registry", daemon=True
                ).start()
            assert self._models is not None
            return self._models

    def _refresh_models(self) -> None:
        self._models = report_service.model_versions(self.settings)
        self._models_at = time.monotonic()

    def _refresh_in_background(self) -> None:
        info = report_service.model_versions(self.settings)
        with self._models_lock:
            self._models, self._models_at, self._models_refreshing = info, time.monotonic(), False

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()


def parse_ticker(raw: str) -> str:
    """Upper-case and check a ticker from the URL; raises ApiError 422 for a malformed one."""
    cleaned = raw.strip().upper()
    if not TICKER_PATTERN.fullmatch(cleaned):
        raise ApiError(
            422,
            f"Malformed ticker {raw[:40]!r}.",
            "A ticker is letters, digits, '.', '-' or '=', optionally starting with '^' (e.g. MSFT, ^GSPC).",
        )
    return cleaned


def create_app(settings: Settings, *, warm_registry: bool = True) -> FastAPI:
    """The dashboard app for `settings`. `warm_registry` looks the registry up in the background at start."""
    reader = Reader(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if warm_registry:
            threading.Thread(target=reader.models, name="stockcli-registry-warmup", daemon=True).start()
        yield
        reader.close()

    # No /docs or /redoc: FastAPI serves them from a CDN, and this app fetches nothing from the network.
    app = FastAPI(
        title="stockcli",
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
        lifespan=lifespan,
    )
    app.state.reader = reader
    app.mount("/static", StaticFiles(directory=str(pages.STATIC_DIR)), name="static")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if _wants_html(request):
            return _error_page(reader, exc)
        body: dict[str, Any] = {"detail": exc.detail}
        if exc.hint:
            body["hint"] = exc.hint
        if exc.command:
            body["command"] = exc.command
        return SafeJSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        # Down, wrong URL, or a schema older than this version (serve never upgrades it).
        return await api_error(request, _unreadable(settings, exc))

    @app.exception_handler(StockCliError)
    async def stockcli_error(request: Request, exc: StockCliError) -> Response:
        command = FILL_COMMAND if isinstance(exc, NoDataError) else None
        return await api_error(request, ApiError(503, exc.message, exc.hint, command=command))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(ticker: str | None = None) -> Response:
        try:
            engine = reader.engine()
        except ApiError as exc:
            if exc.status_code != 503:
                raise
            return _empty_page(reader, exc)
        selected = parse_ticker(ticker) if ticker else None
        tickers = queries.known_tickers(engine, preferred=settings.data.tickers)
        if selected is not None and selected not in tickers:
            raise ApiError(404, f"Unknown ticker {selected!r}.", f"Known tickers: {', '.join(tickers)}.")
        report = report_service.build_report(
            settings,
            engine=engine,
            models=reader.models(),
            close_sessions=30,
            runs_limit=8,
            promotions_limit=8,
        )
        if selected is None:
            predicted = {p.ticker for p in report.predictions}
            selected = next((t for t in tickers if t in predicted), tickers[0] if tickers else None)
        series = report_service.close_series(engine, selected, sessions=60) if selected else None
        production = next((m for m in report.models if m.version == report.production_version), None)
        html = pages.render(
            "index.html",
            tickers=tickers,
            selected=selected,
            series=series,
            predictions=report.predictions,
            series_by_ticker={s.ticker: s for s in report.recent_closes},
            performance=report.performance,
            window_sessions=report.window_sessions,
            models=report.models,
            production=production,
            production_version=report.production_version,
            runs=report.runs,
            promotions=report.promotions,
            notes=report.notes,
        )
        return HTMLResponse(html)

    @app.get("/predictions/latest_for_table")
    def latest_for_table() -> Response:
        """The newest prediction per ticker, as table rows."""
        engine = reader.engine()
        rows = [
            {
                "ticker": p.ticker,
                "date": p.target_date,
                "target_date": p.target_date,
                "predicted_price": p.predicted_close,
                "predicted_close": p.predicted_close,
                "base_date": p.base_date,
                "base_close": p.base_close,
                "change": p.change,
                "change_pct": None if p.change is None else p.change * 100.0,
                "model_version": p.model_version,
                "as_of": p.as_of,
                "dataset_run_id": p.dataset_run_id,
                "created_at": p.created_at,
            }
            for p in report_service.latest_predictions(engine)
        ]
        return SafeJSONResponse(rows)

    @app.get("/tickers")
    def tickers() -> Response:
        """Tickers with stored bars or predictions."""
        engine = reader.engine()
        return SafeJSONResponse(queries.known_tickers(engine, preferred=settings.data.tickers))

    @app.get("/historical_context_chart/{ticker}")
    def historical_context_chart(
        ticker: str,
        sessions: Annotated[
            int, Query(ge=2, le=MAX_CHART_SESSIONS, description="Recent sessions to return.")
        ] = 60,
    ) -> Response:
        """Recent actual closes of one ticker plus its newest prediction and the naive forecast."""
        cleaned = parse_ticker(ticker)
        engine = reader.engine()
        if not queries.ticker_exists(engine, cleaned):
            raise ApiError(
                404,
                f"Unknown ticker {cleaned!r}.",
                f"Known tickers: {', '.join(queries.known_tickers(engine, preferred=settings.data.tickers))}.",
            )
        series = report_service.close_series(engine, cleaned, sessions=sessions)
        prediction = series.prediction
        naive = series.naive
        return SafeJSONResponse(
            {
                "ticker": cleaned,
                "dates": list(series.dates),
                "actual": list(series.closes),
                "predicted": None
                if prediction is None
                else {
                    "date": prediction.target_date,
                    "value": prediction.predicted_close,
                    "base_date": prediction.base_date,
                    "base_close": prediction.base_close,
                    "model_version": prediction.model_version,
                },
                "naive": None if naive is None else {"date": naive[0], "value": naive[1]},
            }
        )

    @app.get("/performance")
    def performance(
        ticker: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS, description="Most history rows.")] = 250,
    ) -> Response:
        """Rolling live accuracy per ticker (the monitoring window) and the scored sessions behind it."""
        cleaned = parse_ticker(ticker) if ticker else None
        engine = reader.engine()
        if cleaned is not None and not queries.ticker_exists(engine, cleaned):
            raise ApiError(404, f"Unknown ticker {cleaned!r}.")
        return SafeJSONResponse(
            {
                "window_sessions": settings.monitor.window_sessions,
                "summary": report_service.live_performance(settings, engine=engine, ticker=cleaned),
                "history": report_service.scored_sessions(engine, limit=limit, ticker=cleaned),
            }
        )

    @app.get("/models")
    def models() -> Response:
        """Registered model versions and the one holding the Production alias."""
        info = reader.models()
        return SafeJSONResponse(
            {"production_version": info.production_version, "versions": info.versions, "note": info.note}
        )

    @app.get("/health")
    def health() -> Response:
        """Always 200: `ok`, `empty` (with the command that fills it) or `unavailable` (cannot read it)."""
        try:
            reader.engine()
        except ApiError as exc:
            return SafeJSONResponse(
                {
                    "status": "empty" if exc.command else "unavailable",
                    "detail": exc.detail,
                    "hint": exc.hint,
                    "command": exc.command,
                }
            )
        return SafeJSONResponse({"status": "ok", "database": reader.database_label})

    return app


def _wants_html(request: Request) -> bool:
    # Only the page answers in HTML; every other route is a JSON API.
    return request.url.path == "/"


def _empty_page(reader: Reader, exc: ApiError) -> HTMLResponse:
    # 200: the dashboard works, it has nothing to show yet; the JSON routes answer 503 meanwhile.
    html = pages.render(
        "empty.html", message=exc.detail, hint=exc.hint, command=exc.command, database=reader.database_label
    )
    return HTMLResponse(html)


def _error_page(reader: Reader, exc: ApiError) -> HTMLResponse:
    if exc.status_code == 503:
        return _empty_page(reader, exc)
    html = pages.render("error.html", status_code=exc.status_code, message=exc.detail, hint=exc.hint)
    return HTMLResponse(html, status_code=exc.status_code)
