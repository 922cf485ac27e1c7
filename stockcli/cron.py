"""The `[daemon] cron` rule: a crontab expression, with crontab's meaning, as an APScheduler 3 trigger."""

from __future__ import annotations

import functools
import itertools
from datetime import datetime
from typing import Any

from stockcli.errors import ConfigError

CRON_HINT = (
    'Five fields in the exchange\'s time zone: minute hour day month day-of-week, e.g. "30 17 * * mon-fri".'
)


def cron_trigger(expression: str, exchange: str) -> Any:
    """The APScheduler 3 trigger of a crontab expression in the exchange's time zone.

    Crontab's meaning, unlike APScheduler's `from_crontab`: day-of-week 0 and 7 are Sunday, and when
    both day fields are restricted a day matching either runs. ConfigError when invalid or never firing.
    """
    trigger, problem = cron_problem(expression, exchange)
    if problem is not None:
        raise ConfigError(f"[daemon] cron {problem}.", hint=CRON_HINT)
    return trigger


# Crontab counts the days of the week from Sunday (0, and 7 again); APScheduler 3 from Monday (0).
CRONTAB_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
APSCHEDULER_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (numbers 0-7, names, ranges, steps, lists) as APScheduler 3 names
    (`1-5` -> `mon-fri`, `0,6` -> `sat,sun`). Raises ValueError for anything else."""
    if field.strip() == "*":
        return "*"
    days: set[int] = set()  # crontab numbers, Sunday 0
    for item in field.lower().split(","):
        span, _, step_text = item.partition("/")
        if step_text and (not step_text.isdigit() or int(step_text) == 0):
            raise ValueError(f"day-of-week step {step_text!r} is not a positive number")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        else:
            low, _, high = span.partition("-")
            first = _weekday_number(low)
            last = _weekday_number(high) if high else (6 if step_text else first)
            if last == 0 and high:  # `5-0`, `fri-sun`: Sunday closes a range as 7
                last = 7
            if first > last:
                raise ValueError(f"day-of-week range {span!r} runs backwards")
        days.update(day % 7 for day in range(first, last + 1, step))
    indices = sorted((day - 1) % 7 for day in days)  # APScheduler numbers, Monday 0
    # Consecutive days share `index - position`: each such group is one range.
    runs = [
        [APSCHEDULER_WEEKDAYS[index] for _, index in run]
        for _, run in itertools.groupby(enumerate(indices), lambda pair: pair[1] - pair[0])
    ]
    return ",".join(run[0] if len(run) == 1 else f"{run[0]}-{run[-1]}" for run in runs)


def _weekday_number(text: str) -> int:
    if text.isdigit() and int(text) <= 7:
        return int(text)
    if text in CRONTAB_WEEKDAYS:
        return CRONTAB_WEEKDAYS.index(text)
    raise ValueError(f"day of week {text!r} is not 0-7 (0 and 7: Sunday) or a name such as mon")


def cron_problem(expression: str, exchange: str) -> tuple[Any, str | None]:
    """The trigger of `expression` and None, or None and why it is refused (for ConfigError)."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    from stockcli import clock

    zone = clock.exchange_timezone(exchange)
    fields = expression.split()
    try:
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
        minute, hour, day, month, weekday = fields
        day_of_week = crontab_weekdays(weekday)
        cron = functools.partial(CronTrigger, minute=minute, hour=hour, month=month, timezone=zone)
        if day.startswith("*") or weekday.startswith("*"):
            trigger: Any = cron(day=day, day_of_week=day_of_week)
        else:  # crontab: either field matching runs the job
            trigger = OrTrigger([cron(day=day, day_of_week="*"), cron(day="*", day_of_week=day_of_week)])
    except ValueError as exc:
        return None, f"{expression!r} is not a valid crontab expression: {exc}"
    if trigger.get_next_fire_time(None, datetime.now(zone)) is None:
        return None, f"{expression!r} never fires: no date matches it (such as 31 February)"
    return trigger, None
