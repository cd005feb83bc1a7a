"""The Events service: the agent's persisted event log, replayed and followed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC

from agent.api.v1 import events_pb2 as pb
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Events"]
STREAM = rpc(_SERVICE, "Stream", pb.StreamEventsRequest, pb.StreamEventsResponse)


@dataclass(frozen=True)
class Event:
    seq: int
    time: str  # ISO 8601, UTC, nanoseconds, with a Z
    type: str
    action: str
    id: str  # the actor's id
    attributes: dict[str, str]


class EventsApi:
    """Typed calls to one agent's Events service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def stream(
        self, *, since: int | None = None, filters: Sequence[str] = (), follow: bool = True
    ) -> AsyncIterator[Event]:
        """Events after sequence number `since` (all kept when None), then new ones while `follow`."""
        request = pb.StreamEventsRequest(filters=list(filters), no_follow=not follow)
        if since is not None:
            request.since = since
        async for r in self.client.server_stream(STREAM, request):
            e = r.event
            t = e.time.ToDatetime(tzinfo=UTC)
            yield Event(
                seq=e.seq,
                time=t.strftime("%Y-%m-%dT%H:%M:%S") + f".{e.time.nanos:09d}Z",
                type=e.type,
                action=e.action,
                id=e.actor_id,
                attributes=dict(e.attributes),
            )
