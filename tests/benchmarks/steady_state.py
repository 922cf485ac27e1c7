"""A database in the steady state of the daily loop, for the horizon benchmark (issue 18, item 6).

`seed_history` takes what one real `predict` stored on `base_date` (its `latest_predictions` row and
its `horizon_predictions` rows, every horizon, per ticker) and replays it backwards over the
`sessions` exchange sessions before: for each earlier base session s at which the ticker had a bar,
one row per horizon, shaped exactly as `predict` writes it, with its base close the ticker's close on
s, every price (quantiles, candidates' quantiles, the network's point forecast) moved to that close,
and every log-return quantile (the tail too) scaled by the ratio of the ticker's 20-session realised
volatility on s to that on `base_date` (so the bands follow the volatility of the day and exceptions
come at a realistic rate); VaR and ES are recomputed from the scaled tail (`ml.risk.risk_figures`).
Target dates are the h-th session after s. The rows are bulk-inserted unscored, then the real
`services.monitor.score_matured` scores every one whose target close is stored (model_performance_log,
interval_state and horizon_serving's adaptive levels written by the code `daily` runs). What is left
unscored is what a loop that ran every session would have pending: targets after `base_date`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, insert, select, text
from sqlalchemy.engine import Engine

VOLATILITY_SESSIONS = 20
VOLATILITY_RATIO_LIMITS = (1 / 3, 3.0)
PRICE_COLUMNS = ("q025", "q10", "q50", "q90", "q975")


def seed_history(settings: Any, engine: Engine, *, base_date: date, sessions: int) -> dict[str, Any]:
    """Replay `predict`'s rows of `base_date` over the `sessions` sessions before it and score them
    (see the module's docstring). Returns counts and seconds."""
    from stockcli.clock import calendar_for
    from stockcli.db.models import HorizonPrediction, LatestPrediction
    from stockcli.services.monitor import score_matured

    begin = time.perf_counter()
    calendar = calendar_for(settings)
    first = calendar.sessions_back(base_date, sessions + VOLATILITY_SESSIONS + 1)
    days = calendar.sessions(first, base_date + timedelta(days=60))
    position = {day: i for i, day in enumerate(days)}
    bases = days[position[base_date] - sessions : position[base_date]]
    with engine.connect() as connection:
        points = [
            dict(r._mapping)
            for r in connection.execute(
                select(LatestPrediction.__table__).where(LatestPrediction.base_date == base_date)
            )
        ]
        horizons = [
            dict(r._mapping)
            for r in connection.execute(
                select(HorizonPrediction.__table__).where(HorizonPrediction.base_date == base_date)
            )
        ]
    closes, vols = _closes_and_volatility(engine, sorted({r["ticker"] for r in points}), days[0], base_date)
    point_rows = list(_replayed(points, bases, closes, vols, base_date, lambda s, h: days[position[s] + 1]))
    horizon_rows = list(
        _replayed(horizons, bases, closes, vols, base_date, lambda s, h: days[position[s] + h])
    )
    _recompute_risk(horizon_rows)
    with engine.begin() as connection:
        for table, rows in (
            (LatestPrediction.__table__, point_rows),
            (HorizonPrediction.__table__, horizon_rows),
        ):
            for chunk in _chunks(rows, 20_000):
                connection.execute(insert(table), chunk)
    inserted_s = time.perf_counter() - begin
    scored, pending = score_matured(engine, through=base_date, settings=settings)
    return {
        "bases": len(bases),
        "point_rows": len(point_rows),
        "horizon_rows": len(horizon_rows),
        "scored": len(scored),
        "pending": pending,
        "insert_s": inserted_s,
        "score_s": time.perf_counter() - begin - inserted_s,
    }


def keep_horizons(engine: Engine, horizons: Sequence[int]) -> None:
    """Delete the horizon rows and serving rows of other horizons, and compact the file: the state a
    loop configured with `horizons` from the start would have."""
    from stockcli.db.models import HorizonPrediction, HorizonServing

    with engine.begin() as connection:
        connection.execute(delete(HorizonPrediction).where(HorizonPrediction.horizon.not_in(list(horizons))))
        connection.execute(delete(HorizonServing).where(HorizonServing.horizon.not_in(list(horizons))))
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(text("VACUUM"))


def _closes_and_volatility(
    engine: Engine, tickers: Sequence[str], start: date, end: date
) -> tuple[dict[str, dict[date, float]], dict[str, dict[date, float]]]:
    """Each ticker's closes from `start` to `end`, and its trailing 20-session standard deviation of
    log returns on each of those days (where 20 returns precede it)."""
    from stockcli.db.bars import load_bars

    closes: dict[str, dict[date, float]] = {}
    vols: dict[str, dict[date, float]] = {}
    for ticker, frame in load_bars(engine, tickers, start=start, end=end).items():
        if frame.empty:
            continue
        days = [stamp.date() for stamp in frame.index]
        close = frame["close"].to_numpy(dtype=np.float64)
        closes[ticker] = dict(zip(days, close.tolist(), strict=True))
        returns = np.diff(np.log(close))
        vols[ticker] = {
            days[i + 1]: float(returns[i + 1 - VOLATILITY_SESSIONS : i + 1].std())
            for i in range(VOLATILITY_SESSIONS - 1, returns.size)
        }
    return closes, vols


def _replayed(
    templates: Sequence[Mapping[str, Any]],
    bases: Sequence[date],
    closes: Mapping[str, Mapping[date, float]],
    vols: Mapping[str, Mapping[date, float]],
    base_date: date,
    target: Any,
) -> Iterator[dict[str, Any]]:
    """Each template row replayed at every base session where its ticker has a close and a volatility."""
    low, high = VOLATILITY_RATIO_LIMITS
    for row in templates:
        ticker, horizon = row["ticker"], int(row.get("horizon") or 1)
        own, own_vol = closes.get(ticker, {}), vols.get(ticker, {})
        if base_date not in own_vol or not own_vol[base_date] > 0:
            continue
        for day in bases:
            if day not in own_vol:
                continue
            ratio = float(np.clip(own_vol[day] / own_vol[base_date], low, high))
            yield _moved(row, day, target(day, horizon), own[day], ratio)


def _moved(
    row: Mapping[str, Any], day: date, target_date: date, close: float, ratio: float
) -> dict[str, Any]:
    """One row moved to base session `day`: prices from `close`, log returns scaled by `ratio`."""
    base = float(row["base_close"])

    def price(value: Any) -> Any:
        return None if value is None else close * float(np.exp(np.log(float(value) / base) * ratio))

    moved = {**row, "base_date": day, "as_of": day, "target_date": target_date, "base_close": close}
    moved.update({name: price(row.get(name)) for name in PRICE_COLUMNS})
    if "predicted_close" in row:
        moved["predicted_close"] = price(row["predicted_close"])
    if row.get("tail") is not None:
        moved["tail"] = [None if v is None else float(v) * ratio for v in row["tail"]]
    if row.get("candidates") is not None:
        moved["candidates"] = _moved_candidates(row["candidates"], price)
    if row.get("detail") is not None:
        detail = dict(row["detail"])
        if detail.get("candidates") is not None:
            detail["candidates"] = _moved_candidates(detail["candidates"], price)
        if detail.get("model") is not None:
            detail["model"] = {
                **detail["model"],
                "predicted_close": price(detail["model"]["predicted_close"]),
            }
        moved["detail"] = detail
    return moved


def _moved_candidates(candidates: Mapping[str, Any], price: Any) -> dict[str, Any]:
    return {
        name: None if values is None else [price(v) for v in values] for name, values in candidates.items()
    }


def _recompute_risk(rows: list[dict[str, Any]]) -> None:
    """VaR and ES of every row from its (scaled) tail, in one vectorised pass."""
    from stockcli.ml.risk import RISK_KEYS, TAIL_LEVELS, risk_figures

    complete = [
        i for i, row in enumerate(rows) if row.get("tail") and all(v is not None for v in row["tail"])
    ]
    if not complete:
        return
    tails = np.array([rows[i]["tail"] for i in complete], dtype=np.float64).reshape(-1, len(TAIL_LEVELS))
    figures = risk_figures(tails)
    values = {key: getattr(figures, key) for key in RISK_KEYS}
    for j, i in enumerate(complete):
        rows[i].update({key: float(values[key][j]) for key in RISK_KEYS})


def _chunks(rows: Sequence[dict[str, Any]], size: int) -> Iterator[Sequence[dict[str, Any]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]
