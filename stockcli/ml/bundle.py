"""The pickle-free model bundle: what one model version needs to predict, as files in one folder.

`weights.npz` holds the state_dict as plain arrays (read back with `allow_pickle=False`: no code, no pickle),
`bundle.json` the architecture, feature spec, scalers, tickers, calibration, baselines and the weights'
SHA-256, `requirements.txt` the exact stockcli, torch and numpy versions. `bundle_sha256` covers the whole
bundle, so the registry refuses a bundle whose bytes changed since registration, an edited bundle.json as much
as changed weights. This module never imports mlflow.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockcli.errors import RegistryError
from stockcli.jsonable import to_plain
from stockcli.ml.imports import heavy_import

if TYPE_CHECKING:
    from torch import nn

    from stockcli.features.dataset import BuiltSpec

BUNDLE_FILE = "bundle.json"
WEIGHTS_FILE = "weights.npz"
REQUIREMENTS_FILE = "requirements.txt"
# The files the whole-bundle checksum covers, in this order.
CHECKSUMMED_FILES = (BUNDLE_FILE, WEIGHTS_FILE)
# What loading a bundle needs, pinned explicitly (MLflow's requirement inference costs ~10 s a log).
REQUIRED_PACKAGES = ("stockcli", "torch", "numpy")
# 1: no whole-bundle checksum, no context tickers, calibration or baselines. 2: all of them.
BUNDLE_FORMAT = 2

RETRAIN_HINT = "Run `stockcli retrain --force` to train and register a new version."


@dataclass(frozen=True)
class ModelBundle:
    """Everything needed to predict with one model version; `model` is in eval mode on the CPU."""

    model: nn.Module
    model_config: dict[str, Any]
    spec: BuiltSpec
    scalers: dict[str, Any]
    tickers: tuple[str, ...]
    sequence_length: int
    target_kind: str
    dataset_run_id: str
    version: str | None = None
    training_run_id: str | None = None
    training_params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    context_tickers: tuple[str, ...] = ()
    calibration: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, Any] = field(default_factory=dict)
    bundle_sha256: str | None = None  # the whole bundle's checksum, as verified when it was read

    @property
    def data_end(self) -> date | None:
        """The last session of the dataset the model was trained on: the spec's `end_date`, else the date in
        an older bundle's dataset id (`ds-YYYYMMDD-...`); None when neither says."""
        if self.spec.end_date is not None:
            return self.spec.end_date
        match = re.fullmatch(r"ds-(\d{4})(\d{2})(\d{2})-[0-9a-f]+", self.dataset_run_id)
        return date(*(int(part) for part in match.groups())) if match else None


