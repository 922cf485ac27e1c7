"""Prediction per ticker with a real tiny model, on SQLite and PostgreSQL.

The model (tests/served_model.py: GOOG and MSFT, trained once per session) is registered as
Production under a model name of this module. Each test stores the real sample bars of GOOG and MSFT
in its own database, plus copies of them under other names: a stale ticker (its newest bar one
session old), a delisted one (bars ending months ago), a young one, one the model never saw, and a
ticker without bars. What is served per ticker is stored in `serving_selection` as `promote` would
have decided it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine

from stockcli.clock import trading_calendar
from stockcli.config import Settings
from stockcli.db.engine import make_engine, open_database
from stockcli.db.models import ForecasterFit, HorizonPrediction, IntervalState, LatestPrediction, RawStockData
from stockcli.db.predictions import QUANTILE_PRICES
from stockcli.db.serving import Selection, load_interval_state, save_selection
from stockcli.ml.bundle import ModelBundle
from stockcli.services.predict import Horizon, Prediction, PredictResult, exit_code_for, predict
from tests.conftest import Cli
from tests.served_model import World, copy_bars, fetch_sample, own_name, register, trained_world

AS_OF = date(2013, 3, 1)  # a Friday: the sample's last session; predictions target Monday 03-04
WATCHLIST = ["GOOG", "MSFT", "STALE", "NOBARS", "GONE", "NEWCO", "YOUNG"]
INTERVAL_KEYS = {
    "lower_80",
    "upper_80",
    "lower_95",
    "upper_95",
    "p_up",
    "source",
    "interval_source",
    "unseen",
}
CALENDAR = trading_calendar("XNYS")


@dataclasses.dataclass(frozen=True)
class Served:
    settings: Settings  # the world's data dir and MLflow store; Production = `version` of its own name
    version: str
    bundle: ModelBundle


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    from stockcli.ml import registry

    world: World = trained_world(tmp_path_factory)
    settings = own_name(world, "served")
    version = register(settings, world.good)
    registry.set_production(settings, version)
    return Served(settings, version, registry.load_bundle(settings, version))


@pytest.fixture
def db(served: Served, database_url: str, tmp_path: Path) -> Iterator[tuple[Settings, Engine]]:
    """The served model's settings on this test's own database, holding the real GOOG and MSFT bars."""
    (tmp_path / "data").mkdir(exist_ok=True)  # the SQLite file's folder (outside the shared data dir)
    settings = served.settings.replace(storage={"database_url": database_url}, data={"tickers": WATCHLIST})
    engine = open_database(settings)
    fetch_sample(settings, engine)
    yield settings, engine
    engine.dispose()


def trained_through(bundle: ModelBundle, day: date) -> ModelBundle:
    """The served model as if its dataset ended on `day` (it ends on 2013-03-01): predictions from
    `day` on are live, not inside its training data."""
    return dataclasses.replace(bundle, spec=dataclasses.replace(bundle.spec, end_date=day))


def selection(ticker: str, point: str, point_p: float, interval: str, interval_p: float = 0.01) -> Selection:
    return Selection(
        ticker=ticker,
        point_source=point,
        point_p_value=point_p,
        point_skill=0.01 if point == "model" else -0.01,
        interval_source=interval,
        interval_p_value=interval_p,
        interval_skill=None,
        window_start=date(2012, 11, 29),
        window_end=AS_OF,
        n_sessions=63,
    )


def stored(engine: Engine) -> dict[tuple[str, date], Any]:
    with engine.connect() as connection:
        rows = connection.execute(select(LatestPrediction)).mappings().all()
    return {(row["ticker"], row["target_date"]): row for row in rows}


def assert_ordered(p: Any) -> None:
    """lower_95 <= lower_80 <= median <= upper_80 <= upper_95, all finite and positive; 0 < p_up < 1."""
    values = [p["lower_95"], p["lower_80"], p["median"], p["upper_80"], p["upper_95"]]
    assert all(isinstance(v, float) and math.isfinite(v) and v > 0 for v in values), p
    assert values == sorted(values), p
    assert values[0] < values[-1], p  # a real interval, not a point
    assert 0.0 < p["p_up"] < 1.0, p


def config_for(tmp_path: Path, settings: Settings, tickers: list[str]) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(
        f"""
