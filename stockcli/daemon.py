"""`stockcli daemon`: APScheduler 3 runs the daily job on a cron schedule in the exchange's time zone.

On start it catches up a missed session once, judged from the ledger. A job that finds the run lock
taken is skipped (the other run does the work). SIGTERM and SIGINT stop it after the job in progress.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine

from stockcli import clock
from stockcli.config import Settings
from stockcli.db.engine import open_database
from stockcli.errors import LockHeldError, StockCliError

log = logging.getLogger("stockcli.daemon")


@dataclass(frozen=True)
class JobOutcome:
    as_of: date
    status: str  # ok, partial, stale, skipped (lock held), failed
    message: str


def missed_session(settings: Settings, engine: Engine, *, now: datetime) -> date | None:
    """The newest closed session not yet covered by a daily run, or None when nothing was missed.

    A run covers the `base_date` in its ledger details (a run before the close covers the session
    before its as-of); older rows without it cover the session on or before their as-of date.
    """
    from stockcli.db.runs import recent_daily_runs

    calendar = clock.trading_calendar(settings.data.exchange)
    newest_closed = calendar.last_closed_session(clock.today(settings.data.exchange, now=now), now=now)
    covered = [
        details.base_date or calendar.session_on_or_before(as_of)
        for as_of, details in recent_daily_runs(engine, limit=20)
    ]
    return None if covered and max(covered) >= newest_closed else newest_closed


def run_daily_job(
    settings: Settings, *, now: Callable[[], datetime] | None = None, as_of: date | None = None
) -> JobOutcome:
    """One scheduled daily run; never raises (the daemon must keep going)."""
    from stockcli import notify
    from stockcli.services.daily import daily, exit_code_for
    from stockcli.services.runtime import pipeline_run

    moment = now() if now else datetime.now(tz=ZoneInfo("UTC"))
    started = datetime.now(tz=ZoneInfo("UTC"))
    as_of = as_of or clock.today(settings.data.exchange, now=moment)
    try:
        with pipeline_run(settings, command="daily", as_of=as_of) as run:
            result = daily(settings=settings, engine=run.engine, as_of=as_of, run=run, now=moment)
            messages = notify.daily_messages(result)
            code = exit_code_for(result)
            if code:
                failed = "; ".join(f"{f.ticker}: {f.reason}" for f in result.failed)
                messages.insert(
                    0, notify.failure_message("daily (daemon)", code, run.error or failed or None)
                )
            notify.notify_run(run, messages)
        message = f"daily as of {as_of}: {result.status}, model {result.model_version}, {len(result.predictions)} predictions"
        log.info(message)
        return JobOutcome(as_of, result.status, message)
    except LockHeldError as exc:
        log.warning("daily as of %s skipped: %s", as_of, exc.message)
        return JobOutcome(as_of, "skipped", exc.message)
    except Exception as exc:
        if isinstance(exc, StockCliError):
            log.error("daily as of %s failed: %s", as_of, exc)
            code, error, hint, outcome = exc.exit_code, exc.message, exc.hint, str(exc)
        else:
            log.exception("daily as of %s crashed", as_of)
            code, error, hint = 1, f"{type(exc).__name__}: {exc}", None
            outcome = error
        notify.notify_failure(
            settings, command="daily (daemon)", exit_code=code, error=error, hint=hint, since=started
        )
        return JobOutcome(as_of, "failed", outcome)


def catch_up(settings: Settings, *, now: Callable[[], datetime] | None = None) -> JobOutcome | None:
    """Run the daily job once if the ledger shows a missed session; None when up to date."""
    moment = now() if now else datetime.now(tz=ZoneInfo("UTC"))
    engine = open_database(settings)
    try:
        missed = missed_session(settings, engine, now=moment)
    finally:
        engine.dispose()
    if missed is None:
        return None
    log.info("catching up the missed session %s", missed)
    return run_daily_job(settings, now=lambda: moment)


def cron_trigger(settings: Settings) -> Any:
    """The trigger of `[daemon] cron` in the exchange's time zone (ConfigError if invalid or never firing)."""
    from stockcli.cron import cron_trigger as build_cron_trigger

    return build_cron_trigger(settings.daemon.cron, settings.data.exchange)


def build_scheduler(settings: Settings, job: Callable[[], Any]) -> Any:
    """A scheduler running `job` on `[daemon] cron`: in-memory store, one worker, one instance at a time."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    trigger = cron_trigger(settings)
    scheduler = BackgroundScheduler(
        timezone=clock.exchange_timezone(settings.data.exchange),
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.daemon.misfire_grace_s,
        },
    )
    scheduler.add_job(job, trigger, id="daily", name="stockcli daily", replace_existing=True)
    return scheduler


def next_runs(settings: Settings, *, count: int = 5, now: datetime | None = None) -> list[datetime]:
    """The next `count` times `[daemon] cron` fires, in the exchange's time zone (`--show-schedule`)."""
    trigger = cron_trigger(settings)
    zone = clock.exchange_timezone(settings.data.exchange)
    moment = (now or datetime.now(tz=zone)).astimezone(zone)
    runs: list[datetime] = []
    previous: datetime | None = None
    while len(runs) < count:
        fire = trigger.get_next_fire_time(previous, moment)
        if fire is None:
            break
        runs.append(fire.astimezone(zone))
        previous = fire
        moment = fire + timedelta(microseconds=1)
    return runs


def next_run_time(scheduler: Any, *, now: datetime | None = None) -> datetime | None:
    """When the daily job fires next; from its trigger before `start()` fills in `next_run_time`."""
    job = scheduler.get_job("daily")
    if job is None:
        return None
    moment = now or datetime.now(tz=scheduler.timezone)
    planned = getattr(job, "next_run_time", None)
    return planned or job.trigger.get_next_fire_time(None, moment)  # type: ignore[no-any-return]


def run_daemon(
    settings: Settings,
    *,
    on_start: Callable[[Any], None] | None = None,
    stop_event: threading.Event | None = None,
) -> None:
    """Catch up once, then run the daily job on schedule until SIGTERM or SIGINT (or `stop_event`);
    a signal during a job stops the daemon once that job has finished."""
    stopping = stop_event or threading.Event()
    cron_trigger(settings)  # a bad cron fails now, not after a catch-up run

    def stop(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping after the job in progress", signal.Signals(signum).name)
        stopping.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
    outcome = catch_up(settings)
    if outcome is not None:
        log.info("catch-up: %s", outcome.message)
    if stopping.is_set():
        return
    scheduler = build_scheduler(settings, lambda: run_daily_job(settings))
    scheduler.start()
    try:
        if on_start is not None:
            on_start(scheduler)
        while not stopping.wait(1.0):
            pass
    finally:
        scheduler.shutdown(wait=True)  # lets a job in progress finish
