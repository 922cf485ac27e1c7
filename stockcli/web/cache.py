"""What keeps the dashboard fast: responses cached per data version, with ETag and 304.

Every response is a pure function of the committed data (and, for some, of the registry), so each
request asks one cheap question, "has anything been committed since?", and answers with the bytes
built for that data version. The version cannot miss a write, whoever made it:

- SQLite: `PRAGMA data_version` on a never-writing connection of our own (changed by every other
  connection's commit), plus the file's identity and how often we reopened it, so a replaced file or
  a reopened connection never repeats an older token.
- PostgreSQL: `pg_current_snapshot()`, which any ending transaction changes (cluster-wide: other
  databases' writes cause more rebuilds, never stale bytes).

The token is read before the data, so cached bytes hold at least every commit the token had seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from stockcli.services import report as report_service

NO_CACHE = "no-cache"  # a client may keep the bytes but must revalidate them (If-None-Match) every time
SNAPSHOT_RETRY_S = 5.0  # after a failed snapshot query, requests take the worker-thread path this long


@dataclass(frozen=True)
class CachedBody:
    """One response's bytes, media type and entity tag."""

    body: bytes
    media_type: str
    etag: str

    @classmethod
    def of(cls, body: bytes, media_type: str) -> CachedBody:
        return cls(body, media_type, '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"')

    def matches(self, if_none_match: str | None) -> bool:
        """Whether an `If-None-Match` header names these bytes (weak comparison, as RFC 9110 asks)."""
        tags = (tag.strip() for tag in (if_none_match or "").split(","))
        return any(tag == "*" or tag.removeprefix("W/") == self.etag for tag in tags)


class CachedFirst:
    """ASGI middleware: a GET whose bytes `lookup(scope)` finds cached is answered before routing.

    It only knows URLs a route answered with 200 before, so a hit skips nothing but work already done.
    """

    def __init__(self, app: ASGIApp, lookup: Callable[[Scope], Awaitable[CachedBody | None]]) -> None:
        self.app = app
        self.lookup = lookup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            body = await self.lookup(scope)
            if body is not None:
                response = answer(body, Headers(scope=scope).get("if-none-match"))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def answer(body: CachedBody, if_none_match: str | None) -> Response:
    """The cached bytes with their ETag, or `304 Not Modified` when the client's If-None-Match names them."""
    headers = {"ETag": body.etag, "Cache-Control": NO_CACHE}
    if body.matches(if_none_match):
        return Response(status_code=304, headers=headers)
    return Response(body.body, media_type=body.media_type, headers=headers)


class ResponseCache:
    """Bodies by key, each valid for one version; bounded in bytes, least recently used out first.
    Builds of one key run one at a time (a burst of requests after a run builds the body once)."""

    def __init__(self, *, max_bytes: int = 32 * 1024 * 1024, stripes: int = 16) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[str, CachedBody]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._build_locks = [threading.Lock() for _ in range(stripes)]
        self.builds = 0  # how many bodies were built (tests and benchmarks read it)

    def lookup(self, key: Hashable, version: str) -> CachedBody | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None or found[0] != version:
                return None
            self._entries.move_to_end(key)
            return found[1]

    def get(self, key: Hashable, version: str, build: Callable[[], CachedBody]) -> CachedBody:
        """The body cached for `key` at `version`, built (once) when there is none."""
        cached = self.lookup(key, version)
        if cached is not None:
            return cached
        with self._build_locks[hash(key) % len(self._build_locks)]:
            # Built meanwhile by the request we waited for? A failed build (404, database down) stores nothing.
            return self.lookup(key, version) or self._store(key, version, build())

    def _store(self, key: Hashable, version: str, body: CachedBody) -> CachedBody:
        with self._lock:
            self.builds += 1
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= len(previous[1].body)
            if len(body.body) > self.max_bytes:
                return body
            self._entries[key] = (version, body)
            self._bytes += len(body.body)
            while self._bytes > self.max_bytes:
                _, (_, evicted) = self._entries.popitem(last=False)
                self._bytes -= len(evicted.body)
        return body