[storage]
data_dir = "{settings.data_dir}"
database_url = "{settings.database_url}"
[data]
tickers = {json.dumps(tickers)}
start = 2011-06-01
[mlflow]
model_name = "{settings.mlflow.model_name}"
""",
        encoding="utf-8",
    )
    return path


# --- per ticker ---------------------------------------------------------------------------------------


def test_each_ticker_is_predicted_or_reported_on_its_own(
    served: Served, db: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, engine = db
    copy_bars(engine, source="MSFT", name="STALE", factor=2.0, end=date(2013, 2, 28))  # one session old
    copy_bars(engine, source="GOOG", name="GONE", factor=0.3, end=date(2012, 10, 31))  # delisted months ago
    copy_bars(engine, source="GOOG", name="NEWCO", factor=0.05)  # a full history the model never saw
    young = copy_bars(engine, source="MSFT", name="YOUNG", factor=3.0, start=date(2013, 1, 29))
    save_selection(
        engine,
        model_version=served.version,
        selections=[
            selection("GOOG", "naive", 0.31, "garch"),
            selection("MSFT", "model", 0.004, "network", 0.01),
            selection("*", "model", 0.02, "garch"),
        ],
        promotion_id=None,
    )
    cli = Cli(config_for(tmp_path, settings, WATCHLIST))

    result = cli("--as-of", AS_OF.isoformat(), "--json", "predict")

    assert result.exit_code == 3, result.output  # partial: some failed, the rest was saved
    payload = json.loads(result.stdout)
    assert payload["model_version"] == served.version and payload["target_date"] == "2013-03-04"
    by_ticker = {p["ticker"]: p for p in payload["predictions"]}
    assert list(by_ticker) == ["GOOG", "MSFT", "NEWCO"]  # watchlist order
    failed = {f["ticker"]: f for f in payload["failed"]}
    assert list(failed) == ["STALE", "NOBARS", "GONE", "YOUNG"]
    assert failed["STALE"]["kind"] == "stale" and "2013-02-28" in failed["STALE"]["reason"]
    assert failed["NOBARS"]["kind"] == "no_bars"
    assert failed["GONE"]["kind"] == "stale" and "2012-10-31" in failed["GONE"]["reason"]
    assert failed["YOUNG"]["kind"] == "too_little_history"
    predictable_from = date.fromisoformat(failed["YOUNG"]["predictable_from"])
    assert predictable_from > AS_OF and CALENDAR.sessions(predictable_from, predictable_from) == [
        predictable_from
    ]
    assert predictable_from.isoformat() in failed["YOUNG"]["reason"] and len(young) == 23
    # Its first window needs the indicators' warm-up plus a full window of its own bars.
    first_window = served.bundle.spec.warmup_sessions + served.bundle.sequence_length
    assert predictable_from == CALENDAR.sessions(young[0], date(2013, 6, 28))[first_window - 1]
    assert all(f["predictable_from"] is None for t, f in failed.items() if t != "YOUNG")

    for prediction in by_ticker.values():
        assert set(prediction) >= INTERVAL_KEYS
        assert (prediction["base_date"], prediction["target_date"]) == ("2013-03-01", "2013-03-04")
        assert_ordered(prediction)
    # The model's forecast is served only where it was shown to beat naive; naive elsewhere, with the p-value.
    goog, msft, newco = by_ticker["GOOG"], by_ticker["MSFT"], by_ticker["NEWCO"]
    assert goog["source"] == "naive" and goog["p_value"] == pytest.approx(0.31)
    assert goog["predicted_close"] == goog["base_close"] and goog["change_pct"] == 0.0
    assert goog["interval_source"] == "garch"
    assert msft["source"] == "model" and msft["p_value"] == pytest.approx(0.004)
    assert msft["interval_source"] == "network" and msft["interval_p_value"] == pytest.approx(0.01)
    assert msft["predicted_close"] != msft["base_close"]
    # A ticker added to the config is served by the current Production with the pooled decision.
    assert newco["unseen"] is True and goog["unseen"] is False and msft["unseen"] is False
    assert newco["source"] == "model" and newco["p_value"] == pytest.approx(0.02)
    # It has no GARCH parameters (none fitted on its training dates), and the daily path never fits
    # them: the pooled decision's GARCH interval falls back to the rolling band.
    assert newco["interval_source"] == "rolling"
    assert newco["base_close"] == pytest.approx(0.05 * goog["base_close"])

    rows = stored(engine)
    assert set(rows) == {(t, date(2013, 3, 4)) for t in ("GOOG", "MSFT", "NEWCO")}  # nothing for the failed
    for ticker, prediction in by_ticker.items():
        row = rows[(ticker, date(2013, 3, 4))]
        assert row["model_version"] == served.version and row["base_date"] == AS_OF
        assert [row[c] for c in ("q025", "q10", "q50", "q90", "q975")] == [
            prediction[k] for k in ("lower_95", "lower_80", "median", "upper_80", "upper_95")
        ]
        assert (row["p_up"], row["source"], row["interval_source"], row["unseen"]) == (
            prediction["p_up"],
            prediction["source"],
            prediction["interval_source"],
            prediction["unseen"],
        )
        assert row["predicted_close"] == prediction["predicted_close"]
    # The model's own forecast is kept beside what was served: MSFT serves it, GOOG does not.
    assert rows[("MSFT", date(2013, 3, 4))]["detail"]["model"]["predicted_close"] == msft["predicted_close"]
    assert rows[("GOOG", date(2013, 3, 4))]["detail"]["model"]["predicted_close"] != goog["predicted_close"]

    table = cli("--as-of", AS_OF.isoformat(), "predict")
    assert table.exit_code == 3
    assert "no prediction for STALE" in table.output and "unseen" in table.output


def test_a_young_ticker_is_reported_with_the_first_session_it_becomes_predictable(
    served: Served, db: tuple[Settings, Engine]
) -> None:
    """Listed on 2013-01-16. Every session until its first window is complete (the indicators'
    warm-up, then a full window of usable rows) reports it as too young with one and the same date,
    which skips Presidents' Day (2013-02-18); on that date it is predicted."""
    settings, engine = db
    listed = copy_bars(engine, source="MSFT", name="YOUNG", start=date(2013, 1, 16))
    warmup = served.bundle.spec.warmup_sessions
    first = listed[warmup + served.bundle.sequence_length - 1]  # the bar that completes the first window
    assert listed[: warmup + served.bundle.sequence_length] == CALENDAR.sessions(listed[0], first)
    assert date(2013, 2, 15) < first and CALENDAR.sessions(date(2013, 2, 18), date(2013, 2, 18)) == []

    bundle = trained_through(served.bundle, listed[0])

    def run(as_of: date) -> PredictResult:
        return predict(
            settings=settings,
            engine=engine,
            as_of=as_of,
            bundle=bundle,
            tickers=["YOUNG"],
            write_files=False,
        )

    for as_of in listed[: listed.index(first)]:  # fewer bars than the warm-up, then fewer usable rows than L
        result = run(as_of)
        assert [(f.ticker, f.kind, f.predictable_from) for f in result.failed] == [
            ("YOUNG", "too_little_history", first)
        ], as_of
        assert first.isoformat() in result.failed[0].reason and exit_code_for(result) == 4
    on_time = run(first)
    assert [p.ticker for p in on_time.predictions] == ["YOUNG"] and not on_time.failed
    assert on_time.predictions[0].unseen


