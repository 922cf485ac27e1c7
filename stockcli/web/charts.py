"""Charts drawn as inline SVG on the server: no script, no network, the same in the page and the report.

Every text that reaches the SVG is escaped here, so templates insert the markup as-is.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date

from markupsafe import Markup, escape

from stockcli.formats import finite, interval, number, p_value, percent
from stockcli.services.report import (
    CloseSeries,
    ExceptionDay,
    FanPoint,
    HorizonFan,
    PredictionRow,
    VarExceptions,
)

# The predicted session gets this share of the plot's width, so its band reads as a fan, not a sliver.
FORECAST_SHARE = 0.12
# Fallback fills, for an SVG shown without the stylesheet (the stylesheet's rules take precedence).
BAND_FILL = {"95": ("#e8590c", "0.16"), "80": ("#e8590c", "0.38")}
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 16, 56  # plot margins


def _num(value: float) -> str:
    return f"{value:.1f}"


def _fill(level: str) -> str:
    fill, opacity = BAND_FILL[level]
    return f'fill="{fill}" fill-opacity="{opacity}"'


def _coords(points: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{_num(x)},{_num(y)}" for x, y in points)


def served_text(prediction: PredictionRow) -> str:
    """What the served point is and why, in words (for tooltips)."""
    if prediction.source == "naive":
        return f"the naive forecast (last close): the model was not significantly better, p {p_value(prediction.p_value)}"
    text = f"model v{prediction.model_version}"
    if prediction.source == "model":
        text += f", better than naive with p {p_value(prediction.p_value)}"
    return text


def _band(forecast: PredictionRow | FanPoint, level: str) -> tuple[float, float] | None:
    low, high = finite(getattr(forecast, f"lower_{level}")), finite(getattr(forecast, f"upper_{level}"))
    return (low, high) if low is not None and high is not None and low <= high else None


@dataclass(frozen=True)
class _Frame:
    """Where a session index and a price land in the plot."""

    left: float
    right: float
    history_right: float  # the last stored session
    sessions: int  # stored sessions
    top: float
    bottom: float
    low: float
    high: float

    @classmethod
    def fit(
        cls, width: int, height: int, values: list[float], flat_pad: float, sessions: int, *, slot: bool
    ) -> _Frame:
        """The plot of `values` with 8% headroom (`flat_pad` when they are all equal); `slot`: the
        predicted session gets FORECAST_SHARE of the width beyond the stored ones."""
        right = width - RIGHT
        low, high = min(values), max(values)
        pad = (high - low) * 0.08 or flat_pad
        history_right = right - (right - LEFT) * FORECAST_SHARE if slot else right
        return cls(LEFT, right, history_right, sessions, TOP, height - BOTTOM, low - pad, high + pad)

    @property
    def target_x(self) -> float:  # a predicted session beyond the stored ones
        return self.right - 8.0

    def x(self, index: int) -> float:
        if index >= self.sessions and self.history_right < self.target_x:
            return self.target_x
        return self.left + (self.history_right - self.left) * index / max(self.sessions - 1, 1)

    def y(self, value: float) -> float:
        return self.top + (self.bottom - self.top) * (self.high - value) / (self.high - self.low)


def _svg_open(element_id: str, ticker: str, width: int, height: int, label: str, kind: str = "chart") -> str:
    return (
        f'<svg id="{escape(element_id)}" class="{kind}" data-ticker="{escape(ticker)}" viewBox="0 0 {width} {height}" '
        f'width="100%" preserveAspectRatio="xMidYMid meet" role="img" aria-label="{escape(label)}" '
        'xmlns="http://www.w3.org/2000/svg">'
        f"<title>{escape(label)}</title>"
    )


def _empty(head: str, width: int, height: int, text: str) -> Markup:
    return Markup(
        head
        + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="empty">{escape(text)}</text></svg>'
    )


def _grid(frame: _Frame, label: Callable[[float], str]) -> str:
    """Five horizontal grid lines with their values on the left axis."""
    levels = [frame.low + (frame.high - frame.low) * step / 4 for step in range(5)]
    return "".join(
        f'<line class="grid" x1="{frame.left}" x2="{frame.right}" y1="{_num(frame.y(level))}" y2="{_num(frame.y(level))}"/>'
        f'<text class="axis" x="{frame.left - 6}" y="{_num(frame.y(level) + 4)}" text-anchor="end">{escape(label(level))}</text>'
        for level in levels
    )


def _date_labels(frame: _Frame, dates: Sequence[date], positions: Sequence[int], axis_y: float) -> str:
    """The first and the last of `dates` under the axis, at their session positions."""
    if not dates:
        return ""
    ends = [(positions[0], dates[0], "start")]
    if len(dates) > 1:
        ends.append((positions[-1], dates[-1], "end"))
    return "".join(
        f'<text class="axis" x="{_num(frame.x(at))}" y="{axis_y}" text-anchor="{anchor}">{escape(day.isoformat())}</text>'
        for at, day, anchor in ends
    )


def _session_axis(series: CloseSeries, fan: HorizonFan | None) -> list[date]:
    """The sessions the chart spans: the stored ones, then (with a fan) those up to the farthest target."""
    if fan is None:
        return list(series.dates)
    ahead = set(fan.sessions)
    if series.prediction is not None:
        ahead.add(series.prediction.target_date)
    return sorted(set(series.dates) | ahead)


def fan_chart_svg(
    series: CloseSeries, *, width: int = 760, height: int = 320, element_id: str = "price-chart"
) -> Markup:
    """Recent closes, then a fan from the last close: 95% and 80% bands, the median, the served
    forecast (dot) and the naive one (square); with `series.fan`, up to the farthest stored horizon
    (bands interpolated in the square root of time) over the 1-session bands served in the past."""
    closes = list(series.closes)
    prediction = series.prediction
    fan = series.fan if series.fan is not None and series.fan.horizons and series.fan.base_close > 0 else None
    drawn_bands: list[tuple[str, float, float]] = []  # the drawable intervals, widest first
    if prediction is not None:
        drawn_bands = [
            (level, *band) for level in ("95", "80") if (band := _band(prediction, level)) is not None
        ]
    axis = _session_axis(series, fan)
    position = {day: index for index, day in enumerate(axis)}
    last_stored = series.dates[-1] if series.dates else None
    past = [
        p
        for p in (fan.past if fan else ())
        if p.target_date in position and last_stored and p.target_date <= last_stored
    ]
    extra: list[float | None] = []
    if prediction is not None:
        extra += [prediction.predicted_close, prediction.median, prediction.base_close]
        extra += [value for _, low, high in drawn_bands for value in (low, high)]
    for point in [*(fan.horizons if fan else ()), *past]:
        extra += [point.lower_95, point.lower_80, point.median, point.upper_80, point.upper_95]
    values = [v for v in (finite(value) for value in [*closes, *extra]) if v is not None]
    label = _fan_label(series, fan, len(past), bool(drawn_bands))
    head = _svg_open(element_id, series.ticker, width, height, label)
    if not values:
        return _empty(head, width, height, f"No closes stored for {series.ticker}.")
    target_index = None if prediction is None else position.get(prediction.target_date, len(axis))
    beyond = target_index is not None and target_index >= len(axis)
    frame = _Frame.fit(width, height, values, max(abs(max(values)) * 0.01, 1.0), len(axis), slot=beyond)
    x, y = frame.x, frame.y
    axis_y = frame.bottom + 16
    dates = list(series.dates)
    parts = [head, _grid(frame, number), _date_labels(frame, dates, [position[d] for d in dates], axis_y)]
    under, over = "", ""
    if prediction is not None and target_index is not None:
        under, over = _next_session(prediction, drawn_bands, frame, axis, target_index, axis_y)
    if fan is not None:
        parts.append(_horizon_fan(fan, frame, position, axis_y))
        parts.append(_past_bands(past, frame, position))
    else:
        parts.append(under)
    drawn = [(day, value) for day, value in zip(dates, closes, strict=False) if finite(value) is not None]
    points = _coords((x(position[day]), y(value)) for day, value in drawn)
    parts.append(f'<polyline class="actual" fill="none" points="{points}"/>')
    for day, value in drawn:
        parts.append(
            f'<circle class="actual-point" cx="{_num(x(position[day]))}" cy="{_num(y(value))}" r="2">'
            f"<title>{escape(day.isoformat())}: close {number(value)}</title></circle>"
        )
    legend = list(FAN_LEGEND)
    if drawn_bands or fan is not None:
        light = _swatch("95")
        legend += [(80, light + _swatch("80"), "80% band"), (80, light, "95% band")]  # 80 lies on 95
    parts += [over, _legend(frame, height - 12, legend), "</svg>"]
    return Markup("".join(parts))


# How the fan's bands are drawn between its stored horizons (the charts' text alternative says it).
SQRT_TIME = "interpolated in the square root of time between the stored horizons"


def _fan_label(series: CloseSeries, fan: HorizonFan | None, past: int, with_bands: bool) -> str:
    label = f"{series.ticker}: last {len(series.closes)} closes"
    if fan is None:
        if with_bands:
            return label + " and the next-session forecast with its 80% and 95% intervals"
        return label + (" and the next-session prediction" if series.prediction else "")
    if past:
        label += f", drawn over the 1-session 80% and 95% bands served for {past} of them"
    horizons = ", ".join(str(point.horizon) for point in fan.horizons)
    farthest = fan.horizons[-1]
    return (
        label + f"; the forecast from the close of {fan.base_date.isoformat()} ({number(fan.base_close)}) "
        f"{farthest.horizon} sessions ahead: median and 80% and 95% bands at horizons {horizons}, "
        f"{SQRT_TIME}; {farthest.horizon} sessions ahead ({farthest.target_date.isoformat()}) the 80% band is "
        f"{interval(farthest.lower_80, farthest.upper_80)} and the 95% band {interval(farthest.lower_95, farthest.upper_95)}"
    )


def _zone(frame: _Frame, start_x: float, end_x: float) -> str:
    """The shaded forecast zone from `start_x` to a slot beyond `end_x`."""
    return (
        f'<rect class="forecast-zone" x="{_num(start_x)}" y="{frame.top}" width="{_num(max(end_x - start_x, 0) + 8)}" '
        f'height="{_num(frame.bottom - frame.top)}"/>'
    )


def _target_label(at: float, axis_y: float, day: date) -> str:
    return f'<text class="axis target" x="{_num(at + 8)}" y="{axis_y}" text-anchor="end">{escape(day.isoformat())}</text>'


def _next_session(
    prediction: PredictionRow,
    drawn_bands: list[tuple[str, float, float]],
    frame: _Frame,
    dates: list[date],
    target_index: int,
    axis_y: float,
) -> tuple[str, str]:
    """The predicted session's marks: under the closes, the shaded zone and the fan of bands; over them,
    the naive forecast (square: the last close) and the served one (dot)."""
    base_index = dates.index(prediction.base_date) if prediction.base_date in dates else len(dates) - 1
    base_x, base_y = frame.x(max(base_index, 0)), frame.y(prediction.base_close)
    tx = frame.x(target_index)
    target = escape(prediction.target_date.isoformat())
    source = escape(prediction.interval_source or "model")
    under = [_zone(frame, base_x, tx), _target_label(tx, axis_y, prediction.target_date)]
    for level, low, high in drawn_bands:
        where = f"{interval(low, high)} ({source} interval"
        if prediction.interval_p_value is not None:
            where += f", p {p_value(prediction.interval_p_value)}"
        under.append(
            f'<polygon class="band band-{level}" {_fill(level)} '
            f'points="{_coords([(base_x, base_y), (tx, frame.y(high)), (tx, frame.y(low))])}">'
            f"<title>{level}% interval for {target}: {where})</title></polygon>"
        )
    median = finite(prediction.median)
    if drawn_bands and median is not None:
        my = _num(frame.y(median))
        under.append(
            f'<line class="median" x1="{_num(tx - 14)}" x2="{_num(tx + 6)}" y1="{my}" y2="{my}">'
            f"<title>Median for {target}: {number(median)}</title></line>"
        )
    over = []
    naive_value = finite(prediction.base_close)
    if naive_value is not None:
        ny = frame.y(naive_value)
        over.append(
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
        over.append(
            f'<line class="predicted-link" x1="{_num(base_x)}" y1="{_num(base_y)}" x2="{_num(tx)}" y2="{_num(py)}"/>'
            f'<circle class="predicted point" cx="{_num(tx)}" cy="{_num(py)}" r="5">'
            f"<title>Served forecast for {target}: {number(served)} "
            f"({escape(served_text(prediction) + unseen)})</title></circle>"
        )
    return "".join(under), "".join(over)


def sqrt_time_path(base: float, known: Sequence[tuple[int, float | None]], steps: int) -> list[float | None]:
    """Prices 0..`steps` sessions ahead through the `known` (sessions ahead, price) points: log(price /
    base) linear in the square root of the sessions ahead between them; None beyond the farthest."""
    stored = sorted(
        (math.sqrt(ahead), math.log(price / base))
        for ahead, price in known
        if price is not None and math.isfinite(price) and price > 0 and ahead > 0
    )
    anchors = [(0.0, 0.0), *stored]
    path: list[float | None] = []
    for ahead in range(steps + 1):
        t = math.sqrt(ahead)
        value = None
        for (t0, v0), (t1, v1) in itertools.pairwise(anchors):
            if t0 <= t <= t1:
                value = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
                break
        path.append(base if ahead == 0 else (None if value is None else base * math.exp(value)))
    return path


def _horizon_fan(fan: HorizonFan, frame: _Frame, position: dict[date, int], axis_y: float) -> str:
    """The stored horizons' fan: 95% and 80% bands and the median, a mark at each stored horizon."""
    sessions = list(fan.sessions)
    ahead = {
        point.target_date: sessions.index(point.target_date) + 1
        for point in fan.horizons
        if point.target_date in sessions
    }
    base_at = position.get(fan.base_date, position[sessions[0]] - 1 if sessions else 0)
    xs = [frame.x(base_at)] + [frame.x(position[day]) for day in sessions]

    def path(name: str) -> list[float | None]:
        known = [(ahead[p.target_date], getattr(p, name)) for p in fan.horizons if p.target_date in ahead]
        return sqrt_time_path(fan.base_close, known, len(sessions))

    parts = [_zone(frame, xs[0], xs[-1])]
    for level in ("95", "80"):
        drawn = [
            (px, high, low)
            for px, high, low in zip(xs, path(f"upper_{level}"), path(f"lower_{level}"), strict=True)
            if high is not None and low is not None
        ]
        if len(drawn) < 2:
            continue
        outline = [(px, high) for px, high, _ in drawn] + [(px, low) for px, _, low in reversed(drawn)]
        points = _coords((px, frame.y(v)) for px, v in outline)
        parts.append(
            f'<polygon class="fan fan-{level}" {_fill(level)} points="{points}">'
            f"<title>{level}% band up to {len(drawn) - 1} sessions ahead, {SQRT_TIME}</title></polygon>"
        )
    medians = [(px, m) for px, m in zip(xs, path("median"), strict=True) if m is not None]
    if len(medians) > 1:
        points = _coords((px, frame.y(v)) for px, v in medians)
        parts.append(f'<polyline class="fan-median" fill="none" points="{points}"/>')
    for point in fan.horizons:
        if point.target_date in position:
            parts.append(_horizon_mark(point, frame, frame.x(position[point.target_date])))
    farthest = fan.horizons[-1].target_date
    if farthest in position:
        parts.append(_target_label(frame.x(position[farthest]), axis_y, farthest))
    return "".join(parts)


