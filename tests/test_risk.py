"""Risk figures and risk backtests (stockcli.ml.risk) against closed forms, textbook tables and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.stats import chi2

from stockcli.errors import InputDataError
from stockcli.ml.risk import (
    ES_TEST_TAIL,
    RISK_BACKTEST_KEYS,
    RISK_KEYS,
    TAIL_LEVELS,
    acerbi_szekely_z2,
    basel_zone,
    christoffersen,
    kupiec_pof,
    loss_price,
    non_overlapping,
    risk_backtest,
    risk_figures,
)
from stockcli.ml.risk import _tail_draws as tail_draws

LEVELS = np.asarray(TAIL_LEVELS)


def tail_quantiles(distribution: stats.rv_continuous, rows: int = 1) -> np.ndarray:
    """(rows, 31) log-return quantiles of one distribution at TAIL_LEVELS."""
    return np.repeat(distribution.ppf(LEVELS)[None, :], rows, axis=0)


def shortfall_by_quadrature(distribution: stats.rv_continuous, tail: float) -> float:
    """ES of the simple loss 1 - exp(r) for log returns r ~ distribution, by adaptive quadrature."""
    value, _ = integrate.quad(lambda u: -math.expm1(distribution.ppf(u)), 0.0, tail, limit=200)
    return value / tail


# --- tail levels and figures ------------------------------------------------------------------------


def test_tail_levels_hold_the_var_levels_in_order() -> None:
    assert len(TAIL_LEVELS) == 31
    assert np.all(np.diff(LEVELS) > 0)
    assert LEVELS[0] > 0.0 and LEVELS[-1] == 0.05
    for level in (0.01, 0.025, 0.05):
        assert level in TAIL_LEVELS


@pytest.mark.parametrize(
    ("name", "distribution", "closed_form"),
    [
        ("normal", stats.norm(scale=0.02), lambda a: 0.02 * stats.norm.pdf(stats.norm.ppf(a)) / a),
        (
            "t5",
            stats.t(5, scale=0.02),
            lambda a: 0.02 * (5 + stats.t.ppf(a, 5) ** 2) / 4 * stats.t.pdf(stats.t.ppf(a, 5), 5) / a,
        ),
    ],
)
def test_es_matches_the_closed_form_to_1e3(name: str, distribution, closed_form) -> None:
    # Quantiles q = log(1 + x) make the simple loss 1 - exp(q) equal to -x exactly, so ES is the
    # textbook ES of x: sigma phi(z_a) / a (normal), scale (nu + t_a^2) / (nu - 1) f(t_a) / a (t).
    figures = risk_figures(np.log1p(distribution.ppf(LEVELS)))
    for confidence, tail in ((95, 0.05), (99, 0.01)):
        expected = closed_form(tail)
        assert getattr(figures, f"es_{confidence}")[0] == pytest.approx(expected, rel=1e-3), name
        assert getattr(figures, f"var_{confidence}")[0] == pytest.approx(-distribution.ppf(tail), rel=1e-12)


def test_es_of_the_simple_loss_matches_scipy_integrate_for_a_fat_tail() -> None:
    distribution = stats.t(3, loc=0.001, scale=0.03)
    figures = risk_figures(tail_quantiles(distribution))
    assert figures.es_95[0] == pytest.approx(shortfall_by_quadrature(distribution, 0.05), rel=1e-3)
    assert figures.es_99[0] == pytest.approx(shortfall_by_quadrature(distribution, 0.01), rel=2e-3)
    assert figures.var_99[0] == pytest.approx(-math.expm1(distribution.ppf(0.01)))
    assert figures.es_99[0] > figures.var_99[0] > figures.var_95[0] > 0


def test_figures_rearrange_crossing_quantiles_and_mark_missing_rows() -> None:
    ordered = tail_quantiles(stats.norm(scale=0.01))[0]
    figures = risk_figures(np.vstack([ordered, ordered[::-1], np.full(len(TAIL_LEVELS), np.nan)]))
    assert figures.row(1) == pytest.approx(figures.row(0))
    assert set(figures.row(0)) == set(RISK_KEYS)
    assert figures.row(2) == dict.fromkeys(RISK_KEYS)


def test_figures_refuse_quantiles_at_other_levels() -> None:
    with pytest.raises(InputDataError, match="31"):
        risk_figures(np.zeros((3, 5)))


def test_loss_price_is_the_close_at_that_loss() -> None:
    assert loss_price(200.0, 0.05) == pytest.approx(190.0)
    assert loss_price(np.array([100.0, 50.0]), np.array([0.1, 0.02])) == pytest.approx([90.0, 49.0])


# --- Kupiec ----------------------------------------------------------------------------------------


def independent_kupiec(exceptions: int, n: int, p: float) -> float:
    observed = exceptions / n
    null = (n - exceptions) * np.log(1 - p) + exceptions * np.log(p)
    alternative = (n - exceptions) * np.log(1 - observed) + exceptions * np.log(observed)
    return float(-2 * (null - alternative))


@pytest.mark.parametrize(
    ("exceptions", "n", "p"), [(3, 250, 0.01), (9, 250, 0.01), (20, 500, 0.05), (1, 40, 0.05)]
)
def test_kupiec_matches_an_independent_likelihood_ratio_and_scipy_chi2(
    exceptions: int, n: int, p: float
) -> None:
    result = kupiec_pof(exceptions, n, p)
    expected = independent_kupiec(exceptions, n, p)
    assert result.statistic == pytest.approx(expected, rel=1e-10)
    assert result.p_value == pytest.approx(chi2.sf(expected, 1), rel=1e-10)
    assert result.df == 1


def test_kupiec_handles_no_and_all_exceptions_by_their_limits() -> None:
    none = kupiec_pof(0, 250, 0.01)
    assert none.statistic == pytest.approx(-2 * 250 * math.log(0.99))  # 5.025: a whole year clean
    assert none.p_value == pytest.approx(chi2.sf(none.statistic, 1))
    every = kupiec_pof(10, 10, 0.01)
    assert every.statistic == pytest.approx(-2 * 10 * math.log(0.01))
    assert kupiec_pof(5, 500, 0.01).statistic == pytest.approx(0.0, abs=1e-12)  # exactly at the rate


# Jorion, "Value at Risk" (3rd ed., table 6-3), from Kupiec (1995): non-rejection regions of the
# number of exceptions N at 5% significance, (exclusive low, exclusive high).
JORION_TABLE = [
    (0.01, 255, None, 7),
    (0.01, 510, 1, 11),
    (0.01, 1000, 4, 17),
    (0.05, 255, 6, 21),
    (0.05, 510, 16, 36),
    (0.05, 1000, 37, 65),
]


@pytest.mark.parametrize(("p", "n", "low", "high"), JORION_TABLE)
def test_kupiec_reproduces_the_textbook_non_rejection_regions(
    p: float, n: int, low: int | None, high: int
) -> None:
    kept = [exceptions for exceptions in range(n + 1) if kupiec_pof(exceptions, n, p).p_value >= 0.05]
    assert kept[-1] == high - 1
    if low is not None:
        assert kept[0] == low + 1
    else:
        # The table leaves the lower bound open at T = 255, p = 1%: zero exceptions happen with
        # probability 0.99^255 = 7.7%, so an exact test would not reject them, but the LR
        # statistic of N = 0 is 5.13 > 3.84 and the chi-square test does. That is the only cell
        # where the asymptotic test differs from the table.
        assert kept[0] == 1
        assert kupiec_pof(0, n, p).statistic == pytest.approx(5.13, abs=0.01)


@pytest.mark.parametrize(
    ("exceptions", "n", "p"), [(-1, 10, 0.01), (11, 10, 0.01), (0, 0, 0.01), (1, 10, 1.0)]
)
def test_kupiec_refuses_impossible_counts(exceptions: int, n: int, p: float) -> None:
    with pytest.raises(InputDataError):
        kupiec_pof(exceptions, n, p)


# --- Christoffersen ---------------------------------------------------------------------------------


def test_christoffersen_on_a_hand_counted_sequence() -> None:
    hits = [0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0]
    # Consecutive pairs: 00 01 11 10 00 00 01 10 00 00 00 -> n00 = 6, n01 = 2, n10 = 2, n11 = 1.
    n00, n01, n10, n11 = 6, 2, 2, 1
    pi01, pi11, pi = 2 / 8, 1 / 3, 3 / 11
    markov = n00 * np.log(1 - pi01) + n01 * np.log(pi01) + n10 * np.log(1 - pi11) + n11 * np.log(pi11)
    constant = (n00 + n10) * np.log(1 - pi) + (n01 + n11) * np.log(pi)
    expected_ind = -2 * (constant - markov)
    expected_cc = expected_ind + independent_kupiec(3, 12, 0.05)

    result = christoffersen(np.asarray(hits, dtype=bool), 0.05)
    assert result.transitions == (n00, n01, n10, n11)
    assert result.independence.statistic == pytest.approx(expected_ind, rel=1e-10)
    assert result.independence.p_value == pytest.approx(chi2.sf(expected_ind, 1), rel=1e-10)
    assert result.conditional_coverage.statistic == pytest.approx(expected_cc, rel=1e-10)
    assert result.conditional_coverage.p_value == pytest.approx(chi2.sf(expected_cc, 2), rel=1e-10)
    assert result.conditional_coverage.df == 2


def test_christoffersen_rejects_clustered_exceptions() -> None:
    hits = np.zeros(250, dtype=bool)
    hits[100:105] = True  # five in a row, a 1% VaR
    assert christoffersen(hits, 0.01).independence.p_value < 0.001
    spread = np.zeros(250, dtype=bool)
    spread[[20, 70, 120, 170, 220]] = True
    assert christoffersen(spread, 0.01).independence.p_value > 0.3


def test_christoffersen_degenerate_counts_follow_zero_log_zero() -> None:
    clean = christoffersen(np.zeros(250, dtype=bool), 0.01)
    assert clean.independence.statistic == 0.0 and clean.independence.p_value == 1.0
    assert clean.conditional_coverage.statistic == pytest.approx(kupiec_pof(0, 250, 0.01).statistic)
    last_only = np.zeros(20, dtype=bool)
    last_only[-1] = True  # no transition out of an exception: n10 = n11 = 0
    result = christoffersen(last_only, 0.01)
    assert result.transitions == (18, 1, 0, 0)
    assert math.isfinite(result.independence.statistic) and result.independence.statistic == pytest.approx(
        0.0
    )
    every = christoffersen(np.ones(10, dtype=bool), 0.01)
    assert every.independence.statistic == pytest.approx(0.0)
    with pytest.raises(InputDataError, match="at least 2"):
        christoffersen([True], 0.01)


# --- Basel -----------------------------------------------------------------------------------------


def test_basel_zones_for_a_year_of_99_var() -> None:
    zones = [basel_zone(exceptions, 250) for exceptions in range(15)]
    assert zones == ["green"] * 5 + ["yellow"] * 5 + ["red"] * 5


def test_basel_table_cumulative_probabilities() -> None:
    # Basel Committee (1996), "Supervisory framework for the use of backtesting", table 2.
    table = [8.11, 28.58, 54.32, 75.81, 89.22, 95.88, 98.63, 99.60, 99.89, 99.97, 99.99]
    cumulative = 100 * stats.binom.cdf(np.arange(11), 250, 0.01)
    assert np.round(cumulative, 2) == pytest.approx(table, abs=1e-9)
    # Red at 10: its cumulative probability (99.995%) reaches the 99.99% line, 9's (99.975%) does not.
    assert cumulative[10] >= 99.99 > cumulative[9]


def test_basel_zone_scales_with_the_number_of_forecasts() -> None:
    # 13 non-overlapping 20-session windows: P(X <= 0) = 87.8%, P(X <= 1) = 99.3%, P(X <= 2) = 99.98%.
    assert [basel_zone(exceptions, 13) for exceptions in range(4)] == ["green", "yellow", "yellow", "red"]
    assert basel_zone(4, 500) == "green" and basel_zone(9, 500) == "yellow"


# --- Acerbi–Székely Z2 --------------------------------------------------------------------------------


def test_z2_statistic_follows_its_formula() -> None:
    forecast = stats.t(5, scale=0.02)
    realized = np.zeros(40)
    realized[[7, 30]] = np.log1p([-0.08, -0.10])  # both beyond the 97.5% VaR (a 5.1% loss)
    realized[12] = np.log1p(-0.04)  # a loss within the VaR: not an exception
    shortfall = shortfall_by_quadrature(forecast, ES_TEST_TAIL)
    expected = (-0.08 - 0.10) / (40 * ES_TEST_TAIL * shortfall) + 1

    result = acerbi_szekely_z2(realized, tail_quantiles(forecast, 40), seed=3)
    assert result.exceptions == 2
    assert result.statistic == pytest.approx(expected, rel=2e-3)
    assert result == acerbi_szekely_z2(realized, tail_quantiles(forecast, 40), seed=3)  # seeded


def test_z2_accepts_the_forecast_distribution_and_rejects_a_fatter_tail() -> None:
    forecast = stats.t(5, scale=0.02)
    quantiles = tail_quantiles(forecast, 250)
    rng = np.random.default_rng(11)
    honest = acerbi_szekely_z2(forecast.rvs(250, random_state=rng), quantiles)
    fatter = acerbi_szekely_z2(stats.t(3, scale=0.03).rvs(250, random_state=rng), quantiles)
    assert honest.p_value > 0.2
    assert fatter.statistic < 0 and fatter.p_value < 0.01


def test_z2_p_values_are_calibrated_under_the_null() -> None:
    # Each session its own forecast (a volatility that moves), realized from that very forecast.
    rng = np.random.default_rng(5)
    scales = 0.01 * np.exp(rng.normal(0.0, 0.4, 250))
    quantiles = scales[:, None] * stats.t.ppf(LEVELS, 4)[None, :]
    p_values = np.array(
        [
            acerbi_szekely_z2(
                scales * stats.t.rvs(4, size=250, random_state=rng), quantiles, seed=trial
            ).p_value
            for trial in range(300)
        ]
    )
    # 5% rejections expected: 15 of 300; binomial 99.9% bounds are about 4 to 30.
    assert 4 <= np.sum(p_values < 0.05) <= 30
    # Uniform p-values average 1/2 (standard error 0.017); a null scaled 10% too far moves it ~0.09.
    assert abs(p_values.mean() - 0.5) < 0.05


def test_z2_null_draws_are_the_tail_of_iid_uniforms() -> None:
    # The sampler skips the uniforms >= alpha by geometric gaps: the U < alpha it keeps must be
    # those of a (simulations, sessions) matrix of iid uniforms: Binomial count, Uniform(0, alpha).
    simulations, sessions, alpha = 2000, 250, ES_TEST_TAIL
    draw, session, uniforms = tail_draws(np.random.default_rng(0), simulations, sessions, alpha)
    count = simulations * sessions * alpha
    assert abs(draw.size - count) < 4 * math.sqrt(count * (1 - alpha))
    assert stats.kstest(uniforms / alpha, "uniform").pvalue > 0.01
    assert stats.chisquare(np.bincount(session, minlength=sessions)).pvalue > 0.01
    assert stats.chisquare(np.bincount(draw // 20, minlength=simulations // 20)).pvalue > 0.01
    cells = np.unique(draw * sessions + session, return_counts=True)[1]
    assert cells.max() == 1  # at most one draw per (simulation, session)


def test_z2_refuses_missing_values_and_a_positive_tail() -> None:
    quantiles = tail_quantiles(stats.norm(scale=0.01), 3)
    with pytest.raises(InputDataError, match="NaN"):
        acerbi_szekely_z2(np.array([0.0, np.nan, 0.0]), quantiles)
    with pytest.raises(InputDataError, match="positive"):
        acerbi_szekely_z2(np.zeros(3), quantiles + 1.0)


# --- horizons and the backtest -------------------------------------------------------------------------


def test_non_overlapping_takes_every_hth_session_back_from_the_newest() -> None:
    assert non_overlapping(np.arange(12), 5).tolist() == [1, 6, 11]
    assert non_overlapping(np.arange(4), 1).tolist() == [0, 1, 2, 3]
    # A gap (a session with no forecast) counts as a session: 10 -> 3 is 7 apart, 3 -> 0 only 3.
    assert non_overlapping([0, 3, 10, 11, 14, 15], 5).tolist() == [1, 2, 5]
    assert non_overlapping([], 5).tolist() == []
    with pytest.raises(InputDataError, match="increasing"):
        non_overlapping([0, 2, 2], 5)
    with pytest.raises(InputDataError, match="horizon"):
        non_overlapping([0, 1], 0)


def overlapping_windows(sessions: int, horizon: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """h-session log returns from iid normal daily returns, one per base session, and their exact
    forecast (normal, scale sqrt(h) of the daily one) at TAIL_LEVELS."""
    daily = np.random.default_rng(seed).normal(0.0, 0.01, sessions + horizon)
    windows = np.convolve(daily, np.ones(horizon), mode="valid")[1 : sessions + 1]
    return windows, tail_quantiles(stats.norm(scale=0.01 * math.sqrt(horizon)), sessions)


def test_overlapping_windows_are_tested_on_the_non_overlapping_subsample() -> None:
    realized, quantiles = overlapping_windows(2500, 5, seed=2)
    result = risk_backtest(realized, quantiles, 5)
    assert result.n == 500
    assert result.exceptions_99 == int(np.sum(realized[4::5] < quantiles[4::5, TAIL_LEVELS.index(0.01)]))
    assert result.christoffersen_p is not None and result.christoffersen_p > 0.05
    # The same windows taken as independent (horizon 1): exceptions come in runs, and
    # Christoffersen's test rejects a correct forecast. That is what the subsample avoids.
    naive = risk_backtest(realized, quantiles, 1)
    assert naive.n == 2500
    assert naive.christoffersen_p is not None and naive.christoffersen_p < 1e-6


def test_risk_backtest_reports_every_figure_in_the_one_json_shape() -> None:
    forecast = stats.t(5, scale=0.02)
    realized = forecast.rvs(250, random_state=np.random.default_rng(8))
    result = risk_backtest(realized, tail_quantiles(forecast, 250), 1)
    block = result.to_json()
    assert tuple(block) == RISK_BACKTEST_KEYS
    assert block["n"] == 250 and block["es_level"] == 0.975
    assert block["exceptions_99"] == int(np.sum(realized < forecast.ppf(0.01)))
    assert block["exceptions_95"] == int(np.sum(realized < forecast.ppf(0.05)))
    assert block["kupiec_p"] == pytest.approx(kupiec_pof(block["exceptions_99"], 250, 0.01).p_value)
    assert block["zone"] == basel_zone(block["exceptions_99"], 250)
    assert all(block[key] is not None for key in RISK_BACKTEST_KEYS)


def test_underestimated_risk_goes_red_and_fails_every_test() -> None:
    realized = stats.t(3, scale=0.04).rvs(250, random_state=np.random.default_rng(9))
    result = risk_backtest(realized, tail_quantiles(stats.norm(scale=0.015), 250), 1)
    assert result.zone == "red"
    assert result.kupiec_p is not None and result.kupiec_p < 1e-6
    assert result.es_p is not None and result.es_p < 0.01


def test_risk_backtest_drops_missing_rows_and_gives_no_p_value_on_too_few() -> None:
    realized, quantiles = overlapping_windows(60, 20, seed=4)
    result = risk_backtest(realized, quantiles, 20)
    assert result.n == 3  # three non-overlapping 20-session windows in 60 base sessions
    assert (result.kupiec_p, result.christoffersen_p, result.zone, result.es_p) == (None, None, None, None)
    assert result.to_json()["kupiec_p"] is None

    realized, quantiles = overlapping_windows(30, 1, seed=4)
    realized[[3, 17]] = np.nan
    quantiles[5, 0] = np.nan
    assert risk_backtest(realized, quantiles, 1).n == 27
    with pytest.raises(InputDataError, match="forecasts"):
        risk_backtest(realized[:-1], quantiles, 1)
