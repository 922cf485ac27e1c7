"""`stockcli report`: the gathered report, its tables, `--json` and the self-contained `--html` file."""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Optional, Union

import pytest
from sqlalchemy import insert

from stockcli.cli.report_commands import SPARK_BLOCKS, sparkline
from stockcli.config import Settings
from stockcli.db.models import ModelPerformance
from stockcli.db.queries_report import connect_readonly
from stockcli.errors import NoDataError
from stockcli.ml.metrics import summarize_scored
from stockcli.services.report import _from_row, build_report, live_performance, performance_row
from tests import report_data
from tests.conftest import Cli

WINDOW = 20  # [monitor] window_sessions by default


@dataclass(frozen=True)
class _Spellings:
    """One optional float in each spelling a result field may use."""

    piped: float | None
    optional: Optional[float]  # noqa: UP045 (the spelling under test)
    union: Union[float, None]  # noqa: UP007 (the spelling under test)
    count: int


def test_stored_values_are_converted_by_type_whatever_the_spelling() -> None:
    read = _from_row(_Spellings, {"piped": math.nan, "optional": math.nan, "union": math.inf, "count": 3.0})
    assert read == _Spellings(piped=None, optional=None, union=None, count=3)
    assert isinstance(read.count, int)
    assert _from_row(_Spellings, {"piped": 1, "optional": 2, "union": 3, "count": 4}).union == 3.0


def _expected_window(filled: report_data.Filled, ticker: str) -> dict[str, float]:
    """The window's metrics recomputed by hand from the sessions the fixture scored (served forecast,
    real close, last close and the served quantiles)."""
    rows = filled.scored[ticker][-WINDOW:]
    served = [float(row["predicted_close"]) for row in rows]  # type: ignore[arg-type]
    actual = [float(row["actual_close"]) for row in rows]  # type: ignore[arg-type]
    base = [float(row["base_close"]) for row in rows]  # type: ignore[arg-type]
    abs_errors = [abs(s - a) for s, a in zip(served, actual, strict=True)]
    naive_errors = [abs(a - b) for a, b in zip(actual, base, strict=True)]
    scores = [
        0.5 if s == b else float((s > b) == (a > b))
        for s, a, b in zip(served, actual, base, strict=True)
        if a != b
    ]
    mae, naive = sum(abs_errors) / WINDOW, sum(naive_errors) / WINDOW

    def inside(low: str, high: str) -> float:
        return sum(float(r[low]) <= float(r["actual_close"]) <= float(r[high]) for r in rows) / WINDOW  # type: ignore[arg-type]

    return {
        "mae": mae,
        "naive_mae": naive,
        "mape": sum(e / a for e, a in zip(abs_errors, actual, strict=True)) / WINDOW,
        "skill": 1 - mae / naive,
        "direction": sum(scores) / len(scores),
        "coverage_80": inside("q10", "q90"),
        "coverage_95": inside("q025", "q975"),
        "served_model_share": sum(row["source"] == "model" for row in rows) / WINDOW,
    }