def _horizon_mark(point: FanPoint, frame: _Frame, at: float) -> str:
    """A stored horizon: a whisker over its 95% band, "+h" above the plot, its figures as a tooltip."""
    low, high = finite(point.lower_95), finite(point.upper_95)
    figures = (
        f"{point.horizon} sessions ahead ({point.target_date.isoformat()}): median {number(point.median)}, "
        f"80% {interval(point.lower_80, point.upper_80)}, 95% {interval(point.lower_95, point.upper_95)}"
        + (f" ({point.source})" if point.source else "")
    )
    parts = [f'<g class="horizon-mark" data-horizon="{point.horizon}"><title>{escape(figures)}</title>']
    if low is not None and high is not None:
        parts.append(
            f'<line class="horizon-whisker" x1="{_num(at)}" x2="{_num(at)}" y1="{_num(frame.y(high))}" y2="{_num(frame.y(low))}"/>'
        )
    parts.append(
        f'<text class="axis horizon-label" x="{_num(at)}" y="{_num(frame.top + 10)}" text-anchor="middle">+{point.horizon}</text></g>'
    )
    return "".join(parts)


def _past_bands(past: Sequence[FanPoint], frame: _Frame, position: dict[date, int]) -> str:
    """The 1-session 95% and 80% bands served for past sessions: one bar per session."""
    half = (frame.history_right - frame.left) / max(frame.sessions - 1, 1) * 0.4
    parts = []
    for level in ("95", "80"):
        bars = [
            (frame.x(position[p.target_date]), band) for p in past if (band := _band(p, level)) is not None
        ]
        shapes = [
            f"M{_num(at - half)},{_num(frame.y(high))}H{_num(at + half)}V{_num(frame.y(low))}H{_num(at - half)}Z"
            for at, (low, high) in bars
        ]
        if shapes:
            parts.append(
                f'<path class="past-band past-band-{level}" {_fill(level)} d="{"".join(shapes)}">'
                f"<title>The 1-session {level}% bands served for {len(shapes)} past sessions</title></path>"
            )
    return "".join(parts)


