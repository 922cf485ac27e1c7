"""Settings: `config.toml` < `STOCKCLI_*` environment < command-line options.

One `Settings` object is built at the entry point (CLI, daemon, web) and passed down. Nothing here
reads files or the environment at import time. Relative paths in a config file resolve against the
folder of that file, never the working directory (cron starts in `$HOME`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from stockcli.errors import ConfigError

TICKER_PATTERN = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-=]{0,19}$")
SOURCES = ("sample", "csv", "yahoo")
TARGET_KINDS = ("return", "price")
MODEL_TYPES = ("lstm", "lstm_attention", "lstm_cross_attention")
LOSSES = ("mse", "mae", "huber")
METRICS = ("mae", "rmse", "mape")
DEVICES = ("cpu", "cuda", "auto")

DEFAULT_INDICATORS: tuple[dict[str, Any], ...] = (
    {"name": "ema", "window": 50},
    {"name": "ema", "window": 200},
    {"name": "rsi", "window": 14},
    {"name": "macd", "window_slow": 26, "window_fast": 12, "window_sign": 9},
    {"name": "bollinger", "window": 15, "window_dev": 2},
    {"name": "atr", "window": 14},
    {"name": "obv"},
    {"name": "mfi", "window": 14},
    {"name": "adx", "window": 14},
    {"name": "sma", "window": 50},
    {"name": "vwap", "window": 14},
    {"name": "psar", "step": 0.02, "max_step": 0.2},
    {"name": "stoch", "window": 14, "smooth_window": 3},
    {"name": "cci", "window": 20},
    {"name": "williams_r", "lbp": 14},
    {"name": "donchian", "window": 20},
    {"name": "keltner", "window": 20, "window_atr": 10},
    {"name": "log_return"},
    {"name": "roc", "window": 12},
    {"name": "volume_sma", "window": 20},
    {"name": "cmf", "window": 20},
    {"name": "force_index", "window": 13},
)


@dataclass(frozen=True)
class DataSettings:
    source: str = "sample"
    tickers: tuple[str, ...] = ("GOOG", "MSFT", "^GSPC", "^IXIC")
    csv_dir: Path | None = None
    start: date = date(2004, 8, 19)
    exchange: str = "XNYS"
    overlap_sessions: int = 5
    restatement_tolerance: float = 1e-4
    # A bar whose prices move by more than this factor from the previous valid close is rejected
    # ("implausible jump"); 0 disables the check.
    max_jump_factor: float = 5.0
    max_retries: int = 3
    retry_backoff_s: float = 1.0
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class StorageSettings:
    data_dir: Path = Path("data")
    # URLs may hold a password: kept out of repr() (tracebacks, debug logs, test failures).
    database_url: str = field(default="", repr=False)
    sqlite_busy_timeout_s: float = 30.0


@dataclass(frozen=True)
class MlflowSettings:
    tracking_uri: str = field(default="", repr=False)
    experiment: str = "stockcli"
    model_name: str = "stockcli-lstm"


@dataclass(frozen=True)
class FeatureSettings:
    indicators: tuple[dict[str, Any], ...] = DEFAULT_INDICATORS
    ffill_limit: int = 1
    correlation_threshold: float = 0.0


@dataclass(frozen=True)
class DatasetSettings:
    sequence_length: int = 30
    train_fraction: float = 0.70
    validation_fraction: float = 0.15
    target_kind: str = "return"


@dataclass(frozen=True)
class TrainingSettings:
    model_type: str = "lstm"
    hidden_size: int = 64
    num_layers: int = 1
    dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 64
    num_heads: int = 4
    epochs: int = 50
    patience: int = 8
    loss: str = "mse"
    grad_clip: float = 1.0
    seed: int = 42
    device: str = "cpu"
    calibrate: bool = True
    # torch intra-op threads for training and tuning; 0: half the cores this process may use (at
    # least 1). Same value, same seed: same losses.
    num_threads: int = 0


@dataclass(frozen=True)
class TuningSettings:
    n_trials: int = 20
    timeout_s: float = 120.0
    epochs: int = 15
    storage_url: str = field(default="", repr=False)
    pruning: bool = True
    pruner_startup_trials: int = 3
    pruner_warmup_epochs: int = 3
    batch_size_min: int = 16
    batch_size_max: int = 128
    hidden_size_min: int = 32
    hidden_size_max: int = 256
    num_layers_min: int = 1
    num_layers_max: int = 3
    dropout_min: float = 0.1
    dropout_max: float = 0.5
    learning_rate_min: float = 1e-4
    learning_rate_max: float = 1e-2
    model_types: tuple[str, ...] = MODEL_TYPES


@dataclass(frozen=True)
class PromotionSettings:
    metric: str = "mae"
    min_improvement: float = 0.0
    require_beats_naive: bool = False


@dataclass(frozen=True)
class MonitorSettings:
    window_sessions: int = 20
    min_samples: int = 10
    mape_max: float = 0.03
    direction_min: float = 0.40
    skill_min: float = -0.10
    cooldown_sessions: int = 10


@dataclass(frozen=True)
class DaemonSettings:
    cron: str = "30 17 * * mon-fri"
    misfire_grace_s: int = 6 * 3600


@dataclass(frozen=True)
class Settings:
    """Everything a run needs to know, resolved: absolute paths, concrete URLs."""

    data: DataSettings = field(default_factory=DataSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    mlflow: MlflowSettings = field(default_factory=MlflowSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    dataset: DatasetSettings = field(default_factory=DatasetSettings)
    training: TrainingSettings = field(default_factory=TrainingSettings)
    tuning: TuningSettings = field(default_factory=TuningSettings)
    promotion: PromotionSettings = field(default_factory=PromotionSettings)
    monitor: MonitorSettings = field(default_factory=MonitorSettings)
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    config_path: Path | None = None
    # Test hook: the name of a checkpoint at which the process kills itself (STOCKCLI_KILL_AT).
    kill_at: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir

    @property
    def database_url(self) -> str:
        return self.storage.database_url or f"sqlite:///{self.data_dir / 'stockcli.db'}"

    @property
    def mlflow_tracking_uri(self) -> str:
        return self.mlflow.tracking_uri or f"sqlite:///{self.data_dir / 'mlflow.db'}"

    @property
    def mlflow_artifact_location(self) -> str:
        return (self.data_dir / "mlartifacts").as_uri()

    @property
    def optuna_storage_url(self) -> str:
        return self.tuning.storage_url or f"sqlite:///{self.data_dir / 'optuna.db'}"

    def replace(self, **sections: Any) -> Settings:
        """A copy with whole sections or section fields replaced: `replace(data={"source": "csv"})`."""
        changes: dict[str, Any] = {}
        for name, value in sections.items():
            current = getattr(self, name)
            if isinstance(value, Mapping) and dataclasses.is_dataclass(current):
                changes[name] = dataclasses.replace(current, **value)  # type: ignore[type-var]
            else:
                changes[name] = value
        return dataclasses.replace(self, **changes)


_SECTION_TYPES: dict[str, type] = {
    "data": DataSettings,
    "storage": StorageSettings,
    "mlflow": MlflowSettings,
    "features": FeatureSettings,
    "dataset": DatasetSettings,
    "training": TrainingSettings,
    "tuning": TuningSettings,
    "promotion": PromotionSettings,
    "monitor": MonitorSettings,
    "daemon": DaemonSettings,
}


def find_config_file(explicit: Path | None = None, environ: Mapping[str, str] | None = None) -> Path | None:
    """The config file to read: `--config`, else `STOCKCLI_CONFIG`, else `./config.toml` if present."""
    env = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if env.get("STOCKCLI_CONFIG"):
        return Path(env["STOCKCLI_CONFIG"])
    local = Path.cwd() / "config.toml"
    return local if local.is_file() else None


def load_settings(
    config_path: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build Settings from the config file, then `STOCKCLI_*` variables, then `overrides`.

    Raises ConfigError (exit 2) naming the key and what is expected.
    """
    env = os.environ if environ is None else environ
    path = find_config_file(config_path, env)
    raw: dict[str, Any] = {}
    base_dir = Path.cwd()
    where = "defaults"
    if path is not None:
        path = path.expanduser()
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"Config file {path} does not exist.",
                hint="Pass an existing file with --config or STOCKCLI_CONFIG.",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"Config file {path} cannot be read: {exc}.") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"Config file {path} is not valid TOML: {exc}.") from None
        base_dir = path.resolve().parent
    else:
        base_dir = Path.home() / ".local" / "share" / "stockcli"

    sections: dict[str, dict[str, Any]] = {}
    for section_name, table in raw.items():
        if section_name not in _SECTION_TYPES:
            raise ConfigError(
                f"Unknown section [{section_name}] in {where}.",
                hint=f"Known sections: {', '.join(_SECTION_TYPES)}.",
            )
        if not isinstance(table, dict):
            raise ConfigError(f"[{section_name}] in {where} must be a table, not a value.")
        sections[section_name] = dict(table)

    env_map = {
        "STOCKCLI_DATA_DIR": ("storage", "data_dir"),
        "STOCKCLI_DATABASE_URL": ("storage", "database_url"),
        "STOCKCLI_MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
        "STOCKCLI_OPTUNA_STORAGE": ("tuning", "storage_url"),
    }
    env_values: dict[tuple[str, str], Any] = {}
    for var, target in env_map.items():
        if env.get(var):
            env_values[target] = env[var]
    for (section_name, key_name), value in env_values.items():
        sections.setdefault(section_name, {})[key_name] = value
    for section_name, values in (overrides or {}).items():
        for key_name, value in values.items():
            if value is not None:
                sections.setdefault(section_name, {})[key_name] = value

    built: dict[str, Any] = {}
    for section_name, cls in _SECTION_TYPES.items():
        built[section_name] = _build_section(section_name, cls, sections.get(section_name, {}), where)

    # Paths from the file resolve against its folder; those from the environment against the cwd.
    storage: StorageSettings = built["storage"]
    data_dir_base = Path.cwd() if ("storage", "data_dir") in env_values else base_dir
    if path is None and "data_dir" not in sections.get("storage", {}):
        data_dir = base_dir
    else:
        data_dir = _resolve(storage.data_dir, data_dir_base)
    built["storage"] = dataclasses.replace(storage, data_dir=data_dir)
    data: DataSettings = built["data"]
    if data.csv_dir is not None:
        built["data"] = dataclasses.replace(data, csv_dir=_resolve(data.csv_dir, base_dir))

    settings = Settings(
        **built, config_path=path.resolve() if path else None, kill_at=env.get("STOCKCLI_KILL_AT")
    )
    _validate(settings, where)
    return settings


