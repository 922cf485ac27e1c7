"""The three forecasting networks: windows in, the next log return's distribution out.

Each network reads (batch, sequence, features) windows, one series' own features followed by the context
covariates, and shares its weights across every series (a global model, as DeepAR). It outputs per window the
location, scale and (Student-t) degrees of freedom of the next return in scaled units: one likelihood-trained
model gives every quantile, never crossing, and P(up) in closed form. `lstm` feeds the last hidden state plus
the last step's own features (a skip connection: recent volatility maps almost linearly to the next) to the
head; `lstm_attention` adds attention of the last step over the window; `lstm_cross_attention` lets each
window attend to the other series' windows of the same date (its `groups` id), so ragged histories work.

This module imports torch: import it inside functions, never on the path of `stockcli --help`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import torch
from torch import nn
from torch.distributions import Distribution, Normal, StudentT
from torch.nn import functional

from stockcli.choices import DISTRIBUTIONS, MODEL_TYPES, check_choice
from stockcli.errors import ConfigError
from stockcli.ml.training import check_architecture

CONFIG_VERSION = 2
# The scale head's bias starts at softplus^-1(1): an untrained model predicts a unit scale, the spread
# of the standardized target, instead of a random one.
_UNIT_SCALE_BIAS = math.log(math.e - 1.0)
MIN_SCALE = 1e-3


def effective_hidden_size(model_type: str, hidden_size: int, num_heads: int) -> int:
    """The hidden size a model really uses: attention models round up to a multiple of `num_heads`."""
    check_architecture(hidden_size=hidden_size)
    if model_type == "lstm":
        return hidden_size
    check_architecture(num_heads=num_heads)
    return -(-hidden_size // num_heads) * num_heads


def model_config(
    model_type: str,
    *,
    n_features: int,
    n_own_features: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    num_heads: int = 4,
    distribution: str = "student_t",
) -> dict[str, Any]:
    """The JSON-able architecture of a model; `model_from_config` rebuilds the same network.

    `n_features` is a window row's width, the first `n_own_features` of them the series' own features.
    Attention models round `hidden_size` up to a multiple of `num_heads` (`nn.MultiheadAttention` needs it);
    the config records the size used.
    """
    check_choice("model type", model_type, MODEL_TYPES)
    check_architecture(n_features=n_features, n_own_features=n_own_features, num_layers=num_layers)
    if n_own_features > n_features:
        raise ConfigError(f"n_own_features ({n_own_features}) cannot exceed n_features ({n_features}).")
    check_architecture(dropout=dropout)
    check_choice("distribution", distribution, DISTRIBUTIONS)
    return {
        "config_version": CONFIG_VERSION,
        "model_type": model_type,
        "n_features": int(n_features),
        "n_own_features": int(n_own_features),
        "hidden_size": effective_hidden_size(model_type, int(hidden_size), int(num_heads)),
        "num_layers": int(num_layers),
        "dropout": float(dropout),
        "num_heads": int(num_heads),
        "distribution": distribution,
    }


def ensemble_config(members: list[dict[str, Any]]) -> dict[str, Any]:
    """The config of a seed ensemble: members of one architecture whose distributions are averaged."""
    if not members:
        raise ConfigError("An ensemble needs at least one member.")
    return {"config_version": CONFIG_VERSION, "model_type": "ensemble", "members": [dict(m) for m in members]}


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild the network described by `model_config` or `ensemble_config` (weights not included)."""
    if config.get("model_type") == "ensemble":
        members = [model_from_config(dict(member)) for member in config.get("members") or []]
        if not members:
            raise ConfigError(f"Invalid model config {config!r}: an ensemble without members.")
        return SeedEnsemble(members)
    try:
        model_type = str(config["model_type"])
        check_choice("model type", model_type, MODEL_TYPES)
        version = int(config.get("config_version", 1))
        if version > CONFIG_VERSION:
            raise ConfigError(
                f"Model config version {version} is newer than this stockcli understands ({CONFIG_VERSION}).",
                hint="Upgrade stockcli to load this model.",
            )
        if version < CONFIG_VERSION:
            raise ConfigError(
                f"Model config version {version} comes from an older stockcli (one input per watchlist).",
                hint="Run `stockcli retrain --force` to train a model of the current kind.",
            )
        kwargs: Architecture = {
            "n_features": int(config["n_features"]),
            "n_own_features": int(config["n_own_features"]),
            "hidden_size": int(config["hidden_size"]),
            "num_layers": int(config["num_layers"]),
            "dropout": float(config["dropout"]),
            "num_heads": int(config.get("num_heads", 4)),
            "distribution": str(config.get("distribution", "student_t")),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid model config {config!r}: {exc}.") from None
    if kwargs["distribution"] not in DISTRIBUTIONS:
        raise ConfigError(f"Invalid model config: unknown distribution {kwargs['distribution']!r}.")
    if model_type != "lstm" and kwargs["hidden_size"] % kwargs["num_heads"]:
        raise ConfigError(
            f"Model config hidden_size {kwargs['hidden_size']} is not a multiple of num_heads {kwargs['num_heads']}.",
            hint="Build configs with model_config(), which rounds the hidden size up.",
        )
    return NETWORKS[model_type](**kwargs)


def predictive_distribution(output: torch.Tensor, distribution: str) -> Normal | StudentT:
    """The next-return distributions of a batch from the network's output (batch, 3): loc, scale, df."""
    loc, scale = output[:, 0], output[:, 1]
    with _unchecked_arguments():
        if distribution == "normal":
            return Normal(loc, scale)
        return StudentT(output[:, 2], loc, scale)


@contextlib.contextmanager
def _unchecked_arguments() -> Iterator[None]:
    """Build distributions without torch's argument checks: a diverging run must give a NaN loss, not an
    error, and each check is a device sync per step. StudentT ignores `validate_args=False` for its Chi2
    sampler, so the default is switched off meanwhile."""
    previous = Distribution._validate_args
    Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        Distribution.set_default_validate_args(previous)


def distribution_nll(output: torch.Tensor, target: torch.Tensor, distribution: str) -> torch.Tensor:
    """Mean negative log-likelihood of `target` (batch,) under the predicted distributions (batch, 3)."""
    return -predictive_distribution(output, distribution).log_prob(target).mean()


class DistributionHead(nn.Module):
    """[summary, last step's own features] -> (location, scale, degrees of freedom)."""

    def __init__(self, hidden_size: int, n_own_features: int, dropout: float, distribution: str) -> None:
        super().__init__()
        self.distribution = distribution
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size + n_own_features, 2)
        with torch.no_grad():
            self.out.weight.mul_(0.1)
            self.out.bias.copy_(torch.tensor([0.0, _UNIT_SCALE_BIAS]))
        # One tail parameter for the whole model: df = 2 + softplus(raw) (finite variance), ~5 at start.
        self.df_raw = nn.Parameter(torch.tensor(2.8))

    def forward(self, summary: torch.Tensor, last_own: torch.Tensor) -> torch.Tensor:
        raw = self.out(torch.cat([self.dropout(summary), last_own], dim=1))
        loc = raw[:, 0]
        scale = functional.softplus(raw[:, 1]) + MIN_SCALE
        if self.distribution == "normal":
            df = torch.full_like(loc, float("inf"))
        else:
            df = (2.0 + functional.softplus(self.df_raw)).expand_as(loc)
        return torch.stack([loc, scale, df], dim=1)


