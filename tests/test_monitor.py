"""Monitoring: matured predictions scored against the bar of exactly their target session, the interval
levels adapted as closes arrive, and a retrain decision taken by tests, never by a raw threshold.

Two tickers follow a seeded random walk of 1% daily moves on real NYSE sessions; each test stores a
prediction per ticker and session (made on the session before) from a forecast of its choosing, then
runs `monitor`. Every test runs on SQLite and on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import Settings
from stockcli.db import predictions as predictions_db
from stockcli.db.bars import upsert_bars
from stockcli.db.engine import open_database
from stockcli.db.serving import load_interval_state
from stockcli.db.store import finish_run, start_run, utcnow
from stockcli.ml.stats import binomial_coverage_test
from stockcli.services.monitor import monitor

TICKERS = ("AAA", "BBB")
Z = np.array([-1.959964, -1.281552, 0.0, 1.281552, 1.959964])  # standard normal at the five levels
Forecast = Callable[[str, float, float, int], float]  # (ticker, base close, actual close, index) -> close


@dataclass(frozen=True)
class Market:
    sessions: list[date]
    closes: dict[str, np.ndarray]  # per ticker, one close per session

    def move(self, ticker: str, index: int) -> tuple[float, float]:
        """(base close, actual close) of the prediction that targets session `index`."""
        return float(self.closes[ticker][index - 1]), float(self.closes[ticker][index])


def market(count: int, seed: int = 7) -> Market:
    sessions = trading_calendar("XNYS").sessions(date(2012, 9, 4), date(2013, 3, 1))[:count]
    rng = np.random.default_rng(seed)
    closes = {
        ticker: level * np.exp(np.cumsum(rng.normal(0.0, 0.01, count)))
        for ticker, level in zip(TICKERS, (100.0, 20.0), strict=True)
    }
    return Market(sessions, closes)


def naive(ticker: str, base: float, actual: float, index: int) -> float:
    return base


def off_by(factor: float, days: set[int] | None = None) -> Forecast:
    """10% above the base close on `days` (all days when None); the naive forecast otherwise."""

    def forecast(ticker: str, base: float, actual: float, index: int) -> float:
        return base * factor if days is None or index in days else base

    return forecast


def store(
    engine: Engine,
    world: Market,
    forecast: Forecast = naive,
    *,
    width: float | None = 0.01,
    version: str = "1",
    source: str = "naive",
    interval_source: str = "garch",
    upto: int | None = None,
) -> None:
    """Bars of every session and, for sessions 1.., a prediction made on the session before: point
    `forecast`, quantiles of N(log point, width) (none when `width` is None), baselines in `detail`."""
    bars, predictions = [], []
    for index, day in enumerate(world.sessions[:upto]):
        for ticker in TICKERS:
            close = float(world.closes[ticker][index])
            bars.append(
                {
                    "ticker": ticker,
                    "date": day,
                    "open": close,
                    "high": close * 1.01,
                    "low": close * 0.99,
                    "close": close,
                    "volume": 1000,
                    "source": "test",
                    "fetched_at": utcnow(),
                }
            )
            if index == 0:
                continue
            base, actual = world.move(ticker, index)
            predicted = forecast(ticker, base, actual, index)
            quantiles = [None] * 5 if width is None else list(predicted * np.exp(width * Z))
            predictions.append(
                {
                    "target_date": day,
                    "ticker": ticker,
                    "model_version": version,
                    "as_of": world.sessions[index - 1],
                    "base_date": world.sessions[index - 1],
                    "base_close": base,
                    "predicted_close": predicted,
                    "dataset_run_id": "ds",
                    "pipeline_run_id": None,
                    "created_at": utcnow(),
                    **dict(zip(("q025", "q10", "q50", "q90", "q975"), quantiles, strict=True)),
                    "p_up": 0.5,
                    "source": source,
                    "interval_source": None if width is None else interval_source,
                    "unseen": False,
                    "detail": {
                        "baselines": {
                            "garch": list(base * np.exp(0.011 * Z)),
                            "rolling": list(base * np.exp(0.009 * Z)),
                        }
                    },
                }
            )
    with engine.begin() as connection:
        upsert_bars(connection, bars)
    predictions_db.save_predictions(engine, predictions)


@pytest.fixture
def configured(
    make_settings: Callable[..., Settings], database_url: str
) -> Callable[..., tuple[Settings, Engine]]:
    """`configured(forecasters={...}, **monitor)`: settings on this test's database with those
    [forecasters] and [monitor] values, and its engine."""
    engines: list[Engine] = []

    def factory(forecasters: dict[str, Any] | None = None, **monitor_values: Any) -> tuple[Settings, Engine]:
        settings = make_settings(database_url, monitor=monitor_values, forecasters=forecasters or {})
        engine = open_database(settings)
        engines.append(engine)
        return settings, engine

    yield factory  # type: ignore[misc]
    for engine in engines:
        engine.dispose()


# --- scoring ------------------------------------------------------------------------------------------


def test_matured_predictions_are_scored_once_against_their_target_bar(configured: Any) -> None:
    settings, engine = configured()
    world = market(6)
    store(engine, world, off_by(1.02))
    first = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert first.evaluated == 5 * len(TICKERS) and first.pending == 0
    again = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert again.evaluated == 0  # idempotent: nothing scored twice
    rows = predictions_db.performance_window(
        engine, through=world.sessions[-1], sessions=20, model_version="1"
    )
    assert len(rows) == 5 * len(TICKERS)
    row = next(r for r in rows if r["target_date"] == world.sessions[1] and r["ticker"] == "AAA")
    base, actual = world.move("AAA", 1)
    assert row["actual_close"] == actual and row["base_close"] == base
    assert row["abs_error"] == pytest.approx(abs(1.02 * base - actual))
    assert row["naive_abs_error"] == pytest.approx(abs(base - actual))
    assert row["direction_score"] == (1.0 if actual > base else 0.0)
    assert [row[c] for c in ("q025", "q975")] == pytest.approx(list(1.02 * base * np.exp(0.01 * Z[[0, 4]])))


def test_predictions_not_yet_matured_wait(configured: Any) -> None:
    settings, engine = configured()
    world = market(6)
    store(engine, world)
    early = monitor(settings=settings, engine=engine, as_of=world.sessions[2], model_version="1")
    assert early.evaluated == 2 * len(TICKERS)  # targets sessions[1] and sessions[2] only
    with engine.begin() as connection:  # the bar of the last target session has not arrived yet
        connection.execute(text("DELETE FROM raw_stock_data WHERE date = :d"), {"d": world.sessions[-1]})
    later = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert later.evaluated == 2 * len(TICKERS) and later.pending == len(TICKERS)


def test_each_scored_session_moves_the_interval_levels_once(configured: Any) -> None:
    """Adaptive conformal inference: alpha <- alpha + gamma * (target - miss), once per scored prediction,
    whatever the number of monitor runs; the level starts again for another interval source."""
    settings, engine = configured()
    gamma = settings.intervals.aci_gamma
    world = market(23)
    store(engine, world, width=0.006, upto=21)  # intervals too narrow for 1% moves: misses happen
    monitor(settings=settings, engine=engine, as_of=world.sessions[10], model_version="1")
    monitor(settings=settings, engine=engine, as_of=world.sessions[20], model_version="1")
    monitor(settings=settings, engine=engine, as_of=world.sessions[20], model_version="1")

    def misses_of(ticker: str, level: int, indexes: range, width: float) -> list[bool]:
        half = width * Z[4 if level == 95 else 3]
        out = []
        for index in indexes:
            base, actual = world.move(ticker, index)
            out.append(not (base * np.exp(-half) <= actual <= base * np.exp(half)))
        return out

    state = load_interval_state(engine)
    assert set(state) == {(t, level) for t in TICKERS for level in (80, 95)}
    for (ticker, level), item in state.items():
        misses = misses_of(ticker, level, range(1, 21), 0.006)
        target = 0.2 if level == 80 else 0.05
        assert item.alpha == pytest.approx(target + gamma * sum(target - m for m in misses))
        assert (item.n_updates, item.misses) == (20, sum(misses))
        assert (item.model_version, item.source, item.last_target_date) == ("1", "garch", world.sessions[20])
    assert 0 < state[("AAA", 80)].misses < 20  # both kinds of step were taken

    # The next predictions are served with the rolling band instead: the level starts from nominal.
    store(engine, world, width=0.006, interval_source="rolling")
    monitor(settings=settings, engine=engine, as_of=world.sessions[22], model_version="1")
    for (ticker, level), item in load_interval_state(engine).items():
        misses = misses_of(ticker, level, range(21, 23), 0.006)
        target = 0.2 if level == 80 else 0.05
        assert (item.source, item.n_updates, item.misses) == ("rolling", 2, sum(misses))
        assert item.alpha == pytest.approx(target + gamma * sum(target - m for m in misses))


# --- the retrain decision -------------------------------------------------------------------------


def test_a_significantly_bad_live_window_triggers_a_retrain_with_its_reason(configured: Any) -> None:
    settings, engine = configured(min_samples=10, window_sessions=20)
    world = market(22)
    store(engine, world, off_by(1.10), width=None)  # 10% off every day where naive is ~1% off
    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert result.overall.sessions == 20 and result.overall.samples == 40
    assert result.retrain_needed and result.triggers == ("skill",)
    assert result.overall.skill < 0 and result.overall.p_worse < settings.monitor.alpha
    assert result.overall.skill_high < 0  # the whole interval says worse than naive
    assert "significantly worse than naive" in result.reason and "over the last 20 sessions" in result.reason


def test_one_bad_day_is_noise_not_a_trigger(configured: Any) -> None:
    settings, engine = configured(min_samples=10, window_sessions=20)
    world = market(22)

    def mostly_naive(ticker: str, base: float, actual: float, index: int) -> float:
        return base * 1.10 if index == 21 else base * (1.0 + 0.001 * np.sin(index))

    store(engine, world, mostly_naive)
    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert result.overall.skill < -0.1  # the raw 20-session skill looks alarming...
    assert result.overall.p_worse > settings.monitor.alpha  # ...but rests on one session
    assert not result.retrain_needed and result.triggers == (), result.reason


def test_a_flat_forecast_never_triggers_through_direction(configured: Any) -> None:
    """The naive forecast calls no direction: it scores 0.5 (a coin flip), its skill is exactly 0, and
    nothing triggers; directional accuracy is reported, never a trigger."""
    settings, engine = configured(min_samples=10, window_sessions=20)
    world = market(22)
    store(engine, world, naive, width=0.01)
    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert result.overall.direction_accuracy == pytest.approx(0.5)
    assert all(m.direction_accuracy == pytest.approx(0.5) for m in result.per_ticker.values())
    assert result.overall.skill == pytest.approx(0.0) and result.overall.p_worse == 1.0
    assert not result.retrain_needed and result.triggers == (), result.reason
    assert "No significant loss against naive" in result.reason


def test_intervals_covering_far_less_than_promised_trigger_a_retrain(configured: Any) -> None:
    settings, engine = configured(min_samples=10, window_sessions=20)
    world = market(22)
    store(engine, world, naive, width=0.0005)  # a 0.1%-wide "95%" band for 1% daily moves
    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert result.overall.coverage_80 < 0.2 and result.overall.coverage_95 < 0.2
    assert result.overall.p_coverage_80 < settings.monitor.coverage_alpha
    assert result.retrain_needed and result.triggers == ("coverage_80", "coverage_95")
    assert "the 80% interval covered" in result.reason and "the 95% interval covered" in result.reason
    assert "of 40 closes" in result.reason


def test_misses_on_the_same_days_count_as_fewer_independent_closes(configured: Any) -> None:
    """One market shock sends every ticker outside its interval at once: 8 shock sessions of 20 make
    16 misses of 40 closes. Counted as 40 independent trials that rejects the 80% interval (binomial
    p 0.004); the misses are perfectly correlated within each session, so they are worth 20 trials,
    8 misses (p 0.044), not significant at coverage_alpha 0.01: no retrain on a few bad days."""
    settings, engine = configured(min_samples=10, window_sessions=20)
    sessions = trading_calendar("XNYS").sessions(date(2012, 9, 4), date(2013, 3, 1))[:22]
    shocks = {3, 5, 8, 11, 13, 16, 18, 20}
    # +1.6%: outside the 80% band of N(0, 1%) (+-1.28%), inside the 95% one (+-1.96%).
    returns = np.array([0.016 if i in shocks else 0.001 * (-1) ** i for i in range(len(sessions))])
    world = Market(
        sessions,
        {t: level * np.exp(np.cumsum(returns)) for t, level in zip(TICKERS, (100.0, 20.0), strict=True)},
    )
    store(engine, world, naive, width=0.01)
    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert result.overall.coverage_80 == pytest.approx(0.6) and result.overall.coverage_95 == 1.0
    assert binomial_coverage_test(16, 40, 0.8) < settings.monitor.coverage_alpha  # the naive count
    assert result.overall.effective_n_80 == pytest.approx(20.0)
    assert result.overall.p_coverage_80 == pytest.approx(binomial_coverage_test(8, 20, 0.8))
    assert not result.retrain_needed and result.triggers == (), result.reason
    # Each ticker alone is one close a session: its own test is the plain binomial one.
    for ticker in TICKERS:
        alone = result.per_ticker[ticker]
        assert alone.effective_n_80 == pytest.approx(20.0)
        assert alone.p_coverage_80 == pytest.approx(binomial_coverage_test(8, 20, 0.8))


def test_intervals_as_promised_or_too_wide_do_not_trigger(configured: Any) -> None:
    settings, engine = configured(min_samples=10, window_sessions=20)
    world = market(22)
    store(engine, world, naive, width=0.01)  # the true spread of the walk
    honest = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert (
        0.6 <= honest.overall.coverage_80 <= 1.0
        and honest.overall.p_coverage_95 >= settings.monitor.coverage_alpha
    )
    assert not honest.retrain_needed, honest.reason

    with engine.begin() as connection:
        connection.execute(text("DELETE FROM model_performance_log"))
    store(engine, world, naive, width=0.2)  # far too wide: wasteful, misleading nobody
    wide = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert wide.overall.coverage_80 == 1.0 and wide.overall.p_coverage_80 < settings.monitor.coverage_alpha
    assert not wide.retrain_needed and wide.triggers == (), wide.reason


def test_too_few_sessions_means_no_decision_yet(configured: Any) -> None:
    settings, engine = configured(min_samples=10)
    world = market(6)
    store(engine, world, off_by(1.10))
    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert result.overall.sessions == 5 and result.overall.p_worse < settings.monitor.alpha
    assert not result.retrain_needed
    assert (
        "only 5 scored sessions (need 10)" in result.reason and "waiting for more evidence" in result.reason
    )


def test_cooldown_after_a_retrain_is_respected(configured: Any) -> None:
    settings, engine = configured(min_samples=10, window_sessions=20, cooldown_sessions=10)
    world = market(22)
    store(engine, world, off_by(1.10))
    run_id = start_run(engine, command="retrain", as_of=world.sessions[-4])
    finish_run(engine, run_id, status="ok", details={"retrained": True})
    blocked = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert not blocked.retrain_needed and blocked.cooldown_active
    assert blocked.last_retrain_as_of == world.sessions[-4]
    assert f"a retrain ran on {world.sessions[-4]}: cooldown of 10 sessions" in blocked.reason
    shorter, _ = configured(min_samples=10, window_sessions=20, cooldown_sessions=3)
    allowed = monitor(settings=shorter, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert allowed.retrain_needed and not allowed.cooldown_active


# --- one answer to one question -------------------------------------------------------------------------


def test_monitor_report_dashboard_and_backtest_agree_on_the_same_sessions(configured: Any) -> None:
    """Issue 14, item 1: MAE, skill, directional accuracy and coverage of one window are the same
    numbers in `monitor`, `report`, the dashboard's /performance and `backtest`'s summary."""
    from fastapi.testclient import TestClient

    from stockcli.services.backtest import summarize_range
    from stockcli.services.report import live_performance
    from stockcli.web.app import create_app

    settings, engine = configured(min_samples=5, window_sessions=12)
    world = market(13)
    rng = np.random.default_rng(3)

    def model(ticker: str, base: float, actual: float, index: int) -> float:
        return base + 0.3 * (actual - base) + base * rng.normal(0.0, 0.004)

    store(engine, world, model, source="model", interval_source="model", width=0.008)
    watched = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert watched.evaluated == 24 and watched.overall.sessions == 12

    reported = {
        row.ticker: row for row in live_performance(settings, engine=engine, as_of=world.sessions[-1])
    }
    with TestClient(create_app(settings, warm_registry=False)) as client:
        response = client.get("/performance")
    assert response.status_code == 200, response.text
    served = {row["ticker"]: row for row in response.json()["summary"]}
    replayed = summarize_range(
        predictions_db.scored_between(engine, start=world.sessions[1], end=world.sessions[-1])
    )
    assert (
        set(watched.per_ticker) == set(reported) == set(served) == set(replayed["per_ticker"]) == set(TICKERS)
    )

    for ticker in TICKERS:
        m, r, w, b = (
            watched.per_ticker[ticker],
            reported[ticker],
            served[ticker],
            replayed["per_ticker"][ticker],
        )
        figures = {
            "monitor": (m.mae, m.skill, m.direction_accuracy, m.coverage_80, m.coverage_95, m.sessions),
            "report": (r.mae, r.skill, r.directional_accuracy, r.coverage_80, r.coverage_95, r.sessions),
            "dashboard": (
                w["mae"],
                w["skill"],
                w["directional_accuracy"],
                w["coverage_80"],
                w["coverage_95"],
                w["sessions"],
            ),
            "backtest": (
                b["mae"],
                b["skill"],
                b["direction_accuracy"],
                b["coverage_80"],
                b["coverage_95"],
                b["sessions"],
            ),
        }
        assert all(value is not None for value in figures["monitor"]), figures
        for name, values in figures.items():
            assert values == pytest.approx(figures["monitor"], rel=1e-12), (ticker, name, figures)
        assert (r.skill_low, r.skill_high) == pytest.approx((m.skill_low, m.skill_high))
        assert (b["skill_low"], b["skill_high"]) == pytest.approx((m.skill_low, m.skill_high))
        assert m.served_model_share == b["share_model"] == 1.0 and b["share_naive"] == 0.0
    overall = replayed["overall"]
    assert (
        overall["mae"],
        overall["skill"],
        overall["direction_accuracy"],
        overall["coverage_80"],
    ) == pytest.approx(
        (
            watched.overall.mae,
            watched.overall.skill,
            watched.overall.direction_accuracy,
            watched.overall.coverage_80,
        )
    )


# --- horizons -------------------------------------------------------------------------------------------


def store_horizon(
    engine: Engine,
    world: Market,
    horizon: int,
    *,
    ticker: str = "AAA",
    bases: list[int] | None = None,
    tail: Callable[[int], np.ndarray] | None = None,
    source: str = "garch",
    width: float = 0.01,
) -> None:
    """Horizon rows of `ticker` made on sessions `bases` (default: every one whose target is stored),
    targeting the horizon-th exchange session after: quantiles of N(0, `width` x sqrt(h)) served by
    `source`, and the tail `tail(base index)` (default: that normal's) at the risk levels."""
    from scipy.stats import norm

    from stockcli.db.horizons import save_horizon_predictions
    from stockcli.ml.risk import TAIL_LEVELS

    spread = width * np.sqrt(horizon)
    chosen = bases if bases is not None else list(range(len(world.sessions) - horizon))
    rows = []
    for index in chosen:
        base = float(world.closes[ticker][index])
        levels = np.asarray(TAIL_LEVELS)
        rows.append(
            {
                **horizon_row(world, ticker, index, horizon, base * np.exp(spread * Z)),
                "p_up": 0.5,
                "source": source,
                "tail": list(tail(index) if tail else spread * norm.ppf(levels)),
                "candidates": {"garch": list(base * np.exp(spread * Z))},
                "created_at": utcnow(),
            }
        )
    save_horizon_predictions(engine, rows)


def horizon_row(world: Market, ticker: str, index: int, horizon: int, quantiles: Any) -> dict[str, Any]:
    """The key, target session, base close and served quantiles (closes) of a horizon row made on
    session `index`."""
    from stockcli.services.predict import target_sessions

    base_date = world.sessions[index]
    return {
        "ticker": ticker,
        "base_date": base_date,
        "horizon": horizon,
        "model_version": "1",
        "target_date": target_sessions(trading_calendar("XNYS"), base_date, [horizon])[horizon],
        "as_of": base_date,
        "base_close": float(world.closes[ticker][index]),
        **dict(zip(("q025", "q10", "q50", "q90", "q975"), [float(q) for q in quantiles], strict=True)),
    }


def scored_targets(engine: Engine) -> dict[int, list[tuple[date, float | None]]]:
    """horizon -> (target date, actual close) of the scored horizon rows."""
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT horizon, target_date, actual_close FROM horizon_predictions WHERE scored_at IS NOT NULL"
            )
        ).all()
    out: dict[int, list[tuple[date, float | None]]] = {}
    for horizon, target, actual in rows:
        target = target if isinstance(target, date) else date.fromisoformat(str(target))
        out.setdefault(int(horizon), []).append((target, actual))
    return out


