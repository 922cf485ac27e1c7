"""Where stockcli keeps its state (database, MLflow store, Optuna storage), and what to say when that fails.

Folders are created only under the data dir (a typo in `sqlite:////nonexistent/dir/x.db` must not
create `/nonexistent`). Errors name the file or database and what to do, never the driver's text alone.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from stockcli.errors import EXIT_USAGE, ConfigError, StockCliError
from stockcli.redact import redact_url

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

# Seconds a PostgreSQL connection attempt may take before a store counts as unreachable.
CONNECT_TIMEOUT_S = 5

_DAMAGED = ("malformed", "not a database", "file is encrypted", "database corrupt")


# Said whenever a database URL cannot be parsed: the usual cause is a password with a raw @, : or /.
URL_HINT = (
    "A password holding @, :, / or % must be percent-encoded (@ as %40, : as %3A, / as %2F, % as %25); "
    "e.g. sqlite:///path/to/file.db or postgresql+psycopg://user@host:5432/stockcli."
)


def _parse(url: str) -> URL | None:
    """SQLAlchemy's parse of `url`, or None when it fails or is ambiguous. The one URL parser, so no
    caller quotes a piece of a password in an error of its own."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number (`p@ss:w0rd@host`)
        return None
    if parsed.get_backend_name() != "sqlite" and url.split("?", 1)[0].count("@") > 1:
        # `user:p@ss/w0rd@host/db` parses as host `ss` and database `w0rd@host/db`: a raw @ in the password.
        return None
    return parsed


def is_memory_sqlite(parsed: URL) -> bool:
    """Whether a parsed SQLite URL is an in-memory database (`sqlite://`, `:memory:`, `mode=memory`...)."""
    if parsed.get_backend_name() != "sqlite":
        return False
    database = parsed.database or ""
    mode = parsed.query.get("mode")
    return (
        database in ("", ":memory:")
        or (database.startswith("file:") and ":memory:" in database)
        or "mode=memory" in database
        or "memory" in (mode if isinstance(mode, tuple) else (mode,))
    )


def parse_database_url(url: str, *, what: str, key: str) -> URL:
    """The parsed URL; ConfigError (exit 2) naming `what` and `key`, never quoting the password,
    when it cannot be parsed or names an in-memory SQLite database (nothing would be saved)."""
    parsed = _parse(url)
    if parsed is None:
        raise ConfigError(f"Invalid {what} URL {redact_url(url)!r} in {key}.", hint=URL_HINT)
    if parsed.drivername in ("postgresql", "postgresql+psycopg"):
        from stockcli import extras

        extras.require("postgres", f"The PostgreSQL {what} in {key}")
    if is_memory_sqlite(parsed):
        raise ConfigError(
            f"The {what} URL {redact_url(url)!r} in {key} is an in-memory SQLite database: "
            "nothing would be saved.",
            hint=f"Point {key} at a file (e.g. sqlite:///path/to/file.db), or unset it for the default "
            "file in the data dir.",
        )
    return parsed


