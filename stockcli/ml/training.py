"""Training one network on scaled windows: Adam, early stopping, the best epoch's weights restored.

On CPU the same seed gives the same losses run after run (with the same thread count). The arrays become
tensors once, on the target device, and batches are sliced out of them, so a step costs the model and nothing
else.
"""

from __future__ import annotations

import copy
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from stockcli.choices import DISTRIBUTIONS, check_choice
from stockcli.config import MODEL_TYPES, TrainingSettings
from stockcli.errors import ConfigError, InputDataError, NoDataError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from stockcli.features.dataset import WindowSet

EpochCallback = Callable[[int, float, float], None]


def check_architecture(*, dropout: float | None = None, **sizes: int) -> None:
    """Raise ConfigError for a size below 1 (in the order given), then for a dropout outside [0, 1)."""
    for name, size in sizes.items():
        if size < 1:
            raise ConfigError(f"{name} must be at least 1, got {size}.")
    if dropout is not None and not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")


@dataclass(frozen=True)
class TrainParams:
    """The hyper-parameters of one training run (architecture and optimisation)."""

    model_type: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 128
    num_heads: int = 4
    distribution: str = "student_t"
    grad_clip: float = 1.0  # max gradient norm; 0 turns clipping off

    def __post_init__(self) -> None:
        check_choice("model type", self.model_type, MODEL_TYPES)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        names = ("hidden_size", "num_layers", "batch_size", "num_heads")
        check_architecture(dropout=self.dropout, **{name: getattr(self, name) for name in names})
        if not self.learning_rate > 0.0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.grad_clip < 0.0:
            raise ConfigError(f"grad_clip must be 0 (off) or positive, got {self.grad_clip}.")

    @classmethod
    def from_settings(
        cls, training: TrainingSettings, overrides: Mapping[str, Any] | None = None
    ) -> TrainParams:
        """Parameters from `[training]` with `overrides` (e.g. tuned best params) on top; keys that are not
        fields are ignored, so a stored best-params dict can be passed as it is."""
        types = {f.name: f.type for f in fields(cls)}
        values = {name: getattr(training, name) for name in types if hasattr(training, name)}
        values |= {
            key: value for key, value in (overrides or {}).items() if key in types and value is not None
        }
        # JSON and Optuna may hand back 64 as 64.0 and vice versa: give each field its own type.
        casts: dict[Any, Callable[[Any], Any]] = {"int": int, "float": float}
        return cls(
            **{name: casts.get(types[name], lambda same: same)(value) for name, value in values.items()}
        )

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
    """Half the cores this process may run on, at least one.

    Measured on 2 cores busy elsewhere: two intra-op threads made LSTM steps 2-5x slower than one (each
    parallel region waits for a descheduled thread). `[training] num_threads` overrides it.
    """
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        available = os.cpu_count() or 1
    return max(1, available // 2)


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads to `num_threads` (None or 0: `default_threads()`); returns it."""
    import torch

    wanted = num_threads or default_threads()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return wanted


def _batches_by_row(rows: np.ndarray, max_windows: int, order: np.ndarray | None = None) -> list[np.ndarray]:
    """Window indexes grouped so that all windows of one row (date) share a batch of at least `max_windows`
    windows (a date is never split)."""
    if len(rows) == 0:
        return []
    by_row = np.argsort(rows, kind="stable")
    groups = np.split(by_row, np.flatnonzero(np.diff(rows[by_row])) + 1)
    batches: list[np.ndarray] = []
    current: list[np.ndarray] = []
    size = 0
    for group in groups if order is None else (groups[i] for i in order):
        current.append(group)
        size += len(group)
        if size >= max_windows:
            batches.append(np.concatenate(current))
            current, size = [], 0
    if current:
        batches.append(np.concatenate(current))
    return batches


class _DeviceWindows:
    """A WindowSet's arrays as tensors on the training device; `batch(index)` gathers windows."""

    def __init__(self, windows: WindowSet, device: torch.device) -> None:
        import torch

        self.windows = windows
        self.slab = torch.as_tensor(np.ascontiguousarray(windows.slab, dtype=np.float32)).to(device)
        self.context = torch.as_tensor(np.ascontiguousarray(windows.context, dtype=np.float32)).to(device)
        self.rows = torch.as_tensor(windows.rows, dtype=torch.long).to(device)
        self.series = torch.as_tensor(windows.series, dtype=torch.long).to(device)
        self.y = torch.as_tensor(np.nan_to_num(windows.y.astype(np.float32)), dtype=torch.float32).to(device)
        self.offsets = torch.arange(-windows.sequence_length + 1, 1, device=device)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        import torch

        rows = self.rows.index_select(0, index)
        steps = rows[:, None] + self.offsets[None, :]
        own = self.slab[steps, self.series.index_select(0, index)[:, None]]
        x = torch.cat([own, self.context[steps]], dim=2)
        return x, rows, self.y.index_select(0, index)


def train_model(
    *,
    train: WindowSet,
    validation: WindowSet,
    params: TrainParams,
    epochs: int,
    patience: int,
    seed: int,
    device: str = "cpu",
    on_epoch: EpochCallback | None = None,
    num_threads: int | None = None,
    init_state: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Train a network by likelihood; stop when validation has not improved for `patience` epochs.

    The network starts fresh (seeded) or from `init_state` (a state_dict of the same architecture). The
    cross-attention model is batched by whole dates, since each window attends to the others of its date.
    `on_epoch(epoch, train_loss, val_loss)` runs after every epoch and what it raises (e.g.
    `optuna.TrialPruned`) propagates. A NaN or infinite loss stops training (`diverged`), keeping the best
    finite epoch. Raises InputDataError for mismatched or non-finite arrays, NoDataError for an empty split.
    """
    import torch

    started = time.perf_counter()
    _check_inputs(train=train, validation=validation, epochs=epochs, patience=patience)
    configure_threads(num_threads)
    target = torch.device(resolve_device(device))
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)  # the CPU and every CUDA device
    model, config = _initial_model(params=params, windows=train, init_state=init_state)
    model = model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.learning_rate)
    cross = params.model_type == "lstm_cross_attention"
    data = _DeviceWindows(train, target)
    held_out = _DeviceWindows(validation, target)
    validation_batches = [
        torch.as_tensor(b, dtype=torch.long, device=target) for b in _batches_by_row(validation.rows, 1024)
    ]
    batch_size = min(params.batch_size, len(train))
    shuffle = np.random.default_rng(seed)

    history: list[tuple[int, float, float]] = []
    best_val_loss = math.inf
    best_epoch = 0
    best_state: dict[str, Any] | None = None
    epochs_since_best = 0
    stopped_early = diverged = False
    train_time_s = 0.0
    for epoch in range(1, epochs + 1):
        step_started = time.perf_counter()
        if cross:
            batches = _batches_by_row(
                train.rows, batch_size, order=shuffle.permutation(len(np.unique(train.rows)))
            )
        else:
            order = shuffle.permutation(len(train))
            batches = [order[start : start + batch_size] for start in range(0, len(train), batch_size)]
        train_loss = _epoch_loss(model, data, batches, params, optimizer)
        train_time_s += time.perf_counter() - step_started
        val_loss = _epoch_loss(model, held_out, validation_batches, params)
        history.append((epoch, train_loss, val_loss))

        if math.isfinite(val_loss) and val_loss < best_val_loss:
            best_val_loss, best_epoch, epochs_since_best = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())  # state_dict() holds live references
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
        samples_per_s=(len(train) * epochs_run / train_time_s) if train_time_s > 0 else 0.0,
        config=config,
        params=params,
        seed=seed,
        train_time_s=train_time_s,
        wall_s=time.perf_counter() - started,
        diverged=diverged,
    )


def _check_inputs(*, train: WindowSet, validation: WindowSet, epochs: int, patience: int) -> None:
    for name, windows in (("training", train), ("validation", validation)):
        if windows.slab.ndim != 3 or windows.context.ndim != 2:
            raise InputDataError(
                f"The {name} split has a slab of shape {windows.slab.shape} and context {windows.context.shape}; "
                "expected (rows, series, features) and (rows, columns)."
            )
        if len(windows) == 0:
            raise NoDataError(
                f"The {name} split is empty.",
                hint="Build the dataset over a longer date range or change [dataset] fractions.",
            )
        if len(windows.y) != len(windows):
            raise InputDataError(f"The {name} split has {len(windows.y)} targets for {len(windows)} windows.")
        if not all(np.isfinite(values).all() for values in (windows.slab, windows.context, windows.y)):
            raise InputDataError(
                f"The {name} split holds NaN or infinite values.",
                hint="Rebuild the dataset (`stockcli build`); its scalers must produce finite inputs.",
            )
    if train.n_features != validation.n_features or train.n_own_features != validation.n_own_features:
        raise InputDataError(
            f"Training windows ({train.n_features} features) and validation windows "
            f"({validation.n_features}) differ in shape.",
            hint="Both splits must come from the same built dataset.",
        )
    if epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {epochs}.")
    if patience < 1:
        raise ConfigError(f"patience must be at least 1, got {patience}.")


def _initial_model(
    *, params: TrainParams, windows: WindowSet, init_state: Mapping[str, Any] | None
) -> tuple[nn.Module, dict[str, Any]]:
    import torch

    from stockcli.ml.networks import model_config, model_from_config

    config = model_config(
        params.model_type,
        n_features=windows.n_features,
        n_own_features=windows.n_own_features,
        hidden_size=params.hidden_size,
        num_layers=params.num_layers,
        dropout=params.dropout,
        num_heads=params.num_heads,
        distribution=params.distribution,
    )
    model = model_from_config(config)
    if init_state is not None:
        try:
            model.load_state_dict({k: torch.as_tensor(v) for k, v in init_state.items()}, strict=True)
        except (RuntimeError, KeyError) as exc:
            raise ConfigError(
                f"The weights to start from do not fit this architecture: {str(exc).splitlines()[0]}"
            ) from None
    return model, config


def _epoch_loss(
    model: nn.Module,
    data: _DeviceWindows,
    batches: Sequence[np.ndarray | torch.Tensor],
    params: TrainParams,
    optimizer: torch.optim.Optimizer | None = None,
) -> float:
    """The mean loss per window of `data` over `batches`; with an optimizer, a training step per batch."""
    import torch

    from stockcli.ml.networks import distribution_nll

    cross = params.model_type == "lstm_cross_attention"
    weights = [p for p in model.parameters() if p.requires_grad]
    device = data.y.device
    model.train(optimizer is not None)
    loss_sum = torch.zeros((), device=device)
    with torch.inference_mode(optimizer is None):
        for chosen in batches:
            index = torch.as_tensor(chosen, dtype=torch.long, device=device)
            x, rows, y = data.batch(index)
            loss = distribution_nll(model(x, rows if cross else None), y, params.distribution)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if params.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(weights, params.grad_clip)
                optimizer.step()
            loss_sum += loss.detach() * index.shape[0]
    return float(loss_sum) / len(data.windows)  # one device sync per epoch, not per step


def predict_distribution(
    model: nn.Module, windows: WindowSet, *, batch_size: int = 1024, device: str = "cpu"
) -> np.ndarray:
    """(n, 3) float64 location, scale and degrees of freedom of each window's next scaled return, batched by
    date so the cross-attention model sees every series of a date together."""
    import torch

    if len(windows) == 0:
        return np.zeros((0, 3), dtype=np.float64)
    target = torch.device(resolve_device(device))
    model = model.to(target).eval()
    data = _DeviceWindows(windows, target)
    out = np.zeros((len(windows), 3), dtype=np.float64)
    with torch.inference_mode():
        for chosen in _batches_by_row(windows.rows, batch_size):
            index = torch.as_tensor(chosen, dtype=torch.long, device=target)
            x, rows, _ = data.batch(index)
            out[chosen] = model(x, rows).double().cpu().numpy()
    return out
