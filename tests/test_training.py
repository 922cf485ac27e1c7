"""train_model on pooled windows: it learns a known distribution, keeps the truly best epoch's weights,
stops early, is seeded, batches the cross-attention model by date, handles divergence and bad input;
predict_distribution gives the same numbers however the windows are batched. Real tiny models on CPU."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import optuna
import pytest
import torch

from stockcli.config import MODEL_TYPES, TrainingSettings
from stockcli.errors import ConfigError, InputDataError, NoDataError
from stockcli.ml import networks
from stockcli.ml.networks import distribution_nll
from stockcli.ml.training import (
    TrainParams,
    _batches_by_row,
    predict_distribution,
    resolve_device,
    train_model,
)
from tests.model_helpers import (
    Splits,
    hand_windows,
    random_windows,
    rows_between,
    subset,
    volatility_process,
)

TINY = TrainParams(
    model_type="lstm",
    hidden_size=8,
    num_layers=1,
    dropout=0.0,
    learning_rate=1e-2,
    batch_size=16,
    num_heads=2,
)


def _splits(seed: int = 1) -> Splits:
    """64 training windows (3 series) and 27 validation windows on later dates."""
    windows = random_windows(seed, n_rows=34, n_series=3)
    return {"train": rows_between(windows, 0, 25), "validation": rows_between(windows, 25, 34)}


def _overshooting() -> Splits:
    """Training targets 2, validation targets 1: from an initial location near 0 the validation loss
    falls while the locations approach 1, then rises as training pushes them on towards 2 with an
    ever narrower scale."""
    rng = np.random.default_rng(1)
    target = np.where(np.arange(40)[:, None] < 28, 2.0, 1.0) * np.ones((40, 2))
    windows = hand_windows(rng.standard_normal((40, 2, 3)), target, sequence_length=5)
    return {"train": rows_between(windows, 0, 27), "validation": rows_between(windows, 28, 40)}


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _capture_models(monkeypatch: pytest.MonkeyPatch) -> list[torch.nn.Module]:
    built: list[torch.nn.Module] = []
    real_from_config = networks.model_from_config

    def capture(config: dict[str, Any]) -> torch.nn.Module:
        built.append(real_from_config(config))
        return built[-1]

    monkeypatch.setattr(networks, "model_from_config", capture)
    return built


# --- it learns what it should ---------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_predicted_scale_follows_the_true_scale(model_type: str) -> None:
    windows, scale = volatility_process(1, n_rows=300, n_series=2)
    train, held_out = rows_between(windows, 0, 200), rows_between(windows, 200, 300)
    true_scale = scale[windows.rows >= 200]
    params = TrainParams(**{**TINY.to_dict(), "model_type": model_type, "batch_size": 32})
    result = train_model(train=train, validation=held_out, params=params, epochs=3, patience=5, seed=0)
    predicted = predict_distribution(result.model, held_out)
    correlation = np.corrcoef(predicted[:, 1], true_scale)[0, 1]
    assert correlation > 0.9, f"{model_type}: predicted scale barely follows the true one ({correlation:.2f})"
    # The targets are true_scale x Student-t(5): the fitted Student-t scale is the true one, and it
    # moves with it in proportion (log-log slope near 1; an untrained head's is ~0.01).
    assert 0.7 < float(np.median(predicted[:, 1] / true_scale)) < 1.4
    assert _log_slope(predicted[:, 1], true_scale) > 0.5
    assert np.all(predicted[:, 2] > 2)
    torch.manual_seed(0)
    untrained = networks.model_from_config(result.config).eval()
    assert abs(_log_slope(predict_distribution(untrained, held_out)[:, 1], true_scale)) < 0.1


def _log_slope(predicted: np.ndarray, true: np.ndarray) -> float:
    return float(np.polyfit(np.log(true), np.log(predicted), 1)[0])


# --- best epoch, early stopping, callbacks --------------------------------------------------------


def test_restored_weights_are_those_of_the_best_epoch_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    built = _capture_models(monkeypatch)
    snapshots: dict[int, dict[str, torch.Tensor]] = {}

    def snapshot(epoch: int, train_loss: float, val_loss: float) -> None:
        snapshots[epoch] = _weights(built[0])

    patience = 4
    data = _overshooting()
    result = train_model(**data, params=TINY, epochs=40, patience=patience, seed=3, on_epoch=snapshot)
    val_losses = [val for _, _, val in result.history]
    best = int(np.argmin(val_losses)) + 1
    assert 1 < best < result.epochs_run, "the constructed case must improve, then get worse"
    assert all(later > val_losses[best - 1] for later in val_losses[best:])  # worse after the best epoch
    assert result.best_epoch == best
    assert result.best_val_loss == pytest.approx(val_losses[best - 1])
    assert result.stopped_early and result.epochs_run == best + patience

    final = _weights(result.model)
    assert _same(final, snapshots[best])  # a deep copy: later steps did not overwrite it
    assert not _same(final, snapshots[result.epochs_run])  # the last epoch's weights were NOT kept
    # The restored model really is the best one: its validation likelihood is the best epoch's.
    out = predict_distribution(result.model, data["validation"])
    nll = distribution_nll(
        torch.tensor(out), torch.tensor(data["validation"].y, dtype=torch.float64), TINY.distribution
    )
    assert float(nll) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_same_seed_same_losses_and_weights_other_seed_differs() -> None:
    runs = [train_model(**_splits(), params=TINY, epochs=3, patience=10, seed=seed) for seed in (7, 7, 8)]
    assert runs[0].history == runs[1].history
    assert _same(_weights(runs[0].model), _weights(runs[1].model))
    assert runs[0].history != runs[2].history


@pytest.mark.parametrize("model_type", ["lstm_attention", "lstm_cross_attention"])
def test_dropout_and_shuffling_are_seeded_too(model_type: str) -> None:
    params = TrainParams(
        model_type=model_type, hidden_size=8, num_layers=2, dropout=0.3, batch_size=8, num_heads=2
    )
    first = train_model(**_splits(), params=params, epochs=2, patience=10, seed=11)
    second = train_model(**_splits(), params=params, epochs=2, patience=10, seed=11)
    assert first.history == second.history
    assert _same(_weights(first.model), _weights(second.model))


def test_on_epoch_runs_every_epoch_and_its_exceptions_propagate() -> None:
    seen: list[tuple[int, float, float]] = []
    result = train_model(
        **_splits(), params=TINY, epochs=3, patience=10, seed=0, on_epoch=lambda *a: seen.append(a)
    )
    assert seen == result.history and [e for e, _, _ in seen] == [1, 2, 3]
    assert result.epochs_run == 3 and not result.stopped_early

    def prune(epoch: int, train_loss: float, val_loss: float) -> None:
        if epoch == 2:
            raise optuna.TrialPruned("hopeless")

    with pytest.raises(optuna.TrialPruned, match="hopeless"):
        train_model(**_splits(), params=TINY, epochs=5, patience=10, seed=0, on_epoch=prune)


def test_a_diverging_run_stops_at_once() -> None:
    data = _splits()
    seen: list[int] = []
    train = data["train"]
    # Targets so large that (y - loc)^2 overflows float32: the likelihood is infinite from the start.
    exploding = replace(train, y=(train.y * 1e30).astype(np.float32))
    result = train_model(
        train=exploding,
        validation=data["validation"],
        params=TINY,
        epochs=20,
        patience=20,
        seed=0,
        on_epoch=lambda e, *_: seen.append(e),
    )
    assert result.diverged and result.epochs_run == 1 and seen == [1]
    assert result.best_epoch == 0 and result.best_val_loss == float("inf")


def test_divergence_later_keeps_the_best_finite_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    built = _capture_models(monkeypatch)
    kept: dict[int, dict[str, torch.Tensor]] = {}

    def poison_after_epoch_2(epoch: int, train_loss: float, val_loss: float) -> None:
        kept[epoch] = _weights(built[0])
        if epoch == 2:
            with torch.no_grad():
                for parameter in built[0].parameters():
                    parameter.fill_(float("nan"))

    result = train_model(
        **_splits(), params=TINY, epochs=10, patience=10, seed=0, on_epoch=poison_after_epoch_2
    )
    assert result.diverged and result.epochs_run == 3 and not result.stopped_early
    assert result.best_epoch in (1, 2) and np.isfinite(result.best_val_loss)
    assert _same(_weights(result.model), kept[result.best_epoch])
    assert all(torch.isfinite(v).all() for v in result.model.state_dict().values())


def test_window_arrays_become_tensors_once_not_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    conversions: list[tuple[int, ...]] = []
    real_as_tensor = torch.as_tensor

    def counting_as_tensor(data: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        if isinstance(data, np.ndarray) and data.dtype.kind == "f":
            conversions.append(data.shape)
        return real_as_tensor(data, *args, **kwargs)

    monkeypatch.setattr(torch, "as_tensor", counting_as_tensor)
    params = TrainParams(**{**TINY.to_dict(), "batch_size": 4})  # 16 steps an epoch
    for epochs in (1, 3):
        conversions.clear()
        train_model(**_splits(), params=params, epochs=epochs, patience=10, seed=0)
        # slab, context and targets of each split, once each, however many steps and epochs.
        assert len(conversions) == 6, conversions


def test_gradient_clipping_is_configurable() -> None:
    clipped = train_model(
        **_splits(), params=TrainParams(**{**TINY.to_dict(), "grad_clip": 1e-6}), epochs=2, patience=5, seed=0
    )
    free = train_model(
        **_splits(), params=TrainParams(**{**TINY.to_dict(), "grad_clip": 0.0}), epochs=2, patience=5, seed=0
    )
    assert clipped.history != free.history


# --- batches by date ------------------------------------------------------------------------------


def test_batches_by_row_keep_every_window_of_a_date_together() -> None:
    rng = np.random.default_rng(0)
    rows = np.repeat(np.arange(30), rng.integers(1, 6, size=30))  # ragged: 1-5 series a date
    rng.shuffle(rows)
    big_date = np.full(25, 99)  # more windows than a batch holds
    rows = np.concatenate([rows, big_date])
    for order in (None, rng.permutation(31)):
        batches = _batches_by_row(rows, 8, order=order)
        together = np.concatenate(batches)
        assert sorted(together.tolist()) == list(range(len(rows)))  # every window exactly once
        for batch in batches:
            for row in np.unique(rows[batch]):
                assert np.array_equal(np.sort(batch[rows[batch] == row]), np.flatnonzero(rows == row))
        assert max(len(b) for b in batches) >= 25  # the big date is never split
        assert all(len(b) < 8 + 5 for b in batches if 99 not in rows[b])  # about 8, never a date more
    shuffled = [np.unique(rows[b]).tolist() for b in _batches_by_row(rows, 8, order=np.arange(31)[::-1])]
    assert shuffled[0][0] == 99  # `order` picks the sequence of dates
    assert _batches_by_row(np.zeros(0, dtype=np.int64), 8) == []


def test_cross_attention_training_batches_hold_whole_dates(monkeypatch: pytest.MonkeyPatch) -> None:
    windows = random_windows(2, n_rows=40, n_series=3)
    train, validation = rows_between(windows, 0, 30), rows_between(windows, 30, 40)
    # A young series: only its windows from row 26 on, so dates hold 2 or 3 windows.
    train = subset(train, np.flatnonzero((train.series != 2) | (train.rows >= 26)))
    seen: list[tuple[bool, np.ndarray]] = []
    real_from_config = networks.model_from_config

    def record(module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        groups = args[1] if len(args) > 1 else None
        assert groups is not None, "the cross-attention model must be told the dates"
        seen.append((module.training, groups.numpy().copy()))

    def hooked(config: dict[str, Any]) -> torch.nn.Module:
        model = real_from_config(config)
        model.register_forward_pre_hook(record)
        return model

    monkeypatch.setattr(networks, "model_from_config", hooked)
    params = TrainParams(**{**TINY.to_dict(), "model_type": "lstm_cross_attention", "batch_size": 7})
    train_model(train=train, validation=validation, params=params, epochs=2, patience=5, seed=0)

    training_batches = [groups for is_training, groups in seen if is_training]
    assert len(training_batches) > 2 * 2  # several batches an epoch
    for groups in training_batches:
        for row in np.unique(groups):
            assert (groups == row).sum() == (train.rows == row).sum()  # the whole date, never a part
    assert sum(len(g) for g in training_batches) == 2 * len(train)
    validation_batches = [groups for is_training, groups in seen if not is_training]
    assert validation_batches
    for groups in validation_batches:
        for row in np.unique(groups):
            assert (groups == row).sum() == (validation.rows == row).sum()


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_predict_distribution_equals_predicting_each_date_on_its_own(model_type: str) -> None:
    data = _splits()
    params = TrainParams(**{**TINY.to_dict(), "model_type": model_type})
    model = train_model(**data, params=params, epochs=1, patience=5, seed=0).model
    windows = data["validation"]
    whole = predict_distribution(model, windows)
    assert whole.shape == (len(windows), 3) and whole.dtype == np.float64
    assert np.all(whole[:, 1] > 0)
    per_date = np.zeros_like(whole)
    for row in np.unique(windows.rows):
        chosen = np.flatnonzero(windows.rows == row)
        per_date[chosen] = predict_distribution(model, subset(windows, chosen))
    np.testing.assert_allclose(whole, per_date, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        predict_distribution(model, windows, batch_size=4), whole, rtol=1e-5, atol=1e-6
    )
    # The outputs really differ from window to window (the comparison is not trivial).
    assert np.ptp(whole[:, 0]) > 1e-3 and np.ptp(whole[:, 1]) > 1e-3
    # Reversing the windows' order changes nothing but the order.
    reverse = np.arange(len(windows))[::-1]
    np.testing.assert_allclose(
        predict_distribution(model, subset(windows, reverse)), whole[reverse], rtol=1e-5, atol=1e-6
    )
    assert predict_distribution(model, subset(windows, np.zeros(0, dtype=np.int64))).shape == (0, 3)
    if model_type == "lstm_cross_attention":
        # Predicted one by one, a window loses its date's peers: the numbers differ.
        alone = predict_distribution(model, subset(windows, np.array([0])))
        assert np.abs(alone[0] - whole[0]).max() > 1e-5


# --- the result, devices, inputs, parameters ------------------------------------------------------


def test_result_describes_the_run() -> None:
    data = _splits()
    result = train_model(**data, params=TINY, epochs=2, patience=5, seed=0)
    assert result.samples_per_s > 0 and result.train_time_s > 0 and result.wall_s >= result.train_time_s
    train = data["train"]
    assert result.config["model_type"] == "lstm" and result.config["distribution"] == "student_t"
    assert result.config["n_features"] == train.n_features == 5 and result.config["n_own_features"] == 3
    assert result.params == TINY and result.seed == 0 and not result.diverged
    assert not result.model.training  # handed back in eval mode
    assert [e for e, _, _ in result.history] == [1, 2]


def test_resolve_device() -> None:
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(ConfigError, match="CUDA is not available"):
            train_model(**_splits(), params=TINY, epochs=1, patience=1, seed=0, device="cuda")


def test_bad_inputs_are_refused_with_a_clear_error() -> None:
    data = _splits()
    train, validation = data["train"], data["validation"]
    broken = replace(train, slab=train.slab.copy())
    broken.slab[train.rows[0], 0, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        train_model(train=broken, validation=validation, params=TINY, epochs=1, patience=1, seed=0)
    with pytest.raises(NoDataError, match="validation split is empty"):
        empty = subset(validation, np.zeros(0, dtype=np.int64))
        train_model(train=train, validation=empty, params=TINY, epochs=1, patience=1, seed=0)
    short = replace(train, y=train.y[:5])
    with pytest.raises(InputDataError, match="5 targets"):
        train_model(train=short, validation=validation, params=TINY, epochs=1, patience=1, seed=0)
    narrow = replace(validation, slab=validation.slab[:, :, :2])
    with pytest.raises(InputDataError, match="differ in shape"):
        train_model(train=train, validation=narrow, params=TINY, epochs=1, patience=1, seed=0)
    with pytest.raises(ConfigError, match="epochs"):
        train_model(train=train, validation=validation, params=TINY, epochs=0, patience=1, seed=0)


def test_train_params_from_settings_with_overrides() -> None:
    base = TrainingSettings(
        model_type="lstm", hidden_size=64, learning_rate=1e-3, grad_clip=0.5, distribution="normal"
    )
    params = TrainParams.from_settings(
        base, {"model_type": "lstm_attention", "hidden_size": 40.0, "learning_rate": 0.01, "best_epoch": 3}
    )
    assert params.model_type == "lstm_attention" and params.hidden_size == 40 and params.learning_rate == 0.01
    assert type(params.hidden_size) is int  # JSON / Optuna may hand back 40.0
    assert params.distribution == "normal" and params.grad_clip == 0.5  # not tuned: from [training]
    assert TrainParams.from_settings(base) == TrainParams(grad_clip=0.5, distribution="normal")
    for bad in (
        {"model_type": "gru"},
        {"distribution": "cauchy"},
        {"dropout": 1.5},
        {"batch_size": 0},
        {"learning_rate": 0},
        {"grad_clip": -1.0},
    ):
        with pytest.raises(ConfigError):
            TrainParams(**{**TINY.to_dict(), **bad})
