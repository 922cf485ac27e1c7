"""Real-database fixtures: a SQLite file in tmp_path and, where reachable (always in CI), a real
PostgreSQL with a fresh schema per test. The same test bodies run against both."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from stockcli.config import Settings, load_settings

PG_URL = os.environ.get("STOCKCLI_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("STOCKCLI_REQUIRE_POSTGRES") == "1" or os.environ.get("CI") == "true"
SAMPLE_AS_OF = "2013-03-01"

_pg_state: dict[str, Any] = {}

# A test runner started in the background by a shell without job control ignores SIGINT, and an
# ignored signal is inherited: the CLI children of the Ctrl-C tests would ignore theirs too (the CLI
# rightly keeps an inherited SIG_IGN). A handler, unlike SIG_IGN, is reset to the default on exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def postgres_available() -> bool:
    if "ok" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
                _pg_state["ok"] = True
        except Exception as exc:  # pragma: no cover - depends on the machine
            _pg_state["ok"] = False
            _pg_state["why"] = str(exc)
    return bool(_pg_state["ok"])


def _require_postgres() -> None:
    if not postgres_available():
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required here but unreachable at {PG_URL}: {_pg_state.get('why')}")
        pytest.skip(f"PostgreSQL unreachable at {PG_URL}")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections see a fresh, empty schema (dropped afterwards)."""
    _require_postgres()
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    plain = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test using this runs twice: on a real SQLite file and on a real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'stockcli.db'}"
    return str(request.getfixturevalue("postgres_url"))


def write_config(tmp_path: Path, database_url: str | None = None, extra: str = "") -> Path:
    """A config.toml in tmp_path with its data dir next to it; `extra` is appended TOML."""
    lines = ["[storage]", 'data_dir = "data"']
    if database_url:
        lines.append(f'database_url = "{database_url}"')
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return path


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings on a temp data dir: `make_settings(database_url, data={"tickers": [...]})`."""

    def factory(database_url: str | None = None, **overrides: dict[str, Any]) -> Settings:
        sections: dict[str, dict[str, Any]] = {"storage": {"data_dir": str(tmp_path / "data")}}
        if database_url:
            sections["storage"]["database_url"] = database_url
        for name, values in overrides.items():
            sections.setdefault(name, {}).update(values)
        return load_settings(None, environ={}, overrides=sections)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings], database_url: str) -> Settings:
    return make_settings(database_url)


class Cli:
    """Runs the real Typer app in-process with a config file in tmp_path."""

    def __init__(self, config_path: Path) -> None:
        self.config_path = config_path
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        from stockcli.cli.app import app

        full_env = {"STOCKCLI_CONFIG": str(self.config_path), "COLUMNS": "200"}
        full_env.update(env or {})
        return self.runner.invoke(app, list(args), env=full_env, catch_exceptions=False)


@pytest.fixture
def cli(tmp_path: Path, database_url: str) -> Cli:
    return Cli(write_config(tmp_path, database_url))


@pytest.fixture
def sqlite_cli(tmp_path: Path) -> Cli:
    return Cli(write_config(tmp_path))
