"""The one JSON encoder: every layer turns its values into JSON through `to_plain` (or `dumps`).

NaN and infinities become null unless `strict` (they stay, for `allow_nan=False` to refuse, and an
unknown type raises instead of becoming its text) or `keep_non_finite` (a shape check before printing).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from datetime import date, datetime
from decimal import Decimal
from typing import Any


def to_plain(value: Any, *, strict: bool = False, keep_non_finite: bool = False) -> Any:
    """`value` as JSON-ready Python values; raises TypeError, when `strict`, for a type JSON cannot hold."""
    if isinstance(value, float):
        return value if strict or keep_non_finite or math.isfinite(value) else None
    if isinstance(value, bool | int | str) or value is None:
        return value
    plain = functools.partial(to_plain, strict=strict, keep_non_finite=keep_non_finite)
    if isinstance(value, Decimal):
        return plain(float(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    if callable(getattr(value, "to_json", None)) and not isinstance(value, type):  # a typed result's shape
        return plain(value.to_json())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return plain(value.tolist())
    if strict:
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return str(value)


def _key(key: Any) -> str:
    """An object key as `json.dumps` writes it (`true`, `null`, `1.5`), other keys as their text."""
    if isinstance(key, str):
        return str.__str__(key)  # a str Enum's value, as json writes it
    if key is None or isinstance(key, bool | int | float):
        return json.dumps(key)
    return str(key)


def dumps(value: Any, *, indent: int | None = None, compact: bool = False, sort_keys: bool = False) -> str:
    """JSON text of `to_plain(value)`: never NaN or Infinity. `compact`: no spaces, UTF-8 kept as is."""
    return json.dumps(
        to_plain(value),
        indent=indent,
        sort_keys=sort_keys,
        allow_nan=False,
        ensure_ascii=not compact,
        separators=(",", ":") if compact else None,
    )
