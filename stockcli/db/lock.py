"""One run at a time: a file lock next to a SQLite database, an advisory lock on PostgreSQL.

Both are released by the operating system or the server when the holder dies (even by SIGKILL), so
a crashed run never leaves a stale lock behind. A refused run names the holder.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stockcli.errors import LockHeldError

# pg_advisory_lock takes a bigint; this one is "stockcli" in ASCII, truncated.
ADVISORY_LOCK_KEY = 0x73746F636B636C69


def _holder_info(command: str) -> dict[str, object]:
    return {
        "command": command,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(tz=UTC).isoformat(timespec="seconds"),
    }


def _describe(holder: dict[str, object] | None) -> str:
    if not holder:
        return "another stockcli run"
    return (
        f"`stockcli {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"since {holder.get('since', '?')})"
    )


@contextlib.contextmanager
def file_lock(path: Path, command: str) -> Iterator[None]:
    """Hold an exclusive flock on `path`; raise LockHeldError naming the holder if taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = None
            with contextlib.suppress(OSError, ValueError):
                holder = json.loads(Path(path).read_text() or "null")
            raise LockHeldError(
                f"Another run holds the lock: {_describe(holder)}.",
                hint="Wait for it to finish (runs never overlap), then try again.",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder_info(command)).encode())
        os.fsync(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def advisory_lock(engine: Engine, command: str) -> Iterator[None]:
    """Hold a session-level PostgreSQL advisory lock on a dedicated connection."""
    connection = engine.connect()
    try:
        acquired = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY}).scalar()
        connection.commit()
        if not acquired:
            holder = _running_holder(engine)
            raise LockHeldError(
                f"Another run holds the lock: {_describe(holder)}.",
                hint="Wait for it to finish (runs never overlap), then try again.",
            )
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                connection.commit()
    finally:
        connection.close()


def _running_holder(engine: Engine) -> dict[str, object] | None:
    """The newest ledger row still marked running: the most likely holder."""
    with contextlib.suppress(Exception), engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT command, pid, host, started_at FROM pipeline_runs "
                "WHERE status = 'running' ORDER BY id DESC LIMIT 1"
            )
        ).first()
        if row is not None:
            return {"command": row.command, "pid": row.pid, "host": row.host, "since": str(row.started_at)}
    return None


@contextlib.contextmanager
def run_lock(engine: Engine, lock_path: Path, command: str) -> Iterator[None]:
    """The run lock for this database: advisory on PostgreSQL, a file lock otherwise."""
    if engine.dialect.name == "postgresql":
        with advisory_lock(engine, command):
            yield
    else:
        with file_lock(lock_path, command):
            yield