def test_5_and_20_session_forecasts_mature_on_their_exchange_session_across_closures(configured: Any) -> None:
    """Made on 2012-10-24: the 5th session after is 11-02 (the NYSE closed 10-29 and 10-30 for
    Hurricane Sandy), the 20th 11-26 (Thanksgiving skipped). Each is scored on its target session's
    close, not before; the rows wait until then."""
    from stockcli.services.monitor import evaluate_matured

    settings, engine = configured()
    world = market(60)
    store(engine, world, naive)
    base = world.sessions.index(date(2012, 10, 24))
    for horizon in (5, 20):
        store_horizon(engine, world, horizon, bases=[base])

    evaluate_matured(engine, through=date(2012, 11, 1), settings=settings)
    assert 5 not in scored_targets(engine) and 20 not in scored_targets(engine)
    evaluate_matured(engine, through=date(2012, 11, 2), settings=settings)
    actual = float(world.closes["AAA"][world.sessions.index(date(2012, 11, 2))])
    assert scored_targets(engine)[5] == [(date(2012, 11, 2), pytest.approx(actual))]
    evaluate_matured(engine, through=date(2012, 11, 23), settings=settings)
    assert 20 not in scored_targets(engine)
    evaluate_matured(engine, through=date(2012, 11, 26), settings=settings)
    actual = float(world.closes["AAA"][world.sessions.index(date(2012, 11, 26))])
    assert scored_targets(engine)[20] == [(date(2012, 11, 26), pytest.approx(actual))]


