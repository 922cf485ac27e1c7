"""Train a model on a built dataset, evaluate it on the test split next to naive, register it.

Parameters, losses, test metrics, plots and the dataset spec go to MLflow. The model becomes a new
registered version; `train` never moves the Production alias (only `promote` does).
"""

from __future__ import annotations

import functools
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy.engine import Engine

import stockcli
from stockcli.config import Settings
from stockcli.errors import ConfigError, NoDataError
from stockcli.services.runtime import checkpoint

if TYPE_CHECKING:
    import pandas as pd

    from stockcli.features.dataset import BuiltDataset

    # The metric blocks a training result carries, named here for the CLI (which imports services only).
    from stockcli.ml.metrics import Evaluation as Evaluation
    from stockcli.ml.metrics import MetricBlock as MetricBlock
    from stockcli.ml.training import TrainParams, TrainResult

# One PNG per ticker costs ~0.7 s; a 500-ticker watchlist plots its first tickers only.
MAX_PLOTS = 12
# The headline test figures (`metrics.flat_figures` of the average) a model version is tagged with.
SUMMARY_TAGS = {"mae", "naive_mae", "mape", "naive_mape", "directional_accuracy", "skill"}
SUMMARY_TAGS |= {"coverage_80", "coverage_95", "winkler_95"}
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
    test_metrics: Evaluation  # per ticker and averaged, model and naive
    test_start: date | None
    test_end: date | None
    n_test: int
    worse_than_naive: tuple[str, ...]  # tickers whose test MAE is above naive's
    samples_per_s: float
    wall_s: float


def check_registry_knows_database(settings: Settings, engine: Engine) -> None:
    """ConfigError when the database refers to model versions newer than the registry's newest: its
    store was lost or replaced, and the next registration would reuse a number."""
    from stockcli.config import redact_url
    from stockcli.db.store import model_versions_in_use
    from stockcli.ml import registry

    newest = int(registry.latest_version(settings) or 0)
    unknown = sorted(int(v) for v in model_versions_in_use(engine) if v.isdigit() and int(v) > newest)
    if not unknown:
        return
    listed = ", ".join(str(v) for v in unknown)
    raise ConfigError(
        f"The MLflow registry at {redact_url(settings.mlflow_tracking_uri)} knows "
        f"{f'model versions up to {newest}' if newest else 'no model version'}, but the database "
        f"{redact_url(settings.database_url)} holds predictions or promotions of version{'s' if len(unknown) > 1 else ''} "
        f"{listed}: the MLflow store was lost or replaced. A new model would reuse those numbers and "
        "mix two models' records, so nothing was trained.",
        hint=f"Restore the MLflow store (mlflow.db and mlartifacts/ of the data dir {settings.data_dir}, or "
        "the tracking server's database) from a backup, or set [mlflow] tracking_uri back to the store "
        "that holds them. To start over instead, use a new, empty data dir ([storage] data_dir or "
        "STOCKCLI_DATA_DIR, and a new database_url if it is not under it), or delete every row of "
        "latest_predictions, model_performance_log, promotions, serving_selection and interval_state "
        "in the database (the bars and datasets can stay).",
    )


@dataclass(frozen=True)
class TrainingPlan:
    """How one `train` trains: the parameters (and where they came from) and the loop's settings."""

    params: TrainParams
    params_source: str  # "config", "tuned" or "given" (given ones on top of tuned/config)
    max_epochs: int
    patience: int
    seed: int
    seeds: int  # networks averaged (`[promotion] seeds`)
    device: str


@dataclass(frozen=True)
class TestEvaluation:
    """The trained model calibrated on validation and scored on test, next to the baselines."""

    calibration: dict[str, Any]
    baselines: dict[str, Any]  # fit_baselines()
    test_forecast: Any  # forecast_windows() on the test split
    quantiles: np.ndarray  # its calibrated quantiles, as closes
    metrics: Evaluation  # per ticker and averaged, model and naive


