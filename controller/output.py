"""How results reach a person or a script: tables, key/value blocks, JSON, sizes and ages.

Commands return plain data; this module decides the look. Tables gain a HOST column when a command ran
on several hosts; JSON is one document (keyed by host for several hosts).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from rich.console import Console


@dataclass(frozen=True)
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]


@dataclass(frozen=True)
class Fields:
    """A key/value block, like `docker info`."""

    items: Sequence[tuple[str, Any]]
    sections: Sequence[tuple[str, Sequence[tuple[str, Any]]]] = field(default_factory=tuple)


class PlainConsole:
    """What a script reading our output gets: lines written as they are, without rich.

    Rendering through rich costs a fan-out to 50 hosts 25–50 ms; off a terminal (no colours, no wrapping)
    the same tables are plain text, so they are written directly, byte for byte as rich would.
    """

    is_terminal = False

    def __init__(self, stream: TextIO) -> None:
        self.file = stream

    def print(self, text: str, *, markup: bool = False, highlight: bool = False) -> None:
        self.file.write(f"{text}\n")


def console(stream: TextIO | None = None) -> Console | PlainConsole:
    """rich on a terminal; plain lines otherwise (never wrapped: scripts parse them)."""
    stream = stream or sys.stdout
    if not stream.isatty():
        return PlainConsole(stream)
    from rich.console import Console

    return Console(file=stream, highlight=False, soft_wrap=True, emoji=False)


def _plain(value: Any) -> str | None:
    """The cell as text when rich would print it unchanged (printable ASCII), else None."""
    text = "" if value is None else str(value)
    return text if text.isascii() and text.isprintable() else None


def print_table(
    table: Table, out: Console | PlainConsole, *, host_column: Sequence[str] | None = None
) -> None:
    columns = list(table.columns)
    rows = [list(r) for r in table.rows]
    if host_column is not None:
        columns = ["HOST", *columns]
        rows = [[h, *r] for h, r in zip(host_column, rows, strict=True)]
    if isinstance(out, PlainConsole):
        cells = [[_plain(v) for v in row] for row in rows]
        if all(c is not None for row in cells for c in row):
            _plain_table(columns, cells, out)  # type: ignore[arg-type]
            return
    from rich.table import Table as RichTable
    from rich.text import Text

    rich_table = RichTable(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for col in columns:
        rich_table.add_column(col, overflow="fold")
    for row in rows:
        rich_table.add_row(*(Text("" if v is None else str(v)) for v in row))
    _rich(out).print(rich_table)


def _rich(out: Console | PlainConsole) -> Console:
    """rich for what plain lines cannot lay out (wide characters, control codes), also off a terminal."""
    if not isinstance(out, PlainConsole):
        return out
    from rich.console import Console

    return Console(file=out.file, highlight=False, soft_wrap=True, width=100_000, emoji=False)


def _plain_table(columns: list[str], rows: list[list[str]], out: PlainConsole) -> None:
    """Columns two spaces apart, every cell padded to its column's width (as rich lays them out)."""
    widths = [max([len(col), *(len(row[i]) for row in rows)]) for i, col in enumerate(columns)]
    lines = (
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [columns, *rows]
    )
    out.file.write("".join(f"{line}\n" for line in lines))


def print_fields(fields: Fields, out: Console | PlainConsole, indent: str = "") -> None:
    lines = [f"{indent}{key}: {'' if value is None else value}" for key, value in fields.items]
    for title, items in fields.sections:
        lines.append(f"{indent}{title}:")
        lines += [f"{indent}  {key}: {'' if value is None else value}" for key, value in items]
    if isinstance(out, PlainConsole) and all(_plain(line) is not None for line in lines):
        out.file.write("".join(f"{line}\n" for line in lines))
        return
    from rich.text import Text

    rich = _rich(out)
    for line in lines:
        rich.print(Text(line))


def print_json(data: Any, stream: TextIO | None = None) -> None:
    (stream or sys.stdout).write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def human_size(n: int | float) -> str:
    """Decimal units, as docker prints them (1 kB = 1000 B)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{value:.3g}PB"


def human_ago(when: dt.datetime | None, now: dt.datetime | None = None) -> str:
    if when is None:
        return ""
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0, int((now - when).total_seconds()))
    for size, unit in (
        (86400 * 365, "year"),
        (86400 * 7, "week"),
        (86400, "day"),
        (3600, "hour"),
        (60, "minute"),
    ):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "Less than a second ago" if seconds < 1 else f"{seconds} seconds ago"
