"""The decision statistics (stockcli.ml.stats) and the interval toolkit (stockcli.ml.intervals)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest
from scipy.stats import t as student_t

from stockcli.errors import InputDataError
from stockcli.ml.intervals import (
    INTERVAL_METRIC_KEYS,
    INTERVALS,
    MISCOVERAGE,
    QUANTILES,
    aci_update,
    conformal_quantile,
    conformal_scores,
    half_widths,
    interval_block,
    pinball_losses,
    quantiles_from_halfwidths,
    sort_quantiles,
    winkler_scores,
)
from stockcli.ml.stats import (
    MIN_OBSERVATIONS,
    binomial_coverage_test,
    clustered_coverage_test,
    default_lag,
    min_test_sessions,
    newey_west_variance,
    paired_loss_test,
    skill_interval,
)
from tests.oracles import binomial_bounds, diebold_mariano

# --- Newey–West ----------------------------------------------------------------------------------


def test_newey_west_matches_hand_computation() -> None:
    d = np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    # centered: [-2, 0, -1, 2, 1]; gamma0 = 10/5 = 2, gamma1 = (0 + 0 - 2 + 2)/5 = 0,
    # gamma2 = (2 + 0 - 1)/5 = 0.2; Bartlett weights for lag 2: 2/3 and 1/3.
    expected_lag2 = 2.0 + 2 * (2 / 3) * 0.0 + 2 * (1 / 3) * 0.2
    assert newey_west_variance(d, lag=0) == pytest.approx(2.0)
    assert newey_west_variance(d, lag=2) == pytest.approx(expected_lag2)
    assert newey_west_variance(np.array([1.0, np.nan, 3.0, 2.0, 5.0, 4.0]), lag=2) == pytest.approx(
        expected_lag2
    )


def test_newey_west_default_lag_and_edge_cases() -> None:
    assert default_lag(100) == 4
    assert default_lag(500) == math.floor(4 * 5 ** (2 / 9))
    assert newey_west_variance(np.array([2.0])) == 0.0
    assert newey_west_variance(np.full(50, 3.0)) == 0.0
    # A lag longer than the series is capped, and the estimate never goes negative.
    alternating = np.tile([1.0, -1.0], 20)
    assert newey_west_variance(alternating, lag=500) >= 0.0


# --- Diebold–Mariano -----------------------------------------------------------------------------


def test_dm_identical_losses_give_no_evidence() -> None:
    losses = np.abs(np.random.default_rng(1).normal(size=300))
    for alternative in ("less", "greater", "two-sided"):
        result = diebold_mariano(losses, losses, alternative=alternative)
        assert result.statistic == 0.0
        assert result.p_value == 1.0
        assert result.mean_diff == 0.0
        assert result.n == 300


def test_dm_degenerate_inputs_never_nan() -> None:
    short = diebold_mariano(np.array([1.0, 2.0]), np.array([3.0, 4.0]))
    assert (short.n, short.p_value, short.statistic) == (2, 1.0, 0.0)
    constant_gap = diebold_mariano(np.full(40, 1.0), np.full(40, 2.0))  # a always exactly 1 lower
    assert constant_gap.p_value == 1.0
    assert constant_gap.mean_diff == -1.0
    empty = diebold_mariano(np.array([np.nan, 1.0]), np.array([1.0, np.nan]))
    assert empty.n == 0
    for result in (short, constant_gap, empty):
        values = [result.mean_diff, result.statistic, result.p_value, result.ci_low, result.ci_high]
        assert all(math.isfinite(value) for value in values)


def test_dm_clearly_better_series() -> None:
    rng = np.random.default_rng(2)
    naive = np.abs(rng.normal(size=250))
    model = naive * 0.7 + 0.05 * np.abs(rng.normal(size=250))
    better = diebold_mariano(model, naive, alternative="less")
    assert better.p_value < 0.01
    assert better.mean_diff < 0
    assert better.ci_high < 0
    assert diebold_mariano(model, naive, alternative="greater").p_value > 0.99
    assert diebold_mariano(naive, model, alternative="greater").p_value == pytest.approx(better.p_value)


def test_dm_statistic_is_hln_corrected_t() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=60), rng.normal(size=60)
    result = diebold_mariano(a, b, alternative="two-sided", lag=0)
    d = a - b
    raw = d.mean() / math.sqrt(np.var(d) / d.size)
    assert result.statistic == pytest.approx(raw * math.sqrt((d.size - 1) / d.size))
    assert result.p_value == pytest.approx(2 * student_t.sf(abs(result.statistic), d.size - 1))
    half = student_t.ppf(0.975, d.size - 1) * abs(result.mean_diff / result.statistic)
    assert (result.ci_low, result.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    # The 95% interval excludes 0 exactly when the two-sided test rejects at 5%.
    assert (result.ci_low > 0 or result.ci_high < 0) == (result.p_value < 0.05)


def test_dm_of_h_session_forecasts_takes_lag_h_minus_1_and_hln_at_h() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=60), rng.normal(size=60)
    d, h = a - b, 5
    fixed_lag = diebold_mariano(a, b, alternative="two-sided", lag=0, horizon=h)
    raw = d.mean() / math.sqrt(np.var(d) / d.size)
    hln = math.sqrt((d.size + 1 - 2 * h + h * (h - 1) / d.size) / d.size)
    assert fixed_lag.statistic == pytest.approx(raw * hln)
    assert default_lag(60) < h - 1
    assert diebold_mariano(a, b, horizon=h).lag == h - 1
    assert diebold_mariano(a, b, horizon=1).lag == default_lag(60)
    # Fewer sessions than MIN_PERIODS non-overlapping periods: no test, whatever the differences.
    long_a, long_b = rng.normal(size=300), rng.normal(size=300)
    assert min_test_sessions(20) == 240 and min_test_sessions(1) == MIN_OBSERVATIONS
    assert all(diebold_mariano(long_a[:n] - 5, long_b[:n], horizon=20).p_value == 1.0 for n in (3, 60, 239))
    assert diebold_mariano(long_a[:240] - 5, long_b[:240], horizon=20).p_value < 0.05
    assert diebold_mariano(long_a[:3] - 5, long_b[:3], lag=0, horizon=20).p_value < 0.05


def test_truncated_long_run_variance_weighs_every_autocovariance_alike() -> None:
    d = np.array([1.0, -1.0, 2.0, 0.5, -0.5, 1.5, -2.0, 0.0])
    c = d - d.mean()
    gammas = [float(c[k:] @ c[: c.size - k]) / c.size for k in range(3)]
    assert newey_west_variance(d, 2, truncated=True) == pytest.approx(max(gammas[0] + 2 * sum(gammas[1:]), 0))
    assert newey_west_variance(d, 2) == pytest.approx(gammas[0] + 2 * (2 / 3 * gammas[1] + 1 / 3 * gammas[2]))


def test_dm_at_h_sessions_holds_its_size_on_overlapping_losses() -> None:
    rng = np.random.default_rng(8)
    trials, n, h = 300, 250, 20
    with_horizon = as_if_daily = 0
    for _ in range(trials):
        differential = np.convolve(rng.normal(size=n + h - 1), np.ones(h), mode="valid")  # MA(h - 1), mean 0
        zeros = np.zeros(n)
        with_horizon += (
            diebold_mariano(differential, zeros, alternative="two-sided", horizon=h).p_value < 0.05
        )
        as_if_daily += diebold_mariano(differential, zeros, alternative="two-sided").p_value < 0.05
    # Overlapping 20-session losses read as daily ones (lag 5) reject a true null a third of the time; as
    # 20-session ones 7%.
    assert as_if_daily / trials > 0.18
    assert with_horizon / trials < 0.12
    assert with_horizon < as_if_daily / 2


def test_dm_nan_pairs_are_dropped() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=100), rng.normal(size=100)
    a_gappy, b_gappy = a.copy(), b.copy()
    a_gappy[[3, 50]] = np.nan
    b_gappy[[10]] = np.nan
    keep = np.ones(100, dtype=bool)
    keep[[3, 10, 50]] = False
    assert diebold_mariano(a_gappy, b_gappy) == diebold_mariano(a[keep], b[keep])


def test_dm_rejection_rate_under_the_null_is_nominal() -> None:
    rng = np.random.default_rng(5)
    trials = 200
    rejections = sum(
        diebold_mariano(rng.normal(size=250), rng.normal(size=250), alternative="two-sided").p_value < 0.05
        for _ in range(trials)
    )
    low, high = binomial_bounds(trials, 0.95, 0.01)  # "no rejection" is the 95% event
    assert low <= 1 - rejections / trials <= high


def test_dm_hac_lag_handles_autocorrelated_differentials() -> None:
    rng = np.random.default_rng(6)
    trials, n, phi = 300, 500, 0.5
    hac_rejections = naive_rejections = 0
    for _ in range(trials):
        shocks = rng.normal(size=n + 100)
        differential = np.empty_like(shocks)
        differential[0] = shocks[0]
        for t in range(1, shocks.size):
            differential[t] = phi * differential[t - 1] + shocks[t]
        differential = differential[100:]  # mean 0: the null holds
        zeros = np.zeros(n)
        hac_rejections += diebold_mariano(differential, zeros, alternative="two-sided").p_value < 0.05
        naive_rejections += (
            diebold_mariano(differential, zeros, alternative="two-sided", lag=0).p_value < 0.05
        )
    # iid variance understates the long-run variance three-fold here: ~25% false rejections.
    # Bartlett HAC with the default lag (5) leaves a small bias: 7-11% across seeds, not 5%.
    assert naive_rejections / trials > 0.18
    assert hac_rejections / trials < 0.13
    assert hac_rejections < naive_rejections / 2


# --- panels and skill ----------------------------------------------------------------------------


def _panel(rng: np.random.Generator, sessions: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Naive and model absolute errors: the model halves the cheap stock's errors, loses 10% on the index."""
    naive = np.abs(rng.normal(size=(sessions, 2))) * np.array([0.2, 200.0])
    model = naive * np.array([0.5, 1.1])
    return model, naive


