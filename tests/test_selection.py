"""Choosing among many interval candidates: Holm's family correction, the scheduled refits and their
record, and the choice re-decided on every candidate's own live scores."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from datetime import date
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, func, select

from stockcli.clock import trading_calendar
from stockcli.config import Settings
from stockcli.db.engine import open_database
from stockcli.db.models import ForecasterFit, ModelPerformance, RawStockData
from stockcli.db.serving import Selection, load_selection, save_selection
from stockcli.ml.selection import choose_interval_source, fixed_sequence, holm

CALENDAR = trading_calendar("XNYS")


def test_holm_is_the_step_down_correction() -> None:
    from statsmodels.stats.multitest import multipletests

    p = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.20}
    # Sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1, made monotone: 0.04, 0.09, 0.09, 0.20.
    assert holm(p) == pytest.approx({"a": 0.04, "c": 0.09, "b": 0.09, "d": 0.20})
    assert holm({"only": 0.03}) == {"only": 0.03} and holm({}) == {}
    rng = np.random.default_rng(2)
    for size in (2, 5, 11):  # statsmodels' implementation as the oracle
        values = {f"c{k}": float(v) for k, v in enumerate(rng.uniform(0, 0.3, size))}
        expected = multipletests(list(values.values()), method="holm")[1]
        assert list(holm(values).values()) == pytest.approx(expected.tolist(), rel=1e-12)


def _panel(rng: np.random.Generator, scale: float, sessions: int = 250) -> np.ndarray:
    return np.abs(rng.standard_t(5, size=(sessions, 1))) * scale


def test_a_really_better_challenger_is_served_and_a_tie_is_not() -> None:
    rng = np.random.default_rng(7)
    common = _panel(rng, 1.0)
    panels = {
        "garch": common,
        "har_range": common * 0.85 + _panel(rng, 0.02),  # 15% lower losses on the same sessions
        "rolling": common + _panel(rng, 0.02) - 0.01,  # a tie up to noise
    }
    choice = choose_interval_source(panels, incumbent="garch", alpha=0.05)
    assert choice.source == "har_range" and choice.p_value is not None and choice.p_value < 0.05
    assert choice.skill is not None and choice.skill > 0.1
    assert set(choice.p_values) == {"har_range", "rolling"} and choice.n_sessions == 250
    kept = choose_interval_source(
        {"garch": common, "rolling": panels["rolling"]}, incumbent="garch", alpha=0.05
    )
    assert kept.source == "garch" and kept.skill == 0.0 and kept.p_value is not None and kept.p_value > 0.05


def test_more_candidates_do_not_raise_the_false_win_rate() -> None:
    """Ten challengers no better than the incumbent: with Holm's correction the incumbent is kept about
    as often as alpha promises; picking the smallest raw p-value would serve a lucky one far more often."""
    rng = np.random.default_rng(11)
    trials, alpha, raw_wins, corrected_wins = 120, 0.05, 0, 0
    for _ in range(trials):
        incumbent = _panel(rng, 1.0, 120)
        panels = {"garch": incumbent, **{f"c{k}": _panel(rng, 1.0, 120) for k in range(10)}}
        choice = choose_interval_source(panels, incumbent="garch", alpha=alpha)
        corrected_wins += choice.source != "garch"
        raw_wins += min(_raw_p(panels[name], incumbent) for name in panels if name != "garch") < alpha
    assert corrected_wins / trials <= 0.10  # alpha plus sampling noise over 120 trials
    assert raw_wins / trials > 2 * max(corrected_wins / trials, 0.05)


def test_the_fixed_sequence_tests_in_order_each_at_alpha_until_one_fails() -> None:
    p = {"rolling": 0.001, "blend": 0.03, "gjr": 0.2, "har_range": 0.01}
    # blend, then har_range, then gjr (fails), then rolling: the running maximum along the order.
    adjusted = fixed_sequence(p, ["blend", "har_range", "gjr"])
    assert adjusted == {"blend": 0.03, "har_range": 0.03, "gjr": 0.2, "rolling": 0.2}
    assert fixed_sequence({}, ["blend"]) == {} and fixed_sequence({"gjr": 0.04}, []) == {"gjr": 0.04}

    rng = np.random.default_rng(8)
    common = _panel(rng, 1.0)
    panels = {
        "garch": common,
        "blend": common * 0.9 + _panel(rng, 0.02),  # about 10% better
        "har_range": common * 0.8 + _panel(rng, 0.02),  # about 20% better
        "rolling": common + _panel(rng, 0.02),  # no better
    }
    # Each passing challenger at the full alpha; the best of those that pass is served.
    chosen = choose_interval_source(
        panels, incumbent="garch", alpha=0.05, order=["blend", "har_range", "rolling"]
    )
    assert chosen.source == "har_range" and chosen.p_values["rolling"] > 0.05
    # A challenger first in the order that fails stops the sequence: nothing after it is served.
    stopped = choose_interval_source(panels, incumbent="garch", alpha=0.05, order=["rolling", "har_range"])
    assert stopped.source == "garch" and stopped.p_values["har_range"] == stopped.p_values["rolling"] > 0.05


def test_the_fixed_sequence_keeps_the_false_win_rate_at_alpha() -> None:
    """Ten challengers no better than the incumbent, tested in a fixed order at the full alpha each:
    a false win needs the first one to pass, so the rate stays near alpha."""
    rng = np.random.default_rng(12)
    trials, alpha, wins = 120, 0.05, 0
    order = [f"c{k}" for k in range(10)]
    for _ in range(trials):
        incumbent = _panel(rng, 1.0, 120)
        panels = {"garch": incumbent, **{name: _panel(rng, 1.0, 120) for name in order}}
        wins += choose_interval_source(panels, incumbent="garch", alpha=alpha, order=order).source != "garch"
    assert wins / trials <= 0.10


def _raw_p(a: np.ndarray, b: np.ndarray) -> float:
    from stockcli.ml.stats import paired_loss_test

    return float(paired_loss_test(a, b, alternative="less").p_value)


def test_without_the_incumbents_losses_nothing_is_tested_and_the_incumbent_is_kept() -> None:
    """No evidence, no challenger: a far lower loss that was never tested against the incumbent (a
    version that recorded no base rate for P(up), a ticker GARCH could not forecast) is not served."""
    rng = np.random.default_rng(3)
    panels = {"garch": np.full((50, 1), np.nan), "rolling": _panel(rng, 1.0, 50), "gjr": _panel(rng, 0.5, 50)}
    choice = choose_interval_source(panels, incumbent="garch", alpha=0.05)
    assert choice.source == "garch" and choice.p_value is None and choice.p_values == {}


# --- scheduled refits ------------------------------------------------------------------------------------


@dataclasses.dataclass
class FakeVersion:
    """What `refit_if_due` reads of a model version: its number and its own fits' last session."""

    version: str = "1"
    baselines: dict[str, Any] = dataclasses.field(default_factory=lambda: {"fit_through": "2012-12-31"})


