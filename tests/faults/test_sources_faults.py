"""Fault class 1, sources: what networks and data vendors do to `fetch`, on SQLite and PostgreSQL.

Yahoo Finance is faked at yfinance's network boundary (`tests.fakes_yfinance`); the real `yf.download`
does the rest. Each case checks the behaviour and that no stored row was lost or mixed: row counts and
checksums of the stored bars before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from sqlalchemy.engine import Engine

from stockcli.config import Settings, load_settings
from stockcli.db.bars import load_bars
from stockcli.db.engine import make_engine, open_database
from stockcli.errors import PartialFailure
from stockcli.services.fetch import fetch
from stockcli.sources.base import (
    CONFLICTING_DUPLICATE,
    IMPLAUSIBLE_JUMP,
    PRICE_OUT_OF_RANGE,
    VOLUME_OUT_OF_RANGE,
)
from stockcli.sources.sample import SampleSource
from tests.conftest import Cli, write_config
from tests.fakes_yfinance import FakeYahoo, history_frame, rate_limit
from tests.faults.checks import bar_state, stored_closes

AS_OF = date(2013, 3, 1)
FIRST_AS_OF = date(2013, 2, 15)
START = "2013-01-02"
NEW_YORK = ZoneInfo("America/New_York")
HEADER = "Date,Open,High,Low,Close,Volume\n"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def engines() -> Iterator[Callable[[Settings], Engine]]:
    opened: list[Engine] = []

    def opener(settings: Settings) -> Engine:
        engine = open_database(settings)
        opened.append(engine)
        return engine

    yield opener
    for engine in opened:
        engine.dispose()


def yahoo_settings(
    make_settings: Callable[..., Settings], database_url: str, *tickers: str, **data: Any
) -> Settings:
    values: dict[str, Any] = {
        "source": "yahoo",
        "tickers": list(tickers),
        "start": START,
        "max_retries": 0,
        "retry_backoff_s": 0.0,
    }
    values.update(data)
    # One ticker's faults: har_range's market series is not fetched beside it (tests/test_fetch.py).
    return make_settings(database_url, data=values, forecasters={"har_market": ""})


def sample(ticker: str, start: str = START, end: date = AS_OF) -> pd.DataFrame:
    return SampleSource().fetch(ticker, start=date.fromisoformat(start), end=end).bars


def sessions(ticker: str, start: str, end: str) -> int:
    return len(sample(ticker).loc[start:end])


def rows_up_to(engine: Engine, ticker: str, day: str) -> set[tuple[str, str, float]]:
    return {row for row in stored_closes(engine, ticker) if row[1] <= day}


class ScriptedYahoo(FakeYahoo):
    """FakeYahoo plus what the plain fake cannot say: a silently empty answer, failures from the n-th
    call on, and a "live" row served past the requested end (Yahoo does that)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.silent_empty: set[str] = set()
        self.fail_from_call: dict[str, int] = {}
        self.live_rows: dict[str, pd.DataFrame] = {}

    def history(self, ticker: str, **kwargs: Any) -> pd.DataFrame:
        calls = self.calls_for(ticker) + 1
        if ticker in self.fail_from_call and calls >= self.fail_from_call[ticker]:
            self.calls.append((ticker, kwargs))
            raise rate_limit()
        if ticker in self.silent_empty:
            self.calls.append((ticker, kwargs))
            return history_frame(ticker, START, START).iloc[0:0]
        part = super().history(ticker, **kwargs)
        live = self.live_rows.get(ticker)
        return part if live is None else pd.concat([part, live])


# --- a rate-limited ticker among healthy ones -----------------------------------------------------------


def test_rate_limited_ticker_among_healthy_ones_fails_alone_and_keeps_its_bars(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    histories = {t: history_frame(t, START, "2013-03-01") for t in ("GOOG", "^GSPC", "MSFT")}
    fake = FakeYahoo(histories=histories).install(monkeypatch)
    settings = yahoo_settings(
        make_settings, database_url, "GOOG", "^GSPC", "MSFT", max_retries=2, retry_backoff_s=0.5
    )
    engine = engines(settings)
    assert fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF).status == "ok"
    gspc_before = bar_state(engine, "^GSPC")
    assert gspc_before[0] == sessions("^GSPC", START, "2013-02-15")

    fake.always["^GSPC"] = rate_limit
    waits: list[float] = []
    result = fetch(settings=settings, engine=engine, as_of=AS_OF, sleep=waits.append)

    goog, gspc, msft = result.tickers
    assert (result.status, result.exit_code) == ("partial", 3)
    assert (goog.status, gspc.status, msft.status) == ("ok", "failed", "ok")
    assert "YFRateLimitError" in (gspc.error or "") and "gave up after 3 attempts" in (gspc.error or "")
    assert waits == [0.5, 1.0]  # the backoff, for ^GSPC only
    assert fake.calls_for("^GSPC") == 1 + 3
    new_sessions = sessions("GOOG", "2013-02-19", "2013-03-01")
    assert (goog.added, msft.added) == (new_sessions, new_sessions)
    assert bar_state(engine, "^GSPC") == gspc_before  # nothing of the failed ticker lost or touched
    failure = result.failure()
    assert isinstance(failure, PartialFailure) and "^GSPC" in failure.message


