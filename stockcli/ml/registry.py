"""The MLflow tracking store and model registry: the only module that imports mlflow.

A registered model version is self-contained and pickle-free. Its source is an artifact folder of
the training run holding

- `weights.npz`: the network's state_dict as plain arrays (`np.savez`, read back with
  `allow_pickle=False`: no code, no pickle, not even torch's restricted unpickler), and
- `bundle.json`: the architecture config, feature spec, scalers, tickers, sequence length, target
  kind, dataset run id, training parameters, test metrics and the weights' SHA-256, and
- `requirements.txt`: the exact stockcli, torch and numpy versions, written explicitly (no inference).

Loading a version downloads that folder, reads the JSON, rebuilds the network from its config and
loads the arrays: nothing is unpickled. Versions are tagged with their training run id, so a retried
registration returns the existing version instead of creating a second one.

The alias `Production` marks the version that serves predictions. Resolve it once per run
(`resolve_alias`) and use the version number afterwards. Only `set_production` moves it, and only
`promote` calls that.

MLflow is imported lazily (it takes seconds) and kept quiet: no telemetry, no URL banners, no
progress bars, warnings only. Clients are cached per process and tracking URI, because opening a
sqlite tracking store costs seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockcli.config import Settings, redact_url
from stockcli.errors import NoProductionModelError, RegistryError, StockCliError, UsageError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from torch import nn

PRODUCTION_ALIAS = "Production"
MODEL_ARTIFACT_PATH = "model"
BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.npz"
REQUIREMENTS_FILE = "requirements.txt"
# What loading a bundle needs, pinned explicitly (MLflow's requirement inference costs ~10 s a log).
REQUIRED_PACKAGES = ("stockcli", "torch", "numpy")
BUNDLE_FORMAT = 1

TAG_TRAINING_RUN = "stockcli.training_run_id"
TAG_DATASET_RUN = "stockcli.dataset_run_id"
TAG_MODEL_TYPE = "stockcli.model_type"
TAG_TICKERS = "stockcli.tickers"
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
class ModelBundle:
    """Everything needed to predict with one model version; `model` is in eval mode on the CPU."""

    model: nn.Module
    model_config: dict[str, Any]
    spec: dict[str, Any]
    scalers: dict[str, Any]
    tickers: tuple[str, ...]
    sequence_length: int
    target_kind: str
    dataset_run_id: str
    version: str | None = None
    training_run_id: str | None = None
    training_params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


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


# --- set-up -----------------------------------------------------------------------------------------


_heavy_imports_done: set[str] = set()


@contextlib.contextmanager
def heavy_import(what: str) -> Iterator[None]:
    """The first time in this process: import with the cyclic garbage collector paused, then freeze.

    `import mlflow` (and opening its first tracking store) and `import torch` create some 10^5
    objects that live as long as the process. The collector's full passes over them, during the
    imports and after, cost more than a second of a short `stockcli daily` on 2 cores. So the
    collector pauses while they import, and `gc.freeze()` then moves everything alive into the
    permanent generation, which later collections skip. Garbage made afterwards is collected as
    usual. `what` names the import; later calls with the same name change nothing, so a long-lived
    process (daemon, backtest, tests) freezes once per library, never what its later runs leave.
    """
    if what in _heavy_imports_done:
        yield
        return
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        _heavy_imports_done.add(what)
        gc.freeze()
        if enabled:
            gc.enable()


def _mlflow() -> Any:
    """Import mlflow quietly (once); every function here goes through this."""
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


def client(settings: Settings) -> MlflowClient:
    """The process's MlflowClient for the configured tracking URI (registry on the same URI)."""
    uri = settings.mlflow_tracking_uri
    with _lock:
        cached = _clients.get(uri)
        if cached is not None:
            return cached
    _mlflow()
    from mlflow import MlflowClient

    with _registry_errors(settings, "open the MLflow tracking store"), heavy_import("mlflow store"):
        # Opening the first store imports MLflow's ORM models and alembic.
        if uri.startswith("sqlite:///"):
            # MLflow creates the file but not its folder.
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
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
                if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
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


