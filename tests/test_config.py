"""Settings: file < environment < options, paths relative to the config file, clear errors (exit 2)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from stockcli.config import load_settings, redact_url
from stockcli.errors import ConfigError


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_repository_config_is_valid_and_matches_defaults() -> None:
    path = Path(__file__).resolve().parents[1] / "config.toml"
    settings = load_settings(path, environ={})
    assert settings.data.source == "sample"
    assert settings.data.tickers == ("GOOG", "MSFT", "^GSPC", "^IXIC")
    assert settings.data_dir == path.parent / "data"
    assert len(settings.features.indicators) == 22
    assert settings.database_url == f"sqlite:///{path.parent / 'data' / 'stockcli.db'}"


def test_relative_paths_resolve_against_the_config_folder_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = _write(folder, '[storage]\ndata_dir = "state"\n[data]\nsource = "csv"\ncsv_dir = "bars"\n')
    elsewhere = tmp_path / "home"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(path, environ={})
    assert settings.data_dir == folder / "state"
    assert settings.data.csv_dir == folder / "bars"


def test_environment_overrides_file_and_options_override_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, '[storage]\ndatabase_url = "sqlite:///from-file.db"\n')
    env = {
        "STOCKCLI_CONFIG": str(path),
        "STOCKCLI_DATABASE_URL": "sqlite:////tmp/from-env.db",
        "STOCKCLI_DATA_DIR": str(tmp_path / "env-data"),
        "STOCKCLI_MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    }
    settings = load_settings(None, environ=env)
    assert settings.config_path == path.resolve()
    assert settings.database_url == "sqlite:////tmp/from-env.db"
    assert settings.data_dir == tmp_path / "env-data"
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5000"
    overridden = load_settings(None, environ=env, overrides={"data": {"source": "yahoo"}})
    assert overridden.data.source == "yahoo"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[data]\nsorce = 'sample'\n", "Unknown key `sorce` in [data]"),
        ("[dat]\nsource = 'sample'\n", "Unknown section [dat]"),
        ("[dataset]\nsequence_length = 'thirty'\n", "[dataset] sequence_length"),
        ("[data]\ntickers = ['MSFT', 'bad ticker!']\n", "Malformed ticker 'bad ticker!'"),
        ("[data]\nsource = 'bloomberg'\n", "[data] source"),
        ("[data]\nstart = 'yesterday'\n", "a date (YYYY-MM-DD)"),
        ("[dataset]\ntrain_fraction = 0.9\nvalidation_fraction = 0.2\n", "must stay below 1"),
        ("[training]\nuse_gpu = true\n", "Unknown key `use_gpu`"),
        ("[data\nsource = 'sample'\n", "not valid TOML"),
        ("[data]\nsource = 'csv'\n", "csv_dir is not set"),
    ],
)
def test_bad_config_names_the_key_and_exits_2(tmp_path: Path, text: str, fragment: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert fragment in str(caught.value)
    assert caught.value.exit_code == 2


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_tickers_are_normalized_to_upper_case(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "[data]\ntickers = ['msft', '^gspc']\n"), environ={})
    assert settings.data.tickers == ("MSFT", "^GSPC")
    assert settings.data.start == date(2004, 8, 19)


def test_redact_url_hides_the_password() -> None:
    assert redact_url("postgresql+psycopg://alice:s3cret@db.example/stock") == (
        "postgresql+psycopg://alice:***@db.example/stock"
    )
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