def test_paired_test_scaling_stops_a_high_priced_ticker_dominating() -> None:
    model, naive = _panel(np.random.default_rng(7))
    scaled = paired_loss_test(model, naive)
    assert scaled.relative_improvement == pytest.approx(1 - (0.5 + 1.1) / 2, abs=0.02)
    assert scaled.p_value < 0.01
    assert scaled.improvement_low is not None and scaled.improvement_low > 0
    assert (scaled.n_sessions, scaled.n_tickers) == (300, 2)
    unscaled = paired_loss_test(model, naive, scale=np.ones(2))
    assert unscaled.relative_improvement is not None and unscaled.relative_improvement < 0
    assert unscaled.p_value > 0.5
    # Moving the index to another price level changes nothing once scaled.
    rescaled = paired_loss_test(model * np.array([1.0, 1000.0]), naive * np.array([1.0, 1000.0]))
    assert rescaled.relative_improvement == pytest.approx(scaled.relative_improvement)
    assert rescaled.p_value == pytest.approx(scaled.p_value)


def test_paired_test_handles_missing_cells_and_one_dimension() -> None:
    model, naive = _panel(np.random.default_rng(8))
    model[:100, 1] = np.nan  # the index joined later
    naive[150, 0] = np.nan
    result = paired_loss_test(model, naive)
    assert result.n_sessions == 300
    assert result.relative_improvement is not None
    single = paired_loss_test(model[:, 0], naive[:, 0])
    assert single.n_tickers == 1 and single.n_sessions == 299
    both = np.isfinite(naive[:, 0])
    assert single.relative_improvement == pytest.approx(1 - model[both, 0].mean() / naive[both, 0].mean())
    with pytest.raises(InputDataError):
        paired_loss_test(model, naive[:, :1])


