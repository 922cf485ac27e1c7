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
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stockcli.errors import LockHeldError, StockCliError

# The two-key form of pg_advisory_lock: a class for stockcli ("stkc" in ASCII) and a hash of the
# schema, so that deployments in different schemas of one database do not block each other.
ADVISORY_LOCK_CLASS = 0x73746B63
_KEYS_SQL = ":cls, hashtext(current_database() || '.' || current_schema())"


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
def file_lock(path: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """Hold an exclusive (or `shared`) flock on `path`; raise LockHeldError naming the holder if taken.

    Shared holders (parallel `tune` workers) coexist with each other, never with an exclusive one.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StockCliError(
            f"Cannot write the run lock {path}: {exc.strerror or exc}.",
            hint=f"Commands that write need a writable data dir ({path.parent}); `report` and `serve` only "
            "read. Check its permissions, or set [storage] data_dir (or STOCKCLI_DATA_DIR).",
        ) from None
    try:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeldError(
                f"Another run holds the lock: {_describe(_file_holder(path))}.",
                hint="Wait for it to finish (runs never overlap), then try again.",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(_holder_info(command)).encode())
        os.fsync(fd)
        try:
            yield
        finally:
            if not shared:  # another shared holder may still be running: keep its description
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _file_holder(path: Path) -> dict[str, object] | None:
    """The description the holder of a file lock wrote, or None.

    A holder writes it right after taking the lock, so a refused run that looks in between sees an
    empty file: it looks again for up to half a second before settling for no description.
    """
    for attempt in range(10):
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads(Path(path).read_text() or "null")
            if holder:
                return dict(holder)
        if attempt < 9:
            time.sleep(0.05)
    return None


@contextlib.contextmanager
def advisory_lock(engine: Engine, command: str, *, shared: bool = False) -> Iterator[None]:
    """Hold a session-level PostgreSQL advisory lock (exclusive or `shared`) on a dedicated connection."""
    suffix = "_shared" if shared else ""
    connection = engine.connect()
    try:
        acquired = connection.execute(
            text(f"SELECT pg_try_advisory_lock{suffix}({_KEYS_SQL})"), {"cls": ADVISORY_LOCK_CLASS}
        ).scalar()
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
                connection.execute(
                    text(f"SELECT pg_advisory_unlock{suffix}({_KEYS_SQL})"), {"cls": ADVISORY_LOCK_CLASS}
                )
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
def run_lock(engine: Engine, lock_path: Path, command: str, *, shared: bool = False) -> Iterator[None]:
    """The run lock for this database: advisory on PostgreSQL, a file lock otherwise.

    `shared` holders coexist with each other (the workers of one `tune` study) but not with an
    exclusive holder (every other command).
    """
    if engine.dialect.name == "postgresql":
        with advisory_lock(engine, command, shared=shared):
            yield
    else:
        with file_lock(lock_path, command, shared=shared):
            yield
