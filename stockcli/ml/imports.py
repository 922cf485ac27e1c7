"""Importing the heavy libraries (torch, mlflow) without paying the garbage collector twice."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_heavy_imports_done: set[str] = set()


@contextlib.contextmanager
def heavy_import(what: str) -> Iterator[None]:
    """The first time in this process: import with the cyclic garbage collector paused, then freeze.

    `import mlflow` (and opening its first tracking store) and `import torch` create some 10^5
    objects that live as long as the process. The collector's full passes over them, during the
    imports and after, cost more than a second of a short `stockcli daily` on 2 cores. So the
    collector pauses while they import, and `gc.freeze()` then moves everything alive into the
    permanent generation, which later collections skip. Garbage made afterwards is collected as
    usual. `what` names the import; later calls with the same name change nothing, so a long-lived
    process (daemon, backtest, tests) freezes once per library, never what its later runs leave.
    """
    if what in _heavy_imports_done:
        yield
        return
    import gc

    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        _heavy_imports_done.add(what)
        gc.freeze()
        if enabled:
            gc.enable()
