"""The MLflow registry on a real sqlite tracking store in a temp folder, with a real tiny network."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stockcli.config import Settings, load_settings
from stockcli.errors import ConfigError, NoProductionModelError, RegistryError, UsageError
from stockcli.ml import registry
from stockcli.ml.bundle import BUNDLE_FILE, BUNDLE_FORMAT, bundle_sha256, read_bundle, write_bundle
from stockcli.ml.networks import model_config
from tests.model_helpers import FIXTURE_BUNDLE, FIXTURE_BUNDLE_SHA256, build_model, fixture_spec

SPEC = fixture_spec()
SCALERS = {"features": {"min": [1.0, 0.0], "max": [2.0, 100.0]}, "target": {"kind": "return", "scale": 0.01}}


@pytest.fixture(scope="module")
def store_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """One real MLflow store for the module (creating one costs seconds); tests use their own model names."""
    data_dir = tmp_path_factory.mktemp("registry") / "data"
    registry.clear_caches()
    yield load_settings(None, environ={}, overrides={"storage": {"data_dir": str(data_dir)}})
    registry.clear_caches()


@pytest.fixture
def settings_one(store_settings: Settings) -> Settings:
    return store_settings.replace(mlflow={"model_name": f"test-{uuid.uuid4().hex[:8]}"})


def tiny_model(model_type: str = "lstm_attention", seed: int = 0):  # type: ignore[no-untyped-def]
    import torch

    torch.manual_seed(seed)
    kwargs = {
        "n_features": 2,
        "n_own_features": 2,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    return build_model(model_type, **kwargs).eval(), model_config(model_type, **kwargs)


def register(settings: Settings, model, config, run: registry.TrainingRun) -> str:  # type: ignore[no-untyped-def]
    return registry.register_version(
        settings,
        run,
        model=model,
        model_config=config,
        spec=SPEC,
        scalers=SCALERS,
        tickers=["AAA", "^BBB"],
        sequence_length=5,
        target_kind="return",
        dataset_run_id="ds-1",
        training_params={"hidden_size": 8},
        metrics={"test": {"average": {"skill": 0.1}}},
        test_summary={"mae": 1.5, "naive_mae": 1.6, "skill": 0.0625},
    )


def windows(n: int = 7) -> np.ndarray:
    """(windows, sequence, features), one series per window."""
    return np.random.default_rng(1).normal(size=(n, 5, 2)).astype(np.float32)


def predict(model, x: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_register_and_load_round_trip_gives_identical_predictions(settings_one: Settings) -> None:
    model, config = tiny_model()
    with registry.training_run(settings_one, run_name="t") as run:
        version = register(settings_one, model, config, run)
    registry.clear_caches()
    bundle = registry.load_bundle(settings_one, version=version)

    x = windows()
    np.testing.assert_array_equal(predict(bundle.model, x), predict(model, x))
    assert not bundle.model.training
    assert bundle.version == version
    assert bundle.tickers == ("AAA", "^BBB")
    assert bundle.spec == SPEC and bundle.scalers == SCALERS
    assert (bundle.sequence_length, bundle.target_kind, bundle.dataset_run_id) == (5, "return", "ds-1")
    assert bundle.model_config == config
    assert bundle.training_run_id == run.run_id
    assert bundle.training_params == {"hidden_size": 8}
    [info] = registry.list_versions(settings_one)
    assert info.version == version and info.training_run_id == run.run_id
    assert info.test_metrics == {"mae": 1.5, "naive_mae": 1.6, "skill": 0.0625}
    assert info.dataset_run_id == "ds-1" and info.tickers == ("AAA", "^BBB") and info.aliases == ()


def test_loading_unpickles_nothing(settings_one: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    model, config = tiny_model("lstm_cross_attention")
    with registry.training_run(settings_one) as run:
        version = register(settings_one, model, config, run)
    registry.set_production(settings_one, version)
    registry.clear_caches()

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    bundle = registry.load_bundle(settings_one)  # the Production alias
    monkeypatch.undo()
    assert bundle.version == version
    np.testing.assert_array_equal(predict(bundle.model, windows()), predict(model, windows()))
    # What is stored is JSON and text plus an .npz of plain arrays: none can hold a pickle.
    source = Path(registry.list_versions(settings_one)[0].source.removeprefix("file://"))
    assert sorted(p.name for p in source.iterdir()) == ["bundle.json", "requirements.txt", "weights.npz"]
    pins = (source / "requirements.txt").read_text().split()
    assert [pin.split("==")[0] for pin in pins] == ["stockcli", "torch", "numpy"]
    with np.load(source / "weights.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)


def test_retried_registration_returns_the_same_version(settings_one: Settings) -> None:
    model, config = tiny_model("lstm")
    with registry.training_run(settings_one) as run:
        first = register(settings_one, model, config, run)
        second = register(settings_one, model, config, run)
    assert first == second
    assert [v.version for v in registry.list_versions(settings_one)] == [first]
    with registry.training_run(settings_one) as other_run:
        third = register(settings_one, model, config, other_run)
    assert int(third) == int(first) + 1
    assert registry.latest_version(settings_one) == third


def test_aliases_resolve_and_registering_never_moves_production(settings_one: Settings) -> None:
    assert registry.resolve_alias(settings_one) is None
    with pytest.raises(NoProductionModelError, match="No production model yet") as caught:
        registry.load_bundle(settings_one)
    assert caught.value.exit_code == 4
    assert "stockcli retrain --force" in str(caught.value)
    model, config = tiny_model("lstm")
    with registry.training_run(settings_one) as run:
        first = register(settings_one, model, config, run)
    assert registry.resolve_alias(settings_one) is None
    registry.set_production(settings_one, first)
    with registry.training_run(settings_one) as run:
        second = register(settings_one, model, config, run)
    assert registry.resolve_alias(settings_one) == first
    assert {v.version: v.aliases for v in registry.list_versions(settings_one)} == {
        second: (),
        first: ("Production",),
    }


def test_unknown_version_is_a_usage_error(settings_one: Settings) -> None:
    model, config = tiny_model("lstm")
    with registry.training_run(settings_one) as run:
        register(settings_one, model, config, run)
    for bad in ("99", "abc"):
        with pytest.raises(UsageError) as caught:
            registry.load_bundle(settings_one, version=bad)
        assert caught.value.exit_code == 2
    with pytest.raises(UsageError):
        registry.set_production(settings_one, "99")
    assert registry.resolve_alias(settings_one) is None


def test_tampered_weights_are_refused(settings_one: Settings) -> None:
    model, config = tiny_model("lstm")
    with registry.training_run(settings_one) as run:
        version = register(settings_one, model, config, run)
    source = Path(registry.list_versions(settings_one)[0].source.removeprefix("file://"))
    (source / "weights.npz").write_bytes(b"not the weights")
    registry.clear_caches()
    with pytest.raises(RegistryError, match="checksum"):
        registry.load_bundle(settings_one, version=version)


def test_failed_run_is_marked_failed(settings_one: Settings) -> None:
    with pytest.raises(RuntimeError), registry.training_run(settings_one) as run:
        raise RuntimeError("boom")
    status = registry.client(settings_one).get_run(run.run_id).info.status
    assert status == "FAILED"


def bad_store_settings(tmp_path: Path, how: str) -> Settings:
    base = load_settings(None, environ={}, overrides={"storage": {"data_dir": str(tmp_path / "data")}})
    if how == "unwritable":
        blocker = tmp_path / "not-a-folder"
        blocker.write_text("a file where the store's folder should be")
        uri = f"sqlite:///{blocker / 'mlflow.db'}"
    else:
        corrupt = tmp_path / "corrupt.db"
        corrupt.write_bytes(b"this is not a sqlite database" * 200)
        uri = f"sqlite:///{corrupt}"
    return base.replace(mlflow={"tracking_uri": uri})


@pytest.mark.parametrize("how", ["unwritable", "corrupt"])
def test_unreachable_store_gives_a_registry_error(tmp_path: Path, how: str) -> None:
    bad = bad_store_settings(tmp_path, how)
    expected = ConfigError if how == "unwritable" else RegistryError
    for action in (
        lambda: registry.resolve_alias(bad),
        lambda: registry.set_production(bad, "1"),
        lambda: registry.list_versions(bad),
        lambda: registry.load_bundle(bad),
    ):
        with pytest.raises(expected) as caught:
            action()
        assert "Cannot" in caught.value.message and caught.value.hint
    if how == "corrupt":
        assert "damaged" in (caught.value.hint or "")
    else:  # a file where the store's folder should be: exit 2, naming it
        assert caught.value.exit_code == 2 and "not-a-folder is a file" in caught.value.message


# --- the whole bundle under one checksum ---------------------------------------------------------------


def registered_folder(settings: Settings) -> tuple[str, Path]:
    """Register one tiny version; returns it and its artifact folder."""
    model, config = tiny_model("lstm")
    with registry.training_run(settings) as run:
        version = register(settings, model, config, run)
    registry.clear_caches()
    return version, Path(registry.list_versions(settings)[0].source.removeprefix("file://"))


def edit_bundle_json(folder: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = json.loads((folder / BUNDLE_FILE).read_text())
    change(document)
    (folder / BUNDLE_FILE).write_text(json.dumps(document, indent=2, sort_keys=True))


def test_registration_records_the_whole_bundle_checksum(settings_one: Settings) -> None:
    version, folder = registered_folder(settings_one)
    tags = registry.client(settings_one).get_model_version(settings_one.mlflow.model_name, version).tags
    assert tags[registry.TAG_BUNDLE_SHA256] == bundle_sha256(folder)
    bundle = registry.load_bundle(settings_one, version=version)
    assert bundle.bundle_sha256 == tags[registry.TAG_BUNDLE_SHA256]
    assert json.loads((folder / BUNDLE_FILE).read_text())["format"] == BUNDLE_FORMAT == 2


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda d: d["tickers"].reverse(), id="tickers reordered"),
        pytest.param(lambda d: d["scalers"]["target"].update(scale=5.0), id="a number changed"),
        pytest.param(lambda d: d["spec"].update(feature_names=["rsi", "close"]), id="features swapped"),
    ],
)
def test_a_changed_bundle_json_is_refused_naming_the_version(
    settings_one: Settings, change: Callable[[dict[str, Any]], None]
) -> None:
    version, folder = registered_folder(settings_one)
    registry.set_production(settings_one, version)
    edit_bundle_json(folder, change)  # weights untouched: only the whole-bundle checksum can see this
    with pytest.raises(RegistryError) as caught:
        registry.load_bundle(settings_one)
    text = str(caught.value)
    assert f"model version {version}" in text and "checksum" in text
    assert "stockcli retrain --force" in text
    assert registry.resolve_alias(settings_one) == version  # nothing moved


def test_a_version_without_a_recorded_checksum_is_refused(settings_one: Settings) -> None:
    version, _folder = registered_folder(settings_one)
    name = settings_one.mlflow.model_name
    registry.client(settings_one).delete_model_version_tag(name, version, registry.TAG_BUNDLE_SHA256)
    registry.clear_caches()
    with pytest.raises(RegistryError) as caught:
        registry.load_bundle(settings_one, version=version)
    assert f"model version {version} has no recorded checksum" in str(caught.value)
    assert "stockcli retrain --force" in str(caught.value)


def test_a_bundle_of_format_1_asks_for_a_retrain_in_one_line(settings_one: Settings) -> None:
    version, folder = registered_folder(settings_one)
    edit_bundle_json(folder, lambda d: d.update(format=1))
    with pytest.raises(RegistryError) as caught:
        registry.load_bundle(settings_one, version=version)
    text = str(caught.value)
    assert "\n" not in text
    assert f"model version {version} was saved by an older stockcli" in text
    assert "stockcli retrain --force" in text


def test_new_bundle_fields_round_trip(tmp_path: Path) -> None:
    model, config = tiny_model("lstm")
    write_bundle(
        tmp_path,
        model=model,
        model_config=config,
        spec=SPEC,
        scalers=SCALERS,
        tickers=["AAA"],
        context_tickers=["^BBB"],
        sequence_length=5,
        target_kind="return",
        dataset_run_id="ds-1",
        calibration={"shrink": {"AAA": 0.25}},
        baselines={"AAA": "naive"},
    )
    checksum = bundle_sha256(tmp_path)
    bundle = read_bundle(tmp_path, expected_sha256=checksum, require_sha256=True)
    assert bundle.context_tickers == ("^BBB",) and bundle.tickers == ("AAA",)
    assert bundle.calibration == {"shrink": {"AAA": 0.25}} and bundle.baselines == {"AAA": "naive"}
    assert bundle.bundle_sha256 == checksum
    with pytest.raises(RegistryError, match="no recorded checksum"):
        read_bundle(tmp_path, require_sha256=True)
    (tmp_path / "requirements.txt").write_text("anything\n")  # not part of what predicts
    assert bundle_sha256(tmp_path) == checksum


def test_the_bundle_module_never_imports_mlflow() -> None:
    code = "import sys, stockcli.ml.bundle; assert 'mlflow' not in sys.modules, 'mlflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not hasattr(registry, "require_production")


def test_a_bundle_written_before_the_spec_was_typed_verifies_loads_and_rewrites_the_same(
    tmp_path: Path,
) -> None:
    """A bundle of the untyped spec's days still matches its recorded checksum and loads; writing its
    contents again gives the same bundle.json but for the two fields that are not content: the
    weights' checksum (`np.savez` stamps the time into the archive) and the pinned versions."""
    bundle = read_bundle(FIXTURE_BUNDLE, expected_sha256=FIXTURE_BUNDLE_SHA256, require_sha256=True)
    old_text = (FIXTURE_BUNDLE / BUNDLE_FILE).read_text()
    old = json.loads(old_text)
    assert bundle.spec == SPEC and bundle.spec.to_json() == old["spec"]
    assert bundle.spec.start_date == date(2010, 1, 4) and bundle.data_end == date(2013, 3, 1)
    assert bundle.spec.context_features == ("realized_vol_10",) and bundle.context_tickers == ("^IDX",)
    contents = ("model", "model_config", "spec", "scalers", "tickers", "sequence_length", "target_kind")
    write_bundle(
        tmp_path,
        **{name: getattr(bundle, name) for name in (*contents, "dataset_run_id", "context_tickers")},
    )
    text = (tmp_path / BUNDLE_FILE).read_text()
    new = json.loads(text)
    assert text == json.dumps(new, indent=2, sort_keys=True)
    unchanged = {**new, "weights_sha256": old["weights_sha256"], "requirements": old["requirements"]}
    assert json.dumps(unchanged, indent=2, sort_keys=True) == old_text
