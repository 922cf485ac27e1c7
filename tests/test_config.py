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


# --- every rule has its exit 2 naming the key ----------------------------------------------------


def _refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, text), environ={})
    assert caught.value.exit_code == 2
    message = str(caught.value)
    assert "\n" not in message and "validation error" not in message and "pydantic" not in message
    assert str(tmp_path / "config.toml") in message  # the file is named
    return message


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        # issue 13 item 5
        ("[data]\nrestatement_tolerance = -1\n", "[data] restatement_tolerance", "> 0 and < 1, got -1"),
        ("[data]\nrestatement_tolerance = 1\n", "[data] restatement_tolerance", "got 1"),
        ("[tuning]\nlearning_rate_min = 0\n", "[tuning] learning_rate_min", "> 0"),
        ("[tuning]\nmodel_types = []\n", "[tuning] model_types", "non-empty list of"),
        ("[tuning]\nmodel_types = ['lstm', 'gru']\n", "[tuning] model_types", '"lstm_attention"'),
        ("[tuning]\nmodel_types = ['lstm', 'lstm']\n", "[tuning] model_types", "lists lstm twice"),
        ("[daemon]\nmisfire_grace_s = 0\n", "[daemon] misfire_grace_s", "> 0 and <= 604800, got 0"),
        ("[daemon]\nmisfire_grace_s = -5\n", "[daemon] misfire_grace_s", "> 0 and <= 604800, got -5"),
        ("[daemon]\ncron = '0 0 31 2 *'\n", "[daemon] cron", "never fires"),
        ("[daemon]\ncron = '0 0 30 2 *'\n", "[daemon] cron", "never fires"),
        ("[daemon]\ncron = 'every day at five'\n", "[daemon] cron", "not a valid crontab expression"),
        ("[daemon]\ncron = '61 * * * *'\n", "[daemon] cron", "not a valid crontab expression"),
        # every numeric key has its range
        ("[data]\noverlap_sessions = -1\n", "[data] overlap_sessions", "from 0 to 250"),
        ("[data]\nmax_jump_factor = 0.5\n", "[data] max_jump_factor", "above 1 (at most 1000), or 0"),
        ("[data]\nmax_jump_factor = -2\n", "[data] max_jump_factor", "above 1 (at most 1000), or 0"),
        ("[data]\nmax_retries = -1\n", "[data] max_retries", "from 0 to 20"),
        ("[data]\nretry_backoff_s = -0.5\n", "[data] retry_backoff_s", "from 0 to 600"),
        ("[data]\nrequest_timeout_s = 0\n", "[data] request_timeout_s", "> 0"),
        ("[storage]\nsqlite_busy_timeout_s = 0\n", "[storage] sqlite_busy_timeout_s", "> 0"),
        ("[storage]\ndata_dir = ''\n", "[storage] data_dir", "empty"),
        ("[mlflow]\nexperiment = ''\n", "[mlflow] experiment", "non-empty string"),
        ("[mlflow]\nmodel_name = ''\n", "[mlflow] model_name", "non-empty string"),
        ("[features]\nffill_limit = 21\n", "[features] ffill_limit", "from 0 to 20"),
        ("[features]\ncorrelation_threshold = 1.5\n", "[features] correlation_threshold", "from 0 to 1"),
        ("[features]\nindicators = [{ window = 3 }]\n", "[features] indicators", "name"),
        ("[features]\nindicators = ['rsi']\n", "[features] indicators", "list of tables"),
        ("[dataset]\nsequence_length = 1\n", "[dataset] sequence_length", "from 2 to 500"),
        ("[dataset]\nsequence_length = 501\n", "[dataset] sequence_length", "from 2 to 500"),
        ("[dataset]\ntrain_fraction = 0\n", "[dataset] train_fraction", "> 0 and < 1"),
        ("[dataset]\nvalidation_fraction = 1.2\n", "[dataset] validation_fraction", "> 0 and < 1"),
        ("[dataset]\ntarget_kind = 'volatility'\n", "[dataset] target_kind", '"return"'),
        ("[dataset]\ntarget_kind = 'price'\n", "[dataset] target_kind", '"return"'),
        ("[training]\nmodel_type = 'gru'\n", "[training] model_type", "one of"),
        ("[training]\nhidden_size = 0\n", "[training] hidden_size", "from 1 to 4096"),
        ("[training]\nnum_layers = 9\n", "[training] num_layers", "from 1 to 8"),
        ("[training]\ndropout = 1.0\n", "[training] dropout", ">= 0 and < 1"),
        ("[training]\nlearning_rate = 0\n", "[training] learning_rate", "> 0"),
        ("[training]\nlearning_rate = nan\n", "[training] learning_rate", "got nan"),
        ("[training]\nbatch_size = 0\n", "[training] batch_size", "from 1 to 65536"),
        ("[training]\nnum_heads = 0\n", "[training] num_heads", "from 1 to 64"),
        ("[training]\nepochs = 0\n", "[training] epochs", "from 1 to 1000000"),
        ("[training]\npatience = 0\n", "[training] patience", "from 1 to 1000000"),
        ("[training]\nloss = 'l1'\n", "[training] loss", "was removed"),
        ("[training]\ngrad_clip = -1\n", "[training] grad_clip", "from 0 to 1e+06"),
        ("[training]\nseed = -1\n", "[training] seed", "from 0 to 4294967295"),
        ("[training]\ndevice = 'tpu'\n", "[training] device", '"cpu", "cuda", "auto"'),
        ("[training]\nnum_threads = -1\n", "[training] num_threads", "from 0 to 256"),
        ("[training]\ndistribution = 'cauchy'\n", "[training] distribution", '"student_t", "normal"'),
        ("[tuning]\nn_trials = 0\n", "[tuning] n_trials", "from 1 to 100000"),
        ("[tuning]\ntimeout_s = -1\n", "[tuning] timeout_s", "from 0 to 604800"),
        ("[tuning]\nepochs = 0\n", "[tuning] epochs", "from 1 to 10000"),
        ("[tuning]\npruner_startup_trials = -1\n", "[tuning] pruner_startup_trials", "from 0 to 10000"),
        ("[tuning]\npruner_warmup_epochs = -1\n", "[tuning] pruner_warmup_epochs", "from 0 to 10000"),
        ("[tuning]\nbatch_size_min = 0\n", "[tuning] batch_size_min", "from 1 to 65536"),
        ("[tuning]\nhidden_size_max = 0\n", "[tuning] hidden_size_max", "from 1 to 4096"),
        ("[tuning]\nnum_layers_max = 9\n", "[tuning] num_layers_max", "from 1 to 8"),
        ("[tuning]\ndropout_max = 1\n", "[tuning] dropout_max", "< 1"),
        ("[tuning]\nlearning_rate_max = 2\n", "[tuning] learning_rate_max", "<= 1"),
        ("[tuning]\nretrain_timeout_s = -1\n", "[tuning] retrain_timeout_s", "from 0 to 604800"),
        ("[tuning]\nwarm_start = 1\n", "[tuning] warm_start", "true or false"),
        ("[intervals]\naci_gamma = 0\n", "[intervals] aci_gamma", "> 0 and <= 0.1"),
        ("[intervals]\naci_gamma = 0.2\n", "[intervals] aci_gamma", "> 0 and <= 0.1"),
        ("[intervals]\nbaseline_window = 4\n", "[intervals] baseline_window", "from 5 to 250"),
        ("[intervals]\nbaseline_window = 251\n", "[intervals] baseline_window", "from 5 to 250"),
        ("[promotion]\nmetric = 'r2'\n", "[promotion] metric", '"winkler_95", "pinball"'),
        ("[promotion]\nmin_improvement = 1\n", "[promotion] min_improvement", ">= 0 and < 1"),
        ("[promotion]\nmin_improvement = -0.1\n", "[promotion] min_improvement", ">= 0 and < 1"),
        ("[promotion]\nalpha = 0\n", "[promotion] alpha", "> 0 and <= 0.5"),
        ("[promotion]\nalpha = 0.6\n", "[promotion] alpha", "> 0 and <= 0.5"),
        ("[promotion]\nseeds = 0\n", "[promotion] seeds", "from 1 to 10"),
        ("[promotion]\nseeds = 11\n", "[promotion] seeds", "from 1 to 10"),
        ("[monitor]\nwindow_sessions = 1\n", "[monitor] window_sessions", "from 2 to 1000"),
        ("[monitor]\nmin_samples = 1\n", "[monitor] min_samples", "from 2 to 1000"),
        ("[monitor]\nmin_samples = 30\n", "[monitor] min_samples", "above [monitor] window_sessions = 20"),
        ("[monitor]\nmape_max = 0.03\n", "[monitor] mape_max", "was removed"),
        ("[monitor]\ndirection_min = 0.4\n", "[monitor] direction_min", "never triggers a retrain"),
        ("[monitor]\nskill_min = -0.1\n", "[monitor] skill_min", "Diebold-Mariano"),
        ("[promotion]\nrequire_beats_naive = true\n", "[promotion] require_beats_naive", "paired test"),
        ("[monitor]\ncooldown_sessions = -1\n", "[monitor] cooldown_sessions", "from 0 to 1000"),
        ("[monitor]\nalpha = 0.7\n", "[monitor] alpha", "> 0 and <= 0.5"),
        ("[monitor]\ncoverage_alpha = 0\n", "[monitor] coverage_alpha", "> 0 and <= 0.5"),
        ("[predict]\nmax_move_vol = 0\n", "[predict] max_move_vol", "> 0"),
        ("[predict]\nmax_move_vol = -3\n", "[predict] max_move_vol", "> 0"),
        # types are strict: no string for a number, no float for an integer, no 1 for true
        ("[dataset]\nsequence_length = '30'\n", "[dataset] sequence_length", "an integer"),
        ("[training]\nepochs = 50.0\n", "[training] epochs", "an integer"),
        ("[training]\ncalibrate = true\n", "[training] calibrate", "was removed"),
        ("[data]\nexchange = 5\n", "[data] exchange", "a non-empty string"),
        ("[data]\nstart = 2004-08-19T10:00:00\n", "[data] start", "a date (YYYY-MM-DD)"),
    ],
)
def test_every_rule_exits_2_naming_the_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    message = _refused(tmp_path, text)
    assert message.startswith(key), message
    assert fragment in message, message


