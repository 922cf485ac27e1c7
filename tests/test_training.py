"""train_model: best-epoch weights truly restored, early stopping, determinism, tensors prepared once,
callbacks, predict, devices and input checks. Real tiny models on CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna
import pytest
import torch

from stockcli.config import TrainingSettings
from stockcli.errors import ConfigError, InputDataError, NoDataError
from stockcli.ml import training
from stockcli.ml.training import TrainParams, make_loss, predict, resolve_device, train_model

TINY = TrainParams(
    model_type="lstm", hidden_size=8, num_layers=1, dropout=0.0, learning_rate=1e-2, batch_size=16
)


def _data(seed: int = 1, n: int = 48, val: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + val, 5, 2, 3)).astype(np.float32)
    # A learnable target: a fixed mix of the last step's features, plus noise.
    y = (x[:, -1] @ np.array([0.5, -0.3, 0.2], dtype=np.float32)) + 0.1 * rng.standard_normal((n + val, 2))
    y = y.astype(np.float32)
    return {"train_x": x[:n], "train_y": y[:n], "val_x": x[n:], "val_y": y[n:]}


def _overshooting_data() -> dict[str, np.ndarray]:
    """Training targets 2, validation targets 0.5: from an initial output near 0 the validation loss
    falls while the outputs approach 0.5, then rises as training pushes them on towards 2."""
    rng = np.random.default_rng(1)
    return {
        "train_x": rng.standard_normal((48, 5, 2, 3)).astype(np.float32),
        "train_y": np.full((48, 2), 2.0, dtype=np.float32),
        "val_x": rng.standard_normal((16, 5, 2, 3)).astype(np.float32),
        "val_y": np.full((16, 2), 0.5, dtype=np.float32),
    }


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_restored_weights_are_those_of_the_best_epoch_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[torch.nn.Module] = []
    real_from_config = training.model_from_config

    def capture(config: dict[str, Any]) -> torch.nn.Module:
        built.append(real_from_config(config))
        return built[-1]

    monkeypatch.setattr(training, "model_from_config", capture)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(epoch: int, train_loss: float, val_loss: float) -> None:
        snapshots[epoch] = _weights(built[0])

    patience = 4
    result = train_model(
        **_overshooting_data(), params=TINY, epochs=40, patience=patience, seed=3, on_epoch=snapshot
    )
    val_losses = [val for _, _, val in result.history]
    best = int(np.argmin(val_losses)) + 1
    assert 1 < best < result.epochs_run, "the constructed case must improve, then get worse"
    assert all(later > val_losses[best - 1] for later in val_losses[best:])  # worse after the best epoch
    assert result.best_epoch == best
    assert result.best_val_loss == pytest.approx(val_losses[best - 1])
    assert result.stopped_early and result.epochs_run == best + patience

    final = _weights(result.model)
    assert _same(final, snapshots[best])
    assert not _same(final, snapshots[result.epochs_run])  # the last epoch's weights were NOT kept
    # The restored model really is the best one: its validation loss is the best epoch's.
    data = _overshooting_data()
    predicted = predict(result.model, data["val_x"])
    assert float(np.mean((predicted - data["val_y"]) ** 2)) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_same_seed_same_losses_and_weights_other_seed_differs() -> None:
    runs = [train_model(**_data(), params=TINY, epochs=4, patience=10, seed=seed) for seed in (7, 7, 8)]
    assert runs[0].history == runs[1].history
    assert _same(_weights(runs[0].model), _weights(runs[1].model))
    assert runs[0].history != runs[2].history


def test_dropout_and_shuffling_are_seeded_too() -> None:
    params = TrainParams(model_type="lstm_attention", hidden_size=8, num_layers=2, dropout=0.3, batch_size=8)
    first = train_model(**_data(), params=params, epochs=3, patience=10, seed=11)
    second = train_model(**_data(), params=params, epochs=3, patience=10, seed=11)
    assert first.history == second.history


def test_on_epoch_runs_every_epoch_and_its_exceptions_propagate() -> None:
    seen: list[tuple[int, float, float]] = []
    result = train_model(
        **_data(), params=TINY, epochs=3, patience=10, seed=0, on_epoch=lambda *a: seen.append(a)
    )
    assert seen == result.history and [e for e, _, _ in seen] == [1, 2, 3]
    assert result.epochs_run == 3 and not result.stopped_early

    def prune(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch == 2:
            raise optuna.TrialPruned("hopeless")

    with pytest.raises(optuna.TrialPruned, match="hopeless"):
        train_model(**_data(), params=TINY, epochs=5, patience=10, seed=0, on_epoch=prune)


def test_arrays_become_tensors_once_not_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"as_tensor": 0, "from_numpy": 0}
    real_as_tensor, real_from_numpy = torch.as_tensor, torch.from_numpy

    def counting_as_tensor(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["as_tensor"] += 1
        return real_as_tensor(*args, **kwargs)

    def counting_from_numpy(*args: Any, **kwargs: Any) -> torch.Tensor:
        calls["from_numpy"] += 1
        return real_from_numpy(*args, **kwargs)

    monkeypatch.setattr(torch, "as_tensor", counting_as_tensor)
    monkeypatch.setattr(torch, "from_numpy", counting_from_numpy)
    params = TrainParams(model_type="lstm", hidden_size=4, dropout=0.0, batch_size=4)  # 12 steps per epoch
    train_model(**_data(), params=params, epochs=3, patience=10, seed=0)
    assert calls["as_tensor"] + calls["from_numpy"] == 4  # train x/y and validation x/y, once each


def test_losses_and_gradient_clipping_are_configurable() -> None:
    histories = {
        loss: train_model(
            **_data(), params=TrainParams(**{**TINY.to_dict(), "loss": loss}), epochs=2, patience=5, seed=0
        ).history
        for loss in ("mse", "mae", "huber")
    }
    assert len({h[0][1] for h in histories.values()}) == 3  # three different losses were minimised
    prediction, target = torch.tensor([0.0, 3.0]), torch.tensor([0.0, 0.0])
    assert make_loss("mse")(prediction, target).item() == pytest.approx(4.5)
    assert make_loss("mae")(prediction, target).item() == pytest.approx(1.5)
    assert make_loss("huber")(prediction, target).item() == pytest.approx((3.0 - 0.5) / 2)
    clipped = train_model(
        **_data(), params=TrainParams(**{**TINY.to_dict(), "grad_clip": 1e-6}), epochs=2, patience=5, seed=0
    )
    free = train_model(
        **_data(), params=TrainParams(**{**TINY.to_dict(), "grad_clip": 0.0}), epochs=2, patience=5, seed=0
    )
    # With the gradient norm clipped to almost nothing, Adam's steps stay the same size but the
    # trajectory differs from an unclipped run.
    assert clipped.history != free.history


def test_predict_matches_the_model_in_any_batch_size() -> None:
    data = _data()
    result = train_model(**data, params=TINY, epochs=2, patience=5, seed=0)
    whole = predict(result.model, data["val_x"])
    chunked = predict(result.model, data["val_x"], batch_size=3)
    assert whole.shape == (16, 2) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, chunked, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        direct = result.model(torch.from_numpy(data["val_x"])).numpy()
    np.testing.assert_allclose(whole, direct, rtol=1e-6, atol=1e-7)
    assert predict(result.model, data["val_x"][:0]).shape == (0, 2)


def test_result_describes_the_run() -> None:
    result = train_model(**_data(), params=TINY, epochs=2, patience=5, seed=0)
    assert result.samples_per_s > 0 and result.train_time_s > 0 and result.wall_s >= result.train_time_s
    assert (
        result.config["model_type"] == "lstm"
        and result.config["n_stocks"] == 2
        and result.config["n_features"] == 3
    )
    assert result.params == TINY and result.seed == 0
    assert not result.model.training  # handed back in eval mode


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train_model(**_data(), params=TINY, epochs=1, patience=1, seed=0, device="cuda")


def test_bad_inputs_are_refused_with_a_clear_error() -> None:
    data = _data()
    broken = dict(data, train_x=data["train_x"].copy())
    broken["train_x"][0, 0, 0, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        train_model(**broken, params=TINY, epochs=1, patience=1, seed=0)
    with pytest.raises(NoDataError, match="validation split is empty"):
        train_model(
            **dict(data, val_x=data["val_x"][:0], val_y=data["val_y"][:0]),
            params=TINY,
            epochs=1,
            patience=1,
            seed=0,
        )
    with pytest.raises(InputDataError, match="do not match"):
        train_model(**dict(data, train_y=data["train_y"][:5]), params=TINY, epochs=1, patience=1, seed=0)
    with pytest.raises(InputDataError, match="differ in shape"):
        train_model(**dict(data, val_x=data["val_x"][:, :3]), params=TINY, epochs=1, patience=1, seed=0)


def test_train_params_from_settings_with_overrides() -> None:
    base = TrainingSettings(
        model_type="lstm", hidden_size=64, learning_rate=1e-3, loss="huber", grad_clip=0.5
    )
    params = TrainParams.from_settings(
        base, {"model_type": "lstm_attention", "hidden_size": 40, "learning_rate": 0.01, "best_epoch": 3}
    )
    assert params.model_type == "lstm_attention" and params.hidden_size == 40 and params.learning_rate == 0.01
    assert params.loss == "huber" and params.grad_clip == 0.5  # not tuned: from [training]
    assert TrainParams.from_settings(base) == TrainParams(loss="huber", grad_clip=0.5)
    for bad in (
        {"model_type": "gru"},
        {"loss": "hinge"},
        {"dropout": 1.5},
        {"batch_size": 0},
        {"learning_rate": 0},
    ):
        with pytest.raises(ConfigError):
            TrainParams(**{**TINY.to_dict(), **bad})


def test_a_diverging_run_stops_at_once() -> None:
    data = _data()
    seen: list[int] = []
    # Targets so large that the squared error overflows float32: the loss is infinite from the start.
    exploding = dict(data, train_y=data["train_y"] * 1e30, val_y=data["val_y"] * 1e30)
    result = train_model(
        **exploding, params=TINY, epochs=20, patience=20, seed=0, on_epoch=lambda e, *_: seen.append(e)
    )
    assert result.diverged and result.epochs_run == 1 and seen == [1]
    assert result.best_epoch == 0 and result.best_val_loss == float("inf")
