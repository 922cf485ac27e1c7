"""Ctrl-C that is never lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be. When that
is inside C code that clears pending errors (extension modules being imported, callbacks whose errors
are ignored) or inside a library's catch-all, the interrupt vanishes and the run carries on as if
nothing had been asked: a rare, timing-dependent "Ctrl-C did nothing". So the CLI's handler also
remembers the request, and every run checks it at its checkpoints and before it records success:
an interrupt that was swallowed is raised again there, the ledger says `interrupted`, exit 130.

SIGTERM (what `kill`, systemd and container runtimes send) is handled the same way, with exit 143:
left to its default, it would end the process on the spot with the ledger row still `running` and
the MLflow run RUNNING.
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
    """Only remember a stop request inside this block; the next `raise_if_requested` raises it.

    For steps that must not be cut in two: the ledger row of a run is written and the code that
    closes it is entered as one step, or a signal in between (e.g. while PostgreSQL confirms the
    commit) would leave the row `running`. A second signal still stops the block at once (a hung
    connection stays stoppable), and a block that fails after a request ends as the interrupt."""
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
    """Use the remembering handler for SIGINT and SIGTERM, where Python's default one is in place
    (never over a handler someone else installed, e.g. the daemon's graceful stop) and in the main
    thread."""
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
