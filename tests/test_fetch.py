"""`fetch` on a real SQLite file and a real PostgreSQL (the same bodies): incremental, idempotent,
restatements replaced whole, the as-of cut-off, per-ticker isolation, yfinance faked at its boundary,
bad CSVs, a SIGKILL in the middle, and the run lock."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import Settings, load_settings
from stockcli.db.bars import load_bars
from stockcli.db.engine import make_engine, open_database
from stockcli.db.models import RawStockData
from stockcli.services import fetch as fetch_module
from stockcli.services.fetch import fetch
from stockcli.services.runtime import pipeline_run
from stockcli.sources.sample import SAMPLE_DIR, SAMPLE_TICKERS, SampleSource
from tests.conftest import Cli, write_config
from tests.fakes_yfinance import FakeYahoo, history_frame, rate_limit, timeout
from tests.ledger import recent_runs

AS_OF = date(2013, 3, 1)
NEW_YORK = ZoneInfo("America/New_York")
HEADER = "Date,Open,High,Low,Close,Volume\n"


@pytest.fixture
def open_db() -> Iterator[Callable[[Settings], Engine]]:
    engines: list[Engine] = []

    def opener(settings: Settings) -> Engine:
        engine = open_database(settings)
        engines.append(engine)
        return engine

    yield opener
    for engine in engines:
        engine.dispose()


def bar_counts(engine: Engine) -> dict[str, int]:
    """How many bars are stored per ticker."""
    query = select(RawStockData.ticker, func.count()).group_by(RawStockData.ticker)
    with engine.connect() as connection:
        return {ticker: int(count) for ticker, count in connection.execute(query)}


def checksum(engine: Engine) -> str:
    """A digest of every stored bar, fetched_at and source included."""
    digest = hashlib.sha256()
    query = select(RawStockData.__table__).order_by(RawStockData.ticker, RawStockData.date)
    with engine.connect() as connection:
        for row in connection.execute(query):
            digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def sample_frame(ticker: str, start: date, end: date = AS_OF) -> pd.DataFrame:
    return SampleSource().fetch(ticker, start=start, end=end).bars


def csv_text(frame: pd.DataFrame, *, scale: float = 1.0) -> str:
    lines = [
        f"{day.date()},{row.open * scale!r},{row.high * scale!r},{row.low * scale!r},{row.close * scale!r},{row.volume}"
        for day, row in zip(frame.index, frame.itertuples(), strict=True)
    ]
    return HEADER + "\n".join(lines) + "\n"


NO_MARKET = {"har_market": ""}
"""For tests of one ticker's fetch: no market series fetched beside it (tested on its own below)."""


def make_cli(tmp_path: Path, database_url: str, data: str = "") -> Cli:
    return Cli(write_config(tmp_path, database_url, extra="[data]\n" + data if data else ""))


# --- the sample source ---------------------------------------------------------------------------------


def test_sample_fetch_stores_every_bar_and_a_second_fetch_changes_nothing(
    make_settings: Callable[..., Settings], database_url: str, open_db: Callable[[Settings], Engine]
) -> None:
    settings = make_settings(database_url)
    engine = open_db(settings)
    first = fetch(settings=settings, engine=engine, as_of=AS_OF)
    assert first.status == "ok" and first.exit_code == 0
    expected = {t: len(sample_frame(t, settings.data.start)) for t in SAMPLE_TICKERS}
    assert expected == dict.fromkeys(SAMPLE_TICKERS, 2148)
    assert {t.ticker: (t.added, t.updated, t.last_date) for t in first.tickers} == {
        t: (2148, 0, AS_OF) for t in SAMPLE_TICKERS
    }
    assert bar_counts(engine) == expected
    stored = load_bars(engine, ["^GSPC"])["^GSPC"]
    pd.testing.assert_frame_equal(stored, sample_frame("^GSPC", settings.data.start))

    before = checksum(engine)
    second = fetch(settings=settings, engine=engine, as_of=AS_OF)
    assert second.status == "ok"
    assert [(t.added, t.updated, t.rows) for t in second.tickers] == [(0, 0, 0)] * 4
    assert bar_counts(engine) == expected
    assert checksum(engine) == before


