"""The explicit clock (nothing dated after a run's `as_of` is visible) and the exchange's trading calendar.

`exchange_calendars` (and so pandas) is imported lazily; building a calendar takes about half a
second, so its session table is cached in the data dir and read back in milliseconds by later runs.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import itertools
import json
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from stockcli.errors import ConfigError, UsageError

if TYPE_CHECKING:
    import exchange_calendars

    from stockcli.config import Settings

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


def parse_as_of(text: str, exchange: str, *, now: datetime | None = None) -> date:
    """Parse `--as-of`; raises UsageError (exit 2) when it is after today (nothing dated then exists yet)."""
    day = parse_date(text, label="--as-of")
    current = today(exchange, now=now)
    if day > current:
        raise UsageError(
            f"--as-of {day.isoformat()} is in the future: today is {current.isoformat()} in "
            f"{exchange_timezone(exchange).key} ({exchange}), and nothing dated after today exists yet.",
            hint="Give a date up to today, or leave --as-of out to run as of today.",
        )
    return day


def exchange_timezone(exchange: str) -> ZoneInfo:
    name = _EXCHANGE_TZ.get(exchange)
    if name is None:
        name = str(get_calendar(exchange).tz)
    return ZoneInfo(name)


def today(exchange: str, *, now: datetime | None = None) -> date:
    """Today's date in the exchange's time zone (the default as-of)."""
    moment = now or datetime.now(tz=ZoneInfo("UTC"))
    return moment.astimezone(exchange_timezone(exchange)).date()


def get_calendar(exchange: str) -> exchange_calendars.ExchangeCalendar:
    """The exchange's calendar from 1990 to a year after today (built once per day)."""
    return _calendar_until(exchange, (date.today() + timedelta(days=365)).isoformat())


@functools.lru_cache(maxsize=8)
def _calendar_until(exchange: str, end: str) -> exchange_calendars.ExchangeCalendar:
    import exchange_calendars as xcals

    try:
        return xcals.get_calendar(exchange, start=CALENDAR_START, end=end)
    except Exception as exc:  # InvalidCalendarName and friends
        raise ConfigError(
            f"Unknown exchange calendar {exchange!r}: {exc}.",
            hint="Use an ISO MIC code known to exchange_calendars, e.g. XNYS (NYSE).",
        ) from None


class TradingCalendar:
    """Sessions of one exchange as `datetime.date` values, from a sorted table of sessions and closes
    built by `exchange_calendars` or read from the cache in `cache_dir` (no pandas import)."""

    def __init__(self, exchange: str = "XNYS", *, cache_dir: Path | None = None) -> None:
        self.exchange = exchange
        self.cache_dir = cache_dir
        self.tz = exchange_timezone(exchange)
        # Sessions as proleptic ordinals (date.toordinal), ascending; their closes in epoch seconds (UTC).
        self._days, self._closes = _session_table(exchange, cache_dir)

    def _session_at(self, position: int, day: date) -> date:
        last = date.fromordinal(self._days[-1])
        if position >= len(self._days) or day > last:
            # Past the end, "the session on or before" would be the last known one, weeks back.
            what = (
                f"{day.isoformat()} is after" if day > last else f"No session after {day.isoformat()} is in"
            )
            raise UsageError(
                f"{what} the trading calendar of {self.exchange}: it ends on {last.isoformat()} "
                "(exchange_calendars lists sessions up to a year after the day the calendar is built).",
                hint="A long-running daemon or server rebuilds its calendar by itself before it runs out; "
                "elsewhere, run again (a new process builds a new calendar) or upgrade exchange_calendars.",
            )
        if position < 0:
            first, last = date.fromordinal(self._days[0]), date.fromordinal(self._days[-1])
            raise UsageError(
                f"No session of {self.exchange} around {day.isoformat()}: the trading calendar covers "
                f"{first.isoformat()} to {last.isoformat()}.",
                hint="Use a date inside that range.",
            )
        return date.fromordinal(self._days[position])

    def sessions(self, start: date, end: date) -> list[date]:
        """Every session from start to end, both included."""
        first = bisect.bisect_left(self._days, start.toordinal())
        last = bisect.bisect_right(self._days, end.toordinal())
        return [date.fromordinal(ordinal) for ordinal in self._days[first:last]]

    def sessions_since(self, start: date, end: date) -> int:
        """How many sessions lie after `start`, up to and including `end` (0 when end <= start)."""
        if end <= start:
            return 0
        return bisect.bisect_right(self._days, end.toordinal()) - bisect.bisect_right(
            self._days, start.toordinal()
        )

    def next_session(self, day: date) -> date:
        """The first session strictly after `day` (skips weekends and exchange holidays)."""
        return self._session_at(bisect.bisect_right(self._days, day.toordinal()), day)

    def previous_session(self, day: date) -> date:
        """The last session strictly before `day`."""
        return self._session_at(bisect.bisect_left(self._days, day.toordinal()) - 1, day)

    def session_on_or_before(self, day: date) -> date:
        return self._session_at(bisect.bisect_right(self._days, day.toordinal()) - 1, day)

    def sessions_back(self, day: date, count: int, *, otherwise: date | None = None) -> date:
        """The session `count` sessions before the session on or before `day`; `otherwise`, when given,
        where the calendar does not reach that far (instead of UsageError)."""
        anchor = bisect.bisect_right(self._days, day.toordinal()) - 1
        try:
            self._session_at(anchor, day)
            return self._session_at(anchor - max(count, 0), day)
        except UsageError:
            if otherwise is None:
                raise
            return otherwise

    def session_close(self, day: date) -> datetime:
        """When the session of `day` closes, in the exchange's zone (UsageError when it is not a session)."""
        position = bisect.bisect_left(self._days, day.toordinal())
        if position == len(self._days) or self._days[position] != day.toordinal():
            raise UsageError(f"{day.isoformat()} is not a trading session of {self.exchange}.")
        return datetime.fromtimestamp(self._closes[position], tz=UTC).astimezone(self.tz)

    def last_closed_session(self, as_of: date, *, now: datetime | None = None) -> date:
        """The newest session whose bar is final as of `as_of` (today's counts once `now` is past its close)."""
        session = self.session_on_or_before(as_of)
        if session < as_of:
            return session
        moment = now or datetime.now(tz=ZoneInfo("UTC"))
        if moment >= self.session_close(session):
            return session
        return self.previous_session(session)


