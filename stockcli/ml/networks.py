"""The three forecasting networks: (batch, sequence, stocks, features) -> (batch, stocks).

- `lstm`: every step concatenates all stocks' features, one LSTM reads the sequence, a linear head
  maps its last hidden state to one target per stock.
- `lstm_attention`: the same LSTM, then multi-head self-attention over time. Only the last step's
  output feeds the head, so the attention is computed for the last step as query against every
  step (the other rows of a full self-attention would be thrown away), with a residual connection
  and layer norm.
- `lstm_cross_attention`: one LSTM encoder shared by all stocks reads each stock's own sequence; a
  learned per-stock embedding is added to each stock's summary, multi-head attention then mixes
  information across stocks, and a shared linear head gives one target per stock.

Hidden sizes: `nn.MultiheadAttention` needs `embed_dim % num_heads == 0`, so the attention models
round `hidden_size` UP to the next multiple of `num_heads` (e.g. 50 with 4 heads -> 52), and a head
count above the hidden size is impossible by construction. `model_config` records the size actually
used, so a model rebuilt from its config is the same network. The plain `lstm` ignores `num_heads`.

A registry rebuilds a model from `model_config(...)` (plain JSON) plus a state_dict loaded with
`weights_only=True`: nothing is pickled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stockcli.config import MODEL_TYPES
from stockcli.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

CONFIG_VERSION = 1


def effective_hidden_size(model_type: str, hidden_size: int, num_heads: int) -> int:
    """The hidden size a model really uses: attention models round up to a multiple of `num_heads`."""
    if hidden_size < 1:
        raise ConfigError(f"hidden_size must be at least 1, got {hidden_size}.")
    if model_type == "lstm":
        return hidden_size
    if num_heads < 1:
        raise ConfigError(f"num_heads must be at least 1, got {num_heads}.")
    return -(-hidden_size // num_heads) * num_heads


def model_config(
    model_type: str,
    *,
    n_stocks: int,
    n_features: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    num_heads: int = 4,
) -> dict[str, Any]:
    """The JSON-able architecture of a model; `model_from_config` rebuilds the same network."""
    _check_model_type(model_type)
    for label, number in (("n_stocks", n_stocks), ("n_features", n_features), ("num_layers", num_layers)):
        if number < 1:
            raise ConfigError(f"{label} must be at least 1, got {number}.")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}.")
    return {
        "config_version": CONFIG_VERSION,
        "model_type": model_type,
        "n_stocks": int(n_stocks),
        "n_features": int(n_features),
        "hidden_size": effective_hidden_size(model_type, int(hidden_size), int(num_heads)),
        "num_layers": int(num_layers),
        "dropout": float(dropout),
        "num_heads": int(num_heads),
    }


def build_model(
    model_type: str,
    *,
    n_stocks: int,
    n_features: int,
    hidden_size: int,
    num_layers: int,
    dropout: float,
    num_heads: int = 4,
) -> nn.Module:
    """A fresh network mapping (batch, sequence, stocks, features) to (batch, stocks)."""
    config = model_config(
        model_type,
        n_stocks=n_stocks,
        n_features=n_features,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        num_heads=num_heads,
    )
    return model_from_config(config)


def model_from_config(config: dict[str, Any]) -> nn.Module:
    """Rebuild the network described by `model_config` (weights not included)."""
    classes = _classes()
    try:
        model_type = str(config["model_type"])
        _check_model_type(model_type)
        version = int(config.get("config_version", CONFIG_VERSION))
        if version > CONFIG_VERSION:
            raise ConfigError(
                f"Model config version {version} is newer than this stockcli understands ({CONFIG_VERSION}).",
                hint="Upgrade stockcli to load this model.",
            )
        kwargs = {
            "n_stocks": int(config["n_stocks"]),
            "n_features": int(config["n_features"]),
            "hidden_size": int(config["hidden_size"]),
            "num_layers": int(config["num_layers"]),
            "dropout": float(config["dropout"]),
            "num_heads": int(config.get("num_heads", 4)),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid model config {config!r}: {exc}.") from None
    if model_type != "lstm" and kwargs["hidden_size"] % kwargs["num_heads"]:
        raise ConfigError(
            f"Model config hidden_size {kwargs['hidden_size']} is not a multiple of num_heads {kwargs['num_heads']}.",
            hint="Build configs with model_config(), which rounds the hidden size up.",
        )
    model: nn.Module = classes[model_type](**kwargs)
    return model


def _check_model_type(model_type: str) -> None:
    if model_type not in MODEL_TYPES:
        raise ConfigError(f"Unknown model type {model_type!r}.", hint=f"Use one of {', '.join(MODEL_TYPES)}.")


def _classes() -> dict[str, Any]:
    """The network classes, defined on first use so that importing this module does not import torch."""
    global _CLASSES
    if _CLASSES is None:
        _CLASSES = _define_classes()
    return _CLASSES


_CLASSES: dict[str, Any] | None = None


def _define_classes() -> dict[str, Any]:
    import torch
    from torch import nn

    def lstm_dropout(num_layers: int, dropout: float) -> float:
        # nn.LSTM applies dropout between layers only; with one layer it would just warn.
        return dropout if num_layers > 1 else 0.0

    class LstmForecaster(nn.Module):
        """All stocks' features concatenated per step -> LSTM -> last hidden state -> one value per stock."""

        def __init__(
            self,
            *,
            n_stocks: int,
            n_features: int,
            hidden_size: int,
            num_layers: int,
            dropout: float,
            num_heads: int,
        ) -> None:
            super().__init__()
            self.lstm = nn.LSTM(
                n_stocks * n_features,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=lstm_dropout(num_layers, dropout),
            )
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, n_stocks)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, steps = x.shape[0], x.shape[1]
            encoded, _ = self.lstm(x.reshape(batch, steps, -1))
            return self.head(self.dropout(encoded[:, -1]))

    class LstmAttentionForecaster(nn.Module):
        """LSTM over the concatenated features, then multi-head self-attention over time."""

        def __init__(
            self,
            *,
            n_stocks: int,
            n_features: int,
            hidden_size: int,
            num_layers: int,
            dropout: float,
            num_heads: int,
        ) -> None:
            super().__init__()
            self.lstm = nn.LSTM(
                n_stocks * n_features,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=lstm_dropout(num_layers, dropout),
            )
            self.attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
            self.norm = nn.LayerNorm(hidden_size)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, n_stocks)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, steps = x.shape[0], x.shape[1]
            encoded, _ = self.lstm(x.reshape(batch, steps, -1))
            last = encoded[:, -1:]
            attended, _ = self.attention(last, encoded, encoded, need_weights=False)
            summary = self.norm(last + self.dropout(attended))[:, 0]
            return self.head(self.dropout(summary))

    class LstmCrossAttentionForecaster(nn.Module):
        """A shared LSTM encoder per stock, then multi-head attention across stocks."""

        def __init__(
            self,
            *,
            n_stocks: int,
            n_features: int,
            hidden_size: int,
            num_layers: int,
            dropout: float,
            num_heads: int,
        ) -> None:
            super().__init__()
            self.encoder = nn.LSTM(
                n_features,
                hidden_size,
                num_layers=num_layers,
                batch_first=True,
                dropout=lstm_dropout(num_layers, dropout),
            )
            # Attention is blind to order; the embedding tells it which stock a summary belongs to.
            self.stock_embedding = nn.Parameter(torch.randn(n_stocks, hidden_size) * 0.02)
            self.attention = nn.MultiheadAttention(hidden_size, num_heads, dropout=dropout, batch_first=True)
            self.norm = nn.LayerNorm(hidden_size)
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(hidden_size, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            batch, steps, stocks, features = x.shape
            per_stock = x.permute(0, 2, 1, 3).reshape(batch * stocks, steps, features)
            encoded, _ = self.encoder(per_stock)
            summary = encoded[:, -1].reshape(batch, stocks, -1) + self.stock_embedding
            mixed, _ = self.attention(summary, summary, summary, need_weights=False)
            summary = self.norm(summary + self.dropout(mixed))
            return self.head(self.dropout(summary)).squeeze(-1)

    return {
        "lstm": LstmForecaster,
        "lstm_attention": LstmAttentionForecaster,
        "lstm_cross_attention": LstmCrossAttentionForecaster,
    }
