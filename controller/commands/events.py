"""`dockyard events [--since SEQ] [--filter K=V] [--no-follow]`: the agent's persisted event log.

Each line starts with the event's sequence number, so a script can resume with `--since <last seq>`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import click

from controller import output
from controller.api.events import EventsApi
from controller.app import App, HostOutput
from controller.client import AgentClient


def event_line(d: dict[str, Any]) -> str:
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(d["attributes"].items()))
    return f"{d['seq']} {d['time']} {d['type']} {d['action']} {d['id']}" + (f" ({attrs})" if attrs else "")


@click.command()
@click.option(
    "--since", type=click.IntRange(min=0), default=None, help="replay events after this sequence number"
)
@click.option(
    "-f", "--filter", "filters", multiple=True, metavar="KEY=VALUE", help="type, event, container, …"
)
@click.option("--no-follow", is_flag=True, help="stop after the replay")
@click.pass_obj
def events(app: App, since: int | None, filters: tuple[str, ...], no_follow: bool) -> None:
    """Stream events (create, start, die, oom, health_status, destroy, pull, …)."""

    async def op(client: AgentClient, out: HostOutput) -> None:
        async for event in EventsApi(client).stream(since=since, filters=filters, follow=not no_follow):
            d = asdict(event)
            if app.json:
                output.print_json(d)
            else:
                out.line(event_line(d))

    app.run(op, streaming=not no_follow)


COMMANDS = [events]