def test_skill_interval_single_ticker() -> None:
    rng = np.random.default_rng(9)
    naive = np.abs(rng.normal(size=400))
    model = naive * 0.9 + 0.02 * np.abs(rng.normal(size=400))
    skill, low, high = skill_interval(model, naive)
    assert skill == pytest.approx(1 - model.mean() / naive.mean())
    assert skill is not None and low is not None and high is not None
    assert low < skill < high
    assert low > 0  # a real 9% improvement
    d = model - naive
    dm = diebold_mariano(model, naive, alternative="two-sided")
    assert (low, high) == pytest.approx((-dm.ci_high / naive.mean(), -dm.ci_low / naive.mean()))
    assert np.mean(d) == pytest.approx(dm.mean_diff)
    assert skill_interval(np.array([np.nan]), np.array([1.0])) == (None, None, None)


def test_skill_interval_panel_is_mean_of_ticker_skills() -> None:
    model, naive = _panel(np.random.default_rng(10))
    skill, _, _ = skill_interval(model, naive)
    per_ticker = [1 - model[:, column].mean() / naive[:, column].mean() for column in range(2)]
    assert skill == pytest.approx(np.mean(per_ticker))


# --- binomial coverage ---------------------------------------------------------------------------


def test_binomial_coverage_test_matches_scipy() -> None:
    assert binomial_coverage_test(0, 10, 0.5) == pytest.approx(2 * 0.5**10)
    for misses, n, nominal in ((12, 200, 0.95), (30, 200, 0.8), (3, 500, 0.95), (100, 100, 0.8)):
        assert binomial_coverage_test(misses, n, nominal) == pytest.approx(
            binomtest(misses, n, 1 - nominal).pvalue
        )
    assert binomial_coverage_test(0, 0, 0.95) == 1.0
    with pytest.raises(InputDataError):
        binomial_coverage_test(5, 3, 0.95)