def test_overlapping_5_session_forecasts_are_backtested_on_the_non_overlapping_subsample(
    configured: Any,
) -> None:
    """5-session forecasts made every session share 4 returns with their neighbours. Every forecast
    breaks its VaR except every 5th counted back from the newest: the backtest counts those alone, so
    it sees no exception in n = ceil(count / 5)."""
    settings, engine = configured()
    world = market(60)
    store(engine, world, naive)
    count = len(world.sessions) - 5
    newest = count - 1
    subsample = {i for i in range(count) if (newest - i) % 5 == 0}
    safe, broken = np.full(31, -5.0), np.full(31, 1.0)  # quantiles far below / above any 5-day return
    store_horizon(engine, world, 5, tail=lambda i: safe if i in subsample else broken)

    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")

    figures = result.risk[5]["AAA"]
    assert figures["n"] == len(subsample) == -(-count // 5)
    assert figures["exceptions_99"] == 0 and figures["zone"] == "green"


def test_a_red_zone_at_a_horizon_is_a_retrain_finding_with_the_cooldown(configured: Any) -> None:
    """AAA's next-session 99% VaR is five times too small for its 1% moves: far more than the Basel
    red zone's exceptions in 59 sessions; BBB's is right. That is a finding with its words, and it
    waits for the cooldown after a retrain like every trigger."""
    from scipy.stats import norm

    from stockcli.ml.risk import TAIL_LEVELS

    settings, engine = configured(min_samples=10, window_sessions=20, cooldown_sessions=10)
    world = market(60)
    store(engine, world, naive, width=0.01)  # honest next-session intervals: no other trigger
    narrow = 0.002 * norm.ppf(np.asarray(TAIL_LEVELS))
    store_horizon(engine, world, 1, tail=lambda i: narrow)
    store_horizon(engine, world, 1, ticker="BBB")

    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")

    assert result.risk[1]["AAA"]["zone"] == "red" and result.risk[1]["BBB"]["zone"] != "red"
    assert result.retrain_needed and "risk_zone_h1" in result.triggers, result.reason
    assert (
        "1-session 99% VaR is in the Basel red zone for AAA" in result.reason and "BBB" not in result.reason
    )
    run_id = start_run(engine, command="retrain", as_of=world.sessions[-4])
    finish_run(engine, run_id, status="ok", details={"retrained": True})
    blocked = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")
    assert not blocked.retrain_needed and blocked.cooldown_active and "risk_zone_h1" in blocked.triggers


def horizon_misses(engine: Engine, horizon: int, level: int) -> list[tuple[str, bool]]:
    """(served source, missed) of AAA's scored rows at `horizon`, oldest target first: the stored
    quantiles against the stored close."""
    low, high = ("q10", "q90") if level == 80 else ("q025", "q975")
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                f"SELECT source, {low}, {high}, actual_close FROM horizon_predictions "
                "WHERE ticker = 'AAA' AND horizon = :h AND scored_at IS NOT NULL ORDER BY target_date"
            ),
            {"h": horizon},
        ).all()
    return [(source, not lower <= actual <= upper) for source, lower, upper, actual in rows]


