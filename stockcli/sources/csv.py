"""The `csv` source: a folder of `<TICKER>.csv` files with `Date,Open,High,Low,Close,Volume`.

A file may drop the leading `^` of an index ticker (`GSPC.csv` holds `^GSPC`). Column names are matched
case-insensitively; an optional `Adj Close` column rescales the prices onto its adjusted basis.
Structural problems raise `InputDataError` naming the file, line and column (never quoting the text:
the file may be anything), and nothing of that file is used:
a missing column, a row with the wrong number of fields, an unparsable date, a date given twice, or
text in a number column. Empty cells (or `null`, `NaN`) are missing values: such rows are rejected and
counted by validation, like a High below its Low.
"""

from __future__ import annotations

import csv
import math
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from stockcli.errors import InputDataError
from stockcli.sources.base import SourceBars, adjusted_to_close, empty_bars, finish

if TYPE_CHECKING:
    import pandas as pd

REQUIRED_COLUMNS = ("date", "open", "high", "low", "close", "volume")
NUMBER_COLUMNS = ("open", "high", "low", "close", "volume", "adj_close")
MISSING_MARKERS = frozenset({"", "null", "nan", "na", "n/a", "none"})
_ALIASES = {
    "adj close": "adj_close",
    "adj_close": "adj_close",
    "adjclose": "adj_close",
    "adjusted close": "adj_close",
}
_HINT = "A bar file needs the header Date,Open,High,Low,Close,Volume and one row per date (YYYY-MM-DD)."


def file_names(ticker: str) -> list[str]:
    """File names that may hold `ticker`: `^GSPC.csv`, then `GSPC.csv`."""
    names = [f"{ticker}.csv"]
    if ticker.startswith("^"):
        names.append(f"{ticker[1:]}.csv")
    return names


def _columns(header: list[str]) -> tuple[list[str], dict[str, int], list[str]]:
    """A header's column names (lower case, aliases resolved), the position of each known column,
    and the number columns present."""
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
    """Parse a bar file into a raw frame (naive DatetimeIndex; float open, high, low, close, volume).

    Raises InputDataError naming the file and line for structural problems.
    """
    parsed = _read_plain_bars_csv(path)
    return parsed if parsed is not None else _read_bars_csv_checked(path)


def _read_plain_bars_csv(path: Path) -> pd.DataFrame | None:
    """The frame of a well-formed file, parsed a column at a time; None for anything unusual.

    The same tokenizer as `_read_bars_csv_checked` and the same conversions (`float` of each
    number, which strips blanks exactly as `_parse_number` does; `date.fromisoformat` of each
    stripped date), but a whole column per call: ~10x faster on a 10-year file. Whatever that
    parse would treat specially (a missing-value marker, a timestamp, a wrong field count, a date
    given twice, bad bytes) makes this return None, and the checked parser reads the file again
    and decides, with its line-numbered errors.
    """
    import numpy as np
    import pandas as pd

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
    frame = pd.DataFrame(numbers, index=pd.DatetimeIndex(pd.to_datetime(dates), name="date"))
    return adjusted_to_close(frame).sort_index()


def _read_bars_csv_checked(path: Path) -> pd.DataFrame:
    """`read_bars_csv` a row and a cell at a time, with an error naming the line of any problem."""
    import numpy as np
    import pandas as pd

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
            dates: list[date] = []
            values: dict[str, list[float]] = {name: [] for name in columns_present}
            first_line: dict[date, int] = {}
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise fail(line, f"{len(row)} fields where the header has {len(header)}")
                date_text = row[position["date"]]
                try:
                    day = _parse_date(date_text)
                except ValueError:
                    where = f"column {position['date'] + 1} (Date)"
                    raise fail(line, f"{where}: unparsable date (expected YYYY-MM-DD)") from None
                if day in first_line:
                    raise fail(line, f"duplicate date {day} (first on line {first_line[day]})")
                first_line[day] = line
                dates.append(day)
                for name in columns_present:
                    cell = row[position[name]]
                    try:
                        values[name].append(_parse_number(cell))
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

    frame = pd.DataFrame(
        {name: np.asarray(values[name], dtype="float64") for name in columns_present},
        index=pd.DatetimeIndex(pd.to_datetime(dates), name="date"),
    )
    return adjusted_to_close(frame).sort_index()


# Parsed files, shared by every CsvSource of the process and keyed by (path, mtime, size), so a changed
# file is read again. A backtest fetches every session with a new source object, and parsing the
# sample's four files again each time was half of the time of a replayed session.
_PARSED: dict[tuple[Path, int, int], pd.DataFrame] = {}
_PARSED_MAX = 64


class CsvSource:
    """Bars from a folder of `<TICKER>.csv` files."""

    def __init__(self, directory: Path, *, name: str = "csv") -> None:
        self.directory = directory
        self.name = name
        self._cache = _PARSED

    def path_for(self, ticker: str) -> Path | None:
        """The file of `ticker` in the folder, or None. Raises InputDataError for a symlink that
        leads out of the folder: it is never followed (`GOOG.csv -> /etc/shadow`)."""
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