@pytest.fixture
def refit_db(make_settings: Any, database_url: str) -> Any:
    from tests.served_model import fetch_sample

    settings: Settings = make_settings(
        database_url,
        data={"tickers": ["GOOG", "MSFT", "NOBARS"], "start": date(2008, 1, 2)},
        forecasters={
            "refit_sessions": 5,
            "candidates": ["rolling", "garch", "har_range"],
            "horizon_incumbent": "garch",
        },
    )
    engine = open_database(settings)
    fetch_sample(settings, engine)
    yield settings, engine
    engine.dispose()


def test_refits_follow_the_schedule_spread_over_tickers_and_are_recorded(refit_db: Any) -> None:
    from stockcli.db.bars import load_bars
    from stockcli.ml.forecasters import TickerBars, build_table, fit_all
    from stockcli.services.refit import refit_if_due

    settings, engine = refit_db
    sessions = CALENDAR.sessions(date(2013, 1, 2), date(2013, 2, 1))
    served = [
        refit_if_due(settings=settings, engine=engine, bundle=FakeVersion(), through=day).get("garch", {})
        for day in sessions
    ]
    with engine.connect() as connection:
        rows = [
            SimpleNamespace(**row) for row in connection.execute(select(ForecasterFit.__table__)).mappings()
        ]
    ends = sorted({(r.ticker, r.fit_end) for r in rows})
    # At most ceil(3 tickers / 5 sessions) = 1 ticker refitted a session, each every 5 sessions; a
    # ticker without bars is recorded too (nothing fitted), so it never holds the slot every session.
    per_day: dict[date, list[str]] = {}
    for ticker, end in ends:
        per_day.setdefault(end, []).append(ticker)
    assert all(len(tickers) == 1 for tickers in per_day.values())
    assert all(r.params is None and r.n_sessions == 0 for r in rows if r.ticker == "NOBARS")
    for ticker in ("GOOG", "MSFT", "NOBARS"):
        own = [end for t, end in ends if t == ticker]
        gaps = [len(CALENDAR.sessions(a, b)) - 1 for a, b in itertools.pairwise(own)]
        assert own and all(gap == 5 for gap in gaps), (ticker, own)
    # Every candidate is recorded with the dates it saw, and nothing after its last session.
    first = min(ends, key=lambda item: item[1])
    recorded = {r.forecaster: r for r in rows if (r.ticker, r.fit_end) == first}
    assert set(recorded) == {"rolling", "garch", "har_range"}
    bars = load_bars(engine, [first[0]], start=settings.data.start, end=first[1])[first[0]]
    expected = fit_all(build_table(settings), TickerBars.from_frame(bars))
    assert recorded["har_range"].params == json.loads(json.dumps(expected["har_range"]))
    assert recorded["garch"].fit_start == bars.index[0].date() and recorded["garch"].n_sessions == len(bars)
    # The version's own fits (through 2012-12-31) serve until the first refit is due five sessions
    # later; afterwards the newest refit of each ticker.
    assert served[0] == {} and min(end for _t, end in ends) == sessions[4]
    assert sorted(served[-1]) == ["GOOG", "MSFT"]
    # Ten sessions later every ticker is due, but a session refits its quota once, however many
    # times it is run: a re-run refits nothing more and serves the same fits.
    later = CALENDAR.sessions(date(2013, 2, 4), date(2013, 3, 1))[9]

    def recorded_fits() -> int:
        with engine.connect() as connection:
            return int(
                connection.execute(select(func.count()).select_from(ForecasterFit.__table__)).scalar_one()
            )

    runs = [
        refit_if_due(settings=settings, engine=engine, bundle=FakeVersion(), through=later) for _ in range(3)
    ]
    assert recorded_fits() == len(rows) + 3  # one ticker's three candidates
    assert runs[0] == runs[1] == runs[2]
    # The ticker refitted that session leaves the watchlist: the session's quota is still spent.
    with engine.connect() as connection:
        refitted = set(
            connection.execute(select(ForecasterFit.ticker).where(ForecasterFit.fit_end == later)).scalars()
        )
    remaining = [t for t in ("GOOG", "MSFT", "NOBARS") if t not in refitted]
    refit_if_due(
        settings=settings.replace(data={"tickers": remaining}),
        engine=engine,
        bundle=FakeVersion(),
        through=later,
    )
    assert len(refitted) == 1 and recorded_fits() == len(rows) + 3


