"""`stockcli daemon`: APScheduler 3 runs the daily job on a cron schedule in the exchange's time zone.

In-memory job store, coalescing, one instance at a time and a generous misfire grace. On start it
catches up a missed session once, judged from the ledger. It shares the run lock with cron-started
runs: a job that finds the lock taken is skipped (the other run does the work). SIGTERM and SIGINT
stop it cleanly after the job in progress.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stockcli import clock
from stockcli.config import Settings
from stockcli.db.engine import open_database
from stockcli.db.models import PipelineRun
from stockcli.errors import ConfigError, LockHeldError, StockCliError

log = logging.getLogger("stockcli.daemon")


@dataclass(frozen=True)
class JobOutcome:
    as_of: date
    status: str  # ok, partial, stale, skipped (lock held), failed
    message: str


def last_daily_as_of(engine: Engine) -> date | None:
    """The as-of date of the newest daily run that got its work done (ok or partial)."""
    query = (
        select(PipelineRun.as_of)
        .where(PipelineRun.command == "daily", PipelineRun.status.in_(("ok", "partial")))
        .order_by(PipelineRun.as_of.desc())
        .limit(1)
    )
    with engine.connect() as connection:
        return connection.execute(query).scalar()


def missed_session(settings: Settings, engine: Engine, *, now: datetime) -> date | None:
    """The newest closed session not yet covered by a daily run, or None when nothing was missed."""
    calendar = clock.trading_calendar(settings.data.exchange)
    today = clock.today(settings.data.exchange, now=now)
    newest_closed = calendar.last_closed_session(today, now=now)
    last = last_daily_as_of(engine)
    if last is None or calendar.session_on_or_before(last) < newest_closed:
        return newest_closed
    return None


def run_daily_job(
    settings: Settings, *, now: Callable[[], datetime] | None = None, as_of: date | None = None
) -> JobOutcome:
    """One scheduled daily run; never raises (the daemon must keep going)."""
    from stockcli.services.daily import daily
    from stockcli.services.runtime import pipeline_run

    moment = now() if now else datetime.now(tz=ZoneInfo("UTC"))
    as_of = as_of or clock.today(settings.data.exchange, now=moment)
    try:
        with pipeline_run(settings, command="daily", as_of=as_of) as run:
            result = daily(settings=settings, engine=run.engine, as_of=as_of, run=run, now=moment)
        message = f"daily as of {as_of}: {result.status}, model {result.model_version}, {len(result.predictions)} predictions"
        log.info(message)
        return JobOutcome(as_of, result.status, message)
    except LockHeldError as exc:
        log.warning("daily as of %s skipped: %s", as_of, exc.message)
        return JobOutcome(as_of, "skipped", exc.message)
    except StockCliError as exc:
        log.error("daily as of %s failed: %s", as_of, exc)
        return JobOutcome(as_of, "failed", str(exc))
    except Exception as exc:
        log.exception("daily as of %s crashed", as_of)
        return JobOutcome(as_of, "failed", f"{type(exc).__name__}: {exc}")


def catch_up(settings: Settings, *, now: Callable[[], datetime] | None = None) -> JobOutcome | None:
    """Run the daily job once if the ledger shows a missed session; None when up to date."""
    moment = now() if now else datetime.now(tz=ZoneInfo("UTC"))
    engine = open_database(settings)
    if missed_session(settings, engine, now=moment) is None:
        return None
    log.info("catching up a missed session")
    return run_daily_job(settings, now=now)


def build_scheduler(settings: Settings, job: Callable[[], Any], *, blocking: bool = True) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.schedulers.blocking import BlockingScheduler
    from apscheduler.triggers.cron import CronTrigger

    tz = clock.exchange_timezone(settings.data.exchange)
    try:
        trigger = CronTrigger.from_crontab(settings.daemon.cron, timezone=tz)
    except ValueError as exc:
        raise ConfigError(
            f"[daemon] cron {settings.daemon.cron!r} is not a valid crontab expression: {exc}.",
            hint='Five fields: minute hour day month day-of-week, e.g. "30 17 * * mon-fri".',
        ) from None
    scheduler_cls = BlockingScheduler if blocking else BackgroundScheduler
    scheduler = scheduler_cls(
        timezone=tz,
        jobstores={"default": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": settings.daemon.misfire_grace_s,
        },
    )
    scheduler.add_job(job, trigger, id="daily", name="stockcli daily", replace_existing=True)
    return scheduler


def run_daemon(settings: Settings, *, on_start: Callable[[Any], None] | None = None) -> None:
    """Catch up once, then run the daily job on schedule until SIGTERM or SIGINT."""
    outcome = catch_up(settings)
    if outcome is not None:
        log.info("catch-up: %s", outcome.message)
    scheduler = build_scheduler(settings, lambda: run_daily_job(settings))

    def stop(signum: int, _frame: Any) -> None:
        log.info("received %s, stopping after the job in progress", signal.Signals(signum).name)
        scheduler.shutdown(wait=False)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if on_start is not None:
        on_start(scheduler)
    scheduler.start()
