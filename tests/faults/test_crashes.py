"""Crashes: the real `stockcli` killed by SIGKILL at named points of fetch, process, train, promote,
retrain and daily, then run again. Each re-run must end in the state of one clean run: the same bars,
the same dataset ids and content, the same Production weights (training is seeded, so a re-trained
model is bit-identical), the same predictions; the killed run shows as `interrupted` in the ledger,
and Production never moves before promote's alias move.

The kill happens in a subprocess (`STOCKCLI_KILL_AT`); the re-run goes through the same CLI in this
process (cheaper: torch and mlflow are already imported).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stockcli.config import Settings
from stockcli.db.models import Base
from stockcli.db.promotions import PENDING_NOTE
from tests.faults.checks import table_state
from tests.faults.pipeline import (
    BOOTSTRAP_AS_OF,
    NEXT_AS_OF,
    Workspace,
    bars_digest,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    bootstrapped_workspace,
    built_sets,
    copy_workspace,
    datasets,
    ledger,
    make_broken_production,
    new_workspace,
    predictions,
    production,
    promotion_rows,
    versions,
    weights_sha,
)

KILLED = -9


def killed(result: object) -> bool:
    return getattr(result, "returncode", None) == KILLED


def without_ledger(state: dict[str, tuple[int, str]]) -> dict[str, tuple[int, str]]:
    return {name: value for name, value in state.items() if name != "pipeline_runs"}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> str | None:
    """None: the workspace's own SQLite file; else a fresh PostgreSQL schema."""
    return None if request.param == "sqlite" else str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """One clean bootstrap (`daily` as of 2013-02-01): what every crashed-and-re-run workspace must equal."""
    return bootstrapped_workspace(tmp_path_factory)


def test_sigkill_in_fetch_after_first_ticker_then_rerun_stores_the_same_bars(
    tmp_path: Path, reference: Workspace, database: str | None
) -> None:
    workspace = new_workspace(tmp_path / "ws", database_url=database)
    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "fetch", kill_at="fetch:after_ticker")
    assert killed(crashed), crashed.stderr
    # The first ticker was saved whole before the kill; nothing of it is lost.
    rows, _ = bars_digest(workspace.engine)
    assert 0 < rows < bars_digest(reference.engine)[0]
    assert ledger(workspace.engine) == [(1, "fetch", "running")]

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "fetch")
    assert rerun.exit_code == 0, rerun.output
    assert bars_digest(workspace.engine) == bars_digest(reference.engine)
    assert ledger(workspace.engine) == [(1, "fetch", "interrupted"), (2, "fetch", "ok")]
    workspace.close()


def test_sigkill_in_process_before_save_then_rerun_freezes_the_same_dataset(
    tmp_path: Path, reference: Workspace, database: str | None
) -> None:
    workspace = new_workspace(tmp_path / "ws", database_url=database)
    assert workspace.cli("--as-of", BOOTSTRAP_AS_OF, "fetch").exit_code == 0
    before = without_ledger(table_state(workspace.engine))

    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "process", kill_at="process:before_save")
    assert killed(crashed), crashed.stderr
    assert without_ledger(table_state(workspace.engine)) == before  # nothing half-written
    assert datasets(workspace.engine) == {}

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "process")
    assert rerun.exit_code == 0, rerun.output
    assert datasets(workspace.engine) == datasets(reference.engine)  # same id, same content hash
    assert [s for _, _, s in ledger(workspace.engine)] == ["ok", "interrupted", "ok"]
    workspace.close()