def write_bundle(
    folder: Path,
    *,
    model: nn.Module,
    model_config: Mapping[str, Any],
    spec: BuiltSpec,
    scalers: Mapping[str, Any],
    tickers: Sequence[str],
    sequence_length: int,
    target_kind: str,
    dataset_run_id: str,
    training_run_id: str | None = None,
    training_params: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    context_tickers: Sequence[str] = (),
    calibration: Mapping[str, Any] | None = None,
    baselines: Mapping[str, Any] | None = None,
) -> Path:
    """Write `weights.npz`, `bundle.json` and `requirements.txt` into `folder`; returns the folder."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    requirements = _requirements()
    (folder / REQUIREMENTS_FILE).write_text("\n".join(requirements) + "\n", encoding="utf-8")
    weights_path = folder / WEIGHTS_FILE
    arrays = {name: tensor.detach().cpu().numpy() for name, tensor in model.state_dict().items()}
    np.savez(weights_path, allow_pickle=False, **arrays)
    bundle = {
        "format": BUNDLE_FORMAT,
        "model_config": dict(model_config),
        "spec": spec.to_json(),
        "scalers": dict(scalers),
        "tickers": list(tickers),
        "context_tickers": list(context_tickers),
        "sequence_length": int(sequence_length),
        "target_kind": str(target_kind),
        "dataset_run_id": str(dataset_run_id),
        "training_run_id": training_run_id,
        "training_params": dict(training_params or {}),
        "metrics": dict(metrics or {}),
        "calibration": dict(calibration or {}),
        "baselines": dict(baselines or {}),
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": _file_sha256(weights_path),
        "requirements": requirements,
    }
    text = json.dumps(to_plain(bundle, strict=True), indent=2, sort_keys=True, allow_nan=False)
    (folder / BUNDLE_FILE).write_text(text, encoding="utf-8")
    return folder


def bundle_sha256(folder: Path) -> str:
    """One SHA-256 over each checksummed file's name, size and bytes, in a fixed order; OSError when a file is
    missing or unreadable."""
    digest = hashlib.sha256(b"stockcli-bundle\0")
    for name in CHECKSUMMED_FILES:
        path = folder / name
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


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


def _file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_bundle(
    folder: Path,
    *,
    version: str | None = None,
    expected_sha256: str | None = None,
    require_sha256: bool = False,
) -> ModelBundle:
    """Rebuild a ModelBundle from a folder written by `write_bundle`; unpickles nothing.

    Refuses a bundle whose bytes differ from `expected_sha256` (recorded at registration), or, with
    `require_sha256`, one without a recorded checksum: RegistryError naming the version and what to do.
    """
    import numpy as np

    with heavy_import("torch"):
        import torch

    from stockcli.features.dataset import BuiltSpec
    from stockcli.ml.networks import model_from_config

    where = f"model version {version}" if version else f"model bundle in {folder}"
    try:
        bundle = json.loads((folder / BUNDLE_FILE).read_text(encoding="utf-8"))
        if not isinstance(bundle, dict):
            raise ValueError(f"{BUNDLE_FILE} is not a JSON object")
    except (OSError, ValueError) as exc:
        raise RegistryError(
            f"The {where} has no readable {BUNDLE_FILE}: {str(exc).splitlines()[0]}.",
            hint=f"It was not registered by stockcli or its artifacts are damaged. {RETRAIN_HINT}",
        ) from None
    bundle_format = bundle.get("format", 1)
    if not isinstance(bundle_format, int) or bundle_format < BUNDLE_FORMAT:
        raise RegistryError(
            f"The {where} was saved by an older stockcli (bundle format {bundle_format}, this one reads "
            f"format {BUNDLE_FORMAT}).",
            hint=RETRAIN_HINT,
        )
    if bundle_format > BUNDLE_FORMAT:
        raise RegistryError(
            f"The {where} uses bundle format {bundle_format}, newer than this stockcli ({BUNDLE_FORMAT}).",
            hint="Upgrade stockcli to load it.",
        )
    try:
        actual_sha256 = bundle_sha256(folder)
    except OSError:
        raise RegistryError(
            f"The weights of {where} are missing.",
            hint=f"Its artifacts are damaged. {RETRAIN_HINT}",
        ) from None
    if expected_sha256 is None and require_sha256:
        raise RegistryError(
            f"The {where} has no recorded checksum, so its bundle cannot be verified.",
            hint=RETRAIN_HINT,
        )
    if expected_sha256 is not None and actual_sha256 != expected_sha256:
        raise RegistryError(
            f"The {where} does not match the checksum recorded when it was registered: its "
            f"{BUNDLE_FILE} or {WEIGHTS_FILE} was changed since.",
            hint=f"Do not use it. {RETRAIN_HINT}",
        )
    weights_path = folder / WEIGHTS_FILE
    if _file_sha256(weights_path) != bundle.get("weights_sha256"):
        raise RegistryError(
            f"The weights of {where} do not match their recorded checksum.",
            hint=f"The artifacts were changed or damaged. {RETRAIN_HINT}",
        )
    try:
        model = model_from_config(bundle["model_config"])
        loaded = np.load(weights_path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("the weights file is not an .npz archive of arrays")
        with loaded as arrays:
            state = {name: torch.from_numpy(np.array(arrays[name])) for name in arrays.files}
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError, KeyError, TypeError, AttributeError, OSError, EOFError) as exc:
        raise RegistryError(
            f"The weights of {where} do not fit its architecture: {str(exc).splitlines()[0]}.",
            hint=RETRAIN_HINT,
        ) from None
    model.eval()
    try:
        return ModelBundle(
            model=model,
            model_config=dict(bundle["model_config"]),
            spec=BuiltSpec.from_json(bundle["spec"]),
            scalers=dict(bundle["scalers"]),
            tickers=tuple(bundle["tickers"]),
            sequence_length=int(bundle["sequence_length"]),
            target_kind=str(bundle["target_kind"]),
            dataset_run_id=str(bundle["dataset_run_id"]),
            version=version,
            training_run_id=bundle.get("training_run_id"),
            **{
                key: dict(bundle.get(key) or {})
                for key in ("training_params", "metrics", "calibration", "baselines")
            },
            context_tickers=tuple(bundle.get("context_tickers") or ()),
            bundle_sha256=actual_sha256,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RegistryError(
            f"The {BUNDLE_FILE} of {where} lacks or mangles a field: {type(exc).__name__}: {exc}.",
            hint=RETRAIN_HINT,
        ) from None
