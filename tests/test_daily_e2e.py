"""The daily loop end to end on the bundled sample bars, with tiny budgets: `stockcli daily` run as of
one session after another, exactly as cron would, plus `backtest` replaying it in a scratch workspace.

Every run goes through the real CLI in this process (Typer's CliRunner) on a copy of the session's
bootstrapped workspace (tests/faults/pipeline.py: GOOG and MSFT, Production = version 1 trained as of
Friday 2013-02-01, predictions for Monday 2013-02-04). Bad live performance is constructed by
overwriting the production model's stored predictions for one target session (10% above the base
close, where the naive forecast is off by about 1%) before the run that scores them.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.db.models import LatestPrediction, ModelPerformance, PipelineRun, Promotion, RawStockData
from tests.faults.pipeline import (
    Workspace,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    copy_workspace,
    production,
)

TICKERS = ("GOOG", "MSFT")
# What the issue promises for `stockcli daily --json`, and the extras it carries besides.
ISSUE_KEYS = {"status", "as_of", "model_version", "predictions", "monitor", "retrained", "promoted"}
EXTRA_KEYS = {"bootstrapped", "retrain", "fetch_status"}
PREDICTION_KEYS = {"ticker", "target_date", "predicted_close", "base_close"}
PREDICTION_EXTRA_KEYS = {"base_date"}
MONITOR_KEYS = {"retrain_needed", "reason"}
BAD_FACTOR = 1.10

# Short windows so that a month of sessions shows every decision. Over 5 sessions of 2 tickers the
# noise of directional accuracy and skill is about as large as the defaults' margins, so those two
# are loosened to what no model of these tiny budgets misses by chance; the MAPE threshold stays the
# default. The constructed bad days (10% off where naive is ~1% off) breach them many times over.
MONITOR_CONFIG = """
[monitor]
window_sessions = 5
min_samples = 3
cooldown_sessions = 6
direction_min = 0.0
skill_min = -0.5
"""


def d(text: str) -> date:
    return date.fromisoformat(text)


def daily(workspace: Workspace, as_of: date) -> dict[str, Any]:
    result = workspace.cli("--as-of", as_of.isoformat(), "--json", "daily")
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.output)
    assert_daily_shape(payload)
    return payload


def assert_daily_shape(payload: dict[str, Any]) -> None:
    """`{"status", "as_of", "model_version", "predictions": [{"ticker", "target_date",
    "predicted_close", "base_close"}], "monitor": {"retrain_needed", "reason", ...}, "retrained",
    "promoted"}`, and nothing else at the top but the documented extras."""
    assert set(payload) == ISSUE_KEYS | EXTRA_KEYS
    assert payload["status"] in ("ok", "partial", "stale")
    assert d(payload["as_of"]).isoformat() == payload["as_of"]
    assert isinstance(payload["model_version"], str) and payload["model_version"].isdigit()
    assert isinstance(payload["retrained"], bool) and isinstance(payload["promoted"], bool)
    assert [p["ticker"] for p in payload["predictions"]] == list(TICKERS)
    for prediction in payload["predictions"]:
        assert set(prediction) == PREDICTION_KEYS | PREDICTION_EXTRA_KEYS
        assert d(prediction["target_date"]) > d(payload["as_of"]) >= d(prediction["base_date"])
        for key in ("predicted_close", "base_close"):
            assert (
                isinstance(prediction[key], float) and math.isfinite(prediction[key]) and prediction[key] > 0
            )
    monitor = payload["monitor"]
    assert set(monitor) >= MONITOR_KEYS
    assert (
        isinstance(monitor["retrain_needed"], bool)
        and isinstance(monitor["reason"], str)
        and monitor["reason"]
    )


def closes(engine: Engine) -> dict[tuple[str, date], float]:
    query = select(RawStockData.ticker, RawStockData.date, RawStockData.close)
    with engine.connect() as connection:
        return {(t, day): float(c) for t, day, c in connection.execute(query)}


def performance(engine: Engine) -> list[ModelPerformance]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        rows = list(session.scalars(select(ModelPerformance).order_by(ModelPerformance.target_date)))
        session.expunge_all()
    return rows


def spoil_predictions(engine: Engine, *, target: date, version: str) -> None:
    """Constructed bad performance: the production model's predictions for `target`, 10% above base."""
    with engine.begin() as connection:
        changed = connection.execute(
            update(LatestPrediction)
            .where(LatestPrediction.target_date == target, LatestPrediction.model_version == version)
            .values(predicted_close=LatestPrediction.base_close * BAD_FACTOR)
        ).rowcount
    assert changed == len(TICKERS)