def test_the_files_are_rewritten_only_on_a_day_with_predictions(
    served: Served, db: tuple[Settings, Engine], tmp_path: Path
) -> None:
    """`latest_predictions.json` and its dated copy hold the served forecasts; a later day on which no
    ticker can be predicted (every one stale: no bars after 2013-03-01) leaves them as they were."""
    settings, engine = db
    settings = settings.replace(storage={"data_dir": str(tmp_path / "files")})

    def run(as_of: date) -> PredictResult:
        return predict(
            settings=settings, engine=engine, as_of=as_of, bundle=served.bundle, tickers=["GOOG", "MSFT"]
        )

    made = run(AS_OF)
    latest, history = (Path(name) for name in made.files)
    written = json.loads(latest.read_text())
    assert [p["ticker"] for p in written["predictions"]] == ["GOOG", "MSFT"] and written[
        "as_of"
    ] == "2013-03-01"
    assert history.name == "predictions_2013-03-04.json" and history.read_text() == latest.read_text()

    nothing = run(date(2013, 3, 6))
    assert exit_code_for(nothing) == 4 and not nothing.predictions and nothing.files == ()
    assert json.loads(latest.read_text()) == written
    assert sorted(path.name for path in history.parent.iterdir()) == [history.name]


def test_a_ticker_delisted_years_ago_is_reported_stale_not_without_bars(
    served: Served, db: tuple[Settings, Engine]
) -> None:
    """Its bars end in 2009, before the serving lookback: the reason must say the data is stale and
    name its last bar, not claim that nothing is stored and send the user to `stockcli fetch`."""
    from stockcli.services.fetch import fetch

    settings, engine = db
    early = settings.replace(data={"start": "2009-01-02"})
    assert fetch(settings=early, engine=engine, as_of=date(2009, 12, 31), tickers=["GOOG"]).status == "ok"
    copy_bars(engine, source="GOOG", name="GONE", end=date(2009, 12, 31))

    result = predict(
        settings=settings,
        engine=engine,
        as_of=AS_OF,
        bundle=served.bundle,
        tickers=["GONE"],
        write_files=False,
    )

    [failure] = result.failed
    assert failure.kind == "stale", failure
    assert "2009-12-31" in failure.reason, failure