def _resolve(value: Path, base: Path) -> Path:
    value = value.expanduser()
    return value if value.is_absolute() else (base / value).resolve()


def _build_section(section_name: str, cls: type, values: Mapping[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in known:
            raise ConfigError(
                f"Unknown key `{key}` in [{section_name}] of {where}.",
                hint=f"Known keys: {', '.join(sorted(known))}.",
            )
        kwargs[key] = _coerce(f"[{section_name}] {key}", hints[key], value, where)
    return cls(**kwargs)


def _type_name(expected: Any) -> str:
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        date: "a date (YYYY-MM-DD)",
        Path: "a path",
    }
    if expected in names:
        return names[expected]
    origin = typing.get_origin(expected)
    if origin is tuple:
        inner = typing.get_args(expected)[0]
        return "a list of tables" if inner is not str else "a list of strings"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(expected) if a is not type(None))
    return str(expected)


def _coerce(label: str, expected: Any, value: Any, where: str) -> Any:
    def wrong() -> ConfigError:
        return ConfigError(
            f"{label} in {where} must be {_type_name(expected)}, got {value!r}.",
        )

    origin = typing.get_origin(expected)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(expected) if a is not type(None)]
        if value is None or value == "":
            return None
        return _coerce(label, options[0], value, where)
    if expected is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        raise wrong()
    if expected is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise wrong() from None
        raise wrong()
    if expected is str:
        if isinstance(value, str):
            return value
        raise wrong()
    if expected is Path:
        if isinstance(value, str | Path) and str(value):
            return Path(value)
        raise wrong()
    if expected is date:
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            try:
                return date.fromisoformat(value)
            except ValueError:
                raise wrong() from None
        raise wrong()
    if origin is tuple:
        inner = typing.get_args(expected)[0]
        if isinstance(value, str) and inner is str:
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list | tuple):
            raise wrong()
        if inner is str:
            if not all(isinstance(v, str) for v in value):
                raise wrong()
            return tuple(value)
        if not all(isinstance(v, dict) for v in value):
            raise wrong()
        return tuple(dict(v) for v in value)
    raise wrong()  # pragma: no cover - every field type is handled above