@pytest.mark.parametrize(("n", "nominal", "alpha"), [(200, 0.95, 0.05), (250, 0.8, 0.01), (37, 0.95, 0.05)])
def test_binomial_bounds_are_the_acceptance_region_of_the_test(n: int, nominal: float, alpha: float) -> None:
    low, high = binomial_bounds(n, nominal, alpha)
    assert low <= nominal <= high
    for misses in range(n + 1):
        observed = 1 - misses / n
        inside = low - 1e-12 <= observed <= high + 1e-12
        assert inside == (binomial_coverage_test(misses, n, nominal) >= alpha), misses
    assert binomial_bounds(0, 0.95, 0.05) == (0.0, 1.0)


# --- interval metrics ----------------------------------------------------------------------------


def test_coverage_width_skip_missing() -> None:
    quantiles = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0]] * 3 + [[-1.0, np.nan, 0.5, 1.0, 2.0]])  # 80%: [0, 1]
    block = interval_block(quantiles, np.array([0.5, 1.0, 2.0, 0.5]))
    assert block["coverage_80"] == pytest.approx(2 / 3)  # the bounds count as inside
    assert block["width_80"] == pytest.approx(1.0)
    assert interval_block(np.array([[np.nan, 0, 0, 1, 1]]), np.array([0.0]))["coverage_80"] is None


def test_winkler_hand_computed() -> None:
    lower, upper = np.array([0.0, 0.0, 0.0]), np.array([2.0, 2.0, 2.0])
    actual = np.array([1.0, -0.5, 3.0])
    alpha = 0.2  # 2 / alpha = 10
    assert winkler_scores(lower, upper, actual, alpha) == pytest.approx([2.0, 2.0 + 5.0, 2.0 + 10.0])
    quantiles = np.array([[0.0, 0.5, 1.0, 1.5, 2.0]] * 3)  # 95%: [0, 2], alpha 0.05
    block = interval_block(quantiles, np.array([1.0, np.nan, 3.0]))
    assert block["winkler_95"] == pytest.approx((2 + 42) / 2)  # the mean over complete rows


def test_pinball_hand_computed() -> None:
    quantiles = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0]])
    actual = np.array([1.5])
    # levels (0.025, 0.1, 0.5, 0.9, 0.975): actual above the first four, below the last.
    expected = (0.025 * 3.5 + 0.1 * 2.5 + 0.5 * 1.5 + 0.9 * 0.5 + (1 - 0.975) * 0.5) / 5
    assert pinball_losses(quantiles, actual) == pytest.approx([expected])
    assert interval_block(np.vstack([quantiles, quantiles]), np.array([1.5, np.nan]))[
        "pinball"
    ] == pytest.approx(expected)
    assert pinball_losses(quantiles[:, :1], actual, levels=(0.5,)) == pytest.approx([0.5 * 3.5])


def test_interval_block_shape_and_values() -> None:
    quantiles = np.array([[-2.0, -1.0, 0.0, 1.0, 2.0], [-2.0, -1.0, 0.0, 1.0, 2.0], [np.nan, -1, 0, 1, 2]])
    actual = np.array([0.5, 1.5, 0.0])
    block = interval_block(quantiles, actual)
    assert tuple(block) == INTERVAL_METRIC_KEYS
    assert block["n"] == 2
    assert block["coverage_80"] == pytest.approx(0.5)
    assert block["coverage_95"] == pytest.approx(1.0)
    assert block["width_80"] == pytest.approx(2.0)
    assert block["width_95"] == pytest.approx(4.0)
    assert block["winkler_80"] == pytest.approx((2.0 + 2.0 + 10 * 0.5) / 2)
    assert block["winkler_95"] == pytest.approx(4.0)
    assert block["pinball"] == pytest.approx(np.mean(pinball_losses(quantiles[:2], actual[:2])))
    assert all(isinstance(value, float) for key, value in block.items() if key != "n")
    empty = interval_block(np.full((1, 5), np.nan), np.array([0.0]))
    assert empty["n"] == 0 and empty["coverage_80"] is None and empty["pinball"] is None


