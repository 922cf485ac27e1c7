"""Fault class: runs stopped from outside. Ctrl-C (SIGINT) or SIGTERM ends a run with exit 130 or 143 and an `interrupted`
ledger row (not `failed: KeyboardInterrupt`), its MLflow run KILLED; the MLflow run of a process killed
by SIGKILL is closed by the next run instead of staying RUNNING forever, while runs of live processes
and of other hosts are left alone. Nothing else changes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.faults.checks import table_state
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    Workspace,
    bars_digest,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    bootstrapped_workspace,
    ledger,
    new_workspace,
    predictions,
    production,
    running_row_of,
    stop,
    versions,
    wait_for,
    weights_sha,
)
from tests.ledger import recent_runs

INTERRUPTED = 130
TERMINATED = 143  # 128 + SIGTERM, as shells report a process stopped by it


def without_ledger(state: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {name: value for name, value in state.items() if name != "pipeline_runs"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the workspace's own SQLite file; else a fresh PostgreSQL schema."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


def mlflow_runs(workspace: Workspace) -> dict[str, tuple[str, dict[str, str]]]:
    """run id -> (status, tags) of every MLflow run of the workspace's experiment."""
    from stockcli.ml import registry

    settings = workspace.settings()
    runs = registry.client(settings).search_runs([registry._experiment_id(settings)], max_results=1000)
    return {run.info.run_id: (run.info.status, dict(run.data.tags)) for run in runs}


@pytest.mark.parametrize(
    ("stop_signal", "said", "exit_code"),
    [(signal.SIGINT, "SIGINT / Ctrl-C", INTERRUPTED), (signal.SIGTERM, "SIGTERM", TERMINATED)],
)
def test_sigint_or_sigterm_marks_the_ledger_interrupted_and_exits_130_or_143(
    tmp_path: Path,
    database: str | None,
    tmp_path_factory: pytest.TempPathFactory,
    stop_signal: signal.Signals,
    said: str,
    exit_code: int,
) -> None:
    workspace = new_workspace(tmp_path / "ws", database_url=database)
    assert ledger(workspace.engine) == []  # the schema exists before the run starts: no migration race
    process = workspace.popen("--as-of", BOOTSTRAP_AS_OF, "daily")  # bootstraps a model: long enough
    try:
        wait_for(lambda: running_row_of(workspace.engine, process.pid), timeout_s=120)
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=120)
    finally:
        stop(process)
    assert process.returncode == exit_code, stderr
    assert f"Interrupted ({said})." in stderr and "Traceback" not in stderr
    assert ledger(workspace.engine) == [(1, "daily", "interrupted")]
    assert said in recent_runs(workspace.engine)[0].error

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "fetch")  # the next run keeps the row as it is
    assert rerun.exit_code == 0, rerun.output
    assert ledger(workspace.engine) == [(1, "daily", "interrupted"), (2, "fetch", "ok")]
    reference = bootstrapped_workspace(tmp_path_factory)
    assert bars_digest(workspace.engine) == bars_digest(reference.engine)  # nothing half-stored
    workspace.close()


def slow_training(workspace: Workspace) -> None:
    """Let `train` run long enough to be interrupted in the middle (no early stop)."""
    text = workspace.config_path.read_text().replace("patience = 2", "patience = 10000")
    workspace.config_path.write_text(text)


def test_a_ctrl_c_swallowed_on_the_way_is_raised_again_and_the_run_is_interrupted(
    tmp_path: Path, database: str | None
) -> None:
    """SIGINT becomes a KeyboardInterrupt wherever the main thread is; C code that clears pending
    errors (an extension module being imported) or a library's catch-all can swallow it. The
    remembered request is raised again at the next checkpoint and before the run records success."""
    from datetime import date

    from stockcli import interrupts
    from stockcli.services.runtime import checkpoint, pipeline_run

    workspace = new_workspace(tmp_path / "ws", database_url=database)
    settings = workspace.settings()

    def swallowed_ctrl_c() -> None:
        # What the catch-all, or C code clearing the error, does with it.
        with contextlib.suppress(KeyboardInterrupt):
            interrupts._on_sigint(signal.SIGINT, None)

    try:
        with (
            pytest.raises(KeyboardInterrupt),
            pipeline_run(settings, command="fetch", as_of=date(2013, 2, 1)),
        ):
            swallowed_ctrl_c()  # the body then ends normally...
        assert ledger(workspace.engine) == [(1, "fetch", "interrupted")]  # ...but it was no success

        with (
            pytest.raises(KeyboardInterrupt),
            pipeline_run(settings, command="process", as_of=date(2013, 2, 1)),
        ):
            checkpoint(settings, "process:between_steps")  # still asked: the next checkpoint stops
        interrupts.handled()  # the CLI reported it
        with pipeline_run(settings, command="fetch", as_of=date(2013, 2, 1)):
            checkpoint(settings, "fetch:between_steps")  # nothing asked any more
    finally:
        interrupts.handled()
    assert ledger(workspace.engine) == [
        (1, "fetch", "interrupted"),
        (2, "process", "interrupted"),
        (3, "fetch", "ok"),
    ]