def test_every_ticker_stale_exits_4_and_stores_nothing(
    served: Served, db: tuple[Settings, Engine], tmp_path: Path
) -> None:
    settings, engine = db
    cli = Cli(config_for(tmp_path, settings, ["GOOG", "MSFT"]))
    result = cli("--as-of", "2013-03-05", "--json", "predict")  # the bars end on Friday 03-01
    assert result.exit_code == 4, result.output
    payload = json.loads(result.stdout)
    assert payload["predictions"] == []
    assert [(f["ticker"], f["kind"]) for f in payload["failed"]] == [("GOOG", "stale"), ("MSFT", "stale")]
    assert all("2013-03-01" in f["reason"] and "2013-03-05" in f["reason"] for f in payload["failed"])
    assert stored(engine) == {}


def test_a_forecast_beyond_the_volatility_limit_is_refused_with_exit_1_and_not_stored(
    served: Served, db: tuple[Settings, Engine]
) -> None:
    """A damaged model (its target scaler shifted by +0.5 log return: a ~65% daily move) is refused
    for every ticker, naming each, and nothing is stored; the same model under a limit it does not
    reach is served."""
    settings, engine = db
    scalers = json.loads(json.dumps(served.bundle.scalers))
    scalers["target"]["mean"] = float(scalers["target"]["mean"]) + 0.5
    damaged = dataclasses.replace(served.bundle, scalers=scalers)

    result = predict(
        settings=settings,
        engine=engine,
        as_of=AS_OF,
        bundle=damaged,
        tickers=["GOOG", "MSFT"],
        write_files=False,
    )

    assert exit_code_for(result) == 1
    assert not result.predictions
    assert [(f.ticker, f.kind) for f in result.refused] == [("GOOG", "implausible"), ("MSFT", "implausible")]
    for failure in result.refused:
        assert "max_move_vol" in failure.reason and f"version {served.version}" in failure.reason
    assert stored(engine) == {}

    lenient = settings.replace(predict={"max_move_vol": 1000.0})
    accepted = predict(
        settings=lenient,
        engine=engine,
        as_of=AS_OF,
        bundle=damaged,
        tickers=["GOOG", "MSFT"],
        write_files=False,
    )
    assert exit_code_for(accepted) == 0 and len(accepted.predictions) == 2
    # No selection was recorded for this version: naive and the incumbent are served (nothing beat them).
    assert {(p.source, p.interval_source) for p in accepted.predictions} == {("naive", "blend")}


