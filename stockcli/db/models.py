"""SQLAlchemy 2 typed models for stockcli's own tables.

Prices are double precision and volumes big integers, never 4-byte floats. Arrays are stored as
`.npy` bytes written and read with `allow_pickle=False`; scalers and specs as JSON. Schema changes go
through Alembic revisions in `migrations/`, never `create_all` outside tests.
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
    # .npy bytes (allow_pickle=False): session dates as int64 days, features (sessions, tickers,
    # features), closes (sessions, tickers), next-session targets as price and log return.
    dates_npy: Mapped[bytes] = mapped_column(LargeBinary)
    features_npy: Mapped[bytes] = mapped_column(LargeBinary)
    closes_npy: Mapped[bytes] = mapped_column(LargeBinary)
    target_price_npy: Mapped[bytes] = mapped_column(LargeBinary)
    target_return_npy: Mapped[bytes] = mapped_column(LargeBinary)
    # (sessions, series) int8: bit 1 a usable feature row, bit 2 a real bar (revision 0002; NULL in
    # datasets made before, which cannot be built any more and are processed again).
    mask_npy: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class ScaledFeatureSet(Base):
    """The windows of one split part of a built dataset [run_id, set_name]."""

    __tablename__ = "scaled_feature_sets"

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    set_name: Mapped[str] = mapped_column(String(16), primary_key=True)
    n_windows: Mapped[int] = mapped_column(Integer)
    first_target_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    last_target_date: Mapped[date | None] = mapped_column(Date, nullable=True)
    # .npy bytes: x_npy is the part's scaled feature slab (sessions, tickers, features) float32, the
    # contiguous sessions its windows cover (`load_built` hands out the windows as strided views);
    # y (windows, tickers) scaled, base and target dates (int64 ordinals), base and target closes.
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
    # Revision 0002: the served quantiles of the next close (2.5, 10, 50, 90, 97.5 percent), the
    # chance of an up day, which forecast was served and why, and whether the model had seen the ticker.
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
    # The model's own forecast and both baselines' quantiles, whichever was served (JSON numbers).
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Revision 0003: why a restated history voided it (no single factor restates its closes); a void
    # prediction is never scored, shown or counted.
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
    # Revision 0002 (replaces the boolean direction_hit): 1 hit, 0 miss, 0.5 for a forecast of no
    # change (a coin flip), NULL when the close did not move; `stockcli.ml.metrics.direction_scores`.
    direction_score: Mapped[float | None] = mapped_column(Double, nullable=True)
    q025: Mapped[float | None] = mapped_column(Double, nullable=True)
    q10: Mapped[float | None] = mapped_column(Double, nullable=True)
    q50: Mapped[float | None] = mapped_column(Double, nullable=True)
    q90: Mapped[float | None] = mapped_column(Double, nullable=True)
    q975: Mapped[float | None] = mapped_column(Double, nullable=True)
    source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    interval_source: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Revision 0003: why a restated history voided this score; a void score counts in no metric.
    void_reason: Mapped[str | None] = mapped_column(Text, nullable=True)


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
    # Revision 0004: what went wrong without changing the run's outcome (a notification not delivered).
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
    # Revision 0002: the paired test behind the decision (one-sided Diebold-Mariano p-value, the
    # relative improvement and its 95% interval) and the per-ticker serving decisions.
    test: Mapped[str | None] = mapped_column(String(32), nullable=True)
    p_value: Mapped[float | None] = mapped_column(Double, nullable=True)
    improvement: Mapped[float | None] = mapped_column(Double, nullable=True)
    improvement_low: Mapped[float | None] = mapped_column(Double, nullable=True)
    improvement_high: Mapped[float | None] = mapped_column(Double, nullable=True)
    selection: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class IntervalState(Base):
    """Adaptive conformal inference state of one ticker and interval level [ticker, level].

    `alpha` is the miscoverage level used for the next interval; each scored session nudges it
    (Gibbs & Candes 2021). The state belongs to one model version and interval source: when either
    changes, it starts again from the nominal level.
    """

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
    """One scheduled refit of one statistical candidate for one ticker [ticker, forecaster, fit_end].

    `params` are the candidate's plain-JSON parameters fitted on the ticker's bars from `fit_start`
    through `fit_end` (NULL when that history was too short or the fit failed). `predict` serves a
    ticker with the newest fit whose `fit_end` is on or before its base session, until the next.
    """

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

    Every configured horizon, 1 included. `target_date` is the `horizon`-th exchange session after
    `base_date`. The quantiles are prices (as in `latest_predictions`); the risk figures are losses of
    a long position as positive simple returns (VaR and Expected Shortfall at 95% and 99%); `tail` holds the served
    distribution's log-return quantiles at `ml.risk.TAIL_LEVELS` (what the ES backtest reads) and
    `candidates` every candidate's five close quantiles, served or not (what the horizon's selection
    compares). `actual_close` and `scored_at` are set when the target session's close is stored; a
    void row is never scored, shown or counted.
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
    """What one ticker is served at one horizon above 1 [ticker, horizon], and at which levels.

    `source` is decided by the family-corrected test of `ml.selection` on the horizon's own scored
    rows (the network forecasts the next session only, so it is no candidate here); `alpha_80` and
    `alpha_95` are the miscoverage levels adaptive conformal inference has reached for `aci_source`.
    """

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
