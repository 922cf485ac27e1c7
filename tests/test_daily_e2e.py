"""The daily loop end to end on the bundled sample bars, with tiny budgets: `stockcli daily` run as of
one session after another, exactly as cron would, then `backtest` continuing the same history.

Every run goes through the real CLI in this process (Typer's CliRunner) on a copy of the session's
bootstrapped workspace (tests/faults/pipeline.py: GOOG and MSFT, Production = version 1 trained as of
Friday 2013-02-01, predictions for Monday 2013-02-04). The bootstrap's promotion found the model no
better than naive on its window, so naive (point) and GARCH (intervals) are served: the served
forecast equals naive and the live skill is exactly 0 until something goes wrong. Bad live
performance is constructed by overwriting the serving version's stored predictions for a target
session (10% above the base close, where naive is off by about 1%) before the run that scores them.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, get_args
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from stockcli.choices import IntervalSource
from stockcli.clock import trading_calendar
from stockcli.db.engine import make_engine
from stockcli.db.models import ForecasterFit, LatestPrediction, ModelPerformance, Promotion, RawStockData
from tests.faults.pipeline import (
    Workspace,
    bootstrapped_fixture,  # noqa: F401  (the `bootstrapped` fixture)
    bootstrapped_workspace,
    copy_workspace,
    new_workspace,
    production,
    rewrite_mlflow_paths,
)

TICKERS = ("GOOG", "MSFT")
DAILY_KEYS = {
    "status",
    "as_of",
    "model_version",
    "predictions",
    "failed",
    "monitor",
    "retrained",
    "promoted",
    "bootstrapped",
    "retrain",
    "fetch_status",
}
PREDICTION_KEYS = {
    "ticker",
    "base_date",
    "base_close",
    "predicted_close",
    "change_pct",
    "target_date",
    "lower_80",
    "upper_80",
    "lower_95",
    "upper_95",
    "median",
    "p_up",
    "p_up_source",
    "source",
    "p_value",
    "interval_source",
    "interval_p_value",
    "unseen",
    "model_version",
    "dataset_run_id",
    "horizons",
}
CANDIDATES = ("network", "rolling", "garch", "gjr", "har_range", "blend")  # every interval candidate, scored

INTERVAL_FIELDS = (
    "coverage_80",
    "coverage_95",
    "width_80",
    "width_95",
    "winkler_80",
    "winkler_95",
    "pinball",
)
BAD_FACTOR = 1.10
CALENDAR = trading_calendar("XNYS")
NEW_YORK = ZoneInfo("America/New_York")

# Short windows so that a month of sessions shows every decision: 5 sessions, a decision from 3, and
# a cooldown of 10 sessions (the bootstrap of 2013-02-01 blocks retrains through 2013-02-14).
MONTH_CONFIG = "[monitor]\nwindow_sessions = 5\nmin_samples = 3\ncooldown_sessions = 10\n"
MONTH = CALENDAR.sessions(date(2013, 2, 4), date(2013, 2, 26))
ONE_BAD_DAY = date(2013, 2, 7)
SUSTAINED_FROM = date(2013, 2, 11)  # every target from here on is spoiled


def d(text: str) -> date:
    return date.fromisoformat(text)


def assert_prediction(prediction: dict[str, Any], as_of: date) -> None:
    """The documented keys; intervals ordered around the median; 0 < p_up < 1."""
    assert set(prediction) == PREDICTION_KEYS
    assert set(prediction["horizons"]) == {"1", "5", "20"}
    assert prediction["horizons"]["1"]["target_date"] == prediction["target_date"]
    assert d(prediction["target_date"]) > as_of >= d(prediction["base_date"])
    ordered = [prediction[k] for k in ("lower_95", "lower_80", "median", "upper_80", "upper_95")]
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in ordered), prediction
    assert ordered == sorted(ordered) and ordered[0] < ordered[-1], prediction
    assert 0.0 < prediction["p_up"] < 1.0
    # Any interval source the selection may serve (har_range wins some tickers' promotion test here).
    assert prediction["source"] in ("model", "naive") and prediction["interval_source"] in (
        "model",
        *get_args(IntervalSource),
    )
    assert prediction["unseen"] is False
    if prediction["source"] == "naive":
        assert prediction["predicted_close"] == prediction["base_close"]


def daily(workspace: Workspace, as_of: date) -> dict[str, Any]:
    result = workspace.cli("--as-of", as_of.isoformat(), "--json", "daily")
    assert result.exit_code == 0, result.output
    payload: dict[str, Any] = json.loads(result.stdout)
    assert set(payload) == DAILY_KEYS and payload["failed"] == []
    assert [p["ticker"] for p in payload["predictions"]] == list(TICKERS)
    for prediction in payload["predictions"]:
        assert_prediction(prediction, as_of)
    monitor = payload["monitor"]
    assert isinstance(monitor["retrain_needed"], bool) and monitor["reason"]
    assert set(monitor["triggers"]) <= {"skill", "coverage_80", "coverage_95"}
    return payload


def spoil(engine: Engine, *, target: date, version: str) -> None:
    """Constructed bad performance: `version`'s predictions for `target`, 10% above the base close."""
    with engine.begin() as connection:
        changed = connection.execute(
            update(LatestPrediction)
            .where(LatestPrediction.target_date == target, LatestPrediction.model_version == version)
            .values(predicted_close=LatestPrediction.base_close * BAD_FACTOR)
        ).rowcount
    assert changed == len(TICKERS)


