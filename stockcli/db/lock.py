"""One run at a time: a file lock next to a SQLite database, an advisory lock on PostgreSQL.

Both die with their holder (even by SIGKILL), and a refused run names the holder. A lock can be taken
from a live run (its file deleted, its PostgreSQL session terminated), so a run checks it still holds
it before every commit (`guard_commits`) and at checkpoints (`ensure_held`): LockLostError (exit 5).
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import event, text
from sqlalchemy.engine import Connection, Engine

from stockcli.errors import LockHeldError, LockLostError, StockCliError

# The two-key form of pg_advisory_lock: a class for stockcli ("stkc" in ASCII) and a hash of the
# schema, so that deployments in different schemas of one database do not block each other.
ADVISORY_LOCK_CLASS = 0x73746B63
LOCK_FILE = "stockcli.lock"  # in the data dir, for SQLite databases
_KEYS_SQL = ":cls, hashtext(current_database() || '.' || current_schema())"


@dataclass
class HeldLock:
    """A run lock being held: `still_held()` says whether it still is (a cheap check)."""

    how_lost: str  # what happened when it is lost, for the error
    hint: str
    still_held: Callable[[], bool]
    _checking: threading.Lock = field(default_factory=threading.Lock)

    def ensure_held(self) -> None:
        """Raise LockLostError when the lock was taken from this run."""
        with self._checking:
            if self.still_held():
                return
        raise LockLostError(
            f"This run lost the run lock: {self.how_lost}. It stopped before writing more, so that it never "
            "overlaps another run; what its finished steps saved is kept.",
            hint=self.hint,
        )


_guarded: contextvars.ContextVar[HeldLock | None] = contextvars.ContextVar("stockcli_run_lock", default=None)


@contextlib.contextmanager
def guard_commits(engine: Engine, held: HeldLock) -> Iterator[None]:
    """Check `held` before every commit on `engine` and at every `ensure_held()` of this context."""

    def before_commit(_connection: Connection) -> None:
        held.ensure_held()

    event.listen(engine, "commit", before_commit)
    token = _guarded.set(held)
    try:
        yield
    finally:
        _guarded.reset(token)
        event.remove(engine, "commit", before_commit)


def ensure_held() -> None:
    """Raise LockLostError when the run lock guarded here (`guard_commits`) was lost; else nothing."""
    held = _guarded.get()
    if held is not None:
        held.ensure_held()


def _refused(holder: dict[str, object] | None) -> LockHeldError:
    """The error for a run refused the lock, naming its holder when known."""
    who = "another stockcli run"
    if holder:
        who = (
            f"`stockcli {holder.get('command', '?')}` (pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
            f"since {holder.get('since', '?')})"
        )
    return LockHeldError(
        f"Another run holds the lock: {who}.",
        hint="Wait for it to finish (runs never overlap), then try again.",
    )


def _same_file(fd: int, path: Path) -> bool:
    """Whether `path` still names the file open as `fd` (not deleted, not replaced by another)."""
    try:
        held, named = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


@contextlib.contextmanager
def file_lock(path: Path, command: str, *, shared: bool = False) -> Iterator[HeldLock]:
    """Hold an exclusive (or `shared`) flock on `path`; raise LockHeldError naming the holder if taken.

    The lock is on the inode: the HeldLock says it is lost once `path` names another file.
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
            raise _refused(_file_holder(path)) from None
        os.ftruncate(fd, 0)
        since = datetime.now(tz=UTC).isoformat(timespec="seconds")
        holder = {"command": command, "pid": os.getpid(), "host": socket.gethostname(), "since": since}
        os.write(fd, json.dumps(holder).encode())
        os.fsync(fd)
        held = HeldLock(
            how_lost=f"its lock file {path} was deleted or replaced while it worked, so a second run could start",
            hint="Run the command again. Never delete stockcli.lock while a run works: it holds no data, and "
            "the lock is freed by itself when a run ends, even a killed one.",
            still_held=lambda: _same_file(fd, path),
        )
        try:
            yield held
        finally:
            if not shared:  # another shared holder may still be running: keep its description
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _file_holder(path: Path) -> dict[str, object] | None:
    """The description the holder of a file lock wrote, or None (retried for half a second: the
    holder writes it right after taking the lock)."""
    for attempt in range(10):
        with contextlib.suppress(OSError, ValueError):
            holder = json.loads(Path(path).read_text() or "null")
            if holder:
                return dict(holder)
        if attempt < 9:
            time.sleep(0.05)
    return None


def _advisory_lock_held(connection: Connection, backend_pid: int) -> bool:
    """Whether `connection` is still the session `backend_pid` and holds this schema's advisory lock."""
    try:
        held = connection.execute(
            text(
                "SELECT pg_backend_pid() = :pid AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
                " AND granted AND pid = pg_backend_pid() AND classid = :cls AND objsubid = 2 AND objid::bigint"
                " = (hashtext(current_database() || '.' || current_schema())::bigint & 4294967295))"
            ),
            {"pid": backend_pid, "cls": ADVISORY_LOCK_CLASS},
        ).scalar()
        connection.rollback()
    except Exception:  # the session is gone: terminated, server restarted, network cut
        with contextlib.suppress(Exception):
            connection.rollback()
        return False
    return bool(held)


@contextlib.contextmanager
def advisory_lock(engine: Engine, command: str, *, shared: bool = False) -> Iterator[HeldLock]:
    """Hold a session-level PostgreSQL advisory lock (exclusive or `shared`) on a dedicated connection."""
    suffix = "_shared" if shared else ""
    connection = engine.connect()
    try:
        acquired, backend_pid = connection.execute(
            text(f"SELECT pg_try_advisory_lock{suffix}({_KEYS_SQL}), pg_backend_pid()"),
            {"cls": ADVISORY_LOCK_CLASS},
        ).one()
        connection.commit()
        if not acquired:
            raise _refused(_running_holder(engine))
        held = HeldLock(
            how_lost="the database session holding its advisory lock ended (terminated, or the server "
            "restarted), so a second run could start",
            hint="Run the command again; the server's log says why the session ended.",
            still_held=lambda: _advisory_lock_held(connection, backend_pid),
        )
        try:
            yield held
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


def run_lock(
    engine: Engine, lock_path: Path, command: str, *, shared: bool = False
) -> contextlib.AbstractContextManager[HeldLock]:
    """The run lock for this database: advisory on PostgreSQL, a file lock otherwise; `shared` holders
    (the workers of one `tune` study) coexist with each other, never with an exclusive one."""
    if engine.dialect.name == "postgresql":
        return advisory_lock(engine, command, shared=shared)
    return file_lock(lock_path, command, shared=shared)