FAN_LEGEND = (
    (56, '<line class="actual" x1="0" x2="16" y1="-4" y2="-4"/>', "close"),
    (118, '<circle class="predicted" cx="6" cy="-4" r="4"/>', "served forecast"),
    (138, '<rect class="naive" x="2" y="-8" width="8" height="8"/>', "naive (last close)"),
)
VAR_LEGEND = (
    (78, '<circle class="returns" cx="6" cy="-4" r="2.5"/>', "return"),
    (98, '<line class="var-line var-95" x1="0" x2="16" y1="-4" y2="-4"/>', "-VaR 95%"),
    (98, '<line class="var-line var-99" x1="0" x2="16" y1="-4" y2="-4"/>', "-VaR 99%"),
    (110, '<circle class="exception exception-99" cx="6" cy="-4" r="4"/>', "99% exception"),
    (110, '<circle class="exception exception-95" cx="6" cy="-4" r="3"/>', "95% exception"),
)


def _legend(frame: _Frame, baseline: float, items: Sequence[tuple[int, str, str]]) -> str:
    """Legend entries (width, mark, text) centred under the plot."""
    total = sum(step for step, _, _ in items)
    offset = frame.left + (frame.right - frame.left - total) / 2
    starts = itertools.accumulate((step for step, _, _ in items), initial=0)
    entries = "".join(
        f'<g transform="translate({start},0)">{mark}<text x="20" y="0">{escape(text)}</text></g>'
        for start, (_, mark, text) in zip(starts, items, strict=False)
    )
    return f'<g class="legend" transform="translate({_num(offset)},{_num(baseline)})">{entries}</g>'


