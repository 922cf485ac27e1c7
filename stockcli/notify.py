"""Being told: failures, retrains, promotions, closes outside their band and daily summaries, through Apprise.

Messages are built from the services' typed results and sent to every `[notify] urls` entry for the
chosen `[notify] events`. Delivery never breaks a run: what could not be delivered after `ATTEMPTS`
tries becomes a warning, logged and kept in the run's ledger row.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from stockcli.choices import NotifyEvent
from stockcli.errors import EXIT_MEANINGS
from stockcli.redact import redact_notify_url, redact_url

if TYPE_CHECKING:
    from stockcli.config import NotifySettings, Settings
    from stockcli.services.daily import DailyResult
    from stockcli.services.monitor import BandBreak
    from stockcli.services.retrain import RetrainResult
    from stockcli.services.runtime import RunHandle

log = logging.getLogger("stockcli.notify")

ATTEMPTS = 2
RETRY_PAUSE_S = 0.5
# A message lists at most this many tickers (a phone screen or two), then says how many more.
MAX_LINES = 25


@dataclass(frozen=True)
class Message:
    """One notification: its event (what `[notify] events` chooses from), a title and a short body."""

    event: NotifyEvent
    title: str
    body: str


@dataclass(frozen=True)
class Delivery:
    """What happened to one message at one URL (`url` as it may be shown)."""

    url: str
    delivered: bool
    attempts: int
    problem: str | None = None


def failure_message(command: str, exit_code: int, error: str | None, hint: str | None = None) -> Message:
    """A run that ended with a non-zero exit code: the command, the code, the error's first line, its hint."""
    lines = [f"Exit code {exit_code}: {EXIT_MEANINGS.get(exit_code, 'error')}."]
    first = (error or "").strip().splitlines()
    if first:
        lines.append(first[0])
    if hint:
        lines.append(hint.strip().splitlines()[0])
    body = redact_url("\n".join(lines))
    return Message("failure", f"stockcli {command} failed (exit {exit_code})", body)


def retrain_messages(result: RetrainResult, *, as_of: date) -> list[Message]:
    """A retrain that ran (why, the decision, the p-value), and a promotion when the alias moved."""
    if not result.ran:
        return []
    p_value = (result.promotion or {}).get("p_value")
    verdict = "promoted to Production" if result.promoted else "not promoted"
    lines = [
        f"As of {as_of.isoformat()}. Why: {result.reason}",
        f"Decision: {verdict}. {result.promotion_reason or ''}".strip(),
        f"p-value: {_p(p_value)}",
    ]
    messages = [
        Message("retrain", f"stockcli retrained: version {result.model_version} {verdict}", "\n".join(lines))
    ]
    if result.promoted and result.model_version is not None:
        messages.append(
            promotion_message(
                result.model_version, reason=result.promotion_reason, p_value=p_value, trigger=result.reason
            )
        )
    return messages


def promotion_message(
    version: str,
    *,
    reason: str | None,
    p_value: float | None,
    trigger: str | None = None,
    previous: str | None = None,
) -> Message:
    """Production moved to `version`: what triggered it, the decision's reason and its p-value."""
    lines = [f"Trigger: {trigger}"] if trigger else []
    if previous:
        lines.append(f"Replaces version {previous}.")
    lines += [f"Decision: {reason or 'promoted'}", f"p-value: {_p(p_value)}"]
    return Message("promotion", f"stockcli: version {version} is now Production", "\n".join(lines))


def band_break_message(breaks: Sequence[BandBreak]) -> Message | None:
    """One message listing every close outside its 95% interval (None when there is none)."""
    if not breaks:
        return None
    lines = [
        f"{item.ticker} {item.target_date.isoformat()}: close {item.actual_close:.2f} "
        f"{'above' if item.actual_close > item.upper_95 else 'below'} {item.lower_95:.2f}–{item.upper_95:.2f}"
        for item in breaks
    ]
    names = sorted({item.ticker for item in breaks})
    tickers = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    count = len(breaks)
    title = f"stockcli: {count} close{'' if count == 1 else 's'} outside the 95% band ({tickers})"
    return Message("band_break", title, _capped(lines))


def summary_message(result: DailyResult) -> Message:
    """The predictions of a daily run as plain text, one short line per ticker."""
    lines = []
    for p in result.predictions:
        band = "" if p.lower_95 is None or p.upper_95 is None else f" 95% {p.lower_95:.2f}–{p.upper_95:.2f}"
        up = "" if p.p_up is None else f" P(up) {p.p_up:.0%}"
        lines.append(
            f"{p.ticker} {p.base_close:.2f} → {p.predicted_close:.2f} ({p.change_pct:+.2f}%){band}{up}"
        )
    lines += [f"{f.ticker}: no prediction ({f.reason})" for f in result.failed]
    target = result.predictions[0].target_date.isoformat() if result.predictions else "-"
    title = f"stockcli daily {result.as_of.isoformat()}: {result.status}, for {target}"
    body = "\n".join(filter(None, [_capped(lines), f"Model version {result.model_version}."]))
    return Message("summary", title, body)