def test_a_signal_while_the_ledger_row_is_written_still_closes_it(
    tmp_path: Path, database: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM right after the `running` row is committed (while PostgreSQL confirms the commit, say)
    is raised where the row is closed, not before: the row says `interrupted`, never `running`."""
    from datetime import date

    from stockcli import interrupts
    from stockcli.db import store
    from stockcli.services.runtime import pipeline_run

    workspace = new_workspace(tmp_path / "ws", database_url=database)
    real_start_run = store.start_run

    def start_run_then_signal(*args: Any, **kwargs: Any) -> int:
        run_id = real_start_run(*args, **kwargs)
        interrupts._on_sigint(signal.SIGTERM, None)  # what the handler does when the signal lands here
        return run_id

    monkeypatch.setattr(store, "start_run", start_run_then_signal)
    body_ran = []
    try:
        with (
            pytest.raises(KeyboardInterrupt),
            pipeline_run(workspace.settings(), command="fetch", as_of=date(2013, 2, 1)),
        ):
            body_ran.append(True)
    finally:
        interrupts.handled()
    assert body_ran == []  # stopped before the run's work began
    assert ledger(workspace.engine) == [(1, "fetch", "interrupted")]


def test_a_deferred_stop_stays_a_stop() -> None:
    """Inside `interrupts.deferred()` the first signal waits for the block's end, a second one stops
    the block at once (a hung connection stays stoppable), and a block failing after a request ends
    as the interrupt, not as its own error."""
    from stockcli import interrupts

    try:
        with interrupts.deferred():
            interrupts._on_sigint(signal.SIGTERM, None)  # remembered only
            with pytest.raises(KeyboardInterrupt):
                interrupts._on_sigint(signal.SIGTERM, None)  # the second one raises
        with pytest.raises(KeyboardInterrupt), interrupts.deferred():
            raise OSError("the commit failed")  # a stop was asked: that wins
        interrupts.handled()
        with pytest.raises(OSError), interrupts.deferred():
            raise OSError("the commit failed")  # nothing asked: the error is the error
    finally:
        interrupts.handled()


@pytest.mark.parametrize(
    ("stop_signal", "exit_code"), [(signal.SIGINT, INTERRUPTED), (signal.SIGTERM, TERMINATED)]
)
def test_sigint_or_sigterm_during_training_closes_its_mlflow_run_as_killed(
    bootstrapped: Workspace, stop_signal: signal.Signals, exit_code: int
) -> None:
    slow_training(bootstrapped)
    before = without_ledger(table_state(bootstrapped.engine))
    known = set(mlflow_runs(bootstrapped))
    process = bootstrapped.popen("--as-of", BOOTSTRAP_AS_OF, "train", "--epochs", "100000")
    try:
        new_run = wait_for(lambda: set(mlflow_runs(bootstrapped)) - known, timeout_s=120)
        process.send_signal(stop_signal)
        _, stderr = process.communicate(timeout=120)
    finally:
        stop(process)
    assert process.returncode == exit_code, stderr
    [run_id] = new_run
    status, tags = mlflow_runs(bootstrapped)[run_id]
    assert status == "KILLED" and tags["stockcli.pid"] == str(process.pid)
    assert ledger(bootstrapped.engine)[-1][1:] == ("train", "interrupted")
    assert versions(bootstrapped) == ["1"] and production(bootstrapped) == "1"
    assert without_ledger(table_state(bootstrapped.engine)) == before


def test_the_mlflow_run_of_a_killed_training_is_closed_by_the_next_run(bootstrapped: Workspace) -> None:
    before_predictions = predictions(bootstrapped.engine, with_version=True)
    before_weights = weights_sha(bootstrapped, "1")
    known = set(mlflow_runs(bootstrapped))
    crashed = bootstrapped.run("--as-of", BOOTSTRAP_AS_OF, "train", kill_at="train:before_register")
    assert crashed.returncode == -9, crashed.stderr
    [run_id] = set(mlflow_runs(bootstrapped)) - known
    assert mlflow_runs(bootstrapped)[run_id][0] == "RUNNING"  # what SIGKILL leaves behind

    nxt = bootstrapped.cli("--as-of", BOOTSTRAP_AS_OF, "predict")  # any next run, not only a training

    assert nxt.exit_code == 0, nxt.output
    assert mlflow_runs(bootstrapped)[run_id][0] == "KILLED"
    assert [row[1:] for row in ledger(bootstrapped.engine)[-2:]] == [
        ("train", "interrupted"),
        ("predict", "ok"),
    ]
    assert versions(bootstrapped) == ["1"] and production(bootstrapped) == "1"
    assert weights_sha(bootstrapped, "1") == before_weights
    assert predictions(bootstrapped.engine, with_version=True) == before_predictions


def test_runs_of_live_processes_and_other_hosts_are_never_closed(bootstrapped: Workspace) -> None:
    from stockcli.ml import registry

    settings = bootstrapped.settings()
    client = registry.client(settings)
    experiment = registry._experiment_id(settings)
    live = subprocess.Popen(["sleep", "120"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    try:
        host = socket.gethostname()
        cases: dict[str, dict[str, Any]] = {
            "live worker": {"stockcli.host": host, "stockcli.pid": str(live.pid)},
            "this process": {"stockcli.host": host, "stockcli.pid": str(os.getpid())},
            "other host": {"stockcli.host": f"not-{host}", "stockcli.pid": str(dead.pid)},
            "no process tags": {},
            "dead process": {"stockcli.host": host, "stockcli.pid": str(dead.pid)},
        }
        ids = {
            name: client.create_run(experiment, run_name=name, tags=tags).info.run_id
            for name, tags in cases.items()
        }

        closed = registry.close_dead_runs(settings)

        assert closed == [ids["dead process"]]
        statuses = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
        assert statuses == {
            "live worker": "RUNNING",
            "this process": "RUNNING",
            "other host": "RUNNING",
            "no process tags": "RUNNING",
            "dead process": "KILLED",
        }
    finally:
        live.kill()
        live.wait()