@pytest.mark.parametrize("name", ["batch_size", "hidden_size", "num_layers", "dropout", "learning_rate"])
def test_every_tuning_range_needs_min_at_most_max(tmp_path: Path, name: str) -> None:
    low, high = {
        "batch_size": (64, 32),
        "hidden_size": (64, 32),
        "num_layers": (3, 2),
        "dropout": (0.4, 0.2),
        "learning_rate": (0.01, 0.001),
    }[name]
    message = _refused(tmp_path, f"[tuning]\n{name}_min = {low}\n{name}_max = {high}\n")
    assert message.startswith(f"[tuning] {name}_min"), message
    assert f"above [tuning] {name}_max" in message
    equal = load_settings(
        _write(tmp_path, f"[tuning]\n{name}_min = {high}\n{name}_max = {high}\n"), environ={}
    )
    assert getattr(equal.tuning, f"{name}_min") == getattr(equal.tuning, f"{name}_max")


def test_tickers_as_one_string_are_refused_with_the_list_syntax(tmp_path: Path) -> None:
    message = _refused(tmp_path, '[data]\ntickers = "GOOG,MSFT"\n')
    assert message.startswith("[data] tickers"), message
    assert "not the string 'GOOG,MSFT'" in message
    assert 'tickers = ["GOOG", "MSFT"]' in message  # the syntax to write instead


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[data]\ntickers = []\n", "non-empty list of tickers"),
        ("[data]\ntickers = ['GOOG', 'goog']\n", "lists GOOG twice"),
        ("[data]\ntickers = ['GOOG', 5]\n", "got ['GOOG', 5]"),
        ("[data]\ncontext_tickers = ['^GSPC', 'bad one']\n", "Malformed ticker 'bad one'"),
        ("[data]\ncontext_tickers = '^GSPC'\n", 'context_tickers = ["^GSPC"]'),
    ],
)
def test_ticker_lists_are_checked(tmp_path: Path, text: str, fragment: str) -> None:
    message = _refused(tmp_path, text)
    assert message.startswith("[data] "), message
    assert fragment in message, message