def daily_messages(result: DailyResult) -> list[Message]:
    """Everything a daily run may tell: band breaks, a retrain and promotion, the summary."""
    broken = band_break_message(result.monitor.band_breaks) if result.monitor is not None else None
    messages = [broken] if broken is not None else []
    if result.retrain is not None:
        messages += retrain_messages(result.retrain, as_of=result.as_of)
    messages.append(summary_message(result))
    return messages


def probe_message() -> Message:
    """What `stockcli notify --test` sends."""
    host = socket.gethostname()
    moment = datetime.now(tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Message(
        "summary", "stockcli test notification", f"Sent by `stockcli notify --test` on {host} at {moment}."
    )


def _capped(lines: Sequence[str]) -> str:
    if len(lines) <= MAX_LINES:
        return "\n".join(lines)
    return "\n".join([*lines[: MAX_LINES - 1], f"... and {len(lines) - MAX_LINES + 1} more."])


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def send(settings: NotifySettings, messages: Sequence[Message]) -> list[str]:
    """Deliver the messages of the chosen events to every URL; returns a warning line per failed delivery.
    Never raises; a URL that failed is not tried again for the other messages of the run."""
    warnings = []
    dead: set[str] = set()
    for message in [message for message in messages if message.event in settings.events]:
        for url in settings.urls:
            if url in dead:
                delivery = Delivery(
                    redact_notify_url(url), False, 0, "not tried: it failed earlier in this run"
                )
            else:
                delivery = _deliver_one(url, message, settings.timeout_s)
            if not delivery.delivered:
                dead.add(url)
                warning = (
                    f"Notification '{message.event}' to {delivery.url} not delivered "
                    f"({delivery.attempts} tries): {delivery.problem}"
                )
                log.warning("%s", warning)
                warnings.append(warning)
    return warnings


def deliver(settings: NotifySettings, message: Message) -> list[Delivery]:
    """Send `message` to each URL (whatever its event), `ATTEMPTS` tries each; one Delivery per URL."""
    return [_deliver_one(url, message, settings.timeout_s) for url in settings.urls]


def _deliver_one(url: str, message: Message, timeout_s: float) -> Delivery:
    import apprise

    shown = redact_notify_url(url)
    problem = "the service did not accept it"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            plugin = apprise.Apprise.instantiate(url.strip(), suppress_exceptions=True)
            if plugin is None:
                return Delivery(shown, False, attempt, "Apprise does not understand this URL")
            plugin.socket_connect_timeout = timeout_s
            plugin.socket_read_timeout = timeout_s
            notifier = apprise.Apprise()
            notifier.add(plugin)
            result = notifier.notify(body=message.body, title=message.title)
            if result:
                return Delivery(shown, True, attempt)
            problem = _last_problem(result) or problem
        except Exception as exc:  # a plugin's own bug must not end the run
            problem = f"{type(exc).__name__}: {exc}"
        if attempt < ATTEMPTS:
            time.sleep(RETRY_PAUSE_S)
    return Delivery(shown, False, ATTEMPTS, redact_url(problem))


def _last_problem(result: Any) -> str | None:
    """The last warning or error Apprise logged while sending (its result keeps them per attempt)."""
    found = None
    try:
        for service in result:
            for attempt in service:
                for entry in attempt:
                    if getattr(entry, "level", "") in ("WARNING", "ERROR", "CRITICAL"):
                        found = str(entry.message)
    except TypeError:  # an Apprise without per-attempt logs: only the boolean
        return None
    return found


def notify_run(run: RunHandle, messages: Sequence[Message]) -> None:
    """Send `messages` for a run in progress; failed deliveries go to its ledger row as warnings."""
    run.warnings.extend(send(run.settings.notify, messages))


def notify_failure(
    settings: Settings,
    *,
    command: str,
    exit_code: int,
    error: str | None,
    hint: str | None = None,
    since: datetime,
) -> None:
    """Tell of a run that ended with `exit_code`, after its ledger row was closed; never raises. This
    process's row started since `since` gets the delivery warnings and lends its error if none is given."""
    config = settings.notify
    if not config.urls or "failure" not in config.events:
        return
    from stockcli.db.engine import make_engine
    from stockcli.db.runs import add_warnings, newest_run_since
    from stockcli.storage import sqlite_file

    engine = None
    run_id = None
    try:
        path = sqlite_file(settings.database_url)
        if path is None or path.is_file():  # no SQLite file yet: no ledger row to record in
            engine = make_engine(settings.database_url, busy_timeout_s=settings.storage.sqlite_busy_timeout_s)
            found = newest_run_since(engine, pid=os.getpid(), since=since)
            if found is not None:
                run_id, ledger_error = found
                error = error or ledger_error
    except Exception as exc:  # the database itself may be why the run failed: tell it all the same
        log.debug("No ledger row for the failure notification: %s", redact_url(str(exc)))
    try:
        warnings = send(config, [failure_message(command, exit_code, error, hint)])
        if warnings and run_id is not None and engine is not None:
            add_warnings(engine, run_id, warnings)
    except Exception as exc:
        log.warning("Could not record the failure notification: %s", redact_url(str(exc)))
    finally:
        if engine is not None:
            engine.dispose()
