"""Stored datasets (`processed_feature_data` [run_id]) and built sets (`scalers` [run_id],
`scaled_feature_sets` [run_id, set_name]): arrays as `.npy` bytes, specs and scalers as JSON, every
write an upsert on the natural key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from stockcli.db.models import Dataset, ScaledFeatureSet, Scaler
from stockcli.db.store import array_to_bytes, array_to_dates, bytes_to_array, dates_to_array, upsert, utcnow
from stockcli.errors import NoDataError, UsageError
from stockcli.features.dataset import PARTS, BuiltDataset, DatasetSpec, Panel, WindowSet

OLD_LAYOUT_HINT = (
    "It was made by an older stockcli (tickers aligned side by side). Run `stockcli process` and "
    "`stockcli build` again (or `stockcli retrain --force`)."
)


@dataclass(frozen=True)
class StoredDataset:
    """A dataset made by `process`: its feature spec and the panel it stored."""

    run_id: str
    feature_spec: DatasetSpec
    panel: Panel


# Panel arrays stored as float64 `<name>_npy` columns, and a part's arrays as `<column>: (field, dtype)`.
_PANEL_ARRAYS = ("features", "closes", "target_price", "target_return")
_PART_ARRAYS = {
    "x_npy": ("slab", np.float32),
    "context_npy": ("context", np.float32),
    "y_npy": ("y", np.float32),
    "base_closes_npy": ("base_closes", np.float64),
    "target_closes_npy": ("target_closes", np.float64),
}


def save_dataset(
    engine: Engine,
    *,
    run_id: str,
    as_of: date,
    feature_spec: DatasetSpec,
    config: Mapping[str, Any],
    content_hash: str,
    panel: Panel,
) -> bool:
    """Upsert a dataset; returns False when the same content was already stored under `run_id`
    (then only `as_of` and `created_at` are refreshed, so it counts as the latest again)."""
    now = utcnow()
    with engine.begin() as connection:
        stored_hash = connection.execute(select(Dataset.content_hash).where(Dataset.run_id == run_id))
        if stored_hash.scalar_one_or_none() == content_hash:
            connection.execute(
                update(Dataset).where(Dataset.run_id == run_id).values(as_of=as_of, created_at=now)
            )
            return False
    row = {
        "run_id": run_id,
        "created_at": now,
        "as_of": as_of,
        "tickers": list(feature_spec.tickers),
        "start_date": panel.dates[0],
        "end_date": panel.dates[-1],
        "n_sessions": len(panel.dates),
        "feature_names": list(panel.feature_names),
        "feature_spec": feature_spec.to_json(),
        "config": dict(config),
        "content_hash": content_hash,
        "dates_npy": array_to_bytes(dates_to_array(list(panel.dates))),
        **{
            f"{name}_npy": array_to_bytes(np.asarray(getattr(panel, name), dtype=np.float64))
            for name in _PANEL_ARRAYS
        },
        "mask_npy": array_to_bytes(panel.mask()),
    }
    with engine.begin() as connection:
        upsert(connection, Dataset, [row], key=("run_id",))
    return True


def list_dataset_ids(engine: Engine, limit: int = 5) -> list[str]:
    """The newest dataset ids first (most recently processed)."""
    query = select(Dataset.run_id).order_by(Dataset.created_at.desc(), Dataset.run_id.desc()).limit(limit)
    with engine.connect() as connection:
        return [str(r) for r in connection.execute(query).scalars()]


def latest_dataset_id(engine: Engine) -> str | None:
    """The most recently processed dataset's id, or None when there is none."""
    ids = list_dataset_ids(engine, limit=1)
    return ids[0] if ids else None


def _unknown_dataset(engine: Engine, run_id: str) -> UsageError:
    latest = list_dataset_ids(engine, limit=5)
    listing = ", ".join(latest) if latest else "none yet"
    return UsageError(
        f"No dataset with id {run_id!r}.",
        hint=f"Latest dataset ids: {listing}." + ("" if latest else " Run `stockcli process` to make one."),
    )


def load_dataset(engine: Engine, run_id: str) -> StoredDataset:
    """A stored dataset with its arrays; UsageError (exit 2) listing the latest ids when unknown."""
    with engine.connect() as connection:
        row = connection.execute(select(Dataset.__table__).where(Dataset.run_id == run_id)).mappings().first()
    if row is None:
        raise _unknown_dataset(engine, run_id)
    if row["mask_npy"] is None or "series" not in (row["feature_spec"] or {}):
        raise NoDataError(f"Dataset {run_id} cannot be used by this stockcli.", hint=OLD_LAYOUT_HINT)
    spec = DatasetSpec.from_json(row["feature_spec"])
    valid, real = Panel.unpack_mask(bytes_to_array(row["mask_npy"]))
    panel = Panel(
        series=spec.series,
        tickers=spec.tickers,
        context_tickers=spec.context_tickers,
        feature_names=tuple(row["feature_names"]),
        dates=array_to_dates(bytes_to_array(row["dates_npy"])),
        valid=valid,
        real=real,
        **{name: bytes_to_array(row[f"{name}_npy"]) for name in _PANEL_ARRAYS},
    )
    return StoredDataset(run_id=row["run_id"], feature_spec=spec, panel=panel)


