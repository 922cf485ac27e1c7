"""Datasets as arrays: the panel of independent series (each on its own history), next-session
targets, gaps and delistings, context covariates, the calendar split shared by every ticker, pooled
scalers fit on training dates, stored windows, and the forecasting input primitive."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockcli.clock import trading_calendar
from stockcli.config import DEFAULT_INDICATORS, load_settings
from stockcli.errors import NoDataError
from stockcli.features.dataset import (
    BuildOutput,
    BuiltSpec,
    DatasetSpec,
    Panel,
    build_inputs,
    build_sets,
    context_block,
    make_panel,
    min_windows,
    run_lengths,
    split_counts,
    split_parts,
    window_pairs,
)
from stockcli.features.indicators import OHLCV, model_warmup, serving_sessions
from stockcli.services.process import feature_spec
from tests.bars_data import sample_frame, synthetic_frame, weekdays
from tests.model_helpers import gather
from tests.ta_oracles import compute_model_features

# Small, fast indicators with every kind of memory: a short EMA and ATR, RSI, OBV (a flow), and the
# EWMA volatility (warm-up 20). Model warm-up: 20 bars.
SMALL: list[dict[str, Any]] = [
    {"name": "ema", "window": 5},
    {"name": "rsi", "window": 3},
    {"name": "log_return"},
    {"name": "obv"},
    {"name": "atr", "window": 5},
    {"name": "ewm_vol"},
]
WARMUP = 20
L = 5
XNYS = trading_calendar("XNYS")

# --- a synthetic watchlist: a full series, one with gaps, a young one, a delisted one, a context index ---

DAYS = weekdays(date(2020, 1, 6), 400)
ONE_GAP = 150  # B misses this one session (within ffill_limit 1)
LONG_GAP = range(250, 260)  # B misses ten sessions
YOUNG_FROM = 200  # Y lists on DAYS[200]
DELISTED_AFTER = 299  # D's last bar is DAYS[299]
CONTEXT_GAP = range(320, 330)  # the context index misses ten sessions


def _drop(frame: pd.DataFrame, rows: Sequence[int]) -> pd.DataFrame:
    return frame.drop(index=pd.to_datetime([DAYS[i] for i in rows]))


@pytest.fixture(scope="module")
def world() -> dict[str, pd.DataFrame]:
    return {
        "A": synthetic_frame(DAYS, seed=1),
        "B": _drop(synthetic_frame(DAYS, seed=2, price=20.0), [ONE_GAP, *LONG_GAP]),
        "Y": synthetic_frame(DAYS[YOUNG_FROM:], seed=3, price=3000.0),
        "D": synthetic_frame(DAYS[: DELISTED_AFTER + 1], seed=4, price=7.0),
        "^IDX": _drop(synthetic_frame(DAYS, seed=5, price=3000.0, zero_volume=True), list(CONTEXT_GAP)),
    }


WATCHLIST = ("A", "B", "Y", "D")
CONTEXT = ("^IDX",)


def _spec(
    tickers: Sequence[str],
    context: Sequence[str] = CONTEXT,
    indicators: Sequence[Mapping[str, Any]] = SMALL,
    start: date = DAYS[0],
    ffill_limit: int = 1,
) -> DatasetSpec:
    """The dataset spec exactly as `process` writes it."""
    settings = load_settings(
        None,
        environ={},
        overrides={
            "data": {"tickers": list(tickers), "start": start},
            "features": {"indicators": list(indicators), "ffill_limit": ffill_limit},
        },
    )
    return feature_spec(settings, tuple(tickers), tuple(context))


def _panel(
    frames: Mapping[str, pd.DataFrame],
    tickers: Sequence[str] = WATCHLIST,
    context: Sequence[str] = CONTEXT,
    indicators: Sequence[Mapping[str, Any]] = SMALL,
    sessions: Sequence[date] | None = DAYS,
    **kwargs: Any,
) -> Panel:
    options: dict[str, Any] = {"ffill_limit": 1}
    options.update(kwargs)
    return make_panel(
        frames,
        tickers=tuple(tickers),
        context_tickers=tuple(context),
        indicators=indicators,
        sessions=sessions,
        **options,
    )


def _build(panel: Panel, spec: DatasetSpec, sequence_length: int = L, **kwargs: Any) -> BuildOutput:
    options: dict[str, Any] = {"train_fraction": 0.7, "validation_fraction": 0.15}
    options.update(kwargs)
    return build_sets(panel, spec=spec, sequence_length=sequence_length, **options)


def _pairs(panel: Panel, sequence_length: int = L) -> set[tuple[date, str]]:
    """Every window as (base date, ticker)."""
    rows, series = window_pairs(panel, sequence_length)
    return {(panel.dates[r], panel.series[s]) for r, s in zip(rows, series, strict=True)}


def _bases(panel: Panel, ticker: str, sequence_length: int = L) -> list[int]:
    rows, series = window_pairs(panel, sequence_length)
    return rows[series == panel.index_of(ticker)].tolist()


@pytest.fixture(scope="module")
def world_panel(world: dict[str, pd.DataFrame]) -> Panel:
    return _panel(world)


@pytest.fixture(scope="module")
def world_built(world_panel: Panel) -> BuildOutput:
    return _build(world_panel, _spec(WATCHLIST))


# --- next-session targets -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_2010() -> dict[str, pd.DataFrame]:
    """Real bars, 2010-2012 (a weekend every week, holidays, Sandy's two-day closure)."""
    return {t: sample_frame(t, date(2010, 1, 1), date(2012, 12, 31)) for t in ("GOOG", "MSFT", "^GSPC")}


def test_target_is_the_close_of_the_next_session_t_plus_1(sample_2010: dict[str, pd.DataFrame]) -> None:
    sessions = XNYS.sessions(date(2010, 1, 1), date(2012, 12, 31))
    panel = _panel(sample_2010, tickers=("GOOG", "MSFT"), context=("^GSPC",), sessions=sessions)
    assert panel.dates == sessions
    pins = {
        date(2012, 10, 26): date(2012, 10, 31),  # Friday before Hurricane Sandy closed NYSE Mon+Tue
        date(2012, 2, 17): date(2012, 2, 21),  # Friday before Presidents' Day
        date(2012, 11, 21): date(2012, 11, 23),  # Thanksgiving
        date(2012, 6, 8): date(2012, 6, 11),  # an ordinary weekend
        date(2012, 6, 12): date(2012, 6, 13),  # an ordinary weekday
    }
    for base, target in pins.items():
        row = panel.dates.index(base)
        assert panel.dates[row + 1] == target
        for ticker in ("GOOG", "MSFT"):
            s = panel.index_of(ticker)
            frame = sample_2010[ticker]
            base_close = frame.loc[pd.Timestamp(base), "close"]
            next_close = frame.loc[pd.Timestamp(target), "close"]
            assert panel.closes[row, s] == base_close
            assert panel.target_price[row, s] == next_close  # exactly t+1 ...
            assert panel.target_return[row, s] == np.log(next_close / base_close)
            after_next = frame.loc[pd.Timestamp(panel.dates[row + 2]), "close"]
            assert panel.target_price[row, s] != after_next  # ... never t+2 (the replaced system's slip)
    # Every usable real row with a real next row: target = the next row's close; the last row has none.
    usable = panel.real & panel.valid
    has_next = usable[:-1] & usable[1:]
    np.testing.assert_array_equal(panel.target_price[:-1][has_next], panel.closes[1:][has_next])
    assert np.isnan(panel.target_price[-1]).all()

    built = _build(panel, _spec(("GOOG", "MSFT"), ("^GSPC",), start=date(2010, 1, 1)))
    for part in built.parts.values():
        for base, target in zip(part.base_dates, part.target_dates, strict=True):
            assert target == XNYS.next_session(base)
    test = built.parts["test"]
    k = test.base_dates.index(date(2012, 10, 26))
    assert test.target_dates[k] == date(2012, 10, 31)
    ticker = panel.series[int(test.series[k])]
    assert test.target_closes[k] == sample_2010[ticker].loc["2012-10-31", "close"]


def test_a_session_without_a_bar_is_a_visible_gap_even_for_a_lone_series() -> None:
    frame = _drop(synthetic_frame(DAYS, seed=1), [100])
    panel = _panel({"A": frame}, tickers=("A",), context=())
    row = panel.dates.index(DAYS[100])  # the session is on the row axis although no bar has it
    assert not panel.real[row, 0] and panel.valid[row, 0]  # forward-filled (limit 1), not a bar
    assert np.isnan(panel.target_price[row - 1, 0])  # DAYS[101] is not the session after DAYS[99]
    assert np.isnan(panel.target_price[row, 0])  # a filled row is never a base with a target
    assert panel.target_price[row + 1, 0] == frame.loc[pd.Timestamp(DAYS[102]), "close"]


# --- each series on its own history ----------------------------------------------------------------


def test_each_series_starts_at_its_own_first_usable_row_and_warmup_is_never_backfilled(
    world: dict[str, pd.DataFrame], world_panel: Panel
) -> None:
    panel = world_panel
    assert model_warmup(SMALL) == WARMUP
    first_bar = {"A": 0, "B": 0, "Y": YOUNG_FROM, "D": 0, "^IDX": 0}
    for name, bar in first_bar.items():
        s = panel.index_of(name)
        first_valid = int(np.flatnonzero(panel.valid[:, s])[0])
        assert panel.dates[first_valid] == DAYS[bar + WARMUP], name
        assert np.isnan(panel.features[:first_valid, s]).all()  # nothing back-filled
        # Warm-up bars are real bars (the ticker traded that day) but never usable rows.
        assert panel.real[first_valid - WARMUP : first_valid, s].all()
        assert not panel.valid[:first_valid, s].any()
        # The row holds the features of the series' own bars, from its own first bar on.
        frame = world[name]
        own = compute_model_features(*(frame[c].to_numpy(dtype=float) for c in OHLCV), SMALL)
        np.testing.assert_array_equal(panel.features[first_valid, s], own[WARMUP])
    assert panel.series == (*WATCHLIST, *CONTEXT)


@pytest.fixture(scope="module")
def young_world() -> dict[str, pd.DataFrame]:
    """GOOG and MSFT (full sample), and YOUNG: MSFT's bars from 2011-06-01 on, prices x 3.7."""
    young = sample_frame("MSFT", start=date(2011, 6, 1)).astype("float64")
    young[["open", "high", "low", "close"]] *= 3.7
    return {"GOOG": sample_frame("GOOG"), "MSFT": sample_frame("MSFT"), "YOUNG": young}


def test_a_young_ticker_never_truncates_anyone(young_world: dict[str, pd.DataFrame]) -> None:
    as_of = date(2013, 3, 1)
    sessions = XNYS.sessions(date(1999, 1, 4), as_of)
    both = _panel(young_world, tickers=("GOOG", "MSFT"), context=(), sessions=sessions, end_date=as_of)
    three = _panel(
        young_world, tickers=("GOOG", "MSFT", "YOUNG"), context=(), sessions=sessions, end_date=as_of
    )
    assert three.dates == both.dates
    for ticker in ("GOOG", "MSFT"):
        s = both.index_of(ticker)
        np.testing.assert_array_equal(three.features[:, s], both.features[:, s])
        np.testing.assert_array_equal(three.valid[:, s], both.valid[:, s])
    old, new = _pairs(both, 30), _pairs(three, 30)
    assert {p for p in new if p[1] != "YOUNG"} == old  # every GOOG and MSFT window kept
    goog = [p for p in old if p[1] == "GOOG"]
    assert min(goog)[0] < date(2005, 7, 1)  # GOOG from its own 2004 listing, not from YOUNG's
    young = sorted(p for p in new if p[1] == "YOUNG")
    assert 0 < len(young) < len(goog)
    assert young[0][0] == XNYS.sessions(date(2011, 6, 1), as_of)[model_warmup(SMALL) + 30 - 1]

    spec_two = _spec(("GOOG", "MSFT"), (), start=date(1999, 1, 4))
    spec_three = _spec(("GOOG", "MSFT", "YOUNG"), (), start=date(1999, 1, 4))
    built_two, built_three = _build(both, spec_two, 30), _build(three, spec_three, 30)
    for ticker in ("GOOG", "MSFT"):
        assert built_three.windows_per_ticker[ticker] == built_two.windows_per_ticker[ticker]
    assert (
        0
        < sum(built_three.windows_per_ticker["YOUNG"].values())
        < sum(built_three.windows_per_ticker["GOOG"].values())
    )
    assert built_three.windows_per_ticker["YOUNG"]["test"] > 0


# --- gaps and delistings -----------------------------------------------------------------------------------


def test_a_one_session_gap_is_filled_and_keeps_windows_without_targets_around_it(
    world: dict[str, pd.DataFrame], world_panel: Panel
) -> None:
    panel, b = world_panel, world_panel.index_of("B")
    assert panel.dates[ONE_GAP] == DAYS[ONE_GAP]
    assert panel.valid[ONE_GAP, b] and not panel.real[ONE_GAP, b]
    np.testing.assert_array_equal(panel.features[ONE_GAP, b], panel.features[ONE_GAP - 1, b])
    assert np.isnan(panel.target_return[ONE_GAP - 1, b])  # the next bar is not the next session's
    assert np.isnan(panel.target_return[ONE_GAP, b])  # a filled row is not a bar
    assert panel.target_price[ONE_GAP + 1, b] == world["B"].loc[pd.Timestamp(DAYS[ONE_GAP + 2]), "close"]
    bases = _bases(panel, "B")
    assert ONE_GAP - 1 not in bases and ONE_GAP not in bases
    # The run is not broken: the windows ending right after the gap span the filled row.
    assert {ONE_GAP + 1, ONE_GAP + 2, ONE_GAP + L - 1} <= set(bases)
    assert run_lengths(panel.valid)[ONE_GAP + 1, b] > L
    # Without forward-filling the same gap breaks the run: windows restart L rows after it.
    strict = _panel(world, ffill_limit=0)
    assert not strict.valid[ONE_GAP, b]
    strict_bases = _bases(strict, "B")
    assert not [r for r in strict_bases if ONE_GAP <= r < ONE_GAP + L]
    assert ONE_GAP + L in strict_bases


def test_a_ten_session_gap_breaks_windows(world_panel: Panel) -> None:
    panel, b = world_panel, world_panel.index_of("B")
    gap = list(LONG_GAP)
    assert panel.valid[gap[0], b]  # the first missing session is forward-filled (limit 1) ...
    assert not panel.valid[gap[1:], b].any()  # ... the other nine are not
    bases = _bases(panel, "B")
    for base in bases:  # no window spans the gap
        assert not set(range(base - L + 1, base + 1)) & set(gap[1:])
    resumed = gap[-1] + 1  # B's first bar after the gap
    assert [r for r in bases if gap[0] - 1 <= r < resumed + L - 1] == []
    assert resumed + L - 1 in bases  # windows restart L rows after the gap
    # A, on the same rows, keeps every window.
    a_bases = set(_bases(panel, "A"))
    assert set(range(gap[0] - 1, resumed + L)) <= a_bases


def test_a_delisted_ticker_has_windows_up_to_its_end_and_none_after(
    young_world: dict[str, pd.DataFrame],
) -> None:
    as_of = date(2013, 3, 1)
    sessions = XNYS.sessions(date(2004, 1, 2), as_of)
    gone = sample_frame("GOOG", end=date(2012, 6, 1)).astype("float64")
    gone[["open", "high", "low", "close"]] *= 0.21
    frames = {"GOOG": young_world["GOOG"], "MSFT": young_world["MSFT"], "GONE": gone}
    start = date(2004, 1, 2)
    both = _panel(frames, ("GOOG", "MSFT"), (), sessions=sessions, start_date=start, end_date=as_of)
    three = _panel(frames, ("GOOG", "MSFT", "GONE"), (), sessions=sessions, start_date=start, end_date=as_of)
    windows = sorted(p[0] for p in _pairs(three) if p[1] == "GONE")
    assert windows[-1] == date(2012, 5, 31)  # its last target is its last bar, 2012-06-01
    assert not [d for d in windows if d >= date(2012, 6, 1)]
    s = three.index_of("GONE")
    assert np.isnan(three.target_return[three.dates.index(date(2012, 6, 1)) :, s]).all()
    assert {p for p in _pairs(three) if p[1] != "GONE"} == _pairs(both)  # nobody else loses a window


# --- context covariates --------------------------------------------------------------------------------------


def test_context_block_by_hand() -> None:
    scaled = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)  # rows, series, features
    valid = np.array([[1, 1, 0], [1, 0, 1], [1, 1, 1], [0, 0, 0]], dtype=bool)
    block = context_block(scaled, valid, context_series=[2, 1], context_features=[1])
    expected = np.array(
        [
            [0.0, 0.0, scaled[0, 1, 1], 1.0],  # series 2 absent: zeros and flag 0; series 1 present
            [scaled[1, 2, 1], 1.0, 0.0, 0.0],
            [scaled[2, 2, 1], 1.0, scaled[2, 1, 1], 1.0],
            [0.0, 0.0, 0.0, 0.0],
        ],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(block, expected)
    assert block.dtype == np.float32


def test_context_gaps_are_masked_and_never_drop_a_row(world_panel: Panel, world_built: BuildOutput) -> None:
    panel, built = world_panel, world_built
    idx, a = panel.index_of("^IDX"), panel.index_of("A")
    names = built.spec.feature_names
    context_features = built.spec.context_features
    assert context_features and set(context_features) <= set(names)
    columns = [names.index(n) for n in context_features]
    width = len(context_features) + 1
    missing = [r for r in CONTEXT_GAP if not panel.valid[r, idx]]
    assert len(missing) == len(CONTEXT_GAP) - 1  # the first missing session is forward-filled
    # A's windows ending inside the context gap exist ...
    a_bases = set(_bases(panel, "A"))
    assert set(missing) <= a_bases
    # ... and their context columns are zeros with flag 0 where the index has no row, its scaled
    # features with flag 1 elsewhere.
    seen_absent = seen_present = 0
    for part in built.parts.values():
        x = gather(part)
        slab_start = None
        for k in range(len(part)):
            if part.series[k] != a:
                continue
            base_row = panel.dates.index(part.base_dates[k])
            slab_start = base_row - int(part.rows[k])
            for step in range(L):
                row = base_row - L + 1 + step
                ctx = x[k, step, -width:]
                if panel.valid[row, idx]:
                    assert ctx[-1] == 1.0
                    np.testing.assert_array_equal(ctx[:-1], part.slab[row - slab_start, idx, columns])
                    seen_present += 1
                else:
                    assert (ctx == 0).all()
                    seen_absent += 1
    assert seen_absent >= len(missing) and seen_present > 1000


def test_a_context_series_without_bars_is_masked_everywhere(world: dict[str, pd.DataFrame]) -> None:
    without = {k: v for k, v in world.items() if k != "^IDX"}
    panel = _panel(without)
    assert not panel.valid[:, panel.index_of("^IDX")].any()
    assert _pairs(panel) == _pairs(_panel(world))  # the same windows as with the context
    built = _build(panel, _spec(WATCHLIST))
    for part in built.parts.values():
        x = gather(part)
        width = len(built.spec.context_features) + 1
        assert x.shape[2] == len(built.spec.feature_names) + width
        assert (x[:, :, -width:] == 0).all()


# --- the split: by target date, shared by every ticker -------------------------------------------------


def test_split_parts_by_hand() -> None:
    target_days = np.array([5, 5, 6, 7, 7, 8, 9, 10, 11, 12, 12])  # 8 distinct dates: 5 + 1 + 2
    parts, (train_last, validation_last) = split_parts(target_days, 0.7, 0.15)
    assert (train_last, validation_last) == (9, 10)
    assert parts.tolist() == [0, 0, 0, 0, 0, 0, 0, 1, 2, 2, 2]


def test_split_is_by_target_date_shared_by_every_ticker(world_panel: Panel, world_built: BuildOutput) -> None:
    panel, built = world_panel, world_built
    parts = built.parts
    train, validation, test = parts["train"], parts["validation"], parts["test"]
    assert max(train.target_dates) < min(validation.target_dates)
    assert max(validation.target_dates) < min(test.target_dates)
    assert max(train.target_dates) <= min(validation.base_dates)
    assert max(validation.target_dates) <= min(test.base_dates)
    everyone = set(test.target_dates)
    first_test = panel.dates.index(min(everyone))
    for ticker in WATCHLIST:
        s = panel.index_of(ticker)
        mine = {d for d, t in zip(test.target_dates, test.tickers, strict=True) if t == ticker}
        if panel.real[first_test - 1 :, s].all():  # trades through the whole test period
            assert mine == everyone, ticker  # the same window of dates for everyone
        elif not panel.real[first_test - 1 :, s].any():
            assert mine == set(), ticker
    assert {t for t in test.tickers} == {"A", "B", "Y"}  # D was delisted before the test period
    # Distinct target dates are cut 70/15/15.
    n_dates = len(set(train.target_dates) | set(validation.target_dates) | everyone)
    assert (len(set(train.target_dates)), len(set(validation.target_dates))) == split_counts(
        n_dates, 0.7, 0.15
    )[:2]
    assert built.split["train_last_target_date"] == max(train.target_dates).isoformat()
    assert sum(len(p) for p in parts.values()) == len(window_pairs(panel, L)[0])
    for name, part in parts.items():
        assert sum(c[name] for c in built.windows_per_ticker.values()) == len(part)


# --- scalers: pooled, fit on training dates only ---------------------------------------------------------------


def test_scalers_are_pooled_and_fit_on_training_dates_only(
    world_panel: Panel, world_built: BuildOutput
) -> None:
    panel, built = world_panel, world_built
    spec = _spec(WATCHLIST)
    last = panel.dates.index(date.fromisoformat(built.scalers["fit"]["last_date"]))
    train = built.parts["train"]
    assert panel.dates[last] == max(train.base_dates)
    rows = panel.features[: last + 1][panel.valid[: last + 1]]  # every series, every valid row
    np.testing.assert_allclose(built.scalers["features"]["mean"], rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(built.scalers["features"]["scale"], rows.std(axis=0), rtol=1e-12)
    assert built.scalers["features"]["pooled"] is True
    returns = np.array(
        [
            panel.target_return[panel.dates.index(d), panel.index_of(t)]
            for d, t in zip(train.base_dates, train.tickers, strict=True)
        ]
    )
    assert built.scalers["target"]["mean"] == pytest.approx(returns.mean(), rel=1e-12)
    assert built.scalers["target"]["scale"] == pytest.approx(returns.std(), rel=1e-12)
    assert abs(float(train.y.mean())) < 1e-5 and float(train.y.std()) == pytest.approx(1.0, abs=1e-4)

    # Changing every feature after the last training base date changes no scaler.
    later = panel.features.copy()
    later[last + 1 :] = later[last + 1 :] * 3.0 + 1.0
    rebuilt = _build(dataclasses.replace(panel, features=later), spec)
    assert rebuilt.scalers == built.scalers
    np.testing.assert_array_equal(rebuilt.parts["train"].slab, built.parts["train"].slab)
    assert not np.array_equal(rebuilt.parts["test"].slab, built.parts["test"].slab)
    # Changing one value on the last training date does.
    earlier = panel.features.copy()
    earlier[last, panel.index_of("A"), 0] += 5.0
    assert (
        _build(dataclasses.replace(panel, features=earlier), spec).scalers["features"]
        != built.scalers["features"]
    )


def test_correlation_filter_is_decided_on_the_training_rows_only(world_panel: Panel) -> None:
    spec = _spec(WATCHLIST)
    built = _build(world_panel, spec, correlation_threshold=0.9)
    kept = built.scalers["feature_names"]
    assert "close" in kept and built.dropped_features
    assert list(built.spec.feature_names) == kept
    assert built.parts["train"].slab.shape[-1] == len(kept)
    last = world_panel.dates.index(date.fromisoformat(built.scalers["fit"]["last_date"]))
    noisy = world_panel.features.copy()
    noisy[last + 1 :] = np.random.default_rng(0).normal(size=noisy[last + 1 :].shape)
    changed = _build(dataclasses.replace(world_panel, features=noisy), spec, correlation_threshold=0.9)
    assert changed.scalers["feature_names"] == kept
    assert _build(world_panel, spec).dropped_features == ()


# --- stored windows ----------------------------------------------------------------------------------------


def test_windows_gather_the_scaled_rows_of_their_own_series(
    world_panel: Panel, world_built: BuildOutput
) -> None:
    panel, built = world_panel, world_built
    mean = np.asarray(built.scalers["features"]["mean"])
    scale = np.asarray(built.scalers["features"]["scale"])
    part = built.parts["validation"]
    x = gather(part)
    n_own = len(built.spec.feature_names)
    assert x.dtype == np.float32
    assert x.shape == (len(part), L, n_own + len(built.spec.context_features) + 1)
    for k in range(0, len(part), 17):
        row = panel.dates.index(part.base_dates[k])
        s = int(part.series[k])
        expected = (panel.features[row - L + 1 : row + 1, s] - mean) / scale
        np.testing.assert_allclose(x[k, :, :n_own], expected, rtol=1e-6, atol=1e-6)
        assert part.base_closes[k] == panel.closes[row, s]
        assert part.target_closes[k] == panel.target_price[row, s]
        np.testing.assert_array_equal(gather(part, np.array([k]))[0], x[k])


def test_zero_volume_and_constant_columns_stay_finite_downstream() -> None:
    days = weekdays(date(2015, 1, 5), 700)
    frames = {
        "STOCK": synthetic_frame(days, seed=7),
        "^INDEX": synthetic_frame(days, seed=8, zero_volume=True),
    }
    panel = _panel(frames, ("STOCK", "^INDEX"), ("^INDEX",), DEFAULT_INDICATORS, sessions=days)
    built = _build(panel, _spec(("STOCK", "^INDEX"), ("^INDEX",), DEFAULT_INDICATORS), 20)
    assert np.isfinite(panel.features[panel.valid]).all()
    for values in (built.scalers["features"]["mean"], built.scalers["features"]["scale"]):
        assert np.isfinite(np.asarray(values)).all()
    assert (np.asarray(built.scalers["features"]["scale"]) > 0).all()
    for part in built.parts.values():
        assert np.isfinite(part.slab).all() and np.isfinite(part.y).all() and np.isfinite(part.context).all()


def test_too_few_windows_is_no_data() -> None:
    days = weekdays(date(2020, 1, 6), WARMUP + 12)
    panel = _panel({"A": synthetic_frame(days, seed=1)}, ("A",), (), sessions=days)
    with pytest.raises(NoDataError, match="windows") as raised:
        _build(panel, _spec(("A",), ()), 10)
    assert raised.value.exit_code == 4


def test_split_counts_and_minimum() -> None:
    assert split_counts(100, 0.7, 0.15) == (70, 15, 15)
    assert split_counts(7, 0.7, 0.15) == (4, 1, 2)
    assert min_windows(0.7, 0.15) == 7
    assert min(split_counts(min_windows(0.8, 0.1), 0.8, 0.1)) == 1


def test_run_lengths_by_hand() -> None:
    valid = np.array([[1, 0], [1, 1], [0, 1], [1, 1], [1, 0]], dtype=bool)
    assert run_lengths(valid).tolist() == [[1, 0], [2, 1], [0, 2], [1, 3], [2, 0]]
    assert run_lengths(np.zeros((0, 2), dtype=bool)).shape == (0, 2)


# --- the forecasting input primitive -----------------------------------------------------------------


def _input_windows(inputs: Any) -> dict[tuple[date, str], np.ndarray]:
    x = gather(inputs.windows)
    return {
        (d, t): x[i] for i, (d, t) in enumerate(zip(inputs.as_of_dates, inputs.windows.tickers, strict=True))
    }


def test_build_inputs_equals_the_stored_windows_for_every_date_and_ticker(
    world: dict[str, pd.DataFrame], world_panel: Panel, world_built: BuildOutput
) -> None:
    built = world_built
    for name, part in built.parts.items():
        stored = dict(zip(zip(part.base_dates, part.tickers, strict=True), gather(part), strict=True))
        as_of = sorted(set(part.base_dates))[::4]
        inputs = build_inputs(
            spec=built.spec,
            scalers=built.scalers,
            bars=world,
            as_of_dates=as_of,
            tickers=WATCHLIST,
            sessions=DAYS,
        )
        rebuilt = _input_windows(inputs)
        wanted = {key for key in stored if key[0] in set(as_of)}
        assert len(wanted) > 10, name
        assert wanted <= set(rebuilt), name
        for key in wanted:
            np.testing.assert_allclose(rebuilt[key], stored[key], rtol=0, atol=1e-6, err_msg=f"{name} {key}")
        closes = dict(
            zip(
                zip(inputs.as_of_dates, inputs.windows.tickers, strict=True),
                inputs.windows.base_closes,
                strict=True,
            )
        )
        for k, key in enumerate(zip(part.base_dates, part.tickers, strict=True)):
            if key in wanted:
                assert closes[key] == part.base_closes[k]


def test_build_inputs_serves_an_unseen_ticker_by_the_same_computation(
    world: dict[str, pd.DataFrame], world_panel: Panel, world_built: BuildOutput
) -> None:
    built = world_built
    test = built.parts["test"]
    stored = dict(zip(zip(test.base_dates, test.tickers, strict=True), gather(test), strict=True))
    as_of = sorted(set(test.base_dates))[::5]
    other = synthetic_frame(DAYS, seed=9, price=55.0)
    bars = {**world, "TWIN": world["A"].copy(), "NEW": other}
    assert "TWIN" not in built.spec.tickers and "NEW" not in built.spec.tickers
    inputs = build_inputs(
        spec=built.spec,
        scalers=built.scalers,
        bars=bars,
        as_of_dates=as_of,
        tickers=("A", "TWIN", "NEW"),
        sessions=DAYS,
    )
    assert inputs.missing == []
    rebuilt = _input_windows(inputs)
    mean = np.asarray(built.scalers["features"]["mean"])
    scale = np.asarray(built.scalers["features"]["scale"])
    own = compute_model_features(*(other[c].to_numpy(dtype=float) for c in OHLCV), SMALL)
    n_own = len(built.spec.feature_names)
    for day in as_of:
        # A copy of A's bars under another name: exactly A's stored window.
        np.testing.assert_allclose(rebuilt[(day, "TWIN")], stored[(day, "A")], rtol=0, atol=1e-6)
        # A ticker of its own: its own scale-free features through the model's pooled scalers,
        # and the same context columns as every ticker on that date.
        row = DAYS.index(day)
        expected = ((own[row - L + 1 : row + 1] - mean) / scale).astype(np.float32)
        np.testing.assert_allclose(rebuilt[(day, "NEW")][:, :n_own], expected, rtol=0, atol=1e-5)
        np.testing.assert_array_equal(rebuilt[(day, "NEW")][:, n_own:], rebuilt[(day, "A")][:, n_own:])


def test_build_inputs_reports_each_ticker_it_cannot_forecast(
    world: dict[str, pd.DataFrame], world_built: BuildOutput
) -> None:
    built = world_built
    bars = {k: v for k, v in world.items()}
    bars["EMPTY"] = world["A"].iloc[:0]
    cases = [
        (DAYS[380], "NOBARS", "no_bars", 0),  # not stored at all
        (DAYS[380], "EMPTY", "no_bars", 0),
        (DAYS[380], "D", "no_bar_on_date", 0),  # delisted
        (DAYS[ONE_GAP], "B", "no_bar_on_date", 0),  # its forward-filled session
        (DAYS[LONG_GAP[-1] + 3], "B", "too_little_history", L - 3),  # 3 bars since the long gap
        (DAYS[YOUNG_FROM + WARMUP + 1], "Y", "too_little_history", L - 2),  # 2 rows after its warm-up
    ]
    for as_of, ticker, kind, sessions_missing in cases:
        inputs = build_inputs(
            spec=built.spec,
            scalers=built.scalers,
            bars=bars,
            as_of_dates=[as_of],
            tickers=["A", ticker],
            sessions=DAYS,
        )
        assert inputs.windows.tickers == ["A"], (ticker, kind)  # the others are still served
        [missing] = inputs.missing
        assert (missing.as_of, missing.ticker, missing.kind) == (as_of, ticker, kind)
        assert missing.sessions_missing == sessions_missing, (ticker, kind)
        assert missing.reason
    # One session later the young ticker has one more row; L - 2 sessions later it is served.
    ready = DAYS[YOUNG_FROM + WARMUP + L - 1]
    inputs = build_inputs(
        spec=built.spec, scalers=built.scalers, bars=bars, as_of_dates=[ready], tickers=["Y"], sessions=DAYS
    )
    assert inputs.missing == [] and inputs.windows.tickers == ["Y"]


def test_a_ticker_still_in_its_warmup_needs_the_warmup_and_a_window(
    world: dict[str, pd.DataFrame], world_built: BuildOutput
) -> None:
    """Y has a bar on the as-of date but only 11 bars: it is too young (not missing a bar), and it
    becomes predictable after WARMUP + L - 11 more sessions."""
    built = world_built
    as_of = DAYS[YOUNG_FROM + 10]
    inputs = build_inputs(
        spec=built.spec, scalers=built.scalers, bars=world, as_of_dates=[as_of], tickers=["Y"], sessions=DAYS
    )
    [missing] = inputs.missing
    assert missing.kind == "too_little_history", missing.reason
    assert missing.sessions_missing == WARMUP + L - 11


def test_build_inputs_uses_the_last_row_on_or_before_as_of_and_never_later_bars(
    world: dict[str, pd.DataFrame], world_built: BuildOutput
) -> None:
    built = world_built
    friday = DAYS[334]
    assert friday.weekday() == 4
    saturday, sunday = date.fromordinal(friday.toordinal() + 1), date.fromordinal(friday.toordinal() + 2)
    inputs = build_inputs(
        spec=built.spec,
        scalers=built.scalers,
        bars=world,
        as_of_dates=[friday, saturday, sunday],
        tickers=["A", "B"],
        sessions=DAYS,
    )
    x = gather(inputs.windows)
    assert inputs.windows.base_dates == [friday] * 6
    assert inputs.as_of_dates == [friday, friday, saturday, saturday, sunday, sunday]
    np.testing.assert_array_equal(x[0], x[2])
    np.testing.assert_array_equal(x[1], x[5])
    changed = {}
    for name, frame in world.items():
        frame = frame.copy()
        later = frame.index > pd.Timestamp(friday)
        frame.loc[later, ["open", "high", "low", "close"]] *= 3.0
        changed[name] = frame
    again = build_inputs(
        spec=built.spec,
        scalers=built.scalers,
        bars=changed,
        as_of_dates=[saturday],
        tickers=["A", "B"],
        sessions=DAYS,
    )
    np.testing.assert_array_equal(gather(again.windows), x[2:4])


def test_build_inputs_starts_history_at_the_spec_start_date() -> None:
    """A long EMA remembers where history starts: the primitive reads bars from the dataset's start
    date on, even when it is handed more, unless told otherwise (`use_spec_start=False`)."""
    days = weekdays(date(2018, 1, 1), 800)
    indicators = [*SMALL, {"name": "ema", "window": 200}]
    frames = {"A": synthetic_frame(days, seed=1), "B": synthetic_frame(days, seed=2)}
    start = days[150]
    panel = _panel(frames, ("A", "B"), (), indicators, sessions=days, start_date=start)
    spec = _spec(("A", "B"), (), indicators, start=start)
    built = _build(panel, spec)
    test = built.parts["test"]
    as_of = sorted(set(test.base_dates))[::10]
    stored = dict(zip(zip(test.base_dates, test.tickers, strict=True), gather(test), strict=True))
    inputs = build_inputs(
        spec=built.spec, scalers=built.scalers, bars=frames, as_of_dates=as_of, sessions=days
    )
    for key, window in _input_windows(inputs).items():
        np.testing.assert_allclose(window, stored[key], rtol=0, atol=1e-6)
    unanchored = build_inputs(
        spec=built.spec,
        scalers=built.scalers,
        bars=frames,
        as_of_dates=as_of,
        sessions=days,
        use_spec_start=False,
    )
    assert not np.allclose(gather(unanchored.windows), gather(inputs.windows), atol=1e-3)


def test_serving_from_a_bounded_lookback_equals_the_stored_test_windows() -> None:
    """`predict` loads `serving_sessions` (look-back + L + warm-up + margin) of bars and calls the primitive with
    `use_spec_start=False`: the default features must then equal those the model was trained on."""
    start, as_of = date(2004, 8, 19), date(2013, 3, 1)
    frames = {t: sample_frame(t, start, as_of) for t in ("GOOG", "MSFT", "^GSPC")}
    sessions = XNYS.sessions(start, as_of)
    panel = _panel(
        frames, ("GOOG", "MSFT"), ("^GSPC",), DEFAULT_INDICATORS, sessions=sessions, start_date=start
    )
    built = _build(panel, _spec(("GOOG", "MSFT"), ("^GSPC",), DEFAULT_INDICATORS, start=start), 30)
    test = built.parts["test"]
    stored = dict(zip(zip(test.base_dates, test.tickers, strict=True), gather(test), strict=True))
    needed = serving_sessions(built.spec.indicators, 30)
    worst = 0.0
    for base in sorted(set(test.base_dates))[::60]:
        first = XNYS.sessions_back(base, needed)
        window_bars = {t: f.loc[pd.Timestamp(first) : pd.Timestamp(base)] for t, f in frames.items()}
        inputs = build_inputs(
            spec=built.spec,
            scalers=built.scalers,
            bars=window_bars,
            as_of_dates=[base],
            sessions=XNYS.sessions(first, base),
            use_spec_start=False,
        )
        for key, window in _input_windows(inputs).items():
            worst = max(worst, float(np.abs(window - stored[key]).max()))
    assert worst < 1e-5, f"served inputs differ from the trained-on windows by {worst:.3g} (scaled units)"


# What the untyped spec (a dict) wrote for these inputs: the dataset row stores the keys in this
# order; a model version's bundle.json and the training run's dataset_spec.json sort them.
DATASET_SPEC_JSON = (
    '{"version": 2, "tickers": ["AAA", "BBB"], "context_tickers": ["^IDX"], "series": ["AAA", "BBB", "^ID'
    'X"], "indicators": [{"name": "rsi", "window": 14}, {"name": "realized_vol", "window": 10}], "feature'
    '_names": ["open", "high", "low", "close", "volume", "rsi_14", "realized_vol_10"], "feature_kinds": ['
    '"price", "price", "price", "return", "volume", "level", "level"], "ffill_limit": 2, "start_date": "2'
    '010-01-04", "warmup_sessions": 19, "serving_lookback": 600}'
)
BUILT_SPEC_JSON = (
    '{"version": 2, "tickers": ["AAA", "BBB"], "context_tickers": ["^IDX"], "series": ["AAA", "BBB", "^ID'
    'X"], "indicators": [{"name": "rsi", "window": 14}, {"name": "realized_vol", "window": 10}], "feature'
    '_names": ["close", "realized_vol_10"], "feature_kinds": ["price", "price", "price", "return", "volum'
    'e", "level", "level"], "ffill_limit": 2, "start_date": "2010-01-04", "warmup_sessions": 19, "serving'
    '_lookback": 600, "all_feature_names": ["open", "high", "low", "close", "volume", "rsi_14", "realized'
    '_vol_10"], "context_features": ["realized_vol_10"], "sequence_length": 5, "target_kind": "return", "'
    'dataset_run_id": "ds-20130301-0123456789ab", "end_date": "2013-03-01"}'
)


def test_the_typed_spec_writes_and_reads_the_json_the_untyped_one_did() -> None:
    """Stored specs keep their bytes, so old datasets and model versions load and checksums hold."""
    indicators = [{"name": "rsi", "window": 14}, {"name": "realized_vol", "window": 10}]
    spec = _spec(("AAA", "BBB"), ("^IDX",), indicators, start=date(2010, 1, 4), ffill_limit=2)
    assert json.dumps(spec.to_json()) == DATASET_SPEC_JSON
    assert DatasetSpec.from_json(json.loads(DATASET_SPEC_JSON)) == spec
    built = spec.built(
        ["close", "realized_vol_10"],
        ["realized_vol_10"],
        5,
        dataset_run_id="ds-20130301-0123456789ab",
        end_date=date(2013, 3, 1),
    )
    assert json.dumps(built.to_json()) == BUILT_SPEC_JSON
    assert BuiltSpec.from_json(json.loads(BUILT_SPEC_JSON)) == built
    assert built.all_feature_names == spec.feature_names and built.context_features == ("realized_vol_10",)
    # A spec registered before the dataset's end was recorded: the key stays absent, the field None.
    older = {k: v for k, v in json.loads(BUILT_SPEC_JSON).items() if k != "end_date"}
    assert BuiltSpec.from_json(older).end_date is None and BuiltSpec.from_json(older).to_json() == older
    with pytest.raises(TypeError):  # a required key missing is refused, not defaulted
        BuiltSpec.from_json({k: v for k, v in older.items() if k != "indicators"})
