"""Registry faults: the MLflow tracking store unreachable (from the start, at registration, at the alias
move) and the Production alias moved by someone else while a run works.

A tracking server that is down is a real one (a closed port); one that goes down half-way through a
run is faked at MLflow's client boundary, raising what MLflow's REST store raises then.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.faults.checks import table_state
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    NEXT_AS_OF,
    Workspace,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    ledger,
    make_broken_production,
    predictions,
    production,
    promotion_rows,
    register_broken,
    versions,
)
from tests.ledger import recent_runs


def without_ledger(state: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {name: value for name, value in state.items() if name != "pipeline_runs"}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_gone(*_args: Any, **_kwargs: Any) -> None:
    from mlflow.exceptions import MlflowException

    raise MlflowException(
        "API request to http://mlflow.internal:5000/api/2.0/mlflow/model-versions/create failed with exception "
        "HTTPConnectionPool(host='mlflow.internal', port=5000): Max retries exceeded (Connection refused)"
    )


@pytest.mark.parametrize("command", ["daily", "promote"])
def test_tracking_server_unreachable_fails_with_exit_1_saying_what_to_check(
    bootstrapped: Workspace, command: str
) -> None:
    before = without_ledger(table_state(bootstrapped.engine))
    port = closed_port()
    result = bootstrapped.run(
        "--as-of",
        NEXT_AS_OF,
        command,
        env={
            "STOCKCLI_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
        },
    )
    assert result.returncode == 1, result.stderr
    assert f"at http://127.0.0.1:{port}" in result.stderr
    assert "Check [mlflow] tracking_uri (or STOCKCLI_MLFLOW_TRACKING_URI)" in result.stderr
    assert "Traceback" not in result.stderr
    assert production(bootstrapped) == "1"  # the real store, untouched
    after = without_ledger(table_state(bootstrapped.engine))
    # Nothing but the day's new bars (fetched before the registry was needed) changed.
    assert {k: v for k, v in after.items() if k != "raw_stock_data"} == {
        k: v for k, v in before.items() if k != "raw_stock_data"
    }
    assert ledger(bootstrapped.engine)[-1][1:] == (command, "failed")


def test_tracking_store_unreachable_at_registration_fails_clearly_and_registers_nothing(
    bootstrapped: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    before = without_ledger(table_state(bootstrapped.engine))
    monkeypatch.setattr(MlflowClient, "create_model_version", server_gone)
    result = bootstrapped.cli("--as-of", BOOTSTRAP_AS_OF, "train")
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert "Cannot register a version of model 'stockcli-lstm'" in result.output
    assert "Check [mlflow] tracking_uri" in result.output
    assert versions(bootstrapped) == ["1"] and production(bootstrapped) == "1"
    assert without_ledger(table_state(bootstrapped.engine)) == before
    assert ledger(bootstrapped.engine)[-1][1:] == ("train", "failed")
    # The training run is closed as FAILED rather than left running.
    from stockcli.ml import registry

    settings = bootstrapped.settings()
    runs = registry.client(settings).search_runs(
        [registry._experiment_id(settings)], order_by=["start_time DESC"]
    )
    assert runs[0].info.status == "FAILED"


def test_tracking_store_unreachable_at_promotion_keeps_production_and_records_not_promoted(
    bootstrapped: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    broken = make_broken_production(bootstrapped)
    rows_before = promotion_rows(bootstrapped.engine)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", server_gone)
    result = bootstrapped.cli("--as-of", BOOTSTRAP_AS_OF, "promote", "--version", "1")
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert "Cannot move the Production alias of model 'stockcli-lstm'" in result.output
    assert "Check [mlflow] tracking_uri" in result.output
    assert production(bootstrapped) == broken
    new_rows = promotion_rows(bootstrapped.engine)[len(rows_before) :]
    assert len(new_rows) == 1
    _, candidate, was_production, promoted, _, reason, _ = new_rows[0]
    assert (candidate, was_production, promoted) == ("1", broken, False)
    assert "The alias was NOT moved" in reason
    assert ledger(bootstrapped.engine)[-1][1:] == ("promote", "failed")


def test_production_alias_moved_mid_daily_run_does_not_mix_versions(
    bootstrapped: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stockcli.services.daily as daily_module
    from stockcli.ml import registry

    other = register_broken(bootstrapped)  # what someone else points Production at mid-run
    real_load, real_checkpoint = registry.load_bundle, daily_module.checkpoint
    moves: list[str] = []

    def load_then_move(settings: Any, version: Any = None, **kwargs: Any) -> Any:
        # Right after the run resolved Production, someone moves the alias.
        if not moves:
            registry.set_production(settings, other)
            moves.append("after resolve")
        return real_load(settings, version, **kwargs)

    def move_between_predict_and_monitor(settings: Any, name: str) -> None:
        if name == "daily:after_predict":
            registry.set_production(settings, "1")
            registry.set_production(settings, other)
            moves.append("between predict and monitor")
        real_checkpoint(settings, name)

    monitored_versions: list[str | None] = []
    real_monitor = daily_module.monitor

    def monitor_spy(**kwargs: Any) -> Any:
        monitored_versions.append(kwargs.get("model_version"))
        return real_monitor(**kwargs)

    monkeypatch.setattr(registry, "load_bundle", load_then_move)
    monkeypatch.setattr(daily_module, "checkpoint", move_between_predict_and_monitor)
    monkeypatch.setattr(daily_module, "monitor", monitor_spy)
    result = bootstrapped.cli("--as-of", NEXT_AS_OF, "--json", "daily", "--no-retrain")
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert moves == ["after resolve", "between predict and monitor"]
    payload = json.loads(result.output)
    assert payload["model_version"] == "1" and monitored_versions == ["1"]
    stored = [p for p in predictions(bootstrapped.engine, with_version=True) if str(p[0]) == "2013-02-05"]
    assert len(stored) == 2 and {p[5] for p in stored} == {"1"}
    latest = json.loads((bootstrapped.data_dir / "predictions" / "latest_predictions.json").read_text())
    assert latest["model_version"] == "1" and {p["model_version"] for p in latest["predictions"]} == {"1"}

    newest = recent_runs(bootstrapped.engine, limit=1)[0]
    assert newest.details is not None and newest.details["model_version"] == "1"
    assert production(bootstrapped) == other  # the other party's move stands


def test_promote_refuses_to_move_an_alias_that_changed_under_it(
    bootstrapped: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockcli.db import promotions
    from stockcli.ml import registry

    broken = make_broken_production(bootstrapped)
    other = register_broken(bootstrapped)
    real_record = promotions.record_decision

    def record_then_someone_moves_the_alias(*args: Any, **kwargs: Any) -> int:
        promotion_id = real_record(*args, **kwargs)
        registry.set_production(bootstrapped.settings(), other)
        return promotion_id

    monkeypatch.setattr(promotions, "record_decision", record_then_someone_moves_the_alias)
    result = bootstrapped.cli("--as-of", BOOTSTRAP_AS_OF, "promote", "--version", "1")
    monkeypatch.undo()
    assert result.exit_code == 1, result.output
    assert f"Production moved from version {broken} to {other}" in result.output
    assert "Run `stockcli promote` again" in result.output
    assert production(bootstrapped) == other  # not overwritten by a decision made against `broken`
    newest = promotion_rows(bootstrapped.engine)[-1]
    assert newest[1:4] == ("1", broken, False) and "NOT moved" in newest[5]


# --- the whole bundle under one checksum ------------------------------------------------------------------------


def production_folder(workspace: Workspace) -> tuple[str, Path]:
    """The Production version and its artifact folder (bundle.json, weights.npz)."""
    from urllib.parse import unquote, urlparse

    from stockcli.ml import registry

    settings = workspace.settings()
    version = production(workspace)
    assert version is not None
    source = registry.client(settings).get_model_version(settings.mlflow.model_name, version).source
    return version, Path(unquote(urlparse(registry.artifact_uri(settings, source)).path))


def scale_first_number(document: Any, factor: float) -> bool:
    """Multiply the first float found in `document` (depth first) by `factor`; True when one was."""
    items = document.items() if isinstance(document, dict) else enumerate(document)
    for key, value in items:
        if isinstance(value, float) and value != 0.0:
            document[key] = value * factor
            return True
        if isinstance(value, dict | list) and scale_first_number(value, factor):
            return True
    return False


def tamper(workspace: Workspace, how: str) -> str:
    """Change Production's bundle the way an attacker or an accident would; returns the version."""
    from stockcli.ml import registry
    from stockcli.ml.bundle import BUNDLE_FILE

    version, folder = production_folder(workspace)
    path = folder / BUNDLE_FILE
    document = json.loads(path.read_text())
    if how == "tickers reordered":
        document["tickers"].reverse()
    elif how == "a number x500":
        assert scale_first_number(document["scalers"], 500.0)
    elif how == "format 1":
        document["format"] = 1
    if how == "checksum tag removed":
        settings = workspace.settings()
        registry.client(settings).delete_model_version_tag(
            settings.mlflow.model_name, version, registry.TAG_BUNDLE_SHA256
        )
    else:
        path.write_text(json.dumps(document, indent=2, sort_keys=True))
    registry.clear_caches()
    return version