def train(
    *,
    settings: Settings,
    engine: Engine,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    epochs: int | None = None,
    progress: TrainProgress | None = None,
    init_state: Mapping[str, Any] | None = None,
) -> TrainSummary:
    """Train on dataset `run_id` (default: the newest built one), calibrate, evaluate, log and register.

    `init_state` fine-tunes from given weights (Production's network) instead of a fresh start.
    Raises NoDataError when no built dataset exists, RegistryError when MLflow cannot be reached.
    """
    from stockcli.db.datasets import latest_dataset_id, load_built
    from stockcli.ml import registry

    check_registry_knows_database(settings, engine)  # before a new version number is minted
    started = time.perf_counter()
    dataset_run_id = run_id or latest_dataset_id(engine)
    if dataset_run_id is None:
        raise NoDataError("No built dataset yet.", hint="Run `stockcli process` and `stockcli build` first.")
    built = load_built(engine, dataset_run_id)
    plan = _training_plan(
        settings=settings, engine=engine, dataset_run_id=dataset_run_id, params=params, epochs=epochs
    )

    run_tags = {"stockcli.dataset_run_id": dataset_run_id, "stockcli.command": "train"}
    with registry.training_run(settings, run_name=f"train-{dataset_run_id[:12]}", tags=run_tags) as run:
        run.log_params(_run_params(built=built, plan=plan, fine_tuned=init_state is not None))

        def on_epoch(epoch: int, train_loss: float, val_loss: float) -> None:
            run.log_metrics({"train_loss": train_loss, "val_loss": val_loss}, step=epoch)
            if progress is not None:
                progress(epoch, plan.max_epochs, train_loss, val_loss)

        result = _fit_network(
            settings=settings, built=built, plan=plan, run=run, on_epoch=on_epoch, init_state=init_state
        )
        evaluation = _evaluate(settings=settings, engine=engine, built=built, model=result.model)
        _log_results(run=run, built=built, result=result, evaluation=evaluation)
        version = _register(
            settings=settings, run=run, built=built, plan=plan, result=result, evaluation=evaluation
        )

    metrics, test = evaluation.metrics, built.test  # the test split is not empty (`_evaluate`)
    return TrainSummary(
        dataset_run_id=dataset_run_id,
        model_version=version,
        mlflow_run_id=run.run_id,
        params=plan.params.to_dict(),
        params_source=plan.params_source,
        seed=plan.seed,
        best_epoch=result.best_epoch,
        epochs_run=result.epochs_run,
        max_epochs=plan.max_epochs,
        stopped_early=result.stopped_early,
        best_val_loss=result.best_val_loss,
        test_metrics=metrics,
        test_start=test.target_dates[0],
        test_end=test.target_dates[-1],
        n_test=len(test),
        worse_than_naive=tuple(
            ticker
            for ticker, block in metrics.tickers.items()
            if block.model.mae is not None
            and block.naive.mae is not None
            and block.model.mae > block.naive.mae
        ),
        samples_per_s=result.samples_per_s,
        wall_s=time.perf_counter() - started,
    )


def _training_plan(
    *,
    settings: Settings,
    engine: Engine,
    dataset_run_id: str,
    params: Mapping[str, Any] | None,
    epochs: int | None,
) -> TrainingPlan:
    """Parameters in rising precedence: `[training]`, the dataset's tuned best ones, `params`."""
    from stockcli.db.optimization import best_params_for
    from stockcli.ml.training import TrainParams

    tuned = best_params_for(engine, dataset_run_id)
    overrides = {**(tuned or {}), **(params or {})}
    return TrainingPlan(
        params=TrainParams.from_settings(settings.training, overrides),
        params_source="given" if params else ("tuned" if tuned else "config"),
        max_epochs=int(epochs or overrides.get("epochs") or settings.training.epochs),
        patience=int(settings.training.patience),
        seed=int(settings.training.seed),
        seeds=int(settings.promotion.seeds),
        device=settings.training.device,
    )


