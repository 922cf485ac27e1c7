"""`train` and `promote`: the paired test that decides a promotion and what each ticker is served.

The decision rules are pinned on synthetic forecasts (`decide`, `paired_test`, `select_sources` on
hand-made `WindowForecasts`), then end to end with real tiny training on a real MLflow store and a real
SQLite database (tests/served_model.py: one model trained once per session). Each end-to-end test
registers its versions under its own model name, so aliases never leak between tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select

from stockcli.config import Settings
from stockcli.db import promotions
from stockcli.db.datasets import load_built
from stockcli.db.engine import make_engine
from stockcli.db.models import Promotion, ServingSelection
from stockcli.db.serving import load_selection
from stockcli.errors import ConfigError, NoDataError, RegistryError, UsageError
from stockcli.ml import registry
from stockcli.ml.bundle import ModelBundle
from stockcli.ml.forecast import forecast_windows
from stockcli.ml.metrics import evaluate
from stockcli.services.promote import WindowForecasts, decide, paired_test, promote, select_sources
from tests.conftest import Cli
from tests.model_helpers import build_dataset, tiny_config_toml, tiny_settings
from tests.served_model import EPOCHS, World, broken_copy, own_name, register, trained_world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return trained_world(tmp_path_factory)


@pytest.fixture
def fresh(world: World) -> Settings:
    """The world's settings under a model name of its own (no versions, no alias)."""
    return own_name(world)


def promotion_row(world: World, promotion_id: int) -> Promotion:
    [row] = [p for p in promotions.list_promotions(world.engine, limit=1000) if p.id == promotion_id]
    return row


def stored_window_mae(world: World, model: Any) -> float:
    """The average MAE of `model` over the stored test windows of the world's dataset."""
    test = world.dataset.test
    result = forecast_windows(model, world.dataset.scalers, test)
    metrics = evaluate(
        tickers=test.tickers,
        dates=list(test.target_dates),
        predicted_close=result.predicted_closes,
        actual_close=test.target_closes,
        base_close=test.base_closes,
    )
    return float(metrics.average.model.mae)


# --- the decision on synthetic forecasts ---------------------------------------------------------------


class Window:
    """Two tickers over `n_days` sessions of a random walk (1% daily moves): closes, naive and truth."""

    def __init__(self, seed: int, n_days: int = 120) -> None:
        self.rng = np.random.default_rng(seed)
        tickers, dates, base, actual = [], [], [], []
        for ticker, level in (("AAA", 100.0), ("BBB", 20.0)):
            closes = level * np.exp(np.cumsum(self.rng.normal(0.0, 0.01, n_days + 1)))
            for k in range(n_days):
                tickers.append(ticker)
                dates.append(date(2020, 1, 1) + timedelta(days=k))
                base.append(closes[k])
                actual.append(closes[k + 1])
        self.tickers: list[str] = tickers
        self.dates: list[date] = dates
        self.base = np.array(base)
        self.actual = np.array(actual)
        self.rows = np.arange(len(base))

    def noisy(self, sigma: float, around: np.ndarray | None = None) -> np.ndarray:
        """Closes `around` (default: the base close) times exp(N(0, sigma))."""
        center = self.base if around is None else around
        return center * np.exp(self.rng.normal(0.0, sigma, len(center)))

    def forecasts(self, predicted: np.ndarray, sigma: float = 0.01) -> WindowForecasts:
        """Point `predicted`, quantiles of N(log predicted, sigma) at the five levels."""
        z = np.array([-1.959964, -1.281552, 0.0, 1.281552, 1.959964])
        return WindowForecasts(predicted=predicted, quantiles=predicted[:, None] * np.exp(sigma * z)[None, :])

    def test(
        self, metric: str, candidate: WindowForecasts, production: WindowForecasts, alternative: str = "less"
    ) -> Any:
        return paired_test(
            metric,
            candidate,
            production,
            rows=self.rows,
            tickers=self.tickers,
            dates=self.dates,
            actual=self.actual,
            base=self.base,
            alternative=alternative,
        )


def mae(predicted: np.ndarray, actual: np.ndarray) -> float:
    return float(np.mean(np.abs(predicted - actual)))


