"""The read-only dashboard behind `stockcli serve`: FastAPI, Jinja2 templates, inline SVG charts.

It never writes (no upgrade, upsert or lock), so it can stay up while the daily job runs; an empty or
missing database answers with the command that fills it. Every script and style is served locally.

Kept from the replaced system (chienlax/MLOps_StockPricePrediction, `src/api/main.py`), its keys
first: `GET /predictions/latest_for_table`, `GET /tickers`, `GET /historical_context_chart/{ticker}`.
Added: `/performance`, `/models`, `/health` (GET and HEAD), `/metrics`. Responses are cached per data
version with an ETag (`cache.py`): a repeat costs one cheap query, or `304 Not Modified`.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from dataclasses import replace
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from stockcli.config import TICKER_PATTERN, Settings, redact_url
from stockcli.errors import NoDataError, StockCliError
from stockcli.jsonable import dumps, to_plain
from stockcli.services import report as report_service
from stockcli.web import pages
from stockcli.web.cache import CachedBody, CachedFirst, DataVersion, RegistryCache, ResponseCache, answer
from stockcli.web.responses import LatestTable

MAX_REMEMBERED_URLS = 4096
MAX_CHART_SESSIONS = 1000
MAX_HISTORY_ROWS = 5000


def json_bytes(content: Any) -> bytes:
    """Compact UTF-8 JSON: never NaN or Infinity (invalid JSON), they become null."""
    return dumps(content, compact=True).encode()


class SafeJSONResponse(JSONResponse):
    """JSON that never carries NaN or Infinity (invalid JSON): they become null."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


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
    """Lazy, read-only access to the database and the registry, and the response cache, for all requests."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.database_label = redact_url(settings.database_url)
        self._engine: Engine | None = None
        self._ready = False
        self._lock = threading.Lock()
        self._version: DataVersion | None = None
        self._ledger: tuple[str, Hashable] | None = None  # (data version, ledger epoch read at it)
        self.registry = RegistryCache(lambda: report_service.model_versions(settings))
        self.responses = ResponseCache()
        # URL -> (key, whether the registry's generation versions it too), for the URLs answered with 200
        self._urls: dict[tuple[str, bytes], tuple[Hashable, bool]] = {}

    def engine(self) -> Engine:
        """The engine once the database holds data; raises ApiError 503 naming the command to run."""
        if self._ready and self._engine is not None:
            return self._engine
        with self._lock:
            if self._engine is None:
                self._engine = report_service.connect(self.settings)  # None: no SQLite file yet
            self._check_ready(self._engine)
            assert self._engine is not None
            self._version = self._version or DataVersion(self._engine)
            self._ready = True
            return self._engine

    def _check_ready(self, engine: Engine | None) -> None:
        """Raise ApiError 503: saying why the database cannot be read, or naming the command that fills it."""
        try:
            state = report_service.database_state(engine)
        except DBAPIError as exc:
            raise _unreadable(self.settings, exc) from None
        if state != "ready":
            message = report_service.empty_database_message(state, self.database_label)
            raise ApiError(503, message, report_service.FILL_HINT, command=FILL_COMMAND)

    def data_version(self) -> str:
        """A token that changes whenever anything is committed to the database (ApiError 503 as `engine`)."""
        engine = self.engine()
        assert self._version is not None
        try:
            return self._version.token()
        except (DBAPIError, OSError, engine.dialect.loaded_dbapi.Error) as exc:
            raise _unreadable(self.settings, exc) from None

    def probe(self) -> None:
        """Read the database now, cheaply: the data version alone (SQLite: shared memory) still answers
        for a file spoiled under a running server. Raises ApiError 503 as `engine` does."""
        self._check_ready(self.engine())
        self.data_version()

    def ledger_epoch(self, data_version: str) -> Hashable:
        """The newest ledger row's id, status and finish (a run started or finished), read once per data version."""
        known = self._ledger
        if known is not None and known[0] == data_version:
            return known[1]
        newest = report_service.recent_runs(self.engine(), limit=1)
        epoch: Hashable = (newest[0].id, newest[0].status, newest[0].finished_at) if newest else ()
        self._ledger = (data_version, epoch)
        return epoch

    def models(self, data_version: str | None = None) -> tuple[report_service.ModelsInfo, int]:
        """Registry versions and their generation; looked up again when the ledger moved (see RegistryCache)."""
        epoch = self.ledger_epoch(data_version) if data_version is not None else None
        return self.registry.current(epoch)

    async def models_now(self) -> tuple[str, report_service.ModelsInfo, int] | None:
        """The data version and `models` at it when the event loop can tell (ledger epoch known), else None."""
        version = await self.version_now()
        known = self._ledger
        if version is None or known is None or known[0] != version:
            return None
        now = self.registry.current_now(known[1])
        return None if now is None else (version, *now)

    def readable_version(self) -> str | None:
        """The data version, or None when the database is empty or cannot be read."""
        try:
            return self.data_version()
        except ApiError:
            return None

    def respond(
        self, request: Request, key: Hashable, version: str, build: Callable[[], CachedBody]
    ) -> Response:
        """The body cached for `key` at `version` (built when missing), or 304 when the client holds it."""
        return answer(self.responses.get(key, version, build), request.headers.get("if-none-match"))

    def remember_url(self, request: Request, key: Hashable, *, registry: bool = False) -> None:
        """Let `cached_for_url` answer this URL from now on (it was validated and answered with 200)."""
        if len(self._urls) >= MAX_REMEMBERED_URLS:
            self._urls.clear()  # hostile or odd query strings: forget them all, the routes still answer
        self._urls[(request.scope["path"], request.scope["query_string"])] = (key, registry)

    async def cached_for_url(self, scope: Scope) -> CachedBody | None:
        """For the CachedFirst middleware: the bytes cached for this URL at the current version.

        Registry-keyed URLs too: measured, a `latest_for_table` hit took 71 us through routing and
        FastAPI, 18 us here (bench_web.py)."""
        found = self._urls.get((scope["path"], scope["query_string"]))
        return None if found is None else await self.cached_now(*found)

    async def version_now(self) -> str | None:
        """The data version read from the event loop (SQLite: at once; PostgreSQL: on an async connection);
        None sends the request to the thread pool (`data_version`), which opens, waits or answers 503."""
        if not self._ready or self._version is None:
            return None
        return await self._version.token_async()

    async def cached_now(self, key: Hashable, registry: bool = False) -> CachedBody | None:
        """The body cached for `key` at the current version (and registry generation), when the event
        loop can tell; None sends the request to the thread pool."""
        if registry:
            now = await self.models_now()
            return None if now is None else self.responses.lookup(key, f"{now[0]}|r{now[2]}")
        version = await self.version_now()
        return None if version is None else self.responses.lookup(key, version)

    async def serve(
        self,
        request: Request,
        key: Hashable,
        build: Callable[..., CachedBody],
        *,
        registry: bool = False,
        empty: Callable[[ApiError], Response] | None = None,
    ) -> Response:
        """The response for `key` at the current data version; a cache hit is answered in the event loop.

        `registry`: the body shows the registry too: keyed by its generation as well, `build(engine,
        models)` instead of `build(engine)`. `empty` answers for an empty database instead of 503."""
        cached = await self.cached_now(key, registry)
        if cached is not None:
            self.remember_url(request, key, registry=registry)
            return answer(cached, request.headers.get("if-none-match"))

        def read() -> Response:  # in the thread pool: it may open, wait for or query the database
            try:
                engine = self.engine()
                version = self.data_version()
            except ApiError as exc:
                if empty is None or exc.command is None:
                    raise
                return empty(exc)
            if registry:
                info, generation = self.models(version)
                response = self.respond(request, key, f"{version}|r{generation}", lambda: build(engine, info))
            else:
                response = self.respond(request, key, version, lambda: build(engine))
            self.remember_url(request, key, registry=registry)
            return response

        return await run_in_threadpool(read)

    def close(self) -> None:
        if self._version is not None:
            self._version.close()
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
    # Cached bytes of a URL the routes already answered go out before routing (see cache.py).
    app.add_middleware(CachedFirst, lookup=reader.cached_for_url)
    app.mount("/static", StaticFiles(directory=str(pages.STATIC_DIR)), name="static")

    _add_error_handlers(app, reader)
    _add_page(app, reader)
    _add_json_api(app, reader)
    _add_health_and_metrics(app, reader)
    return app


