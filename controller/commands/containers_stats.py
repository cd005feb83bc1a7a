"""`stats`: live resource usage of running containers, as Docker's table or JSON samples."""

from __future__ import annotations

import dataclasses
import sys

import click

from controller import output, terminal
from controller.api.containers import ContainersApi, StatsSample
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.commands.containers_common import single


def stats_table(rows: list[StatsSample]) -> output.Table:
    return output.Table(
        ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"],
        [
            [
                r.id[:12],
                r.name,
                f"{r.cpu_percent:.2f}%",
                f"{iec(r.memory_usage)} / {iec(r.memory_limit)}",
                f"{100 * r.memory_usage / r.memory_limit:.2f}%" if r.memory_limit else "--",
                f"{output.human_size(r.net_rx)} / {output.human_size(r.net_tx)}",
                f"{output.human_size(r.block_read)} / {output.human_size(r.block_write)}",
                r.pids,
            ]
            for r in rows
        ],
    )


def iec(n: int) -> str:
    """Binary units as Docker prints memory: 1.5GiB, 512MiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.4g}{unit}"
        value /= 1024
    return f"{value:.4g}PiB"


def stats_json(rows: list[StatsSample]) -> list[dict[str, object]]:
    return [dataclasses.asdict(r) for r in rows]


@click.command()
@click.option("--no-stream", is_flag=True, help="print one sample and exit")
@click.argument("containers", nargs=-1)
@click.pass_obj
def stats(app: App, no_stream: bool, containers: tuple[str, ...]) -> None:
    """Live resource usage of running containers (CPU, memory, network, block I/O, PIDs)."""
    if no_stream:

        async def once(client: AgentClient, out: HostOutput) -> list[StatsSample]:
            rows: list[StatsSample] = []
            async for sample in ContainersApi(client).stats(containers, stream=False):
                rows = sample
            return rows

        app.run(once, table=stats_table, idempotent=True, to_json=stats_json)
        return
    single(app, "streaming stats")

    async def live(client: AgentClient, out: HostOutput) -> None:
        async for rows in ContainersApi(client).stats(containers, stream=True):
            if app.json:
                output.print_json(stats_json(rows))
                continue
            if terminal.is_tty(sys.stdout.fileno()):
                sys.stdout.write("\x1b[2J\x1b[H")
            output.print_table(stats_table(rows), app.console)
            sys.stdout.flush()

    app.run(live)
