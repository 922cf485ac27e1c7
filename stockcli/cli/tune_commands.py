"""`stockcli tune`: hyper-parameter search on a built dataset's validation split."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from stockcli.cli import output
from stockcli.cli.state import RunIdOption, invocation


def tune_command(
    ctx: typer.Context,
    n_trials: Annotated[
        int | None,
        typer.Option(
            "--n-trials",
            min=1,
            help="Finished trials the study should hold (default [tuning] n_trials); a rerun only runs what is missing.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=0.0,
            help="Stop starting new trials after this many seconds (default [tuning] timeout_s; 0: no limit).",
            show_default=False,
        ),
    ] = None,
    run_id: RunIdOption = None,
) -> None:
    """Search hyper-parameters (Optuna, pruned, resumable); save the best ones for `train`.

    Several `stockcli tune` processes pointed at one PostgreSQL `[tuning] storage_url` work on the
    same study together.
    """
    from stockcli.services.runtime import pipeline_run
    from stockcli.services.tune import tune

    cli, settings, as_of = invocation(ctx)
    target = n_trials if n_trials is not None else settings.tuning.n_trials
    # Tune workers share the run lock with each other (one study, many workers) but not with
    # other commands.
    with (
        pipeline_run(settings, command="tune", as_of=as_of, shared_lock=True) as run,
        output.progress_bar("tune", quiet=cli.json, total=target) as report,
    ):

        def progress(trial_number: int, best_value: float | None) -> None:
            # Trial numbers count every trial of the study (all workers), so they track its progress.
            if report is not None:
                best = "none yet" if best_value is None else f"{best_value:.6g}"
                report(f"best validation loss {best}", min(trial_number + 1, target), target)

        result = tune(
            settings=settings,
            engine=run.engine,
            run_id=run_id,
            n_trials=n_trials,
            timeout_s=timeout,
            progress=None if report is None else progress,
        )
        run.details.update(
            dataset_run_id=result.run_id,
            study=result.study_name,
            n_trials=result.n_trials,
            n_run=result.n_run,
            best_value=result.best_value,
        )
    if cli.json:
        output.emit("tune", result, status="ok")
        return
    _show(result)


def _show(result: Any) -> None:
    output.table(
        f"Study {result.study_name} (dataset {result.run_id})",
        ["trials", "complete", "pruned", "failed", "run now", "best validation loss", "best trial", "wall s"],
        [
            [
                result.n_trials,
                result.n_complete,
                result.n_pruned,
                result.n_failed,
                result.n_run,
                "-" if result.best_value is None else f"{result.best_value:.6g}",
                "-" if result.best_trial_number is None else result.best_trial_number,
                f"{result.wall_s:.1f}",
            ]
        ],
        caption=f"Storage {result.storage}",
    )
    if result.best_value is None:
        output.warn(
            "No trial completed, so no parameters were saved. Run `stockcli tune` again with more trials."
        )
        return
    output.table(
        "Best parameters (saved for `stockcli train`)",
        ["parameter", "value"],
        [
            [name, f"{value:.4g}" if isinstance(value, float) else value]
            for name, value in result.best_params.items()
        ],
    )
