"""Importing the heavy libraries (torch, mlflow) without paying the garbage collector twice."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

_heavy_imports_done: set[str] = set()


@contextlib.contextmanager
def heavy_import(what: str) -> Iterator[None]:
    """The first time in this process: import with the cyclic garbage collector paused, then freeze.

    `import mlflow` (and its first store) and `import torch` create ~10^5 objects that live as long as the
    process; the collector's passes over them cost more than a second of a short `stockcli daily` on 2 cores.
    `gc.freeze()` moves them into the permanent generation, once per `what`, so a long-lived process never
    freezes what its later runs leave.
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
