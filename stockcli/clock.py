"""The explicit clock and the exchange's trading calendar.

Every run has an `as_of` date; nothing dated after it is visible to any step. Predictions made on
as-of D are for the next trading session of the configured exchange, not for "tomorrow".
`exchange_calendars` (and so pandas) is imported lazily: `stockcli --help` must stay fast.
"""

from __future__ import annotations

import functools
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from stockcli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import exchange_calendars

CALENDAR_START = "1990-01-02"

# Known time zones so that the default as-of needs no calendar import.
_EXCHANGE_TZ = {
    "XNYS": "America/New_York",
    "XNAS": "America/New_York",
    "XLON": "Europe/London",
    "XTKS": "Asia/Tokyo",
    "XFRA": "Europe/Berlin",
    "XETR": "Europe/Berlin",
}


def parse_date(text: str, *, label: str = "date") -> date:
    """Parse YYYY-MM-DD; raises UsageError naming the option."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"Invalid {label} {text!r}.", hint="Use the form YYYY-MM-DD, e.g. 2013-03-01."
        ) from None


def exchange_timezone(exchange: str) -> ZoneInfo:
    name = _EXCHANGE_TZ.get(exchange)
    if name is None:
        name = str(get_calendar(exchange).tz)
    return ZoneInfo(name)


def today(exchange: str, *, now: datetime | None = None) -> date:
    """Today's date in the exchange's time zone (the default as-of)."""
    moment = now or datetime.now(tz=ZoneInfo("UTC"))
    return moment.astimezone(exchange_timezone(exchange)).date()


@functools.lru_cache(maxsize=8)
def get_calendar(exchange: str) -> exchange_calendars.ExchangeCalendar:
    import exchange_calendars as xcals

    try:
        end = (date.today() + timedelta(days=365)).isoformat()
        return xcals.get_calendar(exchange, start=CALENDAR_START, end=end)
    except Exception as exc:  # InvalidCalendarName and friends
        raise ConfigError(
            f"Unknown exchange calendar {exchange!r}: {exc}.",
            hint="Use an ISO MIC code known to exchange_calendars, e.g. XNYS (NYSE).",
        ) from None


class TradingCalendar:
    """Sessions of one exchange, as plain `datetime.date` values."""

    def __init__(self, exchange: str = "XNYS") -> None:
        self.exchange = exchange
        self._cal = get_calendar(exchange)
        self.tz = exchange_timezone(exchange)

    def is_session(self, day: date) -> bool:
        return bool(self._cal.is_session(_ts(day)))

    def sessions(self, start: date, end: date) -> list[date]:
        """Every session from start to end, both included."""
        if end < start:
            return []
        first, last = self._cal.first_session.date(), self._cal.last_session.date()
        start, end = max(start, first), min(end, last)
        if end < start:
            return []
        return [ts.date() for ts in self._cal.sessions_in_range(_ts(start), _ts(end))]

    def next_session(self, day: date) -> date:
        """The first session strictly after `day` (skips weekends and exchange holidays)."""
        return self._cal.date_to_session(_ts(day + timedelta(days=1)), direction="next").date()

    def previous_session(self, day: date) -> date:
        """The last session strictly before `day`."""
        return self._cal.date_to_session(_ts(day - timedelta(days=1)), direction="previous").date()

    def session_on_or_before(self, day: date) -> date:
        return self._cal.date_to_session(_ts(day), direction="previous").date()

    def sessions_back(self, day: date, count: int) -> date:
        """The session `count` sessions before the session on or before `day`."""
        anchor = self.session_on_or_before(day)
        if count <= 0:
            return anchor
        sessions = self._cal.sessions_window(_ts(anchor), -(count + 1))
        return sessions[0].date()

    def session_close(self, day: date) -> datetime:
        """When the session of `day` closes, as an aware datetime in the exchange's zone."""
        close = self._cal.session_close(_ts(day))
        return close.to_pydatetime().astimezone(self.tz)

    def last_closed_session(self, as_of: date, *, now: datetime | None = None) -> date:
        """The newest session whose bar is final as of `as_of`.

        The as-of session itself counts only once it has closed: for a past as-of that is always
        true; for today it depends on the wall clock `now` (default: now).
        """
        session = self.session_on_or_before(as_of)
        if session < as_of:
            return session
        moment = now or datetime.now(tz=ZoneInfo("UTC"))
        if moment >= self.session_close(session):
            return session
        return self.previous_session(session)


def _ts(day: date) -> Any:
    import pandas as pd

    return pd.Timestamp(day)


@functools.lru_cache(maxsize=8)
def trading_calendar(exchange: str = "XNYS") -> TradingCalendar:
    return TradingCalendar(exchange)