# --- adaptive conformal inference -------------------------------------------------------------------


@pytest.mark.parametrize("goog_interval, msft_interval", [("network", "garch"), ("garch", "network")])
def test_a_miss_lowers_alpha_and_widens_the_next_interval_a_hit_raises_it(
    served: Served, db: tuple[Settings, Engine], goog_interval: str, msft_interval: str
) -> None:
    """GOOG's close of 2013-02-27 falls outside its stored 80% interval (inside the 95%), MSFT's inside
    both. Scoring moves each alpha by gamma * (target - miss); the next 80% interval of GOOG is wider
    than the one made from the nominal level, MSFT's narrower; the state outlives the engine."""
    settings, engine = db
    gamma = 0.1
    settings = settings.replace(intervals={"aci_gamma": gamma, "aci": True})
    save_selection(
        engine,
        model_version=served.version,
        selections=[
            selection("GOOG", "naive", 0.5, goog_interval),
            selection("MSFT", "naive", 0.5, msft_interval),
        ],
        promotion_id=None,
    )
    first_day, second_day = date(2013, 2, 26), date(2013, 2, 27)
    bundle = trained_through(served.bundle, first_day)

    def run() -> PredictResult:
        return predict(
            settings=settings,
            engine=engine,
            as_of=second_day,
            bundle=bundle,
            tickers=["GOOG", "MSFT"],
            write_files=False,
        )

    made = predict(
        settings=settings,
        engine=engine,
        as_of=first_day,
        bundle=bundle,
        tickers=["GOOG", "MSFT"],
        write_files=False,
    )
    assert {p.target_date for p in made.predictions} == {second_day}
    assert {p.ticker: p.interval_source for p in made.predictions} == {
        "GOOG": goog_interval,
        "MSFT": msft_interval,
    }
    with engine.connect() as connection:
        actual = dict(
            connection.execute(
                select(RawStockData.ticker, RawStockData.close).where(RawStockData.date == second_day)
            ).all()
        )
    bounds = {  # q025, q10, q50, q90, q975 as multiples of the real close
        "GOOG": (0.9, 1.01, 1.02, 1.03, 1.1),  # 80% missed, 95% covered
        "MSFT": (0.9, 0.99, 1.0, 1.01, 1.1),  # both covered
    }
    with engine.begin() as connection:
        for ticker, factors in bounds.items():
            connection.execute(
                update(LatestPrediction)
                .where(LatestPrediction.ticker == ticker, LatestPrediction.target_date == second_day)
                .values(
                    **{
                        c: f * actual[ticker]
                        for c, f in zip(("q025", "q10", "q50", "q90", "q975"), factors, strict=True)
                    }
                )
            )

    adapted = run()  # scores 2013-02-27 first, then predicts 2013-02-28

    expected = {
        ("GOOG", 80): 0.2 - gamma * (1 - 0.2),
        ("GOOG", 95): 0.05 + gamma * 0.05,
        ("MSFT", 80): 0.2 + gamma * 0.2,
        ("MSFT", 95): 0.05 + gamma * 0.05,
    }
    fresh_engine = make_engine(settings.database_url)  # a restart: the state is in the database
    state = load_interval_state(fresh_engine)
    fresh_engine.dispose()
    assert {key: s.alpha for key, s in state.items()} == pytest.approx(expected)
    assert {key: (s.n_updates, s.misses) for key, s in state.items()} == {
        ("GOOG", 80): (1, 1),
        ("GOOG", 95): (1, 0),
        ("MSFT", 80): (1, 0),
        ("MSFT", 95): (1, 0),
    }
    sources = {"GOOG": goog_interval, "MSFT": msft_interval}
    assert all(s.model_version == served.version and s.source == sources[s.ticker] for s in state.values())
    assert all(s.last_target_date == second_day for s in state.values())
    rows = stored(engine)
    for p in adapted.predictions:
        assert rows[(p.ticker, date(2013, 2, 28))]["detail"]["alphas"] == pytest.approx(
            {"80": expected[(p.ticker, 80)], "95": expected[(p.ticker, 95)]}
        )
        assert_ordered(dataclasses.asdict(p))
    width = {p.ticker: p.upper_80 - p.lower_80 for p in adapted.predictions}

    # `[intervals] aci = false` serves the nominal levels though the state has moved.
    fixed = predict(
        settings=settings.replace(intervals={"aci": False}),
        engine=engine,
        as_of=second_day,
        bundle=bundle,
        tickers=["GOOG", "MSFT"],
        write_files=False,
    )
    unadapted = {p.ticker: p.upper_80 - p.lower_80 for p in fixed.predictions}

    with engine.begin() as connection:  # the same prediction from the nominal levels
        connection.execute(delete(IntervalState))
    nominal = {p.ticker: p.upper_80 - p.lower_80 for p in run().predictions}
    assert unadapted == pytest.approx(nominal, rel=1e-12)
    assert width["GOOG"] > nominal["GOOG"]
    assert width["MSFT"] < nominal["MSFT"]