def _error_code(exc: BaseException) -> str | None:
    return getattr(exc, "error_code", None)


def _registry_exceptions() -> tuple[type[BaseException], ...]:
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    kinds: list[type[BaseException]] = [MlflowException, SQLAlchemyError, OSError]
    with contextlib.suppress(ImportError):
        import requests

        kinds.append(requests.RequestException)
    return tuple(kinds)


@contextlib.contextmanager
def _registry_errors(settings: Settings, action: str) -> Iterator[None]:
    """Turn MLflow, database and file errors into one RegistryError saying what to do."""
    try:
        yield
    except StockCliError:
        raise
    except _registry_exceptions() as exc:
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


class TrainingRun:
    """An MLflow run that a training service logs into, without importing mlflow itself."""

    def __init__(self, settings: Settings, run_id: str, artifact_uri: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.artifact_uri = artifact_uri

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log parameters (values become strings; MLflow keeps at most 6000 characters each)."""
        from mlflow.entities import Param

        items = [Param(str(key), _param_text(value)) for key, value in params.items()]
        with _registry_errors(self.settings, "log training parameters"):
            for start in range(0, len(items), 100):
                client(self.settings).log_batch(
                    self.run_id, params=items[start : start + 100], synchronous=True
                )

    def log_metrics(self, metrics: Mapping[str, float], *, step: int | None = None) -> None:
        """Log finite metric values, at `step` (an epoch) when given."""
        import math

        from mlflow.entities import Metric

        now_ms = int(datetime.now(tz=UTC).timestamp() * 1000)
        items = [
            Metric(_metric_key(key), float(value), now_ms, step or 0)
            for key, value in metrics.items()
            if value is not None and math.isfinite(float(value))
        ]
        with _registry_errors(self.settings, "log training metrics"):
            for start in range(0, len(items), 1000):
                client(self.settings).log_batch(
                    self.run_id, metrics=items[start : start + 1000], synchronous=True
                )

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        with _registry_errors(self.settings, "tag the training run"):
            client(self.settings).log_batch(
                self.run_id, tags=[RunTag(str(k), str(v)) for k, v in tags.items()], synchronous=True
            )

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        """Copy every file of `local_dir` into the run's artifacts (under `artifact_path`)."""
        with _registry_errors(self.settings, "store training artifacts"):
            client(self.settings).log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_json(self, payload: Any, name: str) -> None:
        """Store `payload` as a JSON artifact file `name`."""
        with tempfile.TemporaryDirectory(prefix="stockcli-") as folder:
            path = Path(folder) / name
            path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str), encoding="utf-8")
            self.log_artifacts(Path(folder))

    def finish(self, status: str = "FINISHED") -> None:
        with _registry_errors(self.settings, "close the training run"):
            client(self.settings).set_terminated(self.run_id, status=status)


def _param_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text[:6000]


def _metric_key(key: str) -> str:
    # MLflow keys allow alphanumerics, _ - . space / ; tickers like ^GSPC need cleaning.
    return "".join(ch if ch.isalnum() or ch in "_-./ " else "_" for ch in str(key))


@contextlib.contextmanager
def training_run(
    settings: Settings, *, run_name: str | None = None, tags: Mapping[str, Any] | None = None
) -> Iterator[TrainingRun]:
    """Start an MLflow run in the configured experiment; it ends FINISHED, or FAILED on an error."""
    experiment_id = _experiment_id(settings)
    with _registry_errors(settings, "start an MLflow training run"):
        run = client(settings).create_run(
            experiment_id, run_name=run_name, tags={str(k): str(v) for k, v in (tags or {}).items()}
        )
    handle = TrainingRun(settings, run.info.run_id, run.info.artifact_uri)
    try:
        yield handle
    except BaseException:
        with contextlib.suppress(Exception):
            handle.finish("FAILED")
        raise
    else:
        handle.finish("FINISHED")