# --- an empty frame for a delisted ticker -------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["possibly delisted error", "silently empty frame"])
def test_empty_frame_for_a_delisted_ticker_is_no_data_and_keeps_its_stored_bars(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
) -> None:
    fake = ScriptedYahoo(histories={t: history_frame(t, START, "2013-03-01") for t in ("GOOG", "MSFT")})
    fake.install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG", "MSFT")
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    goog_before = bar_state(engine, "GOOG")

    if answer == "possibly delisted error":
        del fake.histories["GOOG"]  # yfinance logs "possibly delisted" and hands over an empty frame
    else:
        fake.silent_empty.add("GOOG")
    beside = fetch(settings=settings, engine=engine, as_of=AS_OF)
    goog, msft = beside.tickers
    assert (beside.status, beside.exit_code) == ("partial", 3)
    assert goog.status == "no_data" and goog.last_date == FIRST_AS_OF
    assert ("delisted" if answer == "possibly delisted error" else "no bars") in (goog.error or "")
    assert msft.status == "ok" and msft.added == sessions("MSFT", "2013-02-19", "2013-03-01")

    alone = fetch(settings=settings, engine=engine, as_of=AS_OF, tickers=["GOOG"])
    assert (alone.status, alone.exit_code) == ("failed", 4)
    assert bar_state(engine, "GOOG") == goog_before  # an empty answer never deletes anything


# --- a restated history after a split ------------------------------------------------------------------------


@pytest.mark.parametrize("overlap_sessions", [0, 5])
@pytest.mark.parametrize("split", [2, 10])
def test_restated_history_after_a_split_is_replaced_whole_never_mixed(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
    split: int,
    overlap_sessions: int,
) -> None:
    """A 10:1 split moves every bar 10x from the stored close, beyond the jump factor (5): still a
    restatement, never "implausible jumps"."""
    fake = FakeYahoo(histories={"GOOG": history_frame("GOOG", START, "2013-03-01")}).install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG", overlap_sessions=overlap_sessions)
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    fake.histories["GOOG"] = history_frame("GOOG", START, "2013-03-01", scale=1 / split)

    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers

    assert goog.status == "replaced" and "restated" in (goog.note or "")
    assert (goog.rejected, goog.rejected_reasons) == (0, {})
    old, new = sessions("GOOG", START, "2013-02-15"), sessions("GOOG", "2013-02-19", "2013-03-01")
    assert (goog.updated, goog.added, goog.deleted) == (old, new, 0)
    stored = load_bars(engine, ["GOOG"])["GOOG"]
    expected = sample("GOOG")
    assert list(stored.index) == list(expected.index)  # every session, once
    ratios = stored["close"].to_numpy() / expected["close"].to_numpy()
    np.testing.assert_allclose(ratios, 1 / split, rtol=1e-12)  # one basis: never old and new mixed
    assert fake.calls_for("GOOG") == 3  # the first fetch, the overlap, the whole history again