def test_context_tickers_default_to_the_index_tickers(tmp_path: Path) -> None:
    default = load_settings(
        _write(tmp_path, "[data]\ntickers = ['goog', '^gspc', 'MSFT', '^IXIC']\n"), environ={}
    )
    assert default.data.context_tickers is None
    assert default.data.context_tickers_resolved == ("^GSPC", "^IXIC")
    none = load_settings(_write(tmp_path, "[data]\ncontext_tickers = []\n"), environ={})
    assert none.data.context_tickers_resolved == ()
    explicit = load_settings(_write(tmp_path, "[data]\ncontext_tickers = ['^vix']\n"), environ={})
    assert explicit.data.context_tickers_resolved == ("^VIX",)


def test_new_keys_have_their_defaults() -> None:
    settings = load_settings(None, environ={}, overrides={"storage": {"data_dir": "/tmp/x"}})
    assert settings.training.distribution == "student_t"
    assert settings.tuning.retrain_timeout_s == 30.0 and settings.tuning.warm_start is True
    assert settings.intervals.aci_gamma == 0.005 and settings.intervals.baseline_window == 20
    assert settings.promotion.metric == "mae" and settings.promotion.min_improvement == 0.0
    assert settings.promotion.alpha == 0.05 and settings.promotion.seeds == 1
    assert settings.monitor.alpha == 0.05 and settings.monitor.coverage_alpha == 0.01
    assert settings.predict.max_move_vol == 10.0
    assert settings.daemon.misfire_grace_s == 21600