def _scored(
    engine: Any, day: date, ticker: str, base: float, actual: float, widths: dict[str, float]
) -> None:
    from stockcli.db.store import upsert, utcnow

    detail = {
        "candidates": {
            name: [base * math.exp(z * w) for z in (-1.96, -1.28, 0.0, 1.28, 1.96)]
            for name, w in widths.items()
        }
    }
    row = {
        "target_date": day,
        "ticker": ticker,
        "model_version": "1",
        "base_date": CALENDAR.previous_session(day),
        "base_close": base,
        "predicted_close": base,
        "actual_close": actual,
        "abs_error": abs(actual - base),
        "abs_pct_error": abs(actual - base) / actual,
        "naive_abs_error": abs(actual - base),
        "interval_source": "garch",
        "detail": detail,
        "evaluated_at": utcnow(),
    }
    with engine.begin() as connection:
        upsert(connection, ModelPerformance, [row], key=("target_date", "ticker", "model_version"))


def test_the_interval_choice_is_redecided_on_live_scores(refit_db: Any) -> None:
    from stockcli.services.refit import redecide

    settings, engine = refit_db
    settings = settings.replace(forecasters={"min_selection_sessions": 40, "selection_sessions": 60})
    save_selection(
        engine,
        model_version="1",
        selections=[
            Selection(t, "naive", 0.5, 0.0, "garch", 0.5, 0.0, date(2011, 1, 3), date(2011, 12, 30), 250)
            for t in ("GOOG", "MSFT", "*")
        ],
        promotion_id=None,
    )
    rng = np.random.default_rng(5)
    days = CALENDAR.sessions(date(2012, 10, 1), date(2012, 12, 31))
    for day in days[:30]:  # too few sessions: the decision stands
        move = rng.standard_normal() * 0.01
        _scored(engine, day, "GOOG", 100.0, 100.0 * math.exp(move), {"garch": 0.03, "har_range": 0.011})
        _scored(engine, day, "AAPL", 50.0, 50.0 * math.exp(move), {"garch": 0.03, "har_range": 0.011})
        # IBM: GARCH's band is the right one on its own sessions, HAR's far too wide.
        _scored(engine, day, "IBM", 80.0, 80.0 * math.exp(move), {"garch": 0.011, "har_range": 0.03})
    redecide(settings=settings, engine=engine, model_version="1", tickers=["GOOG"], through=days[29])
    assert load_selection(engine, "1")["GOOG"].interval_source == "garch"
    for day in days[30:]:
        move = rng.standard_normal() * 0.01
        _scored(engine, day, "GOOG", 100.0, 100.0 * math.exp(move), {"garch": 0.03, "har_range": 0.011})
        _scored(engine, day, "AAPL", 50.0, 50.0 * math.exp(move), {"garch": 0.03, "har_range": 0.011})
        _scored(engine, day, "IBM", 80.0, 80.0 * math.exp(move), {"garch": 0.011, "har_range": 0.03})
    redecide(
        settings=settings, engine=engine, model_version="1", tickers=["GOOG", "AAPL", "IBM"], through=days[-1]
    )
    chosen = load_selection(engine, "1")
    # A ticker added after the promotion gets its own row: its interval re-decided, its point decision
    # the pooled one it was served by.
    assert chosen["AAPL"].interval_source == "har_range" and chosen["AAPL"].point_source == "naive"
    # Two stages: the pooled choice (every ticker's sessions, against GARCH) is HAR; each ticker then
    # keeps it unless its own sessions show a challenger significantly better: GOOG keeps HAR (GARCH,
    # the closest challenger, is far from beating it), IBM's own evidence puts it back on GARCH.
    assert chosen["GOOG"].interval_source == "har_range" and chosen["GOOG"].interval_p_value > 0.5
    assert chosen["IBM"].interval_source == "garch" and chosen["IBM"].interval_p_value < 0.05
    assert chosen["IBM"].interval_skill is not None and chosen["IBM"].interval_skill > 0
    assert chosen["GOOG"].window_end == days[-1] and chosen["GOOG"].n_sessions >= 40
    assert chosen["MSFT"].interval_source == "garch"  # not refitted that session: its choice stands
    assert chosen["*"].interval_source == "har_range"  # the pooled choice follows all scored rows


