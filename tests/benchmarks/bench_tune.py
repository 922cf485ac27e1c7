"""Benchmark: `tune` wall time on the sample data with and without pruning, same number of trials.

    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_tune.py
    .venv/bin/python tests/benchmarks/bench_tune.py [--trials 12] [--epochs 15]

Data: the bundled sample bars (4 tickers, 2004-08-19..2013-03-01) fetched, processed and built with
the default settings in a temp folder (set-up, not measured). Then `stockcli tune` runs twice on
that dataset, each in a fresh process and a fresh SQLite study, same seed and trial count: once
with the median pruner (`[tuning] pruning = true`, the default) and once without. The first 10
trials of both come from the same seeded random start-up sampler, so both runs try the same
hyper-parameters at first; later TPE suggestions may differ, because pruned trials inform the sampler.

The time budget (`[tuning] timeout_s`) is switched off so that both runs finish the same number of
trials. Reported per run: wall time of the tune service (from its JSON, process start-up excluded), trials complete/pruned, epochs trained in total, best validation loss.
Goal (issue 4): pruning saves at least 2x wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

AS_OF = date(2013, 3, 1)


def build_sample(workdir: Path) -> tuple[Any, Any, str]:
    """Fetch, process and build the sample data with the default settings under `workdir`."""
    from stockcli.config import load_settings
    from stockcli.db.engine import open_database
    from stockcli.services.build import build
    from stockcli.services.fetch import fetch
    from stockcli.services.process import process

    settings = load_settings(None, environ={}, overrides={"storage": {"data_dir": str(workdir / "data")}})
    engine = open_database(settings)
    fetch(settings=settings, engine=engine, as_of=AS_OF)
    processed = process(settings=settings, engine=engine, as_of=AS_OF)
    build(settings=settings, engine=engine, run_id=processed.run_id)
    return settings, engine, processed.run_id


def tune_once(settings: Any, run_id: str, *, pruning: bool, trials: int, epochs: int) -> dict[str, Any]:
    """One `stockcli tune` in a fresh process (no kernels or caches shared with the other run)."""
    import optuna

    data_dir = settings.data_dir
    storage_url = f"sqlite:///{data_dir / ('pruned.db' if pruning else 'unpruned.db')}"
    config = data_dir.parent / f"config-{'pruned' if pruning else 'unpruned'}.toml"
    config.write_text(
        f'[storage]\ndata_dir = "{data_dir}"\n'
        f"[tuning]\npruning = {'true' if pruning else 'false'}\nepochs = {epochs}\ntimeout_s = 0.0\n"
        f'storage_url = "{storage_url}"\n',
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    env["STOCKCLI_CONFIG"] = str(config)
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "stockcli",
            "--json",
            "--as-of",
            AS_OF.isoformat(),
            "tune",
            "--n-trials",
            str(trials),
            "--run-id",
            run_id,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"tune failed ({completed.returncode}): {completed.stderr}")
    result = json.loads(completed.stdout)
    study = optuna.load_study(study_name=result["study_name"], storage=storage_url)
    epochs_trained = sum(int(t.user_attrs.get("epochs_run", 0)) for t in study.trials)
    return {
        "pruning": pruning,
        "wall_s": round(result["wall_s"], 1),
        "trials": result["n_trials"],
        "complete": result["n_complete"],
        "pruned": result["n_pruned"],
        "epochs_trained": epochs_trained,
        "best_value": result["best_value"],
        "best_params": result["best_params"],
    }


def run(*, trials: int, epochs: int) -> dict[str, Any]:
    from stockcli.db.datasets import load_built
    from stockcli.ml.training import default_threads

    with tempfile.TemporaryDirectory() as folder:
        settings, engine, run_id = build_sample(Path(folder))
        shape = tuple(load_built(engine, run_id).train.x.shape)
        engine.dispose()
        pruned = tune_once(settings, run_id, pruning=True, trials=trials, epochs=epochs)
        unpruned = tune_once(settings, run_id, pruning=False, trials=trials, epochs=epochs)
    saved = unpruned["wall_s"] / pruned["wall_s"] if pruned["wall_s"] else float("nan")
    print(
        f"\ntune on the sample data (train x {shape}), {trials} trials x up to {epochs} epochs, "
        f"{default_threads()} torch thread(s)"
    )
    print(f"{'pruning':>8} {'wall s':>8} {'complete':>9} {'pruned':>7} {'epochs':>7} {'best val loss':>14}")
    for row in (pruned, unpruned):
        print(
            f"{'on' if row['pruning'] else 'off':>8} {row['wall_s']:>8} {row['complete']:>9} {row['pruned']:>7} "
            f"{row['epochs_trained']:>7} {row['best_value']:>14.6g}"
        )
    print(f"wall time saved by pruning: {saved:.2f}x")
    summary = {
        "trials": trials,
        "epochs": epochs,
        "pruned": pruned,
        "unpruned": unpruned,
        "speedup": round(saved, 2),
    }
    print(json.dumps(summary))
    return summary


@pytest.mark.benchmark
def test_tune_wall_time_with_and_without_pruning() -> None:
    summary = run(trials=12, epochs=15)
    assert summary["pruned"]["trials"] == summary["unpruned"]["trials"] == 12


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=15, help="epochs per trial ([tuning] epochs)")
    args = parser.parse_args()
    run(trials=args.trials, epochs=args.epochs)


if __name__ == "__main__":
    main()
