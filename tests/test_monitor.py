"""Monitoring: matured predictions scored against the bar of exactly their target session, and a
retrain decision that does not fire on noise."""

from __future__ import annotations

from datetime import date

import pytest

from stockcli.clock import trading_calendar
from stockcli.config import Settings
from stockcli.db import predictions as predictions_db
from stockcli.db.bars import upsert_bars
from stockcli.db.engine import open_database
from stockcli.db.store import finish_run, start_run, utcnow
from stockcli.services.monitor import monitor

TICKERS = ("AAA", "BBB")


def _seed(
    settings: Settings, sessions: list[date], *, bad_days: set[date] = frozenset(), error: float = 0.002
):  # type: ignore[assignment, no-untyped-def]
    """Bars of 100 on every session, and for each session a prediction made on the session before.

    Good days: predicted 100 * (1 + error) in the right direction; bad days: 10% off the wrong way.
    """
    engine = open_database(settings)
    calendar = trading_calendar("XNYS")
    bars = []
    predictions = []
    for index, day in enumerate(sessions):
        for ticker in TICKERS:
            close = 100.0 + index  # rising every day
            bars.append(
                {
                    "ticker": ticker,
                    "date": day,
                    "open": close,
                    "high": close + 1,
                    "low": close - 1,
                    "close": close,
                    "volume": 1000,
                    "source": "test",
                    "fetched_at": utcnow(),
                }
            )
            if index == 0:
                continue
            base_close = 100.0 + index - 1
            predicted = close * 0.9 if day in bad_days else base_close + 1 + error * close
            predictions.append(
                {
                    "target_date": day,
                    "ticker": ticker,
                    "model_version": "1",
                    "as_of": sessions[index - 1],
                    "base_date": sessions[index - 1],
                    "base_close": base_close,
                    "predicted_close": predicted,
                    "dataset_run_id": "ds",
                    "pipeline_run_id": None,
                    "created_at": utcnow(),
                }
            )
    with engine.begin() as connection:
        upsert_bars(connection, bars)
    predictions_db.save_predictions(engine, predictions)
    assert calendar.next_session(sessions[0]) == sessions[1]
    return engine


def _sessions(count: int) -> list[date]:
    return trading_calendar("XNYS").sessions(date(2012, 11, 1), date(2013, 3, 1))[:count]


def test_matured_predictions_are_scored_once_against_their_target_bar(settings: Settings) -> None:
    sessions = _sessions(6)
    engine = _seed(settings, sessions)
    first = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert first.evaluated == 5 * len(TICKERS)
    again = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert again.evaluated == 0  # idempotent: nothing scored twice
    rows = predictions_db.performance_window(engine, through=sessions[-1], sessions=20, model_version="1")
    row = next(r for r in rows if r.target_date == sessions[1] and r.ticker == "AAA")
    assert row.actual_close == 101.0 and row.base_close == 100.0
    assert row.abs_error == pytest.approx(abs(row.predicted_close - 101.0))
    assert row.naive_abs_error == pytest.approx(1.0)
    assert row.direction_hit is True


def test_predictions_not_yet_matured_wait(settings: Settings) -> None:
    sessions = _sessions(6)
    engine = _seed(settings, sessions)
    early = monitor(settings=settings, engine=engine, as_of=sessions[2], model_version="1")
    assert early.evaluated == 2 * len(TICKERS)  # targets sessions[1] and sessions[2] only


def test_one_bad_day_of_one_ticker_does_not_trigger_a_retrain(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(monitor={"min_samples": 10, "window_sessions": 20})
    sessions = _sessions(22)
    engine = _seed(settings, sessions, bad_days={sessions[-1]})
    result = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert result.overall.sessions == 20
    assert not result.retrain_needed, result.reason


def test_sustained_bad_performance_triggers_a_retrain_with_its_reason(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(monitor={"min_samples": 10, "window_sessions": 20})
    sessions = _sessions(22)
    engine = _seed(settings, sessions, bad_days=set(sessions[8:]))
    result = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert result.retrain_needed
    assert "MAPE" in result.reason and "skill" in result.reason


def test_too_few_sessions_means_no_decision_yet(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(monitor={"min_samples": 10})
    sessions = _sessions(6)
    engine = _seed(settings, sessions, bad_days=set(sessions[1:]))
    result = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert not result.retrain_needed
    assert "need 10" in result.reason


def test_cooldown_after_a_retrain_is_respected(make_settings) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(monitor={"min_samples": 10, "window_sessions": 20, "cooldown_sessions": 10})
    sessions = _sessions(22)
    engine = _seed(settings, sessions, bad_days=set(sessions[8:]))
    run_id = start_run(engine, command="retrain", as_of=sessions[-4])
    finish_run(engine, run_id, status="ok", details={"retrained": True})
    blocked = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert not blocked.retrain_needed and blocked.cooldown_active
    assert "cooldown" in blocked.reason
    later = make_settings(monitor={"min_samples": 10, "window_sessions": 20, "cooldown_sessions": 3})
    allowed = monitor(settings=later, engine=engine, as_of=sessions[-1], model_version="1")
    assert allowed.retrain_needed


def test_a_model_that_serves_the_naive_forecast_does_not_trigger_on_direction(make_settings) -> None:  # type: ignore[no-untyped-def]
    """A forecast of no change makes no directional call: it scores a coin flip (0.5), not a miss."""
    settings = make_settings(monitor={"min_samples": 10, "window_sessions": 20})
    sessions = _sessions(22)
    engine = _seed(settings, sessions)
    with engine.begin() as connection:  # every prediction equals its base close: the naive forecast
        from sqlalchemy import text

        connection.execute(text("UPDATE latest_predictions SET predicted_close = base_close"))
    result = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert result.overall.direction_accuracy == pytest.approx(0.5)
    assert result.overall.skill == pytest.approx(0.0)
    assert not result.retrain_needed, result.reason


def test_a_breach_resting_on_one_session_waits_and_two_bad_sessions_retrain(make_settings) -> None:  # type: ignore[no-untyped-def]
    """One extreme day can push the rolling means past a threshold on its own; that is one bad day,
    not degradation. The same day with a second one breaches without either: retrain."""
    settings = make_settings(monitor={"min_samples": 10, "window_sessions": 20})
    sessions = _sessions(22)
    engine = _seed(settings, sessions, bad_days={sessions[15]})
    with engine.begin() as connection:  # that day the model was off by 70%, not 10%
        from sqlalchemy import text

        connection.execute(
            text(
                "UPDATE latest_predictions SET predicted_close = 0.3 * predicted_close / 0.9 "
                "WHERE target_date = :d"
            ),
            {"d": sessions[15]},
        )
    one = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert one.overall.mape is not None and one.overall.mape > settings.monitor.mape_max  # breached...
    assert not one.retrain_needed  # ...but only because of that one session
    assert sessions[15].isoformat() in one.reason and "One bad day" in one.reason

    _seed(settings, sessions, bad_days={sessions[15], sessions[18]})  # upsert: a second bad day
    with engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE latest_predictions SET predicted_close = 0.3 * predicted_close / 0.9 "
                "WHERE target_date IN (:a, :b)"
            ),
            {"a": sessions[15], "b": sessions[18]},
        )
        connection.execute(text("DELETE FROM model_performance_log"))
    two = monitor(settings=settings, engine=engine, as_of=sessions[-1], model_version="1")
    assert two.retrain_needed, two.reason
    assert "MAPE" in two.reason