@pytest.mark.slow
def test_sigkill_in_train_after_register_keeps_production_and_rerun_registers_identical_weights(
    bootstrapped: Workspace,
) -> None:
    workspace = bootstrapped
    before = without_ledger(table_state(workspace.engine))
    assert production(workspace) == "1" and versions(workspace) == ["1"]

    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "train", kill_at="train:after_register")
    assert killed(crashed), crashed.stderr
    assert production(workspace) == "1"
    orphans = ["2"]  # registered, never promoted: harmless, and `stockcli models` lists it
    assert versions(workspace) == ["1", *orphans]
    assert without_ledger(table_state(workspace.engine)) == before
    assert ledger(workspace.engine)[-1][1:] == ("train", "running")

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "train")
    assert rerun.exit_code == 0, rerun.output
    new_version = json.loads(rerun.output)["model_version"]
    assert versions(workspace) == ["1", *orphans, new_version]
    assert production(workspace) == "1"  # train never moves the alias
    # Same dataset, same tuned parameters, same seed: the same weights as the clean bootstrap's model.
    assert weights_sha(workspace, new_version) == weights_sha(workspace, "1")
    assert [s for _, _, s in ledger(workspace.engine)][-2:] == ["interrupted", "ok"]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["promote:before_alias", "promote:after_alias"])
def test_sigkill_in_promote_around_the_alias_move_never_leaves_a_false_promoted_row(
    bootstrapped: Workspace, point: str
) -> None:
    workspace = bootstrapped
    broken = make_broken_production(workspace)  # version 2: Production, and far worse than version 1
    rows_before = promotion_rows(workspace.engine)

    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "promote", "--version", "1", kill_at=point)
    assert killed(crashed), crashed.stderr
    alias_moved = point == "promote:after_alias"
    assert production(workspace) == ("1" if alias_moved else broken)
    new_rows = promotion_rows(workspace.engine)[len(rows_before) :]
    assert len(new_rows) == 1
    _, candidate, was_production, promoted, dry_run, reason, _ = new_rows[0]
    assert (candidate, was_production, dry_run) == ("1", broken, False)
    assert not promoted and reason.endswith(PENDING_NOTE)  # never claims what it has not done

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "promote", "--version", "1")
    assert rerun.exit_code == 0, rerun.output
    assert production(workspace) == "1"
    settled, *decided = promotion_rows(workspace.engine)[len(rows_before) :]
    assert len(decided) == 1
    if alias_moved:
        # The killed run did move the alias: its row is settled as promoted, the re-run changes nothing.
        assert settled[3] is True and "interrupted after moving the alias" in settled[5]
        assert decided[0][3] is False and "already is Production" in decided[0][5]
    else:
        assert settled[3] is False and "NOT moved" in settled[5]
        assert decided[0][3] is True and decided[0][2] == broken
    assert not any(row[5].endswith(PENDING_NOTE) for row in promotion_rows(workspace.engine))
    # Exactly one row says version 1 replaced the broken version.
    assert (
        sum(1 for row in promotion_rows(workspace.engine) if row[1] == "1" and row[3] and row[2] == broken)
        == 1
    )
    assert [s for _, _, s in ledger(workspace.engine)][-2:] == ["interrupted", "ok"]


@pytest.mark.parametrize("point", ["daily:after_fetch", "daily:after_predict"])
def test_sigkill_in_daily_then_rerun_matches_a_clean_daily(
    bootstrapped: Workspace, tmp_path: Path, point: str
) -> None:
    clean = copy_workspace(bootstrapped, tmp_path / "clean")
    assert clean.cli("--as-of", NEXT_AS_OF, "daily").exit_code == 0

    workspace = bootstrapped
    crashed = workspace.run("--as-of", NEXT_AS_OF, "daily", kill_at=point)
    assert killed(crashed), crashed.stderr
    assert production(workspace) == "1"
    rerun = workspace.cli("--as-of", NEXT_AS_OF, "daily")
    assert rerun.exit_code == 0, rerun.output

    assert bars_digest(workspace.engine) == bars_digest(clean.engine)
    assert predictions(workspace.engine, with_version=True) == predictions(clean.engine, with_version=True)
    assert without_ledger(table_state(workspace.engine))["model_performance_log"][0] == 2  # 2013-02-04 scored
    latest = workspace.data_dir / "predictions" / "latest_predictions.json"
    assert json.loads(latest.read_text()) == json.loads(
        (clean.data_dir / "predictions" / "latest_predictions.json").read_text()
    )
    assert [s for _, _, s in ledger(workspace.engine)] == ["ok", "interrupted", "ok"]
    clean.close()