def daily_ledger_ids(engine: Engine) -> dict[date, int]:
    query = select(PipelineRun.as_of, PipelineRun.id).where(PipelineRun.command == "daily")
    with engine.connect() as connection:
        return {as_of: run_id for as_of, run_id in connection.execute(query) if as_of is not None}


def decisions(engine: Engine) -> list[tuple[str, str | None, bool, bool, str, int | None]]:
    query = select(
        Promotion.candidate_version,
        Promotion.production_version,
        Promotion.promoted,
        Promotion.dry_run,
        Promotion.reason,
        Promotion.pipeline_run_id,
    ).order_by(Promotion.id)
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]  # type: ignore[misc]


@pytest.mark.slow
def test_daily_over_a_month_of_sessions(bootstrapped: Workspace) -> None:
    workspace = bootstrapped
    with workspace.config_path.open("a", encoding="utf-8") as config:
        config.write(MONITOR_CONFIG)
    settings = workspace.settings()
    calendar = trading_calendar("XNYS")
    sessions = calendar.sessions(d("2013-02-04"), d("2013-02-26"))
    assert d("2013-02-18") not in sessions and len(sessions) == 16  # Presidents' Day: NYSE closed
    one_bad_day = d("2013-02-07")
    two_bad_days = {d("2013-02-14"), d("2013-02-15")}
    sustained = set(calendar.sessions(d("2013-02-19"), d("2013-02-26")))
    spoiled = {one_bad_day} | two_bad_days | sustained

    serving = "1"
    runs: dict[date, dict[str, Any]] = {}
    for as_of in sessions:
        payload = daily(workspace, as_of)
        runs[as_of] = payload
        target = calendar.next_session(as_of)
        assert payload["status"] == "ok" and payload["as_of"] == as_of.isoformat()
        # The Production alias resolved at the start of the run served every prediction of it.
        assert payload["model_version"] == serving
        assert {(p["target_date"], p["base_date"]) for p in payload["predictions"]} == {
            (target.isoformat(), as_of.isoformat())
        }
        # Matured predictions are scored by the next run, exactly once per ticker: the ones for today.
        assert payload["monitor"]["evaluated"] == len(TICKERS)
        if target in spoiled:
            spoil_predictions(workspace.engine, target=target, version=serving)
        if payload["promoted"]:
            serving = payload["retrain"]["model_version"]
        assert production(workspace) == serving

    # Target dates: the next session of the exchange, not "tomorrow".
    def target_of(as_of: str) -> str:
        return str(runs[d(as_of)]["predictions"][0]["target_date"])

    assert target_of("2013-02-08") == "2013-02-11"  # Friday -> Monday
    assert target_of("2013-02-22") == "2013-02-25"
    assert target_of("2013-02-15") == "2013-02-19"  # Friday before Presidents' Day -> Tuesday

    # Every matured prediction was scored against the stored close of exactly its target session.
    bars = closes(workspace.engine)
    scored = performance(workspace.engine)
    assert {(r.target_date, r.ticker) for r in scored} == {
        (target, ticker) for target in sessions for ticker in TICKERS
    }
    for row in scored:
        assert row.actual_close == bars[(row.ticker, row.target_date)]
        assert row.base_date == calendar.previous_session(row.target_date)
        assert row.base_close == bars[(row.ticker, row.base_date)]
        assert row.abs_error == pytest.approx(abs(row.predicted_close - row.actual_close))
        assert row.abs_pct_error == pytest.approx(row.abs_error / row.actual_close)
        assert row.naive_abs_error == pytest.approx(abs(row.base_close - row.actual_close))
        spoilt = row.target_date in spoiled
        assert (row.predicted_close == pytest.approx(row.base_close * BAD_FACTOR)) is spoilt
    # The run of 2013-02-26 predicted 2013-02-27, which has not happened yet: not scored.
    with workspace.engine.connect() as connection:
        pending = connection.execute(
            select(LatestPrediction.ticker).where(LatestPrediction.target_date == d("2013-02-27"))
        ).all()
    assert len(pending) == len(TICKERS)

    # One bad day breaches a threshold on its own, yet never triggers a retrain.
    for day in ("2013-02-11", "2013-02-12", "2013-02-13"):  # 2013-02-07 in the window, no cooldown
        monitor = runs[d(day)]["monitor"]
        assert not monitor["cooldown_active"]
        assert monitor["skill"] < settings.monitor.skill_min
        assert not monitor["retrain_needed"] and "2013-02-07" in monitor["reason"], monitor
    lone = runs[d("2013-02-14")]["monitor"]  # 2013-02-07 has left the window; 2013-02-14 is alone
    assert not lone["retrain_needed"] and "2013-02-14" in lone["reason"], lone

    # Sustained bad performance does: two bad sessions in a row, then a retrain that same run.
    retrained = [as_of for as_of, payload in runs.items() if payload["retrained"]]
    assert retrained == [d("2013-02-15"), d("2013-02-26")]
    first = runs[d("2013-02-15")]
    assert first["monitor"]["retrain_needed"] and "skill against naive" in first["monitor"]["reason"]
    assert first["retrain"]["reason"].startswith("Monitor: ") and first["retrain"]["model_version"] == "2"

    # The cooldown: the breach goes on after the retrain, but no second retrain for 6 sessions.
    for day in ("2013-02-22", "2013-02-25"):
        monitor = runs[d(day)]["monitor"]
        assert monitor["cooldown_active"] and monitor["skill"] < settings.monitor.skill_min
        assert not monitor["retrain_needed"] and "cooldown of 6 sessions" in monitor["reason"], monitor
    assert len(calendar.sessions(d("2013-02-15"), d("2013-02-26"))) - 1 == settings.monitor.cooldown_sessions
    second = runs[d("2013-02-26")]
    assert second["monitor"]["retrain_needed"] and second["retrain"]["model_version"] == "3"

    # Every retrain's promotion decision is recorded, linked to the daily run that made it.
    ledger_ids = daily_ledger_ids(workspace.engine)
    recorded = decisions(workspace.engine)
    assert [row[0] for row in recorded] == ["1", "2", "3"]  # the bootstrap's, then one per retrain
    for (candidate, _, promoted, dry_run, reason, run_id), as_of in zip(recorded[1:], retrained, strict=True):
        assert candidate == runs[as_of]["retrain"]["model_version"]
        assert promoted is runs[as_of]["promoted"] and not dry_run and reason
        assert run_id == ledger_ids[as_of]
    workspace.close()