def test_repository_config_documents_every_key() -> None:
    import tomllib

    from stockcli.config import SECTIONS

    text = (Path(__file__).resolve().parents[1] / "config.toml").read_text(encoding="utf-8")
    written = tomllib.loads(text)
    assert list(written) == list(SECTIONS)
    for section, model in SECTIONS.items():
        for key, field in model.model_fields.items():
            # A key left out of the file (csv_dir, context_tickers) is shown commented out.
            assert key in written[section] or f"# {key} = " in text, (section, key)
            if key in written[section] and key not in ("data_dir", "indicators"):
                assert written[section][key] == field.default or tuple(written[section][key]) == field.default


def test_choices_are_defined_once_and_shared() -> None:
    from typing import get_args

    from stockcli import choices, config

    assert config.SOURCES is choices.SOURCES == ("sample", "csv", "yahoo")
    assert choices.PROMOTION_METRICS == ("mae", "rmse", "mape", "winkler_95", "pinball")
    assert choices.DISTRIBUTIONS == ("student_t", "normal")
    assert get_args(config.TrainingSettings.model_fields["model_type"].annotation) == config.MODEL_TYPES
    assert get_args(config.DataSettings.model_fields["source"].annotation) == config.SOURCES


# --- the file itself --------------------------------------------------------------------------------


