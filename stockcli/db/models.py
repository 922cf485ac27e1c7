"""SQLAlchemy 2 typed models for stockcli's own tables (schema changes only through `migrations/`).

Prices are doubles and volumes big integers; arrays are `.npy` bytes (no pickle), specs JSON.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
)
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


class RawStockData(Base):
    """One daily bar [ticker, date]."""

    __tablename__ = "raw_stock_data"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    date: Mapped[date] = mapped_column(Date, primary_key=True)
    open: Mapped[float] = mapped_column(Double)
    high: Mapped[float] = mapped_column(Double)
    low: Mapped[float] = mapped_column(Double)
    close: Mapped[float] = mapped_column(Double)
    volume: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(16))
    fetched_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Dataset(Base):
    """A frozen dataset made by `process` [run_id], plus its aligned arrays."""

    __tablename__ = "processed_feature_data"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    as_of: Mapped[date] = mapped_column(Date)
    tickers: Mapped[list[str]] = mapped_column(JSON)
    start_date: Mapped[date] = mapped_column(Date)
    end_date: Mapped[date] = mapped_column(Date)
    n_sessions: Mapped[int] = mapped_column(Integer)
    feature_names: Mapped[list[str]] = mapped_column(JSON)
    feature_spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    # Arrays of the panel (`features.dataset.Panel`), rows by session; dates as int64 ordinals.
    dates_npy: Mapped[bytes] = mapped_column(LargeBinary)
    features_npy: Mapped[bytes] = mapped_column(LargeBinary)
    closes_npy: Mapped[bytes] = mapped_column(LargeBinary)
    target_price_npy: Mapped[bytes] = mapped_column(LargeBinary)
    target_return_npy: Mapped[bytes] = mapped_column(LargeBinary)
    # Revision 0002: bit 1 a usable row, bit 2 a real bar (NULL: an old dataset, to process again).
    mask_npy: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ScaledFeatureSet(Base):
    """The windows of one split part of a built dataset [run_id, set_name]."""

    __tablename__ = "scaled_feature_sets"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    set_name: Mapped[str] = mapped_column(String(16), primary_key=True)
    n_windows: Mapped[int] = mapped_column(Integer)
    first_target_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    last_target_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    # x_npy: the part's scaled slab (sessions, series, features); dates as int64 ordinals.
    x_npy: Mapped[bytes] = mapped_column(LargeBinary)
    y_npy: Mapped[bytes] = mapped_column(LargeBinary)
    base_dates_npy: Mapped[bytes] = mapped_column(LargeBinary)
    target_dates_npy: Mapped[bytes] = mapped_column(LargeBinary)
    base_closes_npy: Mapped[bytes] = mapped_column(LargeBinary)
    target_closes_npy: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Revision 0002: windows as (row in the slab, series) pairs and the context covariate rows.
    windows_npy: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    context_npy: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class Scaler(Base):
    """Scaler parameters of a built dataset, fit on its training windows only [run_id]."""

    __tablename__ = "scalers"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    sequence_length: Mapped[int] = mapped_column(Integer)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    split: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OptimizationResult(Base):
    """Best hyper-parameters found by `tune` for a dataset [run_id]."""

    __tablename__ = "optimization_results"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_name: Mapped[str] = mapped_column(String(128))
    best_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    best_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    n_trials: Mapped[int] = mapped_column(Integer)
    n_complete: Mapped[int] = mapped_column(Integer)
    n_pruned: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LatestPrediction(Base):
    """A daily next-session prediction [target_date, ticker, model_version]."""

    __tablename__ = "latest_predictions"

    target_date: Mapped[date] = mapped_column(Date, primary_key=True)
    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    as_of: Mapped[date] = mapped_column(Date)
    base_date: Mapped[date] = mapped_column(Date)
    base_close: Mapped[float] = mapped_column(Double)
    predicted_close: Mapped[float] = mapped_column(Double)
    dataset_run_id: Mapped[str] = mapped_column(String(64))
    pipeline_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Revision 0002: quantiles of the next close (2.5 .. 97.5%), P(up), what was served and why.
    q025: Mapped[float | None] = mapped_column(Double, nullable=True)
    q10: Mapped[float | None] = mapped_column(Double, nullable=True)
    q50: Mapped[float | None] = mapped_column(Double, nullable=True)
    q90: Mapped[float | None] = mapped_column(Double, nullable=True)
    q975: Mapped[float | None] = mapped_column(Double, nullable=True)
    p_up: Mapped[float | None] = mapped_column(Double, nullable=True)
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # model | naive
    p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    interval_source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # model | garch | rolling
    interval_p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    unseen: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # every candidate's
    # Revision 0003: why a restated history voided it; a void row is never scored, shown or counted.
    void_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class ModelPerformance(Base):
    """A matured prediction scored against the real close [target_date, ticker, model_version]."""

    __tablename__ = "model_performance_log"

    target_date: Mapped[date] = mapped_column(Date, primary_key=True)
    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    base_date: Mapped[date] = mapped_column(Date)
    base_close: Mapped[float] = mapped_column(Double)
    predicted_close: Mapped[float] = mapped_column(Double)
    actual_close: Mapped[float] = mapped_column(Double)
    abs_error: Mapped[float] = mapped_column(Double)
    abs_pct_error: Mapped[float] = mapped_column(Double)
    naive_abs_error: Mapped[float] = mapped_column(Double)
    evaluated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Revision 0002: `ml.metrics.direction_scores` (1 hit, 0 miss, 0.5 no change forecast, NULL flat).
    direction_score: Mapped[float | None] = mapped_column(Double, nullable=True)
    q025: Mapped[float | None] = mapped_column(Double, nullable=True)
    q10: Mapped[float | None] = mapped_column(Double, nullable=True)
    q50: Mapped[float | None] = mapped_column(Double, nullable=True)
    q90: Mapped[float | None] = mapped_column(Double, nullable=True)
    q975: Mapped[float | None] = mapped_column(Double, nullable=True)
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    interval_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    void_reason: Mapped[str | None] = mapped_column(Text, nullable=True)  # revision 0003


class PipelineRun(Base):
    """The run ledger: one row per command run."""

    __tablename__ = "pipeline_runs"
    __table_args__ = (Index("ix_pipeline_runs_command_started", "command", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(String(32))
    as_of: Mapped[date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(16))  # running, ok, partial, failed, skipped
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Double, nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Revision 0004: what went wrong without changing the outcome (a notification not delivered).
    warnings: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)


class Promotion(Base):
    """The audit of every promotion decision, promoted or not."""

    __tablename__ = "promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    candidate_version: Mapped[str] = mapped_column(String(32))
    production_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    metric: Mapped[str] = mapped_column(String(16))
    candidate_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    production_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    naive_metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    window_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    window_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    dataset_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    promoted: Mapped[bool] = mapped_column(Boolean)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(Text)
    pipeline_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Revision 0002: the paired test (p-value, improvement and its 95% interval), per-ticker decisions.
    test: Mapped[str | None] = mapped_column(String(32), nullable=True)
    p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    improvement: Mapped[float | None] = mapped_column(Double, nullable=True)
    improvement_low: Mapped[float | None] = mapped_column(Double, nullable=True)
    improvement_high: Mapped[float | None] = mapped_column(Double, nullable=True)
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class IntervalState(Base):
    """Adaptive conformal inference state (Gibbs & Candes 2021) of one ticker and level [ticker, level]:
    `alpha`, the next interval's miscoverage, restarts when the model version or source changes."""

    __tablename__ = "interval_state"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    level: Mapped[int] = mapped_column(Integer, primary_key=True)  # 80 or 95
    model_version: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(16))
    alpha: Mapped[float] = mapped_column(Double)
    n_updates: Mapped[int] = mapped_column(Integer)
    misses: Mapped[int] = mapped_column(Integer)
    last_target_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ServingSelection(Base):
    """What a model version serves for one ticker [model_version, ticker], decided by a paired test
    on the promotion window; ticker "*" is the decision for tickers the model has not seen."""

    __tablename__ = "serving_selection"

    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    point_source: Mapped[str] = mapped_column(String(16))  # model | naive
    point_p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    point_skill: Mapped[float | None] = mapped_column(Double, nullable=True)
    # A candidate: network, rolling, garch, gjr, har_range, blend.
    interval_source: Mapped[str] = mapped_column(String(16))
    interval_p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    interval_skill: Mapped[float | None] = mapped_column(Double, nullable=True)
    # Revision 0005: whose P(up) is served ("base_rate": the up-share of the training dates).
    p_up_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    p_up_p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    window_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    window_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    n_sessions: Mapped[int] = mapped_column(Integer)
    promotion_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ForecasterFit(Base):
    """One scheduled refit of one statistical candidate for one ticker [ticker, forecaster, fit_end];
    `params` NULL when the history was too short or the fit failed."""

    __tablename__ = "forecaster_fits"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    forecaster: Mapped[str] = mapped_column(String(16), primary_key=True)
    fit_end: Mapped[date] = mapped_column(Date, primary_key=True)
    fit_start: Mapped[date | None] = mapped_column(Date, nullable=True)
    n_sessions: Mapped[int] = mapped_column(Integer)
    params: Mapped[Any | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class HorizonPrediction(Base):
    """One served forecast of the close `horizon` sessions ahead [ticker, base_date, horizon, model_version].

    Quantiles are prices; VaR and ES are a long position's losses as positive simple returns; `tail`
    holds log-return quantiles at `ml.risk.TAIL_LEVELS`; `candidates` every candidate's five quantiles.
    """

    __tablename__ = "horizon_predictions"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    base_date: Mapped[date] = mapped_column(Date, primary_key=True)
    horizon: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_version: Mapped[str] = mapped_column(String(32), primary_key=True)
    target_date: Mapped[date] = mapped_column(Date, index=True)
    as_of: Mapped[date] = mapped_column(Date)
    base_close: Mapped[float] = mapped_column(Double)
    q025: Mapped[float | None] = mapped_column(Double, nullable=True)
    q10: Mapped[float | None] = mapped_column(Double, nullable=True)
    q50: Mapped[float | None] = mapped_column(Double, nullable=True)
    q90: Mapped[float | None] = mapped_column(Double, nullable=True)
    q975: Mapped[float | None] = mapped_column(Double, nullable=True)
    p_up: Mapped[float | None] = mapped_column(Double, nullable=True)
    var_95: Mapped[float | None] = mapped_column(Double, nullable=True)
    var_99: Mapped[float | None] = mapped_column(Double, nullable=True)
    es_95: Mapped[float | None] = mapped_column(Double, nullable=True)
    es_99: Mapped[float | None] = mapped_column(Double, nullable=True)
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)  # the served candidate
    p_value: Mapped[float | None] = mapped_column(Double, nullable=True)  # the test that chose it
    tail: Mapped[list[float | None] | None] = mapped_column(JSON, nullable=True)
    candidates: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pipeline_run_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actual_close: Mapped[float | None] = mapped_column(Double, nullable=True)
    scored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    void_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class HorizonServing(Base):
    """What one ticker is served at one horizon above 1 [ticker, horizon] (`ml.selection`), with the
    miscoverage levels adaptive conformal inference has reached for `aci_source`."""

    __tablename__ = "horizon_serving"

    ticker: Mapped[str] = mapped_column(String(24), primary_key=True)
    horizon: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    skill: Mapped[float | None] = mapped_column(Double, nullable=True)
    n_sessions: Mapped[int] = mapped_column(Integer)
    window_end: Mapped[date | None] = mapped_column(Date, nullable=True)
    alpha_80: Mapped[float | None] = mapped_column(Double, nullable=True)
    alpha_95: Mapped[float | None] = mapped_column(Double, nullable=True)
    aci_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_target_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
