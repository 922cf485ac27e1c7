"""Load on the dashboard's JSON endpoints: concurrent keep-alive clients on loopback for a bounded time.

`stockcli serve` runs in its own process over a SQLite database filled with the real sample bars
for four tickers (2004-2013), 250 scored sessions each and the newest predictions. Two figures:

- `/predictions/latest_for_table` at 50 concurrent keep-alive connections, and in the same run a bare
  FastAPI app (its own process, started by `uvicorn.run` with the same settings as `stockcli serve`)
  whose one endpoint returns the same JSON bytes: both throughputs, p50/p99 latencies and the ratio
  (the goal is >= 0.8x the bare endpoint);
- every JSON endpoint round-robin at the same concurrency, with the error count (which must be zero);
- `/metrics` (Prometheus text) against `/health` of the same server, alternating rounds
  (`--metrics`; the goal is >= 0.8x `/health`'s throughput).

The load comes from `wrk` when it is on the PATH (Debian: `apt-get install wrk`), otherwise from a
small asyncio HTTP/1.1 client in this process (one keep-alive connection per client, no GIL shared
with either server). Both report requests per second and latency percentiles.

    .venv/bin/python tests/benchmarks/bench_web.py [--seconds 10] [--clients 50] [--database-url URL]
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_web.py

Only loopback is used, and every loop stops by itself at the deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tests import report_data  # noqa: E402

ENDPOINTS = (
    "/predictions/latest_for_table",
    "/tickers",
    "/historical_context_chart/GOOG",
    "/historical_context_chart/%5EGSPC?sessions=250",
    "/performance?ticker=MSFT&limit=100",
    "/performance",
    "/models",
    "/health",
)
TICKERS = ("GOOG", "MSFT", "^GSPC", "^IXIC")


TABLE_PATH = "/predictions/latest_for_table"
BARE_SERVER = """
import sys
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from fastapi.responses import Response

body = Path(sys.argv[2]).read_bytes()
app = FastAPI(docs_url=None, redoc_url=None)


@app.get("{path}")
async def latest_for_table() -> Response:
    return Response(body, media_type="application/json")


uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False)
"""


@dataclass(frozen=True)
class LoadResult:
    seconds: float
    clients: int
    requests: int
    errors: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    per_endpoint: dict[str, tuple[int, float, float]]  # count, p50 ms, p99 ms
    first_errors: tuple[str, ...]
    tool: str = "asyncio"
    latencies_ms: tuple[float, ...] = field(default=(), repr=False)  # every request's (asyncio only)


@dataclass(frozen=True)
class Comparison:
    """`/predictions/latest_for_table` of `stockcli serve` against a bare FastAPI app, same run."""

    ours: LoadResult
    bare: LoadResult
    body_bytes: int

    @property
    def ratio(self) -> float:
        return self.ours.requests_per_s / self.bare.requests_per_s if self.bare.requests_per_s else 0.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(workdir: Path, database_url: str | None) -> Path:
    lines = ["[storage]", f'data_dir = "{workdir / "data"}"']
    if database_url:
        lines.append(f'database_url = "{database_url}"')
    lines += ["[data]", "tickers = [" + ", ".join(f'"{t}"' for t in TICKERS) + "]"]
    path = workdir / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _fill(workdir: Path, database_url: str | None) -> Path:
    from stockcli.config import load_settings

    workdir.mkdir(parents=True, exist_ok=True)
    config = _config(workdir, database_url)
    settings = load_settings(config, environ={})
    report_data.fill(settings, tickers=TICKERS, sessions=2200, scored_sessions=250).engine.dispose()
    return config


@contextlib.contextmanager
def _server(command: Sequence[str], *, port: int, ready_path: str, log_path: Path) -> Iterator[str]:
    """Start a server process, wait until `ready_path` answers 200, yield its base URL, stop it."""
    base = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        server = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, cwd=log_path.parent)
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"the server exited: {log_path.read_text()}")
                try:
                    if httpx.get(f"{base}{ready_path}", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the server did not start: {log_path.read_text()}")
                time.sleep(0.1)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _stockcli_serve(config: Path, workdir: Path) -> contextlib.AbstractContextManager[str]:
    port = _free_port()
    command = [sys.executable, "-m", "stockcli", "--config", str(config), "serve", "--port", str(port)]
    return _server(command, port=port, ready_path="/health", log_path=workdir / "serve.log")


def run_load(*, seconds: float, clients: int, workdir: Path, database_url: str | None = None) -> LoadResult:
    """Fill a database, start `stockcli serve`, hammer every JSON endpoint for `seconds`; the figures."""
    config = _fill(workdir, database_url)
    with _stockcli_serve(config, workdir) as base:
        for path in ENDPOINTS:  # warm up (the registry look-up, the first query plans)
            httpx.get(f"{base}{path}", timeout=30).raise_for_status()
        return drive(base, ENDPOINTS, seconds=seconds, clients=clients, tool="asyncio")


def compare_with_bare(
    *,
    seconds: float,
    clients: int,
    workdir: Path,
    database_url: str | None = None,
    tool: str | None = None,
    rounds: int = 10,
) -> Comparison:
    """`/predictions/latest_for_table` against a bare FastAPI app serving its bytes, both up at once.

    The `seconds` of load per server are cut into `rounds` that alternate between the two, so a
    neighbour's burst of CPU on this machine weighs on both figures alike.
    """
    config = _fill(workdir, database_url)
    with contextlib.ExitStack() as stack:
        ours_base = stack.enter_context(_stockcli_serve(config, workdir))
        body = httpx.get(f"{ours_base}{TABLE_PATH}", timeout=30).raise_for_status().content
        httpx.get(f"{ours_base}/models", timeout=120).raise_for_status()  # the registry look-up is done
        body_path = workdir / "table.json"
        body_path.write_bytes(body)
        script = workdir / "bare_server.py"
        script.write_text(BARE_SERVER.replace("{path}", TABLE_PATH), encoding="utf-8")
        port = _free_port()
        bare_command = [sys.executable, str(script), str(port), str(body_path)]
        bare_base = stack.enter_context(
            _server(bare_command, port=port, ready_path=TABLE_PATH, log_path=workdir / "bare.log")
        )
        if httpx.get(f"{bare_base}{TABLE_PATH}", timeout=30).content != body:
            raise RuntimeError("the bare app does not serve the same bytes")
        results: dict[str, list[LoadResult]] = {ours_base: [], bare_base: []}
        for base in results:
            drive(base, (TABLE_PATH,), seconds=1.0, clients=clients, tool="asyncio")  # warm up
        for _ in range(rounds):
            for base, done in results.items():
                done.append(drive(base, (TABLE_PATH,), seconds=seconds / rounds, clients=clients, tool=tool))
    return Comparison(ours=merge(results[ours_base]), bare=merge(results[bare_base]), body_bytes=len(body))


def metrics_against_health(
    *,
    seconds: float,
    clients: int,
    workdir: Path,
    database_url: str | None = None,
    tool: str | None = None,
    rounds: int = 10,
) -> tuple[LoadResult, LoadResult]:
    """`/metrics` (Prometheus text) against `/health` of the same `stockcli serve`, alternating rounds."""
    config = _fill(workdir, database_url)
    with _stockcli_serve(config, workdir) as base:
        httpx.get(f"{base}/models", timeout=120).raise_for_status()  # the registry look-up is done
        text = httpx.get(f"{base}/metrics", timeout=30).raise_for_status().text
        if "stockcli_live_skill" not in text:
            raise RuntimeError(f"/metrics lacks the live figures: {text[:500]}")
        results: dict[str, list[LoadResult]] = {"/metrics": [], "/health": []}
        for path in results:
            drive(base, (path,), seconds=1.0, clients=clients, tool="asyncio")  # warm up
        for _ in range(rounds):
            for path, done in results.items():
                done.append(drive(base, (path,), seconds=seconds / rounds, clients=clients, tool=tool))
    return merge(results["/metrics"]), merge(results["/health"])


def describe_metrics(metrics: LoadResult, health: LoadResult, label: str) -> str:
    ratio = metrics.requests_per_s / health.requests_per_s if health.requests_per_s else 0.0
    return "\n".join(
        [
            describe(metrics, f"{label}, stockcli serve /metrics"),
            describe(health, f"{label}, stockcli serve /health"),
            f"ratio /metrics / /health: {ratio:.2f}x (goal >= 0.8x)",
        ]
    )


def merge(rounds: Sequence[LoadResult]) -> LoadResult:
    """Rounds of one path as one result: summed requests and time, exact percentiles (weighed for wrk)."""
    seconds = sum(r.seconds for r in rounds)
    requests = sum(r.requests for r in rounds)
    every = [value for r in rounds for value in r.latencies_ms]
    if every:
        p50, p99 = percentile(every, 0.50), percentile(every, 0.99)
    else:  # wrk gives percentiles only: weigh each round's by its requests
        p50 = sum(r.p50_ms * r.requests for r in rounds) / max(requests, 1)
        p99 = sum(r.p99_ms * r.requests for r in rounds) / max(requests, 1)
    (path,) = rounds[0].per_endpoint  # rounds of one path
    return LoadResult(
        seconds=seconds,
        clients=rounds[0].clients,
        requests=requests,
        errors=sum(r.errors for r in rounds),
        requests_per_s=requests / seconds if seconds else 0.0,
        p50_ms=p50,
        p99_ms=p99,
        max_ms=max(r.max_ms for r in rounds),
        per_endpoint={path: (requests, p50, p99)},
        first_errors=tuple(error for r in rounds for error in r.first_errors)[:5],
        tool=rounds[0].tool,
        latencies_ms=tuple(every),
    )


def drive(
    base: str, paths: Sequence[str], *, seconds: float, clients: int, tool: str | None = None
) -> LoadResult:
    """`clients` keep-alive connections requesting `paths` round-robin for `seconds`.

    `tool`: "wrk" (one path only), "asyncio", or None for wrk when it is installed.
    """
    if tool is None:
        tool = "wrk" if shutil.which("wrk") and len(paths) == 1 else "asyncio"
    if tool == "wrk":
        return _drive_wrk(base, paths[0], seconds=seconds, clients=clients)
    return asyncio.run(_drive_asyncio(base, paths, seconds=seconds, clients=clients))


def _drive_wrk(base: str, path: str, *, seconds: float, clients: int) -> LoadResult:
    command = ["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency", f"{base}{path}"]
    output = subprocess.run(command, capture_output=True, text=True, check=True, timeout=seconds + 60).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, output)
        if found is None:
            raise RuntimeError(f"unexpected wrk output: {output}")
        return float(found.group(1))

    def millis(label: str) -> float:
        found = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        if found is None:
            raise RuntimeError(f"unexpected wrk output: {output}")
        return float(found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]

    requests = int(number(r"(\d+) requests in"))
    elapsed_text = re.search(r"requests in ([\d.]+)(ms|s|m),", output)
    elapsed = seconds
    if elapsed_text is not None:
        elapsed = float(elapsed_text.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0}[elapsed_text.group(2)]
    errors = 0
    for pattern in (
        r"Non-2xx or 3xx responses: (\d+)",
        r"connect (\d+), read (\d+), write (\d+), timeout (\d+)",
    ):
        found = re.search(pattern, output)
        if found is not None:
            errors += sum(int(group) for group in found.groups())
    p50, p99 = millis("50"), millis("99")
    max_found = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output)
    max_ms = float("nan")
    if max_found is not None:
        max_ms = float(max_found.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[max_found.group(2)]
    return LoadResult(
        seconds=elapsed,
        clients=clients,
        requests=requests,
        errors=errors,
        requests_per_s=number(r"Requests/sec:\s+([\d.]+)"),
        p50_ms=p50,
        p99_ms=p99,
        max_ms=max_ms,
        per_endpoint={path: (requests, p50, p99)},
        first_errors=(),
        tool="wrk",
    )


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: its status and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length is not None:
        return status, await reader.readexactly(int(length.group(1)))
    if re.search(rb"(?im)^transfer-encoding:\s*chunked", head) is None:
        return status, b""  # 304 and friends: no body
    chunks: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        chunk = await reader.readexactly(size + 2)
        if size == 0:
            return status, b"".join(chunks)
        chunks.append(chunk[:-2])


async def _drive_asyncio(base: str, paths: Sequence[str], *, seconds: float, clients: int) -> LoadResult:
    host, port = base.removeprefix("http://").split(":")
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    requests = {
        path: f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json\r\n\r\n".encode()
        for path in paths
    }
    start = asyncio.Event()
    stop_at = [0.0]

    async def client(offset: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        await start.wait()
        index = offset
        try:
            while loop.time() < stop_at[0]:
                path = paths[index % len(paths)]
                index += 1
                began = time.perf_counter()
                try:
                    writer.write(requests[path])
                    status, _body = await _read_response(reader)
                    if status != 200:
                        errors.append(f"{path}: HTTP {status}")
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors.append(f"{path}: {type(exc).__name__}: {exc}")
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                latencies[path].append((time.perf_counter() - began) * 1000.0)
        finally:
            writer.close()

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(0.2)  # every connection open before the clock starts
    began = time.monotonic()
    stop_at[0] = loop.time() + seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.monotonic() - began
    every = [value for values in latencies.values() for value in values]
    return LoadResult(
        seconds=elapsed,
        clients=clients,
        requests=len(every),
        errors=len(errors),
        requests_per_s=len(every) / elapsed,
        p50_ms=percentile(every, 0.50),
        p99_ms=percentile(every, 0.99),
        max_ms=max(every, default=float("nan")),
        per_endpoint={
            path: (len(values), percentile(values, 0.50), percentile(values, 0.99))
            for path, values in latencies.items()
        },
        first_errors=tuple(errors[:5]),
        latencies_ms=tuple(every),
    )


def describe(result: LoadResult, label: str) -> str:
    lines = [
        f"web load ({label}, {result.tool}): {result.clients} keep-alive clients for {result.seconds:.1f} s "
        f"on loopback: {result.requests} requests, {result.requests_per_s:.0f} req/s, "
        f"p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms, "
        f"errors {result.errors}",
    ]
    if len(result.per_endpoint) > 1:
        for path, (count, p50, p99) in result.per_endpoint.items():
            lines.append(f"  {path:<48} {count:>6} requests  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    lines.extend(f"  error: {text}" for text in result.first_errors)
    return "\n".join(lines)


def describe_comparison(comparison: Comparison, label: str) -> str:
    return "\n".join(
        [
            describe(comparison.ours, f"{label}, stockcli serve {TABLE_PATH}"),
            describe(comparison.bare, f"bare FastAPI, the same {comparison.body_bytes} bytes"),
            f"ratio stockcli / bare FastAPI: {comparison.ratio:.2f}x (goal >= 0.8x)",
        ]
    )


@pytest.mark.benchmark
def test_latest_for_table_against_a_bare_fastapi_endpoint(tmp_path: Path) -> None:
    comparison = compare_with_bare(seconds=10, clients=50, workdir=tmp_path)
    print("\n" + describe_comparison(comparison, "SQLite"))
    assert comparison.ours.errors == 0 and comparison.bare.errors == 0, comparison.ours.first_errors
    assert comparison.ours.requests > 0 and comparison.bare.requests > 0


@pytest.mark.benchmark
def test_web_load(tmp_path: Path) -> None:
    result = run_load(seconds=10, clients=50, workdir=tmp_path)
    print("\n" + describe(result, "SQLite, every JSON endpoint"))
    assert result.errors == 0, result.first_errors
    assert result.requests > 0


@pytest.mark.benchmark
def test_metrics_against_health(tmp_path: Path) -> None:
    metrics, health = metrics_against_health(seconds=10, clients=50, workdir=tmp_path)
    print("\n" + describe_metrics(metrics, health, "SQLite"))
    assert metrics.errors == 0 and health.errors == 0, metrics.first_errors
    assert metrics.requests > 0 and health.requests > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="How long the clients run (default 10).")
    parser.add_argument("--clients", type=int, default=50, help="Concurrent connections (default 50).")
    parser.add_argument("--database-url", default=None, help="Default: a SQLite file in a temp folder.")
    parser.add_argument(
        "--tool", choices=("wrk", "asyncio"), default=None, help="Load generator (default: wrk if installed)."
    )
    parser.add_argument("--metrics", action="store_true", help="Only /metrics against /health.")
    args = parser.parse_args()
    label = "PostgreSQL" if args.database_url and "postgresql" in args.database_url else "SQLite"
    if args.metrics:
        with tempfile.TemporaryDirectory(prefix="stockcli-bench-web-") as folder:
            metrics, health = metrics_against_health(
                seconds=args.seconds,
                clients=args.clients,
                workdir=Path(folder),
                database_url=args.database_url,
                tool=args.tool,
            )
        print(describe_metrics(metrics, health, label))
        sys.exit(1 if metrics.errors or health.errors else 0)
    with tempfile.TemporaryDirectory(prefix="stockcli-bench-web-") as folder:
        comparison = compare_with_bare(
            seconds=args.seconds,
            clients=args.clients,
            workdir=Path(folder) / "table",
            database_url=args.database_url,
            tool=args.tool,
        )
        print(describe_comparison(comparison, label))
        result = run_load(
            seconds=args.seconds,
            clients=args.clients,
            workdir=Path(folder) / "all",
            database_url=args.database_url,
        )
        print(describe(result, f"{label}, every JSON endpoint"))
    if result.errors or comparison.ours.errors or comparison.bare.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
