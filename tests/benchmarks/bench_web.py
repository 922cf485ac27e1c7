"""Load on the dashboard's JSON endpoints: concurrent clients on loopback for a bounded time.

`stockcli serve` runs in its own process over a SQLite database filled with the real sample bars
for four tickers (2004-2013), 250 scored sessions each and the newest predictions. Client threads (httpx, one
connection each) request the JSON endpoints round-robin until the time is up; the figures are
requests per second, latency percentiles and the error count (which must be zero).

    .venv/bin/python tests/benchmarks/bench_web.py [--seconds 10] [--clients 8] [--database-url URL]
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_web.py

Only loopback is used, and every loop stops by itself at the deadline.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
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


def run_load(*, seconds: float, clients: int, workdir: Path, database_url: str | None = None) -> LoadResult:
    """Fill a database, start `stockcli serve`, hammer the JSON endpoints for `seconds`; returns the figures."""
    from stockcli.config import load_settings

    config = _config(workdir, database_url)
    settings = load_settings(config, environ={})
    report_data.fill(settings, tickers=TICKERS, sessions=2200, scored_sessions=250)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = workdir / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "stockcli", "--config", str(config), "serve", "--port", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                if server.poll() is not None:
                    raise RuntimeError(f"stockcli serve exited: {log_path.read_text()}")
                try:
                    if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"stockcli serve did not start: {log_path.read_text()}")
                time.sleep(0.1)
            for path in ENDPOINTS:  # warm up (the registry look-up, the first query plans)
                httpx.get(f"{base}{path}", timeout=30).raise_for_status()
            return _hammer(base, seconds=seconds, clients=clients)
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _hammer(base: str, *, seconds: float, clients: int) -> LoadResult:
    latencies: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
    errors: list[str] = []
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(offset: int) -> None:
        mine: dict[str, list[float]] = {path: [] for path in ENDPOINTS}
        my_errors: list[str] = []
        with httpx.Client(base_url=base, timeout=10) as session:
            start_gate.wait()
            index = offset
            while time.monotonic() < stop_at[0]:
                path = ENDPOINTS[index % len(ENDPOINTS)]
                index += 1
                began = time.perf_counter()
                try:
                    response = session.get(path)
                    response.json()
                    if response.status_code != 200:
                        my_errors.append(f"{path}: HTTP {response.status_code}")
                except Exception as exc:  # a benchmark counts every failure
                    my_errors.append(f"{path}: {type(exc).__name__}: {exc}")
                mine[path].append((time.perf_counter() - began) * 1000.0)
        with lock:
            for path, values in mine.items():
                latencies[path].extend(values)
            errors.extend(my_errors)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start_gate.wait()
    for thread in threads:
        thread.join(timeout=seconds + 30)
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
    )


def describe(result: LoadResult, label: str) -> str:
    lines = [
        f"web load ({label}): {result.clients} clients for {result.seconds:.1f} s on loopback: "
        f"{result.requests} requests, {result.requests_per_s:.0f} req/s, p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms, max {result.max_ms:.1f} ms, errors {result.errors}",
    ]
    for path, (count, p50, p99) in result.per_endpoint.items():
        lines.append(f"  {path:<48} {count:>6} requests  p50 {p50:6.1f} ms  p99 {p99:6.1f} ms")
    lines.extend(f"  error: {text}" for text in result.first_errors)
    return "\n".join(lines)


@pytest.mark.benchmark
def test_web_load(tmp_path: Path) -> None:
    result = run_load(seconds=10, clients=8, workdir=tmp_path)
    print("\n" + describe(result, "SQLite"))
    assert result.errors == 0, result.first_errors
    assert result.requests > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="How long the clients run (default 10).")
    parser.add_argument("--clients", type=int, default=8, help="Concurrent client threads (default 8).")
    parser.add_argument("--database-url", default=None, help="Default: a SQLite file in a temp folder.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stockcli-bench-web-") as folder:
        result = run_load(
            seconds=args.seconds, clients=args.clients, workdir=Path(folder), database_url=args.database_url
        )
    print(
        describe(
            result, "PostgreSQL" if args.database_url and "postgresql" in args.database_url else "SQLite"
        )
    )
    if result.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
