"""One definition of every accuracy number: per-row direction scores, point blocks next to naive on
the same days, panel skill with its interval, interval metrics on log returns (scale-free), the
summary of stored scored rows, and the flat names a metrics logger gets."""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest

from stockcli.errors import InputDataError, UsageError
from stockcli.ml.intervals import QUANTILES
from stockcli.ml.metrics import (
    QUANTILE_COLUMNS,
    direction_scores,
    evaluate,
    flatten,
    loss_series,
    metric_value,
    panel_of,
    point_block,
    summarize_scored,
)
from stockcli.ml.stats import skill_interval

D0 = date(2024, 1, 2)
DATES = [D0 + timedelta(days=k) for k in range(4)]
# Two tickers on four dates (hand-checked below).
#               up     down   up     up     (A)        flat   up     flat   down   (B)
BASE = {"A": [100.0, 102.0, 101.0, 103.0], "B": [10.0, 10.0, 11.0, 11.0]}
ACTUAL = {"A": [102.0, 101.0, 103.0, 104.0], "B": [10.0, 11.0, 11.0, 10.0]}
PREDICTED = {"A": [101.0, 103.0, 102.0, 103.5], "B": [10.5, 10.5, 11.0, 10.5]}


def _long(values: dict[str, list[float]], tickers: tuple[str, ...] = ("A", "B")) -> np.ndarray:
    return np.array([values[t][k] for t in tickers for k in range(4)], dtype=np.float64)


def _rows(**overrides: Any) -> dict[str, Any]:
    """Long-format inputs of `evaluate`: A's four days, then B's."""
    rows: dict[str, Any] = {
        "tickers": ["A"] * 4 + ["B"] * 4,
        "dates": DATES * 2,
        "predicted_close": _long(PREDICTED),
        "actual_close": _long(ACTUAL),
        "base_close": _long(BASE),
    }
    rows.update(overrides)
    return rows


