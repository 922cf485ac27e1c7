"""Jinja2 rendering shared by the dashboard and the self-contained HTML report.
Autoescape is on; only `charts.py` markup (which escapes its own text) and our stylesheet go in as-is."""

from __future__ import annotations

import functools
from datetime import date, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from stockcli import formats
from stockcli.services.report import Report
from stockcli.web import charts

WEB_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = WEB_DIR / "templates"
STATIC_DIR = WEB_DIR / "static"


def _day(value: date | None) -> str:
    return value.isoformat() if value else "-"


def _moment(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M %Z").strip() if value else "-"


def metrics_brief(values: dict[str, Any] | None) -> str:
    """`MAE 5.16 (naive 3.35), skill -29.7%` when those are there; otherwise every metric."""
    if not values or "mae" not in values:
        return formats.format_metrics(values)
    text = f"MAE {formats.number(values['mae'])}"
    if values.get("naive_mae") is not None:
        text += f" (naive {formats.number(values['naive_mae'])})"
    if isinstance(values.get("skill"), int | float):
        text += f", skill {formats.percent(values['skill'], 1, True)}"
    return text


@functools.lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=select_autoescape(["html", "svg"], default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        number=formats.number,
        percent=formats.percent,
        p_value=formats.p_value,
        interval=formats.interval,
        percent_interval=formats.percent_interval,
        day=_day,
        moment=_moment,
        metrics=formats.format_metrics,
        metrics_brief=metrics_brief,
    )
    env.globals.update(
        fan_chart=charts.fan_chart_svg,
        var_chart=charts.var_exceptions_svg,
        exceptions_caption=charts.exceptions_caption,
        sqrt_time=charts.SQRT_TIME,
        sparkline=charts.sparkline_svg,
    )
    return env


@functools.lru_cache(maxsize=1)
def stylesheet() -> str:
    return (STATIC_DIR / "style.css").read_text(encoding="utf-8")


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


def render_report_html(report: Report, *, database: str) -> str:
    """The whole report as one HTML file: inline CSS, inline SVG charts, nothing fetched."""
    return render(
        "report.html",
        report=report,
        database=database,
        series_by_ticker={series.ticker: series for series in report.recent_closes},
        inline_css=stylesheet(),
    )
