"""Benchmark: `process` + `build` on synthetic bars for 500 tickers over 10 years (2,520 sessions).

    make bench
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_process_build.py
    .venv/bin/python tests/benchmarks/bench_process_build.py [--tickers 500] [--sessions 2520]
                                                             [--database-url URL] [--workdir DIR]

Set-up (not measured): a SQLite database (or the PostgreSQL at --database-url) filled with seeded
random-walk bars, written with one executemany. Measured, in a fresh child process so that its
peak resident memory (ru_maxrss) covers nothing but imports, `process` and `build`: wall time per
stage (from the services' progress callbacks) and the peak memory. Then, to say what dominates the
feature stage, each indicator is timed on 50 of the tickers. Goal (issue 3): under 60 s and 4 GiB
on 2 cores; the child is pinned to at most 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

START = date(2010, 1, 4)


def tickers_for(n: int) -> list[str]:
    return [f"S{i:03d}" for i in range(n)]


def sessions_for(n: int) -> list[date]:
    days: list[date] = []
    day = START
    while len(days) < n:
        if day.weekday() < 5:
            days.append(day)
        day += timedelta(days=1)
    return days


def settings_for(workdir: Path, database_url: str | None, n_tickers: int) -> Any:
    from stockcli.config import load_settings

    storage: dict[str, Any] = {"data_dir": str(workdir / "data")}
    if database_url:
        storage["database_url"] = database_url
    return load_settings(
        None,
        environ={},
        overrides={"storage": storage, "data": {"start": START, "tickers": tickers_for(n_tickers)}},
    )


def fill_database(workdir: Path, database_url: str | None, n_tickers: int, n_sessions: int) -> float:
    """Write seeded random-walk bars; returns the seconds it took (set-up, not part of the figures)."""
    import numpy as np
    from sqlalchemy import delete

    from stockcli.db.engine import open_database
    from stockcli.db.models import Dataset, RawStockData, ScaledFeatureSet, Scaler

    begin = time.perf_counter()
    engine = open_database(settings_for(workdir, database_url, n_tickers))
    days = sessions_for(n_sessions)
    rng = np.random.default_rng(20130301)
    fetched = datetime(2020, 1, 1, tzinfo=UTC)
    with engine.begin() as connection:
        for model in (ScaledFeatureSet, Scaler, Dataset, RawStockData):
            connection.execute(delete(model))
        for ticker in tickers_for(n_tickers):
            close = 20 + 180 * rng.random() * np.exp(np.cumsum(rng.normal(0.0002, 0.02, n_sessions)))
            open_ = close * np.exp(rng.normal(0, 0.005, n_sessions))
            high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, n_sessions))
            low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, n_sessions))
            volume = rng.integers(10_000, 10_000_000, n_sessions)
            rows = [
                {
                    "ticker": ticker,
                    "date": d,
                    "open": o,
                    "high": h,
                    "low": lo,
                    "close": c,
                    "volume": v,
                    "source": "csv",
                    "fetched_at": fetched,
                }
                for d, o, h, lo, c, v in zip(
                    days,
                    open_.tolist(),
                    high.tolist(),
                    low.tolist(),
                    close.tolist(),
                    volume.tolist(),
                    strict=True,
                )
            ]
            connection.execute(RawStockData.__table__.insert(), rows)
    engine.dispose()
    return time.perf_counter() - begin


def child(workdir: Path, database_url: str | None, n_tickers: int, n_sessions: int) -> dict[str, Any]:
    """Runs in a fresh process: process + build with stage timings and the peak RSS."""
    import resource

    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import ta  # noqa: F401

    from stockcli.db.engine import open_database
    from stockcli.services.build import build
    from stockcli.services.process import process

    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    settings = settings_for(workdir, database_url, n_tickers)
    engine = open_database(settings)
    events: list[tuple[float, str, int]] = []

    def progress(stage: str, done: int, total: int) -> None:
        events.append((time.perf_counter(), "features" if stage.startswith("features ") else stage, done))

    as_of = sessions_for(n_sessions)[-1]
    t0 = time.perf_counter()
    processed = process(settings=settings, engine=engine, as_of=as_of, progress=progress)
    t1 = time.perf_counter()
    built = build(settings=settings, engine=engine, run_id=processed.run_id, progress=progress)
    t2 = time.perf_counter()
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def first(stage: str, done: int | None = None) -> float:
        return next(t for t, s, d in events if s == stage and (done is None or d == done))

    stages = {
        "process: load bars (SQL + frames)": first("loading bars", 1) - t0,
        "process: indicators + alignment": first("hashing") - first("loading bars", 1),
        "process: content hash": first("saving dataset", 0) - first("hashing"),
        "process: save dataset": first("saving dataset", 1) - first("saving dataset", 0),
        "build: load dataset": first("loading dataset", 1) - t1,
        "build: split + scalers + windows": first("scaling and windowing", 1) - first("loading dataset", 1),
        "build: save built sets": first("saving built sets", 1) - first("saving built sets", 0),
    }
    return {
        "tickers": n_tickers,
        "sessions_of_bars": n_sessions,
        "cpus": cpus,
        "database": engine.dialect.name,
        "process_s": t1 - t0,
        "build_s": t2 - t1,
        "total_s": t2 - t0,
        "peak_rss_gib": peak_rss / 2**20,  # ru_maxrss is in KiB on Linux
        "rss_after_imports_gib": baseline_rss / 2**20,
        "stages_s": stages,
        "dataset_sessions": processed.sessions,
        "features": processed.n_features,
        "windows": {p.name: p.windows for p in built.parts},
        "dataset_mib": processed.sessions * n_tickers * processed.n_features * 8 / 2**20,
        "slab_mib": processed.sessions * n_tickers * built.n_features * 4 / 2**20,
        "windows_if_materialised_gib": sum(p.windows for p in built.parts)
        * 30
        * n_tickers
        * built.n_features
        * 4
        / 2**30,
    }


def indicator_profile(n_tickers: int = 50, n_sessions: int = 2520) -> dict[str, float]:
    """Milliseconds per ticker for each indicator (median of the tickers), on synthetic bars."""
    import numpy as np

    from stockcli.config import DEFAULT_INDICATORS
    from stockcli.features import indicators as ind

    rng = np.random.default_rng(1)
    timings: dict[str, list[float]] = {}
    for _ in range(n_tickers):
        close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, n_sessions)))
        open_ = close * np.exp(rng.normal(0, 0.005, n_sessions))
        high = np.maximum(open_, close) * 1.005
        low = np.minimum(open_, close) * 0.995
        volume = rng.integers(10_000, 10_000_000, n_sessions).astype(float)
        inputs = ind._Inputs(open_, high, low, close, volume)
        for item in ind.resolve_indicators(DEFAULT_INDICATORS):
            begin = time.perf_counter()
            item.definition.compute(inputs, item.params)
            timings.setdefault(f"{item.name} {item.columns[0]}", []).append(
                (time.perf_counter() - begin) * 1000
            )
    return {name: float(np.median(values)) for name, values in timings.items()}


def run(n_tickers: int, n_sessions: int, database_url: str | None, workdir: Path) -> dict[str, Any]:
    setup_s = fill_database(workdir, database_url, n_tickers, n_sessions)
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--tickers",
        str(n_tickers),
        "--sessions",
        str(n_sessions),
        "--workdir",
        str(workdir),
    ]
    if database_url:
        command += ["--database-url", database_url]
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["setup_s"] = setup_s
    figures["indicator_ms_per_ticker"] = indicator_profile()
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"process + build, {figures['tickers']} tickers x {figures['sessions_of_bars']} sessions of bars "
        f"({figures['database']}, {figures['cpus']} CPUs):",
        f"  total {figures['total_s']:.1f} s (process {figures['process_s']:.1f} s, build {figures['build_s']:.1f} s), "
        f"peak RSS {figures['peak_rss_gib']:.2f} GiB ({figures['rss_after_imports_gib']:.2f} GiB after imports); "
        f"goal < 60 s and < 4 GiB",
        f"  dataset {figures['dataset_sessions']} sessions x {figures['tickers']} tickers x {figures['features']} "
        f"features = {figures['dataset_mib']:.0f} MiB float64; built slabs {figures['slab_mib']:.0f} MiB float32 "
        f"(materialised windows would be {figures['windows_if_materialised_gib']:.1f} GiB); "
        f"windows {figures['windows']}",
        "  stages:",
    ]
    total = figures["total_s"]
    for name, seconds in sorted(figures["stages_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"    {name:38s} {seconds:6.1f} s  {100 * seconds / total:4.0f}%")
    lines.append(f"  set-up (writing the bars, not measured above): {figures['setup_s']:.1f} s")
    lines.append("  indicators, ms per ticker (median of 50 tickers x 2,520 bars):")
    profile = figures["indicator_ms_per_ticker"]
    for name, ms in sorted(profile.items(), key=lambda kv: -kv[1]):
        lines.append(f"    {name:32s} {ms:6.2f}")
    lines.append(f"    {'all':32s} {sum(profile.values()):6.2f}")
    return "\n".join(lines)


@pytest.mark.benchmark
def test_process_build_500_tickers_10_years(tmp_path: Path) -> None:
    figures = run(500, 2520, os.environ.get("STOCKCLI_BENCH_DATABASE_URL") or None, tmp_path)
    print("\n" + report(figures))
    assert sum(figures["windows"].values()) == figures["dataset_sessions"] - 30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--sessions", type=int, default=2520)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.workdir, args.database_url, args.tickers, args.sessions)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        figures = run(args.tickers, args.sessions, args.database_url, workdir)
    print(report(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