def decide_on(
    settings: Settings, window: Window, candidate: np.ndarray, production: np.ndarray
) -> tuple[bool, str, Any]:
    test = window.test("mae", window.forecasts(candidate), window.forecasts(production))
    promoted, reason, improvement = decide(
        settings=settings,
        metric="mae",
        candidate_version="2",
        production_version="1",
        candidate_value=mae(candidate, window.actual),
        production_value=mae(production, window.actual),
        test=test,
    )
    assert improvement == test.relative_improvement
    return promoted, reason, test


def test_a_candidate_better_only_by_noise_is_refused(make_settings: Callable[..., Settings]) -> None:
    """Production plus zero-mean noise of 5% of its error: its raw MAE is lower (+0.26%, the size of
    the promotions the issue saw won on noise), yet the paired test finds no evidence."""
    settings = make_settings()
    window = Window(seed=0)
    production = window.noisy(0.01)
    candidate = production + window.base * window.rng.normal(0.0, 0.0005, len(production))
    assert mae(candidate, window.actual) < mae(production, window.actual)

    promoted, reason, test = decide_on(settings, window, candidate, production)

    assert not promoted
    assert test.p_value > 0.1 and 0 < test.relative_improvement < 0.01
    assert test.improvement_low < 0 < test.improvement_high  # the interval straddles no change
    assert "not promoted (not significant at alpha 0.05)" in reason and f"p = {test.p_value:.3g}" in reason


def test_noise_candidates_are_refused_at_about_the_test_level(make_settings: Callable[..., Settings]) -> None:
    """Forty noise candidates: a raw MAE comparison promotes about half of them, the paired test at
    most the few its 5% level allows."""
    settings = make_settings()
    raw_wins = promoted = 0
    for seed in range(40):
        window = Window(seed=seed, n_days=60)
        production = window.noisy(0.01)
        candidate = production + window.base * window.rng.normal(0.0, 0.0005, len(production))
        raw_wins += mae(candidate, window.actual) < mae(production, window.actual)
        promoted += decide_on(settings, window, candidate, production)[0]
    assert raw_wins >= 12
    assert promoted <= 4