def rows_of(engine: Engine, model: Any) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(model)).mappings())


def promotions_of(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(Promotion).order_by(Promotion.id)).mappings())


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@dataclass(frozen=True)
class Month:
    workspace: Workspace
    runs: dict[date, dict[str, Any]]  # as of -> `daily --json`
    serving: dict[date, str]  # as of -> the version Production pointed at during that run


@pytest.fixture(scope="module")
def month(tmp_path_factory: pytest.TempPathFactory) -> Month:
    """A month of daily runs (2013-02-04..2013-02-26) on a copy of the bootstrapped workspace: one bad
    day (target 2013-02-07), then every target from 2013-02-11 on spoiled."""
    workspace = copy_workspace(
        bootstrapped_workspace(tmp_path_factory), tmp_path_factory.mktemp("month") / "ws"
    )
    with workspace.config_path.open("a", encoding="utf-8") as config:
        config.write(MONTH_CONFIG)
    runs: dict[date, dict[str, Any]] = {}
    serving: dict[date, str] = {}
    version = "1"
    for as_of in MONTH:
        serving[as_of] = version
        runs[as_of] = daily(workspace, as_of)
        if runs[as_of]["promoted"]:
            version = runs[as_of]["retrain"]["model_version"]
        target = CALENDAR.next_session(as_of)
        if target == ONE_BAD_DAY or target >= SUSTAINED_FROM:
            spoil(workspace.engine, target=target, version=version)
    yield Month(workspace, runs, serving)
    workspace.close()


