"""Everything the CLI shows: Rich tables on stdout, one red line per error on stderr, JSON."""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, is_dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console(highlight=False)
error_console = Console(stderr=True, highlight=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def _clean(value: Any) -> Any:
    """Replace NaN and infinities by null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def to_json_text(payload: Any) -> str:
    if is_dataclass(payload) and not isinstance(payload, type):
        payload = asdict(payload)
    # Round-trip once so nested dataclasses, dates and numpy values become plain JSON types.
    plain = json.loads(json.dumps(payload, default=_default))
    return json.dumps(_clean(plain), indent=2, allow_nan=False)


def emit_json(payload: Any) -> None:
    sys.stdout.write(to_json_text(payload) + "\n")
    sys.stdout.flush()


def table(
    title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, caption: str | None = None
) -> None:
    view = Table(title=title, caption=caption, title_justify="left")
    for name in columns:
        view.add_column(name, justify="right" if name.endswith(("%", "rows", "count")) else "left")
    for row in rows:
        view.add_row(*("" if cell is None else str(cell) for cell in row))
    console.print(view)


def info(message: str) -> None:
    console.print(escape(message))


def warn(message: str) -> None:
    error_console.print(f"[yellow]Warning:[/yellow] {escape(message)}")


def error(message: str) -> None:
    error_console.print(f"[bold red]Error:[/bold red] {escape(message)}", soft_wrap=True)


def fmt_float(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.{digits}f}"


def fmt_pct(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value * 100:.{digits}f}%"


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
    *, quiet: bool = False, describe: Callable[[str], str] = str
) -> Iterator[Callable[[str, int, int], None] | None]:
    """A transient progress bar on stderr, yielding a `(stage, done, total)` callback; nothing when
    `quiet` (JSON output) or when stderr is not a terminal (cron logs stay clean)."""
    if quiet or not error_console.is_terminal:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=error_console,
        transient=True,
    ) as bar:
        task = bar.add_task("starting", total=None)

        def report(stage: str, done: int, total: int) -> None:
            bar.update(task, description=describe(stage), completed=done, total=max(total, 1))

        yield report
