"""Hiding secrets in URLs: the one rule every printed, logged, stored or raised text goes through.

Passwords arrive inside URLs (database, MLflow, Optuna) and the messages quoting them. Notification
URLs carry tokens no pattern recognizes (in the host, path or query): their pieces are registered
with `hide` when the settings are built, and `redact_notify_url` is how such a URL is shown.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable
from urllib.parse import unquote

MASK = "***"

# `scheme://user:password@host`: the password is everything between `://user:` and the LAST `@`
# before the next blank, so a raw `@`, `:` or `/` inside it (`p@ss:w0rd`, `pa/ss`, `p@ss/w0rd`) is
# hidden too. A URL with an `@` further on (rare) loses its host as well: hiding too much, never too little.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>\S*)(?P<tail>@)")
# `password=...`, `pwd=...` in query strings and libpq connection strings (quoted values too).
_PARAMETER = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd)=)(?:'[^']*'|\"[^\"]*\"|[^&\s'\",;)]*)", re.IGNORECASE
)


# Registered secrets (see `hide`), longest first so that a whole URL is masked before its pieces.
_hidden: tuple[str, ...] = ()
# Shorter pieces of a notification URL (a port, "json") are not worth masking in every text.
MIN_HIDDEN_LENGTH = 8
# A password is masked wherever it appears from this length on (shorter ones would mask parts of words;
# `scheme://user:password@` itself is always masked by pattern).
MIN_PASSWORD_LENGTH = 4
# Query keys of notification URLs whose values say where or how, never who: shown as they are.
PLAIN_QUERY_KEYS = frozenset(
    {"smtp", "port", "mode", "format", "method", "cto", "rto", "verify", "secure", "priority", "name"}
)
_HOST = re.compile(
    r"^(?:localhost|\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})(?::\d{1,5})?$"
)
_SCHEME = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://(?P<rest>.*)$", re.DOTALL)


def hide(secrets: Iterable[str]) -> None:
    """Hide these exact strings (and their percent-decoded forms) in every text `redact_url` sees."""
    global _hidden
    found = set(_hidden)
    for secret in secrets:
        for form in (secret, unquote(secret)):
            password = form.startswith(":")
            form = form.removeprefix(":")
            if len(form) >= (MIN_PASSWORD_LENGTH if password else MIN_HIDDEN_LENGTH):
                found.add(form)
    _hidden = tuple(sorted(found, key=len, reverse=True))


def _notify_parts(url: str) -> tuple[str, str | None, str, str, list[tuple[str, str]]] | None:
    """(scheme, userinfo or None, host[:port], path, query pairs) of `scheme://...`, or None."""
    match = _SCHEME.match(url.strip())
    if match is None:
        return None
    rest, _, query = match["rest"].partition("?")
    authority, _, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    pairs = [(key, value) for key, _, value in (part.partition("=") for part in query.split("&") if part)]
    return match["scheme"], (userinfo if at else None), host, path, pairs


def redact_notify_url(url: str) -> str:
    """A notification URL as it may be shown: `json://***@127.0.0.1:8080/***?format=json` (a host that
    is a token, user, password, path and the values of other than PLAIN_QUERY_KEYS masked)."""
    parts = _notify_parts(url)
    if parts is None:
        return MASK
    scheme, userinfo, host, path, pairs = parts
    shown = f"{scheme}://" + (f"{MASK}@" if userinfo is not None else "")
    shown += host if _HOST.match(host) else MASK
    if path.strip("/"):
        shown += f"/{MASK}"
    if pairs:
        shown += "?" + "&".join(
            f"{key}={value if key.lower() in PLAIN_QUERY_KEYS else MASK}" for key, value in pairs
        )
    return shown


def notify_url_secrets(url: str) -> list[str]:
    """The pieces of a notification URL that `redact_notify_url` masks, the whole URL first (a password
    marked with a leading `:` so that `hide` keeps it from MIN_PASSWORD_LENGTH on)."""
    parts = _notify_parts(url)
    if parts is None:
        return [url]
    _scheme, userinfo, host, path, pairs = parts
    secrets = [url, url.strip()]
    if userinfo is not None:
        user, colon, password = userinfo.partition(":")
        secrets += [userinfo, user] + ([f":{password}"] if colon else [])
    if not _HOST.match(host):  # a token where the host goes (Telegram's `bot_id:secret`)
        secrets += [host, *host.split(":")]
    secrets += [segment for segment in path.split("/") if segment]
    secrets += [value for key, value in pairs if key.lower() not in PLAIN_QUERY_KEYS]
    return secrets


def redact_url(text: str) -> str:
    """`text` (a URL, or any message holding URLs) with every password, `password=`-like parameter
    and secret registered with `hide` replaced by `***`; host and database are kept."""
    if not text:
        return text
    for secret in _hidden:
        text = text.replace(secret, MASK)
    hidden = _USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return _PARAMETER.sub(lambda m: f"{m['key']}{MASK}", hidden)


def redact_traceback(exc: BaseException) -> str:
    """The full traceback of `exc` (as `traceback.print_exception` prints it), passwords hidden."""
    import traceback

    return redact_url("".join(traceback.format_exception(exc)))


@functools.cache
def install_log_redaction() -> None:
    """Hide passwords in every log record this process creates (idempotent).

    The record factory redacts, not a handler's filter: libraries add handlers of their own later.
    """
    import logging

    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        with contextlib.suppress(Exception):  # a malformed record is the logging module's to report
            record.msg = redact_url(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = redact_traceback(record.exc_info[1]).rstrip("\n")
            if record.stack_info:
                record.stack_info = redact_url(record.stack_info)
        return record

    logging.setLogRecordFactory(factory)
