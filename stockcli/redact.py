"""Hiding secrets in URLs: the one rule every printed, logged, stored or raised text goes through.

A password reaches stockcli inside URLs (the database URL, the MLflow tracking URI, the Optuna
storage URL) and from there inside the messages of SQLAlchemy, MLflow, requests and Optuna. Every
place that shows a text to a person or stores it (the CLI's error line, `--verbose` tracebacks and
log records, the run ledger, the dashboard) passes it through `redact_url`.
"""

from __future__ import annotations

import re

MASK = "***"

# `scheme://user:password@host`: the password is everything between `://user:` and the LAST `@`
# before the next blank, so a raw `@`, `:` or `/` inside it (`p@ss:w0rd`, `pa/ss`, `p@ss/w0rd`) is
# hidden too. A URL with an `@` further on (rare) loses its host as well: hiding too much, never too little.
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)(?P<secret>\S*)(?P<tail>@)")
# `password=...`, `pwd=...` in query strings and libpq connection strings (quoted values too).
_PARAMETER = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd)=)(?:'[^']*'|\"[^\"]*\"|[^&\s'\",;)]*)", re.IGNORECASE
)


def redact_url(text: str) -> str:
    """`text` (a URL, or any message holding URLs) with every password replaced by `***`.

    Hides the password of `scheme://user:password@host` (also with an empty user name, and with `@`,
    `:`, `/` or other characters that defeat URL parsing inside it), and the values of `password=`,
    `passwd=` and `pwd=` parameters. Everything else, host and database included, is kept, so the
    text still says where.
    """
    if not text:
        return text
    hidden = _USERINFO.sub(lambda m: f"{m['head']}{MASK}{m['tail']}", text)
    return _PARAMETER.sub(lambda m: f"{m['key']}{MASK}", hidden)


def redact_traceback(exc: BaseException) -> str:
    """The full traceback of `exc` (as `traceback.print_exception` prints it), passwords hidden."""
    import traceback

    return redact_url("".join(traceback.format_exception(exc)))


_installed = False


def install_log_redaction() -> None:
    """Hide passwords in every log record this process creates, whoever logs it and wherever it goes.

    A filter on one handler would miss handlers that libraries add later (MLflow gives its logger its
    own handler when imported), so the record factory itself redacts: the message with its arguments
    merged, the formatted exception and the stack. Installing twice changes nothing.
    """
    global _installed
    import logging

    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        try:
            record.msg = redact_url(record.getMessage())
            record.args = None
            if record.exc_info and record.exc_info[1] is not None:
                record.exc_text = redact_traceback(record.exc_info[1]).rstrip("\n")
            if record.stack_info:
                record.stack_info = redact_url(record.stack_info)
        except Exception:  # a malformed record is the logging module's to report, as usual
            pass
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