def test_each_horizon_learns_its_own_adaptive_levels_once_per_scored_forecast(configured: Any) -> None:
    """Adaptive conformal inference per horizon (`horizon_serving`): alpha <- alpha + gamma *
    (target - miss) once per scored 5- or 20-session forecast, from the nominal level, each horizon
    from its own misses however many runs score them; a change of served source starts again."""
    from stockcli.db.horizons import load_horizon_serving
    from stockcli.services.monitor import evaluate_matured

    settings, engine = configured()
    gamma = settings.intervals.aci_gamma
    world = market(60)
    store(engine, world, naive)
    store_horizon(engine, world, 5, width=0.004, bases=list(range(30)))  # too narrow: misses happen
    store_horizon(engine, world, 20, width=0.012, bases=list(range(30)))
    store_horizon(engine, world, 1, width=0.004)  # horizon 1 learns in interval_state, not here
    evaluate_matured(engine, through=world.sessions[25], settings=settings)
    evaluate_matured(engine, through=world.sessions[-1], settings=settings)
    evaluate_matured(engine, through=world.sessions[-1], settings=settings)

    def expected(misses: list[bool], level: int) -> float:
        target = 0.2 if level == 80 else 0.05
        return target + gamma * sum(target - miss for miss in misses)

    serving = load_horizon_serving(engine, ["AAA"])
    assert set(serving) == {("AAA", 5), ("AAA", 20)}
    for horizon, count in ((5, 30), (20, 30)):
        state = serving[("AAA", horizon)]
        for level in (80, 95):
            misses = [miss for _source, miss in horizon_misses(engine, horizon, level)]
            assert len(misses) == count
            assert state[f"alpha_{level}"] == pytest.approx(expected(misses, level))
        assert state["aci_source"] == "garch" and state["source"] == "blend"  # the default incumbent
    assert 0 < sum(m for _s, m in horizon_misses(engine, 5, 80)) < 30  # both kinds of step were taken
    assert serving[("AAA", 5)]["alpha_80"] != pytest.approx(serving[("AAA", 20)]["alpha_80"])

    # Later 5-session forecasts served by the rolling band: its levels start from the nominal ones.
    store_horizon(engine, world, 5, width=0.004, bases=list(range(30, 55)), source="rolling")
    evaluate_matured(engine, through=world.sessions[-1], settings=settings)
    state = load_horizon_serving(engine, ["AAA"])[("AAA", 5)]
    for level in (80, 95):
        rolling = [miss for source, miss in horizon_misses(engine, 5, level) if source == "rolling"]
        assert len(rolling) == 25
        assert state[f"alpha_{level}"] == pytest.approx(expected(rolling, level))
    assert state["aci_source"] == "rolling" and state["last_target_date"] == world.sessions[-1]