def save_built(
    engine: Engine,
    *,
    run_id: str,
    target_kind: str,
    sequence_length: int,
    scalers: Mapping[str, Any],
    split: Mapping[str, Any],
    parts: Mapping[str, WindowSet],
) -> None:
    """Upsert the scalers row and one scaled set per split part, in one transaction."""
    now = utcnow()
    rows = [
        {
            "run_id": run_id,
            "set_name": name,
            "n_windows": len(part.base_dates),
            "first_target_date": part.target_dates[0] if part.target_dates else None,
            "last_target_date": part.target_dates[-1] if part.target_dates else None,
            "windows_npy": array_to_bytes(np.stack([part.rows, part.series], axis=1).astype(np.int64)),
            "base_dates_npy": array_to_bytes(dates_to_array(part.base_dates)),
            "target_dates_npy": array_to_bytes(dates_to_array(part.target_dates)),
            **{
                column: array_to_bytes(np.asarray(getattr(part, field), dtype=dtype))
                for column, (field, dtype) in _PART_ARRAYS.items()
            },
            "created_at": now,
        }
        for name, part in ((name, parts[name]) for name in PARTS)
    ]
    scaler_row = {
        "run_id": run_id,
        "target_kind": target_kind,
        "sequence_length": int(sequence_length),
        "params": dict(scalers),
        "split": dict(split),
        "created_at": now,
    }
    with engine.begin() as connection:
        upsert(connection, Scaler, [scaler_row], key=("run_id",))
        upsert(connection, ScaledFeatureSet, rows, key=("run_id", "set_name"))


def load_built(engine: Engine, run_id: str) -> BuiltDataset:
    """A built dataset: spec, scalers and the train/validation/test windows.

    Raises UsageError (exit 2) for an unknown dataset id, NoDataError (exit 4) when not built yet.
    """
    with engine.connect() as connection:
        dataset_row = connection.execute(
            select(Dataset.feature_spec, Dataset.end_date, Dataset.tickers).where(Dataset.run_id == run_id)
        ).first()
        scaler = (
            connection.execute(select(Scaler.__table__).where(Scaler.run_id == run_id)).mappings().first()
        )
        sets = {
            s["set_name"]: s
            for s in connection.execute(
                select(ScaledFeatureSet.__table__).where(ScaledFeatureSet.run_id == run_id)
            ).mappings()
        }
    if dataset_row is None:
        raise _unknown_dataset(engine, run_id)
    if scaler is None or any(name not in sets for name in PARTS):
        raise NoDataError(
            f"Dataset {run_id} has not been built yet.", hint=f"Run `stockcli build --run-id {run_id}`."
        )
    feature_spec, end_date, tickers = dataset_row
    scalers = dict(scaler["params"])
    if "series" not in feature_spec or any(sets[name]["windows_npy"] is None for name in PARTS):
        raise NoDataError(f"Dataset {run_id} cannot be used by this stockcli.", hint=OLD_LAYOUT_HINT)
    L = int(scaler["sequence_length"])
    spec = DatasetSpec.from_json(feature_spec).built(
        scalers["feature_names"],
        scalers.get("context", {}).get("features", []),
        L,
        dataset_run_id=run_id,
        end_date=end_date,  # the last session a model trained on it has seen
    )
    window_sets = {}
    for name in PARTS:
        stored = sets[name]
        windows = bytes_to_array(stored["windows_npy"])  # (n, 2): row in the slab, series index
        window_sets[name] = WindowSet(
            rows=windows[:, 0],
            series=windows[:, 1],
            base_dates=array_to_dates(bytes_to_array(stored["base_dates_npy"])),
            target_dates=array_to_dates(bytes_to_array(stored["target_dates_npy"])),
            series_names=spec.series,
            sequence_length=L,
            **{field: bytes_to_array(stored[column]) for column, (field, _) in _PART_ARRAYS.items()},
        )
    return BuiltDataset(
        run_id=run_id,
        spec=spec,
        scalers=scalers,
        tickers=tuple(tickers),
        sequence_length=L,
        target_kind=str(scaler["target_kind"]),
        train=window_sets["train"],
        validation=window_sets["validation"],
        test=window_sets["test"],
        split=dict(scaler["split"]),
    )
