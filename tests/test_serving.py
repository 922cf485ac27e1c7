"""Serving one ticker: every candidate filtered once, the adapted levels, P(up), and the fallbacks."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from stockcli.ml.forecasters import NETWORK, TickerBars, build_table, fit_all
from stockcli.ml.intervals import QUANTILES
from stockcli.ml.serving import (
    CandidateForecast,
    adapted_levels,
    served_p_up,
    served_source,
    statistical_forecasts,
    stored_interval_source,
)
from tests.bars_data import sample_frame


@pytest.fixture(scope="module")
def setup() -> tuple[Any, dict[str, Any], TickerBars]:
    from stockcli.config import load_settings

    settings = load_settings(None, environ={})
    table = build_table(settings)
    bars = TickerBars.from_frame(sample_frame("GOOG")).head(1300)
    fitted = fit_all(table, bars.head(1000))
    return table, {name: {"GOOG": params} for name, params in fitted.items()}, bars


def test_one_pass_gives_what_each_candidate_gives_alone(setup: Any) -> None:
    table, fits, bars = setup
    alphas = {"rolling": (0.2, 0.05), "garch": (0.3, 0.08), "gjr": (0.1, 0.02), "har_range": (0.25, 0.04)}
    alphas["blend"] = (0.15, 0.06)
    found = statistical_forecasts(table, fits, "GOOG", bars, lambda name: alphas[name])
    assert set(found) == set(table)
    row = np.array([len(bars) - 1])
    for name, forecaster in table.items():
        params = fits[name]["GOOG"]
        alone = forecaster.quantiles_at(params, bars, row, QUANTILES)[0]
        assert found[name].nominal == pytest.approx(alone, rel=1e-12, abs=1e-15)
        at_levels = forecaster.quantiles_at(params, bars, row, adapted_levels(alphas[name]))[0]
        assert found[name].adapted == pytest.approx(at_levels, rel=1e-12, abs=1e-15)
        assert 0.3 < found[name].p_up < 0.7


def test_garch_p_up_is_its_t_distribution_above_zero(setup: Any) -> None:
    from scipy.stats import t as student_t

    table, fits, bars = setup
    params = fits["garch"]["GOOG"]
    found = statistical_forecasts(table, fits, "GOOG", bars, lambda _name: (0.2, 0.05))["garch"]
    nu, mu = params["nu"], params["mu"] / params["scale"]
    unit = (found.nominal[4] - mu) / (student_t.ppf(0.975, nu) * math.sqrt((nu - 2) / nu))
    expected = 1 - student_t.cdf(-mu / unit * math.sqrt(nu / (nu - 2)), nu)
    assert found.p_up == pytest.approx(expected, abs=2e-3)  # read off a 99-level grid


def test_a_stored_interval_source_serves_only_where_its_test_chose_it() -> None:
    """The pooled decision against the incumbent, a ticker's against the pooled one: a source stored
    without a passing test (an older release's incumbent) gives way to what it was tested against."""

    def stored(source: str, p_value: float | None) -> SimpleNamespace:
        return SimpleNamespace(interval_source=source, interval_p_value=p_value)

    def source(selection: dict[str, SimpleNamespace], ticker: str = "GOOG") -> tuple[str, float | None]:
        return stored_interval_source(selection, ticker, incumbent="blend", alpha=0.05)

    # (source, the p-value of the test that chose it: the pooled row's or the ticker's own)
    assert source({}) == ("blend", None)
    assert source({"*": stored("garch", None), "GOOG": stored("garch", None)}) == ("blend", None)
    assert source({"*": stored("garch", 0.01), "GOOG": stored("garch", 0.3)}) == ("garch", 0.01)
    assert source({"*": stored("network", 0.01), "GOOG": stored("garch", 0.4)}) == ("network", 0.01)
    assert source({"*": stored("garch", 0.01), "GOOG": stored("har_range", 0.02)}) == ("har_range", 0.02)
    assert source({"*": stored("garch", 0.2), "GOOG": stored("har_range", 0.02)}) == ("har_range", 0.02)
    assert source({"*": stored("har_range", 0.04)}, "NEWCO") == ("har_range", 0.04)
    assert source({"*": stored("har_range", 0.06)}, "NEWCO") == ("blend", None)


def test_fallbacks_when_the_choice_cannot_forecast() -> None:
    usable = CandidateForecast(np.zeros(5), np.array([-2.0, -1.0, 0.0, 1.0, 2.0]), 0.55)
    broken = CandidateForecast(np.zeros(5), np.full(5, np.nan), math.nan)
    assert served_source("har_range", {"har_range": usable}, "garch") == "har_range"
    # The incumbent first, then the yardstick (GARCH), then the rolling band, then the network.
    assert served_source("gjr", {"blend": broken, "garch": usable, "rolling": usable}, "blend") == "garch"
    assert (
        served_source("har_range", {"har_range": broken, "garch": usable, "rolling": usable}, "garch")
        == "garch"
    )
    assert served_source("har_range", {"har_range": broken, "rolling": usable}, "garch") == "rolling"
    assert served_source("gjr", {NETWORK: usable}, "garch") == NETWORK
    assert served_source("gjr", {}, "garch") is None
    assert served_p_up("gjr", {"gjr": usable}, 0.52, "gjr") == ("gjr", 0.55)
    assert served_p_up("gjr", {"gjr": broken}, 0.52, "gjr") == ("base_rate", 0.52)
    assert served_p_up(None, {"garch": usable}, math.nan, "garch") == ("garch", 0.55)