def test_a_utf8_bom_gets_a_clear_error(tmp_path: Path) -> None:
    """tomllib refuses a byte-order mark ("Invalid statement"), so stockcli says what it is instead."""
    import tomllib

    with pytest.raises(tomllib.TOMLDecodeError):
        tomllib.loads("\ufeff[data]\n")
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf[data]\nsource = 'sample'\n")
    with pytest.raises(ConfigError, match="starts with a UTF-8 byte-order mark") as caught:
        load_settings(path, environ={})
    assert caught.value.exit_code == 2 and "without BOM" in str(caught.value)


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda folder: Path("/dev/zero"), "not a regular file"),
        (lambda folder: folder, "is a folder"),
        (lambda folder: _bytes(folder, bytes(range(256)) * 4), "binary file"),
        (lambda folder: _bytes(folder, "source = 'caf\xe9'\n".encode("latin-1")), "not UTF-8 text"),
        (lambda folder: _bytes(folder, b"# padding\n" * 120_000), "larger than 1 MiB"),
    ],
)
def test_a_config_that_is_not_a_small_text_file_is_refused_at_once(
    tmp_path: Path, make, fragment: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=fragment) as caught:
        load_settings(make(tmp_path), environ={})
    assert caught.value.exit_code == 2


def _bytes(folder: Path, content: bytes) -> Path:
    path = folder / "odd.toml"
    path.write_bytes(content)
    return path


def test_a_fifo_as_config_does_not_hang(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_settings(fifo, environ={})


def test_a_section_that_is_a_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[data\] in .* must be a table"):
        load_settings(_write(tmp_path, "data = 5\n"), environ={})


# --- environment and overrides ---------------------------------------------------------------------


def test_an_empty_data_dir_variable_is_an_error_not_a_fallback(tmp_path: Path) -> None:
    path = _write(tmp_path, "[storage]\ndata_dir = 'state'\n")
    for value in ("", "   "):
        with pytest.raises(ConfigError, match="STOCKCLI_DATA_DIR is set but empty") as caught:
            load_settings(path, environ={"STOCKCLI_DATA_DIR": value})
        assert caught.value.exit_code == 2
    with pytest.raises(ConfigError, match="STOCKCLI_CONFIG is set but empty"):
        load_settings(None, environ={"STOCKCLI_CONFIG": ""})


def test_relative_data_dir_from_the_environment_resolves_against_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    path = _write(folder, "[storage]\ndata_dir = 'state'\n")
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path, environ={"STOCKCLI_DATA_DIR": "elsewhere"})
    assert settings.data_dir == tmp_path / "elsewhere"
    assert load_settings(path, environ={}).data_dir == folder / "state"


def test_precedence_file_then_environment_then_overrides(tmp_path: Path) -> None:
    path = _write(tmp_path, "[tuning]\nstorage_url = 'sqlite:///file.db'\nn_trials = 7\n")
    from_file = load_settings(path, environ={})
    assert from_file.optuna_storage_url == "sqlite:///file.db" and from_file.tuning.n_trials == 7
    env = {"STOCKCLI_OPTUNA_STORAGE": "sqlite:///env.db"}
    assert load_settings(path, environ=env).optuna_storage_url == "sqlite:///env.db"
    both = load_settings(
        path, environ=env, overrides={"tuning": {"storage_url": "sqlite:///opt.db", "n_trials": 3}}
    )
    assert both.optuna_storage_url == "sqlite:///opt.db" and both.tuning.n_trials == 3
    # An override of None leaves the value below it.
    kept = load_settings(path, environ=env, overrides={"tuning": {"n_trials": None}})
    assert kept.tuning.n_trials == 7


def test_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^\[tuning\] n_trials in .* must be an integer from 1 to 100000, got 0"
    ):
        load_settings(_write(tmp_path, ""), environ={}, overrides={"tuning": {"n_trials": 0}})
    with pytest.raises(ConfigError, match="Unknown section"):
        load_settings(_write(tmp_path, ""), environ={}, overrides={"tunning": {"n_trials": 3}})


