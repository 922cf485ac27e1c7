"""Fault class: database URLs (issue 19, findings 4 and 12). A password with a raw `@`, `:` or `/`
never shows in `report`, `serve` (its pages, JSON and log) or any error: one URL parser for every
path, the URL checked when the configuration loads, redaction before any message. An in-memory
SQLite URL, where nothing would be saved, is refused with exit 2 by every command."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from stockcli import redact
from stockcli.config import load_settings
from stockcli.errors import ConfigError
from stockcli.web.app import create_app
from tests.conftest import Cli, write_config
from tests.faults.test_registry_faults import closed_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PIECES = ("p@ss", "pa/ss", "ss/w0", "w0rd", "ss:w0")


def leaks(*texts: str) -> list[str]:
    return [piece for text in texts for piece in PIECES if piece in text]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (
            "postgresql+psycopg://postgres:pa/ss@127.0.0.1:5432/x",
            "postgresql+psycopg://postgres:***@127.0.0.1:5432/x",
        ),
        ("postgresql://u:p@ss/w0rd@db.example/x", "postgresql://u:***@db.example/x"),
        (
            "failed: 'postgresql://u:pa/ss@h/x' (retry http://v:w0rd@h2/)",
            "failed: 'postgresql://u:***@h/x' (retry http://v:***@h2/)",
        ),
    ],
)
def test_redaction_hides_a_password_holding_a_slash(text: str, kept: str) -> None:
    assert redact.redact_url(text) == kept


UNPARSABLE = (
    "postgresql+psycopg://postgres:p@ss:w0rd@127.0.0.1/x",  # int() of 'w0rd@127.0.0.1' once leaked
    "postgresql+psycopg://postgres:p@ss/w0rd@127.0.0.1/x",  # parsed as host `ss`, database `w0rd@...`
)


@pytest.mark.parametrize("url", UNPARSABLE)
@pytest.mark.parametrize(
    "command", [("report",), ("report", "--json"), ("serve", "--port", "1"), ("db", "current")]
)
def test_report_and_serve_refuse_an_unparsable_url_without_quoting_the_password(
    tmp_path: Path, url: str, command: tuple[str, ...]
) -> None:
    cli = Cli(write_config(tmp_path))
    result = cli("--verbose", *command, env={"STOCKCLI_DATABASE_URL": url})
    assert result.exit_code == 2, result.output
    assert "percent-encoded" in result.output and "postgres:***@127.0.0.1" in result.output
    assert not leaks(result.output)


def test_an_unreachable_database_with_a_slash_in_its_password_is_named_without_it(tmp_path: Path) -> None:
    url = f"postgresql+psycopg://postgres:pa/ss@127.0.0.1:{closed_port()}/x"
    cli = Cli(write_config(tmp_path))
    for command in (("report",), ("db", "current"), ("db", "upgrade")):
        result = cli(*command, env={"STOCKCLI_DATABASE_URL": url})
        assert result.exit_code in (1, 2), result.output
        assert "postgres:***@127.0.0.1" in result.output and "Unexpected error" not in result.output
        assert not leaks(result.output)


def test_the_dashboard_never_shows_a_slash_password(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"postgresql+psycopg://postgres:pa/ss@127.0.0.1:{closed_port()}/x"
    settings = load_settings(write_config(tmp_path, url), environ={})
    caplog.set_level(logging.DEBUG)
    bodies = []
    with TestClient(create_app(settings, warm_registry=False), raise_server_exceptions=False) as client:
        for path in ("/", "/health", "/tickers", "/predictions/latest_for_table", "/performance"):
            response = client.get(path)
            assert response.status_code in (200, 503), (path, response.text)
            bodies.append(response.text)
    assert any("postgres:***@127.0.0.1" in body for body in bodies)
    assert not leaks(*bodies, caplog.text)


@pytest.mark.postgres
def test_a_real_password_with_at_colon_and_slash_works_and_never_shows(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Percent-encoded, the same password is a valid URL (trust authentication takes any password);
    with a raw `/` SQLAlchemy parses it too: report and the dashboard name the database, never it."""
    encoded = make_url(postgres_url).set(password="p@ss:w0/rd").render_as_string(hide_password=False)
    raw_slash = make_url(postgres_url).set(password="pa/ss").render_as_string(hide_password=False)
    raw_slash = raw_slash.replace("pa%2Fss", "pa/ss")
    assert "p%40ss%3Aw0%2Frd" in encoded and ":pa/ss@" in raw_slash
    caplog.set_level(logging.DEBUG)
    for url in (encoded, raw_slash):
        cli = Cli(write_config(tmp_path, url))
        result = cli("report")
        assert result.exit_code == 4, result.output  # an empty database: nothing to report yet
        settings = load_settings(write_config(tmp_path, url), environ={})
        with TestClient(create_app(settings, warm_registry=False)) as client:
            health = client.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "empty"
        assert "postgres:***@" in health.text
        assert not leaks(
            result.output, health.text, caplog.text, "p%40ss", encoded.replace("p%40ss%3Aw0%2Frd", "")
        )


MEMORY_URLS = (
    "sqlite:///:memory:",
    "sqlite://",
    "sqlite:///file::memory:?cache=shared",
    "sqlite:///file:x?mode=memory&uri=true",
)


@pytest.mark.parametrize("url", MEMORY_URLS)
def test_an_in_memory_sqlite_database_is_refused_by_every_command(tmp_path: Path, url: str) -> None:
    cli = Cli(write_config(tmp_path))
    for command in (("--as-of", "2013-03-01", "fetch"), ("report",), ("db", "upgrade")):
        result = cli(*command, env={"STOCKCLI_DATABASE_URL": url})
        assert result.exit_code == 2, result.output
        assert "in-memory SQLite database: nothing would be saved" in result.output
    assert not (tmp_path / "data" / "stockcli.db").exists()


@pytest.mark.parametrize(
    ("section", "key"), [("tuning", "storage_url"), ("mlflow", "tracking_uri"), ("storage", "database_url")]
)
def test_every_store_url_is_checked_at_load(tmp_path: Path, section: str, key: str) -> None:
    def load(url: str) -> None:
        load_settings(
            None, environ={}, overrides={"storage": {"data_dir": str(tmp_path)}, section: {key: url}}
        )

    with pytest.raises(ConfigError) as memory:
        load("sqlite:///:memory:")
    assert "in-memory" in memory.value.message and f"[{section}] {key}" in memory.value.message
    with pytest.raises(ConfigError) as unparsable:
        load("postgresql://u:p@ss:w0rd@h/x")
    assert "percent-encoded" in str(unparsable.value) and not leaks(str(unparsable.value))
