"""The root CLI: fast --help without heavy imports, global options anywhere, errors as exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stockcli.cli.app import hoist_global_options
from tests.conftest import Cli, write_config

HEAVY = ["torch", "mlflow", "optuna", "pandas", "sklearn", "yfinance", "ta", "exchange_calendars"]


def test_help_imports_no_heavy_library() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from stockcli.cli.app import main
        try:
            main(["--help"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        heavy = [name for name in {HEAVY!r} if name in sys.modules]
        print("HEAVY=" + ",".join(heavy))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout
    assert "fetch" in result.stdout or "db" in result.stdout


def test_every_command_help_imports_no_heavy_library() -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from stockcli.cli.app import app, main
        import typer.main
        group = typer.main.get_command(app)
        for name in group.commands:
            try:
                main([name, "--help"])
            except SystemExit as exc:
                assert exc.code == 0, (name, exc.code)
        print("HEAVY=" + ",".join(n for n in {HEAVY!r} if n in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout, result.stdout[-500:]


def test_global_options_are_hoisted_from_after_the_command() -> None:
    assert hoist_global_options(["daily", "--as-of", "2012-11-16", "--json"]) == [
        "--as-of",
        "2012-11-16",
        "--json",
        "daily",
    ]
    assert hoist_global_options(["db", "current", "--config=x.toml", "-v"]) == [
        "--config=x.toml",
        "-v",
        "db",
        "current",
    ]
    assert hoist_global_options(["fetch", "--", "--json"]) == ["fetch", "--", "--json"]


def test_global_options_work_before_and_after_the_command(sqlite_cli: Cli) -> None:
    before = sqlite_cli("--json", "db", "current")
    after = sqlite_cli("db", "current", "--json")
    assert before.exit_code == 0 and after.exit_code == 0
    assert json.loads(before.stdout)["head"] == json.loads(after.stdout)["head"]


def test_bad_config_exits_2_with_one_red_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[data]\nsorce = 'sample'\n")
    result = Cli(config)("db", "current")
    assert result.exit_code == 2
    assert "Unknown key `sorce` in [data]" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_mode_also_prints_the_error_as_json(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[dataset]\nsequence_length = 1\n")
    result = Cli(config)("db", "current", "--json")
    assert result.exit_code == 2
    payload = json.loads(result.stdout)
    assert payload["status"] == "error" and payload["exit_code"] == 2
    assert "sequence_length" in payload["error"]


def test_password_never_appears_in_output(tmp_path: Path) -> None:
    # Port 1 refuses at once: the error names the database, with the password hidden.
    url = "postgresql+psycopg://alice:hunter2secret@127.0.0.1:1/stock"
    cli = Cli(write_config(tmp_path, url))
    result = cli("db", "current", "--json")
    assert result.exit_code != 0
    assert "hunter2secret" not in result.stdout + result.stderr
    ok = cli("db", "current", "--verbose")
    assert "hunter2secret" not in ok.stdout + ok.stderr


@pytest.mark.postgres
def test_password_hidden_on_a_working_postgres(tmp_path: Path, postgres_url: str) -> None:
    # The server trusts local connections, so a made-up password still connects.
    url = postgres_url.replace(
        "postgresql+psycopg://postgres@", "postgresql+psycopg://postgres:hunter2secret@"
    )
    result = Cli(write_config(tmp_path, url))("db", "upgrade", "--json")
    assert result.exit_code == 0, result.stderr
    assert "hunter2secret" not in result.stdout + result.stderr
    assert "***" in json.loads(result.stdout)["database"]
