"""The Events servicer: replay the persisted event log from a sequence number, then follow it live."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import events_pb2 as pb
from agent.api.v1 import events_pb2_grpc
from agent.errors import InvalidArgument
from agent.state.events import EventLog, matches

FILTER_KEYS = {"type", "event", "action", "container", "image", "volume", "network", "label"}


class EventsServicer(events_pb2_grpc.EventsServicer):
    def __init__(self, events: EventLog) -> None:
        self._events = events

    async def Stream(
        self, request: pb.StreamEventsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.StreamEventsResponse]:
        filters: dict[str, list[str]] = {}
        for f in request.filters:
            key, sep, value = f.partition("=")
            if not sep or key not in FILTER_KEYS:
                raise InvalidArgument(
                    f"invalid filter {f!r}: use KEY=VALUE with KEY one of {sorted(FILTER_KEYS)}"
                )
            filters.setdefault(key, []).append(value)
        if request.HasField("since") and request.since < 0:
            raise InvalidArgument("--since must be a sequence number (0 or more)")
        since = request.since if request.HasField("since") else None
        async for e in self._events.stream(since, follow=not request.no_follow, accept=matches(filters)):
            ts = Timestamp()
            ts.FromNanoseconds(e.time_ns)
            yield pb.StreamEventsResponse(
                event=pb.AgentEvent(
                    seq=e.seq,
                    time=ts,
                    type=e.type,
                    action=e.action,
                    actor_id=e.actor_id,
                    attributes=dict(e.attributes),
                )
            )
