"""The explicit clock and the NYSE calendar."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from stockcli.clock import parse_date, today, trading_calendar
from stockcli.errors import UsageError


def test_next_session_skips_weekends_and_holidays() -> None:
    calendar = trading_calendar("XNYS")
    assert calendar.next_session(date(2013, 3, 1)) == date(2013, 3, 4)  # Friday -> Monday
    assert calendar.next_session(date(2012, 11, 21)) == date(2012, 11, 23)  # Thanksgiving
    assert calendar.next_session(date(2012, 10, 26)) == date(2012, 10, 31)  # hurricane Sandy closure
    assert calendar.next_session(date(2001, 9, 10)) == date(2001, 9, 17)  # 9/11 closure
    assert calendar.previous_session(date(2013, 3, 4)) == date(2013, 3, 1)


def test_sample_period_has_the_sessions_of_the_gspc_file() -> None:
    assert len(trading_calendar("XNYS").sessions(date(1999, 1, 4), date(2013, 3, 1))) == 3562


def test_as_of_session_counts_only_after_its_close() -> None:
    calendar = trading_calendar("XNYS")
    friday = date(2013, 3, 1)
    before_close = datetime(2013, 3, 1, 20, 0, tzinfo=UTC)  # 15:00 in New York
    after_close = datetime(2013, 3, 1, 21, 30, tzinfo=UTC)  # 16:30 in New York
    assert calendar.last_closed_session(friday, now=before_close) == date(2013, 2, 28)
    assert calendar.last_closed_session(friday, now=after_close) == friday
    assert calendar.last_closed_session(date(2013, 3, 3), now=after_close) == friday  # a Sunday


def test_sessions_back_counts_sessions_not_days() -> None:
    assert trading_calendar("XNYS").sessions_back(date(2013, 3, 4), 1) == date(2013, 3, 1)


def test_sessions_back_past_the_calendars_start_raises_unless_given_otherwise() -> None:
    calendar = trading_calendar("XNYS")
    with pytest.raises(UsageError):
        calendar.sessions_back(date(2013, 3, 4), 100_000)
    assert calendar.sessions_back(date(2013, 3, 4), 100_000, otherwise=date.min) == date.min
    assert calendar.sessions_back(date(2013, 3, 4), 1, otherwise=date.min) == date(2013, 3, 1)


def test_today_is_in_the_exchange_time_zone() -> None:
    late_utc = datetime(2013, 3, 2, 3, 0, tzinfo=UTC)  # still Friday evening in New York
    assert today("XNYS", now=late_utc) == date(2013, 3, 1)


def test_bad_dates_are_usage_errors() -> None:
    assert parse_date("2013-03-01") == date(2013, 3, 1)
    with pytest.raises(UsageError, match="YYYY-MM-DD"):
        parse_date("03/01/2013", label="--as-of")


def test_unknown_exchange_is_a_config_error() -> None:
    from stockcli.clock import TradingCalendar
    from stockcli.errors import ConfigError

    with pytest.raises(ConfigError, match="Unknown exchange calendar"):
        TradingCalendar("NOPE")


def test_the_session_table_is_cached_and_read_back_with_the_same_answers(tmp_path: Path) -> None:
    import json

    from stockcli.clock import TradingCalendar

    built = TradingCalendar("XNYS", cache_dir=tmp_path)
    (cache_file,) = tmp_path.glob("calendar-XNYS-*.json")
    payload = json.loads(cache_file.read_text())
    cached = TradingCalendar("XNYS", cache_dir=tmp_path)
    assert cached._days == built._days and cached._closes == built._closes
    assert cached.next_session(date(2012, 10, 26)) == date(2012, 10, 31)
    assert cached.session_close(date(2012, 11, 23)).hour == 13  # the early close after Thanksgiving
    assert len(cached.sessions(date(1999, 1, 4), date(2013, 3, 1))) == 3562

    # A cache that is damaged, or does not reach far enough past today, is rebuilt, never trusted.
    payload["sessions"] = payload["sessions"][:100]
    payload["closes"] = payload["closes"][:100]
    cache_file.write_text(json.dumps(payload))
    assert TradingCalendar("XNYS", cache_dir=tmp_path)._days == built._days
    cache_file.write_text("{not json")
    assert TradingCalendar("XNYS", cache_dir=tmp_path)._days == built._days
    assert json.loads(cache_file.read_text())["sessions"] == built._days  # rewritten


def test_dates_outside_the_calendar_are_usage_errors() -> None:
    calendar = trading_calendar("XNYS")
    with pytest.raises(UsageError, match="covers 1990-01-02"):
        calendar.previous_session(date(1990, 1, 2))
    with pytest.raises(UsageError, match="not a trading session"):
        calendar.session_close(date(2013, 3, 2))


def test_sessions_since_counts_what_the_list_holds() -> None:
    calendar = trading_calendar("XNYS")
    for start, end in [(date(2012, 10, 26), date(2012, 11, 2)), (date(2013, 1, 1), date(2013, 3, 1))]:
        expected = len([d for d in calendar.sessions(start, end) if d > start])
        assert calendar.sessions_since(start, end) == expected
    assert calendar.sessions_since(date(2012, 10, 26), date(2012, 11, 2)) == 3  # Sandy closed 10-29/30
    assert calendar.sessions_since(date(2013, 3, 1), date(2013, 3, 1)) == 0
    assert calendar.sessions_since(date(2013, 3, 4), date(2013, 3, 1)) == 0


def test_a_date_past_the_calendars_end_says_where_it_ends_instead_of_answering_wrong() -> None:
    from datetime import timedelta

    calendar = trading_calendar("XNYS")
    last = date.fromordinal(calendar._days[-1])
    later = last + timedelta(days=40)
    for question in (
        lambda: calendar.session_on_or_before(later),  # would be `last`: a session weeks before
        lambda: calendar.last_closed_session(later),
        lambda: calendar.next_session(last),
        lambda: calendar.sessions_back(later, 3),
    ):
        with pytest.raises(UsageError, match=f"ends on {last.isoformat()}") as caught:
            question()
        assert "exchange_calendars" in str(caught.value)
    assert calendar.session_on_or_before(last) == last  # the calendar's own last day still answers


def test_a_long_running_process_rebuilds_a_calendar_about_to_run_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from stockcli import clock

    stale = clock.TradingCalendar("XNYS")
    soon = (date.today() + timedelta(days=30)).toordinal()
    kept = sum(1 for ordinal in stale._days if ordinal <= soon)
    stale._days, stale._closes = stale._days[:kept], stale._closes[:kept]  # built 11 months ago
    monkeypatch.setitem(clock._calendars, "XNYS", stale)

    fresh = trading_calendar("XNYS")

    assert fresh is not stale
    assert fresh._days[-1] >= (date.today() + timedelta(days=300)).toordinal()
    assert trading_calendar("XNYS") is fresh  # built once again, then kept