def test_report_gathers_the_stored_state(settings: Settings) -> None:
    filled = report_data.fill(settings)
    report = build_report(settings, engine=connect_readonly(settings))

    assert [p.ticker for p in report.predictions] == ["GOOG", "MSFT", "^GSPC"]
    for row in report.predictions:  # the newest prediction, not the older scored ones
        assert row.target_date == report_data.NEXT_SESSION
        assert row.base_date == report_data.AS_OF
        assert row.model_version == "2"
        assert row.predicted_close == pytest.approx(filled.predicted[row.ticker])
        assert row.base_close == pytest.approx(filled.closes[row.ticker][-1][1])
        assert row.change == pytest.approx(row.predicted_close / row.base_close - 1)
        stored = filled.newest[row.ticker]  # the quantiles, chance of an up day and why, as stored
        assert (row.lower_95, row.lower_80, row.median, row.upper_80, row.upper_95) == pytest.approx(
            tuple(stored[column] for column in report_data.QUANTILE_COLUMNS)
        )
        assert row.lower_95 < row.lower_80 < row.upper_80 < row.upper_95  # type: ignore[operator]
        assert row.lower_80 <= row.median <= row.upper_80  # type: ignore[operator]
        assert row.p_up == pytest.approx(stored["p_up"]) and 0 < row.p_up < 1  # type: ignore[operator]
        serving = report_data.SERVING[row.ticker]
        assert (row.source, row.p_value, row.interval_source, row.interval_p_value, row.unseen) == (
            serving.source,
            pytest.approx(serving.p_value),
            serving.interval_source,
            pytest.approx(serving.interval_p_value),
            serving.unseen,
        )
    msft = next(row for row in report.predictions if row.ticker == "MSFT")
    assert msft.source == "naive" and msft.predicted_close == msft.base_close  # naive serves the last close
    assert [row.ticker for row in report.predictions if row.unseen] == ["^GSPC"]

    by_ticker = {row.ticker: row for row in report.performance}
    for ticker in filled.tickers:
        expected = _expected_window(filled, ticker)
        row = by_ticker[ticker]
        assert row.sessions == WINDOW
        assert row.mae == pytest.approx(expected["mae"])
        assert row.naive_mae == pytest.approx(expected["naive_mae"])
        assert row.mape == pytest.approx(expected["mape"])
        assert row.skill == pytest.approx(expected["skill"])
        assert row.directional_accuracy == pytest.approx(expected["direction"])
        assert row.coverage_80 == pytest.approx(expected["coverage_80"])
        assert row.coverage_95 == pytest.approx(expected["coverage_95"])
        assert row.served_model_share == pytest.approx(expected["served_model_share"])
        assert row.skill_low is not None and row.skill_high is not None
        assert row.skill_low < row.skill < row.skill_high  # type: ignore[operator]
        assert row.winkler_95 is not None and row.winkler_95 > 0
        assert row.p_worse is not None and 0 <= row.p_worse <= 1
        assert row.last_target_date == report_data.AS_OF
    assert by_ticker["^GSPC"].served_model_share == 0.5  # naive before version 2, the model since
    assert by_ticker["MSFT"].p_worse < 0.05 < by_ticker["GOOG"].p_worse  # type: ignore[operator]
    assert by_ticker["MSFT"].worse_than_naive and by_ticker["MSFT"].skill < 0
    assert not by_ticker["GOOG"].worse_than_naive and by_ticker["GOOG"].skill > 0
    assert any("worse than the naive forecast" in note and "MSFT" in note for note in report.notes)

    assert [run.command for run in report.runs] == ["fetch", "daily"]  # newest first
    assert report.runs[0].status == "failed" and "timeout" in (report.runs[0].error or "")
    assert [p.candidate_version for p in report.promotions] == ["3", "2"]
    assert [p.promoted for p in report.promotions] == [False, True]
    values = [(p.candidate_value, p.production_value, p.naive_value) for p in report.promotions]
    assert values == [(4.9, 4.1, 4.4), (4.1, 4.6, 4.4)]  # read from promote's nested and flat blocks
    tests = [
        (p.test, p.p_value, p.improvement, p.improvement_low, p.improvement_high) for p in report.promotions
    ]
    assert tests == [
        (report_data.DM_TEST, 0.83, -0.195, -0.412, 0.022),
        (report_data.DM_TEST, 0.0042, 0.109, 0.041, 0.177),
    ]

    goog = next(s for s in report.recent_closes if s.ticker == "GOOG")
    assert list(zip(goog.dates, goog.closes, strict=True)) == filled.closes["GOOG"][-30:]
    assert goog.naive == (report_data.NEXT_SESSION, filled.closes["GOOG"][-1][1])
    # No registry file in this data dir: the report says so instead of failing or creating one.
    assert report.models == () and report.production_version is None
    assert any("No model registry yet" in note for note in report.notes)
    assert not (settings.data_dir / "mlflow.db").exists()


def test_as_of_hides_everything_made_later(settings: Settings) -> None:
    filled = report_data.fill(settings)
    as_of = date(2013, 2, 20)
    report = build_report(settings, engine=connect_readonly(settings), as_of=as_of)
    goog = next(p for p in report.predictions if p.ticker == "GOOG")
    assert goog.as_of <= as_of and goog.target_date == date(2013, 2, 21)
    assert all(
        row.last_target_date is not None and row.last_target_date <= as_of for row in report.performance
    )
    series = next(s for s in report.recent_closes if s.ticker == "GOOG")
    assert series.dates[-1] == as_of
    assert series.closes[-1] == dict(filled.closes["GOOG"])[as_of]


