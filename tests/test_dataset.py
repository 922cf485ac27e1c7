"""Datasets as arrays: alignment, next-session (t+1) targets, leakage, split, scalers, windows, and the
forecasting input primitive."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest

from stockcli.config import DEFAULT_INDICATORS
from stockcli.errors import NoDataError
from stockcli.features.dataset import (
    BuildOutput,
    DatasetArrays,
    build_inputs,
    build_sets,
    covered_rows,
    inverse_target,
    make_dataset,
    min_windows,
    split_counts,
    window_view,
)
from stockcli.features.indicators import canonical_indicators, feature_names, warmup_sessions
from tests.bars_data import sample_frames, synthetic_frame, weekdays

SMALL = [{"name": "ema", "window": 5}, {"name": "rsi", "window": 3}, {"name": "log_return"}]
L = 5


def _spec(
    tickers: tuple[str, ...], indicators: list[dict[str, Any]], start: date | None, ffill: int = 1
) -> dict[str, Any]:
    canonical = canonical_indicators(indicators)
    return {
        "version": 1,
        "tickers": list(tickers),
        "indicators": canonical,
        "feature_names": feature_names(canonical),
        "ffill_limit": ffill,
        "start_date": start.isoformat() if start else None,
        "warmup_sessions": warmup_sessions(canonical),
    }


def _dataset(
    frames: dict[str, pd.DataFrame], indicators: list[dict[str, Any]] = SMALL, **kwargs: Any
) -> DatasetArrays:
    return make_dataset(
        frames,
        tickers=tuple(frames),
        indicators=indicators,
        ffill_limit=kwargs.pop("ffill_limit", 1),
        **kwargs,
    )


def _build(dataset: DatasetArrays, indicators: list[dict[str, Any]] = SMALL, **kwargs: Any) -> BuildOutput:
    options: dict[str, Any] = {
        "sequence_length": L,
        "train_fraction": 0.7,
        "validation_fraction": 0.15,
        "target_kind": "return",
        "correlation_threshold": 0.0,
    }
    options.update(kwargs)
    return build_sets(dataset, spec=_spec(dataset.tickers, indicators, None), **options)


@pytest.fixture(scope="module")
def sample_2011() -> dict[str, pd.DataFrame]:
    """Real bars, 2010-2012 (a weekend every week, holidays, Sandy's two-day closure)."""
    return sample_frames(start=date(2010, 1, 1), end=date(2012, 12, 31))


# --- next-session targets -----------------------------------------------------------------------------


def test_target_is_the_close_of_the_next_session_t_plus_1(sample_2011: dict[str, pd.DataFrame]) -> None:
    dataset = _dataset(sample_2011)
    dates = dataset.dates
    frames = sample_2011
    pins = {
        date(2012, 10, 26): date(2012, 10, 31),  # Friday before Hurricane Sandy closed NYSE Mon+Tue
        date(2012, 2, 17): date(2012, 2, 21),  # Friday before Presidents' Day
        date(2012, 11, 21): date(2012, 11, 23),  # Thanksgiving
        date(2012, 6, 8): date(2012, 6, 11),  # an ordinary weekend
        date(2012, 6, 12): date(2012, 6, 13),  # an ordinary weekday
    }
    for base, target in pins.items():
        row = dates.index(base)
        assert dates[row + 1] == target
        for s, ticker in enumerate(dataset.tickers):
            base_close = frames[ticker].loc[pd.Timestamp(base), "close"]
            next_close = frames[ticker].loc[pd.Timestamp(target), "close"]
            assert dataset.closes[row, s] == base_close
            assert dataset.target_price[row, s] == next_close  # exactly t+1 ...
            assert dataset.target_return[row, s] == np.log(next_close / base_close)
            after_next = frames[ticker].loc[pd.Timestamp(dates[row + 2]), "close"]
            assert dataset.target_price[row, s] != after_next  # ... and not t+2 (the replaced system's slip)
    # Every row: target = next row's close; the last row has none.
    np.testing.assert_array_equal(dataset.target_price[:-1], dataset.closes[1:])
    assert np.isnan(dataset.target_price[-1]).all()

    built = _build(dataset)
    for part in built.parts.values():
        for base, target, base_close, target_close in zip(
            part.base_dates, part.target_dates, part.base_closes, part.target_closes, strict=True
        ):
            row = dates.index(base)
            assert target == dates[row + 1]
            np.testing.assert_array_equal(target_close, dataset.closes[row + 1])
            np.testing.assert_array_equal(base_close, dataset.closes[row])
    test = built.parts["test"]
    sandy = test.base_dates.index(date(2012, 10, 26))
    assert test.target_dates[sandy] == date(2012, 10, 31)


def test_forward_fill_is_limited_and_filled_bars_are_never_targets() -> None:
    days = weekdays(date(2020, 1, 6), 80)
    a = synthetic_frame(days, seed=1)
    b = synthetic_frame(days, seed=2)
    one_gap = days[40]
    two_gap = [days[60], days[61]]
    b = b.drop(index=pd.to_datetime([one_gap, *two_gap]))
    dataset = _dataset({"A": a, "B": b}, ffill_limit=1)
    dates = dataset.dates
    # A one-session gap is forward-filled from B's previous bar ...
    row = dates.index(one_gap)
    np.testing.assert_array_equal(dataset.features[row, 1], dataset.features[row - 1, 1])
    # ... but the filled close is not an honest target for the session before it ...
    assert np.isnan(dataset.target_price[row - 1]).all()
    # ... while a filled base session still has the real next close as its target.
    assert dataset.target_price[row, 1] == b.loc[pd.Timestamp(days[41]), "close"]
    # A two-session gap: the first session is filled, the second dropped for every ticker.
    assert days[60] in dates and days[61] not in dates
    row = dates.index(days[60])
    assert dates[row + 1] == days[62]
    assert np.isnan(dataset.target_price[row]).all()  # days[62] is not the next session after days[60]
    assert np.isnan(dataset.target_price[row - 1]).all()  # days[60] was filled
    # With ffill_limit 0 every gap drops its session.
    strict = _dataset({"A": a, "B": b}, ffill_limit=0)
    assert one_gap not in strict.dates and days[60] not in strict.dates
    # Windows never use a base without an honest target.
    built = _build(dataset)
    bases = [d for part in built.parts.values() for d in part.base_dates]
    assert days[39] not in bases and days[59] not in bases and days[60] not in bases


def test_alignment_starts_when_every_ticker_is_past_warm_up() -> None:
    days = weekdays(date(2020, 1, 6), 120)
    early = synthetic_frame(days, seed=1)
    late = synthetic_frame(days[30:], seed=2)
    dataset = _dataset({"EARLY": early, "LATE": late})
    warmup = warmup_sessions(SMALL)
    assert dataset.dates[0] == days[30 + warmup]
    assert dataset.dates[-1] == days[-1]
    assert dataset.features.shape == (120 - 30 - warmup, 2, len(feature_names(SMALL)))


# --- leakage --------------------------------------------------------------------------------------------


def test_changing_every_bar_after_t_leaves_everything_up_to_t_unchanged(
    sample_2011: dict[str, pd.DataFrame],
) -> None:
    indicators = list(DEFAULT_INDICATORS)
    original = _dataset(sample_2011, indicators)
    built = _build(original, indicators, sequence_length=10)
    t = built.parts["test"].base_dates[40]  # inside the test part, after every train/validation target
    changed_frames = {}
    for ticker, frame in sample_2011.items():
        frame = frame.copy()
        later = frame.index > pd.Timestamp(t)
        frame.loc[later, ["open", "high", "low", "close"]] *= 0.5 + np.linspace(0, 1, later.sum())[:, None]
        frame.loc[later, "volume"] = frame.loc[later, "volume"] // 3 + 11
        changed_frames[ticker] = frame
    changed = _dataset(changed_frames, indicators)
    assert changed.dates == original.dates
    upto = original.dates.index(t) + 1
    np.testing.assert_array_equal(changed.features[:upto], original.features[:upto])
    np.testing.assert_array_equal(changed.closes[:upto], original.closes[:upto])
    # Targets dated up to t (bases before t) are unchanged; the target of t itself is dated t+1.
    np.testing.assert_array_equal(changed.target_price[: upto - 1], original.target_price[: upto - 1])
    assert not np.array_equal(changed.target_price[upto - 1], original.target_price[upto - 1])
    assert not np.array_equal(changed.features[upto:], original.features[upto:])

    rebuilt = _build(changed, indicators, sequence_length=10)
    assert rebuilt.scalers == built.scalers  # fit on the training part only
    assert rebuilt.split == built.split
    for name in ("train", "validation"):
        before, after = built.parts[name], rebuilt.parts[name]
        np.testing.assert_array_equal(
            window_view(after.slab, after.window_ends, 10), window_view(before.slab, before.window_ends, 10)
        )
        np.testing.assert_array_equal(after.y, before.y)
    before, after = built.parts["test"], rebuilt.parts["test"]
    k = before.base_dates.index(t)
    x_before = window_view(before.slab, before.window_ends, 10)
    x_after = window_view(after.slab, after.window_ends, 10)
    np.testing.assert_array_equal(x_after[: k + 1], x_before[: k + 1])  # windows ending up to t
    np.testing.assert_array_equal(after.y[:k], before.y[:k])  # targets dated up to t
    assert not np.array_equal(x_after[k + 1 :], x_before[k + 1 :])


def test_a_dataset_as_of_t_is_the_prefix_of_a_later_one(sample_2011: dict[str, pd.DataFrame]) -> None:
    indicators = list(DEFAULT_INDICATORS)
    full = _dataset(sample_2011, indicators)
    t = date(2012, 6, 15)
    early = _dataset(sample_2011, indicators, end_date=t)
    n = len(early.dates)
    assert early.dates == full.dates[:n] and early.dates[-1] == t
    np.testing.assert_array_equal(early.features, full.features[:n])
    np.testing.assert_array_equal(early.target_price[:-1], full.target_price[: n - 1])
    assert np.isnan(early.target_price[-1]).all()  # the next session is not known as of t


# --- split, scalers, windows ------------------------------------------------------------------------------


def test_split_is_chronological_by_target_date(sample_2011: dict[str, pd.DataFrame]) -> None:
    dataset = _dataset(sample_2011)
    built = _build(dataset)
    train, validation, test = (built.parts[n] for n in ("train", "validation", "test"))
    assert max(train.target_dates) < min(validation.target_dates)
    assert max(validation.target_dates) < min(test.target_dates)
    # No training window's target comes from the validation part, and so on.
    assert max(train.target_dates) <= min(validation.base_dates)
    assert max(validation.target_dates) <= min(test.base_dates)
    n = len(train.base_dates) + len(validation.base_dates) + len(test.base_dates)
    assert n == len(dataset.dates) - L  # every row with a full window and a target
    assert (len(train.base_dates), len(validation.base_dates)) == split_counts(n, 0.7, 0.15)[:2]
    assert built.split["train"]["last_target_date"] == max(train.target_dates).isoformat()


def test_scalers_equal_statistics_of_the_training_windows_alone(sample_2011: dict[str, pd.DataFrame]) -> None:
    dataset = _dataset(sample_2011)
    built = _build(dataset)
    train = built.parts["train"]
    rows = [dataset.dates.index(d) for d in train.base_dates]
    first, last = rows[0] - L + 1, rows[-1]
    covered = dataset.features[first : last + 1]  # every session some training window covers, once
    np.testing.assert_allclose(built.scalers["features"]["mean"], covered.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(built.scalers["features"]["scale"], covered.std(axis=0), rtol=1e-12)
    # Not the statistics of the whole dataset (which would leak validation/test data into training).
    assert not np.allclose(built.scalers["features"]["mean"], dataset.features.mean(axis=0), rtol=1e-3)
    # The stored training windows, de-duplicated to sessions, are standardised: mean 0, std 1.
    x = window_view(train.slab, train.window_ends, L)
    sessions = np.concatenate([x[0], x[1:, -1]])
    assert len(sessions) == last - first + 1
    np.testing.assert_allclose(sessions.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(sessions.std(axis=0), 1, atol=1e-4)
    # The target scaler: mean and std of the training targets only.
    returns = dataset.target_return[rows]
    np.testing.assert_allclose(built.scalers["target"]["mean"], returns.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(built.scalers["target"]["scale"], returns.std(axis=0), rtol=1e-12)
    np.testing.assert_allclose(train.y.mean(axis=0), 0, atol=1e-5)


def test_covered_rows_handles_gaps_between_windows() -> None:
    mask = covered_rows(np.array([4, 5, 12]), 3, 15)
    assert np.flatnonzero(mask).tolist() == [2, 3, 4, 5, 10, 11, 12]


def test_windows_are_views_of_the_slab(sample_2011: dict[str, pd.DataFrame]) -> None:
    dataset = _dataset(sample_2011)
    built = _build(dataset)
    part = built.parts["validation"]
    x = window_view(part.slab, part.window_ends, L)
    assert x.shape == (len(part.base_dates), L, 4, len(dataset.feature_names))
    assert x.dtype == np.float32
    assert np.shares_memory(x, part.slab)  # no copy of 30x overlapping windows
    assert not x.flags.writeable
    mean = np.asarray(built.scalers["features"]["mean"])
    scale = np.asarray(built.scalers["features"]["scale"])
    for k in (0, len(part.base_dates) // 2, len(part.base_dates) - 1):
        row = dataset.dates.index(part.base_dates[k])
        expected = ((dataset.features[row - L + 1 : row + 1] - mean) / scale).astype(np.float32)
        np.testing.assert_array_equal(x[k], expected)
        assert x[k, -1, 0, 3] == expected[-1, 0, 3]  # the last session of the window is the base


def test_price_target_is_minmax_of_training_closes_and_inverts(sample_2011: dict[str, pd.DataFrame]) -> None:
    dataset = _dataset(sample_2011)
    built = _build(dataset, target_kind="price")
    train = built.parts["train"]
    target = built.scalers["target"]
    assert target["kind"] == "price"
    np.testing.assert_array_equal(target["min"], train.target_closes.min(axis=0))
    np.testing.assert_allclose(target["max"], train.target_closes.max(axis=0), rtol=1e-15)
    assert train.y.min() == pytest.approx(0.0, abs=1e-6) and train.y.max() == pytest.approx(1.0, abs=1e-6)
    for part in built.parts.values():
        closes = inverse_target(part.y, part.base_closes, built.scalers)
        np.testing.assert_allclose(closes, part.target_closes, rtol=1e-5)
    returns = _build(dataset, target_kind="return")
    for part in returns.parts.values():
        closes = inverse_target(part.y, part.base_closes, returns.scalers)
        np.testing.assert_allclose(closes, part.target_closes, rtol=1e-5)


def test_correlation_filter_is_decided_on_the_training_part_only(
    sample_2011: dict[str, pd.DataFrame],
) -> None:
    dataset = _dataset(sample_2011)
    built = _build(dataset, correlation_threshold=0.95)
    kept = built.scalers["feature_names"]
    assert "close" in kept
    assert {"open", "high", "low", "ema_5"} & set(built.dropped_features)  # near-copies of the close
    assert built.spec["feature_names"] == kept
    assert built.parts["train"].slab.shape[-1] == len(kept)
    # Changing everything after the training part does not change the decision.
    train_end = dataset.dates.index(built.parts["train"].base_dates[-1])
    noisy = dataset.features.copy()
    noisy[train_end + 1 :] = np.random.default_rng(0).normal(size=noisy[train_end + 1 :].shape)
    changed = DatasetArrays(
        tickers=dataset.tickers,
        feature_names=dataset.feature_names,
        dates=dataset.dates,
        features=noisy,
        closes=dataset.closes,
        target_price=dataset.target_price,
        target_return=dataset.target_return,
    )
    assert _build(changed, correlation_threshold=0.95).scalers["feature_names"] == kept
    assert _build(dataset, correlation_threshold=0.0).dropped_features == ()


def test_zero_volume_and_constant_columns_stay_finite_downstream() -> None:
    days = weekdays(date(2015, 1, 5), 700)
    frames = {
        "STOCK": synthetic_frame(days, seed=7),
        "^INDEX": synthetic_frame(days, seed=8, zero_volume=True),
    }
    indicators = list(DEFAULT_INDICATORS)
    dataset = _dataset(frames, indicators)
    built = _build(dataset, indicators, sequence_length=20)
    assert np.isfinite(dataset.features).all()
    volume = dataset.feature_names.index("volume")
    assert (built.scalers["features"]["scale"][1][volume]) == 1.0  # constant column: scale 1, not 0
    for name in ("features", "target"):
        for values in built.scalers[name].values():
            if isinstance(values, list):
                assert np.isfinite(np.asarray(values, dtype=float)).all()
    for part in built.parts.values():
        assert np.isfinite(part.slab).all() and np.isfinite(part.y).all()
        assert (part.slab[:, 1, volume] == 0).all()


def test_too_few_windows_is_no_data() -> None:
    days = weekdays(date(2020, 1, 6), 20)
    dataset = _dataset({"A": synthetic_frame(days, seed=1)})
    with pytest.raises(NoDataError, match="windows"):
        _build(dataset, sequence_length=10)


def test_split_counts_and_minimum() -> None:
    assert split_counts(100, 0.7, 0.15) == (70, 15, 15)
    assert split_counts(7, 0.7, 0.15) == (4, 1, 2)
    assert min_windows(0.7, 0.15) == 7
    assert min(split_counts(min_windows(0.8, 0.1), 0.8, 0.1)) == 1


# --- the forecasting input primitive -----------------------------------------------------------------


def test_build_inputs_equals_every_stored_window(sample_2011: dict[str, pd.DataFrame]) -> None:
    start = date(2010, 1, 1)
    indicators = list(DEFAULT_INDICATORS)
    dataset = _dataset(sample_2011, indicators, start_date=start)
    built = build_sets(
        dataset,
        spec=_spec(dataset.tickers, indicators, start),
        sequence_length=L,
        train_fraction=0.7,
        validation_fraction=0.15,
        target_kind="return",
    )
    for part in built.parts.values():
        inputs = build_inputs(
            spec=built.spec, scalers=built.scalers, bars=sample_2011, as_of_dates=part.base_dates
        )
        np.testing.assert_array_equal(inputs.x, window_view(part.slab, part.window_ends, L))
        assert inputs.base_dates == part.base_dates
        np.testing.assert_array_equal(inputs.base_closes, part.base_closes)
        assert inputs.x.dtype == np.float32 and inputs.tickers == dataset.tickers


def test_build_inputs_uses_the_last_session_on_or_before_as_of(sample_2011: dict[str, pd.DataFrame]) -> None:
    start = date(2010, 1, 1)
    dataset = _dataset(sample_2011, start_date=start)
    built = build_sets(
        dataset,
        spec=_spec(dataset.tickers, SMALL, start),
        sequence_length=L,
        train_fraction=0.7,
        validation_fraction=0.15,
        target_kind="return",
    )
    saturday = date(2012, 10, 27)
    closed = date(2012, 10, 30)  # NYSE closed (Sandy)
    inputs = build_inputs(
        spec=built.spec,
        scalers=built.scalers,
        bars=sample_2011,
        as_of_dates=[saturday, closed, date(2012, 10, 26)],
    )
    assert inputs.base_dates == [date(2012, 10, 26)] * 3
    np.testing.assert_array_equal(inputs.x[0], inputs.x[2])
    np.testing.assert_array_equal(inputs.x[1], inputs.x[2])
    # Bars after the as-of date are invisible: changing them changes nothing.
    changed = {t: f.copy() for t, f in sample_2011.items()}
    for frame in changed.values():
        frame.loc[frame.index > pd.Timestamp(saturday), "close"] *= 3
    again = build_inputs(spec=built.spec, scalers=built.scalers, bars=changed, as_of_dates=[saturday])
    np.testing.assert_array_equal(again.x[0], inputs.x[0])


def test_build_inputs_refuses_missing_tickers_and_short_history(sample_2011: dict[str, pd.DataFrame]) -> None:
    start = date(2010, 1, 1)
    dataset = _dataset(sample_2011, start_date=start)
    built = build_sets(
        dataset,
        spec=_spec(dataset.tickers, SMALL, start),
        sequence_length=L,
        train_fraction=0.7,
        validation_fraction=0.15,
        target_kind="return",
    )
    partial = dict(sample_2011)
    partial.pop("MSFT")
    with pytest.raises(NoDataError, match="MSFT") as missing:
        build_inputs(spec=built.spec, scalers=built.scalers, bars=partial, as_of_dates=[date(2012, 6, 1)])
    assert missing.value.exit_code == 4 and "fetch" in (missing.value.hint or "")
    too_early = dataset.dates[0] + timedelta(days=2)
    with pytest.raises(NoDataError, match="Too little history"):
        build_inputs(spec=built.spec, scalers=built.scalers, bars=sample_2011, as_of_dates=[too_early])


def test_build_inputs_starts_history_at_the_spec_start_date(sample_2011: dict[str, pd.DataFrame]) -> None:
    """Recursive indicators (EMA 200, OBV) depend on where history starts: the primitive reads bars
    from the dataset's start date on, even when it is handed more."""
    start = date(2010, 1, 1)
    indicators = list(DEFAULT_INDICATORS)
    dataset = _dataset(sample_2011, indicators, start_date=start)
    built = build_sets(
        dataset,
        spec=_spec(dataset.tickers, indicators, start),
        sequence_length=L,
        train_fraction=0.7,
        validation_fraction=0.15,
        target_kind="return",
    )
    longer = sample_frames(start=date(2007, 1, 1), end=date(2012, 12, 31))
    test = built.parts["test"]
    inputs = build_inputs(spec=built.spec, scalers=built.scalers, bars=longer, as_of_dates=test.base_dates)
    np.testing.assert_array_equal(inputs.x, window_view(test.slab, test.window_ends, L))
    # Without the start date the same bars give different (longer-history) inputs.
    unanchored = dict(built.spec, start_date=None)
    other = build_inputs(spec=unanchored, scalers=built.scalers, bars=longer, as_of_dates=test.base_dates)
    assert not np.allclose(other.x, inputs.x, atol=1e-3)
