"""Benchmark: `train_model` throughput against a bare PyTorch loop on the same tensors and model.

    .venv/bin/python -m pytest -q -s -m benchmark tests/benchmarks/bench_training.py
    .venv/bin/python tests/benchmarks/bench_training.py [--epochs 3] [--repeats 2] [--synthetic]

Data: the bundled sample bars (4 tickers, 2004-08-19..2013-03-01) fetched, processed and built with
the default settings (all indicators, 30-session windows) in a temp folder; `--synthetic` uses seeded
random arrays of the same shape instead. Set-up is not measured.

For each architecture (default hyper-parameters, hidden 64, batch 64) the same freshly seeded model
is trained by
- the bare loop: tensors made once, `randperm` shuffling, forward, loss, backward, clip, Adam step;
  nothing else;
- `train_model`: the same steps plus its bookkeeping (per-epoch validation, best-weights copies,
  early stopping, callbacks).
Runs alternate (bare, ours, bare, ours...) and the best of `--repeats` is kept, so that load from
other processes hurts both alike. Reported: samples/s of the optimisation steps (train_model's own
`samples_per_s`) and end to end (training samples x epochs / wall time, validation included, against
the bare loop plus the same validation pass). Goal (issue 4): >= 0.9x of the bare loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script
    sys.path.insert(0, str(ROOT))

AS_OF = date(2013, 3, 1)
MODEL_TYPES = ("lstm", "lstm_attention", "lstm_cross_attention")


def sample_dataset(workdir: Path) -> tuple[dict[str, np.ndarray], str]:
    """Train/validation arrays of the sample data built with the default settings, and a description."""
    from stockcli.config import load_settings
    from stockcli.db.datasets import load_built
    from stockcli.db.engine import open_database
    from stockcli.services.build import build
    from stockcli.services.fetch import fetch
    from stockcli.services.process import process

    settings = load_settings(None, environ={}, overrides={"storage": {"data_dir": str(workdir / "data")}})
    engine = open_database(settings)
    fetch(settings=settings, engine=engine, as_of=AS_OF)
    processed = process(settings=settings, engine=engine, as_of=AS_OF)
    build(settings=settings, engine=engine, run_id=processed.run_id)
    built = load_built(engine, processed.run_id)
    arrays = {
        "train_x": np.ascontiguousarray(built.train.x, dtype=np.float32),
        "train_y": np.ascontiguousarray(built.train.y, dtype=np.float32),
        "val_x": np.ascontiguousarray(built.validation.x, dtype=np.float32),
        "val_y": np.ascontiguousarray(built.validation.y, dtype=np.float32),
    }
    engine.dispose()
    return arrays, f"sample data, dataset {processed.run_id}"


def synthetic_dataset(n_train: int = 1450, n_val: int = 310) -> tuple[dict[str, np.ndarray], str]:
    """Seeded random arrays shaped like the sample data: 30 sessions x 4 tickers x 35 features."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n_train + n_val, 30, 4, 35)).astype(np.float32)
    y = (0.1 * x[:, -1, :, 0] + rng.standard_normal((n_train + n_val, 4))).astype(np.float32)
    arrays = {"train_x": x[:n_train], "train_y": y[:n_train], "val_x": x[n_train:], "val_y": y[n_train:]}
    return arrays, "synthetic arrays of the sample data's shape"


def bare_loop(
    arrays: dict[str, np.ndarray], params: Any, *, epochs: int, seed: int, validate: bool
) -> tuple[float, float]:
    """The reference: the minimal PyTorch loop. Returns (step seconds, wall seconds)."""
    import torch

    from stockcli.ml.networks import build_model

    started = time.perf_counter()
    torch.manual_seed(seed)
    x, y = torch.from_numpy(arrays["train_x"]), torch.from_numpy(arrays["train_y"])
    val_x, val_y = torch.from_numpy(arrays["val_x"]), torch.from_numpy(arrays["val_y"])
    model = build_model(
        params.model_type,
        n_stocks=x.shape[2],
        n_features=x.shape[3],
        hidden_size=params.hidden_size,
        num_layers=params.num_layers,
        dropout=params.dropout,
        num_heads=params.num_heads,
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    loss_fn = torch.nn.MSELoss()
    generator = torch.Generator().manual_seed(seed)
    step_s = 0.0
    for _ in range(epochs):
        model.train()
        begin = time.perf_counter()
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, x.shape[0], params.batch_size):
            index = order[start : start + params.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[index]), y[index])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
            optimizer.step()
        step_s += time.perf_counter() - begin
        if validate:
            model.eval()
            with torch.inference_mode():
                float(loss_fn(model(val_x), val_y))
    return step_s, time.perf_counter() - started


