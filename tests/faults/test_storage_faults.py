"""Fault class: where state lives. A data dir that moves or is restored from a backup elsewhere keeps
working; damaged, read-only, misplaced or missing stores each give one clear error naming the file or
database, and change nothing; an as-of date in the future is refused naming that date."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pytest
from sqlalchemy.engine import make_url

from stockcli.config import load_settings
from stockcli.db.engine import open_database
from tests.conftest import Cli, write_config
from tests.faults.checks import table_state
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    REPO,
    Workspace,
    bars_digest,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    predictions,
    weights_sha,
)
from tests.faults.test_backtest_faults import folder_state


def file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def without_ledger(state: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {name: value for name, value in state.items() if name != "pipeline_runs"}


class Relocated:
    """The same workspace run with STOCKCLI_DATA_DIR pointing at another folder."""

    def __init__(self, workspace: Workspace, data_dir: Path) -> None:
        self.workspace = workspace
        self.data_dir = data_dir
        self.environ = {"STOCKCLI_DATA_DIR": str(data_dir)}

    def cli(self, *args: str) -> Any:
        return Cli(self.workspace.config_path)(*args, env=self.environ)

    def settings(self) -> Any:
        return load_settings(self.workspace.config_path, environ=self.environ)


def version_folder(settings: Any, version: str) -> Path:
    from stockcli.ml import registry

    source = registry.client(settings).get_model_version(settings.mlflow.model_name, version).source
    return Path(unquote(urlparse(registry.artifact_uri(settings, source)).path))


# --- a data dir that moves ---------------------------------------------------------------------------------------


def test_a_moved_data_dir_predicts_lists_and_trains_from_its_new_place(bootstrapped: Workspace) -> None:
    from stockcli.ml import registry

    before_predictions = predictions(bootstrapped.engine, with_version=True)
    before_bars = bars_digest(bootstrapped.engine)
    before_weights = weights_sha(bootstrapped, "1")
    bootstrapped.close()
    moved = bootstrapped.root / "data2"
    bootstrapped.data_dir.rename(moved)  # mv data data2
    here = Relocated(bootstrapped, moved)
    registry.clear_caches()

    predicted = here.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "predict")
    assert predicted.exit_code == 0, predicted.output
    listed = here.cli("--json", "models")
    assert listed.exit_code == 0, listed.output
    assert str(moved / "mlartifacts") in listed.stdout
    trained = here.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "train")
    assert trained.exit_code == 0, trained.output

    settings = here.settings()
    assert registry.resolve_alias(settings) == "1"  # nothing moved Production
    new_folder = version_folder(settings, "2")
    assert moved / "mlartifacts" in new_folder.parents  # the new run wrote under the current data dir
    assert registry.load_bundle(settings, "2").version == "2"
    assert not bootstrapped.data_dir.exists()  # the old place was not recreated
    engine = open_database(settings)
    try:
        assert predictions(engine, with_version=True) == before_predictions  # same values, re-predicted
        assert bars_digest(engine) == before_bars
    finally:
        engine.dispose()
    from stockcli.ml.bundle import BUNDLE_FILE

    folder = version_folder(settings, "1")
    assert json.loads((folder / BUNDLE_FILE).read_text())["weights_sha256"] == before_weights


def test_a_backup_restored_elsewhere_works_after_the_original_is_deleted(
    bootstrapped: Workspace, tmp_path: Path
) -> None:
    from stockcli.ml import registry

    before_predictions = predictions(bootstrapped.engine, with_version=True)
    before_bars = bars_digest(bootstrapped.engine)
    bootstrapped.close()
    backup = tmp_path / "elsewhere" / "backup-of-data"
    shutil.copytree(bootstrapped.data_dir, backup)  # a plain copy: MLflow's paths still name the original
    shutil.rmtree(bootstrapped.data_dir)
    restored = Relocated(bootstrapped, backup)
    registry.clear_caches()

    for args in (
        ("--as-of", BOOTSTRAP_AS_OF, "--json", "predict"),
        ("--json", "models"),
        ("--as-of", BOOTSTRAP_AS_OF, "--json", "report"),
    ):
        result = restored.cli(*args)
        assert result.exit_code == 0, (args, result.output)
    report = json.loads(result.stdout)
    assert [m["version"] for m in report["models"]] == ["1"] and len(report["predictions"]) == 2
    settings = restored.settings()
    assert registry.load_bundle(settings).version == "1"
    assert not bootstrapped.data_dir.exists()
    engine = open_database(settings)
    try:
        assert predictions(engine, with_version=True) == before_predictions
        assert bars_digest(engine) == before_bars
    finally:
        engine.dispose()


# --- damaged files -----------------------------------------------------------------------------------------------


def damage_pages(path: Path, *, keep_pages: int = 2, page: int = 4096) -> None:
    """Overwrite the start of every page after the first `keep_pages` (the schema stays readable)."""
    data = bytearray(path.read_bytes())
    for offset in range(keep_pages * page, len(data), page):
        data[offset : offset + 256] = b"\xa5" * 256
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["pages damaged", "not a database at all"])
def test_a_damaged_sqlite_database_is_named_and_left_as_it_is(tmp_path: Path, how: str) -> None:
    cli = Cli(write_config(tmp_path, extra='[data]\ntickers = ["GOOG", "MSFT"]\nstart = 2012-06-01\n'))
    assert cli("--as-of", "2013-02-15", "fetch").exit_code == 0
    database = tmp_path / "data" / "stockcli.db"
    for suffix in ("-wal", "-shm"):
        assert not Path(f"{database}{suffix}").exists()  # all written into the file itself
    if how == "pages damaged":
        damage_pages(database)
    else:
        database.write_bytes(b"this was overwritten by something else\n" * 400)
    damaged = file_sha(database)

    for args in (("--as-of", "2013-03-01", "fetch"), ("--as-of", "2013-03-01", "report")):
        result = cli(*args)
        assert result.exit_code == 1, result.output
        assert f"The database file {database} is damaged" in result.stderr
        assert "Restore it from a backup" in result.stderr
        assert "sqlalche.me" not in result.output and "server is up" not in result.output
    assert file_sha(database) == damaged  # nothing was written into it


def test_a_corrupt_optuna_storage_is_named_and_nothing_changes(bootstrapped: Workspace) -> None:
    storage = bootstrapped.data_dir / "optuna.db"
    for leftover in bootstrapped.data_dir.glob("optuna.db-*"):
        leftover.unlink()
    storage.write_bytes(b"\x00garbage, not a SQLite file\xff" * 300)
    corrupt = file_sha(storage)
    before = without_ledger(table_state(bootstrapped.engine))

    result = bootstrapped.cli("--as-of", BOOTSTRAP_AS_OF, "tune", "--n-trials", "3")

    assert result.exit_code == 1, result.output
    assert f"The Optuna storage file {storage} is damaged" in result.stderr
    assert "DatabaseError" not in result.output
    assert file_sha(storage) == corrupt
    assert without_ledger(table_state(bootstrapped.engine)) == before


# --- a read-only data dir, a data dir that is a file, a database URL pointing nowhere ---------------------------


def read_only_prefix() -> list[str]:
    """How to run a process that cannot write a folder whose write bits are cleared: as root, in a user
    namespace where this user is nobody (root ignores permission bits)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("unshare") is None:
        pytest.skip("running as root without `unshare`: a read-only folder cannot be simulated")
    prefix = ["unshare", "--user", "--map-user=65534", "--map-group=65534"]
    if subprocess.run([*prefix, "true"], check=False, capture_output=True).returncode != 0:
        pytest.skip("user namespaces are not available: a read-only folder cannot be simulated as root")
    return prefix