def test_restated_history_whose_refetch_fails_keeps_the_old_history_whole(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = ScriptedYahoo(histories={"GOOG": history_frame("GOOG", START, "2013-03-01")}).install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG")
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    before = bar_state(engine)
    fake.histories["GOOG"] = history_frame("GOOG", START, "2013-03-01", scale=0.5)
    fake.fail_from_call["GOOG"] = 3  # the overlap arrives restated; the full re-fetch is rate limited

    result = fetch(settings=settings, engine=engine, as_of=AS_OF)
    (goog,) = result.tickers
    assert (goog.status, result.exit_code) == ("failed", 1)
    assert "Rate limited" in (goog.error or "") or "RateLimit" in (goog.error or "")
    assert bar_state(engine) == before


# --- a restated history under pending predictions --------------------------------------------------------------

PRICE_FIELDS = ("base_close", "predicted_close", "q025", "q10", "q50", "q90", "q975")
SCORE_FIELDS = (*PRICE_FIELDS, "actual_close", "abs_error", "naive_abs_error")


def close_on(engine: Engine, ticker: str, day: str) -> float:
    return float(
        load_bars(engine, [ticker], start=date.fromisoformat(day), end=date.fromisoformat(day))[ticker][
            "close"
        ].iloc[0]
    )


def predict_goog(engine: Engine, base: str, target: str) -> None:
    """A stored prediction of GOOG's close on `target`, made from its close on `base` (+1%)."""
    from stockcli.db.predictions import save_predictions
    from stockcli.db.store import utcnow

    close = close_on(engine, "GOOG", base)
    quantiles = [close * f for f in (0.95, 0.98, 1.01, 1.03, 1.06)]
    save_predictions(
        engine,
        [
            {
                "target_date": date.fromisoformat(target),
                "ticker": "GOOG",
                "model_version": "1",
                "as_of": date.fromisoformat(base),
                "base_date": date.fromisoformat(base),
                "base_close": close,
                "predicted_close": close * 1.01,
                "dataset_run_id": "ds-20130101-abc",
                "pipeline_run_id": None,
                "created_at": utcnow(),
                **dict(zip(("q025", "q10", "q50", "q90", "q975"), quantiles, strict=True)),
                "p_up": 0.6,
                "source": "model",
                "p_value": 0.01,
                "interval_source": "model",
                "interval_p_value": 0.01,
                "unseen": False,
                "detail": {
                    "model": {
                        "predicted_close": close * 1.01,
                        "quantiles": quantiles,
                        "loc": 0.01,
                        "scale": 0.02,
                    },
                    "baselines": {"garch": quantiles, "rolling": [None] * 5},
                    "alphas": {"80": 0.2, "95": 0.05},
                },
            }
        ],
    )


def horizon_goog(engine: Engine, base: str, target: str) -> dict[str, Any]:
    """A 5-session forecast of GOOG made on `base` (stored closes: the quantiles, the candidates')."""
    from stockcli.db.horizons import save_horizon_predictions
    from stockcli.db.models import HorizonPrediction

    close = float(sample("GOOG").loc[base, "close"])
    quantiles = [close * f for f in (0.9, 0.95, 1.0, 1.05, 1.1)]
    row = {
        "ticker": "GOOG",
        "base_date": date.fromisoformat(base),
        "horizon": 5,
        "model_version": "1",
        "target_date": date.fromisoformat(target),
        "as_of": date.fromisoformat(base),
        "base_close": close,
        **dict(zip(("q025", "q10", "q50", "q90", "q975"), quantiles, strict=True)),
        "var_99": 0.08,
        "tail": [-0.1] * 31,
        "candidates": {"garch": quantiles},
        "created_at": datetime(2013, 2, 15, tzinfo=UTC),
    }
    save_horizon_predictions(engine, [row])
    return rows_of(engine, HorizonPrediction)[target]


def rows_of(engine: Engine, model: Any) -> dict[str, dict[str, Any]]:
    """target date (ISO) -> the row of GOOG in `model`'s table."""
    from sqlalchemy import select

    with engine.connect() as connection:
        rows = connection.execute(select(model.__table__).where(model.ticker == "GOOG")).mappings().all()
    return {row["target_date"].isoformat(): dict(row) for row in rows}


def test_a_split_restates_pending_predictions_and_scores_with_the_bars(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 2:1 split restates GOOG's history while a prediction made on the old basis is pending and one
    is scored: both are rescaled by the same factor as the bars, in the fetch's transaction, so the
    pending one is scored against the new close with its real error (not 100%); the interval state
    (a miscoverage level, no price) is untouched."""
    from stockcli.db.horizons import HORIZON_PRICES
    from stockcli.db.models import HorizonPrediction, LatestPrediction, ModelPerformance
    from stockcli.db.predictions import performance_window
    from stockcli.db.serving import load_fits, load_interval_state, save_fits
    from stockcli.services.monitor import evaluate_matured

    fake = FakeYahoo(histories={"GOOG": history_frame("GOOG", START, "2013-03-01")}).install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG")
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    predict_goog(engine, "2013-02-13", "2013-02-14")
    assert evaluate_matured(engine, through=FIRST_AS_OF, settings=settings) == (1, 0)
    predict_goog(engine, "2013-02-15", "2013-02-19")  # pending: its target bar is not stored yet
    horizon = horizon_goog(engine, "2013-02-15", "2013-02-22")
    before = rows_of(engine, LatestPrediction), rows_of(engine, ModelPerformance)
    state = load_interval_state(engine)
    fit = {"ticker": "GOOG", "forecaster": "garch", "fit_end": date(2013, 2, 13), "fit_start": None}
    save_fits(engine, [{**fit, "n_sessions": 10, "params": {"mu": 0.1}}])
    fake.histories["GOOG"] = history_frame("GOOG", START, "2013-03-01", scale=0.5)

    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers

    # The candidates refitted on the old bars are dropped with them: the next `daily` refits first.
    assert load_fits(engine, since=date.min, through=date(2013, 3, 1)) == {}

    assert goog.status == "replaced" and "predictions restated with it: 4 rescaled, 0 voided" in (
        goog.note or ""
    )
    restated = rows_of(engine, HorizonPrediction)["2013-02-22"]  # its prices halved, its returns kept
    assert [restated[c] for c in HORIZON_PRICES[:-1]] == pytest.approx(
        [horizon[c] * 0.5 for c in HORIZON_PRICES[:-1]]
    )
    assert restated["candidates"]["garch"] == pytest.approx([q * 0.5 for q in horizon["candidates"]["garch"]])
    assert restated["tail"] == horizon["tail"] and restated["var_99"] == horizon["var_99"]
    after = rows_of(engine, LatestPrediction), rows_of(engine, ModelPerformance)
    for old_rows, new_rows, fields in (
        (before[0], after[0], PRICE_FIELDS),
        (before[1], after[1], SCORE_FIELDS),
    ):
        assert set(new_rows) == set(old_rows)
        for target, row in new_rows.items():
            assert row["void_reason"] is None
            assert {f: row[f] for f in fields} == pytest.approx(
                {f: old_rows[target][f] * 0.5 for f in fields}, rel=1e-12
            )
            assert row["detail"]["model"]["quantiles"] == pytest.approx(
                [q * 0.5 for q in old_rows[target]["detail"]["model"]["quantiles"]], rel=1e-12
            )
            assert row["detail"]["baselines"]["garch"] == pytest.approx(
                row["detail"]["model"]["quantiles"], rel=1e-12
            )
            assert row["base_close"] == pytest.approx(
                close_on(engine, "GOOG", row["base_date"].isoformat()), rel=1e-12
            )
    scored = after[1]["2013-02-14"]
    assert (scored["abs_pct_error"], scored["direction_score"]) == (
        before[1]["2013-02-14"]["abs_pct_error"],
        before[1]["2013-02-14"]["direction_score"],
    )
    assert load_interval_state(engine) == state

    assert evaluate_matured(engine, through=AS_OF, settings=settings) == (1, 0)
    pending = rows_of(engine, ModelPerformance)["2013-02-19"]
    old_base, old_actual = (float(sample("GOOG").loc[day, "close"]) for day in ("2013-02-15", "2013-02-19"))
    assert pending["abs_pct_error"] == pytest.approx(abs(old_base * 1.01 - old_actual) / old_actual, rel=1e-9)
    assert pending["abs_pct_error"] < 0.05  # on one basis: the real error, not a split's 50-100%
    assert len(performance_window(engine, through=AS_OF, sessions=20)) == 2


def test_a_history_restated_by_no_single_factor_voids_the_predictions_on_the_changed_bar(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source corrects one bar (2013-02-13, +3%) in the overlap: the history is replaced, and the
    predictions that stand on that bar (its score too) are kept but void, with the reason, never
    scored nor counted; the prediction on unchanged bars is untouched and scored as usual."""
    from stockcli.db.models import LatestPrediction, ModelPerformance
    from stockcli.db.predictions import performance_window
    from stockcli.services.monitor import evaluate_matured

    clean = history_frame("GOOG", START, "2013-03-01")
    fake = FakeYahoo(histories={"GOOG": clean}).install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG")
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    predict_goog(engine, "2013-02-12", "2013-02-13")
    assert evaluate_matured(engine, through=date(2013, 2, 13), settings=settings) == (1, 0)
    predict_goog(engine, "2013-02-13", "2013-02-14")  # not scored yet
    predict_goog(engine, "2013-02-15", "2013-02-19")
    before = rows_of(engine, LatestPrediction)["2013-02-19"]
    corrected = clean.copy()
    corrected.loc[pd.Timestamp("2013-02-13", tz="America/New_York"), ["Open", "High", "Low", "Close"]] *= 1.03
    fake.histories["GOOG"] = corrected

    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers

    assert goog.status == "replaced" and "predictions restated with it: 0 rescaled, 3 voided" in (
        goog.note or ""
    )
    predictions, scores = rows_of(engine, LatestPrediction), rows_of(engine, ModelPerformance)
    for row in (predictions["2013-02-13"], scores["2013-02-13"], predictions["2013-02-14"]):
        assert "voided by the history restated on" in row["void_reason"], row
        assert "no single factor restates its prices" in row["void_reason"]
    assert predictions["2013-02-19"] == before and before["void_reason"] is None
    assert evaluate_matured(engine, through=AS_OF, settings=settings) == (1, 0)  # 02-19; never 02-14
    assert set(rows_of(engine, ModelPerformance)) == {"2013-02-13", "2013-02-19"}
    window = performance_window(engine, through=AS_OF, sessions=20)
    assert [row["target_date"] for row in window] == [date(2013, 2, 19)]


# --- duplicate dates ---------------------------------------------------------------------------------------------


def test_duplicate_dates_in_a_csv_exit_2_naming_file_and_line_and_store_nothing(
    tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "MSFT.csv").write_text(csv_text(sample("MSFT").loc[:"2013-02-15"]))
    cli = Cli(write_config(tmp_path, database_url, extra=f'[data]\nstart = {START}\ntickers = ["MSFT"]\n'))
    assert cli("--as-of", "2013-02-15", "fetch", "--csv-dir", str(folder)).exit_code == 0
    engine = make_engine(load_settings(cli.config_path, environ={}).database_url)
    try:
        before = bar_state(engine)
        duplicated = csv_text(sample("MSFT").loc[:"2013-02-20"]).splitlines()
        duplicated.insert(5, duplicated[4].replace(duplicated[4].split(",")[4], "99.0"))
        (folder / "MSFT.csv").write_text("\n".join(duplicated) + "\n")
        day = duplicated[4].split(",")[0]

        result = cli("--as-of", "2013-03-01", "fetch", "--csv-dir", str(folder))

        assert result.exit_code == 2, result.output
        assert f"{folder / 'MSFT.csv'} line 6: duplicate date {day} (first on line 5)" in result.stderr
        assert bar_state(engine) == before
    finally:
        engine.dispose()


def test_duplicate_dates_in_a_yahoo_frame_keep_one_of_identical_rows_and_none_of_conflicting_ones(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two different bars for one session: nobody can tell which is right, so neither is stored (and a
    stored one is kept); the next fetch re-reads that date in its overlap once the source agrees."""
    clean = history_frame("GOOG", START, "2013-03-01")
    fake = FakeYahoo(histories={"GOOG": clean}).install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG")
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    stored_before = rows_up_to(engine, "GOOG", "2013-02-15")

    def twice(day: str, close_factor: float) -> pd.DataFrame:
        row = clean.loc[[pd.Timestamp(day, tz="America/New_York")]].copy()
        row["Close"] = row["Close"] * close_factor
        return row

    # 2013-02-14 (stored, in the overlap) and 2013-02-26 (new) conflict; 2013-02-27 repeats identically.
    fake.histories["GOOG"] = pd.concat(
        [clean, twice("2013-02-14", 1.01), twice("2013-02-26", 0.99), twice("2013-02-27", 1.0)]
    ).sort_index(kind="stable")

    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers

    assert goog.status == "partial" and goog.exit_code == 3  # rows rejected: said, never silent
    assert goog.rejected_reasons == {CONFLICTING_DUPLICATE: 4}
    assert goog.added == sessions("GOOG", "2013-02-19", "2013-03-01") - 1
    stored = {row[1]: row[2] for row in stored_closes(engine, "GOOG")}
    assert "2013-02-26" not in stored
    assert stored["2013-02-27"] == pytest.approx(float(clean["Close"].iloc[-3]), rel=1e-12)
    assert rows_up_to(engine, "GOOG", "2013-02-15") == stored_before  # the stored 02-14 untouched

    fake.histories["GOOG"] = clean  # the source agrees with itself again
    (healed,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers
    assert (healed.added, healed.updated, healed.rejected) == (1, 0, 0)
    assert stored_closes(engine, "GOOG") == {
        ("GOOG", day.date().isoformat(), float(close)) for day, close in sample("GOOG")["close"].items()
    }


# --- NaN and absurd rows ------------------------------------------------------------------------------------------

ABSURD_ROWS = [
    ("2013-02-01", "10,11,9,10.5,100", "kept"),
    ("2013-02-04", "10,11,9,,100", "missing price"),  # NaN close
    ("2013-02-05", "10,9,11,10,100", "high below low"),
    ("2013-02-06", "1000,1100,900,1050,100", IMPLAUSIBLE_JUMP),  # a 100x close
    ("2013-02-07", "10.4,11,10,10.6,100", "kept"),  # compared with 10.5, not with the absurd 1050
    ("2013-02-08", "10.6,1060,10,10.7,100", IMPLAUSIBLE_JUMP),  # a 100x High on a normal close
    ("2013-02-11", "0.1,0.11,0.09,0.1,100", IMPLAUSIBLE_JUMP),  # a 100x drop
    ("2013-02-12", "10.7,11,10.5,10.8,100", "kept"),
    ("2013-02-13", "10.8,11,10.5,inf,100", "missing price"),
    ("2013-02-14", "10.8,11,10.5,10.9,-5", "negative volume"),
]


def test_nan_and_absurd_rows_are_rejected_by_reason_and_their_neighbours_kept(
    tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "X.csv").write_text(HEADER + "".join(f"{day},{values}\n" for day, values, _ in ABSURD_ROWS))
    config = write_config(
        tmp_path,
        database_url,
        extra=f'[data]\nsource = "csv"\ncsv_dir = "{folder}"\ntickers = ["X"]\nstart = {START}\n',
    )
    cli = Cli(config)

    result = cli("--as-of", "2013-03-01", "fetch", "--json")

    assert result.exit_code == 3, result.output  # rows rejected: the ticker failed, its valid rows kept
    x = json.loads(result.stdout)["tickers"]["X"]
    expected: dict[str, int] = {}
    for _day, _values, reason in ABSURD_ROWS:
        if reason != "kept":
            expected[reason] = expected.get(reason, 0) + 1
    assert x["rejected_reasons"] == expected and x["rejected"] == 7
    engine = make_engine(load_settings(config, environ={}).database_url)
    try:
        kept = [day for day, _values, reason in ABSURD_ROWS if reason == "kept"]
        assert sorted(day for _t, day, _c in stored_closes(engine)) == kept
        before = bar_state(engine)
        again = cli("--as-of", "2013-03-01", "fetch", "--json")
        assert again.exit_code == 3 and json.loads(again.stdout)["tickers"]["X"]["rows"] == 0
        assert bar_state(engine) == before
    finally:
        engine.dispose()


def test_max_jump_factor_0_turns_the_jump_check_off_and_below_1_is_a_config_error(
    tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "X.csv").write_text(HEADER + "2013-02-01,10,11,9,10.5,100\n2013-02-04,1000,1100,900,1050,100\n")
    base = f'[data]\nsource = "csv"\ncsv_dir = "{folder}"\ntickers = ["X"]\nstart = {START}\n'
    off = Cli(write_config(tmp_path, database_url, extra=base + "max_jump_factor = 0\n"))
    result = off("--as-of", "2013-03-01", "fetch", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["tickers"]["X"]["rows"] == 2

    wrong = Cli(write_config(tmp_path, database_url, extra=base + "max_jump_factor = 0.5\n"))
    refused = wrong("--as-of", "2013-03-01", "fetch")
    assert refused.exit_code == 2 and "[data] max_jump_factor" in refused.stderr


@pytest.mark.parametrize("where", ["first bar of the overlap", "only overlap bar", "overlap not served"])
def test_a_100x_bar_is_judged_against_the_last_stored_close_not_taken_for_a_restatement(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
    where: str,
) -> None:
    """The first bar of an incremental fetch has no predecessor in its frame: the last stored close is
    its past. A 100x bar there (or at the end) is rejected; the stored history is neither replaced nor
    changed, and the normal bars after it are stored."""
    clean = history_frame("GOOG", START, "2013-03-01")
    fake = FakeYahoo(histories={"GOOG": clean}).install(monkeypatch)
    overlap = 0 if where == "only overlap bar" else 5
    settings = yahoo_settings(make_settings, database_url, "GOOG", overlap_sessions=overlap)
    engine = engines(settings)
    fetch(settings=settings, engine=engine, as_of=FIRST_AS_OF)
    stored_before = rows_up_to(engine, "GOOG", "2013-02-15")

    served = clean.copy()
    first_day = {"first bar of the overlap": "2013-02-08", "only overlap bar": "2013-02-15"}.get(where)
    if first_day is None:
        served = served.loc[served.index > pd.Timestamp("2013-02-15", tz="America/New_York")].copy()
        first_day = "2013-02-19"
    for day in (first_day, "2013-03-01"):  # the frame's first bar and its last one, 100x
        stamp = pd.Timestamp(day, tz="America/New_York")
        served.loc[stamp, ["Open", "High", "Low", "Close"]] *= 100
    fake.histories["GOOG"] = served

    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers

    assert goog.status == "partial" and goog.note is None  # not a restatement; rejected rows said
    assert "split" not in (goog.error or "")
    assert goog.rejected_reasons == {IMPLAUSIBLE_JUMP: 2}
    new_days = sessions("GOOG", "2013-02-19", "2013-03-01") - 1 - (where == "overlap not served")
    assert (goog.added, goog.updated) == (new_days, 0)
    assert rows_up_to(engine, "GOOG", "2013-02-15") == stored_before
    stored_days = {row[1] for row in stored_closes(engine, "GOOG")}
    assert "2013-03-01" not in stored_days and goog.last_date == date(2013, 2, 28)
    closes = load_bars(engine, ["GOOG"])["GOOG"]["close"]
    assert (closes / closes.shift(1)).dropna().between(1 / 5, 5).all()


# --- an unadjusted split: rows rejected are a failure of the ticker, never a silent truncation ------------------


def bar_lines(frame: pd.DataFrame, *, scale_from: str | None = None, factor: float = 1.0) -> str:
    """`frame` as CSV rows, prices times `factor` from `scale_from` on (an unadjusted split)."""
    lines = []
    for day, row in zip(frame.index, frame.itertuples(), strict=True):
        f = factor if scale_from is not None and day >= pd.Timestamp(scale_from) else 1.0
        lines.append(
            f"{day.date()},{row.open * f!r},{row.high * f!r},{row.low * f!r},{row.close * f!r},{row.volume}"
        )
    return HEADER + "\n".join(lines) + "\n"


def test_an_unadjusted_split_exits_3_for_its_ticker_saying_a_split_was_detected(
    tmp_path: Path, database_url: str
) -> None:
    """GOOG x0.1 from 2010-06-01 in a CSV: its rows from that day on are rejected as implausible jumps.
    The fetch exits 3 for GOOG and says a split was detected and what to do, keeps GOOG's earlier rows
    and MSFT's whole history; a second fetch says so again instead of going quiet."""
    folder = tmp_path / "bars"
    folder.mkdir()
    goog, msft = sample("GOOG", "2009-01-02"), sample("MSFT", "2009-01-02")
    (folder / "GOOG.csv").write_text(bar_lines(goog, scale_from="2010-06-01", factor=0.1))
    (folder / "MSFT.csv").write_text(bar_lines(msft))
    config = write_config(
        tmp_path,
        database_url,
        extra=f'[data]\nsource = "csv"\ncsv_dir = "{folder}"\ntickers = ["GOOG", "MSFT"]\nstart = 2009-01-02\n',
    )
    cli = Cli(config)
    split_rows = len(goog.loc["2010-06-01":])

    for attempt in ("first", "again"):
        result = cli("--as-of", "2013-03-01", "fetch", "--json")

        assert result.exit_code == 3, (attempt, result.output)
        payload = json.loads(result.stdout)
        assert payload["status"] == "partial"
        x = payload["tickers"]["GOOG"]
        assert x["status"] == "partial" and x["rejected_reasons"] == {IMPLAUSIBLE_JUMP: split_rows}, attempt
        assert "a split detected on 2010-06-01 (prices x0.1)" in x["error"], x
        assert "use split-adjusted prices, or re-fetch" in x["hint"]
        assert payload["tickers"]["MSFT"]["status"] == "ok"
        assert "GOOG: " in result.stderr and "a split detected" in result.stderr
    assert split_rows > 600
    engine = make_engine(load_settings(config, environ={}).database_url)
    try:
        stored = load_bars(engine, ["GOOG", "MSFT"])
        assert stored["GOOG"].index[-1] == pd.Timestamp("2010-05-28") and len(stored["MSFT"]) == len(msft)
    finally:
        engine.dispose()


def test_rejected_rows_that_are_no_split_exit_3_naming_the_reasons(tmp_path: Path, database_url: str) -> None:
    """One absurd bar (a 100x close) in a CSV: rejected, the ticker exits 3 with the reason and no word
    of a split; the table says it on the error line."""
    folder = tmp_path / "bars"
    folder.mkdir()
    text = (
        HEADER
        + "2013-02-01,10,11,9,10.5,100\n2013-02-04,1000,1100,900,1050,100\n2013-02-05,10.4,11,10,10.6,100\n"
    )
    (folder / "X.csv").write_text(text)
    config = write_config(
        tmp_path,
        database_url,
        extra=f'[data]\nsource = "csv"\ncsv_dir = "{folder}"\ntickers = ["X"]\nstart = {START}\n',
    )

    result = Cli(config)("--as-of", "2013-03-01", "fetch")

    assert result.exit_code == 3, result.output
    assert "X: 1 of 3 rows rejected (implausible jump: 1); the other 2 were saved" in result.stderr
    assert "split" not in result.stderr


# --- a partial bar of a session still open ------------------------------------------------------------------------


def test_partial_bar_of_a_session_still_open_is_not_stored_until_the_close(
    make_settings: Callable[..., Settings],
    database_url: str,
    engines: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    final = history_frame("GOOG", START, "2013-03-01")
    fake = ScriptedYahoo(histories={"GOOG": final.iloc[:-1]})
    partial = final.iloc[[-1]].copy()
    partial[["High", "Close"]] = partial[["High", "Close"]] * 0.99
    partial["Volume"] = partial["Volume"] // 3
    fake.live_rows["GOOG"] = partial  # Yahoo serves the live row even past the requested end
    fake.install(monkeypatch)
    settings = yahoo_settings(make_settings, database_url, "GOOG")
    engine = engines(settings)
    friday = date(2013, 3, 1)

    for now in (datetime(2013, 3, 1, 9, 0, tzinfo=NEW_YORK), datetime(2013, 3, 1, 15, 59, tzinfo=NEW_YORK)):
        (goog,) = fetch(settings=settings, engine=engine, as_of=friday, now=now).tickers
        assert goog.last_date == date(2013, 2, 28)
        assert "2013-03-01" not in {row[1] for row in stored_closes(engine, "GOOG")}
    before = bar_state(engine)
    # An as-of after today (the clock says Friday 15:59) is still cut at the last closed session.
    fetch(
        settings=settings,
        engine=engine,
        as_of=date(2013, 3, 4),
        now=datetime(2013, 3, 1, 15, 59, tzinfo=NEW_YORK),
    )
    assert bar_state(engine) == before

    fake.histories["GOOG"], fake.live_rows = final, {}  # after the close: the final bar
    (goog,) = fetch(
        settings=settings, engine=engine, as_of=friday, now=datetime(2013, 3, 1, 16, 5, tzinfo=NEW_YORK)
    ).tickers
    assert (goog.added, goog.last_date) == (1, friday)
    last = load_bars(engine, ["GOOG"])["GOOG"].iloc[-1]
    assert last["close"] == pytest.approx(float(final["Close"].iloc[-1]), rel=1e-12)
    assert last["volume"] == int(final["Volume"].iloc[-1])


# --- the same data under TZ=UTC and TZ=Asia/Tokyo ------------------------------------------------------------------


def test_the_same_data_under_tz_utc_and_tz_tokyo_gives_identical_session_dates(tmp_path: Path) -> None:
    """Real processes with the `TZ` variable set: the session date comes from the exchange's clock,
    never the machine's. One ticker is served in New York time, one in UTC (05:00 = midnight in NY)."""
    spec = {
        "GOOG": {"start": "2013-02-01", "end": "2013-03-01"},
        "^GSPC": {"start": "2013-02-01", "end": "2013-03-01", "serve_tz": "UTC"},
    }
    seen: dict[str, set[tuple[str, str, float]]] = {}
    for zone in ("UTC", "Asia/Tokyo"):
        folder = tmp_path / zone.replace("/", "_")
        folder.mkdir()
        config = write_config(
            folder, extra='[data]\nsource = "yahoo"\ntickers = ["GOOG", "^GSPC"]\nstart = 2013-02-01\n'
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
        env.update(TZ=zone, STOCKCLI_CONFIG=str(config), STOCKCLI_FAKE_YAHOO=json.dumps(spec))
        run = subprocess.run(
            [sys.executable, "-m", "tests.faults.yahoo_runner", "--as-of", "2013-03-01", "fetch", "--json"],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["status"] == "ok"
        engine = make_engine(load_settings(config, environ={}).database_url)
        try:
            seen[zone] = stored_closes(engine)
        finally:
            engine.dispose()
    assert seen["UTC"] == seen["Asia/Tokyo"]
    expected_days = [d.date().isoformat() for d in sample("GOOG", "2013-02-01").index]
    for ticker in ("GOOG", "^GSPC"):
        assert sorted(day for t, day, _c in seen["UTC"] if t == ticker) == expected_days


def csv_text(frame: pd.DataFrame) -> str:
    lines = [
        f"{day.date()},{row.open!r},{row.high!r},{row.low!r},{row.close!r},{row.volume}"
        for day, row in zip(frame.index, frame.itertuples(), strict=True)
    ]
    return HEADER + "\n".join(lines) + "\n"


# --- numbers outside what a column can hold ------------------------------------------------------------------

OUT_OF_RANGE_ROWS = [
    ("2013-02-01", "10,11,9,10.5,100", "kept"),
    ("2013-02-04", "10,11,9,10.5,1.5e+30", VOLUME_OUT_OF_RANGE),  # was stored as -9223372036854775808
    ("2013-02-05", "10,11,9,10.5,9223372036854775808", VOLUME_OUT_OF_RANGE),  # BigInteger max + 1
    ("2013-02-06", "10,11,9,10.5,9.2e18", "kept"),  # big, but a 64-bit integer holds it
    ("2013-02-07", "10.4,11,10,10.6,250", "kept"),
]


# A warning Python shows by default (numpy's cast warning is a RuntimeWarning) fails the command (exit 1).
@pytest.mark.filterwarnings("error::RuntimeWarning", "error::FutureWarning", "error::UserWarning")
def test_out_of_range_numbers_are_rejected_and_counted_and_no_warning_reaches_the_user(
    tmp_path: Path, database_url: str
) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "X.csv").write_text(
        HEADER + "".join(f"{day},{values}\n" for day, values, _ in OUT_OF_RANGE_ROWS)
    )
    config = write_config(
        tmp_path,
        database_url,
        extra=f'[data]\nsource = "csv"\ncsv_dir = "{folder}"\ntickers = ["X"]\nstart = {START}\n',
    )
    cli = Cli(config)

    result = cli("--as-of", "2013-03-01", "fetch", "--json")

    assert result.exit_code == 3, result.output  # rows rejected: said, exit 3
    assert "Warning" not in result.stderr and "RuntimeWarning" not in result.stderr
    x = json.loads(result.stdout)["tickers"]["X"]
    assert x["rejected_reasons"] == {VOLUME_OUT_OF_RANGE: 2} and x["rejected"] == 2
    engine = make_engine(load_settings(config, environ={}).database_url)
    try:
        volumes = {d.date().isoformat(): int(v) for d, v in load_bars(engine, ["X"])["X"]["volume"].items()}
        assert volumes == {"2013-02-01": 100, "2013-02-06": 9_200_000_000_000_000_000, "2013-02-07": 250}
        before = bar_state(engine)
        again = cli("--as-of", "2013-03-01", "fetch", "--json")
        assert again.exit_code == 3 and json.loads(again.stdout)["tickers"]["X"]["rows"] == 0
        assert bar_state(engine) == before
    finally:
        engine.dispose()


@pytest.mark.filterwarnings("error::RuntimeWarning", "error::FutureWarning", "error::UserWarning")
def test_an_infinite_price_from_a_source_is_rejected_as_out_of_range_without_a_warning() -> None:
    from stockcli.sources.base import validate_bars

    raw = pd.DataFrame(
        {
            "open": [10.0, 10.0, np.inf],
            "high": [11.0, np.inf, 11.0],
            "low": [9.0, 9.0, 9.0],
            "close": [10.5, 10.5, 10.5],
            "volume": [100.0, 100.0, np.inf],
        },
        index=pd.DatetimeIndex(["2013-02-01", "2013-02-04", "2013-02-05"]),
    )
    clean, reasons = validate_bars(raw)
    assert reasons == {PRICE_OUT_OF_RANGE: 2}
    assert list(clean.index.strftime("%Y-%m-%d")) == ["2013-02-01"]
    assert clean["volume"].dtype == np.int64


def test_a_csv_of_binary_garbage_is_refused_naming_the_file(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "MSFT.csv").write_text(csv_text(sample("MSFT").loc[:"2013-02-15"]))
    cli = Cli(write_config(tmp_path, database_url, extra=f'[data]\nstart = {START}\ntickers = ["MSFT"]\n'))
    assert cli("--as-of", "2013-02-15", "fetch", "--csv-dir", str(folder)).exit_code == 0
    engine = make_engine(load_settings(cli.config_path, environ={}).database_url)
    try:
        before = bar_state(engine)
        (folder / "MSFT.csv").write_bytes(bytes(range(256)) * 40)  # not UTF-8, NUL bytes included

        result = cli("--as-of", "2013-03-01", "fetch", "--csv-dir", str(folder))

        assert result.exit_code == 2, result.output
        assert f"{folder / 'MSFT.csv'} is not a CSV text file" in result.stderr
        assert "UnicodeDecodeError" not in result.output + result.stderr
        assert bar_state(engine) == before
    finally:
        engine.dispose()


def test_a_restated_detail_rescales_every_candidates_prices_and_keeps_chances() -> None:
    """The forecaster table's layout: every candidate's five close quantiles rescaled; P(up), the
    network's location and scale (returns) and the adaptive levels kept."""
    from stockcli.db.predictions import rescale_detail

    detail = {
        "model": {"predicted_close": 10.0, "loc": 0.001, "scale": 0.02, "df": 5.0},
        "candidates": {"garch": [9.0, 9.5, 10.0, 10.5, 11.0], "network": [8.0, 9.0, 10.0, 11.0, 12.0]},
        "p_up": {"garch": 0.52, "base_rate": 0.51},
        "p_up_source": "base_rate",
        "alphas": {"80": 0.2, "95": 0.05},
    }
    out = rescale_detail(detail, 0.5)
    assert out is not None
    assert out["candidates"] == {"garch": [4.5, 4.75, 5.0, 5.25, 5.5], "network": [4.0, 4.5, 5.0, 5.5, 6.0]}
    assert out["model"] == {"predicted_close": 5.0, "loc": 0.001, "scale": 0.02, "df": 5.0}
    assert {k: out[k] for k in ("p_up", "p_up_source", "alphas")} == {
        k: detail[k] for k in ("p_up", "p_up_source", "alphas")
    }
