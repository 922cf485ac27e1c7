"""SQLAlchemy 2 typed models for stockcli's own tables (schema changes only through `migrations/`).

Prices are doubles and volumes big integers; arrays are `.npy` bytes (no pickle), specs JSON.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Date, DateTime, Double, Index, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    # A column's type follows its annotation (`| None`: nullable) unless `mapped_column` names one.
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        float: Double,
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


# A stored bar's values (RawStockData's columns), in the order every source returns them.
PRICE_COLUMNS = ("open", "high", "low", "close")
BAR_COLUMNS = (*PRICE_COLUMNS, "volume")


class RawStockData(Base):
    """One daily bar [ticker, date]."""

    __tablename__ = "raw_stock_data"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    open: Mapped[float]
    high: Mapped[float]
    low: Mapped[float]
    close: Mapped[float]
    volume: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    fetched_at: Mapped[datetime]


class Dataset(Base):
    """A frozen dataset made by `process` [run_id], plus its aligned arrays."""

    __tablename__ = "processed_feature_data"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime]
    as_of: Mapped[date]
    tickers: Mapped[list[str]]
    start_date: Mapped[date]
    end_date: Mapped[date]
    n_sessions: Mapped[int]
    feature_names: Mapped[list[str]]
    feature_spec: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Arrays of the panel (`features.dataset.Panel`), rows by session; dates as int64 ordinals.
    dates_npy: Mapped[bytes]
    features_npy: Mapped[bytes]
    closes_npy: Mapped[bytes]
    target_price_npy: Mapped[bytes]
    target_return_npy: Mapped[bytes]
    # Revision 0002: bit 1 a usable row, bit 2 a real bar (NULL: an old dataset, to process again).
    mask_npy: Mapped[bytes | None]


class ScaledFeatureSet(Base):
    """The windows of one split part of a built dataset [run_id, set_name]."""

    __tablename__ = "scaled_feature_sets"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    set_name: Mapped[str] = mapped_column(String(16), primary_key=True)
    n_windows: Mapped[int]
    first_target_date: Mapped[date | None]
    last_target_date: Mapped[date | None]
    # x_npy: the part's scaled slab (sessions, series, features); dates as int64 ordinals.
    x_npy: Mapped[bytes]
    y_npy: Mapped[bytes]
    base_dates_npy: Mapped[bytes]
    target_dates_npy: Mapped[bytes]
    base_closes_npy: Mapped[bytes]
    target_closes_npy: Mapped[bytes]
    created_at: Mapped[datetime]
    # Revision 0002: windows as (row in the slab, series) pairs and the context covariate rows.
    windows_npy: Mapped[bytes | None]
    context_npy: Mapped[bytes | None]


class Scaler(Base):
    """Scaler parameters of a built dataset, fit on its training windows only [run_id]."""

    __tablename__ = "scalers"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    sequence_length: Mapped[int]
    params: Mapped[dict[str, Any]]
    split: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]


class OptimizationResult(Base):
    """Best hyper-parameters found by `tune` for a dataset [run_id]."""

    __tablename__ = "optimization_results"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_name: Mapped[str] = mapped_column(String(128))
    best_params: Mapped[dict[str, Any]]
    best_value: Mapped[float | None]
    n_trials: Mapped[int]
    n_complete: Mapped[int]
    n_pruned: Mapped[int]
    updated_at: Mapped[datetime]


class LatestPrediction(Base):
    """A daily next-session prediction [target_date, ticker, model_version]."""

    __tablename__ = "latest_predictions"

    target_date: Mapped[date] = mapped_column(primary_key=True)
    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    as_of: Mapped[date]
    base_date: Mapped[date]
    base_close: Mapped[float]
    predicted_close: Mapped[float]
    dataset_run_id: Mapped[str] = mapped_column(String(64))
    pipeline_run_id: Mapped[int | None]
    created_at: Mapped[datetime]
    # Revision 0002: quantiles of the next close (2.5 .. 97.5%), P(up), what was served and why.
    q025: Mapped[float | None]
    q10: Mapped[float | None]
    q50: Mapped[float | None]
    q90: Mapped[float | None]
    q975: Mapped[float | None]
    p_up: Mapped[float | None]
    source: Mapped[str | None] = mapped_column(String(16))  # model | naive
    p_value: Mapped[float | None]
    interval_source: Mapped[str | None] = mapped_column(String(16))  # model | garch | rolling
    interval_p_value: Mapped[float | None]
    unseen: Mapped[bool | None]
    detail: Mapped[dict[str, Any] | None]  # every candidate's
    # Revision 0003: why a restated history voided it; a void row is never scored, shown or counted.
    void_reason: Mapped[str | None] = mapped_column(Text)


class ModelPerformance(Base):
    """A matured prediction scored against the real close [target_date, ticker, model_version]."""

    __tablename__ = "model_performance_log"

    target_date: Mapped[date] = mapped_column(primary_key=True)
    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    base_date: Mapped[date]
    base_close: Mapped[float]
    predicted_close: Mapped[float]
    actual_close: Mapped[float]
    abs_error: Mapped[float]
    abs_pct_error: Mapped[float]
    naive_abs_error: Mapped[float]
    evaluated_at: Mapped[datetime]
    # Revision 0002: `ml.metrics.direction_scores` (1 hit, 0 miss, 0.5 no change forecast, NULL flat).
    direction_score: Mapped[float | None]
    q025: Mapped[float | None]
    q10: Mapped[float | None]
    q50: Mapped[float | None]
    q90: Mapped[float | None]
    q975: Mapped[float | None]
    source: Mapped[str | None] = mapped_column(String(16))
    interval_source: Mapped[str | None] = mapped_column(String(16))
    detail: Mapped[dict[str, Any] | None]
    void_reason: Mapped[str | None] = mapped_column(Text)  # revision 0003


class PipelineRun(Base):
    """The run ledger: one row per command run."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (Index("ix_pipeline_runs_command_started", "command", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(String(32))
    as_of: Mapped[date | None]
    status: Mapped[str] = mapped_column(String(16))  # running, ok, partial, failed, skipped
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    duration_s: Mapped[float | None]
    pid: Mapped[int | None]
    host: Mapped[str | None] = mapped_column(String(255))
    error: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any] | None]
    # Revision 0004: what went wrong without changing the outcome (a notification not delivered).
    warnings: Mapped[list[str] | None]