def test_a_20_session_forecast_waits_for_the_close_of_its_own_target_session(configured: Any) -> None:
    """The bar of the target session is missing while later ones are stored: the forecast stays
    pending (not scored against another session's close), then is scored on that close once it arrives."""
    from stockcli.services.horizons import score_horizons

    settings, engine = configured()
    world = market(40)
    store(engine, world, naive)
    store_horizon(engine, world, 20, bases=[5])
    target = world.sessions[25]
    with engine.begin() as connection:
        connection.execute(
            text("DELETE FROM raw_stock_data WHERE ticker = 'AAA' AND date = :d"), {"d": target}
        )

    assert score_horizons(engine, through=world.sessions[-1], settings=settings) == (0, 1)
    assert 20 not in scored_targets(engine)
    close = float(world.closes["AAA"][25])
    with engine.begin() as connection:
        upsert_bars(
            connection,
            [
                {
                    "ticker": "AAA",
                    "date": target,
                    "open": close,
                    "high": close,
                    "low": close,
                    "close": close,
                    "volume": 1000,
                    "source": "test",
                    "fetched_at": utcnow(),
                }
            ],
        )
    assert score_horizons(engine, through=world.sessions[-1], settings=settings) == (1, 0)
    assert scored_targets(engine)[20] == [(target, pytest.approx(close))]


