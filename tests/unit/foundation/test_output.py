"""Tables and fields written off a terminal: plain lines, laid out exactly as rich lays them out."""

from __future__ import annotations

import io
import random
import string

from rich.console import Console

from controller import output


def through_rich(table: output.Table, hosts: list[str] | None) -> str:
    buf = io.StringIO()
    rich = Console(file=buf, highlight=False, soft_wrap=True, width=100_000, emoji=False)
    output.print_table(table, rich, host_column=hosts)
    return buf.getvalue()


def plain(table: output.Table, hosts: list[str] | None) -> str:
    buf = io.StringIO()
    output.print_table(table, output.PlainConsole(buf), host_column=hosts)
    return buf.getvalue()


def test_plain_tables_match_rich_byte_for_byte() -> None:
    rnd = random.Random(7)

    def word() -> str:
        return "".join(rnd.choice(string.ascii_letters + " -:/.") for _ in range(rnd.randint(0, 25)))

    for _ in range(200):
        ncol, nrow = rnd.randint(1, 7), rnd.randint(0, 6)
        table = output.Table(
            [word() or "X" for _ in range(ncol)],
            [[rnd.choice([None, 0, 12345, word()]) for _ in range(ncol)] for _ in range(nrow)],
        )
        hosts = [word() for _ in range(nrow)] if rnd.random() < 0.5 else None
        assert plain(table, hosts) == through_rich(table, hosts)


def test_cells_plain_lines_cannot_lay_out_go_through_rich() -> None:
    table = output.Table(["NAME", "NOTE"], [["数据", "wide"], ["tab\there", "x"]])
    assert plain(table, None) == through_rich(table, None)


def test_fields_are_written_as_lines() -> None:
    buf = io.StringIO()
    fields = output.Fields([("Name", "edge-1"), ("Empty", None)], [("Runtimes", [("runc", "1.1.5")])])
    output.print_fields(fields, output.PlainConsole(buf), indent="  ")
    assert buf.getvalue() == "  Name: edge-1\n  Empty: \n  Runtimes:\n    runc: 1.1.5\n"


def test_a_console_off_a_terminal_is_plain() -> None:
    assert isinstance(output.console(io.StringIO()), output.PlainConsole)
