"""Training one network on scaled windows: Adam, early stopping, the truly best weights restored.

Pure computation: arrays in, a trained model and its history out. No database, no MLflow, no clock.

- Seeds for Python, NumPy and torch, and a seeded generator for the shuffles: on CPU the same seed
  gives the same losses run after run (with the same thread count).
- The arrays become tensors once, on the target device. An epoch shuffles by an index permutation
  and slices batches out of those tensors, so a step costs the model and nothing else.
- Early stopping watches the validation loss; the weights of the best epoch are kept as a deep copy
  of the state_dict (a plain `state_dict()` holds references that later steps would overwrite) and
  restored at the end.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from stockcli.config import LOSSES, MODEL_TYPES, TrainingSettings
from stockcli.errors import ConfigError, InputDataError, NoDataError
from stockcli.ml.networks import model_config, model_from_config

if TYPE_CHECKING:
    import torch
    from torch import nn

EpochCallback = Callable[[int, float, float], None]


@dataclass(frozen=True)
class TrainParams:
    """The hyper-parameters of one training run (architecture and optimisation)."""

    model_type: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 64
    num_heads: int = 4
    loss: str = "mse"
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off

    def __post_init__(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(
                f"Unknown model type {self.model_type!r}.", hint=f"Use one of {', '.join(MODEL_TYPES)}."
            )
        if self.loss not in LOSSES:
            raise ConfigError(f"Unknown loss {self.loss!r}.", hint=f"Use one of {', '.join(LOSSES)}.")
        for name in ("hidden_size", "num_layers", "batch_size", "num_heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}.")
        if not self.learning_rate > 0.0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.grad_clip < 0.0:
            raise ConfigError(f"grad_clip must be 0 (off) or positive, got {self.grad_clip}.")

    @classmethod
    def from_settings(
        cls, training: TrainingSettings, overrides: Mapping[str, Any] | None = None
    ) -> TrainParams:
        """Parameters from `[training]`, with `overrides` (e.g. tuned best params) on top.

        Keys of `overrides` that are not TrainParams fields are ignored, so a stored best-params dict
        with extra information can be passed as it is.
        """
        names = {f.name for f in fields(cls)}
        values: dict[str, Any] = {name: getattr(training, name) for name in names}
        for key, value in (overrides or {}).items():
            if key in names and value is not None:
                values[key] = value
        # JSON and Optuna may hand back 64 as 64.0 and vice versa: give each field its own type.
        types = {f.name: f.type for f in fields(cls)}
        coerced: dict[str, Any] = {}
        for name, value in values.items():
            if types[name] in ("int", int):
                coerced[name] = int(value)
            elif types[name] in ("float", float):
                coerced[name] = float(value)
            else:
                coerced[name] = value
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TrainResult:
    """A trained model (best-epoch weights restored) and how training went."""

    model: nn.Module
    best_epoch: int
    best_val_loss: float
    history: list[tuple[int, float, float]]  # (epoch, train_loss, val_loss), epochs from 1
    epochs_run: int
    stopped_early: bool
    samples_per_s: float  # training samples per second of optimisation steps (validation excluded)
    config: dict[str, Any]  # model_config(): rebuild with networks.model_from_config
    params: TrainParams = field(default_factory=TrainParams)
    seed: int = 0
    train_time_s: float = 0.0
    wall_s: float = 0.0
    diverged: bool = False


def resolve_device(name: str) -> str:
    """`cpu`, `cuda[:N]`, or `auto` (CUDA when available); raises ConfigError for CUDA without CUDA."""
    import torch

    wanted = (name or "cpu").strip().lower()
    if wanted == "cpu":
        return "cpu"
    if wanted == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if wanted == "cuda" or wanted.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"Device {name!r} requested but CUDA is not available on this machine.",
                hint='Set [training] device = "cpu" (or "auto" to use a GPU only when there is one).',
            )
        return wanted
    raise ConfigError(f"Unknown device {name!r}.", hint="Use cpu, cuda or auto.")


def default_threads() -> int:
    """Half the cores this process may run on, at least one: 1 on the 2-core target machines.

    Measured on 2 cores: with both cores busy elsewhere (a database, another tune worker, a test
    run), two intra-op threads made LSTM steps 2-5x slower than one, because each parallel region
    waits for a descheduled thread; on an idle machine two threads gained far less than that. One
    thread per two cores is the safe default; `[training] num_threads` overrides it.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        available = os.cpu_count() or 1
    return max(1, available // 2)


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to `num_threads` (None or 0: `default_threads()`); returns it."""
    import torch

    wanted = num_threads if num_threads else default_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and, when present, every CUDA device)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def make_loss(name: str) -> nn.Module:
    """The loss module for `mse`, `mae` or `huber` (delta 1 on the scaled targets)."""
    from torch import nn

    if name == "mse":
        return nn.MSELoss()
    if name == "mae":
        return nn.L1Loss()
    if name == "huber":
        return nn.HuberLoss(delta=1.0)
    raise ConfigError(f"Unknown loss {name!r}.", hint=f"Use one of {', '.join(LOSSES)}.")


def train_model(
    *,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    params: TrainParams,
    epochs: int,
    patience: int,
    seed: int,
    device: str = "cpu",
    on_epoch: EpochCallback | None = None,
    num_threads: int | None = None,
) -> TrainResult:
    """Train a fresh network; stop when validation has not improved for `patience` epochs.

    `x` arrays are (windows, sequence, stocks, features), `y` arrays (windows, stocks), float32.
    `on_epoch(epoch, train_loss, val_loss)` runs after every epoch; whatever it raises (for instance
    `optuna.TrialPruned`) propagates. Training also stops when a loss becomes NaN or infinite
    (`diverged`); the best finite epoch is kept.

    Raises InputDataError for mismatched or non-finite arrays, NoDataError for an empty split.
    """
    import torch

    started = time.perf_counter()
    _check_split("training", train_x, train_y)
    _check_split("validation", val_x, val_y)
    if train_x.shape[1:] != val_x.shape[1:] or train_y.shape[1:] != val_y.shape[1:]:
        raise InputDataError(
            f"Training windows {train_x.shape[1:]} and validation windows {val_x.shape[1:]} differ in shape.",
            hint="Both splits must come from the same built dataset.",
        )
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}.")
    if patience < 1:
        raise ConfigError(f"patience must be at least 1, got {patience}.")

    configure_threads(num_threads)
    target = torch.device(resolve_device(device))
    seed_everything(seed)
    n_stocks, n_features = int(train_x.shape[2]), int(train_x.shape[3])
    config = model_config(
        params.model_type,
        n_stocks=n_stocks,
        n_features=n_features,
        hidden_size=params.hidden_size,
        num_layers=params.num_layers,
        dropout=params.dropout,
        num_heads=params.num_heads,
    )
    model = model_from_config(config).to(target)
    loss_fn = make_loss(params.loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    weights = [p for p in model.parameters() if p.requires_grad]

    tx, ty = _tensor(train_x, target), _tensor(train_y, target)
    vx, vy = _tensor(val_x, target), _tensor(val_y, target)
    n_train = tx.shape[0]
    batch_size = min(params.batch_size, n_train)
    shuffle = torch.Generator().manual_seed(seed)

    history: list[tuple[int, float, float]] = []
    best_val_loss = math.inf
    best_epoch = 0
    best_state: dict[str, Any] | None = None
    epochs_since_best = 0
    stopped_early = diverged = False
    train_time_s = 0.0

    for epoch in range(1, epochs + 1):
        model.train()
        step_started = time.perf_counter()
        order = torch.randperm(n_train, generator=shuffle).to(target)
        loss_sum = torch.zeros((), device=target)
        for start in range(0, n_train, batch_size):
            index = order[start : start + batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(tx.index_select(0, index)), ty.index_select(0, index))
            loss.backward()
            if params.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(weights, params.grad_clip)
            optimizer.step()
            loss_sum += loss.detach() * index.shape[0]
        train_loss = float(loss_sum) / n_train  # one device sync per epoch, not per step
        train_time_s += time.perf_counter() - step_started
        val_loss = _mean_loss(model, loss_fn, vx, vy)
        history.append((epoch, train_loss, val_loss))

        if math.isfinite(val_loss) and val_loss < best_val_loss:
            best_val_loss, best_epoch, epochs_since_best = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            epochs_since_best += 1
        if on_epoch is not None:
            on_epoch(epoch, train_loss, val_loss)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            diverged = True
            break
        if epochs_since_best >= patience and epoch < epochs:
            stopped_early = True
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    epochs_run = len(history)
    return TrainResult(
        model=model,
        best_epoch=best_epoch,
        best_val_loss=best_val_loss,
        history=history,
        epochs_run=epochs_run,
        stopped_early=stopped_early,
        samples_per_s=(n_train * epochs_run / train_time_s) if train_time_s > 0 else 0.0,
        config=config,
        params=params,
        seed=seed,
        train_time_s=train_time_s,
        wall_s=time.perf_counter() - started,
        diverged=diverged,
    )


def predict(model: nn.Module, x: np.ndarray, *, batch_size: int = 1024, device: str = "cpu") -> np.ndarray:
    """Model outputs (windows, stocks) as float32 for windows `x` (windows, sequence, stocks, features)."""
    import torch

    if x.ndim != 4:
        raise InputDataError(f"Expected windows of shape (n, sequence, stocks, features), got {x.shape}.")
    target = torch.device(resolve_device(device))
    model = model.to(target).eval()
    if x.shape[0] == 0:
        return np.zeros((0, x.shape[2]), dtype=np.float32)
    outputs = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            chunk = torch.as_tensor(np.ascontiguousarray(x[start : start + batch_size], dtype=np.float32))
            outputs.append(model(chunk.to(target)).float().cpu().numpy())
    return np.concatenate(outputs, axis=0)


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    import torch

    return torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def _mean_loss(
    model: nn.Module, loss_fn: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
) -> float:
    import torch

    model.eval()
    total = torch.zeros((), device=x.device)
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            chunk_x, chunk_y = x[start : start + batch_size], y[start : start + batch_size]
            total += loss_fn(model(chunk_x), chunk_y) * chunk_x.shape[0]
    return float(total) / x.shape[0]


def _check_split(name: str, x: np.ndarray, y: np.ndarray) -> None:
    if x.ndim != 4 or y.ndim != 2:
        raise InputDataError(
            f"The {name} split has shapes {x.shape} and {y.shape}; expected x (n, sequence, stocks, features) "
            "and y (n, stocks)."
        )
    if x.shape[0] != y.shape[0] or x.shape[2] != y.shape[1]:
        raise InputDataError(f"The {name} split's x {x.shape} and y {y.shape} do not match.")
    if x.shape[0] == 0:
        raise NoDataError(
            f"The {name} split is empty.",
            hint="Build the dataset over a longer date range or change [dataset] fractions.",
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise InputDataError(
            f"The {name} split holds NaN or infinite values.",
            hint="Rebuild the dataset (`stockcli build`); its scalers must produce finite inputs.",
        )
