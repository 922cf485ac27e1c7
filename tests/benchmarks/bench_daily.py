"""Benchmark: `stockcli daily` with a trained model against the bare import of its heavy libraries,
and `backtest` sessions per second.

    make bench
    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_daily.py
    .venv/bin/python tests/benchmarks/bench_daily.py [--repeats 3] [--sessions 20] [--workdir DIR]

Set-up (not measured): a workspace on the defaults (SQLite, local MLflow store, the bundled sample
source, 4 tickers, 22 indicators) except a small training budget, bootstrapped by `daily` as of
2013-02-27 (fetch, process, build, tune, train, promote, predict).

1. `daily`: the second run, as of the next session (2013-02-28: fetch one new bar, resolve
   Production, load the model, predict, score yesterday's predictions, no retrain), in a fresh
   `python -m stockcli` process, each repeat on a fresh copy of the bootstrapped data dir. Against
   it, in the same run and interleaved: a fresh process doing nothing but `import` the heavy
   libraries that this very `daily` process ended up importing (torch, mlflow, pandas, ...; the
   list is read from the daily process itself). Goal (issue 5): daily <= 1.5x the bare imports.
   The figure is the ratio of the medians; the ledger's run time (inside the run lock) is printed
   too, and what remains is interpreter start-up, imports and the registry's store.
2. `backtest`: `--sessions` sessions replayed after the first one bootstraps, in this process (as
   the command runs them), no retrain (a long cooldown); sessions per second after the bootstrap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

BOOTSTRAP_AS_OF = "2013-02-27"
NEXT_AS_OF = "2013-02-28"
# Heavy libraries that `daily` might import; the baseline imports those it really did.
HEAVY = (
    "torch",
    "mlflow",
    "optuna",
    "pandas",
    "sklearn",
    "ta",
    "exchange_calendars",
    "yfinance",
    "matplotlib",
)

# The defaults, except a budget that bootstraps in seconds (the figures concern the daily path).
SMALL_BUDGET = """\
[storage]
data_dir = "data"
[training]
epochs = 2
patience = 1
hidden_size = 16
[tuning]
n_trials = 2
epochs = 1
model_types = ["lstm"]
hidden_size_min = 16
hidden_size_max = 32
"""

# `python -m stockcli ARGS`, plus: write which heavy libraries ended up imported, at exit.
DAILY_WRAPPER = """\
import atexit, json, runpy, sys
census, argv = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(census, "w").write(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules))))
sys.argv = ["stockcli", *argv]
runpy.run_module("stockcli", run_name="__main__")
"""


# The bare imports as `stockcli.ml.registry.heavy_import` does them: collector paused, then frozen.
PAUSED_IMPORT = "import gc; gc.disable(); import {}; gc.freeze(); gc.enable()"


def child_env(config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    env.update({"STOCKCLI_CONFIG": str(config), "PYTHONUNBUFFERED": "1"})
    return env


def timed(command: list[str], env: dict[str, str]) -> float:
    begin = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall_s = time.perf_counter() - begin
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return wall_s


def bootstrap(workdir: Path) -> Path:
    """A bootstrapped workspace (not measured); returns its config file."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.toml"
    config.write_text(SMALL_BUDGET, encoding="utf-8")
    begin = time.perf_counter()
    timed(
        [sys.executable, "-m", "stockcli", "--as-of", BOOTSTRAP_AS_OF, "--json", "daily"], child_env(config)
    )
    print(f"bootstrap (set-up, not measured): {time.perf_counter() - begin:.1f} s")
    return config


def ledger_run_s(data_dir: Path) -> float:
    """Seconds between start and finish of the newest `daily` ledger row."""
    import sqlite3

    connection = sqlite3.connect(data_dir / "stockcli.db")
    try:
        started, finished = connection.execute(
            "SELECT started_at, finished_at FROM pipeline_runs WHERE command = 'daily' "
            "ORDER BY id DESC LIMIT 1"
        ).fetchone()
    finally:
        connection.close()
    from datetime import datetime

    return (datetime.fromisoformat(str(finished)) - datetime.fromisoformat(str(started))).total_seconds()


