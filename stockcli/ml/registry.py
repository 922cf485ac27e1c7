"""The MLflow tracking store and model registry: the only module that imports mlflow.

A registered version's source is an artifact folder holding a pickle-free model bundle (`stockcli.ml.bundle`);
its SHA-256 is recorded as the version tag `stockcli.bundle_sha256` and verified on every load (a version
without it is refused). Versions are tagged with their training run id, so a retried registration returns the
existing version. The alias `Production` marks the serving version; only `promote` moves it
(`set_production`). MLflow is imported lazily and kept quiet; clients are cached per process and URI, because
opening a sqlite store costs seconds.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from stockcli.config import Settings, redact_url
from stockcli.errors import NoProductionModelError, RegistryError, StockCliError, UsageError
from stockcli.jsonable import dumps
from stockcli.ml.bundle import ModelBundle, bundle_sha256, read_bundle, write_bundle
from stockcli.ml.imports import heavy_import
from stockcli.storage import check_server_database, parse_database_url, prepare_folder, sqlite_file

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


PRODUCTION_ALIAS = "Production"
MODEL_ARTIFACT_PATH = "model"
# The folder of a local store's artifacts under the data dir (`Settings.mlflow_artifact_location`).
ARTIFACT_ROOT_NAME = "mlartifacts"

TAG_TRAINING_RUN = "stockcli.training_run_id"
# The whole bundle's SHA-256 (bundle.json and weights), recorded at registration, verified on load.
TAG_BUNDLE_SHA256 = "stockcli.bundle_sha256"
# The process running an MLflow run (host, pid, pid's start time): a later run closes it if it died.
TAG_HOST = "stockcli.host"
TAG_PID = "stockcli.pid"
TAG_PID_START = "stockcli.pid_start"
TAG_DATASET_RUN = "stockcli.dataset_run_id"
TAG_MODEL_TYPE = "stockcli.model_type"
TAG_TICKERS = "stockcli.tickers"
# On a version registered by a run killed before its promotion decision (cleared by that decision).
TAG_UNEVALUATED = "stockcli.unevaluated"
# Test metrics copied onto the version as tags, so `stockcli models` lists them in one query.
METRIC_TAG_PREFIX = "stockcli.test."

_QUIET_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    # A tracking server that is down should fail in seconds, not after minutes of backoff.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}

_lock = threading.Lock()
_clients: dict[str, MlflowClient] = {}
_experiment_ids: dict[tuple[str, str], str] = {}
_bundles: dict[tuple[str, str, str], ModelBundle] = {}
_BUNDLE_CACHE_SIZE = 4


# --- results ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelVersionInfo:
    """One registered version, as `stockcli models` lists it."""

    version: str
    aliases: tuple[str, ...]
    created_at: datetime
    training_run_id: str | None
    dataset_run_id: str | None
    model_type: str | None
    tickers: tuple[str, ...]
    test_metrics: dict[str, float]
    source: str
    status: str
    note: str | None = None  # why the version needs attention (never evaluated), else None


# --- set-up -----------------------------------------------------------------------------------------


def _mlflow() -> Any:
    """Import mlflow quietly (once): no telemetry, URL banners or progress bars; warnings only."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    with heavy_import("mlflow"):
        import mlflow

    # MLflow gives its logger its own INFO handler (store creation, migrations): warnings only.
    logger = logging.getLogger("mlflow")
    if logger.level < logging.WARNING:
        logger.setLevel(logging.WARNING)
    return mlflow


def _is_remote(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https", "databricks", "databricks-uc", "uc")


def artifact_uri(settings: Settings, uri: str) -> str:
    """`uri` as the current data dir sees it: what makes the local store relocatable.

    A local store records absolute `file://` URIs; one under an old `mlartifacts` folder is always resolved
    against `<data_dir>/mlartifacts`, so a copy made without its `mlartifacts` fails clearly instead of
    reading (or writing) the original's files. Other URIs are returned unchanged.
    """
    if _is_remote(settings.mlflow_tracking_uri) or not uri.startswith("file:"):
        return uri
    recorded = _local_path(uri)
    parts = recorded.parts
    if ARTIFACT_ROOT_NAME not in parts:
        return uri
    last = len(parts) - 1 - parts[::-1].index(ARTIFACT_ROOT_NAME)
    relocated = _local_path(settings.mlflow_artifact_location).joinpath(*parts[last + 1 :])
    return uri if relocated == recorded else relocated.as_uri()


def _local_path(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))