def test_quantile_constants_are_consistent() -> None:
    assert tuple(sorted(QUANTILES)) == QUANTILES
    for level, (low, high) in INTERVALS.items():
        assert high - low == pytest.approx(level / 100)
        assert MISCOVERAGE[level] == pytest.approx(1 - level / 100)


def test_sort_quantiles_monotone() -> None:
    crossed = np.array([[0.3, 0.1, 0.2, 0.5, 0.4], [1.0, 2.0, 3.0, 4.0, 5.0], [np.nan, 2.0, 1.0, 4.0, 5.0]])
    rearranged = sort_quantiles(crossed)
    assert np.all(np.diff(rearranged[:2], axis=-1) >= 0)
    assert rearranged[0] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert rearranged[1] == pytest.approx(crossed[1])
    assert np.array_equal(rearranged[2], crossed[2], equal_nan=True)


# --- conformal and ACI ---------------------------------------------------------------------------


def test_conformal_quantile_ranks_and_edges() -> None:
    scores = conformal_scores(np.array([-0.5, 0.1, np.nan, -0.3, 0.9, 0.2, -0.7, 0.4, 0.6, -0.8]))
    assert scores == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    # n = 9: ceil(10 * 0.8) = 8 -> the 8th smallest score.
    assert conformal_quantile(scores, 0.2) == pytest.approx(0.8)
    assert conformal_quantile(scores, 0.5) == pytest.approx(0.5)
    # ceil(10 * 0.95) = 10 > 9: beyond the data, a finite 1.5 x the largest score.
    assert conformal_quantile(scores, 0.05) == pytest.approx(0.9 * 1.5)
    assert conformal_quantile(scores, -0.1) == pytest.approx(0.9 * 1.5)
    assert conformal_quantile(scores, 1.0) == 0.0
    with pytest.raises(InputDataError):
        conformal_quantile(np.array([]), 0.2)
    hw80, hw95 = half_widths(scores, 0.6, 0.9)  # levels crossed by ACI: 95% kept >= 80%
    assert hw95 >= hw80 > 0


def test_quantiles_from_halfwidths() -> None:
    q = quantiles_from_halfwidths(np.array([0.0, 0.01]), np.array([0.02, 0.01]), 1.0, 2.0)
    assert q == pytest.approx(np.array([[-0.04, -0.02, 0.0, 0.02, 0.04], [-0.01, 0.0, 0.01, 0.02, 0.03]]))
    assert quantiles_from_halfwidths(0.0, 1.0, 1.0, 2.0).shape == (1, 5)


def test_split_conformal_covers_a_student_t_process() -> None:
    rng = np.random.default_rng(11)
    df = 4
    # A model that knows mu and sigma but assumes normal errors: the true z is Student t.
    calibration_z = rng.standard_t(df, size=50_000)
    scores = conformal_scores(calibration_z)
    hw80, hw95 = half_widths(scores, MISCOVERAGE[80], MISCOVERAGE[95])
    n_test = 5_000
    mu, sigma = rng.normal(0, 0.001, n_test), rng.uniform(0.005, 0.03, n_test)
    actual = mu + sigma * rng.standard_t(df, size=n_test)
    block = interval_block(quantiles_from_halfwidths(mu, sigma, hw80, hw95), actual)
    for level in (80, 95):
        low, high = binomial_bounds(n_test, level / 100, 0.01)
        covered = block[f"coverage_{level}"]
        assert isinstance(covered, float) and low <= covered <= high
    # The normal interval it replaces is visibly miscalibrated, so the check above has power.
    gaussian = interval_block(quantiles_from_halfwidths(mu, sigma, 1.2816, 1.96), actual)
    low95, high95 = binomial_bounds(n_test, 0.95, 0.01)
    gaussian_coverage = gaussian["coverage_95"]
    assert isinstance(gaussian_coverage, float) and not low95 <= gaussian_coverage <= high95