class Promotion(Base):
    """The audit of every promotion decision, promoted or not."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    decided_at: Mapped[datetime]
    candidate_version: Mapped[str] = mapped_column(String(32))
    production_version: Mapped[str | None] = mapped_column(String(32))
    metric: Mapped[str] = mapped_column(String(16))
    candidate_metrics: Mapped[dict[str, Any]]
    production_metrics: Mapped[dict[str, Any] | None]
    naive_metrics: Mapped[dict[str, Any]]
    window_start: Mapped[date | None]
    window_end: Mapped[date | None]
    dataset_run_id: Mapped[str | None] = mapped_column(String(64))
    promoted: Mapped[bool]
    dry_run: Mapped[bool] = mapped_column(default=False)
    reason: Mapped[str] = mapped_column(Text)
    pipeline_run_id: Mapped[int | None]
    # Revision 0002: the paired test (p-value, improvement and its 95% interval), per-ticker decisions.
    test: Mapped[str | None] = mapped_column(String(32))
    p_value: Mapped[float | None]
    improvement: Mapped[float | None]
    improvement_low: Mapped[float | None]
    improvement_high: Mapped[float | None]
    selection: Mapped[dict[str, Any] | None]


class IntervalState(Base):
    """Adaptive conformal inference state (Gibbs & Candes 2021) of one ticker and level [ticker, level]:
    `alpha`, the next interval's miscoverage, restarts when the model version or source changes."""

    __tablename__ = "interval_state"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    level: Mapped[int] = mapped_column(primary_key=True)  # 80 or 95
    model_version: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    alpha: Mapped[float]
    n_updates: Mapped[int]
    misses: Mapped[int]
    last_target_date: Mapped[date | None]
    updated_at: Mapped[datetime]


