"""The whole configuration is checked when it loads, for every command (issue 19, finding 13):
indicator parameters too (not only by `process`), and every number has an upper bound."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Cli, write_config

COMMANDS = (
    ("--as-of", "2013-03-01", "daily"),
    ("report",),
    ("models",),
    ("daemon", "--show-schedule"),
    ("db", "current"),
)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('[features]\nindicators = [{name = "ema", window = 0}]\n', "Indicator `ema` parameter `window`"),
        ('[features]\nindicators = [{name = "rsi", window = 100000}]\n', "from 1 to 1000, got 100000"),
        ('[features]\nindicators = [{name = "ewm_vol", decay = 1.5}]\n', "between 0 and 1, got 1.5"),
        (
            '[features]\nindicators = [{name = "bollinger", window_dev = 1e300}]\n',
            "positive number up to 1000",
        ),
        ('[features]\nindicators = [{name = "nope"}]\n', "Unknown indicator 'nope'"),
        ("[storage]\nsqlite_busy_timeout_s = 1e306\n", "[storage] sqlite_busy_timeout_s"),
        ("[training]\nnum_threads = 100000\n", "[training] num_threads"),
        ("[training]\nhidden_size = 100000000\n", "[training] hidden_size"),
        ('[mlflow]\nexperiment = "   "\n', "[mlflow] experiment"),
        ('[mlflow]\nmodel_name = " stockcli"\n', "[mlflow] model_name"),
        ("[data]\nmax_jump_factor = 1e12\n", "[data] max_jump_factor"),
    ],
)
def test_every_command_refuses_an_invalid_or_huge_value_at_load(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "config.toml"
    data_dir = 'data_dir = "data"\n'
    path.write_text(text + data_dir if text.startswith("[storage]") else "[storage]\n" + data_dir + text)
    cli = Cli(path)
    for command in COMMANDS:
        result = cli(*command)
        assert result.exit_code == 2, (command, result.output)
        assert fragment in result.output, (command, result.output)
        assert "Traceback" not in result.output and "OverflowError" not in result.output
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_the_largest_allowed_values_load(tmp_path: Path) -> None:
    text = (
        '[features]\nindicators = [{name = "ema", window = 1000}, {name = "ewm_vol", decay = 0.999}]\n'
        "[training]\nnum_threads = 256\nhidden_size = 4096\n"
    )
    result = Cli(write_config(tmp_path, extra=text))("daemon", "--show-schedule")
    assert result.exit_code == 0, result.output