# The table must reach this far past today; a cache file that does not is rebuilt.
_CACHE_MIN_AHEAD = timedelta(days=180)


def _session_table(exchange: str, cache_dir: Path | None) -> tuple[list[int], list[int]]:
    """(session ordinals, close times in epoch seconds) of `exchange`, from the cache when it is fresh."""
    from importlib import metadata

    version = metadata.version("exchange_calendars")
    path = None
    if cache_dir is not None:
        safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in f"{exchange}-{version}")
        path = cache_dir / f"calendar-{safe}.json"
        cached = _read_table(path, exchange, version)
        if cached is not None:
            return cached
    calendar = get_calendar(exchange)
    days = (calendar.sessions.values.astype("datetime64[D]").astype("int64") + _EPOCH_ORDINAL).tolist()
    closes = calendar.closes.values.astype("datetime64[s]").astype("int64").tolist()
    if path is not None:
        _write_table(path, exchange, version, days, closes)
    return days, closes


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _read_table(path: Path, exchange: str, version: str) -> tuple[list[int], list[int]] | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        days, closes = payload["sessions"], payload["closes"]
        fresh = (
            payload["exchange"] == exchange
            and payload["exchange_calendars"] == version
            and payload["start"] == CALENDAR_START
            and days[-1] >= (date.today() + _CACHE_MIN_AHEAD).toordinal()
            and len(days) == len(closes)
            and all(a < b for a, b in itertools.pairwise(days))
        )
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return None  # missing or damaged: rebuilt and rewritten
    return (days, closes) if fresh else None


def _write_table(path: Path, exchange: str, version: str, days: list[int], closes: list[int]) -> None:
    from stockcli.storage import write_atomically

    header = {"exchange": exchange, "exchange_calendars": version, "start": CALENDAR_START}
    text = json.dumps({**header, "sessions": days, "closes": closes}, separators=(",", ":"))
    with contextlib.suppress(OSError):  # a cache only: a read-only data dir just means rebuilding next time
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, text)


_calendars: dict[str, TradingCalendar] = {}
_calendars_lock = threading.Lock()


def trading_calendar(exchange: str = "XNYS", *, cache_dir: Path | None = None) -> TradingCalendar:
    """The process's calendar of `exchange`, built once (from `cache_dir` when a fresh table is there);
    later calls without `cache_dir` get the same one. Rebuilt when its sessions end within 180 days."""
    with _calendars_lock:
        calendar = _calendars.get(exchange)
        if calendar is None or calendar._days[-1] < (date.today() + _CACHE_MIN_AHEAD).toordinal():
            cache_dir = cache_dir or (calendar.cache_dir if calendar else None)
            calendar = _calendars[exchange] = TradingCalendar(exchange, cache_dir=cache_dir)
        return calendar


def calendar_for(settings: Settings) -> TradingCalendar:
    """The configured exchange's calendar, its session table cached in `<data_dir>/cache`."""
    return trading_calendar(settings.data.exchange, cache_dir=settings.data_dir / "cache")
