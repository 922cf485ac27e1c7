"""Sources: the bundled sample, CSV folders (validation and structural errors), yfinance at its boundary."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockcli.config import Settings, load_settings
from stockcli.errors import ConfigError, InputDataError, SourceError, TransientSourceError
from stockcli.sources import fetch_with_retries, get_source
from stockcli.sources.base import (
    CONFLICTING_DUPLICATE,
    SourceBars,
    drop_implausible_jumps,
    empty_bars,
    validate_bars,
)
from stockcli.sources.csv import CsvSource
from stockcli.sources.sample import SAMPLE_DIR, SAMPLE_TICKERS, SampleSource
from stockcli.sources.yahoo import YahooSource, normalize_yahoo_frame
from tests.fakes_yfinance import FakeYahoo, history_frame, rate_limit, timeout

HEADER = "Date,Open,High,Low,Close,Volume\n"


def settings_for(tmp_path: Path, **data: Any) -> Settings:
    return load_settings(
        None, environ={}, overrides={"storage": {"data_dir": str(tmp_path / "data")}, "data": data}
    )


def assert_normalized(frame: pd.DataFrame) -> None:
    assert isinstance(frame.index, pd.DatetimeIndex)
    assert frame.index.tz is None
    assert frame.index.name == "date"
    assert frame.index.is_monotonic_increasing and frame.index.is_unique
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]
    assert [str(t) for t in frame.dtypes] == ["float64"] * 4 + ["int64"]
    assert (frame.index == frame.index.normalize()).all()


# --- sample and csv ---------------------------------------------------------------------------------


def test_sample_source_serves_the_bundled_bars_normalized() -> None:
    source = SampleSource()
    for ticker in SAMPLE_TICKERS:
        bars = source.fetch(ticker, start=date(2004, 8, 19), end=date(2013, 3, 1))
        assert_normalized(bars.bars)
        assert len(bars.bars) == 2148, ticker  # the four files overlap on 2148 sessions
        assert bars.rejected == 0
        assert bars.bars.index[0] == pd.Timestamp("2004-08-19")
        assert bars.bars.index[-1] == pd.Timestamp("2013-03-01")
    gspc = source.fetch("^GSPC", start=date(1999, 1, 4), end=date(1999, 1, 4)).bars
    assert gspc.iloc[0].to_dict() == {
        "open": 1229.23,
        "high": 1248.8101,
        "low": 1219.1,
        "close": 1228.1,
        "volume": 877000000,
    }


def test_sample_source_reports_an_unknown_ticker_as_no_data() -> None:
    bars = SampleSource().fetch("AAPL", start=date(2010, 1, 1), end=date(2013, 1, 1))
    assert bars.bars.empty
    assert "GOOG, MSFT, ^GSPC, ^IXIC" in (bars.note or "")


@pytest.mark.parametrize("file_name", ["^GSPC.csv", "GSPC.csv"])
def test_csv_source_accepts_the_name_with_or_without_caret(tmp_path: Path, file_name: str) -> None:
    (tmp_path / file_name).write_text(
        HEADER + "2013-01-02,10,11,9,10.5,100\n2013-01-03,10.5,11,10,10.8,200\n"
    )
    bars = CsvSource(tmp_path).fetch("^GSPC", start=date(2013, 1, 1), end=date(2013, 1, 31))
    assert_normalized(bars.bars)
    assert bars.bars["close"].tolist() == [10.5, 10.8]
    assert bars.bars["volume"].tolist() == [100, 200]


def test_csv_source_clips_to_the_range_both_ends_included(tmp_path: Path) -> None:
    (tmp_path / "X.csv").write_text(
        HEADER + "".join(f"2013-01-0{d},10,11,9,10,1\n" for d in (2, 3, 4, 7, 8)), encoding="utf-8"
    )
    bars = CsvSource(tmp_path).fetch("X", start=date(2013, 1, 3), end=date(2013, 1, 7))
    assert [d.date() for d in bars.bars.index] == [date(2013, 1, 3), date(2013, 1, 4), date(2013, 1, 7)]


def test_rows_failing_validation_are_rejected_and_counted(tmp_path: Path) -> None:
    rows = [
        "2013-01-02,10,11,9,10.5,100",  # fine
        "2013-01-03,10,,9,10.5,100",  # missing high
        "2013-01-04,10,11,0,10.5,100",  # non-positive low
        "2013-01-07,10,9,11,10,100",  # high below low
        "2013-01-08,10,11,9,11.5,100",  # close above high
        "2013-01-09,10,11,9.9,9.5,100",  # close below low
        "2013-01-10,10,11,9,10.5,-5",  # negative volume
        "2013-01-11,10,10.995,9,11.0,100",  # close a rounding step above high: kept
        "2013-01-14,10,11,9,10.5,null",  # missing volume
        "2013-01-15,10,11,9,10.5,0",  # zero volume is a real bar (indices, holidays)
    ]
    (tmp_path / "X.csv").write_text(HEADER + "\n".join(rows) + "\n")
    bars = CsvSource(tmp_path).fetch("X", start=date(2013, 1, 1), end=date(2013, 1, 31))
    assert bars.rejected == 7
    assert dict(bars.rejected_reasons) == {
        "missing price": 1,
        "non-positive price": 1,
        "high below low": 1,
        "high below open/close": 1,
        "low above open/close": 1,
        "missing volume": 1,
        "negative volume": 1,
    }
    assert [d.date() for d in bars.bars.index] == [date(2013, 1, 2), date(2013, 1, 11), date(2013, 1, 15)]
    assert_normalized(bars.bars)


def _bars(closes: list[float], *, start: str = "2013-01-02") -> pd.DataFrame:
    index = pd.DatetimeIndex(pd.bdate_range(start, periods=len(closes)), name="date").as_unit("s")
    close = np.asarray(closes, dtype="float64")
    return pd.DataFrame(
        {"open": close, "high": close * 1.01, "low": close * 0.99, "close": close, "volume": np.int64(100)},
        index=index,
    )


def test_implausible_jumps_are_judged_against_the_previous_kept_close_only() -> None:
    bars = _bars([10.0, 1000.0, 10.5, 10.2, 0.01, 10.4, 49.0])
    kept, dropped = drop_implausible_jumps(bars, max_jump_factor=5.0)
    assert dropped == 2  # the 100x and the 1/1000 bar; each neighbour compared with the last kept close
    assert kept["close"].tolist() == [10.0, 10.5, 10.2, 10.4, 49.0]  # 49.0 / 10.4 < 5: a big day, kept
    anchored, dropped = drop_implausible_jumps(bars, max_jump_factor=5.0, previous_close=1.0)
    assert dropped == len(bars) and anchored.empty  # all > 5x the stored close before the frame
    unchanged, dropped = drop_implausible_jumps(bars, max_jump_factor=0.0, previous_close=1.0)
    assert dropped == 0 and unchanged is bars  # 0 disables the check
    spike = _bars([10.0, 10.1])
    spike.loc[spike.index[1], "high"] = 60.0  # a bad High on a normal close
    assert drop_implausible_jumps(spike, max_jump_factor=5.0)[1] == 1


def test_a_date_given_twice_keeps_one_identical_row_and_none_of_conflicting_ones() -> None:
    bars = _bars([10.0, 10.1, 10.2, 10.3])
    raw = pd.concat([bars, bars.iloc[[1]], bars.iloc[[2]].assign(close=10.25)]).astype("float64")
    clean, reasons = validate_bars(raw)
    assert reasons == {CONFLICTING_DUPLICATE: 2}
    assert clean.index.tolist() == [bars.index[0], bars.index[1], bars.index[3]]
    assert_normalized(clean)


def test_csv_adj_close_moves_prices_onto_the_adjusted_basis(tmp_path: Path) -> None:
    (tmp_path / "X.csv").write_text(
        "date,open,high,low,close,adj close,volume\n2013-01-02,10,12,8,10,5,100\n", encoding="utf-8"
    )
    bars = CsvSource(tmp_path).fetch("X", start=date(2013, 1, 1), end=date(2013, 1, 31)).bars
    assert bars.iloc[0][["open", "high", "low", "close"]].tolist() == [5.0, 6.0, 4.0, 5.0]


BAD_FILES = {
    "missing column": (
        HEADER.replace(",Volume", "") + "2013-01-02,10,11,9,10.5\n",
        1,
        "missing column Volume",
    ),
    "unparsable date": (
        HEADER + "2013-01-02,10,11,9,10.5,1\n02/01/2013,10,11,9,10.5,1\n",
        3,
        "column 1 (Date): unparsable date (expected YYYY-MM-DD)",
    ),
    "duplicate dates": (
        HEADER + "2013-01-02,10,11,9,10.5,1\n2013-01-03,10,11,9,10.5,1\n2013-01-02,10,11,9,10.5,1\n",
        4,
        "duplicate date 2013-01-02 (first on line 2)",
    ),
    "text in a price column": (
        HEADER + "2013-01-02,10,11,9,10.5,1\n\n2013-01-03,10,11,nine,10.5,1\n",
        4,
        "column 4 (Low) holds text, not a number",
    ),
    "ragged row": (HEADER + "2013-01-02,10,11,9\n", 2, "4 fields where the header has 6"),
}


# Files the column-at-a-time parse reads itself (True) or hands to the checked, line-by-line one (False).
PARSE_CASES = {
    "plain": (HEADER + "2013-01-03,10,11,9,10.5,100\n2013-01-02,9.5,10,9,9.75,200\n", True),
    "blanks, CRLF, BOM, spaced header": (
        "\ufeff Date , open,HIGH,Low,Close ,Volume\r\n 2013-01-02 , 10 ,11,9,10.5, 1e3 \r\n\r\n,,,,,\r\n"
        "2013-01-03,1_0,11,9,10.5,7\r\n",
        True,
    ),
    "nan and inf are missing": (HEADER + "2013-01-02,NaN,11,9,10.5,1\n2013-01-03,10,inf,9,-nan,1\n", True),
    "adj close": ("date,open,high,low,close,adj close,volume\n2013-01-02,10,12,8,10,5,100\n", True),
    "header only": (HEADER, True),
    "empty cell": (HEADER + "2013-01-02,10,,9,10.5,1\n", False),
    "null marker": (HEADER + "2013-01-02,10,11,null,10.5,1\n", False),
    "timestamp dates": (HEADER + "2013-01-02 00:00:00-05:00,10,11,9,10.5,1\n", False),
    **{name: (text, False) for name, (text, _, _) in BAD_FILES.items()},
}


@pytest.mark.parametrize("case", sorted(PARSE_CASES))
def test_the_fast_csv_parse_equals_the_checked_one_or_leaves_the_file_to_it(
    tmp_path: Path, case: str
) -> None:
    from stockcli.sources.csv import _read_bars_csv_checked, _read_plain_bars_csv, read_bars_csv

    text, plain = PARSE_CASES[case]
    path = tmp_path / "X.csv"
    path.write_text(text, encoding="utf-8", newline="")
    fast = _read_plain_bars_csv(path)
    assert (fast is not None) is plain
    try:
        checked = _read_bars_csv_checked(path)
    except InputDataError as error:
        with pytest.raises(InputDataError) as caught:
            read_bars_csv(path)
        assert caught.value.message == error.message
        return
    pd.testing.assert_frame_equal(read_bars_csv(path), checked, check_exact=True)
    if fast is not None:
        pd.testing.assert_frame_equal(fast, checked, check_exact=True)


@pytest.mark.parametrize("name", sorted(p.name for p in SAMPLE_DIR.glob("*.csv")))
def test_the_fast_csv_parse_reads_the_sample_files_as_the_checked_one(name: str) -> None:
    from stockcli.sources.csv import _read_bars_csv_checked, _read_plain_bars_csv

    fast = _read_plain_bars_csv(SAMPLE_DIR / name)
    assert fast is not None
    pd.testing.assert_frame_equal(fast, _read_bars_csv_checked(SAMPLE_DIR / name), check_exact=True)


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_structural_csv_errors_name_the_file_and_line(tmp_path: Path, case: str) -> None:
    text, line, what = BAD_FILES[case]
    path = tmp_path / "BAD.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputDataError) as caught:
        CsvSource(tmp_path).fetch("BAD", start=date(2013, 1, 1), end=date(2013, 1, 31))
    assert caught.value.exit_code == 2
    assert f"{path} line {line}:" in caught.value.message
    assert what in caught.value.message


def test_get_source_picks_by_name_option_and_config(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    assert get_source(settings).name == "sample"
    assert get_source(settings, csv_dir=tmp_path).name == "csv"  # --csv-dir alone means the csv source
    assert get_source(settings, "yahoo").name == "yahoo"
    with pytest.raises(ConfigError, match="--csv-dir"):
        get_source(settings, "csv")
    with pytest.raises(ConfigError, match="does not exist"):
        get_source(settings, "csv", csv_dir=tmp_path / "nope")
    with pytest.raises(ConfigError, match="Unknown source"):
        get_source(settings, "bloomberg")


# --- retries -----------------------------------------------------------------------------------------


class FlakySource:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def fetch(self, ticker: str, *, start: date, end: date) -> SourceBars:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientSourceError(f"timeout #{self.calls}")
        return SourceBars(ticker=ticker, bars=empty_bars())


def test_transient_errors_are_retried_with_exponential_backoff() -> None:
    source, waits = FlakySource(failures=2), []
    result = fetch_with_retries(
        source,
        "X",
        start=date(2013, 1, 1),
        end=date(2013, 1, 2),
        max_retries=3,
        backoff_s=0.5,
        sleep=waits.append,
    )
    assert result.ticker == "X"
    assert source.calls == 3
    assert waits == [0.5, 1.0]


def test_retries_are_bounded() -> None:
    source, waits = FlakySource(failures=100), []
    with pytest.raises(TransientSourceError, match="gave up after 4 attempts"):
        fetch_with_retries(
            source,
            "X",
            start=date(2013, 1, 1),
            end=date(2013, 1, 2),
            max_retries=3,
            backoff_s=1.0,
            sleep=waits.append,
        )
    assert source.calls == 4
    assert waits == [1.0, 2.0, 4.0]


# --- yahoo, with yfinance faked at its boundary ----------------------------------------------------------


@pytest.fixture
def yahoo(tmp_path: Path) -> YahooSource:
    return YahooSource(cache_dir=tmp_path / "data" / "yfinance", timeout_s=7.0)


def test_yahoo_download_frames_are_normalized(monkeypatch: pytest.MonkeyPatch, yahoo: YahooSource) -> None:
    fake = FakeYahoo(histories={"MSFT": history_frame("MSFT", "2013-01-02", "2013-03-01")}).install(
        monkeypatch
    )
    bars = yahoo.fetch("MSFT", start=date(2013, 2, 1), end=date(2013, 2, 28))
    assert_normalized(bars.bars)
    expected = SampleSource().fetch("MSFT", start=date(2013, 2, 1), end=date(2013, 2, 28)).bars
    pd.testing.assert_frame_equal(bars.bars, expected)
    ((ticker, kwargs),) = fake.calls
    assert ticker == "MSFT"
    assert kwargs["start"] == "2013-02-01" and kwargs["end"] == "2013-03-01"  # end exclusive: Feb 28 included
    assert kwargs["auto_adjust"] is True and kwargs["timeout"] == 7.0


def test_yahoo_shapes_seen_by_the_normalizer(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the real `yf.download` hands over: MultiIndex (Price, Ticker), tz-aware index."""
    import yfinance as yf

    FakeYahoo(histories={"GOOG": history_frame("GOOG", "2013-02-25", "2013-03-01")}).install(monkeypatch)
    frame = yf.download(
        "GOOG",
        start="2013-02-25",
        end="2013-03-02",
        auto_adjust=True,
        progress=False,
        threads=False,
        ignore_tz=False,
    )
    assert isinstance(frame.columns, pd.MultiIndex)
    assert list(frame.columns.names) == ["Price", "Ticker"]
    assert str(frame.index.tz) == "America/New_York"
    raw = normalize_yahoo_frame(frame, "GOOG", exchange_tz="America/New_York")
    assert [d.date() for d in raw.index] == [date(2013, 2, d) for d in (25, 26, 27, 28)] + [date(2013, 3, 1)]


