"""What the fault tests compare before and after a fault: per-table row counts and checksums, the bars
of one ticker, and a pickle that leaves a sentinel file behind if anything ever unpickles it."""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Engine

from stockcli.db.models import Base, RawStockData


def table_state(
    engine: Engine, columns: Mapping[str, Sequence[str]] | None = None
) -> dict[str, tuple[int, str]]:
    """(row count, SHA-256 of every row in primary-key order) for each of stockcli's tables.

    `columns` limits the digest to some columns per table (those an older schema revision has).
    """
    state: dict[str, tuple[int, str]] = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if columns is not None and table.name not in columns:
                continue
            digest = hashlib.sha256()
            count = 0
            chosen = [table.c[name] for name in columns[table.name]] if columns is not None else [table]
            for row in connection.execute(select(*chosen).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
                count += 1
            state[table.name] = (count, digest.hexdigest())
    return state


def bar_state(engine: Engine, ticker: str | None = None) -> tuple[int, str]:
    """(row count, checksum) of the stored bars, of one ticker or of all; fetched_at and source included."""
    query = select(RawStockData.__table__).order_by(RawStockData.ticker, RawStockData.date)
    if ticker is not None:
        query = query.where(RawStockData.ticker == ticker)
    digest = hashlib.sha256()
    count = 0
    with engine.connect() as connection:
        for row in connection.execute(query):
            digest.update(repr(tuple(row)).encode())
            count += 1
    return count, digest.hexdigest()


def stored_closes(engine: Engine, ticker: str | None = None) -> set[tuple[str, str, float]]:
    """The stored (ticker, ISO date, close) triples."""
    query = select(RawStockData.ticker, RawStockData.date, RawStockData.close)
    if ticker is not None:
        query = query.where(RawStockData.ticker == ticker)
    with engine.connect() as connection:
        return {(t, d.isoformat(), float(c)) for t, d, c in connection.execute(query)}


class _Planted:
    """Unpickling this calls `open(path, "w")`: the file appearing means something unpickled it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def crafted_pickle(sentinel: Path) -> bytes:
    """Pickle bytes whose loading would create `sentinel`."""
    return pickle.dumps(_Planted(sentinel), protocol=pickle.HIGHEST_PROTOCOL)


def crafted_payloads(sentinel: Path) -> dict[str, bytes]:
    """Every shape in which a pickle can hide where stockcli expects `.npy` bytes."""
    import io

    import numpy as np

    planted = np.empty(1, dtype=object)
    planted[0] = _Planted(sentinel)
    as_npy = io.BytesIO()
    np.save(as_npy, planted, allow_pickle=True)  # an object array: its data is a pickle
    as_npz = io.BytesIO()
    np.savez(as_npz, values=planted, allow_pickle=True)
    return {
        "bare pickle": crafted_pickle(sentinel),
        "object .npy": as_npy.getvalue(),
        "object array in .npz": as_npz.getvalue(),
    }