def test_sigkill_between_a_days_refits_and_its_decisions_then_rerun_matches_a_clean_daily(
    bootstrapped: Workspace, tmp_path: Path
) -> None:
    """Refits every session: the run is killed after saving the day's fits, before its decisions and
    predictions; the re-run refits nothing more and predicts what a clean run did. (Its decisions are
    made again too; with nothing scored yet they change nothing here: test_selection.py holds them.)"""
    with bootstrapped.config_path.open("a", encoding="utf-8") as config:
        config.write("[forecasters]\nrefit_sessions = 1\n")
    clean = copy_workspace(bootstrapped, tmp_path / "clean")
    assert clean.cli("--as-of", NEXT_AS_OF, "daily").exit_code == 0

    workspace = bootstrapped
    crashed = workspace.run("--as-of", NEXT_AS_OF, "daily", kill_at="refit:after_fits")
    assert killed(crashed), crashed.stderr
    rerun = workspace.cli("--as-of", NEXT_AS_OF, "daily")
    assert rerun.exit_code == 0, rerun.output

    assert predictions(workspace.engine, with_version=True) == predictions(clean.engine, with_version=True)
    # Every column but the write times.
    columns = {
        table.name: [
            c.name for c in table.columns if c.name not in ("created_at", "decided_at", "updated_at")
        ]
        for table in Base.metadata.sorted_tables
        if table.name in ("forecaster_fits", "serving_selection", "horizon_serving")
    }
    assert table_state(workspace.engine, columns) == table_state(clean.engine, columns)
    assert table_state(workspace.engine, columns)["forecaster_fits"][0] > 0  # the day's refits, once
    assert [s for _, _, s in ledger(workspace.engine)] == ["ok", "interrupted", "ok"]
    clean.close()


@pytest.mark.slow
def test_sigkill_in_retrain_keeps_production_and_rerun_matches_a_clean_retrain(
    bootstrapped: Workspace, tmp_path: Path
) -> None:
    clean = copy_workspace(bootstrapped, tmp_path / "clean")
    clean_run = clean.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "retrain", "--force")
    assert clean_run.exit_code == 0, clean_run.output
    clean_result = json.loads(clean_run.output)

    workspace = bootstrapped
    bars_before = bars_digest(workspace.engine)
    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "retrain", "--force", kill_at="retrain:after_build")
    assert killed(crashed), crashed.stderr
    assert production(workspace) == "1" and versions(workspace) == ["1"]
    assert bars_digest(workspace.engine) == bars_before

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "--json", "retrain", "--force")
    assert rerun.exit_code == 0, rerun.output
    result = json.loads(rerun.output)
    assert result["ran"] and result["model_version"] == "2"
    # The crash left nothing behind that changes the retrain: the same weights as a clean retrain
    # from the same state, and the same decision about Production.
    assert weights_sha(workspace, "2") == weights_sha(clean, "2")
    assert weights_sha(workspace, "2") != weights_sha(workspace, "1")  # fine-tuned, not a copy
    assert result["promoted"] == clean_result["promoted"]
    assert production(workspace) == production(clean)
    assert bars_digest(workspace.engine) == bars_before
    assert [s for _, _, s in ledger(workspace.engine)] == ["ok", "interrupted", "ok"]
    clean.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "retrain:after_train",
        "tune:after-trial-0",
    ],
)
def test_sigkill_in_daily_bootstrap_then_rerun_matches_a_clean_bootstrap(
    tmp_path: Path, reference: Workspace, point: str
) -> None:
    workspace = new_workspace(tmp_path / "ws")
    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "daily", kill_at=point)
    assert killed(crashed), crashed.stderr
    assert production(workspace) is None  # nothing was promoted
    assert versions(workspace) == (["1"] if point == "retrain:after_train" else [])
    assert predictions(workspace.engine) == []

    rerun = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "daily")
    assert rerun.exit_code == 0, rerun.output
    assert bars_digest(workspace.engine) == bars_digest(reference.engine)
    assert datasets(workspace.engine) == datasets(reference.engine)
    assert built_sets(workspace.engine) == built_sets(reference.engine)
    serving = production(workspace)
    assert serving == versions(workspace)[-1]
    assert weights_sha(workspace, serving) == weights_sha(reference, production(reference) or "")
    assert predictions(workspace.engine) == predictions(reference.engine)
    assert [s for _, _, s in ledger(workspace.engine)] == ["interrupted", "ok"]