def test_an_as_of_inside_the_models_training_data_is_refused_with_exit_2_and_nothing_stored(
    served: Served, db: tuple[Settings, Engine], tmp_path: Path
) -> None:
    """The served model was trained on a dataset ending 2013-03-01: a prediction as of an earlier day
    would be a forecast of sessions it has seen, scored as live accuracy. As of 2013-03-01 itself (as
    right after a bootstrap) it predicts."""
    settings, engine = db
    assert served.bundle.data_end == AS_OF
    spec = dataclasses.replace(served.bundle.spec, end_date=None)  # a bundle registered before
    assert dataclasses.replace(served.bundle, spec=spec).data_end == AS_OF  # its dataset id says it
    cli = Cli(config_for(tmp_path, settings, ["GOOG", "MSFT"]))

    refused = cli("--as-of", "2012-12-26", "predict")

    assert refused.exit_code == 2, refused.output
    assert "--as-of 2012-12-26 is inside the training data of model version" in refused.stderr
    assert "trained on sessions up to 2013-03-01" in refused.stderr
    assert "Traceback" not in refused.output
    assert stored(engine) == {}
    # `daily` refuses it too, before its scheduled refits write anything (every ticker is due then).
    refused_day = cli("--as-of", "2012-12-26", "daily", "--no-retrain")
    assert refused_day.exit_code == 2 and "inside the training data" in refused_day.stderr
    with engine.connect() as connection:
        assert connection.execute(select(func.count()).select_from(ForecasterFit)).scalar_one() == 0
    assert stored(engine) == {}
    allowed = cli("--as-of", "2013-03-01", "--json", "predict")
    assert allowed.exit_code == 0, allowed.output
    assert {(t, d) for t, d in stored(engine)} == {("GOOG", date(2013, 3, 4)), ("MSFT", date(2013, 3, 4))}


# --- horizons -------------------------------------------------------------------------------------------

HORIZON_TARGETS = {"1": "2013-03-04", "5": "2013-03-08", "20": "2013-04-01"}  # Good Friday 03-29 skipped


