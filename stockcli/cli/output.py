"""Everything the CLI shows: Rich tables on stdout, one red line per error on stderr, JSON."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stockcli import formats
from stockcli.jsonable import dumps, to_plain

Column = tuple[str, Callable[[Any], Any]]  # a header, and the cell it shows of an item

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)

# Width of tables written to a pipe or a file (cron logs) when $COLUMNS does not say otherwise: wide
# enough for every table in one line per row, narrow enough to read.
NON_TERMINAL_WIDTH = 120
# A column whose longest cell exceeds this (and holds spaces) is free text: it may wrap between words.
TEXT_COLUMN_CHARS = 40
# The narrowest a free-text column is squeezed to (its long words fold beyond that).
TEXT_COLUMN_MIN = 16
# Words of free text longer than this (paths, URLs) may fold rather than widen the table.
TEXT_COLUMN_MAX_WORD = 30


def emit(command: str, result: Any = None, /, **values: Any) -> None:
    """Print the `--json` object of `command` (its model in `cli/results.py`), checked against the model
    so that the shape cannot drift silently."""
    from stockcli.cli.results import SHAPES

    shape = SHAPES[command]
    plain = to_plain(shaped(shape, result, values), keep_non_finite=True)  # a NaN wall time is a float
    shape.model_validate(plain)
    sys.stdout.write(dumps(plain, indent=2) + "\n")
    sys.stdout.flush()


def shaped(shape: Any, result: Any, values: dict[str, Any]) -> dict[str, Any]:
    """`shape`'s keys: each from `values`, else `result`'s attribute of the field's name (a key with a
    default only when given)."""
    payload = {}
    for name, field in shape.model_fields.items():
        key = field.alias or name
        if key in values:
            payload[key] = values[key]
        elif field.is_required():
            payload[key] = getattr(result, name)
    return payload


def output_width() -> int:
    """The width tables are laid out in: the terminal's, else $COLUMNS, else NON_TERMINAL_WIDTH."""
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "").strip()
    return int(columns) if columns.isdigit() and int(columns) > 0 else NON_TERMINAL_WIDTH


def table(
    title: str | None,
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    caption: str | None = None,
    secondary: Sequence[str] = (),
    text: Sequence[str] = (),
) -> None:
    """A Rich table on stdout whose cells are never cut inside a word (a date, a number, a name).

    Only free-text columns (named in `text`, or holding long sentences) wrap, between words. When the
    table is wider than the output, it first drops its borders, then the `secondary` columns in the
    order given; as a last resort it runs wider than the output rather than cut a value (`2013-03-…`).
    """
    cells = [["" if cell is None else str(cell) for cell in row] for row in rows]
    width = output_width()
    for compact, keep in _layouts(columns, secondary):
        needed = _minimum_width(
            [columns[i] for i in keep], [[row[i] for i in keep] for row in cells], text, compact
        )
        if needed <= width:
            break
    view = Table(
        title=title,
        caption=caption,
        title_justify="left",
        box=None if compact else box.HEAVY_HEAD,
        pad_edge=not compact,
    )
    for index in keep:
        name = columns[index]
        wraps = _is_text(name, [row[index] for row in cells], text)
        view.add_column(
            name,
            justify="right" if name.endswith(("%", "rows", "count")) else "left",
            no_wrap=not wraps,
            overflow="fold" if wraps else "ellipsis",
        )
    for row in cells:
        view.add_row(*(row[index] for index in keep))
    if needed <= width <= console.width:
        console.print(view, width=width)
        return
    # Rich never renders wider than its console (80 columns when stdout is not a terminal): a console
    # of the chosen width writes the same stream.
    Console(
        file=console.file,
        width=max(needed, width),
        highlight=False,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
    ).print(view)


def records(title: str | None, columns: Sequence[Column], items: Iterable[Any], **options: Any) -> None:
    """A `table` with one row per item: `columns` pair each header with the cell it shows of an item."""
    rows = ([cell(item) for _, cell in columns] for item in items)
    table(title, [name for name, _ in columns], rows, **options)


