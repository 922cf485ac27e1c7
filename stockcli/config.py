"""Settings: `config.toml` < `STOCKCLI_*` environment < command-line options.

Relative paths in a config file resolve against its folder, never the working directory (cron starts
in `$HOME`). Each section is a frozen pydantic model whose field types, choices and bounds are the one
definition of what a key accepts; any failure becomes one ConfigError line (exit 2) naming
`[section] key`, where it was given, what is expected and what was given (never a pydantic dump, nor
a secret).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import stat
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from stockcli import choices
from stockcli.choices import MODEL_TYPES
from stockcli.choices import SOURCES as SOURCES  # re-exported: callers take it with Settings
from stockcli.cron import CRON_HINT, cron_problem
from stockcli.errors import ConfigError
from stockcli.redact import redact_url as redact_url  # re-exported

TICKER_PATTERN = re.compile(r"^\^?[A-Z0-9][A-Z0-9.\-=]{0,19}$")
DEFAULT_TICKERS = ("GOOG", "MSFT", "^GSPC", "^IXIC")
MAX_JUMP_FACTOR = 1000.0
MAX_CONFIG_BYTES = 1 << 20
# An MLflow tracking URI may also be http(s) or a folder.
DATABASE_SCHEMES = ("sqlite", "postgresql", "postgres", "mysql", "mssql", "oracle")
# Keys that were removed -> what replaced them: refused with this explanation, not "unknown key".
REMOVED_KEYS: dict[tuple[str, str], str] = {
    ("training", "loss"): "the model now learns the distribution of the next return by likelihood; "
    "choose it with [training] distribution (student_t or normal)",
    ("training", "calibrate"): "the shrink factor is gone; a model that does not beat the naive forecast "
    "significantly on a ticker now serves the naive forecast there (a tested per-ticker choice)",
    ("promotion", "require_beats_naive"): "promotion is a paired test against Production ([promotion] alpha, "
    "min_improvement), and each ticker serves the naive forecast unless the model beats it significantly",
    ("monitor", "mape_max"): "retrains are triggered by tests, not thresholds: [monitor] alpha "
    "(served forecast significantly worse than naive) and coverage_alpha (intervals covering too little)",
    ("monitor", "direction_min"): "directional accuracy is reported but never triggers a retrain on its own; "
    "see [monitor] alpha and coverage_alpha",
    ("monitor", "skill_min"): "the skill trigger is now a one-sided Diebold-Mariano test at [monitor] alpha",
}
# Flat names documented before `STOCKCLI_<SECTION>__<KEY>`: aliases of one key each.
LEGACY_VARIABLES: dict[str, tuple[str, str]] = {
    "STOCKCLI_DATA_DIR": ("storage", "data_dir"),
    "STOCKCLI_DATABASE_URL": ("storage", "database_url"),
    "STOCKCLI_MLFLOW_TRACKING_URI": ("mlflow", "tracking_uri"),
    "STOCKCLI_OPTUNA_STORAGE": ("tuning", "storage_url"),
}
# Relative paths resolve against the folder of the file that gave them, else the working directory.
PATH_KEYS = (("storage", "data_dir"), ("data", "csv_dir"))

# Scale-free indicators (stockcli.features.indicators). Long warm-ups (EMA 200) are left out: each
# ticker loses its warm-up sessions, and a young ticker would wait ten months.
DEFAULT_INDICATORS: tuple[dict[str, Any], ...] = (
    {"name": "ema", "window": 20},
    {"name": "ema", "window": 50},
    {"name": "rsi", "window": 14},
    {"name": "macd", "window_slow": 26, "window_fast": 12, "window_sign": 9},
    {"name": "bollinger", "window": 20, "window_dev": 2},
    {"name": "atr", "window": 14},
    {"name": "obv"},
    {"name": "mfi", "window": 14},
    {"name": "adx", "window": 14},
    {"name": "vwap", "window": 14},
    {"name": "psar", "step": 0.02, "max_step": 0.2},
    {"name": "stoch", "window": 14, "smooth_window": 3},
    {"name": "cci", "window": 20},
    {"name": "williams_r", "lbp": 14},
    {"name": "donchian", "window": 20},
    {"name": "keltner", "window": 20, "window_atr": 10},
    {"name": "roc", "window": 12},
    {"name": "cmf", "window": 20},
    {"name": "force_index", "window": 13},
    {"name": "realized_vol", "window": 5},
    {"name": "realized_vol", "window": 20},
    {"name": "ewm_vol", "decay": 0.94},
)


class SettingProblem(ValueError):
    """A rule of one key broken, raised inside a validator; `load_settings` turns it into ConfigError.

    `message` follows "[section] key in FILE": "must be above 1, got 0.5", or a sentence of its own.
    """

    def __init__(
        self, message: str, *, key: str | None = None, section: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.message, self.key, self.section, self.hint = message, key, section, hint


def _each_once(value: tuple[str, ...]) -> tuple[str, ...]:
    twice = sorted({name for name in value if value.count(name) > 1})
    if twice:
        raise SettingProblem(f"lists {', '.join(twice)} twice: {', '.join(value)}")
    return value


class _Section(BaseModel):
    # Strict: no "yes" for true, no "30" or 30.5 for an integer. List and path fields relax it.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataSettings(_Section):
    source: choices.Source = "sample"
    tickers: tuple[str, ...] = Field(
        default=DEFAULT_TICKERS,
        strict=False,
        min_length=1,
        description='a non-empty list of tickers, e.g. ["GOOG", "MSFT", "^GSPC"]',
    )
    # Covariate series fed to the model beside each ticker. None: the index tickers (^...) of `tickers`.
    context_tickers: tuple[str, ...] | None = Field(
        default=None, strict=False, description='a list of tickers, e.g. ["^GSPC"], or [] for none'
    )
    csv_dir: Path | None = Field(default=None, strict=False)
    start: date = date(2004, 8, 19)
    exchange: str = Field(default="XNYS", min_length=1)
    overlap_sessions: int = Field(default=5, ge=0, le=250)
    restatement_tolerance: float = Field(default=1e-4, gt=0, lt=1)
    # A bar moving by more than this factor from the previous valid close is rejected; 0: no check.
    max_jump_factor: float = Field(
        default=5.0, description="a number above 1 (at most 1000), or 0 to disable the check"
    )
    max_retries: int = Field(default=3, ge=0, le=20)
    retry_backoff_s: float = Field(default=1.0, ge=0, le=600)
    request_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("tickers", "context_tickers")
    @classmethod
    def _normalized(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        tickers: list[str] = []
        for raw in value:
            ticker = normalize_ticker(raw, SettingProblem)
            if ticker in tickers:
                raise SettingProblem(f"lists {ticker} twice: {', '.join(value)}")
            tickers.append(ticker)
        return tuple(tickers)

    @field_validator("start", mode="before")
    @classmethod
    def _date_text(cls, value: Any) -> Any:
        """A string from an override or the environment may spell a date as YYYY-MM-DD."""
        if isinstance(value, str):
            with contextlib.suppress(ValueError):  # else refused below, as "a date (YYYY-MM-DD)"
                return date.fromisoformat(value.strip())
        return value

    @field_validator("max_jump_factor")
    @classmethod
    def _jump_factor(cls, value: float) -> float:
        if value != 0 and not 1 < value <= MAX_JUMP_FACTOR:
            raise SettingProblem(
                f"must be above 1 (at most {MAX_JUMP_FACTOR:g}), or 0 to disable the check, got {value}"
            )
        return value

    @model_validator(mode="after")
    def _csv_needs_a_folder(self) -> DataSettings:
        if self.source == "csv" and self.csv_dir is None:
            raise SettingProblem(
                "is 'csv' but [data] csv_dir is not set",
                key="source",
                hint="Set [data] csv_dir to a folder of <TICKER>.csv files, or pass --csv-dir.",
            )
        return self

    @property
    def context_tickers_resolved(self) -> tuple[str, ...]:
        """The context series: `context_tickers` when given, else the index tickers (^...) of `tickers`."""
        if self.context_tickers is not None:
            return self.context_tickers
        return tuple(ticker for ticker in self.tickers if ticker.startswith("^"))


class StorageSettings(_Section):
    data_dir: Path = Field(default=Path("data"), strict=False)
    # URLs may hold a password: kept out of repr() (tracebacks, debug logs, test failures).
    database_url: str = Field(default="", repr=False)
    sqlite_busy_timeout_s: float = Field(default=30.0, gt=0, le=3600)

    @field_validator("data_dir", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            raise SettingProblem("must be a folder, got an empty string")
        return value


class MlflowSettings(_Section):
    tracking_uri: str = Field(default="", repr=False)
    experiment: str = Field(default="stockcli", min_length=1, max_length=200)
    model_name: str = Field(default="stockcli-lstm", min_length=1, max_length=200)

    @field_validator("experiment", "model_name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if value != value.strip():  # an empty name is refused by min_length first
            raise SettingProblem(f"must be a name without leading or trailing blanks, got {value!r}")
        return value


class FeatureSettings(_Section):
    indicators: tuple[dict[str, Any], ...] = Field(default=DEFAULT_INDICATORS, strict=False)
    ffill_limit: int = Field(default=1, ge=0, le=20)
    correlation_threshold: float = Field(default=0.0, ge=0, le=1)

    @field_validator("indicators")
    @classmethod
    def _named(cls, value: tuple[dict[str, Any], ...]) -> tuple[dict[str, Any], ...]:
        for indicator in value:
            if not isinstance(indicator.get("name"), str):
                raise SettingProblem(f'must name every entry (name = "rsi", ...), got {indicator!r}')
        # Checked for every command, not only by `process` (numpy, no pandas).
        from stockcli.features.indicators import resolve_indicators

        try:
            resolve_indicators(value)
        except ConfigError as exc:
            raise SettingProblem(exc.message, hint=exc.hint) from None
        return value


class DatasetSettings(_Section):
    sequence_length: int = Field(default=30, ge=2, le=500)
    train_fraction: float = Field(default=0.70, gt=0, lt=1)
    validation_fraction: float = Field(default=0.15, gt=0, lt=1)
    target_kind: choices.TargetKind = "return"

    @model_validator(mode="after")
    def _test_part_remains(self) -> DatasetSettings:
        total = self.train_fraction + self.validation_fraction
        if total >= 1.0:
            raise SettingProblem(
                f"must stay below 1 so that a test part remains, got {total:.2f}",
                key="train_fraction + validation_fraction",
            )
        return self


class TrainingSettings(_Section):
    model_type: choices.ModelType = "lstm"
    hidden_size: int = Field(default=64, ge=1, le=4096)
    num_layers: int = Field(default=1, ge=1, le=8)
    dropout: float = Field(default=0.2, ge=0, lt=1)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    batch_size: int = Field(default=128, ge=1, le=65536)
    num_heads: int = Field(default=4, ge=1, le=64)
    # Generous bounds: a run trained "until interrupted" (Ctrl-C keeps the best epoch) is legitimate.
    epochs: int = Field(default=30, ge=1, le=1_000_000)
    patience: int = Field(default=5, ge=1, le=1_000_000)
    grad_clip: float = Field(default=1.0, ge=0, le=1e6)
    seed: int = Field(default=42, ge=0, le=2**32 - 1)  # numpy and torch seeds are 32-bit
    device: choices.Device = "cpu"
    # torch intra-op threads; 0: half the cores this process may use. Same value, same seed: same losses.
    num_threads: int = Field(default=0, ge=0, le=256)
    distribution: choices.Distribution = "student_t"


# Each `[tuning] <name>_min` must be at most its `<name>_max`.
TUNING_RANGES = ("batch_size", "hidden_size", "num_layers", "dropout", "learning_rate")


class TuningSettings(_Section):
    n_trials: int = Field(default=20, ge=1, le=100000)
    timeout_s: float = Field(default=90.0, ge=0, le=604800)
    epochs: int = Field(default=8, ge=1, le=10000)
    storage_url: str = Field(default="", repr=False)
    pruning: bool = True
    pruner_startup_trials: int = Field(default=3, ge=0, le=10000)
    pruner_warmup_epochs: int = Field(default=2, ge=0, le=10000)
    batch_size_min: int = Field(default=32, ge=1, le=65536)
    batch_size_max: int = Field(default=256, ge=1, le=65536)
    hidden_size_min: int = Field(default=32, ge=1, le=4096)
    hidden_size_max: int = Field(default=256, ge=1, le=4096)
    num_layers_min: int = Field(default=1, ge=1, le=8)
    num_layers_max: int = Field(default=3, ge=1, le=8)
    dropout_min: float = Field(default=0.1, ge=0, lt=1)
    dropout_max: float = Field(default=0.5, ge=0, lt=1)
    learning_rate_min: float = Field(default=1e-4, gt=0, le=1)
    learning_rate_max: float = Field(default=1e-2, gt=0, le=1)
    model_types: tuple[choices.ModelType, ...] = Field(default=MODEL_TYPES, strict=False, min_length=1)
    # Tune budget of a retrain that starts from production's parameters (0: no limit).
    retrain_timeout_s: float = Field(default=30.0, ge=0, le=604800)
    warm_start: bool = True

    _once_each = field_validator("model_types")(_each_once)

    @model_validator(mode="after")
    def _ranges_not_empty(self) -> TuningSettings:
        for name in TUNING_RANGES:
            low, high = getattr(self, f"{name}_min"), getattr(self, f"{name}_max")
            if low > high:
                raise SettingProblem(
                    f"is {low}, above [tuning] {name}_max = {high}: the search range is empty",
                    key=f"{name}_min",
                )
        return self


class IntervalsSettings(_Section):
    # Step of adaptive conformal inference: how fast interval widths follow misses and hits.
    aci_gamma: float = Field(default=0.005, gt=0, le=0.1)
    # Serve the adapted levels, or the nominal ones (the state is kept either way). Off: on the
    # validation year it cost sharpness (see the README).
    aci: bool = False
    # Sessions of the rolling volatility band (the interval baseline).
    baseline_window: int = Field(default=20, ge=5, le=250)


class ForecasterSettings(_Section):
    # config.toml says what each key does and which validation figures chose its default.
    # Statistical interval candidates, besides the network (every one is scored every session).
    candidates: tuple[choices.Candidate, ...] = Field(default=choices.CANDIDATES, strict=False, min_length=1)
    # The candidate every challenger must beat by a one-sided test to be served, at every horizon
    # (`incumbent_at`); unset: blend, or garch where candidates leave blend out.
    incumbent: choices.Candidate | None = None
    # The family correction of those tests: a fixed sequence in this order (names not listed follow, in
    # candidates order), or Holm's when empty.
    test_order: tuple[choices.IntervalSource, ...] = Field(default=choices.TEST_ORDER, strict=False)
    har_estimator: choices.RangeEstimator = "garman_klass"
    # The next session's HAR design (`ml.forecasters.har.HarDesign`) and its fit; "" for no market term.
    har_overnight: typing.Literal["regressor", "added"] = "regressor"
    har_leverage: bool = False
    har_target: typing.Literal["squared_return", "range"] = "squared_return"
    har_half_life: int = Field(default=500, ge=0, le=100_000)
    har_residual_window: int = Field(default=1000, ge=0, le=100_000)
    har_market: str = "^GSPC"
    # The two candidates whose quantiles `blend` averages, and the first one's weight.
    blend: tuple[choices.Candidate, choices.Candidate] = Field(default=("har_range", "gjr"), strict=False)
    blend_weight: float = Field(default=0.75, gt=0, lt=1)
    # Sessions between refits of the statistical candidates (during `daily`); at each refit the interval
    # source is re-decided on the trailing scored sessions (fewer than the minimum: the decision stands).
    refit_sessions: int = Field(default=21, ge=1, le=250)
    selection_sessions: int = Field(default=250, ge=20, le=2000)
    min_selection_sessions: int = Field(default=125, ge=10, le=2000)
    keep_tested_choice: bool = True
    # The incumbent of the horizons above 1 where it differs (unset: `incumbent`), and their
    # min_selection_sessions.
    horizon_incumbent: choices.Candidate | None = None
    horizon_min_selection_sessions: int = Field(default=60, ge=10, le=2000)
    # The loss the selection tests compare.
    metric: choices.IntervalMetric = "pinball"
    # Sessions ahead the statistical candidates forecast (the network: 1 only).
    horizons: tuple[int, ...] = Field(
        default=choices.HORIZONS,
        strict=False,
        min_length=1,
        description="an increasing list of sessions from 1 to 250 that contains 1, e.g. [1, 5, 20]",
    )

    @field_validator("horizons")
    @classmethod
    def _horizons(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 or h > 250 for h in value):
            raise SettingProblem(f"must be sessions from 1 to 250, got {list(value)}")
        if list(value) != sorted(set(value)):
            raise SettingProblem(f"must be increasing, each once, got {list(value)}")
        if 1 not in value:
            raise SettingProblem(f"must contain 1 (the next session), got {list(value)}")
        return value

    @field_validator("har_residual_window")
    @classmethod
    def _residual_window(cls, value: int) -> int:
        from stockcli.ml.forecasters.har import MIN_HAR_ROWS

        if 0 < value < MIN_HAR_ROWS:
            raise SettingProblem(
                f"must be 0 (the whole fit period) or at least {MIN_HAR_ROWS} sessions (the tails' "
                f"quantiles need them), got {value}"
            )
        return value

    @field_validator("har_market")
    @classmethod
    def _market(cls, value: str) -> str:
        return normalize_ticker(value, SettingProblem) if value.strip() else ""

    @model_validator(mode="after")
    def _consistent(self) -> ForecasterSettings:
        if len(set(self.candidates)) != len(self.candidates):
            raise SettingProblem("names a candidate twice", key="candidates")
        for key in ("incumbent", "horizon_incumbent"):
            named = getattr(self, key)
            if named is not None and named not in self.candidates:
                raise SettingProblem(
                    f"is {named!r}, which is not among [forecasters] candidates",
                    key=key,
                    hint=f"Add {named} to candidates, or set {key} to one of {', '.join(self.candidates)}.",
                )
        if self.incumbent_at(1) not in self.candidates:
            raise SettingProblem(
                "is unset, and neither blend nor garch (its defaults) is among [forecasters] candidates",
                key="incumbent",
                hint=f"Set incumbent to one of {', '.join(self.candidates)}.",
            )
        if "blend" in self.blend or self.blend[0] == self.blend[1]:
            raise SettingProblem("must name two different candidates other than blend", key="blend")
        missing = [name for name in self.blend if name not in self.candidates]
        if "blend" in self.candidates and missing:
            raise SettingProblem(
                f"names {missing[0]!r}, which is not among [forecasters] candidates",
                key="blend",
                hint=f"Add {missing[0]} to candidates, or take blend out of them.",
            )
        if len(set(self.test_order)) != len(self.test_order):
            raise SettingProblem("names a candidate twice", key="test_order")
        for key in ("min_selection_sessions", "horizon_min_selection_sessions"):
            if getattr(self, key) > self.selection_sessions:
                raise SettingProblem(
                    f"is {getattr(self, key)}, above selection_sessions = {self.selection_sessions}", key=key
                )
        return self

    def incumbent_at(self, horizon: int) -> str:
        """The incumbent `horizon` sessions ahead: `horizon_incumbent` above 1 when set, else `incumbent`
        when set, else blend, or garch where candidates leave blend out."""
        if horizon > 1 and self.horizon_incumbent is not None:
            return self.horizon_incumbent
        if self.incumbent is not None:
            return self.incumbent
        return "blend" if "blend" in self.candidates else "garch"


class PromotionSettings(_Section):
    metric: choices.PromotionMetric = "mae"
    min_improvement: float = Field(default=0.0, ge=0, lt=1)
    # Significance level of the paired test between candidate and production.
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    # Training seeds per candidate.
    seeds: int = Field(default=1, ge=1, le=10)


class MonitorSettings(_Section):
    window_sessions: int = Field(default=20, ge=2, le=1000)
    min_samples: int = Field(default=10, ge=2, le=1000)
    cooldown_sessions: int = Field(default=10, ge=0, le=1000)
    # Significance level of the retrain trigger's test against naive.
    alpha: float = Field(default=0.05, gt=0, le=0.5)
    # Significance level of the interval-coverage test.
    coverage_alpha: float = Field(default=0.01, gt=0, le=0.5)
    # Scored sessions the risk backtests (VaR exceptions, Kupiec, Christoffersen, Basel zone, ES) read.
    risk_sessions: int = Field(default=250, ge=20, le=2000)

    @model_validator(mode="after")
    def _window_holds_the_samples(self) -> MonitorSettings:
        if self.min_samples > self.window_sessions:
            raise SettingProblem(
                f"is {self.min_samples}, above [monitor] window_sessions = {self.window_sessions}: "
                "the window could never hold enough sessions to decide",
                key="min_samples",
            )
        return self


class PredictSettings(_Section):
    # A predicted move larger than this many times the ticker's recent daily volatility is refused.
    max_move_vol: float = Field(default=10.0, gt=0, le=1000)


class DaemonSettings(_Section):
    # Checked by Settings in the exchange's time zone: valid, and fires.
    cron: str = Field(default="30 17 * * mon-fri", min_length=1)
    misfire_grace_s: int = Field(default=6 * 3600, gt=0, le=604800)


NOTIFY_URL_HINT = (
    "Write Apprise URLs such as mailto://you@example.com or json://host:port/path "
    "(https://github.com/caronc/apprise/wiki), in a list or one string separated by spaces."
)


class NotifySettings(_Section):
    # Apprise URLs hold tokens and passwords: kept out of repr(), shown only through redact_notify_url.
    urls: tuple[str, ...] = Field(default=(), strict=False, repr=False)
    events: tuple[choices.NotifyEvent, ...] = Field(
        default=("failure", "retrain", "promotion", "band_break"), strict=False
    )
    # Per try; a notification is tried twice, and its failure never changes the run's outcome.
    timeout_s: float = Field(default=10.0, gt=0, le=120)

    @field_validator("urls", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        """A string (STOCKCLI_NOTIFY__URLS) holds URLs separated by spaces; each is checked here, so that
        pydantic never quotes one (with its token) in an error."""
        from stockcli.redact import hide, notify_url_secrets, redact_notify_url

        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list | tuple) or not all(isinstance(url, str) for url in value):
            raise SettingProblem("must be a list of notification URLs (strings)", hint=NOTIFY_URL_HINT)
        hide(secret for url in value for secret in notify_url_secrets(url))
        for url in value:
            problem = _notify_url_problem(url)
            if problem:
                raise SettingProblem(f"lists {redact_notify_url(url)}, which {problem}", hint=NOTIFY_URL_HINT)
        return tuple(value)

    _once_each = field_validator("events")(_each_once)


def _notify_url_problem(url: str) -> str | None:
    """Why `url` is no notification URL Apprise can use (imported only when URLs are set), or None."""
    if not re.match(r"^[A-Za-z][A-Za-z0-9+.\-]*://\S+$", url.strip()):
        return "is not a URL (scheme://...)"
    import logging

    import apprise

    logger = logging.getLogger("apprise")  # its own "Unparseable URL" record would repeat our error
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        plugin = apprise.Apprise.instantiate(url.strip(), suppress_exceptions=True)
    finally:
        logger.setLevel(level)
    if plugin is None:
        return "Apprise does not understand (unknown scheme, or a part missing or malformed)"
    return None


class Settings(BaseSettings):
    """Everything a run needs to know, resolved: absolute paths, concrete URLs.

    Constructed directly (tests, `replace`) it reads nothing but its arguments.
    """

    # strict: pydantic-settings then converts a variable's text to the key's type ("5" -> 5) first.
    model_config = SettingsConfigDict(
        env_prefix="STOCKCLI_", env_nested_delimiter="__", extra="forbid", frozen=True, strict=True
    )

    data: DataSettings = Field(default_factory=DataSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    mlflow: MlflowSettings = Field(default_factory=MlflowSettings)
    features: FeatureSettings = Field(default_factory=FeatureSettings)
    dataset: DatasetSettings = Field(default_factory=DatasetSettings)
    training: TrainingSettings = Field(default_factory=TrainingSettings)
    tuning: TuningSettings = Field(default_factory=TuningSettings)
    intervals: IntervalsSettings = Field(default_factory=IntervalsSettings)
    forecasters: ForecasterSettings = Field(default_factory=ForecasterSettings)
    promotion: PromotionSettings = Field(default_factory=PromotionSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    predict: PredictSettings = Field(default_factory=PredictSettings)
    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)
    config_path: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the file and the environment are layered by load_settings

    @model_validator(mode="after")
    def _cron_fires(self) -> Settings:
        problem = cron_problem(self.daemon.cron, self.data.exchange)[1]
        if problem is not None:
            raise SettingProblem(problem, section="daemon", key="cron", hint=CRON_HINT)
        return self

    @model_validator(mode="after")
    def _store_urls_usable(self) -> Settings:
        """Each store URL parses and is not in memory: refused here, for every command, before any code
        could quote a piece of its password."""
        from stockcli.storage import parse_database_url

        tracking = self.mlflow.tracking_uri
        for url, what, key in (
            (self.storage.database_url, "database", "[storage] database_url (or STOCKCLI_DATABASE_URL)"),
            (self.tuning.storage_url, "Optuna storage", "[tuning] storage_url (or STOCKCLI_OPTUNA_STORAGE)"),
            (
                tracking if tracking.split(":", 1)[0].split("+", 1)[0].lower() in DATABASE_SCHEMES else "",
                "MLflow tracking store",
                "[mlflow] tracking_uri (or STOCKCLI_MLFLOW_TRACKING_URI)",
            ),
        ):
            if url:
                parse_database_url(url, what=what, key=key)  # ConfigError (exit 2), the password hidden
        return self

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
        """A copy with whole sections or section fields replaced (`replace(data={"source": "csv"})`),
        validated like a config file's (ConfigError on a bad value)."""
        values: dict[str, Any] = dict(self)
        for name, value in sections.items():
            current = values[name]
            if isinstance(value, Mapping) and isinstance(current, BaseModel):
                value = {**current.model_dump(), **value}
            values[name] = value
        return _validated(values, [], "Settings.replace()")