def test_yahoo_adj_close_present_puts_prices_on_the_adjusted_basis(monkeypatch: pytest.MonkeyPatch) -> None:
    import yfinance as yf

    fake = FakeYahoo(histories={"GOOG": history_frame("GOOG", "2013-02-25", "2013-03-01")}, adj_factor=0.5)
    fake.install(monkeypatch)
    frame = yf.download(
        "GOOG",
        start="2013-02-25",
        end="2013-03-02",
        auto_adjust=False,
        progress=False,
        threads=False,
        ignore_tz=False,
    )
    assert ("Adj Close", "GOOG") in frame.columns
    raw = normalize_yahoo_frame(frame, "GOOG", exchange_tz="America/New_York")
    original = history_frame("GOOG", "2013-02-25", "2013-03-01")
    np.testing.assert_allclose(raw["close"].to_numpy(), original["Close"].to_numpy() * 0.5)
    np.testing.assert_allclose(raw["high"].to_numpy(), original["High"].to_numpy() * 0.5)
    assert raw["volume"].tolist() == original["Volume"].tolist()


def test_yahoo_utc_index_becomes_the_exchange_date() -> None:
    frame = history_frame("GOOG", "2013-02-25", "2013-02-26")
    frame.index = frame.index.tz_convert("UTC")  # 05:00 UTC = midnight in New York
    tokyo_style = frame.copy()
    tokyo_style.index = pd.DatetimeIndex(["2013-02-24 15:00", "2013-02-25 15:00"], tz="UTC")  # midnight Tokyo
    raw = normalize_yahoo_frame(frame, "GOOG", exchange_tz="America/New_York")
    assert [d.date() for d in raw.index] == [date(2013, 2, 25), date(2013, 2, 26)]
    raw_tokyo = normalize_yahoo_frame(tokyo_style, "7203.T", exchange_tz="Asia/Tokyo")
    assert [d.date() for d in raw_tokyo.index] == [date(2013, 2, 25), date(2013, 2, 26)]


