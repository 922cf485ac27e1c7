"""The root CLI: fast --help without heavy imports, global options anywhere, errors as exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from stockcli.cli.app import hoist_global_options
from tests.conftest import Cli, write_config

HEAVY = [
    "torch",
    "mlflow",
    "optuna",
    "pandas",
    "sklearn",
    "yfinance",
    "ta",
    "exchange_calendars",
    "apprise",
    "prometheus_client",
]


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


PIPELINE_ORDER = [
    "fetch",
    "process",
    "build",
    "tune",
    "train",
    "promote",
    "models",
    "predict",
    "monitor",
    "daily",
    "retrain",
    "daemon",
    "backtest",
    "report",
    "serve",
    "notify",
    "db",
]
README = Path(__file__).resolve().parents[1] / "README.md"
CONFIG_KEY = re.compile(r"\[[a-z_]+\]")


def _help_of(*args: str) -> str:
    from typer.testing import CliRunner

    from stockcli.cli.app import app

    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.output
    return result.output


def _command_objects() -> list[tuple[list[str], Any]]:
    """Every command and sub-command as (argv prefix, click command)."""
    import typer.main

    from stockcli.cli.app import app

    found: list[tuple[list[str], Any]] = []
    for name, command in typer.main.get_command(app).commands.items():  # type: ignore[attr-defined]
        found.append(([name], command))
        for sub_name, sub_command in getattr(command, "commands", {}).items():
            found.append(([name, sub_name], sub_command))
    return found


def test_commands_come_from_one_table_in_pipeline_order() -> None:
    import typer.main

    from stockcli.cli.app import app
    from stockcli.cli.commands import COMMANDS

    assert list(COMMANDS) == PIPELINE_ORDER
    assert list(typer.main.get_command(app).commands) == PIPELINE_ORDER  # type: ignore[attr-defined]
    listed = [line.split()[0] for line in _help_of().split("Commands:")[1].splitlines() if line.strip()]
    assert listed == PIPELINE_ORDER


def test_command_modules_never_import_the_root_app() -> None:
    """Registration is explicit (cli/commands.py), so no command module may reach back to cli/app.py."""
    import ast

    folder = Path(__file__).resolve().parents[1] / "stockcli" / "cli"
    for path in folder.glob("*.py"):
        if path.name in ("app.py", "__init__.py"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {
            alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
        }
        assert "stockcli.cli.app" not in imported, path.name


def test_version_prints_the_package_version() -> None:
    from importlib import metadata

    from typer.testing import CliRunner

    import stockcli
    from stockcli.cli.app import app

    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    try:
        expected = metadata.version("stockcli")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        expected = stockcli.__version__
    assert result.output == f"stockcli {expected}\n"


def test_help_never_builds_settings() -> None:
    code = textwrap.dedent(
        """
        import sys
        from stockcli.cli.app import main
        try:
            main(["--help"])
        except SystemExit:
            pass
        print("LOADED=" + ",".join(n for n in ("stockcli.config", "pydantic") if n in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "LOADED=\n" in result.stdout, result.stdout[-300:]


def test_no_bracketed_config_key_vanishes_from_any_help() -> None:
    """Rich markup would eat `[data]` ("default:  tickers"): every `[section]` written in a docstring
    or an option's help must appear in the rendered help of its command."""
    seen_keys = 0
    for argv, command in _command_objects():
        sources = [command.help or ""] + [getattr(param, "help", None) or "" for param in command.params]
        rendered = _help_of(*argv)
        for key in {key for text in sources for key in CONFIG_KEY.findall(text)}:
            seen_keys += 1
            assert key in rendered, (argv, key, rendered)
        assert "\\[" not in rendered, argv  # no leftover markup escapes
    assert seen_keys >= 5  # fetch, process, tune, train and daemon quote config keys
    assert "default: [data] tickers" in " ".join(_help_of("process").split())


def test_every_command_is_in_the_readme_table() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("## Commands", 1)[1].split("\n## ", 1)[0]
    documented = []
    for line in section.splitlines():
        match = re.match(r"\|\s*`stockcli ([a-z]+)", line)
        if match and match.group(1) not in documented:
            documented.append(match.group(1))
    assert documented == PIPELINE_ORDER
    for argv, _ in _command_objects():
        if len(argv) == 2:  # sub-commands such as `db upgrade` are named in their group's row
            assert f"stockcli {' '.join(argv)}" in section, argv


def test_cli_choices_are_the_config_choices() -> None:
    from stockcli import config

    fetch_help = _help_of("fetch")
    assert "<" + "|".join(config.SOURCES) + ">" in fetch_help
    train_help = _help_of("train")
    assert "<" + "|".join(config.MODEL_TYPES) + ">" in train_help
