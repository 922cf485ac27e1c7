"""The three architectures: shapes, head-compatible hidden sizes, JSON config round trip, and that each
can fit one small batch almost exactly (a network that cannot overfit 16 samples is broken)."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from stockcli.config import MODEL_TYPES
from stockcli.errors import ConfigError
from stockcli.ml.networks import build_model, effective_hidden_size, model_config, model_from_config
from stockcli.ml.training import TrainParams, train_model

BATCH, STEPS, STOCKS, FEATURES = 16, 6, 3, 4


def _batch(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, STEPS, STOCKS, FEATURES)).astype(np.float32)
    y = rng.standard_normal((BATCH, STOCKS)).astype(np.float32)
    return x, y


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_output_is_one_value_per_stock(model_type: str) -> None:
    model = build_model(
        model_type, n_stocks=STOCKS, n_features=FEATURES, hidden_size=8, num_layers=2, dropout=0.1
    )
    out = model(torch.zeros(5, STEPS, STOCKS, FEATURES))
    assert out.shape == (5, STOCKS)
    # Any sequence length works (the serving side may use a different window than training did).
    assert model(torch.zeros(2, STEPS + 3, STOCKS, FEATURES)).shape == (2, STOCKS)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_each_architecture_overfits_one_small_batch(model_type: str) -> None:
    x, y = _batch()
    params = TrainParams(
        model_type=model_type,
        hidden_size=32,
        num_layers=1,
        dropout=0.0,
        learning_rate=1e-2,
        batch_size=BATCH,
        grad_clip=0.0,
    )
    result = train_model(
        train_x=x, train_y=y, val_x=x, val_y=y, params=params, epochs=100, patience=100, seed=0
    )
    first_loss, last_loss = result.history[0][1], result.history[-1][1]
    assert first_loss > 0.5  # unit-variance targets: an untrained model is far off
    assert last_loss < 0.01 * first_loss, f"{model_type} did not fit 16 samples: {first_loss} -> {last_loss}"
    assert result.best_val_loss < 0.01 * first_loss


def test_lstm_concatenates_stocks_and_cross_attention_encodes_each_stock() -> None:
    plain = build_model(
        "lstm", n_stocks=STOCKS, n_features=FEATURES, hidden_size=8, num_layers=1, dropout=0.0
    )
    cross = build_model(
        "lstm_cross_attention", n_stocks=STOCKS, n_features=FEATURES, hidden_size=8, num_layers=1, dropout=0.0
    )
    assert plain.lstm.input_size == STOCKS * FEATURES
    assert cross.encoder.input_size == FEATURES  # one shared encoder, applied to each stock's own sequence


def test_cross_attention_mixes_information_across_stocks() -> None:
    torch.manual_seed(0)
    model = build_model(
        "lstm_cross_attention", n_stocks=STOCKS, n_features=FEATURES, hidden_size=8, num_layers=1, dropout=0.0
    ).eval()
    x = torch.randn(1, STEPS, STOCKS, FEATURES)
    changed = x.clone()
    changed[:, :, 0] += 1.0  # only stock 0's inputs move
    with torch.no_grad():
        delta = (model(changed) - model(x)).abs()[0]
    assert delta[1] > 0 and delta[2] > 0  # the other stocks' forecasts see it through the attention


@pytest.mark.parametrize(
    ("model_type", "hidden", "heads", "expected"),
    [
        ("lstm_attention", 50, 4, 52),
        ("lstm_cross_attention", 33, 8, 40),
        ("lstm_attention", 3, 4, 4),
        ("lstm_attention", 64, 4, 64),
        ("lstm", 50, 4, 50),  # no attention: the size is used as given
    ],
)
def test_hidden_size_rounds_up_to_a_multiple_of_the_heads(
    model_type: str, hidden: int, heads: int, expected: int
) -> None:
    assert effective_hidden_size(model_type, hidden, heads) == expected
    config = model_config(
        model_type, n_stocks=2, n_features=3, hidden_size=hidden, num_layers=1, dropout=0.0, num_heads=heads
    )
    assert config["hidden_size"] == expected
    model = model_from_config(config)
    assert model(torch.zeros(2, 4, 2, 3)).shape == (2, 2)
    if model_type != "lstm":
        assert model.attention.embed_dim == expected
        assert model.attention.num_heads == heads


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_config_json_and_weights_rebuild_the_same_model(model_type: str) -> None:
    model = build_model(
        model_type, n_stocks=STOCKS, n_features=FEATURES, hidden_size=10, num_layers=2, dropout=0.2
    )
    config = model_config(
        model_type, n_stocks=STOCKS, n_features=FEATURES, hidden_size=10, num_layers=2, dropout=0.2
    )
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = model_from_config(json.loads(json.dumps(config)))
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(3, STEPS, STOCKS, FEATURES)
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="Unknown model type"):
        build_model("transformer", n_stocks=2, n_features=3, hidden_size=8, num_layers=1, dropout=0.0)
    with pytest.raises(ConfigError, match="dropout"):
        build_model("lstm", n_stocks=2, n_features=3, hidden_size=8, num_layers=1, dropout=1.0)
    with pytest.raises(ConfigError, match="not a multiple"):
        model_from_config(
            {
                "model_type": "lstm_attention",
                "n_stocks": 2,
                "n_features": 3,
                "hidden_size": 10,
                "num_layers": 1,
                "dropout": 0.0,
                "num_heads": 4,
            }
        )
    with pytest.raises(ConfigError, match="Invalid model config"):
        model_from_config({"model_type": "lstm"})
    with pytest.raises(ConfigError, match="newer"):
        model_from_config(
            {
                **model_config("lstm", n_stocks=1, n_features=1, hidden_size=2, num_layers=1, dropout=0.0),
                "config_version": 99,
            }
        )


def test_importing_the_ml_modules_does_not_import_torch_or_optuna() -> None:
    code = (
        "import sys; import stockcli.ml.networks, stockcli.ml.training, stockcli.ml.tuning, stockcli.ml.metrics; "
        "print(sorted(m for m in ('torch', 'optuna') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