def test_a_re_run_decides_for_the_tickers_refitted_earlier_that_session(refit_db: Any) -> None:
    """A run saved GOOG's refit of the session and stopped before deciding: the re-run refits nothing
    more, but makes the decision the stopped run did not write (HAR, on 60 scored sessions)."""
    from stockcli.services.refit import refit, refit_if_due

    settings, engine = refit_db
    settings = settings.replace(forecasters={"min_selection_sessions": 40, "selection_sessions": 60})
    untested = Selection(
        "GOOG", "naive", 0.5, 0.0, "garch", None, None, date(2011, 1, 3), date(2011, 12, 30), 0
    )
    save_selection(engine, model_version="1", selections=[untested], promotion_id=None)
    rng = np.random.default_rng(5)
    days = CALENDAR.sessions(date(2012, 10, 1), date(2012, 12, 31))
    for day in days:
        move = rng.standard_normal() * 0.01
        _scored(engine, day, "GOOG", 100.0, 100.0 * math.exp(move), {"garch": 0.03, "har_range": 0.011})
    refit(settings=settings, engine=engine, bundle=FakeVersion(), tickers=["GOOG"], through=days[-1])

    refit_if_due(settings=settings, engine=engine, bundle=FakeVersion(), through=days[-1])

    chosen = load_selection(engine, "1")["GOOG"]
    assert (chosen.interval_source, chosen.window_end) == ("har_range", days[-1])
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ForecasterFit)).scalar_one() == 3