def test_predictions_target_the_next_session_of_the_exchange(bootstrapped: Workspace) -> None:
    """Weekends, holidays and unscheduled closures (Hurricane Sandy) are skipped; an as-of date that is
    not a session predicts from the session before it."""
    cases = {
        "2012-07-03": ("2012-07-03", "2012-07-05"),  # Independence Day
        "2012-10-26": ("2012-10-26", "2012-10-31"),  # NYSE closed 10-29 and 10-30 (Hurricane Sandy)
        "2012-11-21": ("2012-11-21", "2012-11-23"),  # Thanksgiving
        "2012-11-22": ("2012-11-21", "2012-11-23"),  # as of Thanksgiving itself
        "2012-12-22": ("2012-12-21", "2012-12-24"),  # a Saturday
        "2012-12-24": ("2012-12-24", "2012-12-26"),  # Christmas Day
    }
    for as_of, (base, target) in cases.items():
        result = bootstrapped.cli("--as-of", as_of, "--json", "predict")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["target_date"] == target, as_of
        assert {(p["base_date"], p["target_date"]) for p in payload["predictions"]} == {(base, target)}
    with bootstrapped.engine.connect() as connection:
        stored = set(connection.execute(select(LatestPrediction.base_date, LatestPrediction.target_date)))
    assert {(d(base), d(target)) for base, target in cases.values()} <= stored

    # A daily run as of a Saturday predicts Monday from Friday's bar.
    saturday = daily(bootstrapped, d("2013-02-02"))
    assert {(p["base_date"], p["target_date"]) for p in saturday["predictions"]} == {
        ("2013-02-01", "2013-02-04")
    }
    assert not saturday["retrained"] and not saturday["promoted"]