def test_the_market_is_fetched_beside_the_watchlist(
    make_settings: Callable[..., Settings], database_url: str, open_db: Callable[[Settings], Engine]
) -> None:
    """har_range's market term reads the market's stored bars: fetched like a context series."""
    data = {"tickers": ["GOOG"], "start": "2013-01-02"}
    settings = make_settings(database_url, data=data)
    assert settings.forecasters.har_market == "^GSPC"
    result = fetch(settings=settings, engine=open_db(settings), as_of=AS_OF)
    assert result.status == "ok" and [t.ticker for t in result.tickers] == ["GOOG", "^GSPC"]
    without = make_settings(database_url, data=data, forecasters=NO_MARKET)
    assert [t.ticker for t in fetch(settings=without, engine=open_db(without), as_of=AS_OF).tickers] == [
        "GOOG"
    ]


def test_a_csv_folder_without_the_market_fetches_ok_and_says_what_follows(
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
    tmp_path: Path,
) -> None:
    """The market was not asked for by name: its absence is no partial fetch (no exit 3 every day)."""
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "GOOG.csv").write_text(csv_text(sample_frame("GOOG", date(2013, 1, 2))))
    data = {"source": "csv", "csv_dir": str(folder), "tickers": ["GOOG"], "start": "2013-01-02"}
    settings = make_settings(database_url, data=data)
    result = fetch(settings=settings, engine=open_db(settings), as_of=AS_OF)
    assert (result.status, result.exit_code, result.failure()) == ("ok", 0, None)
    goog, market = result.tickers
    assert (goog.ticker, goog.status, market.ticker, market.status) == ("GOOG", "ok", "^GSPC", "skipped")
    assert market.error and "har_range" in (market.note or "") and 'har_market = ""' in (market.note or "")
    named = fetch(settings=settings, engine=open_db(settings), as_of=AS_OF, tickers=["GOOG", "^GSPC"])
    assert (named.status, named.exit_code) == ("partial", 3)  # named by the user: a real failure


def test_incremental_fetch_refetches_only_an_overlap(
    make_settings: Callable[..., Settings], database_url: str, open_db: Callable[[Settings], Engine]
) -> None:
    settings = make_settings(
        database_url, data={"start": "2012-10-01", "tickers": ["MSFT"]}, forecasters=NO_MARKET
    )
    engine = open_db(settings)
    fetch(settings=settings, engine=engine, as_of=date(2013, 1, 31))
    result = fetch(settings=settings, engine=engine, as_of=AS_OF)
    (msft,) = result.tickers
    february = sample_frame("MSFT", date(2013, 2, 1))
    assert (msft.added, msft.updated, msft.status) == (len(february), 0, "ok")
    assert (
        msft.fetched_from == trading_calendar("XNYS").sessions_back(date(2013, 1, 31), 5) == date(2013, 1, 24)
    )
    assert bar_counts(engine) == {"MSFT": len(sample_frame("MSFT", date(2012, 10, 1)))}


def test_a_late_correction_inside_the_overlap_is_updated_not_restated(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    bars = sample_frame("GOOG", date(2013, 1, 2))
    (folder / "GOOG.csv").write_text(csv_text(bars.loc[:"2013-02-15"]))
    settings = make_settings(
        database_url,
        data={"source": "csv", "csv_dir": str(folder), "tickers": ["GOOG"]},
        forecasters=NO_MARKET,
    )
    engine = open_db(settings)
    fetch(settings=settings, engine=engine, as_of=date(2013, 2, 15))
    corrected = bars.copy()
    corrected.loc["2013-02-14", "volume"] += 1000  # a volume correction is not a restatement
    (folder / "GOOG.csv").write_text(csv_text(corrected))
    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF).tickers
    assert (goog.status, goog.updated, goog.added) == ("ok", 1, len(bars.loc["2013-02-19":]))
    assert (
        load_bars(engine, ["GOOG"])["GOOG"].loc["2013-02-14", "volume"]
        == corrected.loc["2013-02-14", "volume"]
    )


# --- restatements ----------------------------------------------------------------------------------------