SECTIONS: dict[str, type[BaseModel]] = {
    name: typing.cast(type[BaseModel], info.annotation)
    for name, info in Settings.model_fields.items()
    if isinstance(info.annotation, type) and issubclass(info.annotation, _Section)
}


def find_config_file(explicit: Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: `--config`, else `STOCKCLI_CONFIG`, else `./config.toml` if present."""
    if explicit is not None:
        return explicit
    if "STOCKCLI_CONFIG" in env:
        if not env["STOCKCLI_CONFIG"].strip():
            raise ConfigError(
                "STOCKCLI_CONFIG is set but empty.",
                hint="Unset it to use ./config.toml, or give it the path of a config file.",
            )
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

    Raises ConfigError (exit 2) naming the key, where it was given, what is expected and what was given.
    """
    env = os.environ if environ is None else environ
    path = find_config_file(config_path, env)
    layers: list[_Layer] = []
    if path is not None:
        path = path.expanduser()
        layers.append(_Layer(_read_toml(path), str(path), path.resolve().parent))
    environment = _Environment(env)
    layers.append(_Layer(environment(), "the environment", Path.cwd(), environment.variables))
    given = {
        name: {key: v for key, v in table.items() if v is not None}
        for name, table in (overrides or {}).items()
    }
    layers.append(_Layer(given, "the command-line options", Path.cwd()))
    # No data dir given: `data` beside the config file, or the user's data folder without one.
    default_dir = path.resolve().parent / "data" if path else Path.home() / ".local" / "share" / "stockcli"
    values: dict[str, Any] = {"storage": {"data_dir": default_dir}}
    for layer in layers:
        for name, table in layer.values.items():
            if name not in SECTIONS:
                raise ConfigError(
                    f"Unknown section [{name}] in {layer.where}.",
                    hint=f"Known sections: {', '.join(SECTIONS)}.",
                )
            below = values.get(name)
            values[name] = (
                {**below, **table} if isinstance(below, dict) and isinstance(table, dict) else table
            )
    values["config_path"] = path.resolve() if path else None
    return _validated(values, layers, str(path) if path else "defaults")


@dataclass(frozen=True)
class _Layer:
    """The values of one source, where they came from (for messages), and the folder (`base`) its
    relative paths are made absolute against on creation."""

    values: dict[str, Any]
    where: str
    base: Path
    variables: Mapping[tuple[str, str], str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        for section, key in PATH_KEYS:
            table = self.values.get(section)
            if isinstance(table, dict) and isinstance(table.get(key), str | Path) and str(table[key]).strip():
                path = Path(table[key]).expanduser()
                resolved = path if path.is_absolute() else (self.base / path).resolve()
                self.values[section] = {**table, key: resolved}

    def origin(self, section: str | None, key: str | None) -> str | None:
        """Where this layer set `[section] key` (its variable for the environment), or None."""
        table = self.values.get(section or "")
        if isinstance(table, dict) and key in table:
            return self.variables.get((str(section), str(key)), self.where)
        return None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_config_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise _bad_file(path, f"is not valid TOML: {exc}.", hint=None) from None


def _bad_file(path: Path, problem: str, hint: str | None = "Pass the path of a TOML file.") -> ConfigError:
    return ConfigError(f"Config file {path} {problem}", hint=hint)


class _Environment(EnvSettingsSource):
    """pydantic-settings' source over `environ`, `LEGACY_VARIABLES` renamed (the nested name wins)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.variables: dict[tuple[str, str], str] = {}  # (section, key) -> "$VARIABLE", for messages
        self.environ: dict[str, str] = {}
        prefixes = tuple(f"STOCKCLI_{name.upper()}__" for name in SECTIONS)
        legacy = [(name, f"STOCKCLI_{section}__{key}") for name, (section, key) in LEGACY_VARIABLES.items()]
        nested = [(name, name) for name in environ if name.upper().startswith(prefixes)]
        for name, nested_name in legacy + nested:
            if name not in environ:
                continue
            if not environ[name].strip():  # never a silent fallback to the file's value or the default
                raise ConfigError(f"{name} is set but empty.", hint="Unset it, or give it a value.")
            self.environ[nested_name.upper()] = environ[name]
            section, _, key = nested_name[len("STOCKCLI_") :].lower().partition("__")
            self.variables[(section, key)] = f"${name}"
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self.environ, False, False, None)

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            return super().decode_complex_value(field_name, field, value)
        except ValueError:  # not JSON: refused by the key's own rule, or split by it (notify urls)
            return value


def _validated(values: Mapping[str, Any], layers: list[_Layer], fallback: str) -> Settings:
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise _config_error(exc, values, layers, fallback) from None


def read_config_text(path: Path) -> str:
    """The text of a config file; ConfigError for a folder, a device, a huge or binary file, a BOM."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise _bad_file(path, "is a folder.")
        if not stat.S_ISREG(info.st_mode):  # a FIFO would block the read below
            raise _bad_file(path, "is not a regular file (a device, pipe or socket).")
        with path.open("rb") as handle:
            content = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise _bad_file(
            path, "does not exist.", "Pass an existing file with --config or STOCKCLI_CONFIG."
        ) from None
    except OSError as exc:
        raise _bad_file(path, f"cannot be read: {exc.strerror or exc}.", hint=None) from None
    if len(content) > MAX_CONFIG_BYTES:
        raise _bad_file(path, f"is larger than {MAX_CONFIG_BYTES >> 20} MiB: not a stockcli config.")
    # tomllib would reject a byte-order mark with a puzzling "invalid statement".
    for mark, name in ((b"\xef\xbb\xbf", "UTF-8"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if content.startswith(mark):
            raise _bad_file(
                path,
                f"starts with a {name} byte-order mark, which TOML does not allow.",
                "Save it as UTF-8 without BOM (e.g. `sed -i '1s/^\\xEF\\xBB\\xBF//' FILE`).",
            )
    if b"\x00" in content:
        raise _bad_file(path, "is a binary file, not TOML text.")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad_file(
            path, f"is not UTF-8 text (invalid byte at offset {exc.start}).", "Save it as UTF-8."
        ) from None


def _config_error(
    exc: ValidationError, values: Mapping[str, Any], layers: list[_Layer], fallback: str
) -> ConfigError:
    """The one formatter: `[section] key in WHERE must be ...` for the first problem pydantic found."""
    error = exc.errors()[0]
    location = [str(part) for part in error["loc"]]
    problem = error.get("ctx", {}).get("error")
    problem = problem if isinstance(problem, SettingProblem) else None
    section = (problem and problem.section) or (location[0] if location else None)
    key = (problem and problem.key) or (location[1] if len(location) > 1 else None)
    where = next(filter(None, (layer.origin(section, key) for layer in reversed(layers))), fallback)
    label = f"[{section}] {key}"
    if problem is not None:
        message = problem.message.rstrip(".")
        joiner = " " if message.startswith(("must ", "is ", "lists ")) else ": "
        return ConfigError(f"{label} in {where}{joiner}{message}.", hint=problem.hint)
    if section not in SECTIONS:  # pragma: no cover - every Settings-level rule raises SettingProblem
        return ConfigError(f"Invalid settings in {where}: {error['msg']}.")
    if key is None:
        return ConfigError(f"[{section}] in {where} must be a table, not a value.")
    if (section, key) in REMOVED_KEYS:
        return ConfigError(
            f"{label} in {where} was removed: {REMOVED_KEYS[(section, key)]}",
            hint=f"Delete `{key}` from [{section}].",
        )
    fields = SECTIONS[section].model_fields
    if key not in fields:
        return ConfigError(
            f"Unknown key `{key}` in [{section}] of {where}.",
            hint=f"Known keys: {', '.join(sorted(fields))}.",
        )
    field = fields[key]
    value = values[section][key]
    if isinstance(value, str) and typing.get_origin(_without_none(field.annotation)) is tuple:
        parts = json.dumps([part for part in re.split(r"[,;\s]+", value) if part] or ["..."])
        example = f"{where[1:]}='{parts}'" if where.startswith("$") else f"{key} = {parts}"
        return ConfigError(
            f"{label} in {where} must be a list, not the string {value!r}.", hint=f"Write it as {example}."
        )
    shown = repr(value) if field.repr else "a value not shown (it may hold a password)"
    return ConfigError(f"{label} in {where} must be {_expected(field)}, got {shown}.")


def _without_none(annotation: Any) -> Any:
    options = [option for option in typing.get_args(annotation) if option is not type(None)]
    return options[0] if len(options) == 1 and type(None) in typing.get_args(annotation) else annotation


_KINDS: dict[Any, str] = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    date: "a date (YYYY-MM-DD)",
    Path: "a path",
}
_SIGNS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}


def _expected(field: FieldInfo) -> str:
    """What a key accepts, in words: its type, its choices and its bounds."""
    if field.description:
        return field.description
    annotation = _without_none(field.annotation)
    non_empty = any(getattr(rule, "min_length", 0) for rule in field.metadata)
    if typing.get_origin(annotation) is tuple:
        inner = typing.get_args(annotation)[0]
        items = _choices(inner) or ("tables" if typing.get_origin(inner) is dict else "strings")
        return f"a {'non-empty ' if non_empty else ''}list of {items}"
    if _choices(annotation):
        return f"one of {_choices(annotation)}"
    if non_empty and annotation is str:
        return "a non-empty string"
    bounds = {name: getattr(rule, name) for rule in field.metadata for name in _SIGNS if hasattr(rule, name)}
    if bounds.keys() == {"ge", "le"}:
        return f"{_KINDS[annotation]} from {_number(bounds['ge'])} to {_number(bounds['le'])}"
    words = [f"{_SIGNS[name]} {_number(value)}" for name, value in bounds.items()]  # pydantic: lower first
    return " ".join([_KINDS.get(annotation, str(annotation)), " and ".join(words)]).strip()


def _choices(annotation: Any) -> str:
    """The choices of a Literal as `"a", "b"`; empty for any other type."""
    if typing.get_origin(annotation) is not typing.Literal:
        return ""
    return ", ".join(f'"{choice}"' for choice in typing.get_args(annotation))


def _number(value: Any) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def normalize_ticker(ticker: str, error: Callable[..., Exception] = ConfigError) -> str:
    """Upper-case a ticker and check its shape; raises `error` (a validator's: SettingProblem) for a
    malformed one."""
    cleaned = ticker.strip().upper()
    if not TICKER_PATTERN.fullmatch(cleaned):
        raise error(
            f"Malformed ticker {ticker!r}.",
            hint="A ticker is letters, digits, '.', '-' or '=', optionally starting with '^' (e.g. MSFT, BRK-B, ^GSPC).",
        )
    return cleaned