# --- backtest -----------------------------------------------------------------------------------------


def tree_digest(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `folder`."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_backtest_replays_daily_in_a_scratch_workspace(bootstrapped: Workspace, tmp_path: Path) -> None:
    """Ten sessions replayed from the user's stored bars (yahoo source: no network, the user's
    database is read), with a threshold the real model cannot meet: a bootstrap, one retrain
    triggered by the monitor after its cooldown, and live metrics next to naive."""
    user = copy_workspace(bootstrapped, tmp_path / "user")
    fetched = user.cli("--as-of", "2013-02-15", "fetch")
    assert fetched.exit_code == 0, fetched.output
    user.close()
    config = user.config_path.read_text(encoding="utf-8")
    user.config_path.write_text(
        config.replace("[data]\n", '[data]\nsource = "yahoo"\n')
        + "[monitor]\nmape_max = 0.0001\nmin_samples = 3\nwindow_sessions = 5\ncooldown_sessions = 5\n",
        encoding="utf-8",
    )
    assert user.settings().data.source == "yahoo"
    before = tree_digest(user.data_dir)
    scratch = tmp_path / "scratch"

    result = user.cli(
        "--json", "backtest", "--start", "2013-02-04", "--end", "2013-02-15", "--workspace", str(scratch)
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)

    # The user's data dir is exactly as it was: same files, same bytes.
    assert tree_digest(user.data_dir) == before
    assert (scratch / "stockcli.db").is_file() and (scratch / "mlflow.db").is_file()

    assert (summary["start"], summary["end"]) == ("2013-02-04", "2013-02-15")
    assert summary["sessions"] == 10 and summary["sessions_failed"] == 0 and summary["failures"] == []
    assert summary["predictions"] == summary["sessions"] * len(TICKERS)
    reasons = [(r["as_of"], r["reason"]) for r in summary["retrains"]]
    assert reasons[0] == ("2013-02-04", "No production model yet: bootstrapping one.")
    # The monitor fires once it has 3 sessions and the bootstrap's 5-session cooldown is over.
    assert [as_of for as_of, _ in reasons] == ["2013-02-04", "2013-02-11"]
    assert reasons[1][1].startswith("Monitor: MAPE") and "above 0.01%" in reasons[1][1]
    assert summary["promotions"] == sum(1 for r in summary["retrains"] if r["promoted"]) >= 1  # bootstrap

    # Live metrics over the range, recomputed here from the scratch database.
    from stockcli.db.engine import open_database
    from stockcli.services.backtest import scratch_settings

    engine = open_database(scratch_settings(user.settings(), scratch))
    bars = closes(engine)
    scored = [r for r in performance(engine) if d("2013-02-04") <= r.target_date <= d("2013-02-15")]
    assert len(scored) == summary["evaluated"] == 9 * len(TICKERS)  # the 02-15 prediction targets 02-19
    errors = [abs(r.predicted_close - bars[(r.ticker, r.target_date)]) for r in scored]
    naive = [abs(bars[(r.ticker, r.base_date)] - bars[(r.ticker, r.target_date)]) for r in scored]
    metrics = summary["metrics"]
    assert metrics["samples"] == len(scored) and metrics["sessions"] == 9
    assert metrics["mae"] == pytest.approx(sum(errors) / len(errors))
    assert metrics["naive_mae"] == pytest.approx(sum(naive) / len(naive))
    assert metrics["skill"] == pytest.approx(1 - metrics["mae"] / metrics["naive_mae"])
    assert set(summary["per_ticker"]) == set(TICKERS)
    assert sum(m["samples"] for m in summary["per_ticker"].values()) == metrics["samples"]
    assert len(decisions(engine)) == len(summary["retrains"])
    assert summary["sessions_per_s"] > 0
    engine.dispose()