# Horizon re-decisions on a short market: their own minimum (40) above the next session's (20).
HORIZON_SELECTION = {
    "min_selection_sessions": 20,
    "horizon_min_selection_sessions": 40,
    "selection_sessions": 120,
    "test_order": [],
}


def scored_horizon_rows(
    engine: Engine,
    world: Market,
    horizon: int,
    widths: dict[str, float],
    *,
    bases: range,
    ticker: str = "AAA",
    p_ups: Callable[[bool], dict[str, float]] | None = None,
    p_up_source: str | None = None,
) -> None:
    """Scored horizon rows of `ticker` (close known) whose candidates' quantiles are N(0, width x 1%
    x sqrt(h)) of the h-session return, one width per candidate: 1 is right for these closes; each
    candidate's P(up) (and the base rate's) `p_ups(the close ended up)`, `p_up_source`'s served."""
    from stockcli.db.horizons import save_horizon_predictions

    spread = 0.01 * np.sqrt(horizon)
    rows = []
    for index in bases:
        base = float(world.closes[ticker][index])
        actual = float(world.closes[ticker][index + horizon])
        candidates = {name: list(base * np.exp(width * spread * Z)) for name, width in widths.items()}
        rows.append(
            {
                **horizon_row(world, ticker, index, horizon, candidates["garch"]),
                "source": "garch",
                "candidates": candidates,
                "p_ups": p_ups(actual > base) if p_ups else None,
                "p_up_source": p_up_source,
                "created_at": utcnow(),
                "actual_close": actual,
                "scored_at": utcnow(),
            }
        )
    save_horizon_predictions(engine, rows)


def test_each_horizon_above_1_is_re_decided_on_its_own_scored_rows_family_corrected(configured: Any) -> None:
    """At 5 sessions HAR's band is right and GARCH's three times too wide; at 20 the rolling band is
    right and the others six times too wide, but 99 overlapping 20-session losses are fewer than
    `MIN_PERIODS` independent ones: no decision there; at 1 HAR is right too but horizon 1 is decided
    elsewhere. Horizon 5 serves its own winner, with the corrected p-value; a fixed test order whose
    first challenger (no better than GARCH) fails stops the later ones; a ticker with too few scored
    sessions keeps its decision."""
    from stockcli.db.horizons import load_horizon_serving, save_horizon_serving
    from stockcli.ml.metrics import candidate_loss_panels
    from stockcli.ml.selection import choose_interval_source
    from stockcli.ml.stats import paired_loss_test
    from stockcli.services.horizons import redecide_horizons

    # The horizons' own minimum decides (the next session's would let BBB decide).
    forecasters = {**HORIZON_SELECTION, "horizon_incumbent": "garch"}
    settings, engine = configured(forecasters=forecasters)
    world = market(120)
    last = len(world.sessions) - 21
    scored_horizon_rows(engine, world, 1, {"garch": 3.0, "har_range": 1.0, "rolling": 3.0}, bases=range(last))
    scored_horizon_rows(engine, world, 5, {"garch": 3.0, "har_range": 1.0, "rolling": 3.0}, bases=range(last))
    scored_horizon_rows(
        engine, world, 20, {"garch": 6.0, "har_range": 6.0, "rolling": 1.0}, bases=range(last)
    )
    # BBB: 30 scored sessions, fewer than horizon_min_selection_sessions; its earlier decision stands.
    scored_horizon_rows(
        engine, world, 5, {"garch": 3.0, "har_range": 1.0, "rolling": 3.0}, bases=range(30), ticker="BBB"
    )
    kept = {"ticker": "BBB", "horizon": 5, "source": "gjr", "p_value": 0.01, "skill": 0.1, "n_sessions": 99}
    with engine.begin() as connection:
        save_horizon_serving(connection, [kept])
    through = world.sessions[-1]

    written = redecide_horizons(settings=settings, engine=engine, tickers=["AAA", "BBB"], through=through)

    serving = load_horizon_serving(engine, ["AAA", "BBB"])
    assert written == 1 and ("AAA", 1) not in serving and ("AAA", 20) not in serving
    assert serving[("AAA", 5)]["source"] == "har_range"
    assert serving[("AAA", 5)]["n_sessions"] == last
    assert {k: serving[("BBB", 5)][k] for k in kept} == kept
    # The p-value is Holm's over the two challengers: twice the smaller raw one, never the raw one.
    rows = [r for r in _scored_rows(engine, 5) if r["ticker"] == "AAA"]
    panels, _dates = candidate_loss_panels(rows, settings.forecasters.metric)
    raw = paired_loss_test(panels["har_range"], panels["garch"], alternative="less", horizon=5).p_value
    assert 0 < raw < 0.5 and serving[("AAA", 5)]["p_value"] == pytest.approx(min(1.0, 2 * raw))
    assert serving[("AAA", 5)]["p_value"] == pytest.approx(
        choose_interval_source(panels, incumbent="garch", alpha=0.05, horizon=5).p_value
    )

    # A fixed sequence testing the rolling band first (no better than GARCH at 5): HAR is not tested.
    order = settings.forecasters.model_copy(update={"test_order": ("rolling", "har_range")})
    ordered = settings.model_copy(update={"forecasters": order})
    redecide_horizons(settings=ordered, engine=engine, tickers=["AAA"], through=through)
    serving = load_horizon_serving(engine, ["AAA"])
    assert serving[("AAA", 5)]["source"] == "garch" and ("AAA", 20) not in serving