def _add_error_handlers(app: FastAPI, reader: Reader) -> None:
    """ApiError, database errors and stockcli errors as JSON, or as a page for the HTML route."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if request.url.path == "/":  # only the page answers in HTML; every other route is a JSON API
            return _error_page(reader, exc)
        extra = {"hint": exc.hint, "command": exc.command}
        body = {"detail": exc.detail, **{name: value for name, value in extra.items() if value}}
        return SafeJSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> Response:
        # Down, wrong URL, or a schema older than this version (serve never upgrades it).
        return await api_error(request, _unreadable(reader.settings, exc))

    @app.exception_handler(StockCliError)
    async def stockcli_error(request: Request, exc: StockCliError) -> Response:
        command = FILL_COMMAND if isinstance(exc, NoDataError) else None
        return await api_error(request, ApiError(503, exc.message, exc.hint, command=command))


def _add_page(app: FastAPI, reader: Reader) -> None:
    """`/`: the dashboard page, cached per data version and registry generation."""

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def dashboard(request: Request, ticker: str | None = None) -> Response:
        def build(engine: Engine, info: report_service.ModelsInfo) -> CachedBody:
            selected = parse_ticker(ticker) if ticker else None
            html = _dashboard_html(reader.settings, engine, selected=selected, models=info)
            return CachedBody.of(html.encode(), "text/html")

        empty = functools.partial(_empty_page, reader)
        return await reader.serve(request, ("page", ticker), build, registry=True, empty=empty)


def _add_json_api(app: FastAPI, reader: Reader) -> None:
    """The replaced system's JSON endpoints (latest predictions, tickers, chart), then performance and models."""
    settings = reader.settings

    # The JSON routes are `async def`: a cache hit never leaves the event loop (Reader.serve).
    @app.get("/predictions/latest_for_table", response_model=LatestTable)
    async def latest_for_table(request: Request) -> Response:
        """The newest prediction per ticker, as table rows: `{"status": "success", "data": [...]}`."""
        return await reader.serve(
            request,
            ("latest_for_table",),
            lambda engine, models: _json_body(latest_table_json(engine, models)),
            registry=True,
        )

    @app.get("/tickers")
    async def tickers(request: Request) -> Response:
        """Tickers with stored bars or predictions: `{"status": "success", "tickers": [...]}`."""

        def build(engine: Engine) -> CachedBody:
            return _json_body(
                {"status": "success", "tickers": report_service.known_tickers(settings, engine)}
            )

        return await reader.serve(request, ("tickers",), build)

    @app.get("/historical_context_chart/{ticker}")
    async def historical_context_chart(
        request: Request,
        ticker: str,
        sessions: Annotated[
            int, Query(ge=2, le=MAX_CHART_SESSIONS, description="Recent sessions to return.")
        ] = 60,
    ) -> Response:
        """Recent actual closes of one ticker plus its newest prediction and the naive forecast."""
        cleaned = parse_ticker(ticker)

        def build(engine: Engine) -> CachedBody:
            if not report_service.ticker_exists(engine, cleaned):
                raise _unknown_ticker(cleaned, report_service.known_tickers(settings, engine))
            return _json_body(chart_json(report_service.close_series(engine, cleaned, sessions=sessions)))

        return await reader.serve(request, ("chart", cleaned, sessions), build)

    @app.get("/performance")
    async def performance(
        request: Request,
        ticker: str | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_HISTORY_ROWS, description="Most history rows.")] = 250,
    ) -> Response:
        """Rolling live accuracy per ticker (the monitoring window) and the scored sessions behind it."""
        cleaned = parse_ticker(ticker) if ticker else None

        def build(engine: Engine) -> CachedBody:
            if cleaned is not None and not report_service.ticker_exists(engine, cleaned):
                raise _unknown_ticker(cleaned)
            return _json_body(
                {
                    "window_sessions": settings.monitor.window_sessions,
                    "summary": report_service.live_performance(settings, engine=engine, ticker=cleaned),
                    "history": report_service.scored_sessions(engine, limit=limit, ticker=cleaned),
                }
            )

        return await reader.serve(request, ("performance", cleaned, limit), build)

    @app.get("/models")
    async def models(request: Request) -> Response:
        """Registered model versions and the one holding the Production alias."""
        now = await reader.models_now()
        if now is None:
            info, generation = await run_in_threadpool(lambda: reader.models(reader.readable_version()))
        else:
            _, info, generation = now
        body = {"production_version": info.production_version, "versions": info.versions, "note": info.note}
        return reader.respond(request, ("models",), f"r{generation}", lambda: _json_body(body))