def test_a_clearly_better_candidate_is_promoted(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    window = Window(seed=1)
    production = window.noisy(0.01)
    candidate = window.noisy(0.002, around=window.actual)  # close to what really happened

    promoted, reason, test = decide_on(settings, window, candidate, production)

    assert promoted and reason.startswith("The candidate is significantly better")
    assert test.p_value < 1e-6 and test.relative_improvement > 0.5
    assert 0 < test.improvement_low <= test.relative_improvement <= test.improvement_high
    assert test.n_sessions == 120 and test.n_tickers == 2


def test_min_improvement_refuses_a_significant_but_tiny_gain(make_settings: Callable[..., Settings]) -> None:
    """Every error 1% smaller: certain, but below a 5% minimum effect; above a 0.5% one."""
    window = Window(seed=2)
    production = window.noisy(0.01)
    candidate = production + 0.01 * (window.actual - production)

    strict = make_settings(promotion={"min_improvement": 0.05})
    promoted, reason, test = decide_on(strict, window, candidate, production)
    assert test.p_value < 1e-6 and test.relative_improvement == pytest.approx(0.01)
    assert not promoted and "below the minimum improvement of 5.00%" in reason

    lenient = make_settings(promotion={"min_improvement": 0.005})
    assert decide_on(lenient, window, candidate, production)[0]


def test_decide_without_production_or_against_itself(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    first = decide(
        settings=settings,
        metric="mae",
        candidate_version="1",
        production_version=None,
        candidate_value=1.0,
        production_value=None,
        test=None,
    )
    assert first == (True, "No production model yet: promoting the candidate.", None)
    same = decide(
        settings=settings,
        metric="mae",
        candidate_version="3",
        production_version="3",
        candidate_value=1.0,
        production_value=1.0,
        test=None,
    )
    assert not same[0] and "already is Production" in same[1]


def test_an_interval_metric_is_tested_on_its_own_losses(make_settings: Callable[..., Settings]) -> None:
    """`[promotion] metric = "pinball"`: the same point forecast, intervals of the right width
    against intervals five times too wide."""
    window = Window(seed=3)
    point = window.base.copy()
    calibrated, too_wide = window.forecasts(point, 0.01), window.forecasts(point, 0.05)
    assert window.test("mae", calibrated, too_wide).p_value == 1.0  # no difference in the points
    test = window.test("pinball", calibrated, too_wide)
    assert test.p_value < 1e-6 and test.relative_improvement > 0.3
    assert window.test("winkler_95", too_wide, calibrated).p_value > 0.99


def test_each_ticker_serves_the_model_only_where_it_beats_naive(
    make_settings: Callable[..., Settings],
) -> None:
    """AAA: the model is close to the truth (point and intervals beat naive and GARCH). BBB: the model
    is worse than naive and its intervals worse than GARCH's: naive and GARCH are served for it."""
    window = Window(seed=4)
    tickers = np.array(window.tickers)
    good = window.noisy(0.001, around=window.actual)
    bad = window.noisy(0.03)
    predicted = np.where(tickers == "AAA", good, bad)
    sigma = np.where(tickers == "AAA", 0.002, 0.08)
    z = np.array([-1.959964, -1.281552, 0.0, 1.281552, 1.959964])
    fc = WindowForecasts(
        predicted=predicted, quantiles=predicted[:, None] * np.exp(sigma[:, None] * z[None, :])
    )
    garch = window.base[:, None] * np.exp(0.01 * z)[None, :]  # the true spread around no change
    up = window.actual > window.base
    coin = np.random.default_rng(9).uniform(0.3, 0.7, len(tickers))
    knows = np.where(up, 0.8, 0.2) + np.random.default_rng(10).uniform(-0.1, 0.1, len(tickers))
    p_up = np.where(tickers == "AAA", knows, coin)

    chosen = select_sources(
        fc,
        rows=window.rows,
        tickers=window.tickers,
        dates=window.dates,
        actual=window.actual,
        base=window.base,
        candidates={"garch": garch, "network": fc.quantiles},
        p_ups={"network": p_up},
        base_rate=np.full(len(tickers), 0.5),
        incumbent="garch",
        interval_metric="pinball",
        alpha=0.05,
        window=(window.dates[0], window.dates[-1]),
    )

    by_ticker = {item.ticker: item for item in chosen}
    # P(up): AAA's model knows the direction, BBB's is a coin: only AAA's beats the base rate.
    assert (by_ticker["AAA"].p_up_source, by_ticker["BBB"].p_up_source) == ("network", "base_rate")
    assert by_ticker["AAA"].p_up_p_value < 0.05 < by_ticker["BBB"].p_up_p_value
    # The pooled choice comes first: each ticker's challengers face it (here GARCH: the network's
    # intervals are far worse on BBB than better on AAA).
    assert list(by_ticker) == ["*", "AAA", "BBB"] and by_ticker["*"].interval_source == "garch"
    aaa, bbb = by_ticker["AAA"], by_ticker["BBB"]
    assert (aaa.point_source, aaa.interval_source) == ("model", "network")
    assert aaa.point_p_value < 0.05 and aaa.point_skill > 0.5 and aaa.interval_p_value < 0.05
    assert (bbb.point_source, bbb.interval_source) == ("naive", "garch")
    # The incumbent kept: its skill against itself is 0, the p-value the closest challenger's (the network).
    assert bbb.point_p_value > 0.5 and bbb.point_skill < 0 and bbb.interval_skill == 0.0
    assert bbb.interval_p_value is not None and bbb.interval_p_value > 0.5
    for item in chosen:
        assert (item.window_start, item.window_end, item.n_sessions) == (
            window.dates[0],
            window.dates[-1],
            120,
        )


# --- train ----------------------------------------------------------------------------------------------


def test_train_registers_a_version_and_never_moves_production(world: World) -> None:
    trained = world.trained
    assert registry.resolve_alias(world.settings) == world.placeholder_version
    assert int(trained.model_version) == int(world.placeholder_version) + 1
    assert trained.dataset_run_id == world.dataset.run_id
    assert trained.params_source == "config" and trained.params["hidden_size"] == 8
    assert 1 <= trained.best_epoch <= trained.epochs_run <= EPOCHS
    test = world.dataset.test
    assert trained.n_test == len(test)
    assert (trained.test_start, trained.test_end) == (test.target_dates[0], test.target_dates[-1])
    for block in [*trained.test_metrics.tickers.values(), trained.test_metrics.average]:
        assert (
            set(block.model.to_json())
            == set(block.naive.to_json())
            == {"mae", "rmse", "mape", "directional_accuracy"}
        )
        intervals = block.intervals
        assert intervals is not None and 0.0 <= intervals.coverage_80 <= intervals.coverage_95 <= 1.0
        assert set(block.baselines) == {"rolling", "garch", "gjr", "har_range", "blend"}
    for ticker, block in trained.test_metrics.tickers.items():
        assert block.skill == pytest.approx(1 - block.model.mae / block.naive.mae)
        assert (ticker in trained.worse_than_naive) == (block.model.mae > block.naive.mae)
    # The registered version predicts exactly what training evaluated.
    assert stored_window_mae(world, world.good.model) == pytest.approx(
        trained.test_metrics.average.model.mae, rel=1e-9
    )
    # Its intervals were calibrated on the validation split and its GARCH fit on the training dates.
    assert world.good.calibration["fit_on"] == "validation" and world.good.calibration["scores"]["*"]
    assert set(world.good.baselines["fits"]["garch"]) == {"GOOG", "MSFT"}
    assert set(world.good.baselines["fits"]["har_range"]) == {"GOOG", "MSFT"}
    assert world.good.baselines["fit_through"] == world.dataset.split["train"]["last_target_date"]
    assert world.good.dataset_run_id == world.dataset.run_id and world.good.spec == world.dataset.spec


def test_train_logs_params_epoch_losses_metrics_plots_and_spec_to_mlflow(world: World) -> None:
    trained = world.trained
    client = registry.client(world.settings)
    run = client.get_run(trained.mlflow_run_id)
    params = run.data.params
    assert params["dataset_run_id"] == world.dataset.run_id
    assert params["seed"] == "42" and params["code_version"].startswith("0.1.0")
    for name in ("model_type", "hidden_size", "num_layers", "dropout", "learning_rate", "batch_size"):
        assert name in params
    history = client.get_metric_history(trained.mlflow_run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, trained.epochs_run + 1))
    metrics = run.data.metrics
    assert metrics["test.avg.mae"] == pytest.approx(trained.test_metrics.average.model.mae)
    assert metrics["test.avg.naive_mae"] == pytest.approx(trained.test_metrics.average.naive.mae)
    assert "test.GOOG.skill" in metrics
    artifacts = {a.path for a in client.list_artifacts(trained.mlflow_run_id)}
    assert {"plots", "dataset_spec.json", "model"} <= artifacts
    plots = {a.path for a in client.list_artifacts(trained.mlflow_run_id, "plots")}
    assert plots == {"plots/test_GOOG.png", "plots/test_MSFT.png"}
    local = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (local / "plots" / "test_GOOG.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((local / "dataset_spec.json").read_text())["spec"] == world.dataset.spec.to_json()
    assert run.info.status == "FINISHED"


# --- promote end to end -------------------------------------------------------------------------------


def test_a_candidate_that_wins_on_the_same_window_is_promoted(world: World, fresh: Settings) -> None:
    broken = broken_copy(world.good.model)
    production = register(fresh, world.good, broken)
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good)

    result = promote(settings=fresh, engine=world.engine, pipeline_run_id=None)

    assert result.candidate_version == candidate and result.production_version == production
    assert result.promoted and result.would_promote and not result.dry_run
    assert registry.resolve_alias(fresh) == candidate
    test = world.dataset.test
    assert (result.window_start, result.window_end, result.n_days) == (
        test.target_dates[0],
        test.target_dates[-1],
        len(set(test.target_dates)),
    )
    assert result.tickers == ("GOOG", "MSFT") and result.dataset_run_id == world.dataset.run_id
    # Production was re-evaluated from raw bars on exactly the candidate's window: its MAE equals the
    # broken model's on the candidate's stored test windows.
    assert result.production_value == pytest.approx(stored_window_mae(world, broken), rel=1e-6)
    assert result.candidate_value == pytest.approx(world.trained.test_metrics.average.model.mae)
    assert result.candidate_value < result.production_value
    # The decision is the paired test's, with its p-value and the improvement's interval.
    assert result.p_value is not None and result.p_value < fresh.promotion.alpha
    assert result.improvement is not None and result.improvement_low is not None
    assert 0 < result.improvement_low <= result.improvement <= result.improvement_high
    assert "significantly better" in result.reason and "Diebold-Mariano" in result.reason

    row = promotion_row(world, result.promotion_id)
    assert row.promoted and not row.dry_run
    assert (row.candidate_version, row.production_version, row.metric) == (candidate, production, "mae")
    assert row.test == "diebold-mariano (HAC), one-sided"
    assert (row.p_value, row.improvement, row.improvement_low, row.improvement_high) == pytest.approx(
        (result.p_value, result.improvement, result.improvement_low, result.improvement_high)
    )
    assert row.production_metrics is not None
    assert row.production_metrics["average"]["model"]["mae"] == pytest.approx(result.production_value)
    assert row.naive_metrics["average"]["mae"] == pytest.approx(world.trained.test_metrics.average.naive.mae)
    assert (row.window_start, row.window_end) == (test.target_dates[0], test.target_dates[-1])
    assert row.reason == result.reason
    # What the promoted version serves per ticker, decided on the same window, stored for `predict`.
    assert set(result.selection) == {"GOOG", "MSFT", "*"} and result.selection_version == candidate
    assert row.selection == {"version": candidate, "tickers": result.selection}
    served = load_selection(world.engine, candidate)
    assert set(served) == {"GOOG", "MSFT", "*"}
    for ticker, item in served.items():
        chosen = result.selection[ticker]
        assert (item.point_source, item.interval_source) == (
            chosen["point_source"],
            chosen["interval_source"],
        )
        assert item.point_p_value == pytest.approx(chosen["point_p_value"])
        assert item.point_source == ("model" if item.point_p_value < fresh.promotion.alpha else "naive")
        assert item.n_sessions == result.n_days


def test_a_candidate_that_loses_is_not_promoted(world: World, fresh: Settings) -> None:
    production = register(fresh, world.good)
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good, broken_copy(world.good.model))

    result = promote(settings=fresh, engine=world.engine)

    assert not result.promoted and not result.would_promote
    assert registry.resolve_alias(fresh) == production
    assert result.candidate_value > result.production_value
    assert result.p_value is not None and result.p_value > 0.5 and result.improvement < 0
    assert "not promoted (not significant" in result.reason
    row = promotion_row(world, result.promotion_id)
    assert not row.promoted and row.candidate_version == candidate and row.production_version == production
    assert row.p_value == pytest.approx(result.p_value)
    # The selection recorded is that of the version that keeps serving: Production.
    assert result.selection_version == production and row.selection["version"] == production

    # The same weights again are not better either: no difference, no evidence.
    same = register(fresh, world.good)
    tie = promote(settings=fresh, engine=world.engine, version=same)
    assert not tie.promoted and tie.improvement == pytest.approx(0.0) and tie.p_value == 1.0
    assert registry.resolve_alias(fresh) == production
    again = promote(settings=fresh, engine=world.engine, version=production)
    assert not again.promoted and "already is Production" in again.reason


