"""How a table reaches its reader: a Rich table on a terminal, tab-separated rows in a pipe, or JSON.

``queuectl list | grep failed`` must see whole rows, one per line, and ``cut -f1`` the ids; a
person at a terminal wants a table that fits the window. So when stdout is not a terminal (and no
``--format`` says otherwise) every table prints as TSV: a header row, then one row per item, with
nothing truncated. A tab, newline or backslash inside a cell is written as ``\\t``, ``\\n``, ``\\\\``
(as PostgreSQL's COPY does), and terminal control characters are made harmless as everywhere.

Rich is imported only to draw a table on a terminal.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import typer

from queuectl.core.errors import InvalidInput

FORMATS = ("table", "tsv", "json")

Cell = Union[str, tuple[str, str]]  # text, or (text, Rich style)


def format_option() -> Any:
    return typer.Option(
        None, "--format", metavar="table|tsv|json", help="Output format (default: table on a terminal, else tsv)."
    )


def json_option() -> Any:
    return typer.Option(False, "--json", help="Print JSON (the same as --format json).")


def pick_format(fmt: Optional[str], as_json: bool) -> str:
    """The format asked for; without one: a table on a terminal, TSV otherwise."""
    if fmt is not None and fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r}; use one of: {', '.join(FORMATS)}")
    if as_json:
        if fmt not in (None, "json"):
            raise InvalidInput(f"--json and --format {fmt} contradict each other; give one")
        return "json"
    if fmt is not None:
        return fmt
    return "table" if sys.stdout.isatty() else "tsv"


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True, default=str)
    sys.stdout.write("\n")


def note(text: str) -> None:
    """A remark for the person, not the pipe: on stderr."""
    print(f"queuectl: {text}", file=sys.stderr)


def confirm_or_refuse(question: str, refusal: str) -> None:
    """Ask ``question`` on the terminal (on stderr, so stdout stays clean); without a terminal,
    refuse with ``refusal`` (exit 2): a script must say ``--yes``, never answer a prompt.
    A "no" exits with 1."""
    if not sys.stdin.isatty():
        raise InvalidInput(refusal)
    # not click's confirm: its input() writes a space to stdout
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    if sys.stdin.readline().strip().lower() not in ("y", "yes"):
        raise typer.Exit(1)


@contextlib.contextmanager
def progress_bar(
    description: str, total: Optional[int], unit: str, show: bool = True
) -> Iterator[Optional[Callable[[int], None]]]:
    """A Rich progress bar on stderr while a long operation runs, when stderr is a terminal and
    ``show``; yields the function to report how far it got (None: nothing to report to). Piped
    output gets nothing extra; the bar goes away when the operation ends."""
    if not show or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit))
    with Progress(*columns, TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda done: bar.update(task, completed=done)


@dataclass(frozen=True)
class Column:
    """One column. ``shrink``: gives up width first when the terminal is narrow (commands,
    errors), cut with an ellipsis; other columns keep their width (an id is never cut)."""

    header: str
    justify: str = "left"
    shrink: bool = False
    drop: int = 0  # > 0: may be left out of a narrow terminal's table, the lowest first


_SHRUNK_MIN = 8  # a shrinking column keeps this many characters at least
_GAP = 3  # between two columns: padding, the separator, padding


def _tsv_cell(text: str) -> str:
    from queuectl.cli.render import printable

    return printable(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def write_tsv(columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> None:
    lines = ["\t".join(column.header for column in columns)]
    for row in rows:
        lines.append("\t".join(_tsv_cell(cell if isinstance(cell, str) else cell[0]) for cell in row))
    sys.stdout.write("\n".join(lines) + "\n")


def _natural(column: Column, cells: list[str]) -> int:
    return max([len(column.header), *(len(cell) for cell in cells)])


def fit_columns(columns: Sequence[Column], rows: list[list[str]], width: int) -> list[int]:
    """The indexes of the columns to draw in ``width``: every one that fits once the shrinking
    columns are narrowed to their minimum; the optional ones are left out, lowest ``drop`` first."""
    keep = list(range(len(columns)))
    natural = [_natural(column, [row[i] for row in rows]) for i, column in enumerate(columns)]

    def needed(indexes: list[int]) -> int:
        widths = [min(natural[i], _SHRUNK_MIN) if columns[i].shrink else natural[i] for i in indexes]
        return sum(widths) + _GAP * (len(indexes) - 1)

    for index in sorted((i for i, c in enumerate(columns) if c.drop), key=lambda i: columns[i].drop):
        if needed(keep) <= width:
            break
        keep.remove(index)
    return keep


def draw_table(title: Optional[str], columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> None:
    """A Rich table that fits the terminal: the ``shrink`` columns give way first (with an
    ellipsis), then optional columns are left out; the others (an id) are never cut."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    from queuectl.cli.render import console, printable

    out = console()
    cells: list[list[tuple[str, str]]] = []
    for row in rows:
        line = []
        for column, cell in zip(columns, row, strict=True):
            text, style = (cell, "") if isinstance(cell, str) else cell
            if column.shrink:
                text = text.strip().splitlines()[0] if text.strip() else ""
            line.append((printable(text), style))
        cells.append(line)
    keep = fit_columns(columns, [[text for text, _ in line] for line in cells], out.width)
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for index in keep:
        column = columns[index]
        # a shrinking column is "wrapable" for Rich's width sums, so it is narrowed before any
        # other; its cells themselves never wrap: they end in an ellipsis
        table.add_column(column.header, justify=column.justify, no_wrap=not column.shrink)  # type: ignore[arg-type]
    for line in cells:
        table.add_row(*(Text(line[i][0], style=line[i][1], no_wrap=True, overflow="ellipsis") for i in keep))
    out.print(table)


def emit(fmt: str, title: Optional[str], columns: Sequence[Column], rows: Iterable[Sequence[Any]]) -> None:
    """A table in ``fmt`` (``table`` or ``tsv``; JSON has shapes of its own)."""
    if fmt == "tsv":
        write_tsv(columns, rows)
    else:
        draw_table(title, columns, rows)