@pytest.mark.parametrize("how", ["tickers reordered", "a number x500", "checksum tag removed", "format 1"])
def test_a_changed_or_unverifiable_bundle_predicts_nothing_and_says_to_retrain(
    bootstrapped: Workspace, how: str
) -> None:
    before = without_ledger(table_state(bootstrapped.engine))
    stored = predictions(bootstrapped.engine, with_version=True)
    version = tamper(bootstrapped, how)

    result = bootstrapped.cli("--as-of", NEXT_AS_OF, "predict")

    assert result.exit_code == 1, result.output
    message = result.stderr
    assert f"model version {version}" in message and "stockcli retrain --force" in message
    if how == "format 1":
        assert "saved by an older stockcli" in message
        assert len(message.strip().splitlines()) == 1  # one line
    elif how == "checksum tag removed":
        assert "no recorded checksum" in message
    else:
        assert "does not match the checksum recorded when it was registered" in message
    assert production(bootstrapped) == version  # nothing moved
    assert predictions(bootstrapped.engine, with_version=True) == stored
    assert without_ledger(table_state(bootstrapped.engine)) == before
    assert ledger(bootstrapped.engine)[-1][1:] == ("predict", "failed")


def test_a_lost_mlflow_store_is_refused_before_it_reuses_version_numbers(bootstrapped: Workspace) -> None:
    stored = predictions(bootstrapped.engine, with_version=True)
    assert {p[5] for p in stored} == {"1"}
    (bootstrapped.data_dir / "mlflow.db").unlink()  # lost: the app database still has version 1's rows

    result = bootstrapped.cli("--as-of", NEXT_AS_OF, "daily")

    assert result.exit_code == 2, result.output
    message = result.stderr
    assert "version 1" in message and "lost or replaced" in message
    assert "Restore the MLflow store" in message and "new, empty data dir" in message
    assert versions(bootstrapped) == []  # no version 1 trained again
    assert predictions(bootstrapped.engine, with_version=True) == stored
    assert ledger(bootstrapped.engine)[-1][1:] == ("daily", "failed")


@pytest.mark.parametrize("command", [("train",), ("daily", "--no-retrain")])
def test_a_registry_missing_the_versions_of_the_database_is_refused_on_both_databases(
    tmp_path: Path, database_url: str, command: tuple[str, ...]
) -> None:
    from datetime import UTC, datetime

    from stockcli.db.models import Promotion
    from tests.faults.pipeline import new_workspace

    url = None if database_url.startswith("sqlite") else database_url
    workspace = new_workspace(tmp_path / "ws", database_url=url)
    with workspace.engine.begin() as connection:  # a promotion of version 3 recorded; the registry is empty
        connection.execute(
            Promotion.__table__.insert().values(
                decided_at=datetime(2013, 2, 1, tzinfo=UTC),
                candidate_version="3",
                production_version="2",
                metric="mae",
                candidate_metrics={},
                naive_metrics={},
                promoted=True,
                dry_run=False,
                reason="test",
            )
        )
    result = workspace.cli("--as-of", BOOTSTRAP_AS_OF, *command)
    assert result.exit_code == 2, result.output
    assert "versions 2, 3" in result.stderr and "lost or replaced" in result.stderr
    assert versions(workspace) == []
    workspace.close()
