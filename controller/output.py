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


def console(stream: TextIO | None = None) -> Console:
    """A console for tables and text. Off a terminal, lines are never wrapped (scripts parse them)."""
    from rich.console import Console

    stream = stream or sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(file=stream, highlight=False, soft_wrap=True, width=width)


def print_table(table: Table, out: Console, *, host_column: Sequence[str] | None = None) -> None:
    from rich.table import Table as RichTable
    from rich.text import Text

    columns = list(table.columns)
    rows = [list(r) for r in table.rows]
    if host_column is not None:
        columns = ["HOST", *columns]
        rows = [[h, *r] for h, r in zip(host_column, rows, strict=True)]
    rich_table = RichTable(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for col in columns:
        rich_table.add_column(col, overflow="fold")
    for row in rows:
        rich_table.add_row(*(Text("" if v is None else str(v)) for v in row))
    out.print(rich_table)


def print_fields(fields: Fields, out: Console, indent: str = "") -> None:
    from rich.text import Text

    for key, value in fields.items:
        out.print(Text(f"{indent}{key}: {'' if value is None else value}"))
    for title, items in fields.sections:
        out.print(Text(f"{indent}{title}:"))
        for key, value in items:
            out.print(Text(f"{indent}  {key}: {'' if value is None else value}"))


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