@pytest.mark.parametrize(
    ("horizons", "fragment"),
    [
        ("[5, 20]", "must contain 1"),
        ("[1, 20, 5]", "must be increasing, each once"),
        ("[1, 5, 5]", "must be increasing, each once"),
        ("[0, 1]", "from 1 to 250"),
        ("[]", "an increasing list of sessions"),
        ('["5"]', "an increasing list of sessions"),
    ],
)
def test_forecast_horizons_are_validated(tmp_path: Path, horizons: str, fragment: str) -> None:
    path = _write(tmp_path, f"[forecasters]\nhorizons = {horizons}\n")
    with pytest.raises(ConfigError, match=rf"\[forecasters\] horizons in .*{fragment}"):
        load_settings(path, environ={})
    assert load_settings(
        _write(tmp_path, "[forecasters]\nhorizons = [1, 10]\n"), environ={}
    ).forecasters.horizons == (1, 10)


def test_a_blend_member_missing_from_the_candidates_is_named(tmp_path: Path) -> None:
    without_gjr = '[forecasters]\ncandidates = ["garch", "har_range", "blend"]\n'  # blend: har_range + gjr
    with pytest.raises(ConfigError, match=r"blend in .* names 'gjr', which is not among") as error:
        load_settings(_write(tmp_path, without_gjr), environ={})
    assert error.value.hint == "Add gjr to candidates, or take blend out of them."


def test_an_unset_incumbent_is_blend_or_garch_where_candidates_leave_blend_out(tmp_path: Path) -> None:
    defaults = load_settings(_write(tmp_path, "[forecasters]\n"), environ={}).forecasters
    assert [defaults.incumbent_at(h) for h in (1, 5, 20)] == ["blend"] * 3
    without_blend = '[forecasters]\ncandidates = ["garch", "gjr", "har_range"]\n'
    resolved = load_settings(_write(tmp_path, without_blend), environ={}).forecasters
    assert [resolved.incumbent_at(h) for h in (1, 5)] == ["garch", "garch"]
    own = load_settings(_write(tmp_path, without_blend + 'horizon_incumbent = "har_range"\n'), environ={})
    assert [own.forecasters.incumbent_at(h) for h in (1, 5)] == ["garch", "har_range"]
    for key in ("incumbent", "horizon_incumbent"):
        with pytest.raises(ConfigError, match=rf"{key} in .* is 'blend', which is not among") as error:
            load_settings(_write(tmp_path, without_blend + f'{key} = "blend"\n'), environ={})
        assert error.value.hint == f"Add blend to candidates, or set {key} to one of garch, gjr, har_range."
    neither = '[forecasters]\ncandidates = ["gjr", "har_range"]\n'
    with pytest.raises(ConfigError, match=r"incumbent in .* is unset, and neither blend nor garch") as error:
        load_settings(_write(tmp_path, neither), environ={})
    assert error.value.hint == "Set incumbent to one of gjr, har_range."
    # Replacing a section keeps an unset incumbent unset: it still follows the candidates.
    replaced = load_settings(_write(tmp_path, "[forecasters]\n"), environ={}).replace(
        forecasters={"candidates": ["garch", "rolling"]}
    )
    assert replaced.forecasters.incumbent_at(1) == "garch"


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("har_residual_window = 100", "har_residual_window in .* must be 0 .* or at least 250 sessions"),
        ("har_half_life = -1", "har_half_life in .* must be an integer from 0 to 100000, got -1"),
        ('har_market = "S&P 500"', r"har_market in .*Malformed ticker 'S&P 500'"),
        ("har_market = 5", "har_market in .* got 5"),
    ],
)
def test_har_fit_options_are_validated(tmp_path: Path, line: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=rf"^\[forecasters\] {fragment}"):
        load_settings(_write(tmp_path, f"[forecasters]\n{line}\n"), environ={})