def _restatement_setup(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
) -> tuple[Settings, Engine, Path, pd.DataFrame]:
    folder = tmp_path / "bars"
    folder.mkdir()
    bars = sample_frame("GOOG", date(2012, 11, 1))
    (folder / "GOOG.csv").write_text(csv_text(bars.loc[:"2013-01-31"]))
    (folder / "MSFT.csv").write_text(csv_text(sample_frame("MSFT", date(2012, 11, 1))))
    settings = make_settings(
        database_url,
        data={"source": "csv", "csv_dir": str(folder), "tickers": ["GOOG", "MSFT"], "start": "2012-11-01"},
        forecasters=NO_MARKET,
    )
    engine = open_db(settings)
    assert fetch(settings=settings, engine=engine, as_of=date(2013, 1, 31)).status == "ok"
    # A 2-for-1 split published after Jan 31: the source now shows the whole history halved.
    (folder / "GOOG.csv").write_text(csv_text(bars, scale=0.5))
    return settings, engine, folder, bars


def test_a_restated_history_is_replaced_whole(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
) -> None:
    settings, engine, _folder, bars = _restatement_setup(tmp_path, make_settings, database_url, open_db)
    result = fetch(settings=settings, engine=engine, as_of=AS_OF)
    goog, msft = result.tickers
    assert goog.status == "replaced" and "restated" in (goog.note or "")
    assert goog.added == len(bars.loc["2013-02-01":])
    assert goog.updated == len(bars.loc[:"2013-01-31"])  # every old bar now has the new basis
    stored = load_bars(engine, ["GOOG"])["GOOG"]
    assert len(stored) == len(bars)
    pd.testing.assert_series_equal(stored["close"], bars["close"] * 0.5, check_names=False)
    assert (msft.status, msft.updated, msft.added) == ("ok", 0, len(bars.loc["2013-02-01":]))  # untouched