# --- model versions ---------------------------------------------------------------------------------


def _state_dict_arrays(model: nn.Module) -> dict[str, Any]:
    return {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}


def write_bundle(
    folder: Path,
    *,
    model: nn.Module,
    model_config: Mapping[str, Any],
    spec: Mapping[str, Any],
    scalers: Mapping[str, Any],
    tickers: Sequence[str],
    sequence_length: int,
    target_kind: str,
    dataset_run_id: str,
    training_run_id: str | None = None,
    training_params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> Path:
    """Write `weights.npz` and `bundle.json` into `folder`; returns the folder."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    requirements = _requirements()
    (folder / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n", encoding="utf-8")
    weights_path = folder / WEIGHTS_FILE
    np.savez(weights_path, allow_pickle=False, **_state_dict_arrays(model))
    bundle = {
        "format": BUNDLE_FORMAT,
        "model_config": dict(model_config),
        "spec": dict(spec),
        "scalers": dict(scalers),
        "tickers": list(tickers),
        "sequence_length": int(sequence_length),
        "target_kind": str(target_kind),
        "dataset_run_id": str(dataset_run_id),
        "training_run_id": training_run_id,
        "training_params": dict(training_params or {}),
        "metrics": dict(metrics or {}),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _sha256(weights_path),
        "requirements": requirements,
    }
    text = json.dumps(bundle, indent=2, sort_keys=True, allow_nan=False, default=_json_default)
    (folder / BUNDLE_FILE).write_text(text, encoding="utf-8")
    return folder


def _requirements() -> list[str]:
    from importlib import metadata

    pins = []
    for package in REQUIRED_PACKAGES:
        try:
            version = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
        pins.append(f"{package}=={version.split('+')[0]}")
    return pins


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_bundle(folder: Path, *, version: str | None = None) -> ModelBundle:
    """Rebuild a ModelBundle from a folder written by `write_bundle`; unpickles nothing."""
    import numpy as np

    with heavy_import("torch"):
        import torch

    from stockcli.ml.networks import model_from_config

    where = f"model version {version}" if version else str(folder)
    try:
        bundle = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"The {where} has no readable {BUNDLE_FILE}: {exc}.",
            hint="It was not registered by stockcli or its artifacts are damaged; train a new version.",
        ) from None
    if int(bundle.get("format", 0)) > BUNDLE_FORMAT:
        raise RegistryError(
            f"The {where} uses bundle format {bundle.get('format')}, newer than this stockcli ({BUNDLE_FORMAT}).",
            hint="Upgrade stockcli to load it.",
        )
    weights_path = folder / str(bundle.get("weights_file", WEIGHTS_FILE))
    if not weights_path.is_file() or _sha256(weights_path) != bundle.get("weights_sha256"):
        raise RegistryError(
            f"The weights of {where} are missing or do not match their recorded checksum.",
            hint="The artifacts were changed or damaged; train and register a new version.",
        )
    model = model_from_config(bundle["model_config"])
    try:
        loaded = np.load(weights_path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("the weights file is not an .npz archive of arrays")
        with loaded as arrays:
            state = {name: torch.from_numpy(np.array(arrays[name])) for name in arrays.files}
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise RegistryError(
            f"The weights of {where} do not fit its architecture: {str(exc).splitlines()[0]}.",
            hint="Train and register a new version.",
        ) from None
    model.eval()
    return ModelBundle(
        model=model,
        model_config=dict(bundle["model_config"]),
        spec=dict(bundle["spec"]),
        scalers=dict(bundle["scalers"]),
        tickers=tuple(bundle["tickers"]),
        sequence_length=int(bundle["sequence_length"]),
        target_kind=str(bundle["target_kind"]),
        dataset_run_id=str(bundle["dataset_run_id"]),
        version=version,
        training_run_id=bundle.get("training_run_id"),
        training_params=dict(bundle.get("training_params") or {}),
        metrics=dict(bundle.get("metrics") or {}),
    )


def find_version_for_run(settings: Settings, training_run_id: str) -> str | None:
    """The version registered from `training_run_id`, if any (the newest when several)."""
    name = settings.mlflow.model_name
    with _registry_errors(settings, "search model versions"):
        versions = client(settings).search_model_versions(
            f"name = '{_quote(name)}' and tags.`{TAG_TRAINING_RUN}` = '{_quote(training_run_id)}'"
        )
    numbers = sorted(int(v.version) for v in versions)
    return str(numbers[-1]) if numbers else None


def _quote(text: str) -> str:
    return text.replace("'", "\\'")


def register_version(
    settings: Settings,
    run: TrainingRun,
    *,
    model: nn.Module,
    model_config: Mapping[str, Any],
    spec: Mapping[str, Any],
    scalers: Mapping[str, Any],
    tickers: Sequence[str],
    sequence_length: int,
    target_kind: str,
    dataset_run_id: str,
    training_params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    test_summary: Mapping[str, float] | None = None,
) -> str:
    """Log the model bundle to `run` and register it as a new version; returns the version number.

    Idempotent per training run: when a version tagged with `run.run_id` exists, it is returned and
    nothing new is created. Never touches the Production alias.
    """
    existing = find_version_for_run(settings, run.run_id)
    if existing is not None:
        return existing
    with tempfile.TemporaryDirectory(prefix="stockcli-model-") as folder:
        write_bundle(
            Path(folder),
            model=model,
            model_config=model_config,
            spec=spec,
            scalers=scalers,
            tickers=tickers,
            sequence_length=sequence_length,
            target_kind=target_kind,
            dataset_run_id=dataset_run_id,
            training_run_id=run.run_id,
            training_params=training_params,
            metrics=metrics,
        )
        run.log_artifacts(Path(folder), MODEL_ARTIFACT_PATH)
    name = settings.mlflow.model_name
    tags = {
        TAG_TRAINING_RUN: run.run_id,
        TAG_DATASET_RUN: dataset_run_id,
        TAG_MODEL_TYPE: str(model_config.get("model_type", "")),
        TAG_TICKERS: ",".join(tickers),
    }
    for key, value in (test_summary or {}).items():
        tags[f"{METRIC_TAG_PREFIX}{key}"] = repr(float(value))
    mlflow_client = client(settings)
    with _registry_errors(settings, f"register a version of model {name!r}"):
        try:
            mlflow_client.create_registered_model(name, description="stockcli next-session close forecaster")
        except Exception as exc:
            if _error_code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise
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
    with _registry_errors(settings, f"read the aliases of model {name!r}"):
        try:
            registered = client(settings).get_registered_model(name)
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise
    return {alias: str(version) for alias, version in (registered.aliases or {}).items()}


def resolve_alias(settings: Settings, alias: str = PRODUCTION_ALIAS) -> str | None:
    """The version an alias points at, or None. Resolve once per run and use the number afterwards."""
    return _registered_aliases(settings).get(alias)


def require_production(settings: Settings) -> str:
    """The Production version; raises NoProductionModelError (exit 4) when there is none."""
    version = resolve_alias(settings, PRODUCTION_ALIAS)
    if version is None:
        raise NoProductionModelError("No production model yet.", hint="Run `stockcli retrain --force` first.")
    return version


def set_production(settings: Settings, version: str) -> None:
    """Point the Production alias at `version` (only `promote` calls this, under the run lock)."""
    name = settings.mlflow.model_name
    check_version(settings, version)
    with _registry_errors(settings, f"move the {PRODUCTION_ALIAS} alias of model {name!r}"):
        client(settings).set_registered_model_alias(name, PRODUCTION_ALIAS, str(version))


def check_version(settings: Settings, version: str) -> None:
    """Raise UsageError (exit 2) when `version` is not a registered version of the model."""
    name = settings.mlflow.model_name
    if not str(version).isdigit():
        raise UsageError(
            f"Invalid model version {version!r}.", hint="A version is a number; see `stockcli models`."
        )
    with _registry_errors(settings, f"read version {version} of model {name!r}"):
        try:
            client(settings).get_model_version(name, str(version))
        except Exception as exc:
            if _error_code(exc) == "RESOURCE_DOES_NOT_EXIST":
                raise UsageError(
                    f"Model {name!r} has no version {version}.",
                    hint="See `stockcli models` for the versions.",
                ) from None
            raise


def latest_version(settings: Settings) -> str | None:
    """The newest registered version number, or None when nothing is registered."""
    versions = list_versions(settings)
    return versions[0].version if versions else None


def list_versions(settings: Settings) -> list[ModelVersionInfo]:
    """Every registered version of the model, newest first, with aliases and test metrics."""
    name = settings.mlflow.model_name
    aliases = _registered_aliases(settings)
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    with _registry_errors(settings, f"list the versions of model {name!r}"):
        versions = list(client(settings).search_model_versions(f"name = '{_quote(name)}'", max_results=10000))
    infos = []
    for item in versions:
        tags = dict(item.tags or {})
        metrics = {}
        for key, value in tags.items():
            if key.startswith(METRIC_TAG_PREFIX):
                with contextlib.suppress(ValueError):
                    metrics[key.removeprefix(METRIC_TAG_PREFIX)] = float(value)
        tickers = tags.get(TAG_TICKERS, "")
        infos.append(
            ModelVersionInfo(
                version=str(item.version),
                aliases=tuple(sorted(by_version.get(str(item.version), []))),
                created_at=datetime.fromtimestamp(int(item.creation_timestamp) / 1000, tz=UTC),
                training_run_id=item.run_id or tags.get(TAG_TRAINING_RUN),
                dataset_run_id=tags.get(TAG_DATASET_RUN),
                model_type=tags.get(TAG_MODEL_TYPE),
                tickers=tuple(t for t in tickers.split(",") if t),
                test_metrics=metrics,
                source=str(item.source),
                status=str(item.status),
            )
        )
    infos.sort(key=lambda info: int(info.version), reverse=True)
    return infos


def load_bundle(
    settings: Settings, version: str | int | None = None, *, alias: str = PRODUCTION_ALIAS
) -> ModelBundle:
    """Load a registered version (default: the one `alias` points at) as a ModelBundle.

    Raises NoProductionModelError when the alias points nowhere, UsageError for an unknown version,
    RegistryError when the store cannot be read. Loaded bundles are cached per process (versions are
    immutable).
    """
    if version is None:
        resolved = resolve_alias(settings, alias)
        if resolved is None:
            if alias == PRODUCTION_ALIAS:
                raise NoProductionModelError(
                    "No production model yet.", hint="Run `stockcli retrain --force` first."
                )
            raise UsageError(f"No model version carries the alias {alias!r}.", hint="See `stockcli models`.")
        version = resolved
    version = str(version)
    key = (settings.mlflow_tracking_uri, settings.mlflow.model_name, version)
    with _lock:
        cached = _bundles.get(key)
    if cached is not None:
        return cached
    check_version(settings, version)
    name = settings.mlflow.model_name
    mlflow = _mlflow()
    with _registry_errors(settings, f"read version {version} of model {name!r}"):
        source = client(settings).get_model_version(name, version).source
    with tempfile.TemporaryDirectory(prefix="stockcli-load-") as folder:
        with _registry_errors(settings, f"download the artifacts of model version {version}"):
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=source, dst_path=folder, tracking_uri=settings.mlflow_tracking_uri
            )
        bundle = read_bundle(Path(local), version=version)
    with _lock:
        if len(_bundles) >= _BUNDLE_CACHE_SIZE:
            _bundles.pop(next(iter(_bundles)))
        _bundles[key] = bundle
    return bundle
