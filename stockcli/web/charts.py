"""Charts drawn as inline SVG on the server: no script, no network, the same in the page and the report.

Every piece of text that reaches the SVG (tickers, dates, versions, sources) is escaped here, so the
markup can be placed into a template as-is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

from stockcli.formats import finite, interval, number, p_value
from stockcli.services.report import CloseSeries, PredictionRow

# The predicted session gets this share of the plot's width, so its band reads as a fan, not a sliver.
FORECAST_SHARE = 0.12
# Fallback fills, for an SVG shown without the stylesheet (the stylesheet's rules take precedence).
BAND_FILL = {"95": ("#e8590c", "0.16"), "80": ("#e8590c", "0.38")}


def _num(value: float) -> str:
    return f"{value:.1f}"


def served_text(prediction: PredictionRow) -> str:
    """What the served point is and why, in words (for tooltips)."""
    if prediction.source == "naive":
        return f"the naive forecast (last close): the model was not significantly better, p {p_value(prediction.p_value)}"
    text = f"model v{prediction.model_version}"
    if prediction.source == "model":
        text += f", better than naive with p {p_value(prediction.p_value)}"
    return text


def bands(prediction: PredictionRow) -> list[tuple[str, float, float]]:
    """The prediction's intervals that can be drawn, widest first: [("95", low, high), ("80", low, high)]."""
    drawn = []
    for level, low, high in (
        ("95", prediction.lower_95, prediction.upper_95),
        ("80", prediction.lower_80, prediction.upper_80),
    ):
        low_value, high_value = finite(low), finite(high)
        if low_value is not None and high_value is not None and low_value <= high_value:
            drawn.append((level, low_value, high_value))
    return drawn


@dataclass(frozen=True)
class _Frame:
    """Where a session index and a price land in the plot."""

    left: float
    history_right: float  # the last stored session
    target_x: float  # a predicted session beyond the stored ones
    sessions: int  # stored sessions
    top: float
    bottom: float
    low: float
    high: float

    def x(self, index: int) -> float:
        if index >= self.sessions and self.history_right < self.target_x:
            return self.target_x
        return self.left + (self.history_right - self.left) * index / max(self.sessions - 1, 1)

    def y(self, value: float) -> float:
        return self.top + (self.bottom - self.top) * (self.high - value) / (self.high - self.low)