class ServingSelection(Base):
    """What a model version serves for one ticker [model_version, ticker], decided by a paired test
    on the promotion window; ticker "*" is the decision for tickers the model has not seen."""

    __tablename__ = "serving_selection"

    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    point_source: Mapped[str] = mapped_column(String(16))  # model | naive
    point_p_value: Mapped[float | None]
    point_skill: Mapped[float | None]
    # A candidate: network, rolling, garch, gjr, har_range, blend.
    interval_source: Mapped[str] = mapped_column(String(16))
    interval_p_value: Mapped[float | None]
    interval_skill: Mapped[float | None]
    # Revision 0005: whose P(up) is served ("base_rate": the up-share of the training dates).
    p_up_source: Mapped[str | None] = mapped_column(String(16))
    p_up_p_value: Mapped[float | None]
    window_start: Mapped[date | None]
    window_end: Mapped[date | None]
    n_sessions: Mapped[int]
    promotion_id: Mapped[int | None]
    decided_at: Mapped[datetime]


class ForecasterFit(Base):
    """One scheduled refit of one statistical candidate for one ticker [ticker, forecaster, fit_end];
    `params` NULL when the history was too short or the fit failed."""

    __tablename__ = "forecaster_fits"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    forecaster: Mapped[str] = mapped_column(String(16), primary_key=True)
    fit_end: Mapped[date] = mapped_column(primary_key=True)
    fit_start: Mapped[date | None]
    n_sessions: Mapped[int]
    params: Mapped[Any | None] = mapped_column(JSON)
    created_at: Mapped[datetime]


class HorizonPrediction(Base):
    """One served forecast of the close `horizon` sessions ahead [ticker, base_date, horizon, model_version].

    Quantiles are prices; VaR and ES are a long position's losses as positive simple returns; `tail`
    holds log-return quantiles at `ml.risk.TAIL_LEVELS`; `candidates` every candidate's five quantiles,
    `p_ups` every candidate's P(up) and the horizon's base rate (what the Brier test reads once scored).
    """

    __tablename__ = "horizon_predictions"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    base_date: Mapped[date] = mapped_column(primary_key=True)
    horizon: Mapped[int] = mapped_column(primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    target_date: Mapped[date] = mapped_column(index=True)
    as_of: Mapped[date]
    base_close: Mapped[float]
    q025: Mapped[float | None]
    q10: Mapped[float | None]
    q50: Mapped[float | None]
    q90: Mapped[float | None]
    q975: Mapped[float | None]
    p_up: Mapped[float | None]
    var_95: Mapped[float | None]
    var_99: Mapped[float | None]
    es_95: Mapped[float | None]
    es_99: Mapped[float | None]
    source: Mapped[str | None] = mapped_column(String(16))  # the served candidate
    p_value: Mapped[float | None]  # the test that chose it
    tail: Mapped[list[float | None] | None] = mapped_column(JSON)
    candidates: Mapped[dict[str, Any] | None]
    pipeline_run_id: Mapped[int | None]
    created_at: Mapped[datetime]
    actual_close: Mapped[float | None]
    scored_at: Mapped[datetime | None]
    void_reason: Mapped[str | None] = mapped_column(Text)
    p_up_source: Mapped[str | None] = mapped_column(String(16))  # whose P(up): a candidate, "base_rate"
    p_ups: Mapped[dict[str, Any] | None]


class HorizonServing(Base):
    """What one ticker is served at one horizon above 1 [ticker, horizon] (`ml.selection`), with the
    miscoverage levels adaptive conformal inference has reached for `aci_source`, and whose P(up)
    (`p_up_source`: the Brier test's choice against the horizon's base rate; None until decided)."""

    __tablename__ = "horizon_serving"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    horizon: Mapped[int] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    p_value: Mapped[float | None]
    skill: Mapped[float | None]
    n_sessions: Mapped[int]
    window_end: Mapped[date | None]
    alpha_80: Mapped[float | None]
    alpha_95: Mapped[float | None]
    aci_source: Mapped[str | None] = mapped_column(String(16))
    last_target_date: Mapped[date | None]
    updated_at: Mapped[datetime]
    p_up_source: Mapped[str | None] = mapped_column(String(16))
    p_up_p_value: Mapped[float | None]