def _run_params(*, built: BuiltDataset, plan: TrainingPlan, fine_tuned: bool) -> dict[str, Any]:
    """What the MLflow run records as its parameters."""
    return {
        "dataset_run_id": built.run_id,
        "seed": plan.seed,
        "code_version": code_version(),
        "params_source": plan.params_source,
        "initialised_from": "production weights (fine-tune)" if fine_tuned else "seed",
        "epochs": plan.max_epochs,
        "patience": plan.patience,
        "device": plan.device,
        "tickers": ",".join(built.tickers),
        "context_tickers": ",".join(built.spec.context_tickers),
        "sequence_length": built.sequence_length,
        "target_kind": built.target_kind,
        "n_train": len(built.train),
        "n_validation": len(built.validation),
        "n_test": len(built.test),
        "n_features": built.train.n_features,
        **plan.params.to_dict(),
    }


def _fit_network(
    *,
    settings: Settings,
    built: BuiltDataset,
    plan: TrainingPlan,
    run: Any,
    on_epoch: Callable[[int, float, float], None],
    init_state: Mapping[str, Any] | None,
) -> TrainResult:
    """Train the network; with `[promotion] seeds` k > 1, an ensemble of k seeds (a candidate wins by
    its mean, not by one lucky initialisation) in the first seed's result."""
    from stockcli.ml.networks import ensemble_config, model_from_config
    from stockcli.ml.training import train_model

    fit = functools.partial(
        train_model,
        train=built.train,
        validation=built.validation,
        params=plan.params,
        epochs=plan.max_epochs,
        patience=plan.patience,
        device=plan.device,
        num_threads=settings.training.num_threads or None,
    )
    result = fit(seed=plan.seed, on_epoch=on_epoch, init_state=init_state)
    if plan.seeds <= 1:
        return result
    members = [result] + [fit(seed=plan.seed + k) for k in range(1, plan.seeds)]
    config = ensemble_config([m.config for m in members])
    model = model_from_config(config)
    for member, trained in zip(model.members, members, strict=True):  # type: ignore[arg-type]
        member.load_state_dict(trained.model.state_dict())
    model.eval()
    run.log_metrics({f"seed_{k}.best_val_loss": m.best_val_loss for k, m in enumerate(members)})
    return replace(result, model=model, config=config)


def _evaluate(*, settings: Settings, engine: Engine, built: BuiltDataset, model: Any) -> TestEvaluation:
    """Calibrate the intervals on validation, fit the baselines on the training dates, score the test
    split next to naive and the baselines. Raises NoDataError for an empty test split."""
    from stockcli.db.bars import load_bars
    from stockcli.ml.forecast import calibrated_quantiles, fit_calibration, forecast_windows
    from stockcli.ml.forecasters import with_market
    from stockcli.ml.metrics import evaluate

    validation, test = built.validation, built.test
    validation_forecast = forecast_windows(model, built.scalers, validation)
    calibration = fit_calibration(
        validation_forecast, np.log(validation.target_closes / validation.base_closes)
    )
    if len(test) == 0:
        raise NoDataError(
            f"Dataset {built.run_id} has an empty test split.",
            hint="Process a longer date range or lower [dataset] train/validation fractions.",
        )
    # The statistical candidates fit on and filter each ticker's bars (each row sees only its own past).
    tickers = list(built.tickers)
    market = settings.forecasters.har_market
    history = load_bars(
        engine, with_market(tickers, market), start=built.spec.start_date, end=max(test.base_dates)
    )
    train_end = date.fromisoformat(built.split["train"]["last_target_date"])
    baselines = fit_baselines(settings, history, tickers, through=train_end)
    test_forecast = forecast_windows(model, built.scalers, test)
    base = np.asarray(test.base_closes, dtype=np.float64)
    quantiles = np.exp(calibrated_quantiles(test_forecast, calibration)) * base[:, None]
    metrics = evaluate(
        tickers=list(test.tickers),
        dates=list(test.target_dates),
        predicted_close=test_forecast.predicted_closes,
        actual_close=np.asarray(test.target_closes, dtype=np.float64),
        base_close=base,
        quantiles=quantiles,
        baselines=baseline_forecasts(settings, baselines, history, test).quantiles,
    )
    return TestEvaluation(
        calibration=calibration,
        baselines=baselines,
        test_forecast=test_forecast,
        quantiles=quantiles,
        metrics=metrics,
    )