def test_a_session_scored_for_two_versions_counts_once(settings: Settings) -> None:
    filled = report_data.fill(settings)
    target, actual = filled.closes["GOOG"][-1]
    base_day, base = filled.closes["GOOG"][-2]
    with filled.engine.begin() as connection:  # a re-run after a promotion scored version 3 too
        connection.execute(
            insert(ModelPerformance).values(
                target_date=target,
                ticker="GOOG",
                model_version="3",
                base_date=base_day,
                base_close=base,
                predicted_close=actual,
                actual_close=actual,
                abs_error=0.0,
                abs_pct_error=0.0,
                direction_score=1.0,
                naive_abs_error=abs(actual - base),
                evaluated_at=datetime(2013, 3, 2, tzinfo=UTC),
            )
        )
    row = live_performance(settings, engine=filled.engine, ticker="GOOG")[0]
    assert row.sessions == WINDOW
    assert row.model_versions == ("1", "2", "3")
    assert row.mae < _expected_window(filled, "GOOG")["mae"]  # the later evaluation replaced version 2's


def test_performance_row_by_hand() -> None:
    """A report row is `metrics.summarize_scored`'s block: worse than naive means skill below zero,
    enough samples is `[monitor] min_samples`, versions sort as numbers."""

    def scored(day: int, error: float, naive: float, version: str = "1") -> dict[str, object]:
        base = 100.0
        actual = base + naive
        served = actual + error
        return {
            "ticker": "X",
            "target_date": date(2013, 1, day),
            "model_version": version,
            "base_date": date(2013, 1, day - 1),
            "base_close": base,
            "predicted_close": served,
            "actual_close": actual,
            "q025": served - 3.5,  # the served band around the served forecast
            "q10": served - 1.5,
            "q50": served,
            "q90": served + 1.5,
            "q975": served + 3.5,
            "source": "model",
        }

    def row(rows: list[dict[str, object]], min_samples: int = 20):  # type: ignore[no-untyped-def]
        summary = summarize_scored(rows)
        assert summary is not None
        return performance_row("X", summary.tickers["X"], rows, min_samples)

    better = row([scored(2, -1.0, 2.0, "10"), scored(3, 1.0, 2.0, "9"), scored(4, 0.0, -2.0, "9")], 3)
    assert (better.mae, better.naive_mae, better.sessions) == (pytest.approx(2 / 3), 2.0, 3)
    assert better.skill == pytest.approx(1 - (2 / 3) / 2.0) and not better.worse_than_naive
    assert better.directional_accuracy == 1.0 and better.enough_samples
    assert better.model_versions == ("9", "10") and better.first_target_date == date(2013, 1, 2)
    assert (better.coverage_80, better.coverage_95, better.served_model_share) == (1.0, 1.0, 1.0)

    worse = row([scored(2, 3.0, 1.0), scored(3, -3.0, -1.0)])
    assert worse.skill is not None and worse.skill < 0 and worse.worse_than_naive
    assert not worse.enough_samples and worse.coverage_80 == 0.0 and worse.coverage_95 == 1.0

    flat = row([scored(2, 1.0, 0.0)])  # no skill against a perfect naive forecast
    assert flat.skill is None and not flat.worse_than_naive

    # The interval source of the newest session, with the served intervals' Winkler skill against
    # GARCH's on the sessions GARCH forecast (a GARCH band twice as wide: its Winkler score doubles).
    def with_garch(item: dict[str, object], source: str, garch: bool) -> dict[str, object]:
        served = float(item["predicted_close"])  # type: ignore[arg-type]
        band = [served - 7.0, served - 3.0, served, served + 3.0, served + 7.0]
        return {
            **item,
            "interval_source": source,
            "detail": {"candidates": {"garch": band if garch else None}},
        }

    named = row(
        [with_garch(scored(2, 0.5, 1.0), "garch", True), with_garch(scored(3, 0.5, 1.0), "har_range", False)]
    )
    assert named.interval_source == "har_range"
    first = scored(2, 0.5, 1.0)
    served_width = math.log((101.5 + 3.5) / 100) - math.log((101.5 - 3.5) / 100)
    garch_width = math.log((101.5 + 7.0) / 100) - math.log((101.5 - 7.0) / 100)
    assert first["actual_close"] == 101.0 and named.interval_skill_vs_garch == pytest.approx(
        1 - served_width / garch_width
    )
    assert better.interval_source is None and better.interval_skill_vs_garch is None


