"""Train a model on a built dataset, evaluate it on the test split next to naive, register it.

Parameters, in rising precedence: `[training]` in the config, the tuned best parameters of the
dataset (`stockcli tune`), then the ones given (`params`). Seeded. Everything goes to MLflow:
parameters (dataset run id, seed, code version, every hyper-parameter), per-epoch losses, the test
metrics of the model and of the naive forecast, one PNG per ticker and the dataset spec. The model
becomes a new registered version; `train` never moves the Production alias (only `promote` does).
"""

from __future__ import annotations

import functools
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Engine

import stockcli
from stockcli.config import Settings
from stockcli.errors import NoDataError
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    import numpy as np

# progress(epoch, epochs, train_loss, val_loss), after every epoch.
TrainProgress = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class TrainSummary:
    """What `train` did: the registered version, how training went, test metrics next to naive."""

    dataset_run_id: str
    model_version: str
    mlflow_run_id: str
    params: dict[str, Any]
    params_source: str  # "config", "tuned" or "given" (given ones on top of tuned/config)
    seed: int
    best_epoch: int
    epochs_run: int
    max_epochs: int
    stopped_early: bool
    best_val_loss: float
    test_metrics: dict[str, Any]  # metrics.evaluate(): per ticker and averaged, model and naive
    test_start: date | None
    test_end: date | None
    n_test: int
    worse_than_naive: tuple[str, ...]  # tickers whose test MAE is above naive's
    samples_per_s: float
    wall_s: float