@pytest.mark.slow
def test_a_month_of_daily_runs(month: Month) -> None:
    workspace, runs, serving = month.workspace, month.runs, month.serving
    engine = workspace.engine
    for as_of, payload in runs.items():
        target = CALENDAR.next_session(as_of)
        assert payload["status"] == "ok" and payload["as_of"] == as_of.isoformat()
        # The Production alias resolved at the start of the run served every prediction of it.
        assert payload["model_version"] == serving[as_of]
        assert {(p["target_date"], p["base_date"], p["model_version"]) for p in payload["predictions"]} == {
            (target.isoformat(), as_of.isoformat(), serving[as_of])
        }
        # Matured predictions are scored by the next run, exactly once per ticker: the ones for today.
        assert payload["monitor"]["evaluated"] == len(TICKERS)
    # Target dates: the next session of the exchange, not "tomorrow".
    assert runs[d("2013-02-08")]["predictions"][0]["target_date"] == "2013-02-11"  # Friday -> Monday
    assert runs[d("2013-02-15")]["predictions"][0]["target_date"] == "2013-02-19"  # Presidents' Day

    # Every matured prediction was scored against the stored close of exactly its target session.
    bars = {(r["ticker"], r["date"]): r["close"] for r in rows_of(engine, RawStockData)}
    scored = rows_of(engine, ModelPerformance)
    assert sorted((r["target_date"], r["ticker"]) for r in scored) == sorted(
        (target, ticker) for target in MONTH for ticker in TICKERS
    )
    for row in scored:
        assert row["actual_close"] == bars[(row["ticker"], row["target_date"])]
        assert row["base_date"] == CALENDAR.previous_session(row["target_date"])
        assert row["naive_abs_error"] == pytest.approx(abs(row["base_close"] - row["actual_close"]))
        spoiled = row["target_date"] == ONE_BAD_DAY or row["target_date"] >= SUSTAINED_FROM
        assert (row["predicted_close"] == pytest.approx(row["base_close"] * BAD_FACTOR)) is spoiled
        if not spoiled:  # the naive forecast was served
            assert row["predicted_close"] == row["base_close"] and row["direction_score"] in (0.5, None)

    # One bad day makes the raw window skill look dreadful, yet the test finds no evidence.
    for day in ("2013-02-07", "2013-02-08"):
        monitor = runs[d(day)]["monitor"]
        assert monitor["skill"] < -1 and monitor["p_worse"] > 0.05, monitor
        assert monitor["triggers"] == [] and not monitor["retrain_needed"], monitor
    # Sustained bad performance is significant, but the bootstrap's cooldown holds it back...
    for day in ("2013-02-13", "2013-02-14"):
        monitor = runs[d(day)]["monitor"]
        assert monitor["triggers"] == ["skill"] and monitor["p_worse"] < 0.05, monitor
        assert not monitor["retrain_needed"] and monitor["cooldown_active"]
        assert "cooldown of 10 sessions" in monitor["reason"]
    # ...until the tenth session after it: a retrain that same run, with the monitor's reason.
    retrained = [as_of for as_of, payload in runs.items() if payload["retrained"]]
    assert retrained == [d("2013-02-15")]
    first = runs[d("2013-02-15")]
    assert first["monitor"]["retrain_needed"] and not first["monitor"]["cooldown_active"]
    assert first["retrain"]["reason"].startswith(
        "Monitor: the served forecast is significantly worse than naive"
    )
    assert first["retrain"]["model_version"] == "2"
    for as_of in MONTH[MONTH.index(d("2013-02-15")) + 1 :]:
        assert runs[as_of]["monitor"]["cooldown_active"] and not runs[as_of]["retrained"]
    final = first["retrain"]["model_version"] if first["promoted"] else "1"
    assert production(workspace) == final and serving[MONTH[-1]] == final

    # Every promotion decision is recorded with its paired test, linked to the run that made it.
    decided = promotions_of(engine)
    assert [row["candidate_version"] for row in decided] == ["1", "2"]
    bootstrap, retrain = decided
    assert bootstrap["promoted"] and bootstrap["p_value"] is None and bootstrap["production_version"] is None
    assert retrain["production_version"] == "1" and retrain["test"] == "diebold-mariano (HAC), one-sided"
    assert 0.0 <= retrain["p_value"] <= 1.0
    assert retrain["improvement_low"] <= retrain["improvement"] <= retrain["improvement_high"]
    assert retrain["promoted"] is (retrain["p_value"] < 0.05 and retrain["improvement"] > 0)
    assert retrain["promoted"] is first["promoted"]
    assert f"p = {retrain['p_value']:.3g}" in first["retrain"]["promotion_reason"]

    # Adaptive conformal inference: each (ticker, level) learned once from every scored prediction, in
    # target order, alpha <- alpha + gamma * (target - miss); the level starts again from nominal when
    # the version or the interval source serving the ticker changes (a retrain re-decides the sources).
    from stockcli.db.serving import load_interval_state

    gamma = workspace.settings().intervals.aci_gamma
    state = load_interval_state(engine)
    assert set(state) == {(t, level) for t in TICKERS for level in (80, 95)}
    for (ticker, level), item in state.items():
        low, high = ("q10", "q90") if level == 80 else ("q025", "q975")
        nominal = 0.2 if level == 80 else 0.05
        served: tuple[str, str] | None = None
        for row in sorted((r for r in scored if r["ticker"] == ticker), key=lambda r: r["target_date"]):
            if (row["model_version"], row["interval_source"]) != served:
                served, alpha, updates, misses = (row["model_version"], row["interval_source"]), nominal, 0, 0
            miss = not (row[low] <= row["actual_close"] <= row[high])
            alpha, updates, misses = alpha + gamma * (nominal - miss), updates + 1, misses + miss
        assert (item.model_version, item.source) == served
        assert (item.n_updates, item.misses) == (updates, misses)
        assert item.alpha == pytest.approx(alpha, abs=1e-12)
        assert item.last_target_date == MONTH[-1] and item.model_version == final
    assert any(item.alpha != (0.2 if item.level == 80 else 0.05) for item in state.values())

    # The ledger records the session each run predicted from: what the daemon's catch-up reads.
    from stockcli import daemon
    from stockcli.db.runs import recent_daily_runs

    covered = dict(recent_daily_runs(engine, limit=100))
    assert all(covered[as_of].base_date == as_of for as_of in MONTH)
    settings = workspace.settings()
    evening = datetime(2013, 2, 26, 18, tzinfo=NEW_YORK)
    assert daemon.missed_session(settings, engine, now=evening) is None
    assert daemon.missed_session(settings, engine, now=datetime(2013, 2, 27, 18, tzinfo=NEW_YORK)) == d(
        "2013-02-27"
    )


