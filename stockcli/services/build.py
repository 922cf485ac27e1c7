"""`build`: a stored dataset -> chronological split, windows and scalers fit on training only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine

from stockcli.config import Settings
from stockcli.errors import NoDataError

if TYPE_CHECKING:
    from stockcli.features.dataset import Progress


@dataclass(frozen=True)
class PartSummary:
    """One split part: how many windows and which base and target sessions they span."""

    name: str
    windows: int
    first_base_date: date
    last_base_date: date
    first_target_date: date
    last_target_date: date


@dataclass(frozen=True)
class BuildResult:
    """What `build` produced for a dataset."""

    run_id: str
    tickers: tuple[str, ...]
    sessions: int
    n_features: int
    feature_names: tuple[str, ...]
    dropped_features: tuple[str, ...]
    sequence_length: int
    target_kind: str
    train: PartSummary
    validation: PartSummary
    test: PartSummary
    context_tickers: tuple[str, ...] = ()
    windows_per_ticker: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def parts(self) -> tuple[PartSummary, PartSummary, PartSummary]:
        return (self.train, self.validation, self.test)


def build(
    *,
    settings: Settings,
    engine: Engine,
    run_id: str | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Split the dataset `run_id` (default: the latest) into windows and fit its scalers.

    Raises UsageError (exit 2) for an unknown `run_id`, NoDataError without a dataset or enough windows.
    """
    from stockcli.db import datasets as datasets_db
    from stockcli.features.dataset import build_sets

    report = progress or (lambda stage, done, total: None)
    if run_id is None:
        run_id = datasets_db.latest_dataset_id(engine)
        if run_id is None:
            raise NoDataError("No dataset yet.", hint="Run `stockcli process` first.")
    report("loading dataset", 0, 1)
    stored = datasets_db.load_dataset(engine, run_id)
    report("loading dataset", 1, 1)
    panel = stored.panel
    ds = settings.dataset
    report("scaling and windowing", 0, 1)
    output = build_sets(
        panel,
        spec=stored.feature_spec,
        sequence_length=ds.sequence_length,
        train_fraction=ds.train_fraction,
        validation_fraction=ds.validation_fraction,
        correlation_threshold=settings.features.correlation_threshold,
    )
    report("scaling and windowing", 1, 1)
    report("saving built sets", 0, 1)
    datasets_db.save_built(
        engine,
        run_id=run_id,
        target_kind="return",
        sequence_length=ds.sequence_length,
        scalers=output.scalers,
        split=output.split,
        parts=output.parts,
    )
    report("saving built sets", 1, 1)
    # A part's windows are ordered by base row: its first and last dates are its span.
    summaries = {
        name: PartSummary(
            name,
            windows=len(part.base_dates),
            first_base_date=part.base_dates[0],
            last_base_date=part.base_dates[-1],
            first_target_date=part.target_dates[0],
            last_target_date=part.target_dates[-1],
        )
        for name, part in output.parts.items()
    }
    return BuildResult(
        run_id=run_id,
        tickers=panel.tickers,
        sessions=panel.n_sessions,
        n_features=len(output.spec.feature_names),
        feature_names=output.spec.feature_names,
        dropped_features=output.dropped_features,
        sequence_length=ds.sequence_length,
        target_kind="return",
        context_tickers=panel.context_tickers,
        windows_per_ticker=output.windows_per_ticker,
        **summaries,
    )