def test_no_production_promotes_without_a_test(world: World, fresh: Settings) -> None:
    broken = register(fresh, world.good, broken_copy(world.good.model))
    accepted = promote(settings=fresh, engine=world.engine)
    assert accepted.promoted and "no production model" in accepted.reason.lower()
    assert accepted.production_metrics is None and registry.resolve_alias(fresh) == broken
    assert accepted.p_value is None and accepted.improvement is None
    row = promotion_row(world, accepted.promotion_id)
    assert row.promoted and row.production_version is None and row.production_metrics is None
    assert row.test is None and row.p_value is None
    # Even a first model serves its forecast only where it beat naive: the broken one nowhere.
    assert {item["point_source"] for item in accepted.selection.values()} == {"naive"}


def test_dry_run_records_the_decision_and_moves_nothing(world: World, fresh: Settings) -> None:
    production = register(fresh, world.good, broken_copy(world.good.model))
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good)
    with world.engine.begin() as connection:
        connection.execute(delete(ServingSelection).where(ServingSelection.model_version == candidate))

    result = promote(settings=fresh, engine=world.engine, dry_run=True)

    assert result.would_promote and not result.promoted and result.dry_run
    assert result.reason.startswith("Dry run, nothing moved: would promote")
    assert registry.resolve_alias(fresh) == production
    row = promotion_row(world, result.promotion_id)
    assert row.dry_run and not row.promoted and row.p_value == pytest.approx(result.p_value)
    assert load_selection(world.engine, candidate) == {}  # nothing is served from a dry run