def test_a_replacement_is_one_transaction(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings, engine, _folder, _bars = _restatement_setup(tmp_path, make_settings, database_url, open_db)
    before = checksum(engine)

    seen_inside: list[int] = []

    def failing_insert(connection: Any, rows: Any) -> int:
        # Inside the replacing transaction the old history is already deleted...
        seen_inside.append(
            connection.execute(text("SELECT COUNT(*) FROM raw_stock_data WHERE ticker = 'GOOG'")).scalar()
        )
        raise RuntimeError("disk full")

    monkeypatch.setattr(fetch_module, "upsert_bars", failing_insert)
    result = fetch(settings=settings, engine=engine, as_of=AS_OF, tickers=["GOOG"])
    assert result.status == "failed" and result.exit_code == 1
    assert "disk full" in (result.tickers[0].error or "")
    assert seen_inside == [0]
    assert checksum(engine) == before  # ...and comes back whole when the insert fails


# --- the as-of cut-off -----------------------------------------------------------------------------------


def test_nothing_after_as_of_and_the_as_of_bar_only_after_the_close(
    make_settings: Callable[..., Settings], database_url: str, open_db: Callable[[Settings], Engine]
) -> None:
    settings = make_settings(
        database_url, data={"start": "2013-02-01", "tickers": ["GOOG"]}, forecasters=NO_MARKET
    )
    engine = open_db(settings)
    friday = date(2013, 2, 15)
    during = datetime(2013, 2, 15, 15, 0, tzinfo=NEW_YORK)
    (goog,) = fetch(settings=settings, engine=engine, as_of=friday, now=during).tickers
    assert goog.last_date == date(2013, 2, 14)
    assert max(load_bars(engine, ["GOOG"])["GOOG"].index).date() == date(2013, 2, 14)

    after_close = datetime(2013, 2, 15, 16, 30, tzinfo=NEW_YORK)
    (goog,) = fetch(settings=settings, engine=engine, as_of=friday, now=after_close).tickers
    assert (goog.added, goog.last_date) == (1, friday)

    (goog,) = fetch(settings=settings, engine=engine, as_of=date(2013, 2, 17)).tickers  # a Sunday
    assert goog.last_date == friday and goog.added == 0
    assert max(load_bars(engine, ["GOOG"])["GOOG"].index).date() == friday


# --- yahoo, faked at yfinance's boundary --------------------------------------------------------------------


def _yahoo_histories(*tickers: str) -> dict[str, pd.DataFrame]:
    return {t: history_frame(t, "2013-01-02", "2013-03-01") for t in tickers}


def test_yahoo_rate_limited_ticker_is_retried_then_fails_alone(
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeYahoo(histories=_yahoo_histories("GOOG", "MSFT"), always={"^GSPC": rate_limit})
    fake.failures["MSFT"] = [timeout(), rate_limit()]  # recovers on the third attempt
    fake.install(monkeypatch)
    settings = make_settings(
        database_url,
        data={
            "source": "yahoo",
            "tickers": ["GOOG", "^GSPC", "MSFT"],
            "start": "2013-01-02",
            "max_retries": 3,
            "retry_backoff_s": 0.25,
        },
    )
    engine = open_db(settings)
    waits: list[float] = []
    result = fetch(settings=settings, engine=engine, as_of=AS_OF, sleep=waits.append)
    goog, gspc, msft = result.tickers
    assert result.status == "partial" and result.exit_code == 3
    assert (goog.status, msft.status, gspc.status) == ("ok", "ok", "failed")
    assert "YFRateLimitError" in (gspc.error or "") and "gave up after 4 attempts" in (gspc.error or "")
    assert fake.calls_for("^GSPC") == 4 and fake.calls_for("MSFT") == 3 and fake.calls_for("GOOG") == 1
    assert waits == [0.25, 0.5, 1.0, 0.25, 0.5]  # ^GSPC's three retries, then MSFT's two
    expected = len(sample_frame("GOOG", date(2013, 1, 2)))
    assert bar_counts(engine) == {"GOOG": expected, "MSFT": expected}
    pd.testing.assert_frame_equal(load_bars(engine, ["GOOG"])["GOOG"], sample_frame("GOOG", date(2013, 1, 2)))


def test_yahoo_rate_limit_for_one_of_three_exits_3_with_json(
    tmp_path: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeYahoo(histories=_yahoo_histories("GOOG", "MSFT"), always={"^GSPC": rate_limit}).install(
        monkeypatch
    )
    cli = make_cli(
        tmp_path,
        database_url,
        'source = "yahoo"\ntickers = ["GOOG", "^GSPC", "MSFT"]\nstart = 2013-01-02\nmax_retries = 2\nretry_backoff_s = 0.0\n',
    )
    result = cli("--as-of", "2013-03-01", "fetch", "--json")
    assert result.exit_code == 3, result.output
    payload = json.loads(result.stdout)
    assert set(payload) == {"status", "tickers"}
    assert payload["status"] == "partial"
    rows = len(sample_frame("GOOG", date(2013, 1, 2)))
    for ticker in ("GOOG", "MSFT"):
        assert (
            payload["tickers"][ticker].items()
            >= {"rows": rows, "last_date": "2013-03-01", "status": "ok", "error": None}.items()
        )
    assert payload["tickers"]["^GSPC"]["status"] == "failed"
    assert "Rate limited" in payload["tickers"]["^GSPC"]["error"]
    assert "^GSPC" in result.stderr
    assert fake.calls_for("^GSPC") == 3
    settings = load_settings(cli.config_path, environ={})
    engine = make_engine(settings.database_url)
    try:
        assert bar_counts(engine) == {"GOOG": rows, "MSFT": rows}
        (run,) = recent_runs(engine, command="fetch")
        assert run.status == "partial" and "^GSPC" in (run.error or "")
        assert run.details is not None and run.details["tickers"]["^GSPC"]["status"] == "failed"
    finally:
        engine.dispose()


def test_yahoo_delisted_ticker_is_no_data_and_deletes_nothing(
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeYahoo(histories=_yahoo_histories("GOOG")).install(monkeypatch)
    settings = make_settings(
        database_url,
        data={"source": "yahoo", "tickers": ["GOOG"], "start": "2013-01-02"},
        forecasters=NO_MARKET,
    )
    engine = open_db(settings)
    assert fetch(settings=settings, engine=engine, as_of=date(2013, 2, 15)).status == "ok"
    before = checksum(engine)
    del fake.histories["GOOG"]  # delisted: yfinance logs "possibly delisted" and returns an empty frame
    result = fetch(settings=settings, engine=engine, as_of=AS_OF)
    (goog,) = result.tickers
    assert goog.status == "no_data" and "possibly delisted" in (goog.error or "")
    assert goog.last_date == date(2013, 2, 15)
    assert result.status == "failed" and result.exit_code == 4
    assert checksum(engine) == before


def test_switching_source_replaces_the_history_instead_of_mixing_bases(
    make_settings: Callable[..., Settings],
    database_url: str,
    open_db: Callable[[Settings], Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = make_settings(
        database_url, data={"tickers": ["GOOG"], "start": "2013-01-02"}, forecasters=NO_MARKET
    )
    engine = open_db(settings)
    fetch(settings=settings, engine=engine, as_of=date(2013, 2, 15))
    FakeYahoo(histories={"GOOG": history_frame("GOOG", "2013-01-02", "2013-03-01", scale=0.5)}).install(
        monkeypatch
    )
    (goog,) = fetch(settings=settings, engine=engine, as_of=AS_OF, source="yahoo").tickers
    assert goog.status == "replaced" and "came from sample" in (goog.note or "")
    with engine.connect() as connection:
        sources = connection.execute(text("SELECT DISTINCT source FROM raw_stock_data")).scalars().all()
    assert sources == ["yahoo"]
    assert bar_counts(engine) == {"GOOG": len(sample_frame("GOOG", date(2013, 1, 2)))}


# --- bad CSVs and validation through the CLI --------------------------------------------------------------

BAD_CSVS = {
    "missing column": (
        HEADER.replace(",Volume", "") + "2013-02-01,10,11,9,10.5\n",
        "line 1",
        "missing column Volume",
    ),
    "unparsable date": (
        HEADER + "2013-02-01,10,11,9,10.5,1\n2013-02-30,10,11,9,10.5,1\n",
        "line 3",
        "unparsable date",
    ),
    "duplicate dates": (
        HEADER + "2013-02-01,10,11,9,10.5,1\n2013-02-01,10,11,9,10.5,1\n",
        "line 3",
        "duplicate date",
    ),
    "text in a price column": (
        HEADER + "2013-02-01,10,11,9,n/a?,1\n",
        "line 2",
        "column 5 (Close) holds text",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_CSVS))
def test_bad_csv_exits_2_alone_or_3_beside_a_good_ticker_and_stores_nothing_of_it(
    tmp_path: Path, database_url: str, case: str
) -> None:
    content, line, what = BAD_CSVS[case]
    folder = tmp_path / "bars"
    folder.mkdir()
    good = sample_frame("MSFT", date(2013, 1, 2))
    (folder / "MSFT.csv").write_text(csv_text(good.loc[:"2013-01-31"]))
    cli = make_cli(tmp_path, database_url, 'start = 2013-01-02\ntickers = ["MSFT", "BAD"]\n')
    assert cli("--as-of", "2013-03-01", "fetch", "--csv-dir", str(folder), "--ticker", "MSFT").exit_code == 0
    settings = load_settings(cli.config_path, environ={})
    engine = make_engine(settings.database_url)
    try:
        before = checksum(engine)
        (folder / "BAD.csv").write_text(content)
        alone = cli("--as-of", "2013-03-01", "fetch", "--csv-dir", str(folder), "--ticker", "BAD")
        assert alone.exit_code == 2, alone.output
        assert f"{folder / 'BAD.csv'} {line}" in alone.stderr and what in alone.stderr
        assert checksum(engine) == before

        (folder / "MSFT.csv").write_text(csv_text(good))
        both = cli("--as-of", "2013-03-01", "fetch", "--source", "csv", "--csv-dir", str(folder), "--json")
        assert both.exit_code == 3, both.output
        payload = json.loads(both.stdout)
        assert payload["status"] == "partial"
        assert payload["tickers"]["MSFT"]["status"] == "ok" and payload["tickers"]["MSFT"]["rows"] == len(
            good.loc["2013-02-01":]
        )
        assert payload["tickers"]["BAD"]["status"] == "failed" and line in payload["tickers"]["BAD"]["error"]
        assert bar_counts(engine) == {"MSFT": len(good)}
    finally:
        engine.dispose()


def test_rows_failing_validation_are_counted_not_stored(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "bars"
    folder.mkdir()
    (folder / "X.csv").write_text(
        HEADER
        + "2013-02-01,10,11,9,10.5,100\n2013-02-04,10,9,11,10,100\n2013-02-05,-1,11,9,10,100\n"
        + "2013-02-06,10,11,9,10.5,-3\n2013-02-07,10,11,9,,100\n2013-02-08,10,11,9,10.2,100\n"
    )
    cli = make_cli(
        tmp_path, database_url, f'source = "csv"\ncsv_dir = "{folder}"\ntickers = ["X"]\nstart = 2013-01-02\n'
    )
    result = cli("--as-of", "2013-03-01", "fetch", "--json")
    assert result.exit_code == 3, result.output  # rows rejected: the ticker failed, loudly
    x = json.loads(result.stdout)["tickers"]["X"]
    assert (x["rows"], x["rejected"], x["last_date"], x["status"]) == (2, 4, "2013-02-08", "partial")
    assert x["error"] == (
        "4 of 6 rows rejected (missing price: 1, non-positive price: 1, high below low: 1, "
        "negative volume: 1); the other 2 were saved"
    )
    settings = load_settings(cli.config_path, environ={})
    engine = make_engine(settings.database_url)
    try:
        stored = load_bars(engine, ["X"])["X"]
        assert [d.date() for d in stored.index] == [date(2013, 2, 1), date(2013, 2, 8)]
    finally:
        engine.dispose()


def test_fetch_table_and_error_paths(tmp_path: Path, database_url: str) -> None:
    cli = make_cli(tmp_path, database_url, "start = 2013-02-01\n")
    table = cli("--as-of", "2013-03-01", "fetch")
    assert table.exit_code == 0, table.output
    for ticker in SAMPLE_TICKERS:
        assert ticker in table.stdout
    assert "2013-03-01" in table.stdout and "ok" in table.stdout

    malformed = cli("--as-of", "2013-03-01", "fetch", "--ticker", "NOT A TICKER")
    assert malformed.exit_code == 2 and "Malformed ticker" in malformed.stderr

    nothing = cli("--as-of", "2013-03-01", "fetch", "--ticker", "AAPL", "--json")
    assert nothing.exit_code == 4, nothing.output
    payload = json.loads(nothing.stdout)
    assert payload["status"] == "failed" and payload["tickers"]["AAPL"]["status"] == "no_data"


# --- crash safety and the run lock ---------------------------------------------------------------------


def _run_cli_process(
    config: Path, *args: str, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STOCKCLI_")}
    env["STOCKCLI_CONFIG"] = str(config)
    if kill_at:
        env["STOCKCLI_KILL_AT"] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "stockcli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
    )


@pytest.mark.slow
def test_sigkill_mid_fetch_leaves_consistent_data_and_the_next_run_completes(
    tmp_path: Path, database_url: str
) -> None:
    config = write_config(tmp_path, database_url, extra="[data]\nstart = 2012-09-04\n")
    killed = _run_cli_process(
        config, "--as-of", "2013-03-01", "fetch", "--json", kill_at="fetch:after_ticker"
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    expected = len(sample_frame("GOOG", date(2012, 9, 4)))
    engine = make_engine(load_settings(config, environ={}).database_url)
    try:
        assert bar_counts(engine) == {"GOOG": expected}  # the first ticker whole, nothing half-written

        finished = _run_cli_process(config, "--as-of", "2013-03-01", "fetch", "--json")
        assert finished.returncode == 0, finished.stderr
        payload = json.loads(finished.stdout)
        assert payload["tickers"]["GOOG"]["rows"] == 0
        assert all(payload["tickers"][t]["rows"] == expected for t in ("MSFT", "^GSPC", "^IXIC"))
        assert bar_counts(engine) == dict.fromkeys(SAMPLE_TICKERS, expected)
        statuses = [run.status for run in recent_runs(engine, command="fetch")]
        assert statuses[0] == "ok" and "running" not in statuses
    finally:
        engine.dispose()


def test_a_concurrent_fetch_is_refused_with_exit_5_naming_the_holder(
    tmp_path: Path, database_url: str
) -> None:
    cli = make_cli(tmp_path, database_url)
    settings = load_settings(cli.config_path, environ={})
    with pipeline_run(settings, command="daily", as_of=AS_OF) as handle:
        result = cli("--as-of", "2013-03-01", "fetch")
        counts = bar_counts(handle.engine)
    assert result.exit_code == 5, result.output
    assert "stockcli daily" in result.stderr and str(os.getpid()) in result.stderr
    assert counts == {}
    handle.engine.dispose()


def test_sample_files_hold_what_the_bundled_readme_says() -> None:
    readme = (SAMPLE_DIR / "README.md").read_text()
    for ticker in SAMPLE_TICKERS:
        assert ticker in readme