def _layouts(columns: Sequence[str], secondary: Sequence[str]) -> Iterator[tuple[bool, list[int]]]:
    """Layouts from the fullest to the most compact: (borderless?, the indexes of the columns kept)."""
    yield False, list(range(len(columns)))
    droppable = [name for name in secondary if name in columns]
    for count in range(len(droppable) + 1):
        yield True, [index for index, name in enumerate(columns) if name not in droppable[:count]]


def _is_text(name: str, values: Sequence[str], text: Sequence[str]) -> bool:
    if name in text:
        return True
    longest = max(values, key=len, default="")
    return len(longest) > TEXT_COLUMN_CHARS and " " in longest


def _minimum_width(
    columns: Sequence[str], rows: Sequence[Sequence[str]], text: Sequence[str], compact: bool
) -> int:
    """The narrowest width at which no cell of a non-text column is cut or wrapped."""
    from rich.cells import cell_len

    total = 0
    for index, name in enumerate(columns):
        values = [row[index] for row in rows]
        widest = max((cell_len(value) for value in [name, *values]), default=1)
        if _is_text(name, values, text):
            longest_word = max(
                (cell_len(word) for value in [name, *values] for word in value.split()), default=1
            )
            total += min(widest, max(min(longest_word, TEXT_COLUMN_MAX_WORD), TEXT_COLUMN_MIN))
        else:
            total += widest
    gaps = len(columns)
    # Each column has one space of padding per side; borders add one line per column and an edge.
    return total + (2 * gaps - 2 if compact else 3 * gaps + 1)


def info(message: str) -> None:
    console.print(escape(message))


def warn(message: str) -> None:
    error_console.print(f"[yellow]Warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    error_console.print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True)


def band(low: float | None, high: float | None) -> str:
    """An interval in a table cell: `796.89–822.14` (the HTML views space it: `formats.interval`)."""
    if low is None or high is None:
        return "-"
    return f"{formats.number(low)}–{formats.number(high)}"


def p_value(value: float | None) -> str:
    """A test's p-value in a table cell, three significant digits: `0.0123`."""
    return "-" if value is None else f"{value:.3g}"


def fmt_served(source: str | None, p_value: float | None, interval_source: str | None) -> str:
    """What a prediction serves, with the p-value of the test that chose its point forecast:
    `naive (p 0.49) / garch`, `model (p 0.003) / model`."""
    point = source or "model"
    if p_value is not None:
        point += f" (p {p_value:.2g})"
    return f"{point} / {interval_source or '-'}"


@contextlib.contextmanager
def status(label: str, *, quiet: bool = False) -> Iterator[Callable[[str], None] | None]:
    """A spinner on a terminal, yielding a callback that updates its text; nothing when `quiet`
    (JSON output) or when stdout is not a terminal (cron logs stay clean)."""
    if quiet or not console.is_terminal:
        yield None
        return
    with console.status(label) as spinner:
        yield lambda message: spinner.update(f"{label}: {message}")


@contextlib.contextmanager
def progress_bar(
    label: str = "",
    *,
    quiet: bool = False,
    lasting: bool = False,
    total: int | None = None,
    describe: Callable[[str], str] = str,
) -> Iterator[Callable[[str, int, int], None] | None]:
    """A progress bar (label, bar, done/total, time, what it does), yielding a `(stage, done, total)`
    callback; nothing when `quiet` (JSON output). A transient bar goes to stderr, only on a terminal
    (cron logs stay clean); a `lasting` one (backtest) to stdout, where a log keeps its final state."""
    if quiet or not (lasting or error_console.is_terminal):
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=console if lasting else error_console,
        transient=not lasting,
    )
    task = bar.add_task("", total=total)

    def report(stage: str, done: int, total: int) -> None:
        bar.start()  # at the first step: a command refused before it draws no empty bar
        bar.update(task, description=describe(stage), completed=done, total=max(total, 1))

    try:
        yield report
    finally:
        if bar.live.is_started:
            bar.stop()
