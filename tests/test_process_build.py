"""`process` and `build` on a real database (SQLite and PostgreSQL), through the services and the CLI:
each ticker on its own history, per-ticker reports and warnings, storage without pickles, the old
layout refused with a fix-it hint, and the forecasting primitive equal to every stored window."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import Settings, load_settings
from stockcli.db import datasets as datasets_db
from stockcli.db.bars import load_bars
from stockcli.db.engine import open_database
from stockcli.db.models import Dataset, PipelineRun, ScaledFeatureSet, Scaler
from stockcli.errors import NoDataError, UsageError
from stockcli.features.dataset import build_inputs, unscale_return
from stockcli.features.indicators import feature_names, model_warmup
from stockcli.services.build import build
from stockcli.services.fetch import fetch
from stockcli.services.process import process
from tests.bars_data import sample_frame, sample_frames, store_frames, synthetic_frame, weekdays
from tests.conftest import Cli, write_config
from tests.model_helpers import gather

START = date(2010, 6, 1)
AS_OF = date(2013, 3, 1)
XNYS = trading_calendar("XNYS")


def _warmup(settings: Settings) -> int:
    """Bars a ticker spends in indicator warm-up before its first usable session."""
    return model_warmup(settings.features.indicators)


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


def _scaled_copy(frame: pd.DataFrame, factor: float) -> pd.DataFrame:
    out = frame.astype("float64")
    out[["open", "high", "low", "close"]] *= factor
    return out


# --- the forecasting primitive and the stored windows ----------------------------------------------------


def test_stored_windows_equal_the_primitive_rebuilt_from_raw_bars_with_next_session_targets(
    sample_db: tuple[Settings, Engine],
) -> None:
    settings, engine = sample_db
    processed = process(settings=settings, engine=engine, as_of=AS_OF)
    built = build(settings=settings, engine=engine)
    assert built.run_id == processed.run_id
    assert processed.context_tickers == ("^GSPC", "^IXIC")  # the watchlist's indices, by default
    dataset = datasets_db.load_built(engine, processed.run_id)
    test = dataset.test
    assert len(test) == built.test.windows > 250  # four tickers' windows on the same dates

    bars = load_bars(engine, list(dataset.spec.series), start=dataset.spec.start_date, end=AS_OF)
    as_of_dates = sorted(set(test.base_dates))
    inputs = build_inputs(
        spec=dataset.spec,
        scalers=dataset.scalers,
        bars=bars,
        as_of_dates=as_of_dates,
        tickers=dataset.tickers,
        sessions=XNYS.sessions(START, AS_OF),
    )
    served = gather(inputs.windows)
    index = {key: i for i, key in enumerate(zip(inputs.as_of_dates, inputs.windows.tickers, strict=True))}
    stored = gather(test)
    L = settings.dataset.sequence_length
    assert stored.shape == (len(test), L, served.shape[2]) and stored.dtype == np.float32
    for k, key in enumerate(zip(test.base_dates, test.tickers, strict=True)):
        np.testing.assert_allclose(served[index[key]], stored[k], rtol=0, atol=1e-6, err_msg=str(key))
        assert inputs.windows.base_closes[index[key]] == test.base_closes[k]
    # The spec and scalers a model version will carry are plain JSON.
    assert type(dataset.spec).from_json(json.loads(json.dumps(dataset.spec.to_json()))) == dataset.spec
    assert json.loads(json.dumps(dataset.scalers)) == dataset.scalers
    returns = unscale_return(dataset.scalers["target"], test.y)
    np.testing.assert_allclose(test.base_closes * np.exp(returns), test.target_closes, rtol=1e-5)

    # Every stored target is the close of the next exchange session.
    closes = {t: sample_frame(t)["close"] for t in dataset.tickers}
    for part in (dataset.train, dataset.validation, dataset.test):
        tickers = part.tickers
        for k in range(0, len(part), 7):
            base, target = part.base_dates[k], part.target_dates[k]
            assert target == XNYS.next_session(base)  # t+1, across weekends and holidays
            assert part.target_closes[k] == closes[tickers[k]].loc[pd.Timestamp(target)]
            assert part.base_closes[k] == closes[tickers[k]].loc[pd.Timestamp(base)]
    sandy = [
        (part.target_dates[k], part.tickers[k])
        for part in (dataset.train, dataset.validation, dataset.test)
        for k, d in enumerate(part.base_dates)
        if d == date(2012, 10, 26)
    ]
    assert sorted(sandy) == [(date(2012, 10, 31), t) for t in sorted(dataset.tickers)]  # NYSE closed 29-30
    assert max(dataset.train.target_dates) < min(dataset.validation.target_dates)
    assert max(dataset.validation.target_dates) < min(dataset.test.target_dates)


# --- versioned snapshots ------------------------------------------------------------------------------------


def test_same_bars_and_config_give_the_same_dataset_idempotently_stored_without_pickles(
    sample_db: tuple[Settings, Engine],
) -> None:
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
    # Arrays are plain .npy bytes (no pickle, no object arrays); scalers are JSON numbers.
    tables = (Dataset.__table__, ScaledFeatureSet.__table__)
    with engine.connect() as connection:
        rows = [dict(r) for table in tables for r in connection.execute(select(table)).mappings()]
        params = [p for (p,) in connection.execute(select(Scaler.params))]
    checked = 0
    for row in rows:
        for column, blob in row.items():
            if column.endswith("_npy"):
                assert blob is not None, column
                array = np.load(io.BytesIO(blob), allow_pickle=False)  # raises on a pickle
                assert array.dtype != object, column
                checked += 1
    assert checked == 2 * 6 + 3 * 8  # two datasets: dates, features, closes, two targets, mask; 3 parts
    assert params and json.loads(json.dumps(params)) == params


def test_a_dataset_as_of_t_is_a_prefix_of_a_later_one(sample_db: tuple[Settings, Engine]) -> None:
    settings, engine = sample_db
    t = date(2012, 1, 13)
    early = datasets_db.load_dataset(engine, process(settings=settings, engine=engine, as_of=t).run_id).panel
    late = datasets_db.load_dataset(
        engine, process(settings=settings, engine=engine, as_of=AS_OF).run_id
    ).panel
    n = early.n_sessions
    assert early.dates[-1] == t and late.dates[:n] == early.dates
    np.testing.assert_array_equal(late.features[:n], early.features)
    np.testing.assert_array_equal(late.valid[:n], early.valid)
    np.testing.assert_array_equal(late.real[:n], early.real)
    np.testing.assert_array_equal(late.target_price[: n - 1], early.target_price[:-1])
    assert np.isnan(early.target_price[-1]).all()  # the next session is not known as of t
    assert not np.isnan(late.target_price[n - 1]).all()


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
    stored = datasets_db.load_dataset(engine, run_id).panel
    assert np.isfinite(stored.features[stored.valid]).all()
    built = datasets_db.load_built(engine, run_id)
    for part in (built.train, built.validation, built.test):
        assert np.isfinite(gather(part)).all() and np.isfinite(part.y).all()
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


def test_a_dataset_of_the_previous_layout_asks_to_process_again(sample_db: tuple[Settings, Engine]) -> None:
    """Rows the previous stockcli wrote (tickers side by side: no mask, no series, no window index)
    survive the migration; using them fails in one line that says what to run."""
    settings, engine = sample_db
    run_id = process(settings=settings, engine=engine, as_of=AS_OF).run_id
    build(settings=settings, engine=engine)
    stored = datasets_db.load_dataset(engine, run_id)
    old_spec = {
        key: stored.feature_spec.to_json()[key]
        for key in ("tickers", "indicators", "feature_names", "ffill_limit", "start_date")
    }
    old_spec.update(version=1, warmup_sessions=199)
    with engine.begin() as connection:  # the old version hashed other content
        connection.execute(
            update(Dataset).where(Dataset.run_id == run_id).values(mask_npy=None, content_hash="0" * 64)
        )
    with pytest.raises(NoDataError, match=f"Dataset {run_id} cannot be used") as raised:
        datasets_db.load_dataset(engine, run_id)
    assert raised.value.hint == datasets_db.OLD_LAYOUT_HINT
    assert "stockcli process" in raised.value.hint and raised.value.exit_code == 4
    with pytest.raises(NoDataError) as via_build:
        build(settings=settings, engine=engine, run_id=run_id)
    assert via_build.value.hint == datasets_db.OLD_LAYOUT_HINT

    with engine.begin() as connection:
        connection.execute(update(Dataset).where(Dataset.run_id == run_id).values(feature_spec=old_spec))
        connection.execute(
            update(ScaledFeatureSet)
            .where(ScaledFeatureSet.run_id == run_id)
            .values(windows_npy=None, context_npy=None)
        )
    with pytest.raises(NoDataError, match=f"Dataset {run_id} cannot be used") as built_raised:
        datasets_db.load_built(engine, run_id)
    assert built_raised.value.hint == datasets_db.OLD_LAYOUT_HINT
    # Doing what the hint says makes it usable again.
    again = process(settings=settings, engine=engine, as_of=AS_OF)
    assert not again.reused and datasets_db.load_dataset(engine, again.run_id).panel.valid.any()
    build(settings=settings, engine=engine, run_id=again.run_id)
    assert len(datasets_db.load_built(engine, again.run_id).test) > 0


# --- each ticker on its own history ---------------------------------------------------------------------


def _write_csv(folder: Path, ticker: str, frame: pd.DataFrame) -> None:
    out = pd.DataFrame(
        {
            "Date": frame.index.strftime("%Y-%m-%d"),
            "Open": frame["open"].to_numpy(),
            "High": frame["high"].to_numpy(),
            "Low": frame["low"].to_numpy(),
            "Close": frame["close"].to_numpy(),
            "Volume": frame["volume"].to_numpy().astype("int64"),
        }
    )
    out.to_csv(folder / f"{ticker}.csv", index=False)


YOUNG_LISTED = date(2011, 6, 1)


def test_a_young_ticker_from_csv_never_truncates_anyone_and_is_reported(
    db: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, engine = db
    folder = tmp_path / "bars"
    folder.mkdir()
    young = _scaled_copy(sample_frame("MSFT", start=YOUNG_LISTED), 3.7)
    frames = {
        "GOOG": sample_frame("GOOG", start=START),
        "MSFT": sample_frame("MSFT", start=START),
        "YOUNG": young,
    }
    for ticker, frame in frames.items():
        _write_csv(folder, ticker, frame)
    settings = settings.replace(
        data={"source": "csv", "csv_dir": folder, "tickers": ("GOOG", "MSFT", "YOUNG")},
        forecasters={"har_market": ""},  # no market file in the folder
    )
    fetched = fetch(settings=settings, engine=engine, as_of=AS_OF, now=datetime(2013, 3, 4, tzinfo=UTC))
    assert fetched.status == "ok", fetched

    warmup, L = _warmup(settings), settings.dataset.sequence_length
    pair = process(settings=settings, engine=engine, as_of=AS_OF, tickers=["GOOG", "MSFT"])
    three = process(settings=settings, engine=engine, as_of=AS_OF)
    assert three.tickers == ("GOOG", "MSFT", "YOUNG")
    for ticker in ("GOOG", "MSFT"):
        assert three.per_ticker[ticker] == pair.per_ticker[ticker]  # nothing of theirs is lost
        report = three.per_ticker[ticker]
        assert report.first_session == frames[ticker].index[warmup].date()  # from its own start
        assert report.last_session == AS_OF
        assert report.sessions == len(frames[ticker]) - warmup
    mine = three.per_ticker["YOUNG"]
    assert mine.first_session == young.index[warmup].date()
    assert mine.last_session == AS_OF and mine.sessions == len(young) - warmup
    assert 0 < mine.windows < three.per_ticker["GOOG"].windows
    assert three.windows_possible == pair.windows_possible + mine.windows
    assert three.sessions == pair.sessions and three.start_date == pair.start_date  # no truncation
    assert not [w for w in three.warnings if "YOUNG" in w]  # it reaches the test period

    built_pair = build(settings=settings, engine=engine, run_id=pair.run_id)
    built_three = build(settings=settings, engine=engine, run_id=three.run_id)
    for ticker in ("GOOG", "MSFT"):
        assert built_three.windows_per_ticker[ticker] == built_pair.windows_per_ticker[ticker]
    assert built_three.windows_per_ticker["YOUNG"]["test"] > 0
    assert (
        built_three.train.windows
        == built_pair.train.windows + built_three.windows_per_ticker["YOUNG"]["train"]
    )

    # Nine sessions short of its first window it cannot reach the test period: it is named, and the
    # others keep their windows.
    as_of = young.index[warmup + L - 10].date()
    earlier = process(settings=settings, engine=engine, as_of=as_of)
    assert earlier.per_ticker["YOUNG"].windows == 0 and earlier.per_ticker["YOUNG"].sessions == L - 9
    assert earlier.per_ticker["GOOG"].windows > 200
    [warning] = earlier.warnings
    assert warning.startswith("YOUNG is too young to have test windows")
    assert build(settings=settings, engine=engine, run_id=earlier.run_id).windows_per_ticker["YOUNG"] == {
        "train": 0,
        "validation": 0,
        "test": 0,
    }


def test_the_young_ticker_warning_counts_the_warmup_still_to_go(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    young = _scaled_copy(sample_frame("MSFT", start=YOUNG_LISTED, end=AS_OF), 3.7)
    store_frames(engine, {"GOOG": sample_frame("GOOG", start=START), "YOUNG": young})
    warmup, L = _warmup(settings), settings.dataset.sequence_length
    as_of = young.index[warmup - 10].date()  # 9 bars short of its warm-up
    have = int((young.index <= pd.Timestamp(as_of)).sum())
    result = process(
        settings=settings.replace(data={"tickers": ("GOOG", "YOUNG")}), engine=engine, as_of=as_of
    )
    [warning] = result.warnings
    assert "YOUNG is too young to have test windows" in warning
    assert f"It needs {warmup + L - have} more sessions for a first window" in warning


def test_a_delisted_ticker_is_reported_up_to_its_last_bar(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    gone = _scaled_copy(sample_frame("GOOG", start=START, end=date(2012, 6, 1)), 0.5)
    store_frames(
        engine,
        {"GOOG": sample_frame("GOOG", start=START), "MSFT": sample_frame("MSFT", start=START), "GONE": gone},
    )
    settings = settings.replace(data={"tickers": ("GOOG", "MSFT", "GONE")})
    pair = process(settings=settings, engine=engine, as_of=AS_OF, tickers=["GOOG", "MSFT"])
    result = process(settings=settings, engine=engine, as_of=AS_OF)
    for ticker in ("GOOG", "MSFT"):
        assert result.per_ticker[ticker] == pair.per_ticker[ticker]
    report = result.per_ticker["GONE"]
    warmup, L = _warmup(settings), settings.dataset.sequence_length
    assert report.first_session == gone.index[warmup].date()
    assert report.last_session == date(2012, 6, 1)  # its last bar, not a session it never traded
    assert report.sessions == len(gone) - warmup
    assert report.windows == len(gone) - warmup - L  # every row but the last (no next bar) ends one
    built = build(settings=settings, engine=engine, run_id=result.run_id)
    assert built.windows_per_ticker["GONE"]["test"] == 0 and built.windows_per_ticker["GONE"]["train"] > 0


def test_a_delisted_ticker_is_not_called_too_young(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    gone = _scaled_copy(sample_frame("GOOG", start=START, end=date(2012, 6, 1)), 0.5)
    store_frames(engine, {"MSFT": sample_frame("MSFT", start=START), "GONE": gone})
    result = process(
        settings=settings.replace(data={"tickers": ("MSFT", "GONE")}), engine=engine, as_of=AS_OF
    )
    assert result.per_ticker["GONE"].windows > 100
    # It has no test window because it stopped trading, not because it is young or short of history.
    for warning in result.warnings:
        assert "too young" not in warning and "more sessions for a first window" not in warning, warning


def test_a_watchlist_ticker_without_bars_is_warned_and_the_rest_is_built(db: tuple[Settings, Engine]) -> None:
    settings, engine = db
    store_frames(
        engine, {"GOOG": sample_frame("GOOG", start=START), "MSFT": sample_frame("MSFT", start=START)}
    )
    settings = settings.replace(data={"tickers": ("GOOG", "NOPE", "MSFT")})
    result = process(settings=settings, engine=engine, as_of=AS_OF)
    assert result.tickers == ("GOOG", "NOPE", "MSFT")
    assert result.per_ticker["NOPE"].sessions == 0 and result.per_ticker["NOPE"].windows == 0
    assert result.per_ticker["NOPE"].first_session is None
    [warning] = result.warnings
    assert "NOPE has no stored bars up to 2013-03-01" in warning and "stockcli fetch" in warning
    built = build(settings=settings, engine=engine, run_id=result.run_id)
    assert built.windows_per_ticker["NOPE"] == {"train": 0, "validation": 0, "test": 0}
    assert built.windows_per_ticker["GOOG"]["test"] > 0 and built.windows_per_ticker["MSFT"]["test"] > 0

    nothing = settings.replace(data={"tickers": ("NOPE", "NADA")})
    with pytest.raises(NoDataError, match="No stored bars for NOPE, NADA") as raised:
        process(settings=nothing, engine=engine, as_of=AS_OF)
    assert raised.value.exit_code == 4 and "stockcli fetch" in (raised.value.hint or "")


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
    settings = load_settings(cli.config_path, environ={})
    warmup, L = _warmup(settings), settings.dataset.sequence_length
    n_features = len(feature_names(settings.features.indicators))
    store_frames(engine, sample_frames(start=START))
    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 0, result.output
    for text in ("GOOG", "MSFT", "^GSPC", "^IXIC", "sessions", "features", "ds-20130301-"):
        assert text in result.output
    processed = json.loads(cli("process", "--as-of", AS_OF.isoformat(), "--json").stdout)
    assert processed["status"] == "ok" and processed["reused"] is True
    assert (
        processed["tickers"] == ["GOOG", "MSFT", "^GSPC", "^IXIC"] and processed["n_features"] == n_features
    )
    assert processed["sessions"] > 600 and processed["end_date"] == AS_OF.isoformat()
    assert str(processed["sessions"]) in result.output
    assert processed["warnings"] == []
    first = sample_frame("GOOG", start=START).index[warmup].date().isoformat()
    assert processed["per_ticker"]["GOOG"] == {
        "sessions": len(sample_frame("GOOG", start=START, end=AS_OF)) - warmup,
        "first_session": first,
        "last_session": AS_OF.isoformat(),
        "windows": processed["per_ticker"]["GOOG"]["windows"],
    }
    assert set(processed["per_ticker"]) == set(processed["tickers"])

    result = cli("--as-of", AS_OF.isoformat(), "build")
    assert result.exit_code == 0, result.output
    for text in ("train", "validation", "test", processed["run_id"], "4 tickers", f"{n_features} features"):
        assert text in result.output
    built = json.loads(cli("build", "--run-id", processed["run_id"], "--json").stdout)
    assert built["run_id"] == processed["run_id"] and built["sequence_length"] == L
    counts = [built[p]["windows"] for p in ("train", "validation", "test")]
    assert sum(counts) == processed["windows_possible"] and counts[0] > counts[1] > 0
    for part in ("train", "validation", "test"):
        assert str(built[part]["windows"]) in result.output
        assert built[part]["first_target_date"] in result.output
        assert sum(c[part] for c in built["windows_per_ticker"].values()) == built[part]["windows"]
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


def test_cli_process_shows_its_warnings(dataset_cli: tuple[Cli, Engine]) -> None:
    cli, engine = dataset_cli
    store_frames(
        engine, {"GOOG": sample_frame("GOOG", start=START), "MSFT": sample_frame("MSFT", start=START)}
    )
    as_of = AS_OF.isoformat()
    processed = json.loads(
        cli("--as-of", as_of, "--json", "process", "-t", "GOOG", "-t", "NOPE", "-t", "MSFT").stdout
    )
    assert processed["status"] == "ok"
    assert [w for w in processed["warnings"] if w.startswith("NOPE has no stored bars")]
    result = cli("--as-of", as_of, "process", "-t", "GOOG", "-t", "NOPE", "-t", "MSFT")
    assert result.exit_code == 0, result.output
    assert "NOPE has no stored bars" in " ".join(result.output.split())  # the user sees it too


def test_cli_bad_input_errors_and_exit_codes(dataset_cli: tuple[Cli, Engine]) -> None:
    cli, engine = dataset_cli
    result = cli("--as-of", AS_OF.isoformat(), "build")
    assert result.exit_code == 4 and "No dataset yet" in result.output and "stockcli process" in result.output

    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 4
    assert (
        "No stored bars for GOOG, MSFT, ^GSPC, ^IXIC" in result.output and "stockcli fetch" in result.output
    )

    warmup = _warmup(load_settings(cli.config_path, environ={}))
    store_frames(engine, {"GOOG": sample_frame("GOOG", end=AS_OF).iloc[-(warmup + 10) :]})
    result = cli("--as-of", AS_OF.isoformat(), "process", "-t", "GOOG")
    assert result.exit_code == 4, result.output
    message = " ".join(result.output.split())
    assert "Too little history" in message and "GOOG has 10 usable sessions" in message

    store_frames(engine, sample_frames(("MSFT", "^GSPC"), start=START))
    result = cli("--as-of", AS_OF.isoformat(), "process", "--ticker", "MSFT", "--ticker", "^gspc")
    assert result.exit_code == 0, result.output
    run_id = json.loads(
        cli("--as-of", AS_OF.isoformat(), "--json", "process", "-t", "MSFT", "-t", "^GSPC").stdout
    )["run_id"]
    result = cli("build", "--run-id", "ds-20990101-000000000000")
    assert result.exit_code == 2
    assert "No dataset with id 'ds-20990101-000000000000'" in result.output and run_id in result.output

    with engine.begin() as connection:  # a dataset the previous stockcli made
        connection.execute(update(Dataset).where(Dataset.run_id == run_id).values(mask_npy=None))
    result = cli("build", "--run-id", run_id)
    assert result.exit_code == 4 and "cannot be used by this stockcli" in result.output
    assert "stockcli process" in result.output

    bad = cli.config_path.read_text() + '\n[features]\nindicators = [{ name = "ichimoku" }]\n'
    cli.config_path.write_text(bad)
    result = cli("--as-of", AS_OF.isoformat(), "process")
    assert result.exit_code == 2 and "Unknown indicator 'ichimoku'" in result.output
