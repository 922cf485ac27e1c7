"""How numbers are written for people, for the CLI's tables, the HTML templates and the SVG charts.

"-" stands for a value that is missing or not finite.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "-"


def finite(value: Any) -> float | None:
    """`value` as a finite float, or None (None, booleans, text, NaN and infinities)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def number(value: Any, digits: int = 2) -> str:
    """`1,234.57`; text that is not a number is shown as it is."""
    if value is None or isinstance(value, bool):
        return MISSING
    try:
        checked = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f"{checked:,.{digits}f}" if math.isfinite(checked) else MISSING


def percent(value: Any, digits: int = 2, signed: bool = False) -> str:
    """A fraction as a percentage: 0.0123 -> `1.23%` (`+1.23%` when signed)."""
    checked = finite(value)
    if checked is None:
        return MISSING
    shown = round(checked * 100, digits) + 0.0  # + 0.0: what rounds to zero never shows as "-0.0%"
    return f"{shown:+.{digits}f}%" if signed else f"{shown:.{digits}f}%"


def p_value(value: Any) -> str:
    """A test's p-value with two significant digits: `0.012`, `0.62`, `< 0.001`."""
    checked = finite(value)
    if checked is None:
        return MISSING
    return "< 0.001" if checked < 0.001 else f"{checked:.2g}"


def interval(low: Any, high: Any, digits: int = 2) -> str:
    """`796.89 – 822.14`, or "-" when a bound is missing."""
    if finite(low) is None or finite(high) is None:
        return MISSING
    return f"{number(low, digits)} – {number(high, digits)}"


def percent_interval(low: Any, high: Any, digits: int = 1) -> str:
    """A confidence interval of a fraction: `+4.1% to +17.7%`, or "-" when a bound is missing."""
    if finite(low) is None or finite(high) is None:
        return MISSING
    return f"{percent(low, digits, True)} to {percent(high, digits, True)}"


def format_metrics(values: dict[str, Any] | None) -> str:
    """`mae 4.10, skill -0.0123, test dm`: every metric; a number below 1 with four decimals, else two."""
    if not values:
        return MISSING

    def shown(value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return number(value, 4 if abs(value) < 1 else 2)
        return value

    return ", ".join(f"{name} {shown(value)}" for name, value in values.items())
