"""Predict the close of the next trading session with the Production model (or a given version)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from stockcli.clock import calendar_for
from stockcli.config import Settings
from stockcli.db import bars as bars_db
from stockcli.db import predictions as predictions_db
from stockcli.db.store import utcnow
from stockcli.errors import NoDataError, NoProductionModelError


@dataclass(frozen=True)
class Prediction:
    ticker: str
    base_date: date
    base_close: float
    predicted_close: float
    target_date: date
    model_version: str
    dataset_run_id: str

    @property
    def change_pct(self) -> float:
        return (self.predicted_close / self.base_close - 1.0) * 100.0


@dataclass(frozen=True)
class PredictResult:
    as_of: date
    model_version: str
    dataset_run_id: str
    base_date: date
    target_date: date
    predictions: tuple[Prediction, ...]
    files: tuple[str, ...]


def production_version(settings: Settings) -> str:
    """The version holding the Production alias, resolved once; NoProductionModelError if none."""
    from stockcli.ml import registry

    version = registry.resolve_alias(settings, "Production")
    if version is None:
        raise NoProductionModelError(
            "No production model yet.", hint="Run `stockcli retrain --force` first (or `stockcli daily`)."
        )
    return str(version)


def required_base_date(settings: Settings, as_of: date, *, now: datetime | None = None) -> date:
    """The newest session whose bar must be stored for an honest prediction as of `as_of`."""
    return calendar_for(settings).last_closed_session(as_of, now=now)


def predict(
    *,
    settings: Settings,
    engine: Engine,
    as_of: date,
    model_version: str | None = None,
    bundle: Any = None,
    pipeline_run_id: int | None = None,
    now: datetime | None = None,
    write_files: bool = True,
    bundle_loader: Callable[[str], Any] | None = None,
) -> PredictResult:
    """Predict every ticker's close for the session after the newest closed session as of `as_of`.

    The model version is resolved once (Production unless given) and used throughout. Raises
    NoProductionModelError without a model, NoDataError when the stored bars are stale.
    """
    from stockcli.ml import registry
    from stockcli.ml.forecast import forecast

    if bundle is None:
        version = model_version or production_version(settings)
        bundle = bundle_loader(version) if bundle_loader else registry.load_bundle(settings, version=version)
    version = str(bundle.version)
    calendar = calendar_for(settings)
    base_date = required_base_date(settings, as_of, now=now)
    target_date = calendar.next_session(base_date)

    tickers = list(bundle.tickers)
    start = _spec_start(bundle.spec)
    bars = bars_db.load_bars(engine, tickers, start=start, end=base_date)
    missing = [t for t in tickers if bars[t].empty]
    if missing:
        raise NoDataError(
            f"No stored bars for {', '.join(missing)}, which the model {version} predicts.",
            hint="Run `stockcli fetch` first.",
        )
    stale = {t: bars[t].index[-1].date() for t in tickers if bars[t].index[-1].date() < base_date}
    if stale:
        listing = ", ".join(f"{t} ends {d.isoformat()}" for t, d in sorted(stale.items()))
        raise NoDataError(
            f"Stored bars are stale: the newest closed session as of {as_of.isoformat()} is "
            f"{base_date.isoformat()}, but {listing}.",
            hint="Run `stockcli fetch` (check the source if it keeps failing); refusing to predict from old bars.",
        )

    result = forecast(bundle, bars, [base_date])
    created = utcnow()
    predictions = tuple(
        Prediction(
            ticker=ticker,
            base_date=result.base_dates[0],
            base_close=float(result.base_closes[0, index]),
            predicted_close=float(result.predicted_closes[0, index]),
            target_date=target_date,
            model_version=version,
            dataset_run_id=str(bundle.dataset_run_id),
        )
        for index, ticker in enumerate(result.tickers)
    )
    predictions_db.save_predictions(
        engine,
        [
            {
                "target_date": p.target_date,
                "ticker": p.ticker,
                "model_version": p.model_version,
                "as_of": as_of,
                "base_date": p.base_date,
                "base_close": p.base_close,
                "predicted_close": p.predicted_close,
                "dataset_run_id": p.dataset_run_id,
                "pipeline_run_id": pipeline_run_id,
                "created_at": created,
            }
            for p in predictions
        ],
    )
    files = _write_files(settings, as_of, predictions) if write_files else ()
    return PredictResult(
        as_of=as_of,
        model_version=version,
        dataset_run_id=str(bundle.dataset_run_id),
        base_date=predictions[0].base_date,
        target_date=target_date,
        predictions=predictions,
        files=files,
    )


def _spec_start(spec: dict[str, Any]) -> date | None:
    value = spec.get("start_date") or spec.get("start")
    if isinstance(value, str):
        return date.fromisoformat(value)
    return value if isinstance(value, date) else None


def _prediction_json(p: Prediction) -> dict[str, Any]:
    return {
        "ticker": p.ticker,
        "base_date": p.base_date.isoformat(),
        "base_close": p.base_close,
        "predicted_close": p.predicted_close,
        "change_pct": p.change_pct,
        "target_date": p.target_date.isoformat(),
        "model_version": p.model_version,
        "dataset_run_id": p.dataset_run_id,
    }


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _write_files(settings: Settings, as_of: date, predictions: tuple[Prediction, ...]) -> tuple[str, ...]:
    """`latest_predictions.json` and a dated history file in the data dir (what the old API served)."""
    payload = {
        "as_of": as_of.isoformat(),
        "target_date": predictions[0].target_date.isoformat(),
        "model_version": predictions[0].model_version,
        "predictions": [_prediction_json(p) for p in predictions],
    }
    text = json.dumps(payload, indent=2)
    folder = settings.data_dir / "predictions"
    latest = folder / "latest_predictions.json"
    history = folder / "history" / f"predictions_{predictions[0].target_date.isoformat()}.json"
    _atomic_write(history, text)
    _atomic_write(latest, text)
    return (str(latest), str(history))
