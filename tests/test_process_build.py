"""`process` and `build` on a real database (SQLite and PostgreSQL), through the services and the CLI."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import Settings, load_settings
from stockcli.db import datasets as datasets_db
from stockcli.db.bars import load_bars
from stockcli.db.engine import open_database
from stockcli.db.models import Dataset, PipelineRun, ScaledFeatureSet
from stockcli.errors import NoDataError, UsageError
from stockcli.features.dataset import build_inputs, inverse_target
from stockcli.services.build import build
from stockcli.services.process import process
from tests.bars_data import (
    SAMPLE_TICKERS,
    sample_frame,
    sample_frames,
    store_frames,
    synthetic_frame,
    weekdays,
)
from tests.conftest import Cli, write_config

START = date(2009, 1, 1)
AS_OF = date(2013, 3, 1)


@pytest.fixture
def db(make_settings: Callable[..., Settings], database_url: str) -> Iterator[tuple[Settings, Engine]]:
    settings = make_settings(database_url, data={"start": START})
    engine = open_database(settings)
    try:
        yield settings, engine
    finally:
        engine.dispose()


@pytest.fixture
def sample_db(db: tuple[Settings, Engine]) -> tuple[Settings, Engine]:
    store_frames(db[1], sample_frames(start=START))
    return db


def _count(engine: Engine, column: Any) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count(column))).scalar_one())


def test_every_stored_test_window_equals_the_primitive_rebuilt_from_raw_bars(
    sample_db: tuple[Settings, Engine],
) -> None:
    settings, engine = sample_db
    processed = process(settings=settings, engine=engine, as_of=AS_OF)
    built = build(settings=settings, engine=engine)
    assert built.run_id == processed.run_id
    dataset = datasets_db.load_built(engine, processed.run_id)
    test = dataset.test
    assert len(test) == built.test.windows > 100
    assert test.x.shape == (len(test), 30, 4, processed.n_features)

    bars = load_bars(engine, dataset.tickers, start=date.fromisoformat(dataset.spec["start_date"]), end=AS_OF)
    inputs = build_inputs(spec=dataset.spec, scalers=dataset.scalers, bars=bars, as_of_dates=test.base_dates)
    np.testing.assert_allclose(inputs.x, test.x, rtol=0, atol=1e-6)
    assert inputs.base_dates == test.base_dates
    np.testing.assert_array_equal(inputs.base_closes, test.base_closes)
    # The spec and scalers a model version will carry are plain JSON.
    assert json.loads(json.dumps(dataset.spec)) == dataset.spec
    assert json.loads(json.dumps(dataset.scalers)) == dataset.scalers
    predicted = inverse_target(test.y, test.base_closes, dataset.scalers)
    np.testing.assert_allclose(predicted, test.target_closes, rtol=1e-5)


def test_stored_targets_are_the_next_exchange_session(sample_db: tuple[Settings, Engine]) -> None:
    settings, engine = sample_db
    run_id = process(settings=settings, engine=engine, as_of=AS_OF).run_id
    build(settings=settings, engine=engine, run_id=run_id)
    dataset = datasets_db.load_built(engine, run_id)
    calendar = trading_calendar("XNYS")
    closes = {t: sample_frame(t)["close"] for t in SAMPLE_TICKERS}
    for part in (dataset.train, dataset.validation, dataset.test):
        for k in range(0, len(part), 7):
            base, target = part.base_dates[k], part.target_dates[k]
            assert target == calendar.next_session(base)  # t+1, across weekends and holidays
            expected = [closes[t].loc[pd.Timestamp(target)] for t in dataset.tickers]
            np.testing.assert_array_equal(part.target_closes[k], expected)
    k = dataset.test.base_dates.index(date(2012, 10, 26))
    assert dataset.test.target_dates[k] == date(2012, 10, 31)  # NYSE closed Oct 29-30 (Sandy)
    assert max(dataset.train.target_dates) < min(dataset.validation.target_dates)
    assert max(dataset.validation.target_dates) < min(dataset.test.target_dates)


def test_same_bars_and_config_give_the_same_dataset_idempotently(sample_db: tuple[Settings, Engine]) -> None:
    settings, engine = sample_db
    first = process(settings=settings, engine=engine, as_of=AS_OF)
    again = process(settings=settings, engine=engine, as_of=date(2013, 3, 3))  # a Sunday: no new bars
    assert not first.reused and again.reused
    assert again.run_id == first.run_id and again.content_hash == first.content_hash
    assert first.run_id.startswith("ds-20130301-")
    assert _count(engine, Dataset.run_id) == 1
    build(settings=settings, engine=engine)
    scalers = datasets_db.load_built(engine, first.run_id).scalers
    build(settings=settings, engine=engine, run_id=first.run_id)
    assert datasets_db.load_built(engine, first.run_id).scalers == scalers
    assert _count(engine, ScaledFeatureSet.run_id) == 3

    other_config = settings.replace(features={"indicators": ({"name": "rsi", "window": 14},)})
    other = process(settings=other_config, engine=engine, as_of=AS_OF)
    assert other.run_id != first.run_id and other.n_features == 6
    assert datasets_db.latest_dataset_id(engine) == other.run_id
    assert datasets_db.list_dataset_ids(engine) == [other.run_id, first.run_id]
    # Re-processing the first config makes it the latest again, without a new row.
    process(settings=settings, engine=engine, as_of=AS_OF)
    assert datasets_db.latest_dataset_id(engine) == first.run_id
    assert _count(engine, Dataset.run_id) == 2


def test_a_dataset_as_of_t_is_a_prefix_of_a_later_one(sample_db: tuple[Settings, Engine]) -> None:
    settings, engine = sample_db
    early = datasets_db.load_dataset(
        engine, process(settings=settings, engine=engine, as_of=date(2012, 1, 13)).run_id
    )
    late = datasets_db.load_dataset(engine, process(settings=settings, engine=engine, as_of=AS_OF).run_id)
    n = early.n_sessions
    assert early.end_date == date(2012, 1, 13) and late.dates[:n] == early.dates
    np.testing.assert_array_equal(late.features[:n], early.features)
    np.testing.assert_array_equal(late.target_price[: n - 1], early.target_price[:-1])
    assert np.isnan(early.target_price[-1]).all()


def test_zero_volume_index_stays_finite_through_process_and_build(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    days = weekdays(START, 500)
    store_frames(
        engine,
        {"AAA": synthetic_frame(days, seed=1), "^IDX": synthetic_frame(days, seed=2, zero_volume=True)},
    )
    settings = settings.replace(data={"tickers": ("AAA", "^IDX")})
    run_id = process(settings=settings, engine=engine, as_of=days[-1]).run_id
    build(settings=settings, engine=engine)
    stored = datasets_db.load_dataset(engine, run_id)
    assert np.isfinite(stored.features).all()
    built = datasets_db.load_built(engine, run_id)
    for part in (built.train, built.validation, built.test):
        assert np.isfinite(part.x).all() and np.isfinite(part.y).all()
    assert np.isfinite(np.asarray(built.scalers["features"]["scale"])).all()


def test_unknown_and_unbuilt_dataset_ids(sample_db: tuple[Settings, Engine]) -> None:
    settings, engine = sample_db
    with pytest.raises(NoDataError, match="No dataset yet"):
        build(settings=settings, engine=engine)
    run_id = process(settings=settings, engine=engine, as_of=AS_OF).run_id
    with pytest.raises(NoDataError, match="not been built") as unbuilt:
        datasets_db.load_built(engine, run_id)
    assert f"--run-id {run_id}" in (unbuilt.value.hint or "")
    with pytest.raises(UsageError, match="ds-nope") as unknown:
        build(settings=settings, engine=engine, run_id="ds-nope")
    assert unknown.value.exit_code == 2 and run_id in (unknown.value.hint or "")


# --- the CLI -------------------------------------------------------------------------------------------


@pytest.fixture
def dataset_cli(tmp_path: Path, database_url: str) -> Iterator[tuple[Cli, Engine]]:
    config = write_config(tmp_path, database_url, extra=f"[data]\nstart = {START.isoformat()}\n")
    engine = open_database(load_settings(config, environ={}))
    try:
        yield Cli(config), engine
    finally:
        engine.dispose()


def test_cli_process_then_build_prints_tables_and_json(dataset_cli: tuple[Cli, Engine]) -> None:
    cli, engine = dataset_cli
    store_frames(engine, sample_frames(start=START))
    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 0, result.output
    for text in ("GOOG", "MSFT", "^GSPC", "^IXIC", "sessions", "features", "ds-20130301-"):
        assert text in result.output
    processed = json.loads(cli("process", "--as-of", AS_OF.isoformat(), "--json").stdout)
    assert processed["status"] == "ok" and processed["reused"] is True
    assert processed["tickers"] == list(SAMPLE_TICKERS) and processed["n_features"] == 33
    assert processed["sessions"] > 800 and processed["end_date"] == AS_OF.isoformat()
    assert str(processed["sessions"]) in result.output

    result = cli("--as-of", AS_OF.isoformat(), "build")
    assert result.exit_code == 0, result.output
    for text in ("train", "validation", "test", processed["run_id"], "4 tickers", "33 features"):
        assert text in result.output
    built = json.loads(cli("build", "--run-id", processed["run_id"], "--json").stdout)
    assert built["run_id"] == processed["run_id"] and built["sequence_length"] == 30
    counts = [built[p]["windows"] for p in ("train", "validation", "test")]
    assert sum(counts) == processed["sessions"] - 30 and counts[0] > counts[1] > 0
    for part in ("train", "validation", "test"):
        assert str(built[part]["windows"]) in result.output
        assert built[part]["first_target_date"] in result.output
    assert built["train"]["last_target_date"] < built["validation"]["first_target_date"]
    with engine.connect() as connection:
        ledger = connection.execute(
            select(PipelineRun.command, PipelineRun.status).order_by(PipelineRun.id)
        ).all()
    assert [tuple(r) for r in ledger] == [
        ("process", "ok"),
        ("process", "ok"),
        ("build", "ok"),
        ("build", "ok"),
    ]


def test_cli_bad_input_errors_and_exit_codes(dataset_cli: tuple[Cli, Engine]) -> None:
    cli, engine = dataset_cli
    result = cli("--as-of", AS_OF.isoformat(), "build")
    assert result.exit_code == 4 and "No dataset yet" in result.output and "stockcli process" in result.output

    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 4
    assert (
        "No stored bars for GOOG, MSFT, ^GSPC, ^IXIC" in result.output and "stockcli fetch" in result.output
    )

    frames = sample_frames(start=START)
    frames["GOOG"] = frames["GOOG"].loc["2012-06-01":]  # 190 sessions: too little history
    store_frames(engine, frames)
    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 4, result.output
    needed = 199 + 30 + 7
    have = len(frames["GOOG"])
    assert f"GOOG has {have} sessions, {needed - have} missing" in result.output
    assert "MSFT" not in result.output.split("Too little history")[1].split(".")[0]

    result = cli("--as-of", AS_OF.isoformat(), "process", "--ticker", "MSFT", "--ticker", "^gspc")
    assert result.exit_code == 0, result.output
    run_id = json.loads(
        cli("--as-of", AS_OF.isoformat(), "--json", "process", "-t", "MSFT", "-t", "^GSPC").stdout
    )["run_id"]
    result = cli("build", "--run-id", "ds-20990101-000000000000")
    assert result.exit_code == 2
    assert "No dataset with id 'ds-20990101-000000000000'" in result.output and run_id in result.output

    bad = cli.config_path.read_text() + '\n[features]\nindicators = [{ name = "ichimoku" }]\n'
    cli.config_path.write_text(bad)
    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 2 and "Unknown indicator 'ichimoku'" in result.output