def test_every_horizon_is_served_with_its_risk_and_stored(
    served: Served, db: tuple[Settings, Engine], tmp_path: Path
) -> None:
    """`predict --json` on the sample: horizons 1, 5 and 20 for every ticker, with ordered quantiles,
    VaR and ES (returns and prices); the 20-session 95% band is wider than the next session's; horizon
    1 is the top level's forecast; every horizon is stored with its tail."""
    from stockcli.db.models import HorizonPrediction
    from stockcli.ml.risk import TAIL_LEVELS

    settings, engine = db
    copy_bars(engine, source="GOOG", name="NEWCO", factor=0.05)
    cli = Cli(config_for(tmp_path, settings, ["GOOG", "MSFT", "NEWCO"]))

    result = cli("--as-of", AS_OF.isoformat(), "--json", "predict")

    assert result.exit_code == 0, result.output
    predictions = json.loads(result.stdout)["predictions"]
    assert [p["ticker"] for p in predictions] == ["GOOG", "MSFT", "NEWCO"]
    for p in predictions:
        horizons = p["horizons"]
        assert {h: v["target_date"] for h, v in horizons.items()} == HORIZON_TARGETS
        for h in horizons.values():
            assert_ordered(h)
            assert 0 < h["var_95"] < h["var_99"] < h["es_99"] and h["var_95"] < h["es_95"] < h["es_99"]
            assert h["var_99_price"] == pytest.approx(p["base_close"] * (1 - h["var_99"]))
            assert h["es_99_price"] < h["var_99_price"] < h["var_95_price"] < p["base_close"]
            assert h["source"] in settings.forecasters.candidates or h["source"] == "network"
        one, twenty = horizons["1"], horizons["20"]
        assert twenty["upper_95"] - twenty["lower_95"] > one["upper_95"] - one["lower_95"]
        assert twenty["var_99"] > one["var_99"]
        assert {k: one[k] for k in ("lower_80", "upper_80", "lower_95", "upper_95", "median", "p_up")} == {
            k: p[k] for k in ("lower_80", "upper_80", "lower_95", "upper_95", "median", "p_up")
        }
        assert one["source"] == p["interval_source"]
        # Nothing decided yet at 5 and 20 sessions: the horizons' own incumbent serves them (NEWCO has
        # no fits: the rolling band, below).
        if p["ticker"] != "NEWCO":
            assert {horizons[h]["source"] for h in ("5", "20")} == {"blend"}
    with engine.connect() as connection:
        rows = connection.execute(select(HorizonPrediction)).mappings().all()
    assert len(rows) == 9
    by_key = {(r["ticker"], str(r["horizon"])): r for r in rows}
    for p in predictions:
        for h, values in p["horizons"].items():
            row = by_key[(p["ticker"], h)]
            assert row["target_date"].isoformat() == HORIZON_TARGETS[h] and row["base_date"] == AS_OF
            assert [row[c] for c in ("q025", "q10", "q50", "q90", "q975", "var_99", "es_99")] == [
                values[k]
                for k in ("lower_95", "lower_80", "median", "upper_80", "upper_95", "var_99", "es_99")
            ]
            assert len(row["tail"]) == len(TAIL_LEVELS) and row["actual_close"] is None
            assert "rolling" in row["candidates"]  # NEWCO has no fitted GARCH: the band serves it


def test_every_horizon_is_causal(served: Served, db: tuple[Settings, Engine]) -> None:
    """Bars after the as-of changed: every horizon's stored row is the same."""
    from stockcli.db.models import HorizonPrediction

    settings, engine = db
    day = date(2013, 2, 26)
    bundle = trained_through(served.bundle, day)

    def stored_horizons() -> list[dict[str, Any]]:
        predict(
            settings=settings,
            engine=engine,
            as_of=day,
            bundle=bundle,
            tickers=["GOOG", "MSFT"],
            write_files=False,
        )
        with engine.begin() as connection:
            rows = (
                connection.execute(select(HorizonPrediction).order_by("ticker", "horizon")).mappings().all()
            )
            connection.execute(delete(HorizonPrediction))
            connection.execute(delete(LatestPrediction))
        return [{k: v for k, v in row.items() if k != "created_at"} for row in rows]

    before = stored_horizons()
    with engine.begin() as connection:
        connection.execute(
            update(RawStockData)
            .where(RawStockData.date > day)
            .values(close=RawStockData.close * 1.5, high=RawStockData.high * 1.5)
        )
    after = stored_horizons()
    assert len(before) == 6 and {r["horizon"] for r in before} == {1, 5, 20}
    assert after == before