def test_predictions_target_the_next_session_of_the_exchange(bootstrapped: Workspace) -> None:
    """Weekends and holidays are skipped; an as-of date that is not a session predicts from the session
    before it. (As-of dates after the model's training data only, which ends on 2013-02-01: the
    calendar's closures before it, Hurricane Sandy's included, are tests/test_clock.py's.)"""
    cases = {
        "2013-02-01": ("2013-02-01", "2013-02-04"),  # the bootstrap's own session, a Friday
        "2013-02-15": ("2013-02-15", "2013-02-19"),  # Presidents' Day
        "2013-02-16": ("2013-02-15", "2013-02-19"),  # a Saturday before it
        "2013-02-18": ("2013-02-15", "2013-02-19"),  # as of Presidents' Day itself
    }
    assert bootstrapped.cli("--as-of", "2013-02-19", "fetch").exit_code == 0  # later bars stay invisible
    for as_of, (base, target) in cases.items():
        result = bootstrapped.cli("--as-of", as_of, "--json", "predict")
        assert result.exit_code == 0, result.output
        payload = json.loads(result.stdout)
        assert payload["target_date"] == target, as_of
        assert {(p["base_date"], p["target_date"]) for p in payload["predictions"]} == {(base, target)}
        for prediction in payload["predictions"]:
            assert_prediction(prediction, d(as_of))
    with bootstrapped.engine.connect() as connection:
        stored = set(connection.execute(select(LatestPrediction.base_date, LatestPrediction.target_date)))
    assert {(d(base), d(target)) for base, target in cases.values()} <= stored

    # A daily run as of a Saturday predicts Monday from Friday's bar.
    saturday = daily(bootstrapped, d("2013-02-02"))
    assert {(p["base_date"], p["target_date"]) for p in saturday["predictions"]} == {
        ("2013-02-01", "2013-02-04")
    }
    assert not saturday["retrained"] and not saturday["promoted"]


def test_a_re_run_of_the_day_stores_what_its_first_run_stored(bootstrapped: Workspace) -> None:
    """Refits every 2 sessions, one ticker a session: the first run of 2013-02-05 refits one ticker
    (before predicting); running the day again refits nothing more and stores the same predictions."""
    with bootstrapped.config_path.open("a", encoding="utf-8") as config:
        config.write("[forecasters]\nrefit_sessions = 2\n")

    def stored() -> tuple[list[Any], int]:
        with bootstrapped.engine.connect() as connection:
            predictions = connection.execute(
                select(LatestPrediction).where(LatestPrediction.base_date == d("2013-02-05"))
            ).mappings()
            kept = sorted((dict(row, created_at=None, pipeline_run_id=None) for row in predictions), key=str)
            fits = connection.execute(select(func.count()).select_from(ForecasterFit)).scalar_one()
        return kept, int(fits)

    daily(bootstrapped, d("2013-02-04"))
    daily(bootstrapped, d("2013-02-05"))
    first, fits = stored()
    assert len(first) == len(TICKERS) and fits > 0
    daily(bootstrapped, d("2013-02-05"))
    assert stored() == (first, fits)