def test_production_from_another_dataset_is_reevaluated_with_its_own_spec(
    world: World, fresh: Settings
) -> None:
    """Production was trained on a dataset with other indicators and window length; the comparison
    still happens on the candidate's test window, with production's own features and scalers."""
    import torch

    from stockcli.ml.networks import model_config
    from tests.model_helpers import build_model

    other_settings = tiny_settings(
        world.data_dir,
        features={"indicators": [{"name": "rsi", "window": 7}, {"name": "log_return"}]},
        dataset={"sequence_length": 6},
    )
    other = load_built(world.engine, build_dataset(other_settings, world.engine))
    assert other.spec.feature_names != world.dataset.spec.feature_names
    torch.manual_seed(1)
    n_features = int(other.train.n_features)
    kwargs = {
        "n_features": n_features,
        "n_own_features": n_features,
        "hidden_size": 8,
        "num_layers": 1,
        "dropout": 0.0,
        "num_heads": 2,
    }
    other_bundle = ModelBundle(
        model=build_model("lstm", **kwargs).eval(),
        model_config=model_config("lstm", **kwargs),
        spec=other.spec,
        scalers=other.scalers,
        tickers=other.tickers,
        sequence_length=other.sequence_length,
        target_kind=other.target_kind,
        dataset_run_id=other.run_id,
    )
    production = register(fresh, other_bundle)
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good)

    result = promote(settings=fresh, engine=world.engine, dry_run=True)
    assert result.candidate_version == candidate and result.production_version == production

    # What production predicts on those days from its own dataset's stored windows:
    own: dict[tuple[date, str], float] = {}
    for part in (other.train, other.validation, other.test):
        forecast = forecast_windows(other_bundle.model, other.scalers, part)
        own.update(
            zip(zip(part.base_dates, part.tickers, strict=True), forecast.predicted_closes, strict=True)
        )
    test = world.dataset.test
    predicted = np.array([own[(d, t)] for d, t in zip(test.base_dates, test.tickers, strict=True)])
    expected = evaluate(
        tickers=test.tickers,
        dates=list(test.target_dates),
        predicted_close=predicted,
        actual_close=test.target_closes,
        base_close=test.base_closes,
    )
    assert result.production_value == pytest.approx(expected.average.model.mae, rel=1e-5)