def test_a_horizon_above_1_serves_its_base_rate_unless_its_brier_test_chose_a_candidate(
    served: Served, db: tuple[Settings, Engine]
) -> None:
    """The version records each horizon's base rate (the up-share of its h-session returns over the bars
    its candidates were fitted on). MSFT's horizons, never decided, serve it; GOOG's 5-session P(up),
    decided for the rolling band, serves the band's. The JSON and the stored row say whose, and the
    row keeps every candidate's P(up) and the base rate's for the Brier test once scored."""
    from stockcli.db.horizons import save_horizon_serving
    from stockcli.services.predict import prediction_json

    settings, engine = db
    day = date(2013, 2, 26)
    bundle = trained_through(served.bundle, day)
    decided = {"ticker": "GOOG", "horizon": 5, "source": "garch", "n_sessions": 60}
    with engine.begin() as connection:
        save_horizon_serving(connection, [{**decided, "p_up_source": "rolling", "p_up_p_value": 0.01}])

    result = predict(
        settings=settings,
        engine=engine,
        as_of=day,
        bundle=bundle,
        tickers=["GOOG", "MSFT"],
        write_files=False,
    )

    rates = bundle.baselines["p_up_base_horizons"]
    assert rates["20"]["MSFT"] != pytest.approx(bundle.baselines["p_up_base"]["MSFT"])
    at = {(p.ticker, h.horizon): h for p in result.predictions for h in p.horizons}
    for ticker, horizon in (("MSFT", 5), ("MSFT", 20), ("GOOG", 20)):
        found = at[(ticker, horizon)]
        assert found.p_up_source == "base_rate"
        assert found.p_up == found.p_ups["base_rate"] == pytest.approx(rates[str(horizon)][ticker])
    goog = at[("GOOG", 5)]
    assert goog.p_up_source == "rolling" and goog.p_up == goog.p_ups["rolling"] != goog.p_ups["base_rate"]
    for p in result.predictions:
        assert at[(p.ticker, 1)].p_up_source == p.p_up_source and at[(p.ticker, 1)].p_up == p.p_up
        shown = prediction_json(p)["horizons"]
        assert {h: shown[h]["p_up_source"] for h in shown} == {
            h: at[(p.ticker, int(h))].p_up_source for h in shown
        }
    with engine.connect() as connection:
        rows = connection.execute(select(HorizonPrediction)).mappings().all()
    stored = {(r["ticker"], r["horizon"]): r for r in rows}
    assert stored[("GOOG", 5)]["p_up_source"] == "rolling" and stored[("GOOG", 5)]["p_ups"] == goog.p_ups
    assert stored[("MSFT", 20)]["p_up_source"] == "base_rate"


@pytest.mark.parametrize(
    ("table", "kind", "filled_otherwise"),
    [
        (LatestPrediction, Prediction, {"void_reason"}),  # set when a restatement voids it
        (
            HorizonPrediction,
            Horizon,
            {"ticker", "base_date", "model_version", "base_close"}  # from the horizon's prediction
            | {"actual_close", "scored_at", "void_reason"},  # set when it is scored or voided
        ),
    ],
)
def test_every_prediction_column_is_stored_from_a_field_of_its_name(
    table: Any, kind: Any, filled_otherwise: set[str]
) -> None:
    # A column with no field of its name would silently stay empty: `_store` writes a field to the
    # column of its name, the quantiles to the quantile columns, and stamps each row.
    stamped = {"as_of", "pipeline_run_id", "created_at", *QUANTILE_PRICES}
    fields = {item.name for item in dataclasses.fields(kind)}
    assert {column.name for column in table.__table__.columns} - fields - stamped == filled_otherwise
