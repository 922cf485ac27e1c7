"""Whole-pipeline workspaces for the crash, concurrency, registry and daemon fault tests.

A workspace is a folder holding a tiny-budget `config.toml` and its data dir (SQLite database, MLflow
store, Optuna storage). One workspace is bootstrapped per test session (`stockcli --as-of 2013-02-01
daily`: fetch, process, build, tune, train, promote, predict) and each test works on its own copy, so
the expensive bootstrap runs once. MLflow stores absolute artifact paths, so a copy rewrites them to
point into the copy (nothing a test does in its copy reaches the original).

`Workspace.run` starts the real `python -m stockcli` in a subprocess (optionally killed by SIGKILL at
a named checkpoint through `STOCKCLI_KILL_AT`); `Workspace.cli` runs the same app in-process (cheap
re-runs: torch and mlflow are imported once).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from stockcli.config import Settings, load_settings
from stockcli.db.engine import open_database
from stockcli.db.models import (
    Dataset,
    LatestPrediction,
    PipelineRun,
    Promotion,
    RawStockData,
    ScaledFeatureSet,
)
from tests.conftest import Cli

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP_AS_OF = "2013-02-01"  # a Friday: its predictions target Monday 2013-02-04
NEXT_AS_OF = "2013-02-04"

TINY_CONFIG = """\
[storage]
data_dir = "data"
{database_line}
[data]
tickers = ["GOOG", "MSFT"]
start = 2011-06-01
[features]
indicators = [{{ name = "rsi", window = 14 }}, {{ name = "log_return" }}, {{ name = "sma", window = 10 }}]
[dataset]
sequence_length = 10
[training]
hidden_size = 8
epochs = 3
patience = 2
batch_size = 32
num_heads = 2
[tuning]
n_trials = 2
epochs = 2
{extra}
"""


def config_text(database_url: str | None = None, extra: str = "") -> str:
    line = f'database_url = "{database_url}"' if database_url else ""
    return TINY_CONFIG.format(database_line=line, extra=extra)


@dataclass
class Workspace:
    """A config file and its data dir; `settings`, `engine` and runs of the real CLI."""

    root: Path
    _engine: Engine | None = field(default=None, repr=False)

    @property
    def config_path(self) -> Path:
        return self.root / "config.toml"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    def settings(self) -> Settings:
        return load_settings(self.config_path, environ={})

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_database(self.settings())
        return self._engine

    def env(self, kill_at: str | None = None, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
        env.update({"STOCKCLI_CONFIG": str(self.config_path), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
        if kill_at:
            env["STOCKCLI_KILL_AT"] = kill_at
        env.update(extra)
        return env

    def run(
        self,
        *args: str,
        kill_at: str | None = None,
        timeout_s: float = 120,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`python -m stockcli ARGS` in a subprocess; returncode -9 when killed at `kill_at`."""
        return subprocess.run(
            [sys.executable, "-m", "stockcli", *args],
            cwd=REPO,
            env=self.env(kill_at, **(env or {})),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )

    def popen(
        self, *args: str, kill_at: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "stockcli", *args],
            cwd=REPO,
            env=self.env(kill_at, **(env or {})),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str) -> Any:
        """The same CLI in this process (Typer's CliRunner): a re-run without the import costs."""
        return Cli(self.config_path)(*args)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


def rewrite_mlflow_paths(mlflow_db: Path, old_root: Path, new_root: Path) -> None:
    """Point every absolute path stored in an MLflow sqlite store at the copied folder."""
    connection = sqlite3.connect(mlflow_db)
    try:
        tables = [r[0] for r in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in connection.execute(f"PRAGMA table_info('{table}')").fetchall():
                if "CHAR" not in column[2].upper() and "TEXT" not in column[2].upper():
                    continue
                connection.execute(
                    f'UPDATE "{table}" SET "{column[1]}" = replace("{column[1]}", ?, ?) '
                    f'WHERE "{column[1]}" LIKE ?',
                    (str(old_root), str(new_root), f"%{old_root}%"),
                )
        connection.commit()
    finally:
        connection.close()


def copy_workspace(source: Workspace, root: Path) -> Workspace:
    """A full, independent copy of `source` at `root` (MLflow paths rewritten)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source.config_path, root / "config.toml")
    shutil.copytree(source.data_dir, root / "data", ignore=shutil.ignore_patterns("stockcli.lock"))
    mlflow_db = root / "data" / "mlflow.db"
    if mlflow_db.exists():
        rewrite_mlflow_paths(mlflow_db, source.root.resolve(), root.resolve())
    return Workspace(root)


def new_workspace(root: Path, *, database_url: str | None = None, extra: str = "") -> Workspace:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.toml").write_text(config_text(database_url, extra), encoding="utf-8")
    return Workspace(root)


_BOOTSTRAPPED: dict[str, Workspace] = {}


def bootstrapped_workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's pristine bootstrapped workspace (built on first use; never modify it: copy it)."""
    if "base" not in _BOOTSTRAPPED:
        workspace = new_workspace(tmp_path_factory.mktemp("bootstrapped"))
        result = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "daily")
        assert result.exit_code == 0, result.output
        workspace.close()
        _BOOTSTRAPPED["base"] = workspace
    return _BOOTSTRAPPED["base"]