def test_failed_alias_move_leaves_production_and_says_so(
    world: World, fresh: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    production = register(fresh, world.good, broken_copy(world.good.model))
    registry.set_production(fresh, production)
    register(fresh, world.good)

    def locked(*args: object, **kwargs: object) -> None:
        raise MlflowException("database is locked")

    monkeypatch.setattr(registry.client(fresh), "set_registered_model_alias", locked)
    with pytest.raises(RegistryError) as caught:
        promote(settings=fresh, engine=world.engine)
    monkeypatch.undo()
    assert "Another process holds" in (caught.value.hint or "")
    assert registry.resolve_alias(fresh) == production
    newest = promotions.list_promotions(world.engine, limit=1)[0]
    assert not newest.promoted and "NOT moved" in newest.reason and newest.production_version == production


def test_promote_takes_the_run_lock_unless_the_caller_holds_it(world: World, fresh: Settings) -> None:
    from stockcli.db.lock import run_lock
    from stockcli.errors import LockHeldError

    candidate = register(fresh, world.good)
    with run_lock(world.engine, fresh.data_dir / "stockcli.lock", "daily"):
        with pytest.raises(LockHeldError, match="stockcli daily"):
            promote(settings=fresh, engine=world.engine, run_lock_held=False)
        assert registry.resolve_alias(fresh) is None
    result = promote(settings=fresh, engine=world.engine, run_lock_held=False)
    assert result.promoted and registry.resolve_alias(fresh) == candidate


def test_unreachable_registry_fails_before_any_decision(world: World, tmp_path: Path) -> None:
    from stockcli.services.train import train

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    unreachable = world.settings.replace(mlflow={"tracking_uri": f"sqlite:///{blocker / 'mlflow.db'}"})
    before = len(promotions.list_promotions(world.engine, limit=10_000))
    with pytest.raises(ConfigError, match="is a file, not a folder") as caught:
        promote(settings=unreachable, engine=world.engine)
    assert caught.value.exit_code == 2
    with pytest.raises(ConfigError):
        train(settings=unreachable, engine=world.engine, run_id=world.dataset.run_id, epochs=1)
    assert len(promotions.list_promotions(world.engine, limit=10_000)) == before
    assert registry.resolve_alias(world.settings) == world.placeholder_version


def test_unknown_version_and_empty_registry(world: World, fresh: Settings) -> None:
    with pytest.raises(NoDataError, match="No registered model version"):
        promote(settings=fresh, engine=world.engine)
    register(fresh, world.good)
    with pytest.raises(UsageError, match="no version 99") as caught:
        promote(settings=fresh, engine=world.engine, version="99")
    assert caught.value.exit_code == 2


# --- the promotions table on both databases ----------------------------------------------------------


def test_promotions_table_round_trip(database_url: str) -> None:
    from stockcli.db.engine import upgrade_schema

    engine = make_engine(database_url)
    upgrade_schema(engine)
    common: dict[str, Any] = {
        "candidate_version": "2",
        "production_version": "1",
        "metric": "mae",
        "candidate_metrics": {"average": {"model": {"mae": 1.0}}},
        "production_metrics": {"average": {"model": {"mae": 2.0}}},
        "naive_metrics": {"average": {"mae": 1.5}},
        "window_start": date(2012, 11, 29),
        "window_end": date(2013, 3, 1),
        "dataset_run_id": "ds-x",
    }
    tested: dict[str, Any] = {
        "test": "diebold-mariano (HAC), one-sided",
        "p_value": 0.0123,
        "improvement": 0.5,
        "improvement_low": 0.25,
        "improvement_high": 0.75,
        "selection": {"version": "2", "tickers": {"GOOG": {"point_source": "naive", "point_p_value": 0.4}}},
    }
    first = promotions.record_decision(
        engine, **common, **tested, promoted=True, dry_run=False, reason="better"
    )
    promotions.record_decision(engine, **common, promoted=False, dry_run=True, reason="dry")
    assert [p.reason for p in promotions.list_promotions(engine)] == ["dry", "better"]
    assert [p.reason for p in promotions.list_promotions(engine, include_dry_runs=False)] == ["better"]

    def last_promotion() -> Any:  # the newest decision that really moved the alias
        return next(
            (p for p in promotions.list_promotions(engine, include_dry_runs=False) if p.promoted), None
        )

    last = last_promotion()
    assert last is not None and last.id == first and last.candidate_metrics["average"]["model"]["mae"] == 1.0
    assert {key: getattr(last, key) for key in tested} == tested
    assert (last.window_start, last.window_end) == (date(2012, 11, 29), date(2013, 3, 1))
    dry = promotions.list_promotions(engine)[0]
    assert (dry.test, dry.p_value, dry.improvement, dry.selection) == (None, None, None, None)
    promotions.mark_outcome(engine, first, promoted=False, reason="alias failed")
    assert last_promotion() is None
    engine.dispose()


# --- the CLI ------------------------------------------------------------------------------------------


@pytest.fixture
def model_cli(world: World, fresh: Settings, tmp_path: Path) -> Cli:
    config = tmp_path / "config.toml"
    config.write_text(tiny_config_toml(world.data_dir, fresh.mlflow.model_name), encoding="utf-8")
    return Cli(config)


def test_cli_promote_shows_the_test_and_models_lists_versions(
    world: World, fresh: Settings, model_cli: Cli
) -> None:
    production = register(fresh, world.good, broken_copy(world.good.model))
    registry.set_production(fresh, production)
    candidate = register(fresh, world.good)

    decided = model_cli("--json", "promote", "--dry-run")
    assert decided.exit_code == 0, decided.output
    payload = json.loads(decided.stdout)
    decision = payload["decision"]
    assert decision["would_promote"] and not decision["promoted"] and decision["dry_run"]
    assert 0 <= decision["p_value"] < decision["alpha"] == 0.05
    low, high = decision["improvement_ci"]
    assert 0 < low <= decision["improvement"] <= high
    assert "Diebold-Mariano" in decision["test"]
    assert payload["production"]["version"] == production and payload["candidate"]["version"] == candidate
    assert set(payload["naive"]["average"]) == {"mae", "rmse", "mape", "directional_accuracy"}
    assert payload["window"]["n_days"] == len(set(world.dataset.test.target_dates))
    assert set(payload["selection"]["tickers"]) == {"GOOG", "MSFT", "*"}
    with world.engine.connect() as connection:
        ledger, p_value = connection.execute(
            select(Promotion.pipeline_run_id, Promotion.p_value).where(
                Promotion.id == decision["promotion_id"]
            )
        ).one()
    assert ledger is not None and p_value == pytest.approx(decision["p_value"])

    promoted = model_cli("promote")
    assert promoted.exit_code == 0, promoted.output
    assert "Promoted" in promoted.output and "significantly better" in promoted.output
    assert registry.resolve_alias(fresh) == candidate

    listed = model_cli("models")
    assert listed.exit_code == 0 and "Production" in listed.output
    as_json = json.loads(model_cli("models", "--json").stdout)
    assert [(v["version"], v["aliases"]) for v in as_json["versions"]][:2] == [
        (candidate, ["Production"]),
        (production, []),
    ]

    unknown = model_cli("promote", "--version", "99")
    assert unknown.exit_code == 2 and "no version 99" in unknown.output


def test_cli_promote_with_nothing_registered_exits_4(model_cli: Cli) -> None:
    result = model_cli("promote")
    assert result.exit_code == 4
    assert "No registered model version" in result.output and "stockcli train" in result.output


def test_a_retrain_is_judged_on_the_metric_it_was_asked_for(make_settings: Callable[..., Settings]) -> None:
    """Coverage retrains are judged on the interval score, skill retrains on the point metric; the
    other kind is the guard the candidate must not be significantly worse on."""
    from stockcli.services.promote import judging_metrics

    settings = make_settings()
    assert judging_metrics(settings, "point") == ("mae", "pinball")
    assert judging_metrics(settings, "interval") == ("pinball", "mae")
    winkler = make_settings(promotion={"metric": "winkler_95"}, forecasters={"metric": "pinball"})
    assert judging_metrics(winkler, "interval") == ("winkler_95", "mae")
    assert judging_metrics(winkler, "point") == ("winkler_95", "mae")


def test_a_candidate_significantly_worse_on_the_other_metric_is_not_promoted(
    make_settings: Callable[..., Settings],
) -> None:
    """Better points but intervals far too wide: the point test passes, the interval guard vetoes."""
    window = Window(seed=5)
    settings = make_settings()
    candidate = window.noisy(0.001, around=window.actual)  # near the truth
    production = window.base.copy()  # the last close
    better = window.test("mae", window.forecasts(candidate), window.forecasts(production))
    wide, calibrated = window.forecasts(candidate, 0.2), window.forecasts(production, 0.01)
    worse = window.test("pinball", wide, calibrated, alternative="greater")
    assert better.p_value < 0.05 and worse.p_value < 0.05
    common = {
        "settings": settings,
        "metric": "mae",
        "candidate_version": "2",
        "production_version": "1",
        "candidate_value": mae(candidate, window.actual),
        "production_value": mae(production, window.actual),
        "test": better,
    }
    assert decide(**common)[0]
    promoted, reason, _ = decide(**common, guard=("pinball", worse))
    assert not promoted and "significantly worse on PINBALL" in reason
    fine = window.test("pinball", calibrated, calibrated, alternative="greater")
    assert decide(**common, guard=("pinball", fine))[0]