def test_report_works_on_a_read_only_data_dir_and_writers_say_why_they_cannot(
    bootstrapped: Workspace,
) -> None:
    prefix = read_only_prefix()
    bootstrapped.close()
    data = bootstrapped.data_dir
    before = folder_state(data)
    env = bootstrapped.env()
    subprocess.run(["chmod", "-R", "a-w", str(data)], check=True)
    try:
        report = subprocess.run(
            [*prefix, sys.executable, "-m", "stockcli", "--as-of", BOOTSTRAP_AS_OF, "--json", "report"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        fetch = subprocess.run(
            [*prefix, sys.executable, "-m", "stockcli", "--as-of", "2013-02-04", "fetch"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(data)], check=True)
    assert report.returncode == 0, report.stderr
    payload = json.loads(report.stdout)
    assert len(payload["predictions"]) == 2 and [m["version"] for m in payload["models"]] == ["1"]
    assert fetch.returncode == 1, fetch.stderr
    # Whichever it meets first: the database file, or the run lock beside it.
    assert (
        f"Cannot write the database file {data / 'stockcli.db'}" in fetch.stderr
        or f"Cannot write the run lock {data / 'stockcli.lock'}" in fetch.stderr
    )
    assert "Traceback" not in fetch.stderr
    assert folder_state(data) == before


def test_a_data_dir_that_is_a_file_exits_2_and_stays_as_it_was(tmp_path: Path, database_url: str) -> None:
    blocker = tmp_path / "data-file"
    blocker.write_text("not a folder\n")
    config = write_config(tmp_path, database_url)
    engine = open_database(load_settings(config, environ={}))
    try:
        tables = table_state(engine)
        for args in (("--as-of", "2013-03-01", "fetch"), ("report",), ("--as-of", "2013-03-01", "predict")):
            result = Cli(config)(*args, env={"STOCKCLI_DATA_DIR": str(blocker)})
            assert result.exit_code == 2, (args, result.output)
            assert f"The data dir {blocker} is not a folder" in result.stderr
        assert blocker.read_text() == "not a folder\n"
        assert table_state(engine) == tables
    finally:
        engine.dispose()


@pytest.mark.parametrize("variable", ["STOCKCLI_DATABASE_URL", "STOCKCLI_MLFLOW_TRACKING_URI"])
def test_a_sqlite_url_in_a_missing_folder_outside_the_data_dir_exits_2_creating_nothing(
    tmp_path: Path, variable: str
) -> None:
    nowhere = tmp_path / "nonexistent" / "dir"
    config = write_config(tmp_path)
    command = ("--as-of", "2013-03-01", "fetch") if variable == "STOCKCLI_DATABASE_URL" else ("models",)
    result = Cli(config)(*command, env={variable: f"sqlite:///{nowhere / 'x.db'}"})
    assert result.exit_code == 2, result.output
    assert f"does not exist: {nowhere}" in result.stderr and "only under the data dir" in result.stderr
    assert not (tmp_path / "nonexistent").exists()


def test_an_optuna_storage_in_a_missing_folder_outside_the_data_dir_is_refused(tmp_path: Path) -> None:
    from stockcli.errors import ConfigError
    from stockcli.ml import tuning

    nowhere = tmp_path / "nonexistent" / "dir"
    with pytest.raises(ConfigError, match="only under the data dir") as caught:
        tuning.make_storage(f"sqlite:///{nowhere / 'optuna.db'}", data_dir=tmp_path / "data")
    assert caught.value.exit_code == 2 and not (tmp_path / "nonexistent").exists()
    inside = tmp_path / "data" / "studies" / "optuna.db"
    tuning.make_storage(f"sqlite:///{inside}", data_dir=tmp_path / "data")
    assert inside.is_file()


def test_a_sqlite_url_under_the_data_dir_gets_its_folders(tmp_path: Path) -> None:
    config = write_config(tmp_path, extra='[data]\ntickers = ["GOOG"]\nstart = 2013-01-02\n')
    inside = tmp_path / "data" / "nested" / "deeper" / "stock.db"
    result = Cli(config)(
        "--as-of", "2013-03-01", "fetch", env={"STOCKCLI_DATABASE_URL": f"sqlite:///{inside}"}
    )
    assert result.exit_code == 0, result.output
    assert inside.is_file()


def test_an_as_of_in_the_future_names_that_date_and_says_why(tmp_path: Path, database_url: str) -> None:
    config = write_config(tmp_path, database_url)
    engine = open_database(load_settings(config, environ={}))
    try:
        tables = table_state(engine)
        for command in ("fetch", "predict", "daily"):
            result = Cli(config)("--as-of", "2099-01-01", command)
            assert result.exit_code == 2, result.output
            assert "--as-of 2099-01-01 is in the future: today is" in result.stderr
            assert "nothing dated after today exists yet" in result.stderr
        assert table_state(engine) == tables
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_mlflow_store_on_a_missing_postgresql_database_fails_fast_naming_it(
    tmp_path: Path, postgres_url: str
) -> None:
    missing = make_url(postgres_url).set(database="stockcli_no_such_db", query={}).render_as_string(False)
    config = write_config(tmp_path)
    started = time.monotonic()
    result = Cli(config)("--json", "models", env={"STOCKCLI_MLFLOW_TRACKING_URI": missing})
    elapsed = time.monotonic() - started
    assert result.exit_code == 2, result.output
    assert "The MLflow tracking store database 'stockcli_no_such_db' does not exist" in result.stderr
    assert "createdb stockcli_no_such_db" in result.stderr
    assert elapsed < 20  # MLflow alone retries for ~100 s


def test_a_copy_without_mlartifacts_never_reads_the_originals_model(
    bootstrapped: Workspace, tmp_path: Path
) -> None:
    from stockcli.ml import registry

    bootstrapped.close()
    copy = tmp_path / "copy-of-data"
    shutil.copytree(bootstrapped.data_dir, copy, ignore=shutil.ignore_patterns("mlartifacts"))
    here = Relocated(bootstrapped, copy)  # the original stays in place, artifacts and all
    registry.clear_caches()
    engine = open_database(here.settings())
    try:
        before = predictions(engine, with_version=True)
        result = here.cli("--as-of", BOOTSTRAP_AS_OF, "predict")
        assert result.exit_code == 1, result.output
        message = result.stderr
        assert str(copy / "mlartifacts") in message and "copied without its mlartifacts" in message
        assert str(bootstrapped.data_dir) not in message  # never pointed at the original
        assert predictions(engine, with_version=True) == before
    finally:
        engine.dispose()