class DataVersion:
    """A token that changes whenever any transaction commits to the database (see the module notes)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._file = engine.url.database if self._dialect == "sqlite" else None
        self._lock = threading.Lock()
        self._connection: Any = None  # a DBAPI connection detached from the engine's pool
        self._opened = 0
        self._identity: tuple[int, int] | None = None
        self._snapshots = _AsyncSnapshots(engine) if self._dialect == "postgresql" else None

    def token(self) -> str:
        """The current token. Raises the driver's error (or SQLAlchemy's) when the database cannot be read."""
        if self._dialect not in ("sqlite", "postgresql"):  # cannot ask: nothing is ever served twice
            return uuid.uuid4().hex
        with self._lock:
            identity = self._file_identity()
            if identity != self._identity:
                if self._identity is not None:  # the file was replaced (a restore): read the new one
                    self._close()
                    self._engine.dispose()
                self._identity = identity
            try:
                value = self._ask()
            except Exception:  # a connection dropped since the last request: one retry on a new one
                self._close()
                value = self._ask()
            return self._format(identity, value)

    def token_now(self) -> str | None:
        """The token when it can be read at once (SQLite, from shared memory), else None (call `token`)."""
        if self._dialect != "sqlite" or self._connection is None or not self._lock.acquire(blocking=False):
            return None
        try:
            identity = self._file_identity()
            if identity != self._identity:
                return None
            value = self._ask()
        except Exception:  # `token` reconnects or reports it
            return None
        finally:
            self._lock.release()
        return self._format(identity, value)

    async def token_async(self) -> str | None:
        """PostgreSQL: the token read on an asyncio connection, one query for every waiting request;
        None where that fails (then call `token` in a thread). SQLite: `token_now`."""
        if self._snapshots is None:
            return self.token_now()
        try:
            return await self._snapshots.read()
        except Exception:  # down or refused: `token` says so in a worker thread
            return None

    def _format(self, identity: tuple[int, int] | None, value: str) -> str:
        if self._dialect != "sqlite":
            return value  # a snapshot means the same on any connection (`token_async` reads it too)
        # SQLite's counter belongs to one connection: which one, and which file, are part of the token.
        where = f"{identity[0]}.{identity[1]}" if identity else "-"
        return f"{self._opened}:{where}:{value}"

    def _file_identity(self) -> tuple[int, int] | None:
        if not self._file or self._file == ":memory:":
            return None
        status = os.stat(self._file)
        return status.st_dev, status.st_ino

    def _ask(self) -> str:
        if self._connection is None:
            connection = self._engine.raw_connection()
            connection.detach()  # ours alone: the pool never hands it to a query
            if self._dialect == "postgresql":
                connection.dbapi_connection.autocommit = True  # type: ignore[union-attr]
            self._connection = connection
            self._opened += 1
        if self._dialect == "sqlite":
            # sqlite3's own shortcut: no SQLAlchemy wrapper on the hot path (a few microseconds).
            return str(self._connection.dbapi_connection.execute("PRAGMA data_version").fetchone()[0])
        with contextlib.closing(self._connection.cursor()) as cursor:
            cursor.execute(_snapshot_query((self._engine.dialect.server_version_info or (0,)) >= (13,)))
            return str(cursor.fetchone()[0])

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing to release
                connection.close()

    def close(self) -> None:
        with self._lock:
            self._close()
        if self._snapshots is not None:
            self._snapshots.close()


def _snapshot_query(modern: bool) -> str:
    return f"SELECT {'pg_current_snapshot' if modern else 'txid_current_snapshot'}()::text"


class _AsyncSnapshots:
    """PostgreSQL's current snapshot read from the event loop, one query per batch of waiting requests.

    A request joins the next query to be sent, never one already sent, so it sees every commit made
    before it arrived. A new event loop starts over with a new connection.
    """

    def __init__(self, engine: Engine) -> None:
        _, params = engine.dialect.create_connect_args(engine.url)
        params.pop("context", None)  # the sync dialect's adapters: we read one text value
        self._params = {**params, "autocommit": True, "connect_timeout": 10}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connection: Any = None
        self._waiting: list[asyncio.Future[str]] = []
        self._pump: asyncio.Task[None] | None = None
        self._failed_at = -SNAPSHOT_RETRY_S

    async def read(self) -> str:
        if time.monotonic() - self._failed_at < SNAPSHOT_RETRY_S:  # down: no second wait per request
            raise ConnectionError("PostgreSQL did not answer the last snapshot query")
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self.close()
            self._loop, self._waiting, self._pump = loop, [], None
        future: asyncio.Future[str] = loop.create_future()
        self._waiting.append(future)
        if self._pump is None:
            self._pump = loop.create_task(self._run())
        return await future

    async def _run(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                try:
                    value = await self._query()
                except Exception as exc:
                    self.close_connection()
                    self._failed_at = time.monotonic()
                    for future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future in batch:
                    if not future.done():
                        future.set_result(value)
        finally:
            if self._pump is asyncio.current_task():
                self._pump = None

    async def _query(self) -> str:
        import psycopg

        if self._connection is None or self._connection.closed:
            self._connection = await psycopg.AsyncConnection.connect(**self._params)
        cursor = await self._connection.execute(
            _snapshot_query(self._connection.info.server_version >= 130000)
        )
        row = await cursor.fetchone()
        return str(row[0])

    def close_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # closed from outside its loop: libpq's own close
                connection.pgconn.finish()

    def close(self) -> None:
        self.close_connection()
        waiting, self._waiting = self._waiting, []
        for future in waiting:
            with contextlib.suppress(RuntimeError):  # its event loop may be closed already
                future.cancel()


class RegistryCache:
    """The registry's versions, looked up again when a run started or finished, or after `ttl_s`.

    Runs change the registry and then finish a ledger row, so a new ledger epoch starts a look-up that
    requests wait for (at most `wait_s`); the TTL catches changes made elsewhere (the MLflow UI), in the
    background. `generation` goes up whenever the versions change, and keys the responses built on them.
    """

    def __init__(
        self, lookup: Callable[[], report_service.ModelsInfo], *, ttl_s: float = 60.0, wait_s: float = 10.0
    ) -> None:
        self._lookup = lookup
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self._lock = threading.Lock()
        self._info: report_service.ModelsInfo | None = None
        self._generation = 0
        self._checked_at = 0.0
        self._epoch: Hashable | None = None
        self._refresh: threading.Event | None = None  # set when the newest look-up in flight is done
        self._started = 0
        self._applied = 0

    def current(self, epoch: Hashable | None = None) -> tuple[report_service.ModelsInfo, int]:
        """The versions and their generation. `epoch`: the ledger's (None: unknown, only the TTL counts).
        The very first look-up is waited for in full (it imports MLflow: seconds)."""
        with self._lock:
            first = self._info is None
            new_epoch = epoch is not None and epoch != self._epoch
            if new_epoch:
                self._epoch = epoch
            refresh = self._refresh
            if new_epoch or (refresh is None and (first or self._expired())):
                # A new epoch always starts a fresh look-up: one in flight may predate the run.
                refresh = self._start_refresh()
        if refresh is not None and (first or new_epoch):
            refresh.wait(None if first else self.wait_s)
        with self._lock:
            assert self._info is not None
            return self._info, self._generation

    def current_now(self, epoch: Hashable | None = None) -> tuple[report_service.ModelsInfo, int] | None:
        """`current` when it needs no waiting (not the first look-up, no new epoch), else None."""
        with self._lock:
            if self._info is None or (epoch is not None and epoch != self._epoch):
                return None
            if self._refresh is None and self._expired():
                self._start_refresh()  # in the background: this answer uses the versions at hand
            return self._info, self._generation

    def _expired(self) -> bool:
        return time.monotonic() - self._checked_at > self.ttl_s

    def _start_refresh(self) -> threading.Event:
        self._refresh = done = threading.Event()
        self._started += 1
        self._checked_at = time.monotonic()
        threading.Thread(
            target=self._run_refresh, args=(done, self._started), name="stockcli-registry", daemon=True
        ).start()
        return done

    def _run_refresh(self, done: threading.Event, number: int) -> None:
        try:
            info = self._lookup()
        except Exception as exc:  # model_versions never raises; a broken look-up must not wedge the page
            info = report_service.ModelsInfo((), None, f"Model versions are not available: {exc}")
        with self._lock:
            if number > self._applied:  # a slower, older look-up never overwrites a newer one
                self._applied = number
                if info != self._info:
                    self._info = info
                    self._generation += 1
                self._checked_at = time.monotonic()
            if self._refresh is done:
                self._refresh = None
        done.set()
