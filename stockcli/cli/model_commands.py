"""`train`, `promote` and `models`: model versions in the MLflow registry."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from stockcli.cli import output
from stockcli.cli.app import app, state


class ModelType(StrEnum):
    lstm = "lstm"
    lstm_attention = "lstm_attention"
    lstm_cross_attention = "lstm_cross_attention"


def metrics_rows(metrics: dict[str, Any]) -> list[list[str]]:
    """One row per ticker and one for the average: model next to naive, then skill."""

    def row(label: str, block: dict[str, Any]) -> list[str]:
        model, naive = block["model"], block["naive"]
        return [
            label,
            output.fmt_float(model["mae"], 3),
            output.fmt_float(naive["mae"], 3),
            output.fmt_float(model["rmse"], 3),
            output.fmt_float(naive["rmse"], 3),
            output.fmt_pct(model["mape"]),
            output.fmt_pct(naive["mape"]),
            output.fmt_pct(model["directional_accuracy"], 1),
            output.fmt_pct(block.get("up_fraction"), 1),
            output.fmt_pct(block["skill"], 1),
        ]

    rows = [row(ticker, block) for ticker, block in metrics["tickers"].items()]
    rows.append(row("average", metrics["average"]))
    return rows


METRIC_COLUMNS = [
    "ticker",
    "MAE",
    "naive MAE",
    "RMSE",
    "naive RMSE",
    "MAPE",
    "naive MAPE",
    "direction",
    "up days",
    "skill",
]


def worse_than_naive_line(metrics: dict[str, Any]) -> str:
    """A plain sentence saying where the model's MAE is above the naive forecast's."""
    worse = [
        ticker
        for ticker, block in metrics["tickers"].items()
        if block["model"]["mae"] is not None
        and block["naive"]["mae"] is not None
        and block["model"]["mae"] > block["naive"]["mae"]
    ]
    average = metrics["average"]
    if not worse:
        return "The model beats the naive forecast (next close = last close) on MAE for every ticker."
    overall = (
        " and on average"
        if average["skill"] is not None and average["skill"] < 0
        else ", though not on average"
    )
    return (
        f"The model is WORSE than the naive forecast (next close = last close) on MAE for "
        f"{', '.join(worse)}{overall}."
    )


@app.command()
def train(
    ctx: typer.Context,
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Dataset to train on (default: the newest processed one).")
    ] = None,
    model_type: Annotated[
        ModelType | None,
        typer.Option(
            "--model-type", help="Architecture (default: the tuned one, else \\[training] model_type)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Maximum epochs (default: \\[training] epochs).")
    ] = None,
) -> None:
    """Train on a built dataset, report test metrics next to naive, register a new model version.

    Never moves the Production alias: run `stockcli promote` for that.
    """
    from stockcli.services.runtime import pipeline_run
    from stockcli.services.train import train as train_service

    cli = state(ctx)
    settings = cli.settings()
    as_of = cli.as_of(settings)
    params = {"model_type": model_type.value} if model_type is not None else None
    with pipeline_run(settings, command="train", as_of=as_of) as run:
        if cli.json:
            result = train_service(
                settings=settings, engine=run.engine, run_id=run_id, params=params, epochs=epochs
            )
        else:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("epochs  {task.description}"),
                TimeElapsedColumn(),
                console=output.error_console,
                transient=True,
                disable=not output.error_console.is_terminal,
            ) as bar:
                task = bar.add_task("", total=None)

                def progress(epoch: int, total: int, train_loss: float, val_loss: float) -> None:
                    bar.update(task, completed=epoch, total=total, description=f"val loss {val_loss:.5f}")

                result = train_service(
                    settings=settings,
                    engine=run.engine,
                    run_id=run_id,
                    params=params,
                    epochs=epochs,
                    progress=progress,
                )
        run.details.update(
            {
                "dataset_run_id": result.dataset_run_id,
                "model_version": result.model_version,
                "mlflow_run_id": result.mlflow_run_id,
            }
        )
    if cli.json:
        output.emit_json(result)
        return
    stop = "early stop" if result.stopped_early else "no early stop"
    output.info(
        f"Registered model version {result.model_version} (MLflow run {result.mlflow_run_id}) from dataset "
        f"{result.dataset_run_id}: {result.params['model_type']}, {result.params_source} parameters, "
        f"best epoch {result.best_epoch} of {result.epochs_run} ({stop}), {result.samples_per_s:,.0f} samples/s, "
        f"{result.wall_s:.1f}s."
    )
    window = f"{result.test_start} .. {result.test_end}, {result.n_test} sessions"
    output.table(
        f"Test split ({window}): model vs naive",
        METRIC_COLUMNS,
        metrics_rows(result.test_metrics),
        caption="skill = 1 - MAE / naive MAE (above 0: better than naive). Direction of the naive forecast is 50% by construction.",
    )
    output.info(worse_than_naive_line(result.test_metrics))
    output.info(
        f"Production is unchanged. Run `stockcli promote --version {result.model_version}` to compare and promote."
    )


def promotion_json(result: Any) -> dict[str, Any]:
    return {
        "candidate": {"version": result.candidate_version, "metrics": result.candidate_metrics},
        "production": (
            {"version": result.production_version, "metrics": result.production_metrics}
            if result.production_version is not None
            else None
        ),
        "naive": result.naive_metrics,
        "window": {
            "start": result.window_start,
            "end": result.window_end,
            "n_days": result.n_days,
            "tickers": list(result.tickers),
            "dataset_run_id": result.dataset_run_id,
        },
        "decision": {
            "metric": result.metric,
            "candidate_value": result.candidate_value,
            "production_value": result.production_value,
            "naive_value": result.naive_value,
            "improvement": result.improvement,
            "would_promote": result.would_promote,
            "promoted": result.promoted,
            "dry_run": result.dry_run,
            "reason": result.reason,
            "promotion_id": result.promotion_id,
        },
    }


@app.command()
def promote(
    ctx: typer.Context,
    version: Annotated[
        str | None,
        typer.Option("--version", help="Candidate version (default: the newest).", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Decide and record, but do not move the alias.")
    ] = False,
) -> None:
    """Compare a candidate with Production on the candidate's test window; promote if better."""
    from stockcli.services.promote import promote as promote_service
    from stockcli.services.runtime import pipeline_run

    cli = state(ctx)
    settings = cli.settings()
    as_of = cli.as_of(settings)
    with pipeline_run(settings, command="promote", as_of=as_of) as run:
        if cli.json:
            result = promote_service(
                settings=settings,
                engine=run.engine,
                version=version,
                dry_run=dry_run,
                pipeline_run_id=run.run_id,
            )
        else:
            with _status("promote: evaluating the candidate and Production on one window"):
                result = promote_service(
                    settings=settings,
                    engine=run.engine,
                    version=version,
                    dry_run=dry_run,
                    pipeline_run_id=run.run_id,
                )
        run.details.update(
            {
                "candidate_version": result.candidate_version,
                "production_version": result.production_version,
                "promoted": result.promoted,
                "dry_run": result.dry_run,
            }
        )
    if cli.json:
        output.emit_json(promotion_json(result))
        return
    metric = result.metric
    rows = [
        [
            "candidate",
            result.candidate_version,
            *_block_cells(result.candidate_metrics["average"]["model"]),
            output.fmt_pct(result.candidate_metrics["average"]["skill"], 1),
        ]
    ]
    if result.production_metrics is not None:
        rows.append(
            [
                "production",
                result.production_version or "-",
                *_block_cells(result.production_metrics["average"]["model"]),
                output.fmt_pct(result.production_metrics["average"]["skill"], 1),
            ]
        )
    rows.append(["naive", "-", *_block_cells(result.naive_metrics["average"]), "0.0%"])
    output.table(
        f"Same window: {result.window_start} .. {result.window_end} ({result.n_days} sessions, "
        f"{', '.join(result.tickers)}), averaged over tickers",
        ["forecast", "version", "MAE", "RMSE", "MAPE", "direction", "skill"],
        rows,
        caption=f"Decided on {metric.upper()}; min improvement {settings.promotion.min_improvement:.2%}.",
    )
    if result.promoted:
        output.info(f"Promoted version {result.candidate_version} to Production. {result.reason}")
    else:
        output.info(f"Not promoted. {result.reason}")