def sqlite_file(url: str) -> Path | None:
    """The file behind a SQLite URL; None for other databases, in-memory SQLite and unparsable URLs."""
    parsed = _parse(url)
    if parsed is None or parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def check_data_dir(data_dir: Path) -> None:
    """Raise ConfigError (exit 2) when the data dir, or a folder above it, is not a folder."""
    for folder in (data_dir, *data_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                where = "" if folder == data_dir else f" ({folder}, above it, is a file)"
                raise ConfigError(
                    f"The data dir {data_dir} is not a folder{where}.",
                    hint="Set [storage] data_dir (or STOCKCLI_DATA_DIR) to a folder; it is created if missing.",
                )
            return


def prepare_folder(path: Path, *, data_dir: Path | None, what: str, key: str) -> None:
    """Make sure the folder of the file `path` exists: created under `data_dir` (or when there is none),
    elsewhere it must exist already: raises ConfigError (exit 2) naming `what` and the setting `key`."""
    folder = path.expanduser().parent
    if data_dir is not None:
        check_data_dir(data_dir)
    if folder.is_dir():
        return
    blocker = next((f for f in (folder, *folder.parents) if f.exists() and not f.is_dir()), None)
    if blocker is not None:
        raise ConfigError(
            f"Cannot create the {what} {path}: {blocker} is a file, not a folder.",
            hint=f"Move that file, or set {key} to a file in a folder.",
        )
    if data_dir is not None and not is_within(folder, data_dir):
        raise ConfigError(
            f"The folder of the {what} {path} does not exist: {folder}. stockcli creates folders only "
            f"under the data dir ({data_dir}).",
            hint=f"Create {folder} first, or set {key} to a file in an existing folder.",
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create the folder {folder} for the {what}: {exc.strerror or exc}.",
            hint=f"Check the permissions, or set {key} (or [storage] data_dir) to a writable place.",
        ) from None


def write_atomically(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file renamed over it: a reader (or a crash) sees the
    old file or the new one, and a symlink at `path` is replaced, never written through. Raises OSError."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # as a plain open() would have made it, not mkstemp's 0600
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(exc, OSError) and exc.filename is None:  # a write or fsync: say which file
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def is_within(path: Path, folder: Path) -> bool:
    """Whether `path` (symlinks resolved) is `folder` or lies under it."""
    resolved, root = path.expanduser().resolve(), folder.expanduser().resolve()
    return resolved == root or root in resolved.parents


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message (SQLAlchemy's wrapper and its link left out), redacted."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return redact_url(text.splitlines()[0] if text else type(exc).__name__)


def describe_database_error(
    what: str, url: str, exc: BaseException, *, key: str, damaged: bool = False, reading: bool = False
) -> StockCliError:
    """One StockCliError for a failure to open, read or write the database at `url`.

    `what` names the store ("database", "Optuna storage"...), `key` its setting, `reading` a caller that
    only reads; `damaged`: a check already found the SQLite file damaged.
    """
    line = first_line(exc)
    lowered = line.lower()
    path = sqlite_file(url)
    full = disk_full_error(what, url, exc)
    if full is not None:
        return full
    if path is not None:
        if damaged or any(marker in lowered for marker in _DAMAGED):
            return StockCliError(
                f"The {what} file {path} is damaged ({line}); nothing was changed.",
                hint="Restore it from a backup, or move it away to start a new one "
                f"(stockcli creates it again), or point {key} at a healthy file.",
            )
        if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            verb, able = (
                ("read", "readable") if reading and "unable to open" in lowered else ("write", "writable")
            )
            return StockCliError(
                f"Cannot {verb} the {what} file {path} ({line}).",
                hint=f"Check that it and its folder are {able} by this user, or set {key} to another place.",
            )
        return StockCliError(
            f"Cannot use the {what} file {path}: {line}",
            hint=f"Check the file, or set {key} to another place.",
        )
    parsed = _parse(url)
    where = redact_url(url)
    role = re.search(r'role "([^"]*)" does not exist', line)
    if role is not None:
        return StockCliError(
            f"The {what} server at {where} has no role (user) {role.group(1)!r}: the role does not exist.",
            hint=f"Create it (e.g. `createuser {role.group(1)}`), or fix the user name in {key}.",
            exit_code=EXIT_USAGE,
        )
    if "does not exist" in lowered and parsed is not None and parsed.database:
        host = parsed.host or "localhost"
        return StockCliError(
            f"The {what} database {parsed.database!r} does not exist on {host} ({where}).",
            hint=f"Create it (e.g. `createdb {parsed.database}`), or fix {key}.",
            exit_code=EXIT_USAGE,
        )
    if "password authentication failed" in lowered or "authentication" in lowered:
        return StockCliError(
            f"The {what} at {where} refused the user name or password ({line}).",
            hint=f"Fix the credentials in {key}.",
            exit_code=EXIT_USAGE,
        )
    return StockCliError(
        f"Cannot reach the {what} at {where}: {line}",
        hint=f"Check {key} and that the database server is up and reachable.",
    )


# Errors of a full disk: SQLite's SQLITE_FULL, PostgreSQL's "could not extend file" (SQLSTATE 53100),
# and the operating system's ENOSPC / EDQUOT.
_DISK_FULL = ("database or disk is full", "no space left on device", "disk quota exceeded")


def disk_full_error(
    what: str, url: str, exc: BaseException, *, folder: Path | None = None
) -> StockCliError | None:
    """The error naming the file (or database) that a full disk stopped (`folder`: where an OS error
    naming no file was), or None for other errors."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = exc.filename or (f"a file in {folder}" if folder is not None else f"a file of the {what}")
        return StockCliError(
            f"No space left on the disk to write {where}; the step that wrote it was not saved.",
            hint="Free space on that disk (or raise the quota), then run the command again.",
        )
    orig = getattr(exc, "orig", None)
    if orig is None and not type(exc).__module__.startswith(("sqlite3", "psycopg")):
        return None  # only a database driver's error (or the system's, above) says the disk is full
    line = first_line(exc)
    if not (
        any(marker in line.lower() for marker in _DISK_FULL) or getattr(orig, "sqlstate", None) == "53100"
    ):
        return None
    path = sqlite_file(url)
    where = f"the {what} file {path}" if path is not None else f"the {what} at {redact_url(url)}"
    disk = f"the disk holding {path.parent}" if path is not None else "the database server's disk"
    return StockCliError(
        f"No space left to write {where} ({line}); the step that wrote it was not saved.",
        hint=f"Free space on {disk} (or raise its quota), then run the command again.",
    )


def check_server_database(what: str, url: str, *, key: str) -> None:
    """Connect once to a server database with a short timeout; raise the described error when that
    fails. SQLite and unparsable URLs are left to their users."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    parsed = _parse(url)
    if parsed is None or parsed.get_backend_name() == "sqlite":
        return
    connect_args: dict[str, object] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        engine = create_engine(parsed, connect_args=connect_args, poolclass=NullPool)
    except (SQLAlchemyError, ImportError):
        return  # the store's own code reports an unusable URL or driver
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except DBAPIError as exc:
        raise describe_database_error(what, url, exc, key=key) from None
    finally:
        engine.dispose()