def fan_chart_svg(
    series: CloseSeries, *, width: int = 760, height: int = 320, element_id: str = "price-chart"
) -> Markup:
    """Recent closes, then at the predicted session a fan: the 95% band (light) and the 80% band (dark)
    opening from the last close, the median, the served forecast (dot) and the naive forecast (square)."""
    closes = list(series.closes)
    prediction = series.prediction
    drawn_bands = bands(prediction) if prediction is not None else []
    extra: list[float | None] = []
    if prediction is not None:
        extra += [prediction.predicted_close, prediction.median, prediction.base_close]
        extra += [value for _, low, high in drawn_bands for value in (low, high)]
    values = [v for v in (finite(value) for value in [*closes, *extra]) if v is not None]
    ticker = escape(series.ticker)
    label = f"{series.ticker}: last {len(closes)} closes" + (
        " and the next-session forecast with its 80% and 95% intervals"
        if drawn_bands
        else (" and the next-session prediction" if prediction else "")
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
    left, right, top, bottom = 64, 24, 16, 56
    plot_right, plot_bottom = width - right, height - bottom
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or max(abs(high) * 0.01, 1.0)
    dates = list(series.dates)
    target_index = None
    if prediction is not None:
        target_index = dates.index(prediction.target_date) if prediction.target_date in dates else len(dates)
    # Stored sessions are evenly spaced; a predicted session beyond them gets a wider slot of its own.
    beyond = target_index is not None and target_index >= len(dates)
    frame = _Frame(
        left=left,
        history_right=plot_right - (plot_right - left) * FORECAST_SHARE if beyond else plot_right,
        target_x=plot_right - 8.0,
        sessions=len(dates),
        top=top,
        bottom=plot_bottom,
        low=low - pad,
        high=high + pad,
    )
    x, y = frame.x, frame.y
    parts = [head]
    for step in range(5):
        level = frame.low + (frame.high - frame.low) * step / 4
        parts.append(
            f'<line class="grid" x1="{left}" x2="{plot_right}" y1="{_num(y(level))}" y2="{_num(y(level))}"/>'
            f'<text class="axis" x="{left - 6}" y="{_num(y(level) + 4)}" text-anchor="end">{number(level)}</text>'
        )
    axis_y = plot_bottom + 16
    if dates:
        parts.append(
            f'<text class="axis" x="{_num(x(0))}" y="{axis_y}" text-anchor="start">{escape(dates[0].isoformat())}</text>'
        )
        if len(dates) > 1:
            parts.append(
                f'<text class="axis" x="{_num(x(len(dates) - 1))}" y="{axis_y}" '
                f'text-anchor="end">{escape(dates[-1].isoformat())}</text>'
            )
    if prediction is not None and target_index is not None:
        parts.append(_fan(prediction, drawn_bands, frame, dates, target_index, axis_y))
    points = " ".join(f"{_num(x(i))},{_num(y(v))}" for i, v in enumerate(closes) if finite(v) is not None)
    parts.append(f'<polyline class="actual" fill="none" points="{points}"/>')
    for index, (day, value) in enumerate(zip(dates, closes, strict=False)):
        if finite(value) is not None:
            parts.append(
                f'<circle class="actual-point" cx="{_num(x(index))}" cy="{_num(y(value))}" r="2">'
                f"<title>{escape(day.isoformat())}: close {number(value)}</title></circle>"
            )
    if prediction is not None and target_index is not None:
        parts.append(_points(prediction, series.naive, frame, dates, target_index))
    parts.append(_legend(left, plot_right, height - 12, with_bands=bool(drawn_bands)))
    parts.append("</svg>")
    return Markup("".join(parts))


def _base_point(prediction: PredictionRow, frame: _Frame, dates: list[date]) -> tuple[float, float]:
    base_index = dates.index(prediction.base_date) if prediction.base_date in dates else len(dates) - 1
    return frame.x(max(base_index, 0)), frame.y(prediction.base_close)


def _fan(
    prediction: PredictionRow,
    drawn_bands: list[tuple[str, float, float]],
    frame: _Frame,
    dates: list[date],
    target_index: int,
    axis_y: float,
) -> str:
    """The shaded next-session zone and the fan of bands (drawn under the closes and the points)."""
    base_x, base_y = _base_point(prediction, frame, dates)
    tx = frame.x(target_index)
    target = escape(prediction.target_date.isoformat())
    source = escape(prediction.interval_source or "model")
    parts = [
        f'<rect class="forecast-zone" x="{_num(base_x)}" y="{frame.top}" width="{_num(max(tx - base_x, 0) + 8)}" '
        f'height="{_num(frame.bottom - frame.top)}"/>',
        f'<text class="axis target" x="{_num(tx + 8)}" y="{axis_y}" text-anchor="end">{target}</text>',
    ]
    for level, low, high in drawn_bands:
        fill, opacity = BAND_FILL[level]
        where = f"{interval(low, high)} ({source} interval"
        if prediction.interval_p_value is not None:
            where += f", p {p_value(prediction.interval_p_value)}"
        parts.append(
            f'<polygon class="band band-{level}" fill="{fill}" fill-opacity="{opacity}" '
            f'points="{_num(base_x)},{_num(base_y)} {_num(tx)},{_num(frame.y(high))} {_num(tx)},{_num(frame.y(low))}">'
            f"<title>{level}% interval for {target}: {where})</title></polygon>"
        )
    median = finite(prediction.median)
    if drawn_bands and median is not None:
        my = _num(frame.y(median))
        parts.append(
            f'<line class="median" x1="{_num(tx - 14)}" x2="{_num(tx + 6)}" y1="{my}" y2="{my}">'
            f"<title>Median for {target}: {number(median)}</title></line>"
        )
    return "".join(parts)


def _points(
    prediction: PredictionRow,
    naive: tuple[date, float] | None,
    frame: _Frame,
    dates: list[date],
    target_index: int,
) -> str:
    """The naive forecast (square) and the served forecast (dot) at the predicted session."""
    base_x, base_y = _base_point(prediction, frame, dates)
    tx = frame.x(target_index)
    target = escape(prediction.target_date.isoformat())
    parts = []
    naive_value = finite(naive[1]) if naive is not None else None
    if naive_value is not None:
        ny = frame.y(naive_value)
        parts.append(
            f'<line class="naive-link" x1="{_num(base_x)}" y1="{_num(base_y)}" x2="{_num(tx)}" y2="{_num(ny)}"/>'
            f'<rect class="naive point" x="{_num(tx - 4)}" y="{_num(ny - 4)}" width="8" height="8">'
            f"<title>Naive forecast for {target}: {number(naive_value)} (last close)</title></rect>"
        )
    served = finite(prediction.predicted_close)
    if served is not None:
        py = frame.y(served)
        unseen = (
            f"; v{prediction.model_version} never trained on {prediction.ticker}" if prediction.unseen else ""
        )
        parts.append(
            f'<line class="predicted-link" x1="{_num(base_x)}" y1="{_num(base_y)}" x2="{_num(tx)}" y2="{_num(py)}"/>'
            f'<circle class="predicted point" cx="{_num(tx)}" cy="{_num(py)}" r="5">'
            f"<title>Served forecast for {target}: {number(served)} "
            f"({escape(served_text(prediction) + unseen)})</title></circle>"
        )
    return "".join(parts)


def _legend(left: float, plot_right: float, baseline: float, *, with_bands: bool) -> str:
    items = [
        (56, '<line class="actual" x1="0" x2="16" y1="-4" y2="-4"/>', "close"),
        (118, '<circle class="predicted" cx="6" cy="-4" r="4"/>', "served forecast"),
        (138, '<rect class="naive" x="2" y="-8" width="8" height="8"/>', "naive (last close)"),
    ]
    if with_bands:
        light = _swatch("95")
        items += [(80, light + _swatch("80"), "80% band"), (80, light, "95% band")]  # 80 lies on 95
    total = sum(step for step, _, _ in items)
    offset = left + (plot_right - left - total) / 2
    parts = [f'<g class="legend" transform="translate({_num(offset)},{_num(baseline)})">']
    position = 0
    for step, mark, text in items:
        parts.append(
            f'<g transform="translate({position},0)">{mark}<text x="20" y="0">{escape(text)}</text></g>'
        )
        position += step
    parts.append("</g>")
    return "".join(parts)


def _swatch(level: str) -> str:
    fill, opacity = BAND_FILL[level]
    return (
        f'<rect class="legend-band legend-band-{level}" fill="{fill}" fill-opacity="{opacity}" '
        'x="0" y="-10" width="14" height="10"/>'
    )


def sparkline_svg(
    values: Sequence[float], predicted: float | None = None, *, width: int = 120, height: int = 28
) -> Markup:
    """A tiny line of recent closes with the predicted close as a dot one step beyond."""
    closes = [v for v in values if finite(v) is not None]
    target = finite(predicted)
    everything = closes + ([target] if target is not None else [])
    if len(everything) < 2:
        return Markup(
            f'<svg class="spark" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg"></svg>'
        )
    low, high = min(everything), max(everything)
    span = (high - low) or 1.0
    slots = len(closes) + (1 if target is not None else 0)

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
    if target is not None:
        parts.append(
            f'<circle class="predicted" cx="{_num(x(len(closes)))}" cy="{_num(y(target))}" r="2.5"/>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