def test_yahoo_unknown_or_delisted_ticker_is_no_data(
    monkeypatch: pytest.MonkeyPatch, yahoo: YahooSource
) -> None:
    FakeYahoo().install(monkeypatch)
    bars = yahoo.fetch("DEAD", start=date(2013, 2, 1), end=date(2013, 2, 28))
    assert bars.bars.empty
    assert_normalized(bars.bars)
    assert "possibly delisted" in (bars.note or "")


@pytest.mark.parametrize("make_error", [rate_limit, timeout], ids=["rate-limit", "timeout"])
def test_yahoo_rate_limits_and_timeouts_are_transient(
    monkeypatch: pytest.MonkeyPatch, yahoo: YahooSource, make_error: Any
) -> None:
    FakeYahoo(always={"GOOG": make_error}).install(monkeypatch)
    with pytest.raises(TransientSourceError, match="GOOG"):
        yahoo.fetch("GOOG", start=date(2013, 2, 1), end=date(2013, 2, 28))


def test_yahoo_other_errors_fail_without_retry(monkeypatch: pytest.MonkeyPatch, yahoo: YahooSource) -> None:
    FakeYahoo(always={"GOOG": lambda: KeyError("chart")}).install(monkeypatch)
    with pytest.raises(SourceError, match="KeyError") as caught:
        yahoo.fetch("GOOG", start=date(2013, 2, 1), end=date(2013, 2, 28))
    assert not isinstance(caught.value, TransientSourceError)


