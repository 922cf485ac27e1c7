"""What every writing command does around its work: schema up to date, the run lock, a ledger row.

The CLI, the daemon and `backtest` all enter runs through `pipeline_run`, so they share one lock and
one ledger.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError

from stockcli import interrupts, testhooks
from stockcli.config import Settings
from stockcli.db import lock, store
from stockcli.db.engine import open_database, run_failure_error
from stockcli.errors import PartialFailure, StockCliError


@dataclass
class RunHandle:
    """A run in progress: its engine, as-of date and ledger id. `details` go to the ledger."""

    settings: Settings
    engine: Engine
    command: str
    as_of: date
    run_id: int
    details: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None  # why a run that ends without an exception did not succeed
    warnings: list[str] = field(default_factory=list)  # e.g. a notification not delivered


def _close_dead_mlflow_runs(settings: Settings) -> None:
    """Mark MLflow runs of killed processes KILLED and their versions never evaluated; never raises."""
    import logging

    from stockcli.ml import registry

    log = logging.getLogger(__name__)
    try:
        for version in registry.mark_unevaluated(settings, registry.close_dead_runs(settings)):
            log.warning(
                "Model version %s was registered by a run killed before its promotion decision: it was "
                "never evaluated. Run `stockcli promote --version %s` to evaluate it.",
                version,
                version,
            )
    except StockCliError as exc:
        log.warning("Could not close the MLflow runs of killed runs: %s", exc)


def checkpoint(settings: Settings, name: str) -> None:
    """A point between steps: a swallowed Ctrl-C is raised again, a run that lost its lock stops
    (LockLostError, exit 5), and the crash tests kill the process here."""
    interrupts.raise_if_requested()
    lock.ensure_held()
    testhooks.kill_if_requested(name)


@contextlib.contextmanager
def pipeline_run(
    settings: Settings, *, command: str, as_of: date, engine: Engine | None = None, shared_lock: bool = False
) -> Iterator[RunHandle]:
    """Open the database (upgrading the schema), take the run lock and record the run in the ledger.

    `shared_lock`: runs of this kind (the workers of one `tune` study) may overlap each other.
    """
    owned = engine is None
    engine = engine or open_database(settings)
    try:
        with _locked_run(settings, engine, command=command, as_of=as_of, shared_lock=shared_lock) as handle:
            yield handle
    except (DatabaseError, OSError) as exc:  # a damaged file or a full disk says so, naming the file
        described = run_failure_error(settings, exc)
        if described is None:
            raise
        raise described from exc
    finally:
        if owned:  # a long-lived process (the daemon) must not keep one connection pool per run
            engine.dispose()


@contextlib.contextmanager
def _locked_run(
    settings: Settings, engine: Engine, *, command: str, as_of: date, shared_lock: bool
) -> Iterator[RunHandle]:
    with lock.run_lock(engine, settings.data_dir / lock.LOCK_FILE, command, shared=shared_lock) as held:
        if not shared_lock and store.mark_interrupted(engine):
            # Only an exclusive holder knows `running` rows are dead; close their MLflow runs now too.
            _close_dead_mlflow_runs(settings)
        handle: RunHandle | None = None
        try:
            # A stop request while the row is written is raised just after, here, where it is closed:
            # raised in between (e.g. while PostgreSQL confirms the commit), it left the row `running`.
            with interrupts.deferred():
                run_id = store.start_run(engine, command=command, as_of=as_of)
                handle = RunHandle(
                    settings=settings, engine=engine, command=command, as_of=as_of, run_id=run_id
                )
            interrupts.raise_if_requested()
            with lock.guard_commits(engine, held):  # every commit of a step checks the lock is still ours
                yield handle
                lock.ensure_held()
            interrupts.raise_if_requested()  # a Ctrl-C swallowed on the way is still not a success
        except StockCliError as exc:
            status = "partial" if isinstance(exc, PartialFailure) else "failed"
            _finish(handle, status=status, error=exc.message)
            raise
        except KeyboardInterrupt:  # SIGINT / SIGTERM: stopped on purpose, not a failure (exit 130 / 143)
            error = f"Interrupted ({interrupts.describe()}) before the run finished."
            _finish(handle, status="interrupted", error=error)
            raise
        except BaseException as exc:
            described = run_failure_error(settings, exc)
            error = described.message if described is not None else f"{type(exc).__name__}: {exc}"
            _finish(handle, status="failed", error=error)
            if described is not None:
                raise described from exc
            raise
        else:
            store.finish_run(
                engine,
                handle.run_id,
                status=handle.status,
                error=handle.error,
                details=handle.details,
                warnings=handle.warnings,
            )


def _finish(handle: RunHandle | None, *, status: str, error: str | None) -> None:
    """Close the ledger row of a run that did not succeed; never raises. On failure (a full disk) it
    tries again with the status and the error's first line alone, which fit where the row already is."""
    if handle is None:  # the row was never written
        return
    engine, run_id = handle.engine, handle.run_id
    try:
        store.finish_run(
            engine, run_id, status=status, error=error, details=handle.details, warnings=handle.warnings
        )
    except Exception:
        short = error.splitlines()[0][:300] if error else None
        with contextlib.suppress(Exception):
            store.finish_run(engine, run_id, status=status, error=short, details=None)