def client(settings: Settings) -> MlflowClient:
    """The process's MlflowClient for the configured tracking URI (registry on the same URI)."""
    uri = settings.mlflow_tracking_uri
    with _lock:
        cached = _clients.get(uri)
        if cached is not None:
            return cached
    _mlflow()
    from mlflow import MlflowClient

    key = "[mlflow] tracking_uri (or STOCKCLI_MLFLOW_TRACKING_URI)"
    store_file = sqlite_file(uri)
    if store_file is not None:  # MLflow creates the file but not its folder
        prepare_folder(store_file, data_dir=settings.data_dir, what="MLflow tracking store", key=key)
    elif not _is_remote(uri) and "://" in uri and not uri.startswith("file:"):
        parse_database_url(uri, what="MLflow tracking store", key=key)
        # MLflow retries a database it cannot reach for ~100 s; one bounded attempt says why first.
        check_server_database("MLflow tracking store", uri, key=key)
    with _registry_errors(settings, "open the MLflow tracking store"), heavy_import("mlflow store"):
        # Opening the first store imports MLflow's ORM models and alembic.
        created = MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _lock:
        return _clients.setdefault(uri, created)


def clear_caches() -> None:
    """Forget cached clients, experiment ids and loaded bundles (tests; a changed store)."""
    with _lock:
        _clients.clear()
        _experiment_ids.clear()
        _bundles.clear()


def _experiment_id(settings: Settings) -> str:
    uri, name = settings.mlflow_tracking_uri, settings.mlflow.experiment
    with _lock:
        cached = _experiment_ids.get((uri, name))
    if cached is not None:
        return cached
    mlflow_client = client(settings)
    with _registry_errors(settings, f"open the MLflow experiment {name!r}"):
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            artifact_location = None if _is_remote(uri) else settings.mlflow_artifact_location
            try:
                experiment_id = mlflow_client.create_experiment(name, artifact_location=artifact_location)
            except Exception as exc:
                if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                    raise
                existing = mlflow_client.get_experiment_by_name(name)
                if existing is None:
                    raise
                experiment_id = existing.experiment_id
        else:
            experiment_id = experiment.experiment_id
            if experiment.lifecycle_stage == "deleted":
                mlflow_client.restore_experiment(experiment_id)
    with _lock:
        _experiment_ids[(uri, name)] = experiment_id
    return experiment_id


def _registry_exceptions() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    kinds: list[type[BaseException]] = [MlflowException, SQLAlchemyError, OSError]
    with contextlib.suppress(ImportError):
        import requests

        kinds.append(requests.RequestException)
    return tuple(kinds)


@contextlib.contextmanager
def _registry_errors(settings: Settings, action: str, *, ignore: str | None = None) -> Iterator[None]:
    """Turn a store failure into a RegistryError; one with MLflow error code `ignore` is suppressed."""
    try:
        yield
    except StockCliError:
        raise
    except _registry_exceptions() as exc:
        if ignore is None or getattr(exc, "error_code", None) != ignore:
            raise describe_registry_error(settings, action, exc) from exc


def describe_registry_error(settings: Settings, action: str, exc: BaseException) -> RegistryError:
    """A RegistryError for a failure while doing `action` against the tracking store."""
    uri = redact_url(settings.mlflow_tracking_uri)
    text = str(getattr(exc, "orig", None) or exc).strip()
    first_line = text.splitlines()[0] if text else type(exc).__name__
    lowered = text.lower()
    if "database is locked" in lowered or "could not obtain lock" in lowered:
        hint = (
            "Another process holds the MLflow store's database (an MLflow UI or a second stockcli run?). "
            "Wait for it to finish and run the command again; nothing was changed."
        )
    elif "not a database" in lowered or "malformed" in lowered or "no such table" in lowered:
        hint = (
            f"The MLflow store at {uri} is damaged. Move that file away (a fresh store is created) "
            "and retrain, or point [mlflow] tracking_uri / STOCKCLI_MLFLOW_TRACKING_URI at a healthy store."
        )
    elif isinstance(exc, OSError):
        hint = (
            f"Check that the folder of {uri} and of the artifacts ({settings.mlflow_artifact_location}) "
            "exist and are writable, or set [mlflow] tracking_uri / STOCKCLI_MLFLOW_TRACKING_URI."
        )
    else:
        hint = (
            "Check [mlflow] tracking_uri (or STOCKCLI_MLFLOW_TRACKING_URI) and that the tracking store "
            "is reachable, then run the command again."
        )
    return RegistryError(f"Cannot {action} at {uri}: {type(exc).__name__}: {first_line}", hint=hint)


