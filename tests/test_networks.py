"""The three global networks: one window in, one next-return distribution out; cross-attention only
across the windows of one date; head-compatible hidden sizes; a pickle-free config round trip; the
likelihood they are trained by; and that each can fit a small batch (a network that cannot is broken)."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import torch

from stockcli.config import MODEL_TYPES
from stockcli.errors import ConfigError
from stockcli.ml.networks import (
    CONFIG_VERSION,
    DISTRIBUTIONS,
    NETWORKS,
    distribution_nll,
    effective_hidden_size,
    ensemble_config,
    model_config,
    model_from_config,
    predictive_distribution,
)
from stockcli.ml.training import TrainParams, train_model
from tests.model_helpers import build_model, random_windows

STEPS, OWN, CONTEXT = 6, 3, 2
FEATURES = OWN + CONTEXT


def _model(model_type: str, distribution: str = "student_t", **overrides: object) -> torch.nn.Module:
    kwargs: dict[str, object] = {
        "n_features": FEATURES,
        "n_own_features": OWN,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
        "distribution": distribution,
    }
    kwargs.update(overrides)
    torch.manual_seed(0)
    return build_model(model_type, **kwargs).eval()  # type: ignore[arg-type]


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_output_is_a_distribution_per_window(model_type: str, distribution: str) -> None:
    model = _model(model_type, distribution, num_layers=2, dropout=0.1)
    x = torch.randn(7, STEPS, FEATURES) * 3
    with torch.no_grad():
        out = model(x, torch.tensor([0, 0, 0, 1, 1, 2, 2]))
    assert out.shape == (7, 3)
    loc, scale, df = out[:, 0], out[:, 1], out[:, 2]
    assert torch.isfinite(loc).all() and (scale > 0).all()
    if distribution == "student_t":
        assert torch.isfinite(df).all() and (df > 2).all()  # a finite variance
        assert torch.unique(df).numel() == 1  # one tail parameter for the whole model
    else:
        assert torch.isinf(df).all() and (df > 0).all()
    # Any window length works, and groups are optional.
    with torch.no_grad():
        assert model(torch.randn(2, STEPS + 3, FEATURES)).shape == (2, 3)


def test_an_untrained_model_starts_at_a_unit_scale() -> None:
    with torch.no_grad():
        out = _model("lstm")(torch.zeros(4, STEPS, FEATURES))
    # The standardized target has unit spread: an untrained head starts there, not at a random scale.
    assert out[:, 1] == pytest.approx(torch.ones(4), abs=0.05)


def _cross_outputs(x: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return _model("lstm_cross_attention")(x, groups)


def test_cross_attention_sees_the_windows_of_its_own_date_only() -> None:
    torch.manual_seed(1)
    x = torch.randn(6, STEPS, FEATURES)
    groups = torch.tensor([4, 9, 4, 9, 9, 4])  # two dates, interleaved as a batch may hold them
    base = _cross_outputs(x, groups)
    date_4, date_9 = groups == 4, groups == 9

    other_date = x.clone()
    other_date[1] += 2.0  # a window of date 9 moves
    moved = _cross_outputs(other_date, groups)
    torch.testing.assert_close(moved[date_4], base[date_4], rtol=0, atol=1e-6)  # date 4: unchanged
    assert (moved[3] - base[3]).abs().max() > 1e-4  # date 9's other windows: changed
    assert (moved[4] - base[4]).abs().max() > 1e-4

    same_date = x.clone()
    same_date[0] += 2.0  # a window of date 4 moves
    moved = _cross_outputs(same_date, groups)
    assert (moved[2] - base[2]).abs().max() > 1e-4 and (moved[5] - base[5]).abs().max() > 1e-4
    torch.testing.assert_close(moved[date_9], base[date_9], rtol=0, atol=1e-6)

    # A date's windows give the same numbers with or without other dates in the batch.
    alone = _cross_outputs(x[date_4], groups[date_4])
    torch.testing.assert_close(alone, base[date_4], rtol=1e-5, atol=1e-6)


def test_a_lone_window_and_no_groups() -> None:
    torch.manual_seed(2)
    x = torch.randn(3, STEPS, FEATURES)
    lone = _cross_outputs(x[:1], torch.tensor([7]))
    assert lone.shape == (1, 3) and torch.isfinite(lone).all()
    # A window alone on its date gives the same numbers whether or not other dates share the batch.
    mixed = _cross_outputs(x, torch.tensor([7, 8, 8]))
    torch.testing.assert_close(mixed[:1], lone, rtol=1e-5, atol=1e-6)
    # Without groups every window of the batch is one date: then the others do matter.
    together = _cross_outputs(x, torch.tensor([7, 7, 7]))
    torch.testing.assert_close(_cross_outputs(x, None), together, rtol=1e-5, atol=1e-6)  # type: ignore[arg-type]
    assert (together[0] - lone[0]).abs().max() > 1e-4


@pytest.mark.parametrize("model_type", ["lstm", "lstm_attention"])
def test_the_other_models_read_each_window_on_its_own(model_type: str) -> None:
    torch.manual_seed(3)
    model = _model(model_type)
    x = torch.randn(4, STEPS, FEATURES)
    with torch.no_grad():
        whole = model(x, torch.tensor([0, 0, 0, 0]))
        changed = x.clone()
        changed[1:] += 5.0
        moved = model(changed, torch.tensor([0, 0, 0, 0]))
        one = model(x[:1])
    torch.testing.assert_close(moved[0], whole[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(one[0], whole[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("model_type", "hidden", "heads", "expected"),
    [
        ("lstm_attention", 50, 4, 52),
        ("lstm_cross_attention", 33, 8, 40),
        ("lstm_attention", 3, 4, 4),
        ("lstm_cross_attention", 64, 4, 64),
        ("lstm", 50, 4, 50),  # no attention: the size is used as given
    ],
)
def test_hidden_size_rounds_up_to_a_multiple_of_the_heads(
    model_type: str, hidden: int, heads: int, expected: int
) -> None:
    assert effective_hidden_size(model_type, hidden, heads) == expected
    config = model_config(
        model_type,
        n_features=4,
        n_own_features=3,
        hidden_size=hidden,
        num_layers=1,
        dropout=0.0,
        num_heads=heads,
    )
    assert config["hidden_size"] == expected
    model: Any = model_from_config(config)
    assert model(torch.zeros(2, 4, 4), torch.tensor([0, 0])).shape == (2, 3)
    assert model.lstm.hidden_size == expected
    if model_type != "lstm":
        assert model.attention.embed_dim == expected
        assert model.attention.num_heads == heads


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_config_json_and_weights_rebuild_the_same_model(model_type: str, distribution: str) -> None:
    kwargs = {
        "n_features": FEATURES,
        "n_own_features": OWN,
        "hidden_size": 10,
        "num_layers": 2,
        "dropout": 0.2,
        "num_heads": 2,
        "distribution": distribution,
    }
    model = build_model(model_type, **kwargs)  # type: ignore[arg-type]
    config = model_config(model_type, **kwargs)  # type: ignore[arg-type]
    assert config["config_version"] == CONFIG_VERSION and config["distribution"] == distribution
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    rebuilt = model_from_config(json.loads(json.dumps(config)))
    rebuilt.load_state_dict(torch.load(buffer, weights_only=True))
    x = torch.randn(5, STEPS, FEATURES)
    groups = torch.tensor([0, 0, 1, 1, 1])
    model.eval()
    rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(model(x, groups), rebuilt(x, groups))


# The weights of every stored model version: (name, shape) for 5 features (3 own), hidden 8, 2 layers,
# 2 heads. A stored version loads with `load_state_dict(strict=True)`, so these must never change.
_LSTM_WEIGHTS = {
    "lstm.weight_ih_l0": (32, 5),
    "lstm.weight_hh_l0": (32, 8),
    "lstm.bias_ih_l0": (32,),
    "lstm.bias_hh_l0": (32,),
    "lstm.weight_ih_l1": (32, 8),
    "lstm.weight_hh_l1": (32, 8),
    "lstm.bias_ih_l1": (32,),
    "lstm.bias_hh_l1": (32,),
    "head.df_raw": (),
    "head.out.weight": (2, 11),
    "head.out.bias": (2,),
}
_ATTENTION_WEIGHTS = {
    "attention.in_proj_weight": (24, 8),
    "attention.in_proj_bias": (24,),
    "attention.out_proj.weight": (8, 8),
    "attention.out_proj.bias": (8,),
    "norm.weight": (8,),
    "norm.bias": (8,),
}
STORED_WEIGHTS = {
    "lstm": _LSTM_WEIGHTS,
    "lstm_attention": _LSTM_WEIGHTS | _ATTENTION_WEIGHTS,
    "lstm_cross_attention": _LSTM_WEIGHTS | _ATTENTION_WEIGHTS,
}


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_the_weights_keep_the_names_and_shapes_of_stored_versions(model_type: str) -> None:
    config = model_config(
        model_type, n_features=5, n_own_features=3, hidden_size=8, num_layers=2, dropout=0.1, num_heads=2
    )
    model = model_from_config(config)
    assert type(model) is NETWORKS[model_type]
    assert {name: tuple(value.shape) for name, value in model.state_dict().items()} == STORED_WEIGHTS[
        model_type
    ]
    ensemble = model_from_config(ensemble_config([config, config]))
    expected = {
        f"members.{i}.{name}": shape for i in (0, 1) for name, shape in STORED_WEIGHTS[model_type].items()
    }
    assert {name: tuple(value.shape) for name, value in ensemble.state_dict().items()} == expected


def test_a_config_of_the_previous_kind_is_refused_with_a_hint_to_retrain() -> None:
    old = {  # version 1: one input per watchlist, tickers side by side
        "model_type": "lstm",
        "n_stocks": 2,
        "n_features": 3,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
    }
    for config in (old, {**old, "config_version": 1}):
        with pytest.raises(ConfigError, match="older stockcli") as caught:
            model_from_config(config)
        assert caught.value.hint is not None and "stockcli retrain --force" in caught.value.hint
    newer = {**model_config("lstm", n_features=3, n_own_features=3, hidden_size=2, num_layers=1, dropout=0.0)}
    newer["config_version"] = CONFIG_VERSION + 1
    with pytest.raises(ConfigError, match="newer") as caught:
        model_from_config(newer)
    assert caught.value.hint is not None and "Upgrade" in caught.value.hint


def test_bad_configs_are_refused() -> None:
    good = {"n_features": 4, "n_own_features": 3, "hidden_size": 8, "num_layers": 1, "dropout": 0.0}
    with pytest.raises(ConfigError, match="Unknown model type"):
        build_model("transformer", **good)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dropout"):
        build_model("lstm", **{**good, "dropout": 1.0})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="cannot exceed"):
        build_model("lstm", **{**good, "n_own_features": 5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Unknown distribution"):
        build_model("lstm", **{**good, "distribution": "cauchy"})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="hidden_size must be at least 1"):
        effective_hidden_size("lstm", 0, 4)
    config = model_config("lstm_attention", **good, num_heads=4)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="not a multiple"):
        model_from_config({**config, "hidden_size": 10})
    with pytest.raises(ConfigError, match="unknown distribution"):
        model_from_config({**config, "distribution": "laplace"})
    with pytest.raises(ConfigError, match="Invalid model config"):
        model_from_config({"model_type": "lstm", "config_version": CONFIG_VERSION})


# --- the likelihood --------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_distribution_nll_is_the_negated_mean_logpdf(distribution: str) -> None:
    from scipy import stats

    rng = np.random.default_rng(4)
    n = 200
    loc = rng.normal(0, 2, n)
    scale = rng.uniform(0.05, 3.0, n)
    df = rng.uniform(2.1, 30.0, n) if distribution == "student_t" else np.full(n, np.inf)
    target = rng.standard_t(4, n) * 2
    output = torch.tensor(np.stack([loc, scale, df], axis=1), dtype=torch.float64)
    nll = distribution_nll(output, torch.tensor(target, dtype=torch.float64), distribution)
    if distribution == "student_t":
        expected = -stats.t.logpdf(target, df, loc=loc, scale=scale).mean()
    else:
        expected = -stats.norm.logpdf(target, loc=loc, scale=scale).mean()
    assert float(nll) == pytest.approx(float(expected), rel=1e-10)
    # Per row too, not only on average: one window at a time.
    for i in (0, 17, 199):
        one = distribution_nll(output[i : i + 1], torch.tensor(target[i : i + 1]), distribution)
        logpdf = (
            stats.t.logpdf(target[i], df[i], loc=loc[i], scale=scale[i])
            if distribution == "student_t"
            else stats.norm.logpdf(target[i], loc=loc[i], scale=scale[i])
        )
        assert float(one) == pytest.approx(-float(logpdf), rel=1e-10)


def _hand_written_nll(output: torch.Tensor, target: torch.Tensor, distribution: str) -> torch.Tensor:
    """The likelihood as stockcli computed it before torch.distributions: the oracle of the next test."""
    loc, scale = output[:, 0], output[:, 1]
    z = (target - loc) / scale
    if distribution == "normal":
        return (0.5 * z**2 + torch.log(scale) + 0.5 * math.log(2 * math.pi)).mean()
    df = output[:, 2]
    log_norm = (
        torch.lgamma((df + 1) / 2) - torch.lgamma(df / 2) - 0.5 * torch.log(df * math.pi) - torch.log(scale)
    )
    return (-(log_norm - (df + 1) / 2 * torch.log1p(z**2 / df))).mean()


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
def test_the_likelihood_and_its_gradient_are_those_of_the_hand_written_one(distribution: str) -> None:
    """In float32, as training runs: same loss and same gradients, so training learns what it did."""
    generator = torch.Generator().manual_seed(8)
    n = 256
    loc = torch.randn(n, generator=generator) * 2
    scale = torch.rand(n, generator=generator) * 3 + 0.01
    df = (
        torch.rand(n, generator=generator) * 28 + 2.1
        if distribution == "student_t"
        else torch.full((n,), math.inf)
    )
    target = torch.randn(n, generator=generator) * 3
    gradients = []
    for nll_of in (distribution_nll, _hand_written_nll):
        output = torch.stack([loc, scale, df], dim=1).requires_grad_(True)
        nll = nll_of(output, target, distribution)
        nll.backward()
        gradients.append((nll.detach(), output.grad[:, :2] if distribution == "normal" else output.grad))
    (new, new_grad), (old, old_grad) = gradients
    assert new.dtype == torch.float32
    torch.testing.assert_close(new, old, rtol=1e-6, atol=0)
    torch.testing.assert_close(new_grad, old_grad, rtol=1e-5, atol=1e-9)
    kind = torch.distributions.Normal if distribution == "normal" else torch.distributions.StudentT
    assert isinstance(predictive_distribution(output, distribution), kind)


def test_a_nan_output_gives_a_nan_loss_not_an_error() -> None:
    # Training detects divergence by a non-finite loss; argument validation would raise instead.
    # (torch's StudentT checks its df even when told not to: that is the NaN of the first row.)
    checks = torch.distributions.Distribution._validate_args
    output = torch.tensor([[math.nan, 1.0, math.nan], [0.0, -1.0, 5.0]])
    for distribution in DISTRIBUTIONS:
        assert math.isnan(float(distribution_nll(output, torch.zeros(2), distribution)))
    assert torch.distributions.Distribution._validate_args == checks  # the default is restored


def test_a_very_large_df_approaches_the_normal_likelihood() -> None:
    output = torch.tensor([[0.3, 1.7, 1e7]], dtype=torch.float64)
    target = torch.tensor([1.2], dtype=torch.float64)
    t_nll = float(distribution_nll(output, target, "student_t"))
    normal_nll = float(distribution_nll(output, target, "normal"))
    assert math.isclose(t_nll, normal_nll, rel_tol=1e-6)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_each_architecture_fits_a_small_batch(model_type: str) -> None:
    windows = random_windows(seed=5, n_rows=12, n_series=2)  # 16 windows on 8 dates
    params = TrainParams(
        model_type=model_type,
        hidden_size=16,
        num_heads=2,
        dropout=0.0,
        learning_rate=1e-2,
        batch_size=len(windows),
        grad_clip=0.0,
    )
    result = train_model(train=windows, validation=windows, params=params, epochs=60, patience=60, seed=0)
    first, last = result.history[0][1], result.history[-1][1]
    # A model that learns the 16 targets can shrink its scale: the likelihood keeps improving far
    # beyond what a constant distribution (NLL ~1.4 on these unit-spread targets) reaches.
    assert first > 1.0
    assert last < first - 1.5, f"{model_type} did not fit 16 windows: {first} -> {last}"


def test_importing_the_ml_modules_does_not_import_torch_or_optuna() -> None:
    # stockcli.ml.networks imports torch (its classes live at module level): the others import it lazily.
    code = (
        "import sys; import stockcli.ml.training, stockcli.ml.tuning, stockcli.ml.metrics, "
        "stockcli.ml.forecast; print(sorted(m for m in ('torch', 'optuna', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_seed_ensemble_averages_its_members_and_rebuilds_from_json() -> None:
    """`[promotion] seeds = k`: k networks whose distribution parameters are averaged, so one lucky
    seed cannot win a promotion on its own; the ensemble round-trips through its JSON config."""
    import json

    import torch

    from stockcli.ml.networks import ensemble_config, model_config, model_from_config

    config = model_config("lstm", n_features=5, n_own_features=3, hidden_size=8, num_layers=1, dropout=0.0)
    members = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        members.append(model_from_config(config).eval())
    ensemble = model_from_config(json.loads(json.dumps(ensemble_config([config] * 3)))).eval()
    for member, trained in zip(ensemble.members, members, strict=True):  # type: ignore[arg-type]
        member.load_state_dict(trained.state_dict())
    x = torch.randn(6, 10, 5)
    with torch.no_grad():
        expected = torch.stack([m(x) for m in members]).mean(dim=0)
        got = ensemble(x)
        assert torch.allclose(got, expected, atol=1e-6)
        assert not torch.allclose(got, members[0](x), atol=1e-4)  # not just the first seed
    with pytest.raises(ConfigError, match="without members"):
        model_from_config({"config_version": 2, "model_type": "ensemble", "members": []})