def test_pending_promotion_rows_are_settled_from_where_the_alias_points(settings: Settings) -> None:
    """The bookkeeping behind the promote crash cases, on SQLite and PostgreSQL."""
    from stockcli.db import promotions
    from stockcli.db.engine import open_database

    engine = open_database(settings)
    common: dict[str, Any] = {
        "production_version": "2",
        "metric": "mae",
        "candidate_metrics": {},
        "production_metrics": None,
        "naive_metrics": {},
        "window_start": None,
        "window_end": None,
        "dataset_run_id": "ds",
        "dry_run": False,
    }

    def pending(candidate: str) -> int:
        return promotions.record_decision(
            engine, candidate_version=candidate, promoted=False, reason=f"better{PENDING_NOTE}", **common
        )

    moved, not_moved = pending("3"), pending("4")
    assert promotions.settle_pending(engine, production_version="3") == 2
    rows = {row[0]: row for row in promotion_rows(engine)}
    assert rows[moved][3] is True and "interrupted after moving the alias" in rows[moved][5]
    assert rows[not_moved][3] is False and "NOT moved" in rows[not_moved][5]
    assert promotions.settle_pending(engine, production_version="3") == 0  # settled once
    # Pending for 5, but a later run's row already records 5's promotion: no second promoted row.
    claimed_later = pending("5")
    promotions.record_decision(engine, candidate_version="5", promoted=True, reason="better", **common)
    assert promotions.settle_pending(engine, production_version="5") == 1
    rows = {row[0]: row for row in promotion_rows(engine)}
    assert rows[claimed_later][3] is False
    assert sum(1 for row in rows.values() if row[1] == "5" and row[3]) == 1
    assert not any(row[5].endswith(PENDING_NOTE) for row in rows.values())
    engine.dispose()


@pytest.mark.slow
def test_a_version_registered_by_a_killed_retrain_is_marked_never_evaluated_until_a_decision(
    bootstrapped: Workspace,
) -> None:
    workspace = bootstrapped
    crashed = workspace.run("--as-of", BOOTSTRAP_AS_OF, "retrain", "--force", kill_at="train:after_register")
    assert killed(crashed), crashed.stderr
    assert versions(workspace) == ["1", "2"] and production(workspace) == "1"  # 2: no decision ever

    nxt = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "predict")  # the next run, whatever it is
    assert nxt.exit_code == 0, nxt.output

    def notes() -> dict[str, str | None]:
        listed = workspace.cli("--json", "models")
        assert listed.exit_code == 0, listed.output
        return {item["version"]: item["note"] for item in json.loads(listed.stdout)["versions"]}

    assert notes()["1"] is None
    assert "killed before its promotion decision" in str(notes()["2"])
    table = workspace.cli("models")
    assert "Version 2: Registered by a run killed" in table.stderr
    assert "stockcli promote --version 2" in table.stderr

    decided = workspace.cli("--as-of", BOOTSTRAP_AS_OF, "promote", "--version", "2")
    assert decided.exit_code == 0, decided.output
    assert notes() == {"1": None, "2": None}  # decided now: evaluated, whatever the decision
    assert promotion_rows(workspace.engine)[-1][1] == "2"
