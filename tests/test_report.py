"""`stockcli report`: the gathered report, its tables, `--json` and the self-contained `--html` file."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert

from stockcli.cli.report_commands import SPARK_BLOCKS, sparkline
from stockcli.config import Settings
from stockcli.db.models import ModelPerformance
from stockcli.db.queries_report import connect_readonly
from stockcli.errors import NoDataError
from stockcli.services.report import ScoredSession, build_report, live_performance, summarize
from tests import report_data
from tests.conftest import Cli

WINDOW = 20  # [monitor] window_sessions by default


def _expected_window(filled: report_data.Filled, ticker: str) -> dict[str, float]:
    """The window's metrics recomputed from the sample closes the way the fixture scored them."""
    closes = [close for _, close in filled.closes[ticker]]
    abs_errors, naive_errors, pct_errors, hits = [], [], [], 0
    for index in range(len(closes) - WINDOW, len(closes)):
        base, actual = closes[index - 1], closes[index]
        if ticker == "MSFT":
            guess = base - 0.02 * base * (1 if actual >= base else -1)
        else:
            guess = base + 0.7 * (actual - base)
        abs_errors.append(abs(guess - actual))
        naive_errors.append(abs(actual - base))
        pct_errors.append(abs(guess - actual) / actual)
        hits += (guess - base) * (actual - base) > 0
    mae, naive = sum(abs_errors) / WINDOW, sum(naive_errors) / WINDOW
    return {
        "mae": mae,
        "naive_mae": naive,
        "mape": sum(pct_errors) / WINDOW,
        "skill": 1 - mae / naive,
        "direction": hits / WINDOW,
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
        assert row.last_target_date == report_data.AS_OF
    assert by_ticker["MSFT"].worse_than_naive and by_ticker["MSFT"].skill < 0
    assert not by_ticker["GOOG"].worse_than_naive and by_ticker["GOOG"].skill > 0
    assert any("worse than the naive forecast" in note and "MSFT" in note for note in report.notes)

    assert [run.command for run in report.runs] == ["fetch", "daily"]  # newest first
    assert report.runs[0].status == "failed" and "timeout" in (report.runs[0].error or "")
    assert [p.candidate_version for p in report.promotions] == ["3", "2"]
    assert [p.promoted for p in report.promotions] == [False, True]
    values = [(p.candidate_value, p.production_value, p.naive_value) for p in report.promotions]
    assert values == [(4.9, 4.1, 4.4), (4.1, 4.6, 4.4)]  # read from promote's nested and flat blocks

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
                direction_hit=True,
                naive_abs_error=abs(actual - base),
                evaluated_at=datetime(2013, 3, 2, tzinfo=UTC),
            )
        )
    row = live_performance(settings, engine=filled.engine, ticker="GOOG")[0]
    assert row.sessions == WINDOW
    assert row.model_versions == ("1", "2", "3")
    assert row.mae < _expected_window(filled, "GOOG")["mae"]  # the later evaluation replaced version 2's


def test_summarize_by_hand() -> None:
    def session(error: float, naive: float, hit: bool, pct: float = 0.01) -> ScoredSession:
        return ScoredSession(
            "X",
            date(2013, 1, 2),
            "1",
            date(2013, 1, 1),
            100.0,
            100.0 + error,
            100.0,
            abs(error),
            pct,
            hit,
            naive,
        )

    row = summarize("X", [session(1.0, 2.0, True), session(3.0, 2.0, False)], min_samples=3)
    assert (row.mae, row.naive_mae, row.skill, row.directional_accuracy) == (2.0, 2.0, 0.0, 0.5)
    assert not row.worse_than_naive and not row.enough_samples
    worse = summarize("X", [session(3.0, 1.0, False), session(math.inf, 1.0, False, math.inf)])
    assert worse.mae == 3.0 and worse.mape == 0.01  # an infinite error is left out, not averaged
    assert worse.worse_than_naive
    flat = summarize("X", [session(1.0, 0.0, False)])
    assert flat.skill is None and not flat.worse_than_naive  # no skill against a perfect naive forecast
    assert summarize("X", []).sessions == 0


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

    page = html_path.read_text(encoding="utf-8")
    assert page.count('<svg id="chart-') == len(filled.tickers)
    assert "<polyline" in page and page.count('class="predicted point"') == len(filled.tickers)
    assert (
        "<style>" in page
        and 'rel="stylesheet"' not in page
        and "<script" not in page.replace("&lt;script", "")
    )
    # Nothing is fetched: no src/href pointing anywhere but the page itself.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;" in page
    assert f"{filled.predicted['MSFT']:,.2f}" in page


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
    assert "Cannot read the database" in result.output and "secret" not in result.output