@pytest.fixture(name="bootstrapped")
def bootstrapped_fixture(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> Any:
    """A private copy of the bootstrapped workspace (Production = version 1, predictions for 2013-02-04)."""
    workspace = copy_workspace(bootstrapped_workspace(tmp_path_factory), tmp_path / "ws")
    yield workspace
    workspace.close()


# --- what "the same state" means ----------------------------------------------------------------------


def bars_digest(engine: Engine) -> tuple[int, str]:
    """(rows, SHA-256) of the stored bars' content: ticker, date, OHLCV and source (not fetched_at)."""
    table = RawStockData.__table__
    columns = [
        table.c[name] for name in ("ticker", "date", "open", "high", "low", "close", "volume", "source")
    ]
    digest = hashlib.sha256()
    count = 0
    with engine.connect() as connection:
        for row in connection.execute(select(*columns).order_by(table.c.ticker, table.c.date)):
            digest.update(repr(tuple(row)).encode())
            count += 1
    return count, digest.hexdigest()


def datasets(engine: Engine) -> dict[str, str]:
    """dataset run id -> content hash."""
    with engine.connect() as connection:
        return {
            r.run_id: r.content_hash for r in connection.execute(select(Dataset.run_id, Dataset.content_hash))
        }


def built_sets(engine: Engine) -> dict[tuple[str, str], str]:
    """(run id, set name) -> SHA-256 of its windows and targets."""
    table = ScaledFeatureSet.__table__
    out = {}
    with engine.connect() as connection:
        for row in connection.execute(select(table)):
            digest = hashlib.sha256()
            for name in (
                "x_npy",
                "y_npy",
                "base_dates_npy",
                "target_dates_npy",
                "base_closes_npy",
                "target_closes_npy",
            ):
                digest.update(bytes(getattr(row, name)))
            out[(row.run_id, row.set_name)] = digest.hexdigest()
    return out


def predictions(engine: Engine, *, with_version: bool = False) -> list[tuple[Any, ...]]:
    """Stored daily predictions, sorted: (target date, ticker, base date, base close, predicted close[, version])."""
    query = select(
        LatestPrediction.target_date,
        LatestPrediction.ticker,
        LatestPrediction.base_date,
        LatestPrediction.base_close,
        LatestPrediction.predicted_close,
        LatestPrediction.model_version,
    )
    with engine.connect() as connection:
        rows = [tuple(r) for r in connection.execute(query)]
    return sorted(r if with_version else r[:5] for r in rows)


def ledger(engine: Engine) -> list[tuple[int, str, str]]:
    """(id, command, status) of every run, oldest first."""
    query = select(PipelineRun.id, PipelineRun.command, PipelineRun.status).order_by(PipelineRun.id)
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(query)]  # type: ignore[misc]


def promotion_rows(engine: Engine) -> list[tuple[Any, ...]]:
    """(id, candidate, production, promoted, dry run, reason, pipeline run id), oldest first."""
    query = select(
        Promotion.id,
        Promotion.candidate_version,
        Promotion.production_version,
        Promotion.promoted,
        Promotion.dry_run,
        Promotion.reason,
        Promotion.pipeline_run_id,
    ).order_by(Promotion.id)
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(query)]


def production(workspace: Workspace) -> str | None:
    from stockcli.ml import registry

    return registry.resolve_alias(workspace.settings())


def versions(workspace: Workspace) -> list[str]:
    from stockcli.ml import registry

    return sorted((v.version for v in registry.list_versions(workspace.settings())), key=int)


def weights_sha(workspace: Workspace, version: str) -> str:
    """The SHA-256 of a registered version's weights, as recorded in its bundle.json."""
    from stockcli.ml import registry
    from stockcli.ml.bundle import BUNDLE_FILE

    settings = workspace.settings()
    source = registry.client(settings).get_model_version(settings.mlflow.model_name, version).source
    folder = Path(unquote(urlparse(registry.artifact_uri(settings, source)).path))
    return str(json.loads((folder / BUNDLE_FILE).read_text())["weights_sha256"])


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 60, every_s: float = 0.05) -> Any:
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


def running_row_of(engine: Engine, pid: int) -> int | None:
    """The ledger id of a `running` row written by process `pid` (it then holds the run lock)."""
    query = select(PipelineRun.id).where(PipelineRun.pid == pid, PipelineRun.status == "running")
    with engine.connect() as connection:
        return connection.execute(query).scalar()


def stop(process: subprocess.Popen[str]) -> None:
    """SIGKILL a subprocess we started (by its id) and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)


def session_date(text: str) -> date:
    return date.fromisoformat(text)


def register_broken(workspace: Workspace, like: str = "1") -> str:
    """Register a much worse twin of version `like` (zero weights, head bias +5, no calibration): a
    Production that any sane candidate beats. Returns its version."""
    import copy

    import torch

    from stockcli.ml import registry

    settings = workspace.settings()
    bundle = registry.load_bundle(settings, like)
    broken = copy.deepcopy(bundle.model)
    with torch.no_grad():
        for name, parameter in broken.named_parameters():
            parameter.zero_()
            if name.endswith(("head.bias", "head.out.bias")):  # a location far from any close
                parameter.fill_(5.0)
    scalers = {k: v for k, v in bundle.scalers.items() if k != "calibration"}
    with registry.training_run(settings, run_name="test-broken") as run:
        return registry.register_version(
            settings,
            run,
            model=broken.eval(),
            model_config=bundle.model_config,
            spec=bundle.spec,
            scalers=scalers,
            tickers=bundle.tickers,
            sequence_length=bundle.sequence_length,
            target_kind=bundle.target_kind,
            dataset_run_id=bundle.dataset_run_id,
        )


def make_broken_production(workspace: Workspace) -> str:
    """Register a broken version and point Production at it (as an earlier bad promotion would)."""
    from stockcli.ml import registry

    version = register_broken(workspace)
    registry.set_production(workspace.settings(), version)
    return version