def test_aci_update_moves_the_level() -> None:
    assert aci_update(0.05, 0.05, True, 0.01) == pytest.approx(0.05 - 0.01 * 0.95)
    assert aci_update(0.05, 0.05, False, 0.01) == pytest.approx(0.05 + 0.01 * 0.05)


def test_aci_keeps_coverage_when_volatility_doubles() -> None:
    rng = np.random.default_rng(12)
    scores = conformal_scores(rng.standard_t(5, size=2_000))  # calibrated in the calm regime
    steps, gamma = 2_000, 0.02
    # The model's sigma misses the regime change: true scale 1 then 2.
    z = rng.standard_t(5, size=steps) * np.where(np.arange(steps) < steps // 2, 1.0, 2.0)
    static_hw = half_widths(scores, MISCOVERAGE[80], MISCOVERAGE[95])
    alpha = {80: MISCOVERAGE[80], 95: MISCOVERAGE[95]}
    aci_hits = {80: 0, 95: 0}
    static_hits = {80: 0, 95: 0}
    for value in z:
        adaptive_hw = dict(zip((80, 95), half_widths(scores, alpha[80], alpha[95]), strict=True))
        for index, level in enumerate((80, 95)):
            aci_hits[level] += abs(value) <= adaptive_hw[level]
            static_hits[level] += abs(value) <= static_hw[index]
            alpha[level] = aci_update(
                alpha[level], MISCOVERAGE[level], abs(value) > adaptive_hw[level], gamma
            )
    for level in (80, 95):
        nominal = level / 100
        assert abs(aci_hits[level] / steps - nominal) <= 0.03, level
        assert abs(static_hits[level] / steps - nominal) > 0.03, level


# --- coverage on a panel: misses of one session move together ------------------------------------


def test_clustered_coverage_of_one_ticker_is_the_binomial_test() -> None:
    rng = np.random.default_rng(3)
    misses = (rng.random((60, 1)) < 0.3).astype(float)
    result = clustered_coverage_test(misses, 0.8)
    assert result.design_effect == 1.0 and result.effective_n == 60.0
    assert result.p_value == binomial_coverage_test(int(misses.sum()), 60, 0.8)


def test_perfectly_correlated_misses_are_worth_one_trial_a_session() -> None:
    bad_days = np.zeros(20)
    bad_days[[2, 5, 7, 11, 14, 17, 19]] = 1.0
    misses = np.repeat(bad_days[:, None], 4, axis=1)  # 4 tickers miss on exactly the same days
    result = clustered_coverage_test(misses, 0.8)
    assert (result.n, result.misses) == (80, 28)
    assert result.design_effect == pytest.approx(4.0) and result.effective_n == pytest.approx(20.0)
    assert result.p_value == pytest.approx(binomial_coverage_test(7, 20, 0.8))
    assert binomial_coverage_test(28, 80, 0.8) < 0.01 < result.p_value  # counted naively: "failing"


def test_independent_misses_keep_about_their_sample_size() -> None:
    rng = np.random.default_rng(11)
    misses = (rng.random((250, 4)) < 0.2).astype(float)
    result = clustered_coverage_test(misses, 0.8)
    assert 1.0 <= result.design_effect < 1.3
    assert result.p_value == pytest.approx(
        binomial_coverage_test(
            round(misses.sum() / result.design_effect), round(1000 / result.design_effect), 0.8
        )
    )


def test_a_ragged_panel_counts_only_the_forecasts_made() -> None:
    misses = np.array([[1.0, np.nan, 0.0], [0.0, 0.0, np.nan], [np.nan, np.nan, np.nan], [1.0, 1.0, 1.0]])
    result = clustered_coverage_test(misses, 0.8)
    assert (result.n, result.misses) == (7, 4)
    assert 1.0 <= result.design_effect <= 3.0 and 0.0 <= result.p_value <= 1.0
    empty = clustered_coverage_test(np.full((3, 2), np.nan), 0.8)
    assert (empty.n, empty.p_value) == (0, 1.0)


@pytest.mark.parametrize("bad", [np.array([1.0, 0.0]), np.array([[0.5, 1.0]]), np.array([[2.0, 0.0]])])
def test_clustered_coverage_rejects_what_is_not_a_panel_of_misses(bad: np.ndarray) -> None:
    with pytest.raises(InputDataError):
        clustered_coverage_test(bad, 0.8)