def normalize_ticker(ticker: str) -> str:
    """Upper-case a ticker and check its shape; raises ConfigError for a malformed one."""
    cleaned = ticker.strip().upper()
    if not TICKER_PATTERN.fullmatch(cleaned):
        raise ConfigError(
            f"Malformed ticker {ticker!r}.",
            hint="A ticker is letters, digits, '.', '-' or '=', optionally starting with '^' (e.g. MSFT, BRK-B, ^GSPC).",
        )
    return cleaned


def _check_fraction(label: str, value: float, where: str, *, low: float = 0.0, high: float = 1.0) -> None:
    if not (low < value < high):
        raise ConfigError(f"{label} in {where} must be between {low} and {high} (exclusive), got {value}.")


def _validate(settings: Settings, where: str) -> None:
    data = settings.data
    if data.source not in SOURCES:
        raise ConfigError(
            f"[data] source in {where} must be one of {', '.join(SOURCES)}, got {data.source!r}."
        )
    if not data.tickers:
        raise ConfigError(f"[data] tickers in {where} is empty.", hint="List at least one ticker.")
    tickers = tuple(normalize_ticker_in(t, where) for t in data.tickers)
    if len(set(tickers)) != len(tickers):
        raise ConfigError(f"[data] tickers in {where} lists a ticker twice: {', '.join(data.tickers)}.")
    object.__setattr__(data, "tickers", tickers)
    if data.source == "csv" and data.csv_dir is None:
        raise ConfigError(
            f"[data] source is 'csv' in {where} but [data] csv_dir is not set.",
            hint="Set [data] csv_dir to a folder of <TICKER>.csv files, or pass --csv-dir.",
        )
    if data.max_jump_factor != 0 and not data.max_jump_factor > 1:
        raise ConfigError(
            f"[data] max_jump_factor in {where} must be above 1, or 0 to disable the check, "
            f"got {data.max_jump_factor}."
        )
    for label, number in (
        ("[data] overlap_sessions", data.overlap_sessions),
        ("[data] max_retries", data.max_retries),
        ("[features] ffill_limit", settings.features.ffill_limit),
    ):
        if number < 0:
            raise ConfigError(f"{label} in {where} must be 0 or more, got {number}.")
    ds = settings.dataset
    if ds.sequence_length < 2:
        raise ConfigError(
            f"[dataset] sequence_length in {where} must be at least 2, got {ds.sequence_length}."
        )
    _check_fraction("[dataset] train_fraction", ds.train_fraction, where)
    _check_fraction("[dataset] validation_fraction", ds.validation_fraction, where)
    if ds.train_fraction + ds.validation_fraction >= 1.0:
        raise ConfigError(
            f"[dataset] train_fraction + validation_fraction in {where} must stay below 1 "
            f"so that a test part remains, got {ds.train_fraction + ds.validation_fraction:.2f}."
        )
    if ds.target_kind not in TARGET_KINDS:
        raise ConfigError(
            f"[dataset] target_kind in {where} must be one of {', '.join(TARGET_KINDS)}, got {ds.target_kind!r}."
        )
    tr = settings.training
    if tr.model_type not in MODEL_TYPES:
        raise ConfigError(
            f"[training] model_type in {where} must be one of {', '.join(MODEL_TYPES)}, got {tr.model_type!r}."
        )
    if tr.loss not in LOSSES:
        raise ConfigError(f"[training] loss in {where} must be one of {', '.join(LOSSES)}, got {tr.loss!r}.")
    if tr.device not in DEVICES:
        raise ConfigError(
            f"[training] device in {where} must be one of {', '.join(DEVICES)}, got {tr.device!r}."
        )
    for label, number in (
        ("[training] epochs", tr.epochs),
        ("[training] hidden_size", tr.hidden_size),
        ("[training] num_layers", tr.num_layers),
        ("[training] batch_size", tr.batch_size),
        ("[training] num_heads", tr.num_heads),
        ("[tuning] epochs", settings.tuning.epochs),
        ("[monitor] window_sessions", settings.monitor.window_sessions),
    ):
        if number < 1:
            raise ConfigError(f"{label} in {where} must be at least 1, got {number}.")
    if tr.num_threads < 0:
        raise ConfigError(
            f"[training] num_threads in {where} must be 0 (automatic) or more, got {tr.num_threads}."
        )
    if not (0.0 <= tr.dropout < 1.0):
        raise ConfigError(f"[training] dropout in {where} must be in [0, 1), got {tr.dropout}.")
    tu = settings.tuning
    for name in tu.model_types:
        if name not in MODEL_TYPES:
            raise ConfigError(
                f"[tuning] model_types in {where} lists {name!r}; known: {', '.join(MODEL_TYPES)}."
            )
    for low_name in ("batch_size", "hidden_size", "num_layers", "dropout", "learning_rate"):
        low, high = getattr(tu, f"{low_name}_min"), getattr(tu, f"{low_name}_max")
        if low > high:
            raise ConfigError(f"[tuning] {low_name}_min ({low}) is above {low_name}_max ({high}) in {where}.")
    if settings.promotion.metric not in METRICS:
        raise ConfigError(
            f"[promotion] metric in {where} must be one of {', '.join(METRICS)}, got {settings.promotion.metric!r}."
        )
    for indicator in settings.features.indicators:
        if not isinstance(indicator.get("name"), str):
            raise ConfigError(
                f"[features] indicators in {where}: every entry needs a `name`, got {indicator!r}."
            )


def normalize_ticker_in(ticker: str, where: str) -> str:
    try:
        return normalize_ticker(ticker)
    except ConfigError as exc:
        raise ConfigError(f"[data] tickers in {where}: {exc.message}", hint=exc.hint) from None


def redact_url(url: str) -> str:
    """A database URL (or a message holding one) with its passwords hidden, for output and logs.

    Hides the password of `scheme://user:password@host`, also with an empty user name, and the value
    of `password=` parameters (`?password=...`, libpq's `password=...`).
    """
    text = re.sub(r"(?P<head>://[^:/@]*:)[^@]*(?P<tail>@)", r"\g<head>***\g<tail>", url)
    return re.sub(r"(?P<key>\b(?:password|passwd|pwd)=)[^&\s'\"]*", r"\g<key>***", text, flags=re.IGNORECASE)
