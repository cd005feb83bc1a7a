"""`dockyard events [--since SEQ] [--filter K=V] [--no-follow]`: the agent's persisted event log.

Each line starts with the event's sequence number, so a script can resume with `--since <last seq>`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import click

from agent.api.v1 import events_pb2 as pb
from agent.api.v1 import events_pb2_grpc
from controller import output
from controller.app import App, HostOutput
from controller.client import AgentClient


def event_dict(e: pb.AgentEvent) -> dict[str, Any]:
    t = e.time.ToDatetime(tzinfo=UTC)
    return {
        "seq": e.seq,
        "time": t.strftime("%Y-%m-%dT%H:%M:%S") + f".{e.time.nanos:09d}Z",
        "type": e.type,
        "action": e.action,
        "id": e.actor_id,
        "attributes": dict(e.attributes),
    }


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
    req = pb.StreamEventsRequest(filters=list(filters), no_follow=no_follow)
    if since is not None:
        req.since = since

    async def op(client: AgentClient, out: HostOutput) -> None:
        stub = client.stub(events_pb2_grpc.EventsStub)
        async for r in client.stream(stub.Stream, req):
            d = event_dict(r.event)
            if app.json:
                output.print_json(d)
            else:
                out.line(event_line(d))

    app.run(op, streaming=not no_follow)


COMMANDS = [events]
