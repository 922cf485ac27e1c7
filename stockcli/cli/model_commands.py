"""`train`, `promote` and `models`: model versions in the MLflow registry."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from stockcli import formats
from stockcli.choices import ModelType
from stockcli.cli import output
from stockcli.cli.state import RunIdOption, invocation, state

if TYPE_CHECKING:
    from stockcli.services.train import Evaluation, MetricBlock


# A MetricBlock's cells, one definition for `train`'s table (all of them) and `promote`'s.
BLOCK_CELLS: dict[str, Callable[[MetricBlock], str]] = {
    "MAE": lambda block: formats.number(block.model.mae, 3),
    "naive MAE": lambda block: formats.number(block.naive.mae, 3),
    "RMSE": lambda block: formats.number(block.model.rmse, 3),
    "naive RMSE": lambda block: formats.number(block.naive.rmse, 3),
    "MAPE": lambda block: formats.percent(block.model.mape),
    "naive MAPE": lambda block: formats.percent(block.naive.mape),
    "direction": lambda block: formats.percent(block.model.direction_accuracy, 1),
    "up days": lambda block: formats.percent(block.up_fraction, 1),
    "skill": lambda block: formats.percent(block.skill, 1),
    "80% cover": lambda block: formats.percent(block.intervals and block.intervals.coverage_80, 1),
    "95% cover": lambda block: formats.percent(block.intervals and block.intervals.coverage_95, 1),
    "Winkler 95": lambda block: formats.number(block.intervals and block.intervals.winkler_95, 4),
    "GARCH Winkler 95": lambda block: formats.number(
        getattr(block.baselines.get("garch"), "winkler_95", None), 4
    ),
}
PROMOTION_CELLS = ["MAE", "RMSE", "MAPE", "direction", "skill", "80% cover", "95% cover", "Winkler 95"]


def _block_row(labels: list[str], block: MetricBlock, cells: Iterable[str] = BLOCK_CELLS) -> list[str]:
    return [*labels, *(BLOCK_CELLS[name](block) for name in cells)]


SKILL_DIGITS = 1  # the skill column's precision: a skill that rounds to 0.0% there is a tie
VERDICT_WORDS = {
    "better": "better",
    "tie": "a tie within rounding",
    "worse": "WORSE",
    "unknown": "not measured",
}


def skill_verdict(skill: float | None) -> str:
    """`better`, `tie` (within the rounding of the skill shown) or `worse` than naive; `unknown` for no number."""
    finite = formats.finite(skill)
    if finite is None:
        return "unknown"
    shown = round(finite * 100, SKILL_DIGITS)
    return "tie" if shown == 0 else ("better" if shown > 0 else "worse")


def worse_than_naive_line(metrics: Evaluation) -> str:
    """A plain sentence comparing the model with the naive forecast on MAE, ticker by ticker, in the
    words the numbers allow: better, a tie within rounding, or WORSE."""
    verdicts: dict[str, list[str]] = {}
    for ticker, block in metrics.tickers.items():
        verdicts.setdefault(skill_verdict(block.skill), []).append(ticker)
    average = skill_verdict(metrics.average.skill)
    naive = "the naive forecast (next close = last close)"
    if set(verdicts) == {"better"} and average == "better":
        return f"The model beats {naive} on MAE for every ticker."
    if set(verdicts) == {"tie"} and average == "tie":
        return f"The model ties {naive} on MAE for every ticker (skill 0.0% within rounding): no better, no worse."
    parts = [f"{words} for {', '.join(verdicts[v])}" for v, words in VERDICT_WORDS.items() if v in verdicts]
    on_average = "a tie" if average == "tie" else VERDICT_WORDS[average]
    return f"Against {naive} on MAE the model is {'; '.join(parts)}; on average {on_average}."


def train(
    ctx: typer.Context,
    run_id: RunIdOption = None,
    model_type: Annotated[
        ModelType | None,
        typer.Option(
            "--model-type", help="Architecture (default: the tuned one, else [training] model_type)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Maximum epochs (default: [training] epochs).")
    ] = None,
) -> None:
    """Train on a built dataset, report test metrics next to naive, register a new model version.

    Never moves the Production alias: run `stockcli promote` for that.
    """
    from stockcli.services.runtime import pipeline_run
    from stockcli.services.train import train as train_service

    cli, settings, as_of = invocation(ctx)
    params = {"model_type": model_type} if model_type is not None else None
    with pipeline_run(settings, command="train", as_of=as_of) as run:
        with output.progress_bar("[bold]train[/] epochs", quiet=cli.json) as report:
            result = train_service(
                settings=settings,
                engine=run.engine,
                run_id=run_id,
                params=params,
                epochs=epochs,
                progress=None
                if report is None
                else lambda epoch, total, _, val_loss: report(f"val loss {val_loss:.5f}", epoch, total),
            )
        run.details.update(
            dataset_run_id=result.dataset_run_id,
            model_version=result.model_version,
            mlflow_run_id=result.mlflow_run_id,
        )
    if cli.json:
        output.emit("train", result)
        return
    _show_trained(result)


def _show_trained(result: Any) -> None:
    """The registered version, its test split next to naive, and what to run next."""
    stop = "early stop" if result.stopped_early else "no early stop"
    output.info(
        f"Registered model version {result.model_version} (MLflow run {result.mlflow_run_id}) from dataset "
        f"{result.dataset_run_id}: {result.params['model_type']}, {result.params_source} parameters, "
        f"best epoch {result.best_epoch} of {result.epochs_run} ({stop}), {result.samples_per_s:,.0f} samples/s, "
        f"{result.wall_s:.1f}s."
    )
    window = f"{result.test_start} .. {result.test_end}, {result.n_test} sessions"
    metrics = result.test_metrics
    output.table(
        f"Test split ({window}): model vs naive",
        ["ticker", *BLOCK_CELLS],
        [
            _block_row([label], block)
            for label, block in [*metrics.tickers.items(), ("average", metrics.average)]
        ],
        secondary=["RMSE", "naive RMSE", "MAPE", "naive MAPE", "up days", "80% cover"],
        caption="skill = 1 - MAE / naive MAE (above 0: better than naive). Direction of the naive forecast is "
        "50% by construction. Intervals calibrated on the validation split; Winkler in log-return units.",
    )
    output.info(worse_than_naive_line(metrics))
    output.info(
        f"Production is unchanged. Run `stockcli promote --version {result.model_version}` to compare and promote."
    )


def promotion_json(result: Any, *, alpha: float) -> dict[str, Any]:
    from stockcli.cli.results import PromotionDecisionJson, PromotionWindowJson

    return {
        "candidate": {"version": result.candidate_version, "metrics": result.candidate_metrics},
        "production": (
            {"version": result.production_version, "metrics": result.production_metrics}
            if result.production_version is not None
            else None
        ),
        "naive": result.candidate_metrics.naive_json(),
        "window": output.shaped(
            PromotionWindowJson, result, {"start": result.window_start, "end": result.window_end}
        ),
        "decision": output.shaped(
            PromotionDecisionJson,
            result,
            {
                "improvement_ci": [result.improvement_low, result.improvement_high],
                "test": "one-sided Diebold-Mariano (HAC variance), candidate better than Production",
                "alpha": alpha,
            },
        ),
        "selection": {"version": result.selection_version, "tickers": result.selection},
    }


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
    """Test a candidate against Production on one window; promote only if significantly better."""
    from stockcli.notify import notify_run, promotion_message
    from stockcli.services.promote import promote as promote_service
    from stockcli.services.runtime import pipeline_run

    cli, settings, as_of = invocation(ctx)
    with pipeline_run(settings, command="promote", as_of=as_of) as run:
        with output.status("promote: evaluating the candidate and Production on one window", quiet=cli.json):
            result = promote_service(
                settings=settings,
                engine=run.engine,
                version=version,
                dry_run=dry_run,
                pipeline_run_id=run.run_id,
            )
        run.details.update(
            candidate_version=result.candidate_version,
            production_version=result.production_version,
            promoted=result.promoted,
            dry_run=result.dry_run,
        )
        if result.promoted:
            notify_run(
                run,
                [
                    promotion_message(
                        result.candidate_version,
                        reason=result.reason,
                        p_value=result.p_value,
                        trigger="stockcli promote",
                        previous=result.production_version,
                    )
                ],
            )
    if cli.json:
        output.emit("promote", **promotion_json(result, alpha=settings.promotion.alpha))
        return
    _show_promotion(result, settings.promotion)


def _show_promotion(result: Any, promotion: Any) -> None:
    """The candidate, Production, naive and GARCH on the one window, what the candidate serves per
    ticker, and the decision."""
    output.table(
        f"Same window: {result.window_start} .. {result.window_end} ({result.n_days} sessions, "
        f"{', '.join(result.tickers)}), averaged over tickers",
        ["forecast", "version", *PROMOTION_CELLS],
        _promotion_rows(result),
        secondary=["RMSE", "MAPE", "direction"],
        caption=f"Decided on {result.metric.upper()} by a one-sided Diebold-Mariano test at alpha "
        f"{promotion.alpha:g}; min improvement {promotion.min_improvement:.2%}.",
    )
    if result.selection:
        output.records(
            f"What version {result.selection_version} serves per ticker (tested on this window)",
            (
                ("ticker", lambda item: "unseen tickers" if item["ticker"] == "*" else item["ticker"]),
                ("point", lambda item: item["point_source"]),
                ("p (model < naive)", lambda item: output.p_value(item.get("point_p_value"))),
                ("interval", lambda item: item["interval_source"]),
                ("p (interval test)", lambda item: output.p_value(item.get("interval_p_value"))),
            ),
            [{**item, "ticker": ticker} for ticker, item in result.selection.items()],
        )
    if result.promoted:
        output.info(f"Promoted version {result.candidate_version} to Production. {result.reason}")
    else:
        output.info(f"Not promoted. {result.reason}")


def _promotion_rows(result: Any) -> list[list[str]]:
    """The candidate, Production (when there is one), naive and GARCH (when fitted), averaged."""
    average = result.candidate_metrics.average
    rows = [_block_row(["candidate", result.candidate_version], average, PROMOTION_CELLS)]
    if result.production_metrics is not None:
        production = result.production_metrics.average
        rows.append(_block_row(["production", result.production_version or "-"], production, PROMOTION_CELLS))
    # Naive's figures in the model's place, its skill 0 by definition; GARCH has intervals only.
    naive = dataclasses.replace(average, model=average.naive, skill=0.0, intervals=None)
    rows.append(_block_row(["naive", "-"], naive, PROMOTION_CELLS))
    garch = average.baselines.get("garch")
    if garch is not None:
        garch_block = dataclasses.replace(average, intervals=garch)
        rows.append(_block_row(["GARCH(1,1)-t", *["-"] * 6], garch_block, PROMOTION_CELLS[-3:]))
    return rows


def models(ctx: typer.Context) -> None:
    """List registered model versions: aliases, test metrics next to naive, dataset, creation time."""
    from stockcli.services.models import list_versions

    cli = state(ctx)
    settings = cli.settings()
    versions = list_versions(settings)
    if cli.json:
        output.emit("models", model=settings.mlflow.model_name, versions=versions)
        return
    if not versions:
        output.info(f"No versions of model {settings.mlflow.model_name!r} yet. Run `stockcli train` first.")
        return
    output.records(
        f"Model {settings.mlflow.model_name}",
        (
            ("version", lambda info: info.version),
            ("aliases", lambda info: ", ".join(info.aliases)),
            ("created (UTC)", lambda info: info.created_at.strftime("%Y-%m-%d %H:%M")),
            ("type", lambda info: info.model_type or ""),
            ("dataset", lambda info: info.dataset_run_id or ""),
            ("test MAE", lambda info: formats.number(info.test_metrics.get("mae"), 3)),
            ("naive MAE", lambda info: formats.number(info.test_metrics.get("naive_mae"), 3)),
            ("test MAPE", lambda info: formats.percent(info.test_metrics.get("mape"))),
            ("skill", lambda info: formats.percent(info.test_metrics.get("skill"), 1)),
        ),
        versions,
        caption="Test metrics on each version's own test split (not comparable across datasets; `promote` compares on one window).",
    )
    for info in versions:
        if info.note:
            output.warn(f"Version {info.version}: {info.note}")
