"""Ctrl-C that is never lost.

A KeyboardInterrupt raised inside C code that clears pending errors, or inside a library's
catch-all, vanishes. So the handler also remembers the request, and every run checks it at its
checkpoints and before it records success (ledger `interrupted`, exit 130). SIGTERM is handled the
same way (exit 143), not left to end the process with the ledger row still `running`.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_requested = threading.Event()
_deferred = threading.Event()
_signal_received = [int(signal.SIGINT)]  # the last stopping signal: SIGINT or SIGTERM


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    """The handler of SIGINT and SIGTERM: remember the request, then raise KeyboardInterrupt."""
    _signal_received[0] = signum
    if _deferred.is_set() and not _requested.is_set():
        _requested.set()  # the first one waits for the block's end; a second one stops it on the spot
        return
    _requested.set()
    raise KeyboardInterrupt


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Only remember a stop request inside this block (a step that must not be cut in two, such as
    writing a ledger row and entering the code that closes it); `raise_if_requested` raises it later.
    A second signal still stops the block at once, and a block that fails after a request ends as the
    interrupt."""
    _deferred.set()
    try:
        yield
    except Exception as exc:
        if _requested.is_set():
            raise KeyboardInterrupt from exc
        raise
    finally:
        _deferred.clear()


def install() -> None:
    """Use the remembering handler for SIGINT and SIGTERM in the main thread, where Python's default
    one is in place (never over another, e.g. the daemon's graceful stop)."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigint)


def exit_code() -> int:
    """What the shell expects of a process stopped by the signal received: 130 (SIGINT), 143 (SIGTERM)."""
    return 128 + _signal_received[0]


def describe() -> str:
    """The signal that stopped the run, as the ledger and the terminal say it."""
    return "SIGTERM" if _signal_received[0] == signal.SIGTERM else "SIGINT / Ctrl-C"


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt again if Ctrl-C was pressed and not handled yet."""
    if _requested.is_set():
        raise KeyboardInterrupt


def handled() -> None:
    """The interrupt was honoured (the CLI reported it): forget it."""
    _requested.clear()
    _signal_received[0] = int(signal.SIGINT)