def _log_results(*, run: Any, built: BuiltDataset, result: TrainResult, evaluation: TestEvaluation) -> None:
    """Log the training and test metrics, the test-split plots and the dataset's spec."""
    from stockcli.ml.metrics import flatten

    run.log_metrics(
        {
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
            "epochs_run": result.epochs_run,
            "samples_per_s": result.samples_per_s,
            "train_time_s": result.train_time_s,
            **{f"test.{key}": value for key, value in flatten(evaluation.metrics).items()},
        }
    )
    test = built.test
    with tempfile.TemporaryDirectory(prefix="stockcli-plots-") as folder:
        plot_test_predictions(
            Path(folder),
            test,
            tickers=list(built.tickers)[:MAX_PLOTS],
            predicted=evaluation.test_forecast.predicted_closes,
            quantiles=evaluation.quantiles,
            title=f"dataset {built.run_id[:12]}",
        )
        run.log_artifacts(Path(folder), "plots")
    run.log_json(
        {
            "dataset_run_id": built.run_id,
            "spec": built.spec.to_json(),
            "tickers": list(built.tickers),
            "context_tickers": list(built.spec.context_tickers),
            "sequence_length": built.sequence_length,
            "target_kind": built.target_kind,
            "test_window": [d.isoformat() for d in (test.target_dates[0], test.target_dates[-1])],
        },
        "dataset_spec.json",
    )


def _register(
    *,
    settings: Settings,
    run: Any,
    built: BuiltDataset,
    plan: TrainingPlan,
    result: TrainResult,
    evaluation: TestEvaluation,
) -> str:
    """Register the trained model as a new version carrying what it needs to predict; its number."""
    from stockcli.ml import registry
    from stockcli.ml.metrics import flat_figures

    checkpoint(settings, "train:before_register")
    version = registry.register_version(
        settings,
        run,
        model=result.model,
        model_config=result.config,
        spec=built.spec,
        scalers=built.scalers,
        tickers=list(built.tickers),
        sequence_length=built.sequence_length,
        target_kind=built.target_kind,
        dataset_run_id=built.run_id,
        training_params={
            **plan.params.to_dict(),
            **{"seed": plan.seed, "seeds": plan.seeds, "epochs": plan.max_epochs, "patience": plan.patience},
        },
        metrics={
            "test": evaluation.metrics.to_json(),
            "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss,
        },
        test_summary={
            name: value
            for name, value in flat_figures(evaluation.metrics.average).items()
            if name in SUMMARY_TAGS and math.isfinite(value)
        },
        context_tickers=list(built.spec.context_tickers),
        calibration=evaluation.calibration,
        baselines=evaluation.baselines,
    )
    checkpoint(settings, "train:after_register")
    run.set_tags({"stockcli.model_version": version})
    return version


def fit_baselines(
    settings: Settings, history: Mapping[str, pd.DataFrame], tickers: Sequence[str], *, through: date
) -> dict[str, Any]:
    """Every statistical candidate's parameters per ticker, fit on its bars up to `through`:
    `{"fits": {candidate: {ticker: params}}, "p_up_base", "p_up_base_horizons", "fit_through",
    "rolling_window"}`."""
    from stockcli.ml.forecasters import build_table, fit_all, ticker_bars
    from stockcli.ml.metrics import up_count

    table = build_table(settings)
    fits: dict[str, dict[str, Any]] = {name: {} for name in table}
    ups: dict[str, tuple[int, int]] = {}
    further = [h for h in settings.forecasters.horizons if h > 1]
    horizon_ups: dict[int, dict[str, tuple[int, int]]] = {h: {} for h in further}
    for ticker in tickers:
        frame = history.get(ticker)
        if frame is None or len(frame) < 3:
            continue
        through_rows = int((frame.index <= np.datetime64(through)).sum())
        bars = ticker_bars(history, ticker, settings.forecasters.har_market).head(through_rows)
        for name, params in fit_all(table, bars).items():
            if params is not None:
                fits[name][ticker] = params
        ups[ticker] = up_count(bars.returns)
        for horizon in further:
            horizon_ups[horizon][ticker] = up_count(bars.returns, horizon)
    return {
        "fits": fits,
        # P(up)'s naive forecast: the up-share of each ticker's training dates ("*": all pooled).
        "p_up_base": up_shares(ups),
        # The same at each horizon above 1: the up-share of its h-session returns over the same bars.
        "p_up_base_horizons": {str(h): up_shares(counts) for h, counts in horizon_ups.items()},
        "fit_through": through.isoformat(),
        "rolling_window": int(settings.intervals.baseline_window),
    }