def test_a_horizons_p_up_is_tested_only_on_enough_scored_sessions(configured: Any) -> None:
    """HAR's 5-session P(up) all but knows the outcome, but only the last 30 scored rows carry P(up)s
    (rows stored before them have none): fewer than horizon_min_selection_sessions, so the base rate
    stays, untested, while the interval decision (on every row) is made."""
    from stockcli.db.horizons import load_horizon_serving
    from stockcli.services.horizons import redecide_horizons

    settings, engine = configured(forecasters=HORIZON_SELECTION)
    world = market(120)
    last = len(world.sessions) - 21
    widths = {"garch": 1.0, "har_range": 1.0, "blend": 1.0}

    rng = np.random.default_rng(5)

    def knowing(up: bool) -> dict[str, float]:
        return {
            "garch": 0.5,
            "har_range": rng.uniform(0.7, 0.95) if up else rng.uniform(0.05, 0.3),
            "base_rate": 0.5,
        }

    scored_horizon_rows(engine, world, 5, widths, bases=range(last - 30))
    scored_horizon_rows(engine, world, 5, widths, bases=range(last - 30, last), p_ups=knowing)

    assert redecide_horizons(settings=settings, engine=engine, tickers=["AAA"], through=world.sessions[-1])
    state = load_horizon_serving(engine, ["AAA"])[("AAA", 5)]
    assert state["n_sessions"] == last and state["p_up_source"] == "base_rate"
    assert state["p_up_p_value"] is None


def test_an_untested_stored_horizon_source_gives_way_to_the_horizons_incumbent(configured: Any) -> None:
    """An older release stored GARCH, its incumbent then, as every horizon's source (p-value None, or
    the closest challenger's above alpha): it serves the horizon's incumbent now, and stands as no tested
    choice; a challenger chosen by its test (p below alpha) still serves."""
    from stockcli.ml.serving import tested_choice

    settings, _engine = configured()

    def served_choice(state: dict[str, Any]) -> str:
        return tested_choice(state, incumbent=settings.forecasters.incumbent_at(5), alpha=0.05)

    assert settings.forecasters.incumbent_at(5) == "blend"
    assert served_choice({"source": "garch", "p_value": None, "n_sessions": 200}) == "blend"
    assert served_choice({"source": "garch", "p_value": 0.3, "n_sessions": 200}) == "blend"
    assert served_choice({"source": "har_range", "p_value": 0.01, "n_sessions": 200}) == "har_range"
    assert served_choice({}) == "blend"


def test_a_horizons_p_up_is_its_base_rate_unless_a_candidate_beats_it_in_the_brier_test(
    configured: Any,
) -> None:
    """At 5 sessions HAR's P(up) all but knows the outcome (0.9 before a rise, 0.1 otherwise) and GARCH's
    is the base rate's 0.5; at 20 every candidate's leans the wrong way, on too few sessions to test
    (99, fewer than `MIN_PERIODS` 20-session periods). The 5-session P(up) is then HAR's, 20 sessions
    are not decided, and serving follows the decision (a horizon never decided serves its base rate). The backtest's horizon figures give the served P(up)'s Brier score
    next to the base rate's on the same rows."""
    from stockcli.db.horizons import load_horizon_serving, scored_horizons
    from stockcli.ml.serving import CandidateForecast, serve_horizon
    from stockcli.services.horizons import horizon_figures, redecide_horizons

    settings, engine = configured(forecasters=HORIZON_SELECTION)
    world = market(120)
    bases = range(len(world.sessions) - 21)
    widths = {"garch": 1.0, "har_range": 1.0}

    rng = np.random.default_rng(5)
    drawn: list[tuple[float, bool]] = []  # HAR's 5-session P(up), and whether the close rose

    def knowing(up: bool) -> dict[str, float]:
        drawn.append((rng.uniform(0.7, 0.95) if up else rng.uniform(0.05, 0.3), up))
        return {"garch": 0.5, "har_range": drawn[-1][0], "base_rate": 0.5}

    def wrong(up: bool) -> dict[str, float]:
        lean = rng.uniform(0.1, 0.4)
        return {"garch": lean if up else 1 - lean, "har_range": 0.4 if up else 0.6, "base_rate": 0.5}

    scored_horizon_rows(engine, world, 5, widths, bases=bases, p_ups=knowing, p_up_source="har_range")
    scored_horizon_rows(engine, world, 20, widths, bases=bases, p_ups=wrong, p_up_source="base_rate")

    redecide_horizons(settings=settings, engine=engine, tickers=["AAA"], through=world.sessions[-1])

    serving = load_horizon_serving(engine, ["AAA"])
    five = serving[("AAA", 5)]
    assert five["p_up_source"] == "har_range" and five["p_up_p_value"] < 0.05
    assert ("AAA", 20) not in serving

    nominal = np.linspace(-0.02, 0.02, 5)
    forecasts = {
        name: CandidateForecast(nominal, nominal, p) for name, p in (("garch", 0.6), ("har_range", 0.7))
    }
    for decided, expected in (
        (five, ("har_range", 0.7)),
        ({}, ("base_rate", 0.55)),
    ):
        found = serve_horizon(
            forecasts,
            horizon=5,
            chosen="garch",
            p_value=None,
            incumbent="garch",
            p_up_choice=decided.get("p_up_source"),
            base_rate=0.55,
        )
        assert found is not None and (found.p_up_source, found.p_up) == expected
        assert found.p_ups == {"garch": 0.6, "har_range": 0.7, "base_rate": 0.55}

    figures = horizon_figures(scored_horizons(engine, start=date.min, end=date.max))
    brier = float(np.mean([(p_up - up) ** 2 for p_up, up in drawn]))  # the base rate's 0.5: 0.25
    assert figures["5"]["p_up"] == pytest.approx(
        {"brier": brier, "brier_base": 0.25, "skill": 1 - brier / 0.25}
    )
    assert figures["20"]["p_up"] == pytest.approx({"brier": 0.25, "brier_base": 0.25, "skill": 0.0})


