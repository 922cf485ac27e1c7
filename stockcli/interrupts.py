"""Ctrl-C that is never lost.

Python turns SIGINT into a KeyboardInterrupt raised wherever the main thread happens to be. When that
is inside C code that clears pending errors (extension modules being imported, callbacks whose errors
are ignored) or inside a library's catch-all, the interrupt vanishes and the run carries on as if
nothing had been asked: a rare, timing-dependent "Ctrl-C did nothing". So the CLI's handler also
remembers the request, and every run checks it at its checkpoints and before it records success:
an interrupt that was swallowed is raised again there, the ledger says `interrupted`, exit 130.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

_requested = threading.Event()


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Use the remembering handler for SIGINT, when Python's default one is in place (never over a
    handler someone else installed, e.g. the daemon's graceful stop) and in the main thread."""
    if threading.current_thread() is threading.main_thread() and (
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    ):
        signal.signal(signal.SIGINT, _on_sigint)


def raise_if_requested() -> None:
    """Raise KeyboardInterrupt again if Ctrl-C was pressed and not handled yet."""
    if _requested.is_set():
        raise KeyboardInterrupt


def handled() -> None:
    """The interrupt was honoured (the CLI reported it): forget it."""
    _requested.clear()