class Architecture(TypedDict):
    """The keyword arguments of every network class (what `model_from_config` reads)."""

    n_features: int
    n_own_features: int
    hidden_size: int
    num_layers: int
    dropout: float
    num_heads: int
    distribution: str


class BaseNetwork(nn.Module):
    """An LSTM over the window and a distribution head; subclasses say how a window is summarised
    (`summarise`, from the LSTM's outputs and each window's date)."""

    def __init__(self, **architecture: Unpack[Architecture]) -> None:
        super().__init__()
        hidden_size, num_layers = architecture["hidden_size"], architecture["num_layers"]
        dropout = architecture["dropout"]
        self.n_own_features = architecture["n_own_features"]
        self.distribution = architecture["distribution"]
        self.lstm = nn.LSTM(
            architecture["n_features"],
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            # nn.LSTM applies dropout between layers only; with one layer it would just warn.
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.head = DistributionHead(hidden_size, self.n_own_features, dropout, self.distribution)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        encoded, _ = self.lstm(x)
        return self.head(self.summarise(encoded, groups), x[:, -1, : self.n_own_features])

    def summarise(self, encoded: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        return encoded[:, -1]


class LstmForecaster(BaseNetwork):
    """LSTM over the window -> last hidden state (+ last step's features) -> distribution."""


class AttendingNetwork(BaseNetwork):
    """The LSTM plus one multi-head attention block with a residual connection and layer norm."""

    def __init__(self, **architecture: Unpack[Architecture]) -> None:
        super().__init__(**architecture)
        hidden_size, dropout = architecture["hidden_size"], architecture["dropout"]
        self.attention = nn.MultiheadAttention(
            hidden_size, architecture["num_heads"], dropout=dropout, batch_first=True
        )
        self.norm = nn.LayerNorm(hidden_size)
        self.dropout = nn.Dropout(dropout)


class LstmAttentionForecaster(AttendingNetwork):
    """LSTM, then multi-head attention of the last step over every step of the window."""

    def summarise(self, encoded: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        last = encoded[:, -1:]
        attended, _ = self.attention(last, encoded, encoded, need_weights=False)
        return self.norm(last + self.dropout(attended))[:, 0]


class LstmCrossAttentionForecaster(AttendingNetwork):
    """LSTM per window, then attention across the windows of the same date (other series)."""

    def summarise(self, encoded: torch.Tensor, groups: torch.Tensor | None) -> torch.Tensor:
        summary = encoded[:, -1]
        tokens = summary.unsqueeze(0)  # one "sequence" whose tokens are the batch's windows
        # True: another date, not attended.
        mask = None if groups is None else groups[:, None] != groups[None, :]
        mixed, _ = self.attention(tokens, tokens, tokens, attn_mask=mask, need_weights=False)
        return self.norm(summary + self.dropout(mixed[0]))


class SeedEnsemble(nn.Module):
    """`[promotion] seeds` networks trained with different seeds, their distribution parameters averaged, so
    one lucky seed cannot win a promotion on its own."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([member(x, groups) for member in self.members]).mean(dim=0)


# One class per `MODEL_TYPES` entry; a seed ensemble of any of them is a `SeedEnsemble`.
NETWORKS: Mapping[str, type[BaseNetwork]] = {
    "lstm": LstmForecaster,
    "lstm_attention": LstmAttentionForecaster,
    "lstm_cross_attention": LstmCrossAttentionForecaster,
}