# --- training runs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRun:
    """An MLflow run that a training service logs into, without importing mlflow itself."""

    settings: Settings
    run_id: str
    artifact_uri: str

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values become strings; MLflow keeps at most 6000 characters each)."""
        from mlflow.entities import Param

        items = [
            Param(str(key), (value if isinstance(value, str) else dumps(value, sort_keys=True))[:6000])
            for key, value in params.items()
        ]
        self._log_batches("log training parameters", 100, params=items)

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Log finite metric values, at `step` (an epoch) when given."""
        from mlflow.entities import Metric

        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
        items = [
            # MLflow keys allow alphanumerics, _ - . space / ; tickers like ^GSPC need cleaning.
            Metric(re.sub(r"[^\w\-./ ]", "_", str(key)), float(value), now_ms, step or 0)
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        self._log_batches("log training metrics", 1000, metrics=items)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._log_batches("tag the training run", 100, tags=[RunTag(str(k), str(v)) for k, v in tags.items()])

    def _log_batches(self, action: str, size: int, **entities: list[Any]) -> None:
        """`log_batch` of one kind of entity, `size` at a time (MLflow caps a batch's length)."""
        ((kind, items),) = entities.items()
        with _registry_errors(self.settings, action):
            for start in range(0, len(items), size):
                batch = {kind: items[start : start + size]}
                client(self.settings).log_batch(self.run_id, synchronous=True, **batch)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        """Copy every file of `local_dir` into the run's artifacts (under `artifact_path`); in a local store
        under the current data dir, not where the store recorded the experiment before a move."""
        with _registry_errors(self.settings, "store training artifacts"):
            if self.artifact_uri.startswith("file:"):
                from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

                get_artifact_repository(self.artifact_uri).log_artifacts(str(local_dir), artifact_path)
            else:
                client(self.settings).log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_json(self, payload: Any, name: str) -> None:
        with tempfile.TemporaryDirectory(prefix="stockcli-") as folder:
            (Path(folder) / name).write_text(dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
            self.log_artifacts(Path(folder))

    def finish(self, status: str = "FINISHED") -> None:
        with _registry_errors(self.settings, "close the training run"):
            client(self.settings).set_terminated(self.run_id, status=status)


@contextlib.contextmanager
def training_run(
    settings: Settings, *, run_name: str | None = None, tags: Mapping[str, Any] | None = None
) -> Iterator[TrainingRun]:
    """Start an MLflow run in the configured experiment; it ends FINISHED, FAILED on an error, KILLED
    on Ctrl-C. Runs of this host's killed processes still marked RUNNING are closed first."""
    experiment_id = _experiment_id(settings)
    close_dead_runs(settings)
    run_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    run_tags |= {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid())}
    if (started := _process_start(os.getpid())) is not None:
        run_tags[TAG_PID_START] = started
    with _registry_errors(settings, "start an MLflow training run"):
        run = client(settings).create_run(experiment_id, run_name=run_name, tags=run_tags)
    handle = TrainingRun(settings, run.info.run_id, artifact_uri(settings, run.info.artifact_uri))
    try:
        yield handle
    except BaseException as exc:
        with contextlib.suppress(Exception):
            handle.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    else:
        handle.finish("FINISHED")


def _process_start(pid: int) -> str | None:
    """Process `pid`'s start time in clock ticks since boot (Linux), telling a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


def _process_alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return started is None or _process_start(pid) in (None, started)


def close_dead_runs(settings: Settings) -> list[str]:
    """Mark KILLED the experiment's RUNNING runs whose process on this host is gone; returns their ids.

    Runs of live processes and of other hosts (whose processes cannot be checked from here) are left alone.
    """
    store_file = sqlite_file(settings.mlflow_tracking_uri)
    if store_file is not None and not store_file.is_file():
        return []  # no store yet, so no run to close (and none is created just to look)
    host = socket.gethostname()
    experiment_id = _experiment_id(settings)
    closed = []
    with _registry_errors(settings, "close the MLflow runs of killed processes"):
        running = client(settings).search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        )
        for run in running:
            tags = run.data.tags or {}
            ours = tags.get(TAG_HOST) == host and str(tags.get(TAG_PID, "")).isdigit()
            if ours and not _process_alive(int(tags[TAG_PID]), tags.get(TAG_PID_START)):
                client(settings).set_terminated(run.info.run_id, status="KILLED")
                closed.append(run.info.run_id)
    return closed


# --- model versions ---------------------------------------------------------------------------------


def find_version_for_run(settings: Settings, training_run_id: str) -> str | None:
    """The version registered from `training_run_id`, if any (the newest when several)."""
    name = settings.mlflow.model_name
    with _registry_errors(settings, "search model versions"):
        versions = client(settings).search_model_versions(
            f"name = '{_quote(name)}' and tags.`{TAG_TRAINING_RUN}` = '{_quote(training_run_id)}'"
        )
    numbers = sorted(int(v.version) for v in versions)
    return str(numbers[-1]) if numbers else None


def mark_unevaluated(settings: Settings, training_run_ids: list[str]) -> list[str]:
    """Tag the versions registered by these (killed) training runs as never compared with Production; returns
    them. `stockcli models` shows the mark and `promote` clears it."""
    name = settings.mlflow.model_name
    marked = []
    for run_id in training_run_ids:
        version = find_version_for_run(settings, run_id)
        if version is None:
            continue
        note = (
            "Registered by a run killed before its promotion decision: never compared with Production. "
            f"Run `stockcli promote --version {version}` to evaluate it."
        )
        with _registry_errors(settings, f"mark model version {version} as never evaluated"):
            client(settings).set_model_version_tag(name, version, TAG_UNEVALUATED, note)
        marked.append(version)
    return marked


def clear_unevaluated(settings: Settings, version: str) -> None:
    """Remove the never-evaluated mark of `version` (a promotion decision was recorded for it)."""
    name = settings.mlflow.model_name
    with _registry_errors(settings, f"read version {version} of model {name!r}"):
        tags = client(settings).get_model_version(name, version).tags or {}
        if TAG_UNEVALUATED in tags:
            client(settings).delete_model_version_tag(name, version, TAG_UNEVALUATED)


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def register_version(
    settings: Settings, run: TrainingRun, *, test_summary: Mapping[str, float] | None = None, **contents: Any
) -> str:
    """Log a bundle of `contents` (`write_bundle`'s keyword arguments) to `run` and register it; returns the
    version number.

    Records the bundle's SHA-256 as a tag for `load_bundle` to verify. Idempotent per training run (an
    existing version of `run.run_id` is returned). Never touches the Production alias.
    """
    existing = find_version_for_run(settings, run.run_id)
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory(prefix="stockcli-model-") as folder:
        write_bundle(Path(folder), training_run_id=run.run_id, **contents)
        checksum = bundle_sha256(Path(folder))
        run.log_artifacts(Path(folder), MODEL_ARTIFACT_PATH)
    name = settings.mlflow.model_name
    dataset_run_id = contents["dataset_run_id"]
    tags = {
        TAG_BUNDLE_SHA256: checksum,
        TAG_TRAINING_RUN: run.run_id,
        TAG_DATASET_RUN: dataset_run_id,
        TAG_MODEL_TYPE: str(contents["model_config"].get("model_type", "")),
        TAG_TICKERS: ",".join(contents["tickers"]),
        **{f"{METRIC_TAG_PREFIX}{key}": repr(float(value)) for key, value in (test_summary or {}).items()},
    }
    mlflow_client = client(settings)
    action = f"register a version of model {name!r}"
    with _registry_errors(settings, action, ignore="RESOURCE_ALREADY_EXISTS"):
        mlflow_client.create_registered_model(name, description="stockcli next-session close forecaster")
    with _registry_errors(settings, action):
        version = mlflow_client.create_model_version(
            name,
            source=f"{run.artifact_uri.rstrip('/')}/{MODEL_ARTIFACT_PATH}",
            run_id=run.run_id,
            tags=tags,
            description=f"Trained on dataset {dataset_run_id}",
            await_creation_for=60,
        )
    return str(version.version)


def _registered_aliases(settings: Settings) -> dict[str, str]:
    """alias -> version of the registered model ({} when it does not exist yet)."""
    name = settings.mlflow.model_name
    aliases: dict[str, Any] = {}
    with _registry_errors(settings, f"read the aliases of model {name!r}", ignore="RESOURCE_DOES_NOT_EXIST"):
        aliases = client(settings).get_registered_model(name).aliases or {}
    return {alias: str(version) for alias, version in aliases.items()}


def resolve_alias(settings: Settings, alias: str = PRODUCTION_ALIAS) -> str | None:
    """The version an alias points at, or None. Resolve once per run and use the number afterwards."""
    return _registered_aliases(settings).get(alias)


def set_production(settings: Settings, version: str) -> None:
    """Point the Production alias at `version` (only `promote` calls this, under the run lock)."""
    name = settings.mlflow.model_name
    require_version(settings, version)
    with _registry_errors(settings, f"move the {PRODUCTION_ALIAS} alias of model {name!r}"):
        client(settings).set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))


def require_version(settings: Settings, version: str) -> ModelVersion:
    """MLflow's record of `version`; UsageError (exit 2) when it is not a registered version of the model."""
    name = settings.mlflow.model_name
    if not str(version).isdigit():
        raise UsageError(
            f"Invalid model version {version!r}.", hint="A version is a number; see `stockcli models`."
        )
    found: ModelVersion | None = None
    with _registry_errors(
        settings, f"read version {version} of model {name!r}", ignore="RESOURCE_DOES_NOT_EXIST"
    ):
        found = client(settings).get_model_version(name, str(version))
    if found is None:
        raise UsageError(
            f"Model {name!r} has no version {version}.", hint="See `stockcli models` for the versions."
        )
    return found


def latest_version(settings: Settings) -> str | None:
    """The newest registered version number, or None when nothing is registered."""
    versions = list_versions(settings)
    return versions[0].version if versions else None


def list_versions(settings: Settings) -> list[ModelVersionInfo]:
    """Every registered version of the model, newest first, with aliases and test metrics."""
    name = settings.mlflow.model_name
    aliases = _registered_aliases(settings)
    with _registry_errors(settings, f"list the versions of model {name!r}"):
        versions = list(client(settings).search_model_versions(f"name = '{_quote(name)}'", max_results=10000))
    infos = []
    for item in versions:
        version, tags = str(item.version), dict(item.tags or {})
        metrics = {}
        for key, value in tags.items():
            if key.startswith(METRIC_TAG_PREFIX):
                with contextlib.suppress(ValueError):
                    metrics[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
        infos.append(
            ModelVersionInfo(
                version=version,
                aliases=tuple(sorted(alias for alias, pointed in aliases.items() if pointed == version)),
                created_at=datetime.fromtimestamp(int(item.creation_timestamp) / 1000, tz=UTC),
                training_run_id=item.run_id or tags.get(TAG_TRAINING_RUN),
                dataset_run_id=tags.get(TAG_DATASET_RUN),
                model_type=tags.get(TAG_MODEL_TYPE),
                tickers=tuple(t for t in tags.get(TAG_TICKERS, "").split(",") if t),
                test_metrics=metrics,
                source=artifact_uri(settings, str(item.source)),
                status=str(item.status),
                note=tags.get(TAG_UNEVALUATED),
            )
        )
    infos.sort(key=lambda info: int(info.version), reverse=True)
    return infos


def load_bundle(settings: Settings, version: str | int | None = None) -> ModelBundle:
    """Load a registered version (default: Production's) as a ModelBundle, cached per process.

    Raises NoProductionModelError without a Production version, UsageError for an unknown version, and
    RegistryError when the store cannot be read or the bundle does not match its recorded checksum.
    """
    if version is None:
        version = resolve_alias(settings)
        if version is None:
            raise NoProductionModelError(
                "No production model yet.", hint="Run `stockcli retrain --force` first."
            )
    version = str(version)
    key = (settings.mlflow_tracking_uri, settings.mlflow.model_name, version)
    with _lock:
        cached = _bundles.get(key)
    if cached is not None:
        return cached
    model_version = require_version(settings, version)
    source = artifact_uri(settings, str(model_version.source or ""))
    files = _local_path(source)
    if source.startswith("file:") and not _is_remote(settings.mlflow_tracking_uri) and not files.exists():
        raise RegistryError(
            f"The files of model version {version} are missing: {files} does not exist. The data "
            f"dir {settings.data_dir} has no copy of them: was it copied without its mlartifacts folder?",
            hint="Copy the whole data dir (mlflow.db together with mlartifacts/), or restore it from a backup; "
            "stockcli never reads another data dir's model files.",
        )
    with tempfile.TemporaryDirectory(prefix="stockcli-load-") as folder:
        with _registry_errors(settings, f"download the artifacts of model version {version}"):
            local = _mlflow().artifacts.download_artifacts(
                artifact_uri=source, dst_path=folder, tracking_uri=settings.mlflow_tracking_uri
            )
        expected_sha256 = dict(model_version.tags or {}).get(TAG_BUNDLE_SHA256)
        bundle = read_bundle(
            Path(local), version=version, expected_sha256=expected_sha256, require_sha256=True
        )
    with _lock:
        if len(_bundles) >= _BUNDLE_CACHE_SIZE:
            _bundles.pop(next(iter(_bundles)))
        _bundles[key] = bundle
    return bundle