def bench_daily(workdir: Path, repeats: int) -> dict[str, Any]:
    config = bootstrap(workdir)
    data_dir = workdir / "data"
    pristine = workdir / "pristine"
    shutil.copytree(data_dir, pristine, ignore=shutil.ignore_patterns("stockcli.lock"))
    env = child_env(config)
    census = workdir / "census.json"
    wrapper = DAILY_WRAPPER.format(heavy=HEAVY)
    daily_cmd = [sys.executable, "-c", wrapper, str(census), "--as-of", NEXT_AS_OF, "--json", "daily"]

    daily_s: list[float] = []
    import_s: list[float] = []
    paused_s: list[float] = []
    run_s: list[float] = []
    libraries: list[str] = []
    for _ in range(repeats):
        shutil.rmtree(data_dir)
        shutil.copytree(pristine, data_dir)
        daily_s.append(timed(daily_cmd, env))
        run_s.append(ledger_run_s(data_dir))
        imported = json.loads(census.read_text())
        assert not libraries or imported == libraries, (imported, libraries)
        libraries = imported
        import_s.append(timed([sys.executable, "-c", f"import {', '.join(libraries)}"], env))
        paused_s.append(timed([sys.executable, "-c", PAUSED_IMPORT.format(", ".join(libraries))], env))
    daily_median, import_median = statistics.median(daily_s), statistics.median(import_s)
    figures: dict[str, Any] = {
        "libraries": libraries,
        "daily_s": daily_s,
        "imports_s": import_s,
        "imports_gc_paused_s": paused_s,
        "ledger_run_s": run_s,
        "daily_median_s": daily_median,
        "imports_median_s": import_median,
        "ratio": daily_median / import_median,
        "ratios": [a / b for a, b in zip(daily_s, import_s, strict=True)],
    }
    print(f"heavy libraries `daily` imported: {', '.join(libraries)}")
    print(f"daily (fresh process, as of {NEXT_AS_OF}): " + ", ".join(f"{s:.2f}" for s in daily_s) + " s")
    print("  of which inside the run (ledger): " + ", ".join(f"{s:.2f}" for s in run_s) + " s")
    print(f"bare `import {', '.join(libraries)}`: " + ", ".join(f"{s:.2f}" for s in import_s) + " s")
    print(
        f"median daily {daily_median:.2f} s / median imports {import_median:.2f} s = {figures['ratio']:.2f}x "
        f"(goal <= 1.5x; per pair: {', '.join(f'{r:.2f}' for r in figures['ratios'])})"
    )
    paused_median = statistics.median(paused_s)
    print(
        "the same imports with the garbage collector paused, as daily imports them: "
        + ", ".join(f"{s:.2f}" for s in paused_s)
        + f" s; median daily / that = {daily_median / paused_median:.2f}x"
    )
    return figures


def bench_backtest(workdir: Path, sessions: int) -> dict[str, Any]:
    """`sessions` replayed sessions after a bootstrapping first one, timed per session in this process."""
    from stockcli.clock import trading_calendar
    from stockcli.config import load_settings
    from stockcli.services.backtest import backtest

    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.toml"
    config.write_text(SMALL_BUDGET + "[monitor]\ncooldown_sessions = 1000\n", encoding="utf-8")
    settings = load_settings(config, environ={})
    calendar = trading_calendar(settings.data.exchange)
    end = date(2013, 3, 1)
    start = calendar.sessions_back(end, sessions)
    stamps: list[float] = []
    result = backtest(
        settings=settings,
        start=start,
        end=end,
        workspace=workdir / "scratch",
        progress=lambda done, total, message: stamps.append(time.perf_counter()),
    )
    assert result.sessions == sessions + 1 and result.sessions_failed == 0, result.failures
    assert [r.as_of for r in result.retrains] == [start], result.retrains  # the bootstrap only
    replay_s = stamps[-1] - stamps[0]
    per_s = sessions / replay_s
    bootstrap_s = result.wall_s - replay_s
    print(
        f"backtest {start}..{end}: {result.sessions} sessions in {result.wall_s:.1f} s; the first bootstraps "
        f"({bootstrap_s:.1f} s), then {sessions} sessions in {replay_s:.1f} s = {per_s:.2f} sessions/s "
        f"({replay_s / sessions * 1000:.0f} ms a session); a year (252 sessions) ~ {252 / per_s:.0f} s "
        "+ retrains"
    )
    return {"sessions_per_s": per_s, "session_ms": replay_s / sessions * 1000, "bootstrap_s": bootstrap_s}


@pytest.mark.benchmark
def test_daily_against_bare_imports_and_backtest_speed(tmp_path: Path) -> None:
    daily = bench_daily(tmp_path / "daily", repeats=3)
    backtest = bench_backtest(tmp_path / "backtest", sessions=20)
    assert daily["ratio"] > 0 and backtest["sessions_per_s"] > 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--only", choices=("daily", "backtest"), default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="stockcli-bench-daily-") as folder:
        workdir = args.workdir or Path(folder)
        if args.only in (None, "daily"):
            bench_daily(workdir / "daily", args.repeats)
        if args.only in (None, "backtest"):
            bench_backtest(workdir / "backtest", args.sessions)


if __name__ == "__main__":
    main()
