"""The `--json` shape of every command: one pydantic model per command (`SHAPES`), one name per figure.

`output.emit` checks each object against its model before printing it; the README's "JSON output"
table lists the same keys (tests/test_json_shapes.py holds the three equal). A command that prints
its service's result dataclass takes the fields from it (`result_shape`).
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from stockcli.services.backtest import BacktestResult
from stockcli.services.build import BuildResult
from stockcli.services.process import ProcessResult
from stockcli.services.retrain import RetrainResult
from stockcli.services.train import TrainSummary
from stockcli.services.tune import TuneResult

Block = dict[str, Any]


class Shape(BaseModel):
    """A JSON object with exactly these keys."""

    model_config = ConfigDict(extra="forbid")


def result_shape(result: type, /, **fields: Any) -> type[Shape]:
    """The shape of a service's result dataclass: `fields` that it lacks first, then each of its
    fields, all required, with its own type unless `fields` gives another (a block with `to_json`)."""
    own = {field.name: fields.pop(field.name, (field.type, ...)) for field in dataclasses.fields(result)}
    # String annotations resolve in the dataclass's own module.
    return create_model(
        f"{result.__name__}Json", __base__=Shape, __module__=result.__module__, **fields, **own
    )


ProcessJson = result_shape(ProcessResult, status=(str, ...))
BuildJson = result_shape(BuildResult, status=(str, ...))
TuneJson = result_shape(TuneResult, status=(str, ...))
BacktestJson = result_shape(BacktestResult)


class ErrorJson(Shape):
    status: str
    error: str
    exit_code: int


class FetchJson(Shape):
    status: str
    tickers: dict[str, Block]


TrainJson = result_shape(TrainSummary, test_metrics=(Block, ...))


class PromotionWindowJson(Shape):
    start: date | None
    end: date | None
    n_days: int
    tickers: list[str]
    dataset_run_id: str


class PromotionDecisionJson(Shape):
    metric: str
    candidate_value: float | None
    production_value: float | None
    naive_value: float | None
    improvement: float | None
    improvement_ci: list[float | None]
    p_value: float | None
    test: str
    alpha: float
    would_promote: bool
    promoted: bool
    dry_run: bool
    reason: str
    promotion_id: int


class PromoteJson(Shape):
    candidate: Block
    production: Block | None
    naive: Block
    window: PromotionWindowJson
    decision: PromotionDecisionJson
    selection: Block


class ModelVersionJson(Shape):
    version: str
    aliases: list[str]
    created_at: datetime
    training_run_id: str | None
    dataset_run_id: str | None
    model_type: str | None
    tickers: list[str]
    test_metrics: dict[str, float | None]
    source: str
    status: str
    note: str | None


class ModelsJson(Shape):
    model: str
    versions: list[ModelVersionJson]


class PredictionJson(Shape):
    ticker: str
    base_date: date
    base_close: float
    predicted_close: float
    change_pct: float
    target_date: date
    lower_80: float | None
    upper_80: float | None
    lower_95: float | None
    upper_95: float | None
    median: float | None
    p_up: float | None
    p_up_source: str | None
    source: str
    p_value: float | None
    interval_source: str
    interval_p_value: float | None
    unseen: bool
    model_version: str
    dataset_run_id: str
    horizons: dict[str, Block]


class FailedJson(Shape):
    ticker: str
    reason: str
    kind: str
    predictable_from: date | None


class PredictJson(Shape):
    as_of: date
    model_version: str
    target_date: date
    predictions: list[PredictionJson]
    failed: list[FailedJson]
    files: list[str]


class MonitorJson(Shape):
    as_of: date
    model_version: str | None
    evaluated: int
    pending: int
    overall: Block
    per_ticker: dict[str, Block]
    retrain_needed: bool
    triggers: list[str]
    reason: str
    cooldown_active: bool
    last_retrain_as_of: date | None


class DailyRetrainJson(Shape):
    ran: bool
    reason: str
    model_version: str | None
    promotion_reason: str | None


class DailyJson(Shape):
    status: str
    as_of: date
    model_version: str | None
    predictions: list[PredictionJson]
    failed: list[FailedJson]
    monitor: Block
    retrained: bool
    promoted: bool
    bootstrapped: bool
    retrain: DailyRetrainJson | None
    fetch_status: str | None


RetrainJson = result_shape(RetrainResult, test_metrics=(Block | None, ...))


class ScheduleJson(Shape):
    next_runs: list[datetime]


class CloseSeriesJson(Shape):
    ticker: str
    dates: list[date]
    closes: list[float | None]


class ReportJson(Shape):
    predictions: list[Block]
    performance: list[Block]
    models: list[Block]
    runs: list[Block]
    promotions: list[Block]
    production_version: str | None
    window_sessions: int
    as_of: date | None
    generated_at: datetime
    recent_closes: list[CloseSeriesJson]
    notes: list[str]
    risk: list[Block]
    html: str | None = None  # only with --html


class NotifyJson(Shape):
    urls: list[str]
    events: list[str]
    timeout_s: float


class DeliveryJson(Shape):
    url: str
    delivered: bool
    attempts: int
    problem: str | None


class NotifyTestJson(Shape):
    deliveries: list[DeliveryJson]


class DbUpgradeJson(Shape):
    database: str
    before: str | None = Field(alias="from")
    after: str | None = Field(alias="to")
    head: str | None


class DbCurrentJson(Shape):
    database: str
    current: str | None
    head: str | None
    up_to_date: bool


# Each command's `--json` shape, under the name `output.emit` and the README's table give it.
SHAPES: dict[str, type[Shape]] = {
    "fetch": FetchJson,
    "process": ProcessJson,
    "build": BuildJson,
    "tune": TuneJson,
    "train": TrainJson,
    "promote": PromoteJson,
    "models": ModelsJson,
    "predict": PredictJson,
    "monitor": MonitorJson,
    "daily": DailyJson,
    "retrain": RetrainJson,
    "daemon --show-schedule": ScheduleJson,
    "backtest": BacktestJson,
    "report": ReportJson,
    "notify": NotifyJson,
    "notify --test": NotifyTestJson,
    "db upgrade": DbUpgradeJson,
    "db current": DbCurrentJson,
    "error": ErrorJson,
}