def measure(
    arrays: dict[str, np.ndarray], *, epochs: int, repeats: int, seed: int = 42
) -> list[dict[str, Any]]:
    from stockcli.config import TrainingSettings
    from stockcli.ml.training import TrainParams, configure_threads, train_model

    threads = configure_threads(None)
    n_train = arrays["train_x"].shape[0]
    rows = []
    for model_type in MODEL_TYPES:
        params = TrainParams.from_settings(TrainingSettings(), {"model_type": model_type})
        bare_loop(arrays, params, epochs=1, seed=seed, validate=False)  # warm-up: kernels, allocator
        best: dict[str, float] = {"bare_steps": 0.0, "bare_wall": 0.0, "ours_steps": 0.0, "ours_wall": 0.0}
        for _ in range(repeats):
            step_s, _ = bare_loop(arrays, params, epochs=epochs, seed=seed, validate=False)
            best["bare_steps"] = max(best["bare_steps"], n_train * epochs / step_s)
            _, wall_s = bare_loop(arrays, params, epochs=epochs, seed=seed, validate=True)
            best["bare_wall"] = max(best["bare_wall"], n_train * epochs / wall_s)
            result = train_model(
                **arrays, params=params, epochs=epochs, patience=epochs + 1, seed=seed, num_threads=threads
            )
            best["ours_steps"] = max(best["ours_steps"], result.samples_per_s)
            best["ours_wall"] = max(best["ours_wall"], n_train * result.epochs_run / result.wall_s)
        rows.append(
            {
                "model_type": model_type,
                "threads": threads,
                "bare_samples_per_s": round(best["bare_steps"]),
                "train_model_samples_per_s": round(best["ours_steps"]),
                "ratio_steps": round(best["ours_steps"] / best["bare_steps"], 3),
                "bare_end_to_end_samples_per_s": round(best["bare_wall"]),
                "train_model_end_to_end_samples_per_s": round(best["ours_wall"]),
                "ratio_end_to_end": round(best["ours_wall"] / best["bare_wall"], 3),
            }
        )
    return rows


def report(rows: list[dict[str, Any]], description: str, shape: tuple[int, ...], epochs: int) -> None:
    print(
        f"\ntrain_model vs a bare PyTorch loop ({description}; train x {shape}, {epochs} epochs, best of runs)"
    )
    print(
        f"{'model':22} {'threads':>7} {'bare/s':>8} {'ours/s':>8} {'ratio':>6} {'bare e2e':>9} {'ours e2e':>9} {'ratio':>6}"
    )
    for row in rows:
        print(
            f"{row['model_type']:22} {row['threads']:>7} {row['bare_samples_per_s']:>8} "
            f"{row['train_model_samples_per_s']:>8} {row['ratio_steps']:>6.2f} "
            f"{row['bare_end_to_end_samples_per_s']:>9} {row['train_model_end_to_end_samples_per_s']:>9} "
            f"{row['ratio_end_to_end']:>6.2f}"
        )
    print(json.dumps(rows))


def run(*, synthetic: bool, epochs: int, repeats: int) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as folder:
        arrays, description = synthetic_dataset() if synthetic else sample_dataset(Path(folder))
    rows = measure(arrays, epochs=epochs, repeats=repeats)
    report(rows, description, arrays["train_x"].shape, epochs)
    return rows


@pytest.mark.benchmark
def test_train_model_throughput_against_a_bare_loop() -> None:
    rows = run(synthetic=False, epochs=3, repeats=2)
    assert all(row["ratio_steps"] > 0 for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--synthetic", action="store_true", help="random arrays of the sample data's shape")
    args = parser.parse_args()
    run(synthetic=args.synthetic, epochs=args.epochs, repeats=args.repeats)


if __name__ == "__main__":
    main()