@pytest.mark.parametrize("key", ["min_selection_sessions", "horizon_min_selection_sessions"])
def test_a_selection_minimum_above_the_window_is_refused(tmp_path: Path, key: str) -> None:
    values = {"selection_sessions": 100, "min_selection_sessions": 50, key: 101}
    text = "[forecasters]\n" + "".join(f"{name} = {value}\n" for name, value in values.items())
    with pytest.raises(
        ConfigError, match=rf"^\[forecasters\] {key} .*is 101, above selection_sessions = 100"
    ):
        load_settings(_write(tmp_path, text), environ={})


def test_har_fit_options_reach_the_design(tmp_path: Path) -> None:
    from stockcli.ml.forecasters import build_table
    from stockcli.ml.forecasters.har import HarDesign

    text = '[forecasters]\nhar_half_life = 0\nhar_residual_window = 250\nhar_market = " ^ixic "\n'
    settings = load_settings(_write(tmp_path, text), environ={})
    assert settings.forecasters.har_market == "^IXIC"
    design = build_table(settings)["har_range"].design  # type: ignore[attr-defined]
    assert design == HarDesign(market=True, half_life=0, residual_window=250)
    none = load_settings(_write(tmp_path, '[forecasters]\nhar_market = ""\n'), environ={})
    assert build_table(none)["har_range"].design.market is False  # type: ignore[attr-defined]


def test_replace_validates_and_keeps_the_rest(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "[training]\nseed = 7\n"), environ={})
    changed = settings.replace(data={"tickers": ("aaa", "^idx")}, training={"epochs": 3})
    assert changed.data.tickers == ("AAA", "^IDX") and changed.data.context_tickers_resolved == ("^IDX",)
    assert changed.training.epochs == 3 and changed.training.seed == 7
    assert changed.data_dir == settings.data_dir and changed.config_path == settings.config_path
    with pytest.raises(ConfigError, match=r"\[training\] epochs in Settings.replace\(\) must be"):
        settings.replace(training={"epochs": 0})
    with pytest.raises(ConfigError, match=r"\[daemon\] cron .* never fires"):
        settings.replace(daemon={"cron": "0 0 31 2 *"})


def test_settings_are_frozen_and_hide_urls_from_repr(tmp_path: Path) -> None:
    from pydantic import ValidationError

    url = "postgresql+psycopg://alice:hunter2@db/x"
    settings = load_settings(_write(tmp_path, f"[storage]\ndatabase_url = '{url}'\n"), environ={})
    with pytest.raises(ValidationError):
        settings.training.epochs = 3  # type: ignore[misc]
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings)
    assert settings.database_url == url


def test_removed_keys_are_refused_with_what_replaced_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stockcli import config

    monkeypatch.setitem(
        config.REMOVED_KEYS, ("training", "loss"), "the loss follows [training] distribution now."
    )
    message = _refused(tmp_path, "[training]\nloss = 'mse'\n")
    assert message.startswith("[training] loss in ") and "was removed" in message
    assert "the loss follows [training] distribution now." in message and "Delete `loss`" in message
    with pytest.raises(ConfigError, match="was removed"):
        load_settings(_write(tmp_path, ""), environ={}, overrides={"training": {"loss": "mse"}})


def test_the_daemon_uses_the_same_cron_rule(tmp_path: Path) -> None:
    from zoneinfo import ZoneInfo

    from stockcli.cron import cron_trigger

    trigger = cron_trigger("30 17 * * mon-fri", "XNYS")
    assert trigger.timezone == ZoneInfo("America/New_York")
    with pytest.raises(ConfigError, match=r"^\[daemon\] cron '0 0 31 2 \*' never fires"):
        cron_trigger("0 0 31 2 *", "XNYS")
    with pytest.raises(ConfigError, match="not a valid crontab expression"):
        cron_trigger("30 17 * *", "XNYS")