def test_daily_in_a_terminal_shows_live_accuracy_only_once_something_is_scored(
    bootstrapped: Workspace,
) -> None:
    """Nothing scored yet: one line, not a table of dashes; once a session is scored, its table."""
    first = bootstrapped.cli("--as-of", "2013-02-01", "daily")
    assert first.exit_code == 0, first.output
    assert "Live accuracy: no scored session yet" in first.output
    assert "Live accuracy, last" not in first.output and "Decision: no retrain." in first.output

    scored = bootstrapped.cli("--as-of", "2013-02-04", "daily")  # the 2013-02-04 bar scores yesterday's
    assert scored.exit_code == 0, scored.output
    assert "Live accuracy, last 1 scored session (model 1)" in scored.output
    assert "no scored session yet" not in scored.output


def test_daily_reports_a_ticker_it_cannot_predict_beside_the_others(bootstrapped: Workspace) -> None:
    """A ticker added to the watchlist that the source does not know: the others are predicted and
    stored, the run says which ticker failed and why, and exits 3 (partial)."""
    config = bootstrapped.config_path.read_text(encoding="utf-8")
    bootstrapped.config_path.write_text(
        config.replace('tickers = ["GOOG", "MSFT"]', 'tickers = ["GOOG", "ZZZZ", "MSFT"]'), encoding="utf-8"
    )
    result = bootstrapped.cli("--as-of", "2013-02-04", "--json", "daily")
    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == DAILY_KEYS and payload["status"] == "partial"
    assert [p["ticker"] for p in payload["predictions"]] == list(TICKERS)
    for prediction in payload["predictions"]:
        assert_prediction(prediction, d("2013-02-04"))
    [failed] = payload["failed"]
    assert (failed["ticker"], failed["kind"], failed["predictable_from"]) == ("ZZZZ", "no_bars", None)
    assert "no stored bars" in failed["reason"]
    with bootstrapped.engine.connect() as connection:
        stored = set(
            connection.execute(
                select(LatestPrediction.ticker).where(LatestPrediction.target_date == d("2013-02-05"))
            ).scalars()
        )
    assert stored == set(TICKERS)


