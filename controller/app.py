"""The CLI's runtime context: chosen targets, output format, and how a command runs on them.

A command supplies `op(client, out) -> data` (JSON-able data) and how to show that data (`table` or
`fields`). `App.run` runs it on one agent (output exactly as a single-agent CLI) or on several at once
(tables gain a HOST column, streamed lines are prefixed `host | `, JSON is keyed by host, a summary
line, exit 1 if any host failed).
"""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller import fanout, formatting, output
from controller.client import AgentClient
from controller.errors import ControllerError, UsageError
from controller.target import Target

if TYPE_CHECKING:
    from rich.console import Console


class HostOutput:
    """Where a running command writes live lines (logs, progress); prefixed by host in fan-out."""

    def __init__(self, host: str | None) -> None:
        self.host = host

    def line(self, text: str, *, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        prefix = f"{self.host} | " if self.host else ""
        stream.write(f"{prefix}{text}\n")
        stream.flush()


Op = Callable[[AgentClient, HostOutput], Awaitable[Any]]


@dataclass
class App:
    targets: list[Target]
    config_dir: Path
    format: str = "table"
    timeout: float = 30.0
    parallel: int = 256
    max_fail: str | None = None  # `N` or `P%` failed hosts tolerated (controller.fanout.parse_max_fail)
    renderer: formatting.Renderer | None = None  # a `--format '{{.Field}}'` template bound to the command

    # rich costs ~20 ms to import: only commands that print to a terminal pay for it.
    @functools.cached_property
    def console(self) -> Console | output.PlainConsole:
        return output.console()

    @functools.cached_property
    def err_console(self) -> Console | output.PlainConsole:
        return output.console(sys.stderr)

    @property
    def json(self) -> bool:
        return self.format == "json"

    def run(
        self,
        op: Op,
        *,
        table: Callable[[Any], output.Table] | None = None,
        fields: Callable[[Any], output.Fields] | None = None,
        text: Callable[[Any], str] | None = None,
        idempotent: bool = False,
        streaming: bool = False,
        to_json: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Run `op` on every target and print the results. Raises ControllerError if any host failed.

        `idempotent` ops (reads) are retried on a host that is briefly unreachable (controller.fanout);
        `streaming` ops (logs -f, events) run until stopped: no per-host --timeout.
        `to_json` turns a typed result into the JSON-able data that --format json and templates show.
        A `--format` template (self.renderer) prints the result in place of table/fields/text.
        """
        if self.renderer is None and formatting.is_template(self.format):
            raise UsageError(f"--format {self.format!r}: this command takes table or json")
        if len(self.targets) == 1:
            result = asyncio.run(self._run_one(self.targets[0], op, HostOutput(None)))
            self._show(self._data(result, to_json), table=table, fields=fields, text=text)
            return result
        results = asyncio.run(self._run_many(op, idempotent, streaming))
        shown = {h: self._data(r, to_json) for h, r in results.items()}
        self._show_many(shown, table=table, fields=fields, text=text)
        return results

    def _data(self, result: Any, to_json: Callable[[Any], Any] | None) -> Any:
        """What JSON and templates show: `to_json(result)` for an op returning typed values."""
        if to_json is None or result is None or isinstance(result, ControllerError):
            return result
        return to_json(result) if self.json or self.renderer is not None else result

    async def _run_one(self, target: Target, op: Op, out: HostOutput) -> Any:
        client = AgentClient(target, self.config_dir)
        try:
            return await op(client, out)
        finally:
            await client.close()

    async def _run_many(
        self, op: Op, idempotent: bool = False, streaming: bool = False
    ) -> dict[str, Any | ControllerError]:
        """Fan out through controller.fanout: one channel per host, per-host deadline and result."""
        pool = fanout.Pool(self.config_dir)
        try:
            outcomes = await fanout.run(
                self.targets,
                lambda client: op(client, HostOutput(client.name)),
                pool=pool,
                parallel=self.parallel,
                deadline_s=None if streaming else self.timeout,
                idempotent=idempotent,
            )
        finally:
            await pool.close()
        return {o.host: (o.error if o.error is not None else o.value) for o in outcomes}

    def _show(
        self,
        result: Any,
        *,
        table: Callable[[Any], output.Table] | None,
        fields: Callable[[Any], output.Fields] | None,
        text: Callable[[Any], str] | None,
    ) -> None:
        if result is None:
            return
        if self.renderer is not None:
            for line in self.renderer.lines(result):
                self.console.print(line, markup=False)
        elif self.json:
            output.print_json(result)
        elif table is not None:
            output.print_table(table(result), self.console)
        elif fields is not None:
            output.print_fields(fields(result), self.console)
        elif text is not None:
            rendered = text(result)
            if rendered:
                self.console.print(rendered, markup=False)

    def _show_many(
        self,
        results: dict[str, Any | ControllerError],
        *,
        table: Callable[[Any], output.Table] | None,
        fields: Callable[[Any], output.Fields] | None,
        text: Callable[[Any], str] | None,
    ) -> None:
        ok = {h: r for h, r in results.items() if not isinstance(r, ControllerError)}
        failed = {h: r for h, r in results.items() if isinstance(r, ControllerError)}
        if self.renderer is not None:
            for line in self.renderer.lines_many(ok):
                self.console.print(line, markup=False)
        elif self.json:
            output.print_json(
                {
                    h: ({"error": str(r.message)} if isinstance(r, ControllerError) else r)
                    for h, r in results.items()
                }
            )
        elif table is not None:
            columns: list[str] = []
            rows: list[list[Any]] = []
            hosts: list[str] = []
            for host, result in ok.items():
                if result is None:
                    continue
                t = table(result)
                columns = list(t.columns)
                for row in t.rows:
                    hosts.append(host)
                    rows.append(list(row))
            if columns:
                output.print_table(output.Table(columns, rows), self.console, host_column=hosts)
        else:
            for host, result in ok.items():
                if result is None:
                    continue
                if fields is not None:
                    self.console.print(f"{host}:", markup=False)
                    output.print_fields(fields(result), self.console, indent="  ")
                elif text is not None:
                    for line in text(result).splitlines():
                        self.console.print(f"{host} | {line}", markup=False)
        summary = f"{len(ok)} ok, {len(failed)} failed"
        self.err_console.print(summary, markup=False)
        for exc in failed.values():
            self.err_console.print(f"error: {exc}", markup=False)
        if len(failed) > fanout.parse_max_fail(self.max_fail).allowed(len(results)):
            raise SystemExit(1)