# --- every key from the environment: STOCKCLI_<SECTION>__<KEY> ----------------------------------------


def test_every_key_has_a_nested_variable_converted_to_its_type(tmp_path: Path) -> None:
    path = _write(tmp_path, "[training]\nepochs = 7\n[tuning]\npruning = true\n")
    env = {
        "STOCKCLI_TRAINING__EPOCHS": "5",
        "STOCKCLI_TUNING__PRUNING": "false",
        "STOCKCLI_INTERVALS__ACI_GAMMA": "0.01",
        "STOCKCLI_DATA__START": "2010-01-04",
        "STOCKCLI_DATA__TICKERS": '["goog", "msft"]',
        "STOCKCLI_STORAGE__DATA_DIR": "state",
    }
    settings = load_settings(path, environ=env)
    assert settings.training.epochs == 5 and settings.tuning.pruning is False
    assert settings.intervals.aci_gamma == 0.01 and settings.data.start == date(2010, 1, 4)
    assert settings.data.tickers == ("GOOG", "MSFT")
    assert settings.data_dir == Path.cwd() / "state"  # from the environment: against the cwd
    assert load_settings(path, environ={}).training.epochs == 7


def test_a_legacy_variable_is_an_alias_of_its_nested_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    legacy = {"STOCKCLI_DATABASE_URL": "sqlite:////tmp/legacy.db"}
    assert load_settings(path, environ=legacy).database_url == "sqlite:////tmp/legacy.db"
    both = {**legacy, "STOCKCLI_STORAGE__DATABASE_URL": "sqlite:////tmp/nested.db"}
    assert load_settings(path, environ=both).database_url == "sqlite:////tmp/nested.db"
    with pytest.raises(ConfigError, match="STOCKCLI_DATABASE_URL is set but empty"):
        load_settings(path, environ={"STOCKCLI_DATABASE_URL": " "})


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "STOCKCLI_TRAINING__EPOCHS",
            "5.5",
            "[training] epochs in $STOCKCLI_TRAINING__EPOCHS must be an integer from 1 to 1000000, got '5.5'.",
        ),
        ("STOCKCLI_TRAINING__EPOCH", "5", "Unknown key `epoch` in [training] of $STOCKCLI_TRAINING__EPOCH."),
        ("STOCKCLI_TRAINING__LOSS", "mse", "[training] loss in $STOCKCLI_TRAINING__LOSS was removed"),
        (
            "STOCKCLI_DAEMON__CRON",
            "0 0 31 2 *",
            "[daemon] cron in $STOCKCLI_DAEMON__CRON: '0 0 31 2 *' never",
        ),
        ("STOCKCLI_DATA__TICKERS", "GOOG,MSFT", "[data] tickers in $STOCKCLI_DATA__TICKERS must be a list"),
    ],
)
def test_a_bad_variable_is_named_in_one_line(
    tmp_path: Path, variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, ""), environ={variable: value})
    assert str(caught.value).startswith(expected), str(caught.value)
    assert caught.value.exit_code == 2 and "\n" not in str(caught.value)
    if variable == "STOCKCLI_DATA__TICKERS":
        assert caught.value.hint == """Write it as STOCKCLI_DATA__TICKERS='["GOOG", "MSFT"]'."""


def test_a_secret_of_the_wrong_type_is_not_shown(tmp_path: Path) -> None:
    message = _refused(tmp_path, "[storage]\ndatabase_url = ['postgresql://alice:hunter2@db/x']\n")
    assert message.startswith("[storage] database_url") and "must be a string" in message
    assert "hunter2" not in message and "alice" not in message


def test_fault_hooks_are_not_settings() -> None:
    from stockcli.config import Settings

    assert "kill_at" not in Settings.model_fields
    settings = load_settings(None, environ={"STOCKCLI_KILL_AT": "fetch:after_ticker"})
    assert not hasattr(settings, "kill_at")
