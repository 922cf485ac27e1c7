"""The `csv` source: a folder of `<TICKER>.csv` files with `Date,Open,High,Low,Close,Volume`
(`GSPC.csv` may hold `^GSPC`; names case-insensitive; an optional `Adj Close` is applied).

A structural problem raises `InputDataError` naming the file, line and column, never quoting the text
(the file may be anything). Empty cells (or `null`, `NaN`) are missing values, rejected by validation.
"""

from __future__ import annotations

import csv
import math
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stockcli.errors import InputDataError
from stockcli.sources.base import SourceBars, adjusted_to_close, empty_bars, finish

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("date", "open", "high", "low", "close", "volume")
NUMBER_COLUMNS = ("open", "high", "low", "close", "volume", "adj_close")
MISSING_MARKERS = frozenset({"", "null", "nan", "na", "n/a", "none"})
_ALIASES = dict.fromkeys(("adj close", "adjclose", "adjusted close"), "adj_close")
_HINT = "A bar file needs the header Date,Open,High,Low,Close,Volume and one row per date (YYYY-MM-DD)."


def file_names(ticker: str) -> list[str]:
    """File names that may hold `ticker`: `^GSPC.csv`, then `GSPC.csv`."""
    return list(dict.fromkeys((f"{ticker}.csv", f"{ticker.removeprefix('^')}.csv")))


def _columns(header: list[str]) -> tuple[list[str], dict[str, int], list[str]]:
    """A header's names (lower case, aliases resolved), each known column's position, the numbers present."""
    names = [_ALIASES.get(cell.strip().lower(), cell.strip().lower()) for cell in header]
    position = {name: names.index(name) for name in (*REQUIRED_COLUMNS, "adj_close") if name in names}
    return names, position, [name for name in NUMBER_COLUMNS if name in position]


def _parse_date(text: str) -> date:
    value = text.strip()
    try:
        return date.fromisoformat(value)
    except ValueError:
        # Timestamps such as "2013-03-01 00:00:00-05:00": the date as written is the session date.
        return datetime.fromisoformat(value).date()


def _parse_number(text: str) -> float:
    value = text.strip()
    if value.lower() in MISSING_MARKERS:
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


def read_bars_csv(path: Path) -> pd.DataFrame:
    """Parse a bar file into a raw frame; InputDataError naming the file and line for a structural problem."""
    parsed = _read_plain_bars_csv(path)
    return parsed if parsed is not None else _read_bars_csv_checked(path)


def _read_plain_bars_csv(path: Path) -> pd.DataFrame | None:
    """The frame of a well-formed file, parsed a column at a time (~10x faster); None for anything
    the checked parser would treat specially (a marker, a timestamp, a field count, a repeated date)."""
    import numpy as np

    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    if not rows:
        return None
    header = rows[0]
    names, position, columns_present = _columns(header)
    if any(name not in names for name in REQUIRED_COLUMNS):
        return None
    # A row is blank when every cell is: its first cell (the date, as a rule) usually settles it.
    body = [row for row in rows[1:] if row and (row[0].strip() or any(cell.strip() for cell in row))]
    if any(length != len(header) for length in set(map(len, body))):
        return None
    cells = list(zip(*body, strict=True)) if body else [() for _ in header]
    try:
        dates = list(map(date.fromisoformat, map(str.strip, cells[position["date"]])))
        numbers = {
            name: np.fromiter(map(float, cells[position[name]]), dtype=np.float64, count=len(body))
            for name in columns_present
        }
    except ValueError:  # a marker such as `null`, a timestamp, text: the checked parse decides
        return None
    if len(set(dates)) != len(dates):
        return None
    for values in numbers.values():
        values[~np.isfinite(values)] = np.nan  # as `_parse_number`: nan and inf are missing values
    return _frame(numbers, dates)


def _frame(numbers: dict[str, Any], dates: list[date]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(numbers, index=pd.DatetimeIndex(pd.to_datetime(dates), name="date"))
    return adjusted_to_close(frame).sort_index()


def _read_bars_csv_checked(path: Path) -> pd.DataFrame:
    """`read_bars_csv` a row and a cell at a time, with an error naming the line of any problem."""
    import numpy as np

    def fail(line: int, what: str) -> InputDataError:
        return InputDataError(f"{path} line {line}: {what}.", hint=_HINT)

    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputDataError(f"Cannot read {path}: {exc.strerror or exc}.", hint=_HINT) from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise fail(1, "the file is empty")
            names, position, columns_present = _columns(header)
            missing = [name for name in REQUIRED_COLUMNS if name not in names]
            if missing:
                # The header as found is not quoted: the file may be anything (a symlink's target, a secret).
                raise fail(
                    1,
                    f"missing column{'s' if len(missing) > 1 else ''} {', '.join(m.capitalize() for m in missing)} "
                    f"({len(header)} column{'s' if len(header) != 1 else ''} found)",
                )
            values: dict[str, list[float]] = {name: [] for name in columns_present}
            first_line: dict[date, int] = {}  # the dates in file order
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise fail(line, f"{len(row)} fields where the header has {len(header)}")
                try:
                    day = _parse_date(row[position["date"]])
                except ValueError:
                    where = f"column {position['date'] + 1} (Date)"
                    raise fail(line, f"{where}: unparsable date (expected YYYY-MM-DD)") from None
                if day in first_line:
                    raise fail(line, f"duplicate date {day} (first on line {first_line[day]})")
                first_line[day] = line
                for name in columns_present:
                    try:
                        values[name].append(_parse_number(row[position[name]]))
                    except ValueError:
                        label = "Adj Close" if name == "adj_close" else name.capitalize()
                        where = f"column {position[name] + 1} ({label})"
                        raise fail(line, f"{where} holds text, not a number") from None
        except csv.Error as exc:
            raise fail(reader.line_num, f"not valid CSV ({exc})") from None
        except UnicodeDecodeError:
            raise InputDataError(
                f"{path} is not a CSV text file: it holds bytes that are not UTF-8 (binary data, or damage).",
                hint=_HINT,
            ) from None

    return _frame(
        {name: np.asarray(values[name], dtype="float64") for name in columns_present}, list(first_line)
    )


# Parsed files of the process by (path, mtime, size): a backtest's new source each session reuses them.
_PARSED: dict[tuple[Path, int, int], pd.DataFrame] = {}
_PARSED_MAX = 64


class CsvSource:
    """Bars from a folder of `<TICKER>.csv` files."""

    def __init__(self, directory: Path, *, name: str = "csv") -> None:
        self.directory = directory
        self.name = name
        self._cache = _PARSED

    def path_for(self, ticker: str) -> Path | None:
        """The file of `ticker` in the folder, or None; InputDataError for a symlink out of the folder."""
        folder = self.directory.resolve()
        for file_name in file_names(ticker):
            candidate = self.directory / file_name
            if candidate.is_file():
                if folder not in candidate.resolve().parents:
                    raise InputDataError(
                        f"{candidate} is a symlink to a file outside the CSV folder {self.directory}; "
                        "stockcli does not follow it.",
                        hint="Copy the file into the folder (or link to a file inside it).",
                    )
                return candidate
        return None

    def fetch(self, ticker: str, *, start: date, end: date) -> SourceBars:
        path = self.path_for(ticker)
        if path is None:
            looked_for = " or ".join(file_names(ticker))
            return SourceBars(
                ticker=ticker, bars=empty_bars(), note=f"no file {looked_for} in {self.directory}"
            )
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        if key not in self._cache:
            if len(self._cache) >= _PARSED_MAX:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = read_bars_csv(path)
        return finish(ticker, self._cache[key], start, end)