def test_sparkline_scales_the_prediction_with_the_closes() -> None:
    assert sparkline([1.0, 2.0, 3.0, 4.0], 5.0) == "▁▃▅▇ → █"
    assert sparkline([2.0, 2.0]) == SPARK_BLOCKS[4] * 2
    assert sparkline([10.0, 20.0], 0.0).endswith("→ ▁")
    assert sparkline([]) == ""


def test_missing_database_says_which_command_to_run(make_settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings()
    with pytest.raises(NoDataError, match="does not exist") as caught:
        build_report(settings, engine=connect_readonly(settings))
    assert "stockcli daily" in (caught.value.hint or "")
    assert not (settings.data_dir / "stockcli.db").exists()  # reading never creates the database


def test_cli_report_empty_database_exits_4(cli: Cli) -> None:
    result = cli("report")
    assert result.exit_code == 4
    assert "stockcli daily" in result.output


def test_cli_report_tables(cli: Cli, make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    filled = report_data.fill(make_settings(database_url))
    result = cli("report")
    assert result.exit_code == 0, result.output
    for title in (
        "Latest predictions",
        "Live performance",
        "Registered model versions",
        "Recent runs",
        "Recent promotion decisions",
        "Recent closes",
    ):
        assert title in result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Live performance" in line)
    end = next(i for i, line in enumerate(lines) if "Registered model versions" in line)
    performance = {line.split("│")[1].strip(): line for line in lines[start:end] if line.startswith("│")}
    assert "WORSE THAN NAIVE" in performance["MSFT"]
    assert "WORSE" not in performance["GOOG"] and "ok" in performance["GOOG"]
    assert f"{filled.predicted['GOOG']:,.2f}" in result.output
    assert re.search(f"[{SPARK_BLOCKS}]{{10,}} → [{SPARK_BLOCKS}]", result.output)
    assert "Warning" in result.output and "worse than the naive forecast" in result.output
    assert "4.1000 / 4.6000 / 4.4000" in result.output


def test_cli_report_json_and_html(cli: Cli, make_settings, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    filled = report_data.fill(make_settings(database_url), evil_text=True)
    html_path = tmp_path / "out" / "report.html"
    result = cli("report", "--json", "--html", str(html_path))
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert {"predictions", "performance", "models", "runs", "promotions"} <= set(payload)
    assert {p["ticker"]: p["predicted_close"] for p in payload["predictions"]} == pytest.approx(
        filled.predicted
    )
    assert payload["predictions"][0]["target_date"] == "2013-03-04"
    assert {p["ticker"] for p in payload["performance"] if p["worse_than_naive"]} == {"MSFT"}
    assert payload["promotions"][0]["reason"].endswith(report_data.EVIL)
    assert payload["models"] == []
    gained = {"lower_80", "upper_80", "lower_95", "upper_95", "median", "p_up", "source", "p_value"}
    gained |= {"interval_source", "interval_p_value", "unseen"}
    assert all(gained <= set(p) for p in payload["predictions"])
    by_ticker = {p["ticker"]: p for p in payload["predictions"]}
    assert by_ticker["^GSPC"]["unseen"] is True and by_ticker["MSFT"]["source"] == "naive"
    assert by_ticker["GOOG"]["lower_80"] == pytest.approx(filled.newest["GOOG"]["q10"])
    for row in payload["performance"]:
        assert {"skill_low", "skill_high", "p_worse", "coverage_80", "coverage_95", "winkler_95"} <= set(row)
        assert isinstance(row["coverage_95"], float) and "direction_hit" not in row
    assert [p["p_value"] for p in payload["promotions"]] == [0.83, 0.0042]
    assert payload["promotions"][1]["improvement_low"] == 0.041

    page = html_path.read_text(encoding="utf-8")
    assert page.count('<svg id="chart-') == len(filled.tickers)
    assert "<polyline" in page and page.count('class="predicted point"') == len(filled.tickers)
    # A fan per ticker: the 95% band (light) under the 80% band (dark), the median, the naive point.
    charts = re.findall(r'<svg id="chart-\d+".*?</svg>', page, re.S)
    for chart, ticker in zip(charts, filled.tickers, strict=True):
        assert f'data-ticker="{html.escape(ticker)}"' in chart
        light, dark = chart.index('class="band band-95"'), chart.index('class="band band-80"')
        assert light < dark < chart.index('class="predicted point"')
        assert chart.count('class="band band-95"') == chart.count('class="band band-80"') == 1
        assert chart.count('class="median"') == chart.count('class="naive point"') == 1
        newest = filled.newest[ticker]
        assert f"80% interval for 2013-03-04: {newest['q10']:,.2f} – {newest['q90']:,.2f}" in chart
    assert "80% of closes should fall in the dark band and 95% in the light one" in page
    predictions = _html_table(page, "predictions-table")
    goog = filled.newest["GOOG"]
    assert f"{goog['q10']:,.2f} – {goog['q90']:,.2f}" in predictions  # 80% interval
    assert f"{goog['q025']:,.2f} – {goog['q975']:,.2f}" in predictions  # 95% interval
    assert f"{round(float(goog['p_up']) * 100)}%" in predictions  # type: ignore[arg-type]
    assert ">naive</span> <span" in predictions and "p 0.62" in predictions  # MSFT serves the last close
    assert ">rolling</span>" in predictions and ">garch</span>" in predictions
    assert predictions.count('class="tag unseen"') == 1  # ^GSPC
    performance = _html_table(page, "performance-table")
    assert "Skill vs naive (95% CI)" in performance and "80% coverage" in performance
    assert performance.count('class="muted ci"') == len(filled.tickers)
    assert re.search(r'class="num coverage-95">95%<', performance)  # ^GSPC
    promotions = _html_table(page, "promotions-table")
    assert ">0.0042<" in promotions and ">0.83<" in promotions
    assert "+10.9%" in promotions and "+4.1% to +17.7%" in promotions and "-41.2% to +2.2%" in promotions
    assert (
        "<style>" in page
        and 'rel="stylesheet"' not in page
        and "<script" not in page.replace("&lt;script", "")
    )
    # Nothing is fetched: no src/href pointing anywhere but the page itself.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert f"{filled.predicted['MSFT']:,.2f}" in page


def _html_table(page: str, table_id: str) -> str:
    found = re.search(f'<table id="{table_id}".*?</table>', page, re.S)
    assert found is not None, table_id
    return found.group(0)


def test_cli_report_as_of(cli: Cli, make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    report_data.fill(make_settings(database_url))
    result = cli("report", "--json", "--as-of", "2013-02-20")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["as_of"] == "2013-02-20"
    assert {p["target_date"] for p in payload["predictions"]} == {"2013-02-21"}


def test_cli_report_html_unwritable(cli: Cli, make_settings, database_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    report_data.fill(make_settings(database_url))
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = cli("report", "--html", str(blocker / "report.html"))
    assert result.exit_code == 2
    assert "Cannot write the HTML report" in result.output


def test_cli_report_unreachable_database(tmp_path: Path) -> None:
    from tests.conftest import write_config

    cli = Cli(write_config(tmp_path, "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"))
    result = cli("report")
    assert result.exit_code == 1
    assert "Cannot reach the database at postgresql+psycopg://nobody:***@127.0.0.1:1/none" in result.output
    assert "secret" not in result.output


def test_cli_report_shows_the_compact_risk_table(cli: Cli, make_settings, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """The newest VaR and ES of each ticker 1 and 5 sessions ahead (the 20-session one is left to
    `--json` of predict), with the zone ("-" with too few scored forecasts)."""
    from stockcli.db.engine import open_database
    from stockcli.db.horizons import save_horizon_predictions

    settings = make_settings(database_url)
    report_data.fill(settings)
    engine = open_database(settings)
    base = date(2013, 3, 1)
    save_horizon_predictions(
        engine,
        [
            {
                "ticker": "GOOG",
                "base_date": base,
                "horizon": horizon,
                "model_version": "1",
                "target_date": target,
                "as_of": base,
                "base_close": 800.0,
                "var_95": 0.0123 * horizon,
                "var_99": 0.0234 * horizon,
                "es_95": 0.0345 * horizon,
                "es_99": 0.0456 * horizon,
                "source": "garch",
                "created_at": datetime(2013, 3, 1, 22, tzinfo=UTC),
            }
            for horizon, target in ((1, date(2013, 3, 4)), (5, date(2013, 3, 8)), (20, date(2013, 4, 1)))
        ],
    )
    engine.dispose()

    result = cli("report")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if "Risk (long position)" in line)
    rows = [line for line in lines[start:] if line.startswith("│") and "GOOG" in line]
    assert len(rows) == 2  # 1 and 5 sessions
    assert all(f"{v:.2%}" in rows[0] for v in (0.0123, 0.0234, 0.0345, 0.0456))
    assert all(f"{5 * v:.2%}" in rows[1] for v in (0.0123, 0.0234, 0.0345, 0.0456))
    payload = json.loads(cli("--json", "report").stdout)
    assert [(r["ticker"], r["horizon"], r["zone"]) for r in payload["risk"]] == [
        ("GOOG", 1, None),
        ("GOOG", 5, None),
    ]


def test_report_gathers_the_horizon_fan_and_the_var_exceptions(
    cli: Cli,
    make_settings,
    database_url: str,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    """The report's series carry the newest forecasts at 1, 5 and 20 sessions on the session axis,
    the 1-session bands served over the risk window and its VaR exceptions; `--html` draws them for
    GOOG (which has horizons) and the next-session fan and an empty VaR chart for the others."""
    settings = make_settings(database_url)
    filled = report_data.fill(settings)
    horizons = report_data.add_horizons(settings, filled)
    report = build_report(settings, engine=connect_readonly(settings))
    goog = next(s for s in report.recent_closes if s.ticker == "GOOG")
    assert goog.fan is not None and goog.exceptions is not None
    assert [(p.horizon, p.target_date) for p in goog.fan.horizons] == sorted(horizons.targets.items())
    assert len(goog.fan.sessions) == 20 and goog.fan.sessions[-1] == date(2013, 4, 1)
    assert date(2013, 3, 29) not in goog.fan.sessions  # Good Friday: the exchange is closed
    assert goog.fan.base_date == report_data.AS_OF
    assert len(goog.fan.past) == horizons.scored and all(p.actual_close for p in goog.fan.past)
    assert [d.target_date for d in goog.exceptions.beyond_99] == [horizons.exception_date]
    assert (goog.exceptions.n, goog.exceptions.exceptions_99, goog.exceptions.zone) == (
        horizons.scored,
        1,
        "green",
    )
    assert [r.zone for r in report.risk if r.ticker == "GOOG"] == ["green", None]  # 1 and 5 sessions
    msft = next(s for s in report.recent_closes if s.ticker == "MSFT")
    assert msft.fan is None and msft.exceptions is None

    html_path = tmp_path / "report.html"
    assert cli("report", "--html", str(html_path)).exit_code == 0
    page = html_path.read_text(encoding="utf-8")
    charts = dict(zip(filled.tickers, re.findall(r'<svg id="chart-\d+".*?</svg>', page, re.S), strict=True))
    assert charts["GOOG"].count('class="fan fan-95"') == 1 and 'class="band band-95"' not in charts["GOOG"]
    assert charts["GOOG"].count('class="past-band past-band-80"') == 1
    assert all('class="band band-95"' in charts[t] and "fan" not in charts[t] for t in ("MSFT", "^GSPC"))
    var_charts = dict(
        zip(filled.tickers, re.findall(r'<svg id="var-chart-\d+".*?</svg>', page, re.S), strict=True)
    )
    assert f'data-date="{horizons.exception_date.isoformat()}"' in var_charts["GOOG"]
    assert "Basel zone green" in var_charts["GOOG"]
    assert "No scored 1-session VaR forecasts for MSFT yet." in var_charts["MSFT"]
    assert page.count('<table class="data horizon-table"') == 1


def test_page_reads_leave_the_large_json_columns_out(settings: Settings) -> None:
    """Every page view and `/metrics` scrape runs these reads: they skip the JSON no page shows (a
    prediction's candidates, a run's details), which grow with every candidate and step."""
    from stockcli.db import queries_report as queries

    report_data.fill(settings)
    engine = connect_readonly(settings)
    reads = {
        "latest_predictions": queries.latest_predictions(engine, tickers=None),
        "performance_history": queries.performance_history(engine, limit=5),
        "recent_runs": queries.recent_runs(engine, limit=5),
        "recent_promotions": queries.recent_promotions(engine, limit=5),
    }
    for name, rows in reads.items():
        assert rows, name  # the fill stored some
        assert not {"detail", "details", "selection"} & set(rows[0]), name
    assert "predicted_close" in reads["latest_predictions"][0] and "status" in reads["recent_runs"][0]