def test_yahoo_errors_raised_by_download_itself(monkeypatch: pytest.MonkeyPatch, yahoo: YahooSource) -> None:
    import yfinance as yf

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Could not resolve host: query2.finance.yahoo.com")

    monkeypatch.setattr(yf, "download", broken)
    with pytest.raises(SourceError, match="Could not resolve host"):
        yahoo.fetch("GOOG", start=date(2013, 2, 1), end=date(2013, 2, 28))


def test_yahoo_keeps_its_tz_cache_in_the_data_dir_and_quiet_logs(
    monkeypatch: pytest.MonkeyPatch, yahoo: YahooSource, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import yfinance.cache

    FakeYahoo().install(monkeypatch)
    with caplog.at_level(logging.WARNING):
        yahoo.fetch("DEAD", start=date(2013, 2, 1), end=date(2013, 2, 28))
    assert yfinance.cache._TzDBManager.get_location() == str(tmp_path / "data" / "yfinance")
    assert (tmp_path / "data" / "yfinance").is_dir()
    assert not [r for r in caplog.records if r.name == "yfinance"]  # reported by us, not printed by yfinance


def test_get_source_places_yahoo_cache_under_the_data_dir(tmp_path: Path) -> None:
    source = get_source(settings_for(tmp_path), "yahoo")
    assert isinstance(source, YahooSource)
    assert source.cache_dir == tmp_path / "data" / "yfinance"
    assert source.exchange_tz == "America/New_York"


def test_sample_dir_ships_its_provenance() -> None:
    assert (SAMPLE_DIR / "README.md").is_file()
