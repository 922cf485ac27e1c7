"""Fault class: `report --html PATH` (issue 19, finding 1). A path that resolves (symlinks followed) to
the database, the MLflow or Optuna store, the config file or another file of the data dir is refused
with exit 2 and the file stays byte-identical; a symlink never leads the report into an existing file
that is not an earlier report; the report is written to a temporary file in the folder, then renamed."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import report_data
from tests.conftest import Cli

SECRET = "root:$6$not-a-report:19000:0:99999:7:::\n"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def filled(cli: Cli, make_settings: Callable[..., object], database_url: str, tmp_path: Path) -> Path:
    """A database with rows to report, the MLflow and Optuna files and the lock file of a data dir."""
    # Disposed now: an engine left to the garbage collector closes its last SQLite connection (and
    # checkpoints the WAL into stockcli.db) at a moment of its choosing, mid-test.
    report_data.fill(make_settings(database_url)).engine.dispose()  # type: ignore[arg-type]
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name in ("mlflow.db", "optuna.db", "stockcli.lock"):
        (data / name).write_bytes(b"SQLite format 3\x00" + name.encode())
    return data


def test_the_apps_own_files_are_refused_and_left_as_they_are(cli: Cli, filled: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text(SECRET)
    links = {
        "to-db.html": filled / "stockcli.db",
        "to-mlflow.html": filled / "mlflow.db",
        "to-config.html": cli.config_path,
        "to-secret.html": outside / "secret.txt",
    }
    for name, target in links.items():
        (outside / name).symlink_to(target)
    targets = [
        filled / "mlflow.db",
        filled / "optuna.db",
        filled / "stockcli.lock",
        cli.config_path,
        tmp_path / "data" / ".." / "config.toml",
        *(outside / name for name in links),
    ]
    if (filled / "stockcli.db").exists():  # SQLite; on PostgreSQL the database is not a file
        targets.append(filled / "stockcli.db")
    # (SQLite's -shm and -wal change when the report reads the database.)
    kept = [p for p in filled.iterdir() if p.is_file() and not p.name.endswith(("-shm", "-wal"))]
    files = [*kept, cli.config_path, outside / "secret.txt"]
    before = {path: digest(path) for path in files}
    for target in targets:
        result = cli("report", "--html", str(target))
        assert result.exit_code == 2, (target, result.output)
        assert "Refusing to write the HTML report" in result.output
    assert {path: digest(path) for path in files} == before
    assert all((outside / name).is_symlink() for name in links)
    assert not [p for p in (*filled.iterdir(), *outside.iterdir()) if p.name.endswith(".tmp")]


def test_a_report_is_written_by_rename_and_may_replace_an_earlier_one(
    cli: Cli, filled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "report.html"
    first = cli("report", "--html", str(out))
    assert first.exit_code == 0, first.output
    assert out.read_text().lower().startswith("<!doctype html>")
    inode = out.stat().st_ino
    second = cli("report", "--html", str(out))
    assert second.exit_code == 0, second.output
    assert out.stat().st_ino != inode  # a new file renamed over the old one, never rewritten in place
    link = tmp_path / "latest.html"
    link.symlink_to(out)
    assert cli("report", "--html", str(link)).exit_code == 0  # a symlink to an earlier report is fine
    in_data_dir = filled / "report.html"
    assert cli("report", "--html", str(in_data_dir)).exit_code == 0  # a report in the data dir too
    assert cli("report", "--html", str(in_data_dir)).exit_code == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temporary left behind
