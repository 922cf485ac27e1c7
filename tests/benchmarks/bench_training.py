"""Benchmark: training throughput of the global model, in seconds per epoch per 100k training windows.

    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_training.py
    .venv/bin/python tests/benchmarks/bench_training.py [--sizes 100,250,500] [--epochs 1] [--repeats 1]
                                                        [--models lstm,lstm_cross_attention] [--no-bare]

Data: the synthetic market of `synthetic.py` (500 tickers over ten years of sessions, listing dates
spread over the ten years, some gaps and delistings), stored with the store's upsert, then processed
and built by the real services with the default settings (all indicators, 30-session windows). Set-up
is not measured. A dataset of n tickers is the built 500-ticker dataset restricted to the windows of
its first n tickers (`model_helpers.subset`: the same slab and dates, so the only difference with a
dataset processed for those n tickers is where the scalers were fit, which does not change the cost).

For each model (default: `lstm` and `lstm_cross_attention`, hidden 64, batch 64, the other
hyper-parameters at their defaults) and each size, a fresh seeded model is trained by `train_model`
for `--epochs` epochs. Reported, per epoch and per 100k training windows: the seconds of the
optimisation steps (train_model's `train_time_s`) and of the whole call (its `wall_s`: tensors on
the device, validation pass, best-weights copy), in wall and in CPU seconds of this process (with one
torch thread, CPU seconds barely move with the load of the machine; wall seconds do). Linearity: each
size's seconds per 100k windows divided by the smallest size's (1.0 = time grows linearly with the
windows). Nothing is asserted about seconds.

Reference, at the smallest size: a bare PyTorch loop on the same model and windows, materialised
once as one dense tensor (no gather from the slab): randperm batches (whole dates for the
cross-attention model, as train_model draws them), forward, likelihood, backward, clip, Adam step;
nothing else. The ratio is train_model's step throughput over the bare loop's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

from tests.benchmarks.synthetic import START, machine_load, make_market, store_bars  # noqa: E402

SIZES = (100, 250, 500)
MODEL_TYPES = ("lstm", "lstm_cross_attention")


def built_dataset(workdir: Path, n_tickers: int) -> tuple[Any, str]:
    """The built dataset of the synthetic market (set-up), and a description."""
    from stockcli.config import load_settings
    from stockcli.db.datasets import load_built
    from stockcli.db.engine import open_database
    from stockcli.services.build import build
    from stockcli.services.process import process

    begin = time.perf_counter()
    market = make_market(n_tickers)
    settings = load_settings(
        None,
        environ={},
        overrides={
            "storage": {"data_dir": str(workdir / "data")},
            "data": {
                "start": START,
                "tickers": list(market.tickers),
                "source": "csv",
                "csv_dir": str(workdir),
            },
        },
    )
    engine = open_database(settings)
    store_bars(engine, market)
    processed = process(settings=settings, engine=engine, as_of=market.sessions[-1])
    build(settings=settings, engine=engine, run_id=processed.run_id)
    built = load_built(engine, processed.run_id)
    engine.dispose()
    return built, f"{market.describe()}; set-up {time.perf_counter() - begin:.0f} s"


def first_tickers(windows: Any, n_tickers: int) -> Any:
    """The windows of the first `n_tickers` watchlist series (^MKT and the oldest stock numbers)."""
    from tests.model_helpers import subset

    return subset(windows, np.flatnonzero(windows.series < n_tickers))


def bare_loop(train: Any, params: Any, *, epochs: int, seed: int) -> dict[str, float]:
    """The reference: the minimal PyTorch loop over windows materialised once. Step seconds (wall, CPU)."""
    import torch

    from stockcli.ml.networks import distribution_nll
    from stockcli.ml.training import _batches_by_row, _initial_model, configure_threads
    from tests.model_helpers import gather

    configure_threads(None)
    torch.manual_seed(seed)
    x = torch.from_numpy(gather(train))
    y = torch.from_numpy(np.nan_to_num(train.y.astype(np.float32)))
    rows = torch.from_numpy(train.rows)
    model, _config = _initial_model(params=params, windows=train, init_state=None)  # the product's own
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    cross = params.model_type == "lstm_cross_attention"
    generator = torch.Generator().manual_seed(seed)
    shuffle = np.random.default_rng(seed)
    n_dates = len(np.unique(train.rows))
    wall = cpu = 0.0
    for _ in range(epochs):
        model.train()
        begin, begin_cpu = time.perf_counter(), time.process_time()
        if cross:
            batches = [
                torch.from_numpy(b)
                for b in _batches_by_row(train.rows, params.batch_size, order=shuffle.permutation(n_dates))
            ]
        else:
            batches = list(torch.randperm(x.shape[0], generator=generator).split(params.batch_size))
        for index in batches:
            optimizer.zero_grad(set_to_none=True)
            loss = distribution_nll(
                model(x[index], rows[index] if cross else None), y[index], params.distribution
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            optimizer.step()
        wall += time.perf_counter() - begin
        cpu += time.process_time() - begin_cpu
    return {"step_s": wall, "step_cpu_s": cpu}


def measure(
    built: Any, *, sizes: tuple[int, ...], models: tuple[str, ...], epochs: int, repeats: int, bare: bool
) -> list[dict[str, Any]]:
    from stockcli.config import TrainingSettings
    from stockcli.ml.training import TrainParams, configure_threads, train_model
    from tests.model_helpers import subset

    threads = configure_threads(None)
    rows: list[dict[str, Any]] = []
    for model_type in models:
        params = TrainParams.from_settings(TrainingSettings(), {"model_type": model_type, "hidden_size": 64})
        # Warm-up (kernels, allocator) on a small slice, not measured.
        small = subset(first_tickers(built.train, min(sizes)), np.arange(2048))
        train_model(
            train=small, validation=small, params=params, epochs=1, patience=2, seed=1, num_threads=threads
        )
        for n_tickers in sizes:
            train = first_tickers(built.train, n_tickers)
            validation = first_tickers(built.validation, n_tickers)
            best: dict[str, float] = {}
            reference: dict[str, float] = {}
            # At the size compared with the bare loop: at least two runs of each, alternating, so
            # that load from other processes hurts both alike; the best of each is kept.
            compared = bare and n_tickers == min(sizes)
            for _ in range(max(repeats, 2) if compared else repeats):
                begin_cpu = time.process_time()
                result = train_model(
                    train=train,
                    validation=validation,
                    params=params,
                    epochs=epochs,
                    patience=epochs + 1,
                    seed=42,
                    num_threads=threads,
                )
                cpu_s = time.process_time() - begin_cpu
                figures = {"step_s": result.train_time_s, "wall_s": result.wall_s, "cpu_s": cpu_s}
                best = {k: min(v, best.get(k, v)) for k, v in figures.items()}
                if compared:
                    loop = bare_loop(train, params, epochs=epochs, seed=42)
                    reference = {k: min(v, reference.get(k, v)) for k, v in loop.items()}
            per = 100_000 / (len(train) * epochs)
            row: dict[str, Any] = {
                "model_type": model_type,
                "tickers": n_tickers,
                "threads": threads,
                "train_windows": len(train),
                "validation_windows": len(validation),
                "epochs": epochs,
                "step_s_per_100k": best["step_s"] * per,
                "wall_s_per_100k": best["wall_s"] * per,
                "cpu_s_per_100k": best["cpu_s"] * per,
                "samples_per_s": len(train) * epochs / best["step_s"],
                "load": machine_load(),
            }
            if compared:
                row["bare_step_s_per_100k"] = reference["step_s"] * per
                row["bare_cpu_s_per_100k"] = reference["step_cpu_s"] * per
                row["ratio_to_bare"] = reference["step_s"] / best["step_s"]
            rows.append(row)
        smallest = next(r for r in rows if r["model_type"] == model_type and r["tickers"] == min(sizes))
        for row in rows:
            if row["model_type"] == model_type:
                row["linearity_wall"] = row["wall_s_per_100k"] / smallest["wall_s_per_100k"]
                row["linearity_step"] = row["step_s_per_100k"] / smallest["step_s_per_100k"]
                row["linearity_cpu"] = row["cpu_s_per_100k"] / smallest["cpu_s_per_100k"]
    return rows


def report(rows: list[dict[str, Any]], description: str, epochs: int) -> None:
    print(f"\ntrain_model throughput, {epochs} epoch(s), hidden 64, batch 64 ({description})")
    print(
        f"{'model':22} {'tickers':>7} {'train win':>10} {'val win':>9} {'steps s/100k':>12} {'wall s/100k':>11} "
        f"{'CPU s/100k':>10} {'samples/s':>9}  linearity (÷ smallest size: steps, wall, CPU)"
    )
    for row in rows:
        print(
            f"{row['model_type']:22} {row['tickers']:>7} {row['train_windows']:>10,} {row['validation_windows']:>9,} "
            f"{row['step_s_per_100k']:>12.1f} {row['wall_s_per_100k']:>11.1f} {row['cpu_s_per_100k']:>10.1f} "
            f"{row['samples_per_s']:>9,.0f}  {row['linearity_step']:.2f}, {row['linearity_wall']:.2f}, "
            f"{row['linearity_cpu']:.2f}   [{row['load']}]"
        )
    for row in rows:
        if "ratio_to_bare" in row:
            print(
                f"{row['model_type']} at {row['tickers']} tickers: bare PyTorch loop on dense windows "
                f"{row['bare_step_s_per_100k']:.1f} s/100k (CPU {row['bare_cpu_s_per_100k']:.1f}); "
                f"train_model steps {row['step_s_per_100k']:.1f} s/100k: {row['ratio_to_bare']:.2f}x the bare "
                "loop's throughput"
            )
    print(json.dumps(rows))


def run(
    *,
    sizes: tuple[int, ...] = SIZES,
    models: tuple[str, ...] = MODEL_TYPES,
    epochs: int = 1,
    repeats: int = 1,
    bare: bool = True,
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="stockcli-bench-training-") as folder:
        built, description = built_dataset(Path(folder), max(sizes))
    rows = measure(built, sizes=sizes, models=models, epochs=epochs, repeats=repeats, bare=bare)
    report(rows, description, epochs)
    return rows


@pytest.mark.benchmark
def test_training_throughput_grows_linearly_with_windows() -> None:
    rows = run()
    assert all(row["train_windows"] > 0 and row["step_s_per_100k"] > 0 for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--models", default=",".join(MODEL_TYPES))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-bare", action="store_true", help="skip the bare PyTorch loop")
    args = parser.parse_args()
    run(
        sizes=tuple(int(s) for s in args.sizes.split(",")),
        models=tuple(args.models.split(",")),
        epochs=args.epochs,
        repeats=args.repeats,
        bare=not args.no_bare,
    )


if __name__ == "__main__":
    main()