def _status(message: str) -> Any:
    """A spinner on stderr when it is a terminal; nothing under cron or in a pipe."""
    import contextlib

    if not output.error_console.is_terminal:
        return contextlib.nullcontext()
    return output.error_console.status(message)


def _block_cells(block: dict[str, Any]) -> list[str]:
    return [
        output.fmt_float(block["mae"], 3),
        output.fmt_float(block["rmse"], 3),
        output.fmt_pct(block["mape"]),
        output.fmt_pct(block["directional_accuracy"], 1),
    ]


@app.command()
def models(ctx: typer.Context) -> None:
    """List registered model versions: aliases, test metrics next to naive, dataset, creation time."""
    from stockcli.ml import registry

    cli = state(ctx)
    settings = cli.settings()
    versions = registry.list_versions(settings)
    if cli.json:
        output.emit_json({"model": settings.mlflow.model_name, "versions": versions})
        return
    if not versions:
        output.info(f"No versions of model {settings.mlflow.model_name!r} yet. Run `stockcli train` first.")
        return
    rows = [
        [
            info.version,
            ", ".join(info.aliases),
            info.created_at.strftime("%Y-%m-%d %H:%M"),
            info.model_type or "",
            info.dataset_run_id or "",
            output.fmt_float(info.test_metrics.get("mae"), 3),
            output.fmt_float(info.test_metrics.get("naive_mae"), 3),
            output.fmt_pct(info.test_metrics.get("mape")),
            output.fmt_pct(info.test_metrics.get("skill"), 1),
        ]
        for info in versions
    ]
    output.table(
        f"Model {settings.mlflow.model_name}",
        [
            "version",
            "aliases",
            "created (UTC)",
            "type",
            "dataset",
            "test MAE",
            "naive MAE",
            "test MAPE",
            "skill",
        ],
        rows,
        caption="Test metrics on each version's own test split (not comparable across datasets; `promote` compares on one window).",
    )
