"""An optional part that is not installed is one clear line naming the extra to install (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stockcli.config import load_settings
from stockcli.errors import MissingExtraError
from tests.conftest import Cli, write_config


def test_a_postgresql_url_without_psycopg_names_the_postgres_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    url = "postgresql+psycopg://alice:hunter2@db.example/stockcli"
    with pytest.raises(MissingExtraError) as caught:
        load_settings(None, environ={"STOCKCLI_DATABASE_URL": url, "STOCKCLI_DATA_DIR": str(tmp_path)})
    assert caught.value.exit_code == 2
    assert "[storage] database_url" in caught.value.message and "psycopg" in caught.value.message
    assert caught.value.hint == "Install it with `pip install 'stockcli[postgres]'`."
    assert "hunter2" not in str(caught.value)
    # SQLite needs no extra.
    assert load_settings(None, environ={"STOCKCLI_DATA_DIR": str(tmp_path)}).database_url.startswith("sqlite")


def test_serve_without_the_web_extra_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    result = Cli(write_config(tmp_path))("serve", "--port", "8765")
    assert result.exit_code == 2, result.output
    assert "`stockcli serve` needs fastapi, which is not installed" in result.output
    assert "pip install 'stockcli[web]'" in result.output
    assert "Traceback" not in result.output