def _add_health_and_metrics(app: FastAPI, reader: Reader) -> None:
    """`/health` (GET and HEAD) for a supervisor and `/metrics` for Prometheus."""
    settings = reader.settings

    @app.get("/health")
    @app.head("/health", include_in_schema=False)  # the same answer without a body; one entry in the schema
    async def health() -> Response:
        """200 `ok` when the database answers; 200 `empty` for a fresh install; 503 `unavailable`.

        An empty database (no file, no tables, or no rows yet) is a fresh install, not a broken one:
        the server works and says which command fills it, and restarting it would change nothing,
        so a supervisor must not restart it (the data endpoints answer 503 with that command
        meanwhile). A database that cannot be read (down, wrong URL, schema behind, corrupted or made
        unreadable while the server runs) answers 503. Every call reads the database (`Reader.probe`),
        so `ok` means it answered just now. HEAD answers the same status without a body.
        """
        try:
            await run_in_threadpool(reader.probe)
        except ApiError as exc:
            status, code = ("empty", 200) if exc.command else ("unavailable", 503)
            body = {"status": status, "detail": exc.detail, "hint": exc.hint, "command": exc.command}
            return SafeJSONResponse(body, status_code=code)
        return SafeJSONResponse({"status": "ok", "database": reader.database_label})

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text format (`web/metrics.py`): last runs, predictions, live skill and coverage per
        ticker, what serves each ticker, the Production version. Cached per data version."""
        from stockcli.web.metrics import CONTENT_TYPE, metrics_text

        return await reader.serve(
            request,
            ("metrics",),
            lambda engine, info: CachedBody.of(metrics_text(settings, engine, info), CONTENT_TYPE),
            registry=True,
            empty=lambda _exc: Response(metrics_text(settings, None, None), media_type=CONTENT_TYPE),
        )


def latest_table_json(engine: Engine, models: report_service.ModelsInfo) -> dict[str, Any]:
    """`/predictions/latest_for_table`: the replaced system's four keys per row, then every
    `PredictionRow` field, then `change_pct` (`responses.LatestTable` documents each key)."""
    rows = [
        {
            "ticker": prediction.ticker,
            "predicted_price": prediction.predicted_close,
            "date": prediction.target_date,
            "model_mlflow_run_id": models.run_ids.get(prediction.model_version),
            **to_plain(prediction),
            "change_pct": None if prediction.change is None else prediction.change * 100.0,
        }
        for prediction in report_service.latest_predictions(engine)
    ]
    return {"status": "success", "data": rows}


def chart_json(series: report_service.CloseSeries) -> dict[str, Any]:
    """`/historical_context_chart/{ticker}`: the replaced system's keys (`historical_*` are `dates` and
    `actual` again), then ours; `predicted` is the newest prediction: `date`, `value` and its fields."""
    prediction, naive = series.prediction, series.naive
    dates, closes = list(series.dates), list(series.closes)
    predicted = None
    if prediction is not None:
        predicted = {
            "date": prediction.target_date,
            "value": prediction.predicted_close,
            **to_plain(prediction),
        }
    return {
        "status": "success",
        "ticker": series.ticker,
        "historical_dates": dates,
        "historical_actuals": closes,
        "prediction_reference_date": None if prediction is None else prediction.target_date,
        "predicted_price_for_ref_date": None if prediction is None else prediction.predicted_close,
        "dates": dates,
        "actual": closes,
        "predicted": predicted,
        "naive": None if naive is None else {"date": naive[0], "value": naive[1]},
    }


def _json_body(content: Any) -> CachedBody:
    return CachedBody.of(json_bytes(content), "application/json")


def _unknown_ticker(ticker: str, known: Sequence[str] | None = None) -> ApiError:
    return ApiError(
        404, f"Unknown ticker {ticker!r}.", None if known is None else f"Known tickers: {', '.join(known)}."
    )


def _dashboard_html(
    settings: Settings, engine: Engine, *, selected: str | None, models: report_service.ModelsInfo
) -> str:
    """The page for `selected` (None: the first ticker with a prediction); ApiError 404 for an unknown one."""
    tickers = report_service.known_tickers(settings, engine)
    if selected is not None and selected not in tickers:
        raise _unknown_ticker(selected, tickers)
    report = report_service.build_report(
        settings, engine=engine, models=models, runs_limit=8, promotions_limit=8
    )
    if selected is None:
        predicted = {p.ticker for p in report.predictions}
        selected = next((t for t in tickers if t in predicted), tickers[0] if tickers else None)
    series_by_ticker = {s.ticker: s for s in report.recent_closes}
    series = report_service.close_series(engine, selected, sessions=60) if selected else None
    if series is not None and series.ticker in series_by_ticker:
        # its horizons and VaR exceptions, read once with the report's risk table
        gathered = series_by_ticker[series.ticker]
        series = replace(series, fan=gathered.fan, exceptions=gathered.exceptions)
    production = next((m for m in report.models if m.version == report.production_version), None)
    return pages.render(
        "index.html",
        report=report,
        tickers=tickers,
        selected=selected,
        series=series,
        production=production,
        series_by_ticker=series_by_ticker,
    )


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