def test_daily_reports_a_ticker_whose_fetch_rejected_rows_as_failed_and_predicts_the_others(
    bootstrapped: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The source turns unadjusted: GOOG x0.1 from 2013-01-28 (a 10:1 split). `daily` runs fetch first:
    GOOG's new rows are rejected, so GOOG is reported failed with the fetch's words (a split detected,
    what to do) instead of predicted from a history cut short; MSFT is predicted and stored; exit 3."""
    from stockcli.sources import sample

    folder = tmp_path / "unadjusted"
    shutil.copytree(sample.SAMPLE_DIR, folder)
    lines = (folder / "GOOG.csv").read_text(encoding="utf-8").splitlines()
    header = [name.strip().lower() for name in lines[0].split(",")]
    prices = [header.index(name) for name in ("open", "high", "low", "close")]
    for i, line in enumerate(lines[1:], start=1):
        cells = line.split(",")
        if cells[0] >= "2013-01-28":
            for p in prices:
                cells[p] = repr(float(cells[p]) * 0.1)
            lines[i] = ",".join(cells)
    (folder / "GOOG.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(sample, "SAMPLE_DIR", folder)

    result = bootstrapped.cli("--as-of", "2013-02-04", "--json", "daily")

    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    assert payload["status"] == "partial" and payload["fetch_status"] == "partial"
    assert [p["ticker"] for p in payload["predictions"]] == ["MSFT"]
    [failed] = payload["failed"]
    assert (failed["ticker"], failed["kind"]) == ("GOOG", "rejected_rows")
    assert "a split detected on 2013-01-28 (prices x0.1)" in failed["reason"]
    assert "use split-adjusted prices, or re-fetch" in failed["reason"]
    with bootstrapped.engine.connect() as connection:
        stored = set(
            connection.execute(
                select(LatestPrediction.ticker).where(LatestPrediction.target_date == d("2013-02-05"))
            ).scalars()
        )
    assert stored == {"MSFT"}


# --- backtest -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_backtest_continues_the_history_and_reports_intervals_sources_and_tests(
    month: Month, tmp_path: Path
) -> None:
    """The month's workspace, copied as a backtest workspace, replayed over its next three sessions
    (2013-02-27..2013-03-01) with a cooldown of 3: the still-spoiled window retrains on the first
    session; the summary carries interval scores, the share served by the model and by naive, the
    skill's interval, both baselines' figures, the retrain's reason and every promotion's p-value."""
    from stockcli.services.backtest import WORKSPACE_MARKER

    user = copy_workspace(month.workspace, tmp_path / "user")
    config = user.config_path.read_text(encoding="utf-8")
    user.config_path.write_text(
        config.replace("cooldown_sessions = 10", "cooldown_sessions = 3"), encoding="utf-8"
    )
    scratch = tmp_path / "scratch"
    shutil.copytree(user.data_dir, scratch, ignore=shutil.ignore_patterns("stockcli.lock"))
    rewrite_mlflow_paths(scratch / "mlflow.db", user.data_dir.resolve(), scratch.resolve())
    (scratch / WORKSPACE_MARKER).write_text("made by test_daily_e2e\n", encoding="utf-8")
    serving = production(user)
    assert serving is not None
    history = make_engine(f"sqlite:///{scratch / 'stockcli.db'}")
    spoil(history, target=d("2013-02-27"), version=serving)  # the month's last prediction
    history.dispose()
    before = tree_digest(user.data_dir)

    result = user.cli(
        "--json", "backtest", "--start", "2013-02-27", "--end", "2013-03-01", "--workspace", str(scratch)
    )

    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert tree_digest(user.data_dir) == before  # the user's data dir: same files, same bytes
    assert (summary["start"], summary["end"], summary["sessions"]) == ("2013-02-27", "2013-03-01", 3)
    assert summary["sessions_failed"] == 0 and summary["failures"] == []
    assert summary["predictions"] == 3 * len(TICKERS) and summary["data_end"] == "2013-03-01"

    [retrain] = summary["retrains"]
    assert retrain["as_of"] == "2013-02-27"
    assert retrain["reason"].startswith("Monitor: the served forecast is significantly worse than naive")
    assert retrain["p_value"] is not None and 0.0 <= retrain["p_value"] <= 1.0
    assert retrain["improvement_low"] <= retrain["improvement"] <= retrain["improvement_high"]
    assert retrain["promoted"] is (retrain["p_value"] < 0.05 and retrain["improvement"] > 0)
    decisions = summary["promotion_decisions"]
    assert len(decisions) == 3  # the bootstrap's, the month's retrain, this one
    assert decisions[0]["p_value"] is None and all(0 <= p["p_value"] <= 1 for p in decisions[1:])
    assert decisions[-1]["p_value"] == pytest.approx(retrain["p_value"])
    assert decisions[-1]["promoted"] is retrain["promoted"]

    # Live figures over the range, next to naive, per ticker and overall, with both baselines.
    from stockcli.db.engine import open_database
    from stockcli.services.backtest import scratch_settings

    engine = open_database(scratch_settings(user.settings(), scratch))
    scored = [
        r for r in rows_of(engine, ModelPerformance) if d("2013-02-27") <= r["target_date"] <= d("2013-03-01")
    ]
    engine.dispose()
    assert len(scored) == summary["evaluated"] == 3 * len(TICKERS)
    metrics = summary["metrics"]
    assert metrics["samples"] == len(scored) and metrics["sessions"] == 3
    assert metrics["mae"] == pytest.approx(
        sum(abs(r["predicted_close"] - r["actual_close"]) for r in scored) / len(scored)
    )
    served_by_model = sum(r["source"] == "model" for r in scored) / len(scored)
    for block in [metrics, *summary["per_ticker"].values()]:
        for name in (
            "coverage_80",
            "coverage_95",
            "winkler_95",
            "pinball",
            "skill",
            "skill_low",
            "skill_high",
        ):
            assert isinstance(block[name], float), (name, block)
        assert 0 <= block["coverage_80"] <= block["coverage_95"] <= 1
        assert block["skill_low"] <= block["skill"] <= block["skill_high"]
        assert block["share_model"] + block["share_naive"] == pytest.approx(1.0)
        assert set(block["baselines"]) == set(CANDIDATES)
        garch = block["baselines"]["garch"]
        assert block["skill_vs_garch"] == {
            "winkler_95": pytest.approx(1 - block["winkler_95"] / garch["winkler_95"]),
            "pinball": pytest.approx(1 - block["pinball"] / garch["pinball"]),
        }
        for values in block["baselines"].values():
            assert set(values) == {*INTERVAL_FIELDS, "skill_vs_garch", "p_value_vs_garch"} and all(
                isinstance(values[k], float) for k in INTERVAL_FIELDS
            )
    assert metrics["share_model"] == pytest.approx(served_by_model)
    assert set(summary["per_ticker"]) == set(TICKERS)
    assert set(summary["candidates"]) == set(CANDIDATES)
    for ticker, block in summary["per_ticker"].items():
        # What was served, by source, adds up to every session; P(up) next to the training up-share.
        assert sum(block["interval_share"].values()) == pytest.approx(1.0), ticker
        assert set(block["interval_share"]) <= set(CANDIDATES)
        assert set(block["p_up"]) == {"brier", "brier_base", "skill"}
        assert block["p_up"]["skill"] == pytest.approx(
            1 - block["p_up"]["brier"] / block["p_up"]["brier_base"]
        )
    for name, values in summary["candidates"].items():
        assert name == "garch" or 0.0 <= values["p_value_vs_garch"] <= 1.0
    for name, values in summary["candidates"].items():
        assert {k: values[k] for k in INTERVAL_FIELDS} == {
            k: metrics["baselines"][name][k] for k in INTERVAL_FIELDS
        }
        assert set(values["per_ticker"]) == set(TICKERS)
    # The network against the statistical candidate with the lowest pinball loss of the range.
    versus = summary["network_vs_best_statistical"]
    statistical = {n: v["pinball"] for n, v in summary["candidates"].items() if n != "network"}
    assert versus["candidate"] == min(statistical, key=lambda n: statistical[n])
    assert 0.0 <= versus["p_value"] <= 1.0
    assert versus["skill"]["pinball"] == pytest.approx(
        1 - summary["candidates"]["network"]["pinball"] / statistical[versus["candidate"]]
    )
    # Every horizon scored in the range (5-session forecasts of the month mature in it), with GARCH's
    # figures beside, and its risk backtest per ticker in the one shape.
    from stockcli.ml.risk import RISK_BACKTEST_KEYS

    one = summary["horizons"]["1"]
    assert one["n"] == len(scored) and {"1", "5"} <= set(summary["horizons"]) <= {"1", "5", "20"}
    # The same served intervals on the same closes as the next-session figures above.
    assert (one["coverage_80"], one["coverage_95"]) == pytest.approx(
        (metrics["coverage_80"], metrics["coverage_95"])
    )
    assert set(one["garch"]) >= {"coverage_80", "coverage_95", "winkler_95", "pinball"}
    # Each horizon's served P(up) next to its base rate; at 1 the next session's P(up)s on the same closes.
    assert all(
        set(block["p_up"]) == {"brier", "brier_base", "skill"} for block in summary["horizons"].values()
    )
    assert one["p_up"] == pytest.approx(metrics["p_up"])
    assert set(summary["risk"]) == set(summary["horizons"]) and set(summary["risk"]["1"]) == set(TICKERS)
    # The served 97.5% VaR next to GARCH's on the same forecasts, per horizon and ticker.
    assert set(summary["risk_vs_garch"]) == set(summary["horizons"])
    assert all(set(f) == {"served", "garch"} for f in summary["risk_vs_garch"]["1"].values())
    for figures in summary["risk"]["1"].values():
        assert tuple(figures) == RISK_BACKTEST_KEYS and figures["n"] == 3 and figures["zone"] is None
    user.close()


def test_backtest_with_no_session_replayed_exits_4(tmp_path: Path) -> None:
    workspace = new_workspace(tmp_path / "ws")
    result = workspace.cli(
        "--json",
        "backtest",
        "--start",
        "1990-01-02",
        "--end",
        "1990-01-02",
        "--workspace",
        str(tmp_path / "scratch"),
    )
    assert result.exit_code == 4, result.output
    summary = json.loads(result.stdout)
    assert (summary["sessions"], summary["sessions_failed"], summary["predictions"]) == (1, 1, 0)
    assert summary["data_end"] is None and summary["retrains"] == []
    assert summary["failures"] == [
        "1990-01-02: No stored bars for GOOG, MSFT between 2011-06-01 and 1990-01-02."
    ]
    assert "No bars were available for any of the 1 sessions" in result.output
    workspace.close()
