"""Charts drawn as inline SVG on the server: no script, no network, the same in the page and the report.

Every piece of text that reaches the SVG (tickers, dates, versions) is escaped here, so the markup can
be placed into a template as-is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date

from markupsafe import Markup, escape

from stockcli.services.report import CloseSeries


def _fmt(value: float) -> str:
    return f"{value:,.2f}"


def _num(value: float) -> str:
    return f"{value:.1f}"


def _finite(values: Sequence[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def price_chart_svg(
    series: CloseSeries, *, width: int = 760, height: int = 300, element_id: str = "price-chart"
) -> Markup:
    """Recent closes as a line, the predicted close and the naive forecast as points one session on."""
    closes = list(series.closes)
    prediction = series.prediction
    naive = series.naive
    extra = [prediction.predicted_close] if prediction else []
    if naive:
        extra.append(naive[1])
    values = _finite(closes + extra)
    ticker = escape(series.ticker)
    label = f"{series.ticker}: last {len(closes)} closes" + (
        " and the next-session prediction" if prediction else ""
    )
    head = (
        f'<svg id="{escape(element_id)}" class="chart" data-ticker="{ticker}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>"
    )
    if not values:
        return Markup(
            head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">'
            f"No closes stored for {ticker}.</text></svg>"
        )
    left, right, top, bottom = 64, 24, 16, 40
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or max(abs(high) * 0.01, 1.0)
    low, high = low - pad, high + pad
    # One slot per stored session, plus one for the predicted session when it lies beyond them.
    dates = list(series.dates)
    target_index = None
    if prediction is not None:
        target_index = dates.index(prediction.target_date) if prediction.target_date in dates else len(dates)
    slots = max(len(dates), (target_index or 0) + 1, 2)

    def x(index: float) -> float:
        return left + (width - left - right) * index / (slots - 1)

    def y(value: float) -> float:
        return top + (height - top - bottom) * (high - value) / (high - low)

    parts = [head]
    for step in range(5):
        level = low + (high - low) * step / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{width - right}" y1="{_num(y(level))}" y2="{_num(y(level))}"/>'
            f'<text class="axis" x="{left - 6}" y="{_num(y(level) + 4)}" text-anchor="end">{_fmt(level)}</text>'
        )
    if dates:
        parts.append(
            f'<text class="axis" x="{_num(x(0))}" y="{height - 14}" text-anchor="start">{escape(dates[0].isoformat())}</text>'
        )
        if len(dates) > 1:
            parts.append(
                f'<text class="axis" x="{_num(x(len(dates) - 1))}" y="{height - 14}" '
                f'text-anchor="end">{escape(dates[-1].isoformat())}</text>'
            )
    points = " ".join(f"{_num(x(i))},{_num(y(v))}" for i, v in enumerate(closes) if math.isfinite(v))
    parts.append(f'<polyline class="actual" fill="none" points="{points}"/>')
    for index, (day, value) in enumerate(zip(dates, closes, strict=False)):
        if math.isfinite(value):
            parts.append(
                f'<circle class="actual-point" cx="{_num(x(index))}" cy="{_num(y(value))}" r="2">'
                f"<title>{escape(day.isoformat())}: close {_fmt(value)}</title></circle>"
            )
    if prediction is not None and target_index is not None:
        base_index = dates.index(prediction.base_date) if prediction.base_date in dates else len(dates) - 1
        base_x, base_y = x(max(base_index, 0)), y(prediction.base_close)
        tx = x(target_index)
        target = escape(prediction.target_date.isoformat())
        if naive is not None and math.isfinite(naive[1]):
            parts.append(
                f'<line class="naive-link" x1="{_num(base_x)}" y1="{_num(base_y)}" x2="{_num(tx)}" y2="{_num(y(naive[1]))}"/>'
                f'<rect class="naive point" x="{_num(tx - 4)}" y="{_num(y(naive[1]) - 4)}" width="8" height="8">'
                f"<title>Naive forecast for {target}: {_fmt(naive[1])} (last close)</title></rect>"
            )
        if math.isfinite(prediction.predicted_close):
            py = y(prediction.predicted_close)
            parts.append(
                f'<line class="predicted-link" x1="{_num(base_x)}" y1="{_num(base_y)}" x2="{_num(tx)}" y2="{_num(py)}"/>'
                f'<circle class="predicted point" cx="{_num(tx)}" cy="{_num(py)}" r="5">'
                f"<title>Predicted close for {target}: {_fmt(prediction.predicted_close)} "
                f"(model v{escape(prediction.model_version)})</title></circle>"
                f'<text class="axis target" x="{_num(tx)}" y="{height - 2}" text-anchor="end">{target}</text>'
            )
    legend_x = left + (width - left - right) / 2 - 120
    parts.append(
        f'<g class="legend" transform="translate({_num(legend_x)},{height - 22})">'
        '<line class="actual" x1="0" x2="16" y1="4" y2="4"/><text x="20" y="8">close</text>'
        '<circle class="predicted" cx="70" cy="4" r="4"/><text x="78" y="8">predicted</text>'
        '<rect class="naive" x="146" y="0" width="8" height="8"/><text x="158" y="8">naive (last close)</text>'
        "</g>"
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def sparkline_svg(
    values: Sequence[float], predicted: float | None = None, *, width: int = 120, height: int = 28
) -> Markup:
    """A tiny line of recent closes with the predicted close as a dot one step beyond."""
    closes = [v for v in values if math.isfinite(v)]
    everything = closes + ([predicted] if predicted is not None and math.isfinite(predicted) else [])
    if len(everything) < 2:
        return Markup(
            f'<svg class="spark" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"></svg>'
        )
    low, high = min(everything), max(everything)
    span = (high - low) or 1.0
    slots = len(closes) + (1 if predicted is not None else 0)

    def x(index: int) -> float:
        return 2 + (width - 6) * index / max(slots - 1, 1)

    def y(value: float) -> float:
        return 2 + (height - 4) * (high - value) / span

    points = " ".join(f"{_num(x(i))},{_num(y(v))}" for i, v in enumerate(closes))
    parts = [
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        'xmlns="http://www.w3.org/2000/svg" aria-hidden="true">',
        f'<polyline class="actual" fill="none" points="{points}"/>',
    ]
    if predicted is not None and math.isfinite(predicted):
        parts.append(
            f'<circle class="predicted" cx="{_num(x(len(closes)))}" cy="{_num(y(predicted))}" r="2.5"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def date_label(day: date | None) -> str:
    return day.isoformat() if day else "-"
