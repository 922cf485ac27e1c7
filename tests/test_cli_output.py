"""Tables for cron logs and narrow terminals: values are never cut (`2013-03-…`, `Producti…`)."""

from __future__ import annotations

import re

import pytest

from stockcli.cli import output
from tests import report_data
from tests.conftest import Cli

DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
CUT_DATE = re.compile(r"\b\d{4}-\d{0,2}-?\d{0,1}…")
COLUMNS = ["Ticker", "Base date", "Base close", "Predicted close", "Change %", "Target date", "Model"]
ROWS = [
    ["GOOG", "2013-03-01", "806.19", "807.01", "+0.10%", "2013-03-04", "v12"],
    ["^IXIC", "2013-03-01", "3,169.74", "3,170.00", "+0.01%", "2013-03-04", "v12"],
]
SECONDARY = ["Base close", "Base date", "Model"]


def _render(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, width: str, **options: object
) -> str:
    monkeypatch.setenv("COLUMNS", width)
    output.table("Latest predictions", COLUMNS, ROWS, **options)  # type: ignore[arg-type]
    return capsys.readouterr().out


def test_wide_output_keeps_every_column_with_borders(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _render(capsys, monkeypatch, "200", secondary=SECONDARY)
    assert all(name in text for name in COLUMNS)
    assert "┃" in text and "…" not in text
    assert len(DATE.findall(text)) == 4


def test_narrow_output_drops_secondary_columns_and_never_cuts_a_value(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _render(capsys, monkeypatch, "60", secondary=SECONDARY)
    assert "…" not in text
    assert all(len(line) <= 60 for line in text.splitlines()), text
    assert "Base close" not in text and "Base date" not in text  # dropped first
    for ticker, predicted, target in (("GOOG", "807.01", "2013-03-04"), ("^IXIC", "3,170.00", "2013-03-04")):
        line = next(line for line in text.splitlines() if line.split() and line.split()[0] == ticker)
        assert predicted in line and target in line


def test_without_secondary_columns_a_table_runs_wider_rather_than_cut(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    text = _render(capsys, monkeypatch, "40")
    assert "…" not in text
    assert len(DATE.findall(text)) == 4
    assert all(name in " ".join(text.split()) for name in COLUMNS)


def test_free_text_wraps_between_words_and_keeps_numbers_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "60")
    reason = "candidate MAE 4.1000 is not better than production 4.6000 by the 1% required on 2013-03-01"
    output.table(
        "Promotions",
        ["Decided", "Candidate", "Reason"],
        [["2013-03-01 22:00", "v3", reason]],
        text=["Reason"],
    )
    text = capsys.readouterr().out
    assert "…" not in text
    words = " ".join(cell.strip() for line in text.splitlines() for cell in line.split("│")[3:4])
    for token in ("4.1000", "4.6000", "2013-03-01", "required"):
        assert token in words.split(), words


def test_a_pipe_without_columns_is_laid_out_120_wide(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output.output_width() == output.NON_TERMINAL_WIDTH == 120
    monkeypatch.setenv("COLUMNS", "73")
    assert output.output_width() == 73


@pytest.mark.parametrize("width", ["60", "200"])
def test_report_piped_to_a_file_never_cuts_dates_or_names(
    cli: Cli,
    make_settings,  # type: ignore[no-untyped-def]
    database_url: str,
    width: str,
) -> None:
    report_data.fill(make_settings(database_url))
    result = cli("report", env={"COLUMNS": width})
    assert result.exit_code == 0, result.output
    assert not CUT_DATE.search(result.stdout), result.stdout
    assert "…" not in result.stdout, result.stdout
    assert "Production" in result.stdout  # a column header once cut to "Producti…"
    assert "2013-03-04" in result.stdout  # the target session of the newest predictions
    if width == "60":
        table_lines = [line for line in result.stdout.splitlines() if "│" in line or "┃" in line]
        assert all(len(line) <= 60 for line in table_lines), result.stdout


@pytest.mark.parametrize(
    ("source", "p_value", "interval_source", "expected"),
    [
        ("naive", 0.4861, "garch", "naive (p 0.49) / garch"),  # naive says why: the test's p-value
        ("model", 0.00436, "model", "model (p 0.0044) / model"),
        ("naive", None, None, "naive / -"),  # a prediction stored before selections existed
    ],
)
def test_what_is_served_is_shown_with_the_p_value_of_the_test_that_chose_it(
    source: str, p_value: float | None, interval_source: str | None, expected: str
) -> None:
    assert output.fmt_served(source, p_value, interval_source) == expected


def test_emit_checks_a_non_finite_number_as_a_float_and_prints_it_as_null(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A NaN wall time or an infinite rate is a float to the shape check (no crash after the work is
    done) and null in the JSON; a value of the wrong type is still refused."""
    import json

    output.emit("notify", urls=[], events=["failure"], timeout_s=float("nan"))
    assert json.loads(capsys.readouterr().out) == {"urls": [], "events": ["failure"], "timeout_s": None}
    output.emit("notify", urls=[], events=[], timeout_s=float("inf"))
    assert json.loads(capsys.readouterr().out)["timeout_s"] is None
    with pytest.raises(ValueError, match="timeout_s"):
        output.emit("notify", urls=[], events=[], timeout_s="soon")