def test_a_ticker_whose_bar_of_the_session_is_missing_waits_for_it(refit_db: Any) -> None:
    """Every ticker is due and the session's quota is one: GOOG (first by name) has no bar of that
    session yet, so MSFT is refitted, and GOOG's turn waits for its bar instead of fitting without it."""
    from stockcli.services.refit import refit_if_due

    settings, engine = refit_db
    day = CALENDAR.sessions(date(2013, 2, 1), date(2013, 2, 28))[10]
    with engine.begin() as connection:
        connection.execute(
            delete(RawStockData).where(RawStockData.ticker == "GOOG", RawStockData.date == day)
        )

    refit_if_due(settings=settings, engine=engine, bundle=FakeVersion(), through=day)

    with engine.connect() as connection:
        fitted = set(connection.execute(select(ForecasterFit.ticker, ForecasterFit.fit_end)).tuples())
    assert fitted == {("MSFT", day)}


def test_a_tested_choice_stands_against_a_shorter_window_that_only_fails_to_reject(refit_db: Any) -> None:
    """HAR was chosen on a 250-session test; 60 live sessions where HAR and GARCH are alike are no
    evidence against it. Without `keep_tested_choice`, or once the window is as long as the test's
    (capped at selection_sessions), the silence puts GARCH back; so does it when HAR was stored untested
    (its p-value above alpha: an older release's incumbent, not a finding)."""
    from stockcli.services.refit import redecide

    settings, engine = refit_db
    days = CALENDAR.sessions(date(2012, 10, 1), date(2012, 12, 31))[:60]
    rng = np.random.default_rng(7)
    for day in days:
        move = rng.standard_normal() * 0.01
        _scored(engine, day, "GOOG", 100.0, 100.0 * math.exp(move), {"garch": 0.01, "har_range": 0.01})

    def served(standing_sessions: int, p_value: float = 0.01, **forecasters: Any) -> str:
        save_selection(
            engine,
            model_version="1",
            selections=[
                Selection(
                    t,
                    "naive",
                    0.5,
                    0.0,
                    "har_range",
                    p_value,
                    0.02,
                    date(2011, 1, 3),
                    date(2012, 9, 28),
                    standing_sessions,
                )
                for t in ("GOOG", "*")
            ],
            promotion_id=None,
        )
        config = {"min_selection_sessions": 40, "selection_sessions": 250, **forecasters}
        redecide(
            settings=settings.replace(forecasters=config),
            engine=engine,
            model_version="1",
            tickers=["GOOG"],
            through=days[-1],
        )
        return load_selection(engine, "1")["GOOG"].interval_source

    assert served(250) == "har_range"
    assert served(250, p_value=0.3) == "garch"
    assert served(250, keep_tested_choice=False) == "garch"
    assert served(60) == "garch"  # the live window is as long as the standing test's
    assert served(250, selection_sessions=60) == "garch"  # a full window decides alone


def test_base_rates_fall_back_to_the_pooled_rate_then_to_nan() -> None:
    """A ticker without its own stored up-share gets the pooled one; nothing stored (or a null pooled
    rate, as an older bundle may hold) gives NaN rather than an error."""
    from stockcli.services.promote import base_rates

    rates = base_rates({"p_up_base": {"*": 0.5, "A": 0.6, "B": None}}, ["A", "B", "C"])
    assert rates.tolist() == [0.6, 0.5, 0.5]
    assert np.isnan(base_rates({"p_up_base": {"*": None}}, ["A"])).all()
    assert np.isnan(base_rates(None, ["A"])).all()