def _quantiles(base: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(n, 5) close quantiles: base x exp(z_level x spread), normal z values at `QUANTILES`."""
    from scipy import stats

    z = stats.norm.ppf(np.asarray(QUANTILES))
    return base[:, None] * np.exp(np.asarray(spread)[:, None] * z[None, :])


# --- per row ---------------------------------------------------------------------------------------


def test_direction_scores_hit_miss_flat_forecast_and_flat_day() -> None:
    base = np.array([10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    predicted = np.array([11.0, 11.0, 10.0, 9.0, 11.0, np.nan, 10.0])
    actual = np.array([12.0, 9.0, 12.0, 9.5, 10.0, 12.0, 10.0])
    scores = direction_scores(predicted=predicted, actual=actual, base=base)
    np.testing.assert_array_equal(scores[:4], [1.0, 0.0, 0.5, 1.0])
    assert np.isnan(scores[4])  # the close did not move: no direction to judge
    assert np.isnan(scores[5])  # no forecast
    assert np.isnan(scores[6])  # flat forecast on a flat day: still no direction


def test_a_flat_forecast_scores_exactly_one_half_and_zero_skill() -> None:
    naive = evaluate(**_rows(predicted_close=_long(BASE)))
    for ticker in ("A", "B"):
        block = naive.tickers[ticker]
        assert block.model.direction_accuracy == 0.5
        assert block.naive.direction_accuracy == 0.5
        assert block.model == block.naive
        assert block.skill == 0.0
    assert naive.average.skill == 0.0
    assert naive.average.model.direction_accuracy == 0.5


def test_hand_checked_figures() -> None:
    result = evaluate(**_rows())
    a = result.tickers["A"]
    # errors 1, 2, 1, 0.5
    assert a.model.mae == pytest.approx(4.5 / 4)
    assert a.model.rmse == pytest.approx(math.sqrt((1 + 4 + 1 + 0.25) / 4))
    assert a.model.mape == pytest.approx(np.mean([1 / 102, 2 / 101, 1 / 103, 0.5 / 104]))
    # predicted moves: up, up, up, up; actual: up, down, up, up -> 3 of 4
    assert a.model.direction_accuracy == pytest.approx(0.75)
    # naive: errors 2, 1, 2, 1
    assert a.naive.mae == pytest.approx(1.5)
    assert a.naive.rmse == pytest.approx(math.sqrt((4 + 1 + 4 + 1) / 4))
    assert a.skill == pytest.approx(1 - (4.5 / 4) / 1.5)
    assert a.skill_low <= a.skill <= a.skill_high
    assert a.up_fraction == pytest.approx(0.75)
    assert a.n_days == 4 and result.n_days == 4

    b = result.tickers["B"]
    # Only days 2 (up) and 4 (down) moved: both called right (up, down); flat days do not count.
    assert b.model.direction_accuracy == pytest.approx(1.0)
    assert b.model.mae == pytest.approx((0.5 + 0.5 + 0 + 0.5) / 4)
    assert b.naive.mae == pytest.approx((0 + 1 + 0 + 1) / 4)
    assert b.skill == pytest.approx(1 - 0.375 / 0.5)
    assert b.up_fraction == pytest.approx(0.5)

    avg = result.average
    assert avg.model.mae == pytest.approx((4.5 / 4 + 0.375) / 2)
    assert avg.naive.mape == pytest.approx((a.naive.mape + b.naive.mape) / 2)
    assert avg.model.direction_accuracy == pytest.approx((0.75 + 1.0) / 2)


def test_the_average_skill_is_the_panel_skill_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(3)
    days = [D0 + timedelta(days=k) for k in range(60)]
    tickers = ["CHEAP", "INDEX", "MID"]
    prices = {"CHEAP": 20.0, "INDEX": 3000.0, "MID": 150.0}
    rows_t, rows_d, base, actual, predicted = [], [], [], [], []
    for ticker in tickers:
        level = prices[ticker]
        b = level * np.exp(np.cumsum(rng.normal(0, 0.01, len(days))))
        a = b * np.exp(rng.normal(0, 0.01, len(days)))
        p = b * np.exp(0.6 * np.log(a / b) + rng.normal(0, 0.006, len(days)))  # some skill
        rows_t += [ticker] * len(days)
        rows_d += days
        base.append(b)
        actual.append(a)
        predicted.append(p)
    b_all, a_all, p_all = (np.concatenate(x) for x in (base, actual, predicted))
    keep = np.ones(len(rows_t), dtype=bool)
    keep[5] = keep[70] = False  # a ragged panel: two (date, ticker) rows missing
    kept_dates = [d for d, k in zip(rows_d, keep, strict=True) if k]
    kept_tickers = [t for t, k in zip(rows_t, keep, strict=True) if k]
    result = evaluate(
        tickers=kept_tickers,
        dates=kept_dates,
        predicted_close=p_all[keep],
        actual_close=a_all[keep],
        base_close=b_all[keep],
    )
    model_panel, names = panel_of(np.abs(p_all - a_all)[keep], kept_dates, kept_tickers)
    naive_panel, _ = panel_of(np.abs(b_all - a_all)[keep], kept_dates, kept_tickers)
    assert names == sorted(tickers) and model_panel.shape == (60, 3) and np.isnan(model_panel).sum() == 2
    expected = skill_interval(model_panel, naive_panel)
    average = result.average
    assert (average.skill, average.skill_low, average.skill_high) == pytest.approx(expected)
    assert average.skill_low < average.skill < average.skill_high
    assert average.skill > 0.1
    # Each ticker weighs the same: the panel skill is close to the mean of the tickers' skills,
    # not to the skill of the pooled MAEs (which the 3,000-point index would dominate).
    per_ticker = np.mean([result.tickers[t].skill for t in tickers])
    assert average.skill == pytest.approx(per_ticker, abs=0.02)
    for ticker in tickers:
        block = result.tickers[ticker]
        assert block.skill == pytest.approx(1 - block.model.mae / block.naive.mae)
        assert block.skill_low < block.skill < block.skill_high


def test_zero_changes_everywhere_are_handled() -> None:
    flat = np.full(3, 50.0)
    days = DATES[:3]
    result = evaluate(
        tickers=["Z"] * 3, dates=days, predicted_close=flat + 1.0, actual_close=flat, base_close=flat
    )
    z = result.tickers["Z"]
    assert z.model.direction_accuracy is None  # nothing moved: no direction to judge
    assert z.naive.mae == 0.0 and z.skill is None  # a model cannot beat a perfect naive
    assert z.up_fraction is None
    json.dumps(result.to_json(), allow_nan=False)
    tie = evaluate(tickers=["Z"] * 3, dates=days, predicted_close=flat, actual_close=flat, base_close=flat)
    assert tie.tickers["Z"].skill == 0.0


def test_missing_values_skip_that_day_for_that_ticker_only() -> None:
    predicted = _long(PREDICTED)
    predicted[1] = np.nan  # A, day 2
    result = evaluate(**_rows(predicted_close=predicted))
    assert result.tickers["A"].n_days == 3 and result.tickers["B"].n_days == 4
    assert result.tickers["A"].model.mae == pytest.approx((1 + 1 + 0.5) / 3)
    # DESIGN, core idea 6: naive is scored on the same days as the model, so skill = 1 - MAE / naive MAE.
    a = result.tickers["A"]
    assert a.naive.mae == pytest.approx((2 + 2 + 1) / 3)
    assert a.naive.direction_accuracy == 0.5
    assert a.skill == pytest.approx(1 - a.model.mae / a.naive.mae)


def test_point_block_and_loss_series_are_one_definition() -> None:
    rng = np.random.default_rng(5)
    base = 100 * np.exp(rng.normal(0, 0.02, 50))
    actual = base * np.exp(rng.normal(0, 0.02, 50))
    predicted = base * np.exp(rng.normal(0, 0.01, 50))
    quantiles = _quantiles(base, np.full(50, 0.02))
    block = point_block(predicted, actual, base)
    series = {
        m: loss_series(m, predicted=predicted, actual=actual, base=base) for m in ("mae", "rmse", "mape")
    }
    assert block.mae == pytest.approx(series["mae"].mean())
    assert block.rmse == pytest.approx(math.sqrt(series["rmse"].mean()))
    assert block.mape == pytest.approx(series["mape"].mean())
    result = evaluate(
        tickers=["A"] * 50,
        dates=[D0 + timedelta(days=k) for k in range(50)],
        predicted_close=predicted,
        actual_close=actual,
        base_close=base,
        quantiles=quantiles,
    )
    intervals = result.tickers["A"].intervals
    for metric in ("winkler_95", "pinball"):
        losses = loss_series(metric, predicted=predicted, actual=actual, base=base, quantiles=quantiles)
        assert getattr(intervals, metric) == pytest.approx(losses.mean())
        assert metric_value(result.tickers["A"], metric) == pytest.approx(losses.mean())
    assert metric_value(result.tickers["A"], "mae") == pytest.approx(block.mae)
    assert np.isnan(loss_series("pinball", predicted=predicted, actual=actual, base=base)).all()
    with pytest.raises(UsageError, match="Unknown metric"):
        loss_series("accuracy", predicted=predicted, actual=actual, base=base)


# --- intervals: on log returns ------------------------------------------------------------------


def _interval_case(multiplier_a: float = 1.0) -> dict[str, Any]:
    rng = np.random.default_rng(8)
    n = 40
    days = [D0 + timedelta(days=k) for k in range(n)]
    base = np.concatenate([120 * np.exp(rng.normal(0, 0.01, n)), 9 * np.exp(rng.normal(0, 0.01, n))])
    actual = base * np.exp(rng.normal(0, 0.015, 2 * n))
    predicted = base * np.exp(rng.normal(0, 0.004, 2 * n))
    quantiles = _quantiles(base, np.full(2 * n, 0.012))
    garch = _quantiles(base, np.full(2 * n, 0.02))
    rolling = _quantiles(base, np.full(2 * n, 0.008))
    factor = np.where(np.arange(2 * n) < n, multiplier_a, 1.0)
    return {
        "tickers": ["A"] * n + ["B"] * n,
        "dates": days * 2,
        "predicted_close": predicted * factor,
        "actual_close": actual * factor,
        "base_close": base * factor,
        "quantiles": quantiles * factor[:, None],
        "baselines": {"garch": garch * factor[:, None], "rolling": rolling * factor[:, None]},
    }


def test_interval_metrics_do_not_depend_on_the_price_level() -> None:
    plain = evaluate(**_interval_case())
    hundredfold = evaluate(**_interval_case(100.0))
    for block in ("A", "B"):
        one, other = plain.tickers[block], hundredfold.tickers[block]
        for name in (
            "coverage_80",
            "coverage_95",
            "width_80",
            "width_95",
            "winkler_80",
            "winkler_95",
            "pinball",
        ):
            assert getattr(other.intervals, name) == pytest.approx(getattr(one.intervals, name), rel=1e-9), (
                name
            )
            for baseline in ("garch", "rolling"):
                assert getattr(other.baselines[baseline], name) == pytest.approx(
                    getattr(one.baselines[baseline], name), rel=1e-9
                )
        assert other.skill == pytest.approx(one.skill, rel=1e-9)
        assert other.model.mape == pytest.approx(one.model.mape, rel=1e-9)
    for name in ("coverage_95", "winkler_95", "pinball"):
        assert getattr(hundredfold.average.intervals, name) == pytest.approx(
            getattr(plain.average.intervals, name)
        )
    assert hundredfold.average.skill == pytest.approx(plain.average.skill, rel=1e-9)
    # The MAE is in price units (100x), which is why the average is the mean of per-ticker figures.
    assert hundredfold.tickers["A"].model.mae == pytest.approx(100 * plain.tickers["A"].model.mae)
    # A width is a log return: about 2 x 1.28 x 0.012 for the 80% interval.
    assert plain.tickers["A"].intervals.width_80 == pytest.approx(2 * 1.2816 * 0.012, rel=1e-3)
    assert plain.tickers["A"].intervals.n == 40


# --- stored rows ---------------------------------------------------------------------------------


def test_summarize_scored_rows_equals_evaluate_on_the_same_arrays() -> None:
    case = _interval_case()
    stored = []
    for i, ticker in enumerate(case["tickers"]):
        row: dict[str, Any] = {
            "ticker": ticker,
            "target_date": case["dates"][i],
            "predicted_close": float(case["predicted_close"][i]),
            "actual_close": float(case["actual_close"][i]),
            "base_close": float(case["base_close"][i]),
            "source": "model" if i % 4 else "naive",
            "detail": {"baselines": {name: list(map(float, q[i])) for name, q in case["baselines"].items()}},
        }
        row.update({column: float(case["quantiles"][i, k]) for k, column in enumerate(QUANTILE_COLUMNS)})
        stored.append(row)
    summary = summarize_scored(stored)
    direct = evaluate(**case)

    def same(expected: Any, actual: Any, path: str) -> None:
        if isinstance(expected, dict):
            for key, value in expected.items():
                same(value, actual[key], f"{path}.{key}")
        elif isinstance(expected, float):
            assert actual == pytest.approx(expected, rel=1e-12), path
        else:
            assert actual == expected, path

    same(direct.to_json(), summary.to_json(), "summary")
    assert summary.tickers["A"].scored.sessions == 40 and summary.average.scored.samples == 80
    assert summary.average.scored.served_model_share == pytest.approx(0.75)
    assert 0.0 <= summary.average.scored.p_worse <= 1.0
    assert summarize_scored([]) is None


def test_skill_against_a_reference_counts_only_the_rows_where_both_have_a_forecast() -> None:
    from stockcli.ml.metrics import SERVED, skills_against

    # Two rows, both actual = base: the pinball loss of a row is set by its quantiles alone.
    def row(day: int, served: float, garch: list[float] | None) -> dict[str, Any]:
        detail = {"candidates": {"garch": garch, "gjr": [100 - served, 100, 100, 100, 100 + served]}}
        return {
            "ticker": "A",
            "target_date": date(2024, 1, day),
            "predicted_close": 100.0,
            "actual_close": 100.0,
            "base_close": 100.0,
            "detail": detail,
            **dict(zip(QUANTILE_COLUMNS, [100 - served, 100, 100, 100, 100 + served], strict=True)),
        }

    wide = [90.0, 99.0, 100.0, 101.0, 110.0]
    rows = [row(2, 1.0, wide), row(3, 50.0, None)]  # GARCH has no forecast for the second row
    skills = skills_against(rows, "garch")
    # Only the first row is shared: the served and gjr 95% intervals (99-101) against GARCH's (90-110).
    for name in (SERVED, "gjr"):
        assert skills[name]["winkler_95"] == pytest.approx(1 - math.log(101 / 99) / math.log(110 / 90))
        assert skills[name]["pinball"] is not None and skills[name]["pinball"] > 0.5
    assert skills["garch"] == {"winkler_95": 0.0, "pinball": 0.0}


def test_result_is_plain_json() -> None:
    case = _interval_case()
    case["predicted_close"] = case["predicted_close"].astype(np.float32)
    case["tickers"] = ["A"] * 40 + ["^GSPC"] * 40
    result = evaluate(**case)
    text = json.dumps(result.to_json(), allow_nan=False)
    assert json.loads(text) == json.loads(json.dumps(result.to_json()))
    assert all(type(v) is float for v in result.tickers["^GSPC"].model.to_json().values())


def test_flatten_gives_logger_friendly_names() -> None:
    case = _interval_case()
    case["tickers"] = ["A"] * 40 + ["^GSPC"] * 40
    result = evaluate(**case)
    flat = flatten(result)
    assert flat["avg.mae"] == pytest.approx(result.average.model.mae)
    assert flat["avg.naive_mae"] == pytest.approx(result.average.naive.mae)
    assert flat["avg.skill"] == pytest.approx(result.average.skill)
    assert flat["avg.coverage_95"] == pytest.approx(result.average.intervals.coverage_95)
    assert flat["avg.garch_winkler_95"] == pytest.approx(result.average.baselines["garch"].winkler_95)
    assert flat["GSPC.naive_mae"] == pytest.approx(result.tickers["^GSPC"].naive.mae)
    assert flat["A.directional_accuracy"] == pytest.approx(result.tickers["A"].model.direction_accuracy)
    assert flat["A.rolling_pinball"] == pytest.approx(result.tickers["A"].baselines["rolling"].pinball)
    assert all("^" not in name and not name.endswith(".n") for name in flat)
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())


def test_inputs_of_different_lengths_are_refused() -> None:
    with pytest.raises(InputDataError, match="differ in length"):
        evaluate(**_rows(predicted_close=_long(PREDICTED)[:7]))
    with pytest.raises(InputDataError, match="differ in length"):
        evaluate(**_rows(tickers=["A"] * 7))


def test_up_count_reads_overlapping_h_session_returns_and_skips_the_unknown() -> None:
    """The 2-session returns of daily log returns [NaN, 0.1, -0.2, 0.05, 0.3] are [NaN, -0.1, -0.15,
    0.35]: one up of three known; the 1-session ones three of four; too few returns: none."""
    from stockcli.ml.metrics import up_count

    returns = np.array([np.nan, 0.1, -0.2, 0.05, 0.3])
    assert up_count(returns) == (3, 4)
    assert up_count(returns, 2) == (1, 3)
    assert up_count(returns, 6) == (0, 0)
