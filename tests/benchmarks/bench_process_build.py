"""Benchmark: `process` + `build` of the global-model dataset for 500 synthetic tickers over 10 years.

    make bench
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_process_build.py
    .venv/bin/python tests/benchmarks/bench_process_build.py [--tickers 500] [--load store|fetch]
                                                             [--database-url URL] [--workdir DIR]

Data (`synthetic.py`): `^MKT` (an index, the context series) and 499 stocks over the 2,516 XNYS
sessions of 2010..2019, each listed on a uniform date of those ten years, ~5% with multi-session
gaps, ~5% delisted before the end: ~585k bars, each ticker's windows from its own history.

Set-up (not part of the figures): the bars go into a SQLite database (or the PostgreSQL at
--database-url) with the store's own upsert (`--load store`, the default) or through the real
`fetch` service from a folder of CSV files (`--load fetch`, whose time is then printed: that is
the `csv` source's cost for 500 tickers). Measured, in a fresh child process so that its peak
resident memory (ru_maxrss) covers nothing but imports, `process` and `build`: the wall time of
each stage (from the services' progress callbacks) and the peak memory after each service. Then,
to say what dominates the feature stage, each indicator is timed on 50 tickers. Goal (issue 10,
item 8): process + build within 60 s and 4 GiB on the 2-core machine; the child is pinned to at
most 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.synthetic import START, machine_load, make_market, run_measured  # noqa: E402


def settings_for(workdir: Path, database_url: str | None, tickers: Sequence[str]) -> Any:
    from stockcli.config import load_settings

    storage: dict[str, Any] = {"data_dir": str(workdir / "data")}
    if database_url:
        storage["database_url"] = database_url
    data = {"start": START, "tickers": list(tickers), "source": "csv", "csv_dir": str(workdir / "bars")}
    return load_settings(None, environ={}, overrides={"storage": storage, "data": data})


def fill_database(workdir: Path, database_url: str | None, n_tickers: int, load: str) -> dict[str, Any]:
    """Write the synthetic bars (set-up, not part of the figures); returns what was written and how long."""
    from sqlalchemy import delete

    from stockcli.db.engine import open_database
    from stockcli.db.models import Dataset, RawStockData, ScaledFeatureSet, Scaler
    from tests.benchmarks.synthetic import store_bars, write_csv_folder

    begin = time.perf_counter()
    market = make_market(n_tickers)
    generated_s = time.perf_counter() - begin
    settings = settings_for(workdir, database_url, market.tickers)
    engine = open_database(settings)
    with engine.begin() as connection:  # a reused PostgreSQL database starts empty
        for model in (ScaledFeatureSet, Scaler, Dataset, RawStockData):
            connection.execute(delete(model))
    begin = time.perf_counter()
    if load == "fetch":
        from stockcli.services.fetch import fetch

        write_csv_folder(market, workdir / "bars")
        fetched = fetch(settings=settings, engine=engine, as_of=market.sessions[-1])
        bars = sum(t.added for t in fetched.tickers)
        assert fetched.status == "ok", [t for t in fetched.tickers if not t.succeeded][:3]
    else:
        bars = store_bars(engine, market)
    load_s = time.perf_counter() - begin
    engine.dispose()
    return {
        "market": market.describe(),
        "tickers": list(market.tickers),
        "as_of": market.sessions[-1].isoformat(),
        "bars": bars,
        "generate_s": generated_s,
        "load": load,
        "load_s": load_s,
    }


def child(workdir: Path, database_url: str | None, tickers: list[str], as_of: str) -> dict[str, Any]:
    """Runs in a fresh process: process + build with stage timings and the peak RSS."""
    import resource
    from datetime import date

    if hasattr(os, "sched_getaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()

    import numpy  # noqa: F401
    import pandas  # noqa: F401
    import ta  # noqa: F401

    from stockcli.db.engine import open_database
    from stockcli.services.build import build
    from stockcli.services.process import process

    def rss_gib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    baseline_rss = rss_gib()
    settings = settings_for(workdir, database_url, tickers)
    engine = open_database(settings)
    # Each event: (wall clock, CPU time of this process), stage, done, total. CPU seconds say what a
    # stage costs whatever else the machine runs; wall seconds are what a user waits.
    events: list[tuple[tuple[float, float], str, int, int]] = []

    def now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def progress(stage: str, done: int, total: int) -> None:
        events.append((now(), "features" if stage.startswith("features ") else stage, done, total))

    t0 = now()
    processed = process(settings=settings, engine=engine, as_of=date.fromisoformat(as_of), progress=progress)
    t1 = now()
    rss_process = rss_gib()
    built = build(settings=settings, engine=engine, run_id=processed.run_id, progress=progress)
    t2 = now()
    peak_rss = rss_gib()

    def at(stage: str, done: int | None = None, last: bool = False) -> tuple[float, float]:
        found = [t for t, s, d, _ in events if s == stage and (done is None or d == done)]
        return found[-1] if last else found[0]

    features_end = at("features", last=True)
    bounds = {
        "process: load bars (SQL + frames)": (t0, at("loading bars", 1)),
        "process: features (indicators + panel)": (at("loading bars", 1), features_end),
        "process: windows, split check, per-ticker": (features_end, at("hashing")),
        "process: content hash": (at("hashing"), at("saving dataset", 0)),
        "process: save dataset": (at("saving dataset", 0), at("saving dataset", 1)),
        "build: load dataset": (t1, at("loading dataset", 1)),
        "build: split + scalers + windows": (at("scaling and windowing", 0), at("scaling and windowing", 1)),
        "build: save built sets": (at("saving built sets", 0), at("saving built sets", 1)),
    }
    stages = {name: end[0] - begin[0] for name, (begin, end) in bounds.items()}
    stages_cpu = {name: end[1] - begin[1] for name, (begin, end) in bounds.items()}
    stages["(rest: calls between stages)"] = (t2[0] - t0[0]) - sum(stages.values())
    stages_cpu["(rest: calls between stages)"] = (t2[1] - t0[1]) - sum(stages_cpu.values())
    too_young = [w for w in processed.warnings if "too young" in w]
    return {
        "tickers": len(tickers),
        "cpus": cpus,
        "database": engine.dialect.name,
        "process_s": t1[0] - t0[0],
        "build_s": t2[0] - t1[0],
        "total_s": t2[0] - t0[0],
        "process_cpu_s": t1[1] - t0[1],
        "build_cpu_s": t2[1] - t1[1],
        "total_cpu_s": t2[1] - t0[1],
        "peak_rss_gib": peak_rss,
        "rss_after_process_gib": rss_process,
        "rss_after_imports_gib": baseline_rss,
        "stages_s": stages,
        "stages_cpu_s": stages_cpu,
        "dataset_sessions": processed.sessions,
        "features": processed.n_features,
        "model_features": built.n_features,
        "windows_possible": processed.windows_possible,
        "windows": {p.name: p.windows for p in built.parts},
        "tickers_with_windows": sum(1 for t in processed.per_ticker.values() if t.windows),
        "warnings_too_young": len(too_young),
        "dataset_mib": processed.sessions * (len(tickers)) * processed.n_features * 8 / 2**20,
    }


def indicator_profile(n_tickers: int = 50, n_sessions: int = 2516) -> dict[str, float]:
    """Milliseconds per ticker for each indicator, computed for `n_tickers` synthetic tickers at once
    (one block, as `process` computes them)."""
    import numpy as np

    from stockcli.config import DEFAULT_INDICATORS
    from stockcli.features import indicators as ind

    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0.0002, 0.02, (n_tickers, n_sessions)), axis=1))
    open_ = close * np.exp(rng.normal(0, 0.005, close.shape))
    high = np.maximum(open_, close) * 1.005
    low = np.minimum(open_, close) * 0.995
    volume = rng.integers(10_000, 10_000_000, close.shape).astype(float)
    bars = ind.Bars(open_, high, low, close, volume)
    timings: dict[str, float] = {}
    for item in ind.resolve_indicators(DEFAULT_INDICATORS):
        begin = time.perf_counter()
        item.definition.run(bars, item.params)
        timings[f"{item.name} {item.columns[0]}"] = (time.perf_counter() - begin) * 1000 / n_tickers
    return timings


def run(
    n_tickers: int, database_url: str | None, workdir: Path, load: str = "store", profile: bool = True
) -> dict[str, Any]:
    setup = fill_database(workdir, database_url, n_tickers, load)
    spec = workdir / "child.json"
    spec.write_text(json.dumps({"tickers": setup["tickers"], "as_of": setup["as_of"]}))
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec), "--workdir", str(workdir)]
    if database_url:
        command += ["--database-url", database_url]
    load_before = machine_load()
    # Spawned through a small launcher: a child forked from this process (which holds the market)
    # would count this process's memory in its peak RSS.
    done = run_measured(command, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{done.stdout}\n{done.stderr}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    figures["setup"] = {k: v for k, v in setup.items() if k != "tickers"}
    figures["load_before"] = load_before
    figures["load_after"] = machine_load()
    if profile:
        figures["indicator_ms_per_ticker"] = indicator_profile()
    return figures


def report(figures: dict[str, Any]) -> str:
    setup = figures["setup"]
    lines = [
        f"process + build, {setup['market']} ({figures['database']}, {figures['cpus']} CPUs)",
        f"  machine: {figures['load_before']} before, {figures['load_after']} after",
        f"  total {figures['total_s']:.1f} s wall (process {figures['process_s']:.1f} s, build "
        f"{figures['build_s']:.1f} s), {figures['total_cpu_s']:.1f} s CPU (process {figures['process_cpu_s']:.1f} s, "
        f"build {figures['build_cpu_s']:.1f} s), "
        f"peak RSS {figures['peak_rss_gib']:.2f} GiB ({figures['rss_after_process_gib']:.2f} GiB after process, "
        f"{figures['rss_after_imports_gib']:.2f} GiB after imports); goal <= 60 s and <= 4 GiB",
        f"  dataset {figures['dataset_sessions']} sessions x {figures['tickers']} series x {figures['features']} "
        f"features = {figures['dataset_mib']:.0f} MiB float64; model input {figures['model_features']} own features "
        f"+ context; {figures['windows_possible']:,} windows "
        f"({', '.join(f'{k} {v:,}' for k, v in figures['windows'].items())}) from "
        f"{figures['tickers_with_windows']} tickers; {figures['warnings_too_young']} warned too young for test windows",
        f"  stages:{'':37s} {'wall':>6s} {'':6s} {'CPU':>6s}",
    ]
    total, total_cpu = figures["total_s"], figures["total_cpu_s"]
    for name, seconds in figures["stages_s"].items():
        cpu = figures["stages_cpu_s"][name]
        lines.append(
            f"    {name:42s} {seconds:6.1f} s {100 * seconds / total:3.0f}%  {cpu:6.1f} s {100 * cpu / total_cpu:3.0f}%"
        )
    lines.append(
        f"  set-up, not measured above: synthetic bars {setup['generate_s']:.1f} s, {setup['bars']:,} bars "
        f"written by {'the csv fetch' if setup['load'] == 'fetch' else 'the store upsert'} in {setup['load_s']:.1f} s"
    )
    profile = figures.get("indicator_ms_per_ticker")
    if profile:
        lines.append("  indicators, ms per ticker (50 tickers x 2,516 bars at once):")
        for name, ms in sorted(profile.items(), key=lambda kv: -kv[1]):
            lines.append(f"    {name:32s} {ms:6.2f}")
        lines.append(f"    {'all':32s} {sum(profile.values()):6.2f}")
    return "\n".join(lines)


@pytest.mark.benchmark
def test_process_build_500_tickers_10_years(tmp_path: Path) -> None:
    figures = run(500, os.environ.get("STOCKCLI_BENCH_DATABASE_URL") or None, tmp_path)
    print("\n" + report(figures))
    windows = figures["windows"]
    assert sum(windows.values()) == figures["windows_possible"] and min(windows.values()) > 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickers", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--load", choices=("store", "fetch"), default="store")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-indicator timings")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child.read_text())
        print(json.dumps(child(args.workdir, args.database_url, spec["tickers"], spec["as_of"])))
        return
    with tempfile.TemporaryDirectory() as scratch:
        workdir = args.workdir or Path(scratch)
        figures = run(args.tickers, args.database_url, workdir, args.load, profile=not args.no_profile)
    print(report(figures))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
