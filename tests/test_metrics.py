"""evaluate(): hand-checked numbers, naive on the same days, skill, direction with zero moves, JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from stockcli.errors import InputDataError
from stockcli.ml.metrics import evaluate, flatten

BASE = np.array([[100.0, 10.0], [102.0, 10.0], [101.0, 11.0], [103.0, 11.0]])
ACTUAL = np.array([[102.0, 10.0], [101.0, 11.0], [103.0, 11.0], [104.0, 10.0]])
#                  up          down         up           up    (ticker A)
#                  flat        up           flat         down  (ticker B)
PREDICTED = np.array([[101.0, 10.5], [103.0, 10.5], [102.0, 11.0], [103.5, 10.5]])


def test_hand_checked_figures() -> None:
    result = evaluate(predicted_close=PREDICTED, actual_close=ACTUAL, base_close=BASE, tickers=["A", "B"])
    a = result["tickers"]["A"]
    # errors 1, 2, 1, 0.5
    assert a["model"]["mae"] == pytest.approx(4.5 / 4)
    assert a["model"]["rmse"] == pytest.approx(math.sqrt((1 + 4 + 1 + 0.25) / 4))
    assert a["model"]["mape"] == pytest.approx(np.mean([1 / 102, 2 / 101, 1 / 103, 0.5 / 104]))
    # predicted moves: up, up, up, up; actual: up, down, up, up -> 3 of 4
    assert a["model"]["directional_accuracy"] == pytest.approx(0.75)
    # naive: errors 2, 1, 2, 1
    assert a["naive"]["mae"] == pytest.approx(1.5)
    assert a["naive"]["rmse"] == pytest.approx(math.sqrt((4 + 1 + 4 + 1) / 4))
    assert a["naive"]["directional_accuracy"] == pytest.approx(0.5)  # no call = coin flip
    assert a["skill"] == pytest.approx(1 - (4.5 / 4) / 1.5)
    assert a["up_fraction"] == pytest.approx(0.75)
    assert a["n_days"] == 4 and result["n_days"] == 4

    b = result["tickers"]["B"]
    # Only days 2 (up) and 4 (down) moved; predicted up (hit) and down (hit): the flat days do not count.
    assert b["model"]["directional_accuracy"] == pytest.approx(1.0)
    assert b["model"]["mae"] == pytest.approx((0.5 + 0.5 + 0 + 0.5) / 4)
    assert b["naive"]["mae"] == pytest.approx((0 + 1 + 0 + 1) / 4)
    assert b["skill"] == pytest.approx(1 - 0.375 / 0.5)

    avg = result["average"]
    assert avg["model"]["mae"] == pytest.approx((4.5 / 4 + 0.375) / 2)
    assert avg["naive"]["mape"] == pytest.approx((a["naive"]["mape"] + b["naive"]["mape"]) / 2)
    assert avg["skill"] == pytest.approx((a["skill"] + b["skill"]) / 2)


def test_perfect_and_naive_forecasts() -> None:
    perfect = evaluate(predicted_close=ACTUAL, actual_close=ACTUAL, base_close=BASE, tickers=["A", "B"])
    assert perfect["average"]["skill"] == pytest.approx(1.0)
    assert perfect["average"]["model"]["mae"] == 0.0
    assert perfect["tickers"]["A"]["model"]["directional_accuracy"] == 1.0
    naive = evaluate(predicted_close=BASE, actual_close=ACTUAL, base_close=BASE, tickers=["A", "B"])
    for ticker in ("A", "B"):
        assert naive["tickers"][ticker]["model"] == naive["tickers"][ticker]["naive"]
        assert naive["tickers"][ticker]["skill"] == pytest.approx(0.0)


def test_a_worse_than_naive_model_has_negative_skill() -> None:
    wild = BASE + 10.0
    result = evaluate(predicted_close=wild, actual_close=ACTUAL, base_close=BASE, tickers=["A", "B"])
    assert result["tickers"]["A"]["skill"] < 0 and result["average"]["skill"] < 0


def test_zero_changes_everywhere_are_handled() -> None:
    flat = np.full((3, 1), 50.0)
    result = evaluate(predicted_close=flat + 1.0, actual_close=flat, base_close=flat, tickers=["Z"])
    z = result["tickers"]["Z"]
    assert z["model"]["directional_accuracy"] is None  # nothing moved: no direction to judge
    assert z["naive"]["mae"] == 0.0 and z["skill"] is None  # a model cannot beat a perfect naive
    assert z["up_fraction"] is None
    tie = evaluate(predicted_close=flat, actual_close=flat, base_close=flat, tickers=["Z"])
    assert tie["tickers"]["Z"]["skill"] == 0.0
    json.dumps(result, allow_nan=False)


def test_missing_values_skip_that_day_for_that_ticker_only() -> None:
    predicted = PREDICTED.copy()
    predicted[1, 0] = np.nan
    result = evaluate(predicted_close=predicted, actual_close=ACTUAL, base_close=BASE, tickers=["A", "B"])
    assert result["tickers"]["A"]["n_days"] == 3 and result["tickers"]["B"]["n_days"] == 4
    assert result["tickers"]["A"]["model"]["mae"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert result["tickers"]["A"]["naive"]["mae"] == pytest.approx((2 + 2 + 1) / 3)  # same days as the model


def test_result_is_plain_json() -> None:
    result = evaluate(
        predicted_close=PREDICTED.astype(np.float32),
        actual_close=ACTUAL,
        base_close=BASE,
        tickers=("A", "^GSPC"),
    )
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    assert all(type(v) is float for v in result["tickers"]["^GSPC"]["model"].values())


def test_flatten_gives_logger_friendly_names() -> None:
    result = evaluate(predicted_close=PREDICTED, actual_close=ACTUAL, base_close=BASE, tickers=["A", "^GSPC"])
    flat = flatten(result)
    assert flat["avg.mae"] == pytest.approx(result["average"]["model"]["mae"])
    assert flat["GSPC.naive_mae"] == pytest.approx(result["tickers"]["^GSPC"]["naive"]["mae"])
    assert flat["A.skill"] == pytest.approx(result["tickers"]["A"]["skill"])
    assert all("^" not in name for name in flat)


def test_shape_errors() -> None:
    with pytest.raises(InputDataError, match="differ in shape"):
        evaluate(predicted_close=PREDICTED[:3], actual_close=ACTUAL, base_close=BASE, tickers=["A", "B"])
    with pytest.raises(InputDataError, match="3 tickers"):
        evaluate(predicted_close=PREDICTED, actual_close=ACTUAL, base_close=BASE, tickers=["A", "B", "C"])
    single = evaluate(
        predicted_close=PREDICTED[:, 0], actual_close=ACTUAL[:, 0], base_close=BASE[:, 0], tickers=["A"]
    )
    assert single["tickers"]["A"]["model"]["mae"] == pytest.approx(4.5 / 4)
