"""The one JSON encoder (`stockcli.jsonable`): what it writes, and that nothing else in the package encodes."""

from __future__ import annotations

import ast
import enum
import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from stockcli.jsonable import dumps, to_plain

PACKAGE = Path(__file__).resolve().parents[1] / "stockcli"


class Served(enum.StrEnum):
    MODEL = "model"


@dataclass(frozen=True)
class Row:
    day: date
    close: float
    bounds: tuple[float, ...]


def test_values_become_plain_json() -> None:
    payload = {
        "row": Row(date(2013, 3, 4), np.float64(806.19), (np.float32(0.5), float("nan"))),
        "at": datetime(2013, 3, 1, 22, 0, tzinfo=UTC),
        "path": Path("/data/x.db"),
        "count": np.int64(7),
        "flag": np.bool_(True),
        "array": np.array([[1.0, np.inf], [2.0, 3.0]]),
        "price": Decimal("1.25"),
        "served": Served.MODEL,
        "tickers": frozenset({"GOOG"}),
        Served.MODEL: None,
        1: "one",
        None: "none",
    }
    assert json.loads(dumps(payload, compact=True)) == {
        "row": {"day": "2013-03-04", "close": 806.19, "bounds": [0.5, None]},
        "at": "2013-03-01T22:00:00+00:00",
        "path": "/data/x.db",
        "count": 7,
        "flag": True,
        "array": [[1.0, None], [2.0, 3.0]],
        "price": 1.25,
        "served": "model",
        "tickers": ["GOOG"],
        "model": None,
        "1": "one",
        "null": "none",
    }


def test_layouts_indented_ascii_and_compact_utf8() -> None:
    assert dumps({"a": [1, "é"]}, indent=2) == '{\n  "a": [\n    1,\n    "\\u00e9"\n  ]\n}'
    assert dumps({"a": [1, "é"]}, compact=True) == '{"a":[1,"é"]}'
    assert dumps(float("-inf")) == "null"


def test_strict_refuses_what_json_cannot_hold() -> None:
    """Strict (model bundles): NaN stays NaN for `allow_nan=False` to refuse, unknown types raise."""
    assert to_plain(float("nan"), strict=True) != to_plain(float("nan"), strict=True)  # still NaN
    with pytest.raises(ValueError):
        json.dumps(to_plain({"scale": np.float32("nan")}, strict=True), allow_nan=False)
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        to_plain({"x": object()}, strict=True)
    assert to_plain({"x": object()})["x"].startswith("<object object")


def _encoders(tree: ast.AST) -> list[str]:
    """JSON encoders other than jsonable's: `default=`/`cls=` handed to json, `JSONEncoder` subclasses."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("dump", "dumps") and any(k.arg in ("default", "cls") for k in node.keywords):
                found.append(f"line {node.lineno}: {name}(..., default=/cls=)")
        if isinstance(node, ast.ClassDef):
            bases = [ast.unparse(base) for base in node.bases]
            if any(base.endswith("JSONEncoder") for base in bases):
                found.append(f"line {node.lineno}: class {node.name}({', '.join(bases)})")
    return found


def test_the_package_has_one_json_encoder() -> None:
    found = {
        str(path.relative_to(PACKAGE.parent)): encoders
        for path in sorted(PACKAGE.rglob("*.py"))
        if (encoders := _encoders(ast.parse(path.read_text(encoding="utf-8"))))
    }
    assert found == {}, f"use stockcli.jsonable instead of another JSON encoder: {found}"


def test_the_check_finds_an_encoder() -> None:
    source = "import json\nclass E(json.JSONEncoder): ...\njson.dumps({}, default=str)\n"
    assert len(_encoders(ast.parse(source))) == 2