def _swatch(level: str) -> str:
    return (
        f'<rect class="legend-band legend-band-{level}" {_fill(level)} x="0" y="-10" width="14" height="10"/>'
    )


EMPTY_HEIGHT = 48  # a chart with nothing to draw yet: one line of text


def exceptions_caption(exceptions: VarExceptions | None, ticker: str) -> str:
    """The VaR exceptions chart's title in words: the counts and the Basel zone of its window."""
    if exceptions is None or not exceptions.days:
        return f"{ticker}: no scored 1-session VaR forecasts yet"
    zone = (
        f"Basel zone {exceptions.zone}"
        if exceptions.zone
        else f"no Basel zone yet (fewer than {exceptions.min_sessions} scored sessions)"
    )
    plural = "" if exceptions.exceptions_99 == 1 else "s"
    return (
        f"{ticker}: {exceptions.exceptions_99} exception{plural} of the 1-session 99% VaR "
        f"({exceptions.exceptions_95} of the 95% VaR) in {exceptions.n} scored sessions "
        f"(the risk window: the last {exceptions.risk_sessions}), {zone}"
    )


def var_exceptions_svg(
    exceptions: VarExceptions | None,
    ticker: str,
    *,
    width: int = 760,
    height: int = 240,
    element_id: str = "var-chart",
) -> Markup:
    """The risk window's 1-session returns (dots) against -VaR 95% and 99% (steps), exceptions ringed."""
    days = list(exceptions.days) if exceptions is not None else []
    caption = exceptions_caption(exceptions, ticker)
    head = _svg_open(element_id, ticker, width, height if days else EMPTY_HEIGHT, caption, "chart var-chart")
    if not days:
        return _empty(head, width, EMPTY_HEIGHT, f"No scored 1-session VaR forecasts for {ticker} yet.")
    values = [0.0] + [d.realized for d in days]
    values += [-v for d in days for v in (d.var_95, d.var_99) if v is not None]
    frame = _Frame.fit(width, height, values, 0.01, len(days), slot=False)
    x, y = frame.x, frame.y
    parts = [
        head,
        _grid(frame, lambda level: percent(level, 1)),
        f'<line class="zero" x1="{frame.left}" x2="{frame.right}" y1="{_num(y(0.0))}" y2="{_num(y(0.0))}"/>',
        _date_labels(frame, [d.target_date for d in days], [0, len(days) - 1], frame.bottom + 16),
    ]
    half = (frame.right - frame.left) / max(len(days) - 1, 1) / 2
    for level in ("95", "99"):
        steps = [
            f"M{_num(x(i) - half)},{_num(y(-v))}H{_num(x(i) + half)}"
            for i, d in enumerate(days)
            if (v := getattr(d, f"var_{level}")) is not None
        ]
        if steps:
            parts.append(
                f'<path class="var-line var-{level}" fill="none" d="{"".join(steps)}">'
                f"<title>-VaR {level}% of each session</title></path>"
            )
    dots = "".join(
        f'<circle cx="{_num(x(i))}" cy="{_num(y(d.realized))}" r="1.8"/>' for i, d in enumerate(days)
    )
    parts.append(f'<g class="returns">{dots}</g>')
    parts += [_exception_marks(days, frame), _legend(frame, height - 12, VAR_LEGEND), "</svg>"]
    return Markup("".join(parts))


def _exception_marks(days: Sequence[ExceptionDay], frame: _Frame) -> str:
    """A ring on each session whose loss exceeded its 99% VaR (large) or only its 95% VaR (small)."""
    parts = []
    for index, day in enumerate(days):
        for level, var, radius in (("99", day.var_99, 5.0), ("95", day.var_95, 3.5)):
            if var is not None and day.beyond(var):
                parts.append(
                    f'<circle class="exception exception-{level}" data-date="{day.target_date.isoformat()}" '
                    f'cx="{_num(frame.x(index))}" cy="{_num(frame.y(day.realized))}" r="{radius}">'
                    f"<title>{day.target_date.isoformat()}: return {percent(day.realized, 2, True)} below "
                    f"-VaR {level}% ({percent(-var, 2, True)})</title></circle>"
                )
                break
    return "".join(parts)


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
    slots = len(everything)

    def x(index: int) -> float:
        return 2 + (width - 6) * index / max(slots - 1, 1)

    def y(value: float) -> float:
        return 2 + (height - 4) * (high - value) / span

    points = _coords((x(i), y(v)) for i, v in enumerate(closes))
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