def _scored_rows(engine: Engine, horizon: int) -> list[dict[str, Any]]:
    """Scored horizon rows as the selection reads them (candidates under `detail`)."""
    from stockcli.db.horizons import scored_horizons

    rows = scored_horizons(engine, start=date.min, end=date.max, horizons=[horizon])
    return [{**row, "detail": {"candidates": row["candidates"]}} for row in rows]


def test_stored_tails_read_as_json_text_are_the_doubles_json_loads_gives() -> None:
    """`tail_matrix` parses the risk window's JSON texts in one pass: every double as `json.loads`
    reads it (shortest repr, subnormal, huge), null / NaN / Infinity as NaN, a tail of another size
    (another release's levels) or a missing one as a NaN row, a list as it is."""
    import json

    from stockcli.services.horizons import tail_matrix

    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0, 0.05, 29), [5e-324, -1.7976931348623157e308]])
    plain = json.dumps(values.tolist())
    gaps = json.dumps([None, float("nan"), float("-inf"), *values[3:].tolist()])
    short = json.dumps(values[:30].tolist())
    stored = [plain, gaps, None, short, values.tolist(), plain]

    matrix = tail_matrix(stored, 31)

    assert matrix.shape == (6, 31)
    assert np.array_equal(matrix[0], np.array(json.loads(plain))) and np.array_equal(matrix[0], values)
    assert np.isnan(matrix[1, :2]).all() and matrix[1, 2] == -np.inf
    assert np.array_equal(matrix[1, 3:], values[3:])
    assert np.isnan(matrix[2]).all() and np.isnan(matrix[3]).all()
    assert np.array_equal(matrix[4], values) and np.array_equal(matrix[5], values)


def test_the_monitor_backtests_risk_as_report_does_without_the_simulated_es_test(configured: Any) -> None:
    """The monitor reads the risk window column-wise (the tails as text) and leaves out the simulated
    ES test: every other figure is the one `risk_backtests` gives on whole rows, ES test included."""
    from scipy.stats import norm

    from stockcli.db.horizons import scored_horizons
    from stockcli.ml.risk import TAIL_LEVELS
    from stockcli.services.horizons import risk_backtests

    settings, engine = configured()
    world = market(60)
    store(engine, world, naive)
    store_horizon(engine, world, 1, tail=lambda i: 0.006 * norm.ppf(np.asarray(TAIL_LEVELS)))
    store_horizon(engine, world, 5, ticker="BBB")
    store_horizon(engine, world, 5, bases=list(range(0, 40, 3)), width=0.004)

    result = monitor(settings=settings, engine=engine, as_of=world.sessions[-1], model_version="1")

    rows = scored_horizons(engine, start=date.min, end=world.sessions[-1])
    full = risk_backtests(rows, trading_calendar("XNYS"))
    assert set(full) == {1, 5} and full[1]["AAA"]["es_p"] is not None
    assert full[1]["AAA"]["exceptions_99"] > 0 and full[5]["AAA"]["n"] > 0
    without_es = {
        h: {t: {**figures, "es_z2": None, "es_p": None} for t, figures in per.items()}
        for h, per in full.items()
    }
    assert result.risk == without_es


def test_the_served_97_5_var_is_backtested_next_to_garchs_on_the_same_forecasts() -> None:
    """The yardstick of the risk backtests: the served 2.5% quantile and GARCH's stored one, counted on
    the same non-overlapping forecasts (every 5th at 5 sessions), each with Kupiec's and
    Christoffersen's p-values."""
    from stockcli.ml.risk import christoffersen, kupiec_pof
    from stockcli.services.horizons import risk_against_garch

    calendar = trading_calendar("XNYS")
    bases = calendar.sessions(date(2012, 6, 1), date(2012, 12, 31))[:60]

    # A served 2.5% quantile at 97 and GARCH's at 90: closes of 95 (on every 4th base) fall below the
    # served one only.
    def row(i: int, day: date, horizon: int) -> dict[str, Any]:
        return {
            "ticker": "AAA",
            "horizon": horizon,
            "base_date": day,
            "base_close": 100.0,
            "actual_close": 95.0 if i % 4 == 0 else 101.0,
            "q025": 97.0,
            "candidates": {"garch": [90.0, 95.5, 100.0, 104.5, 110.0]},
        }

    rows = [row(i, day, h) for h in (1, 5) for i, day in enumerate(bases)]
    table = risk_against_garch(rows, calendar)

    one = table[1]["AAA"]
    served_hits = np.array([i % 4 == 0 for i in range(60)])
    assert one["served"]["n"] == one["garch"]["n"] == 60
    assert (one["served"]["exceptions"], one["garch"]["exceptions"]) == (15, 0)
    assert one["served"]["kupiec_p"] == pytest.approx(kupiec_pof(15, 60, 0.025).p_value)
    assert one["served"]["christoffersen_p"] == pytest.approx(
        christoffersen(served_hits, 0.025).independence.p_value
    )
    assert one["served"]["kupiec_p"] < 0.001 < one["garch"]["kupiec_p"]
    # Five sessions ahead: the 12 non-overlapping forecasts (every 5th base, back from the newest).
    five = table[5]["AAA"]
    assert five["served"]["n"] == five["garch"]["n"] == 12
    assert five["served"]["exceptions"] == sum(1 for i in range(59, -1, -5) if i % 4 == 0)