def train(
    *,
    settings: Settings,
    engine: Engine,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    progress: TrainProgress | None = None,
) -> TrainSummary:
    """Train on dataset `run_id` (default: the newest built one), evaluate, log and register.

    Raises NoDataError when no built dataset exists, RegistryError when MLflow cannot be reached.
    """
    from stockcli.db.datasets import latest_dataset_id, load_built
    from stockcli.ml import registry
    from stockcli.ml.forecast import fit_shrinkage, predict_windows
    from stockcli.ml.metrics import evaluate, flatten
    from stockcli.ml.training import TrainParams, train_model
    from stockcli.services.tune import best_params_for

    started = time.perf_counter()
    dataset_run_id = run_id or latest_dataset_id(engine)
    if dataset_run_id is None:
        raise NoDataError("No built dataset yet.", hint="Run `stockcli process` and `stockcli build` first.")
    built = load_built(engine, dataset_run_id)

    tuned = best_params_for(engine, dataset_run_id)
    overrides: dict[str, Any] = dict(tuned or {})
    overrides.update(params or {})
    params_source = "given" if params else ("tuned" if tuned else "config")
    train_params = TrainParams.from_settings(settings.training, overrides)
    max_epochs = int(epochs or overrides.get("epochs") or settings.training.epochs)
    patience = int(settings.training.patience)
    seed = int(settings.training.seed)
    device = settings.training.device
    tickers = list(built.tickers)

    run_tags = {"stockcli.dataset_run_id": dataset_run_id, "stockcli.command": "train"}
    with registry.training_run(settings, run_name=f"train-{dataset_run_id[:12]}", tags=run_tags) as run:
        run.log_params(
            {
                "dataset_run_id": dataset_run_id,
                "seed": seed,
                "code_version": code_version(),
                "params_source": params_source,
                "epochs": max_epochs,
                "patience": patience,
                "device": device,
                "tickers": ",".join(tickers),
                "sequence_length": built.sequence_length,
                "target_kind": built.target_kind,
                "n_train": int(built.train.x.shape[0]),
                "n_validation": int(built.validation.x.shape[0]),
                "n_test": int(built.test.x.shape[0]),
                "n_features": int(built.train.x.shape[3]),
                **train_params.to_dict(),
            }
        )

        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            run.log_metrics({"train_loss": train_loss, "val_loss": val_loss}, step=epoch)
            if progress is not None:
                progress(epoch, max_epochs, train_loss, val_loss)

        result = train_model(
            train_x=built.train.x,
            train_y=built.train.y,
            val_x=built.validation.x,
            val_y=built.validation.y,
            params=train_params,
            epochs=max_epochs,
            patience=patience,
            seed=seed,
            device=device,
            on_epoch=on_epoch,
            num_threads=settings.training.num_threads or None,
        )
        scalers = dict(built.scalers)
        if settings.training.calibrate and built.validation.x.shape[0] > 0:
            raw_validation = predict_windows(
                result.model, built.scalers, built.validation.x, built.validation.base_closes, device=device
            )
            shrink = fit_shrinkage(
                raw_validation, built.validation.target_closes, built.validation.base_closes
            )
            scalers["calibration"] = {"shrink": shrink, "fit_on": "validation"}
            run.log_params(
                {"calibration_shrink": ",".join(f"{t}={f:g}" for t, f in zip(tickers, shrink, strict=True))}
            )
        test = built.test
        if test.x.shape[0] == 0:
            raise NoDataError(
                f"Dataset {dataset_run_id} has an empty test split.",
                hint="Process a longer date range or lower [dataset] train/validation fractions.",
            )
        predicted = predict_windows(result.model, scalers, test.x, test.base_closes, device=device)
        metrics = evaluate(
            predicted_close=predicted,
            actual_close=test.target_closes,
            base_close=test.base_closes,
            tickers=tickers,
        )
        run.log_metrics(
            {
                "best_epoch": result.best_epoch,
                "best_val_loss": result.best_val_loss,
                "epochs_run": result.epochs_run,
                "samples_per_s": result.samples_per_s,
                "train_time_s": result.train_time_s,
                **{f"test.{key}": value for key, value in flatten(metrics).items()},
            }
        )
        with tempfile.TemporaryDirectory(prefix="stockcli-plots-") as folder:
            plot_test_predictions(
                Path(folder),
                tickers=tickers,
                target_dates=list(test.target_dates),
                actual=test.target_closes,
                predicted=predicted,
                naive=test.base_closes,
                title=f"dataset {dataset_run_id[:12]}",
            )
            run.log_artifacts(Path(folder), "plots")
        run.log_json(
            {
                "dataset_run_id": dataset_run_id,
                "spec": built.spec,
                "tickers": tickers,
                "sequence_length": built.sequence_length,
                "target_kind": built.target_kind,
                "test_window": [_iso(test.target_dates, 0), _iso(test.target_dates, -1)],
            },
            "dataset_spec.json",
        )
        average = metrics["average"]
        summary_tags = {
            "mae": average["model"]["mae"],
            "naive_mae": average["naive"]["mae"],
            "mape": average["model"]["mape"],
            "naive_mape": average["naive"]["mape"],
            "directional_accuracy": average["model"]["directional_accuracy"],
            "skill": average["skill"],
        }
        checkpoint(settings, "train:before_register")
        version = registry.register_version(
            settings,
            run,
            model=result.model,
            model_config=result.config,
            spec=built.spec,
            scalers=scalers,
            tickers=tickers,
            sequence_length=built.sequence_length,
            target_kind=built.target_kind,
            dataset_run_id=dataset_run_id,
            training_params={
                **train_params.to_dict(),
                "seed": seed,
                "epochs": max_epochs,
                "patience": patience,
            },
            metrics={"test": metrics, "best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss},
            test_summary={k: v for k, v in summary_tags.items() if v is not None and math.isfinite(v)},
        )
        checkpoint(settings, "train:after_register")
        run.set_tags({"stockcli.model_version": version})

    worse = tuple(
        ticker
        for ticker, block in metrics["tickers"].items()
        if block["model"]["mae"] is not None
        and block["naive"]["mae"] is not None
        and block["model"]["mae"] > block["naive"]["mae"]
    )
    return TrainSummary(
        dataset_run_id=dataset_run_id,
        model_version=version,
        mlflow_run_id=run.run_id,
        params=train_params.to_dict(),
        params_source=params_source,
        seed=seed,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        max_epochs=max_epochs,
        stopped_early=result.stopped_early,
        best_val_loss=result.best_val_loss,
        test_metrics=metrics,
        test_start=test.target_dates[0] if len(test.target_dates) else None,
        test_end=test.target_dates[-1] if len(test.target_dates) else None,
        n_test=int(test.x.shape[0]),
        worse_than_naive=worse,
        samples_per_s=result.samples_per_s,
        wall_s=time.perf_counter() - started,
    )


def _iso(days: Any, index: int) -> str | None:
    return days[index].isoformat() if len(days) else None


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """stockcli's version, plus the git commit when running from a checkout (`0.1.0+g1a2b3c4`)."""
    version = stockcli.__version__
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(stockcli.__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    sha = completed.stdout.strip()
    return f"{version}+g{sha}" if completed.returncode == 0 and sha else version


def plot_test_predictions(
    folder: Path,
    *,
    tickers: list[str],
    target_dates: list[date],
    actual: np.ndarray,
    predicted: np.ndarray,
    naive: np.ndarray,
    title: str = "",
) -> list[Path]:
    """One PNG per ticker: actual close, model forecast and naive forecast over the test window."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    days = np.array(target_dates, dtype="datetime64[D]")
    paths = []
    for column, ticker in enumerate(tickers):
        figure = Figure(figsize=(10, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.plot(days, actual[:, column], label="actual", color="black", linewidth=1.2)
        axes.plot(days, predicted[:, column], label="model", color="tab:blue", linewidth=1.0)
        axes.plot(
            days,
            naive[:, column],
            label="naive (last close)",
            color="tab:orange",
            linewidth=0.8,
            alpha=0.8,
        )
        axes.set_title(f"{ticker}: test-split next-session close ({title})")
        axes.set_ylabel("close")
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
        figure.autofmt_xdate()
        figure.tight_layout()
        path = folder / f"test_{re.sub(r'[^A-Za-z0-9_.-]', '', ticker) or 'ticker'}.png"
        figure.savefig(path, format="png")
        paths.append(path)
    return paths
