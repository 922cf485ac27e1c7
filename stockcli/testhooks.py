"""Fault injection for the crash tests (`tests/faults/`), inert unless `STOCKCLI_KILL_AT` is set.
Read when a checkpoint is reached, never at import; not a setting."""

from __future__ import annotations

import os
import signal

KILL_AT = "STOCKCLI_KILL_AT"


def kill_if_requested(checkpoint: str) -> None:
    """SIGKILL this process when `STOCKCLI_KILL_AT` names `checkpoint`."""
    if os.environ.get(KILL_AT) == checkpoint:
        os.kill(os.getpid(), signal.SIGKILL)