def up_shares(ups: Mapping[str, tuple[int, int]]) -> dict[str, float]:
    """{ticker: ups / n} of `ups` ({ticker: (ups, n)}), and "*": every ticker's pooled."""
    up_all = sum(up for up, _ in ups.values())
    n_all = sum(n for _, n in ups.values())
    return {t: up / n for t, (up, n) in ups.items() if n} | ({"*": up_all / n_all} if n_all else {})


@dataclass(frozen=True)
class BaselineForecasts:
    """Every statistical candidate's forecasts on a window's rows."""

    quantiles: dict[str, np.ndarray]  # candidate -> (n, 5) closes
    p_ups: dict[str, np.ndarray | None]  # candidate -> (n,) the chance of an up session


def baseline_forecasts(
    settings: Settings, baselines: Mapping[str, Any], history: Mapping[str, pd.DataFrame], windows: Any
) -> BaselineForecasts:
    """Every statistical candidate's quantiles and P(up) on `windows`' rows, from the `fit_baselines`
    fits (a ticker without one is fit on its bars up to each row)."""
    from stockcli.ml.forecasters import build_table, bundle_fits, candidate_quantiles

    found = candidate_quantiles(
        build_table(settings),
        bundle_fits(baselines),
        history,
        list(windows.tickers),
        list(windows.base_dates),
        fit_missing=True,
        market=settings.forecasters.har_market,
    )
    base = np.asarray(windows.base_closes, dtype=np.float64)[:, None]
    return BaselineForecasts(
        quantiles={name: np.exp(got.quantiles) * base for name, got in found.items()},
        p_ups={name: got.p_up for name, got in found.items()},
    )


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
    windows: Any,
    *,
    tickers: list[str],
    predicted: np.ndarray,
    quantiles: np.ndarray,
    title: str,
) -> None:
    """One PNG per ticker in `folder`: actual close, the model's forecast with its 95% band, and naive."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    owners = np.asarray(windows.tickers)
    for ticker in tickers:
        rows = np.flatnonzero(owners == ticker)
        if len(rows) == 0:
            continue
        days = np.array([windows.target_dates[i] for i in rows], dtype="datetime64[D]")
        figure = Figure(figsize=(10, 4), dpi=100)
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        lower, upper = quantiles[rows, 0], quantiles[rows, -1]
        axes.fill_between(days, lower, upper, color="tab:blue", alpha=0.15, label="95% interval")
        axes.plot(days, windows.target_closes[rows], label="actual", color="black", linewidth=1.2)
        axes.plot(days, predicted[rows], label="model", color="tab:blue", linewidth=1.0)
        naive = windows.base_closes[rows]
        axes.plot(days, naive, label="naive (last close)", color="tab:orange", linewidth=0.8, alpha=0.8)
        axes.set(title=f"{ticker}: test-split next-session close ({title})", ylabel="close")
        axes.legend(loc="best")
        axes.grid(alpha=0.3)
        figure.autofmt_xdate()
        figure.tight_layout()
        figure.savefig(
            folder / f"test_{re.sub(r'[^A-Za-z0-9_.-]', '', ticker) or 'ticker'}.png", format="png"
        )
