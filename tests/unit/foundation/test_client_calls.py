"""The typed client calls: RPC declarations checked against the proto, and gRPC failures translated in one
place with the exit code chosen at the call, for unary and streaming calls alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.api.v1 import events_pb2, events_pb2_grpc, system_pb2, system_pb2_grpc
from controller.api.events import EventsApi
from controller.api.system import SystemApi
from controller.client import AgentClient, ErrorExits, rpc
from controller.errors import AgentCallError
from controller.target import Target


def test_an_rpc_declared_with_the_wrong_messages_fails_at_once() -> None:
    service = system_pb2.DESCRIPTOR.services_by_name["System"]
    with pytest.raises(TypeError, match=r"agent\.api\.v1\.System\.Ping takes agent\.api\.v1\.PingRequest"):
        rpc(service, "Ping", system_pb2.InfoRequest, system_pb2.PingResponse)


class _RefusingSystem(system_pb2_grpc.SystemServicer):
    async def Ping(self, request: Any, context: Any) -> system_pb2.PingResponse:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
        raise AssertionError("unreachable")


class _RefusingEvents(events_pb2_grpc.EventsServicer):
    async def Stream(self, request: Any, context: Any) -> AsyncIterator[events_pb2.StreamEventsResponse]:
        yield events_pb2.StreamEventsResponse(event=events_pb2.AgentEvent(seq=1, type="container"))
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "log gone")


async def _with_agent(tmp_path: Path, body: Any) -> Any:
    server = grpc.aio.server()
    system_pb2_grpc.add_SystemServicer_to_server(_RefusingSystem(), server)
    events_pb2_grpc.add_EventsServicer_to_server(_RefusingEvents(), server)
    sock = tmp_path / "agent.sock"
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    client = AgentClient(Target(name="h1", kind="unix", address=str(sock)), tmp_path)
    try:
        return await body(client)
    finally:
        await client.close()
        await server.stop(None)


def test_unary_and_streaming_failures_carry_the_exit_code_chosen_at_the_call(tmp_path: Path) -> None:
    exits = ErrorExits(default=125, by_status={"FAILED_PRECONDITION": 126})

    async def body(client: AgentClient) -> tuple[AgentCallError, AgentCallError, AgentCallError, list[int]]:
        with pytest.raises(AgentCallError) as plain:
            await SystemApi(client).ping()
        ping = system_pb2.DESCRIPTOR.services_by_name["System"].methods_by_name["Ping"]
        call = rpc(ping.containing_service, "Ping", system_pb2.PingRequest, system_pb2.PingResponse)
        with pytest.raises(AgentCallError) as chosen:
            await client.unary(call, system_pb2.PingRequest(), exits=exits)
        seen: list[int] = []
        with pytest.raises(AgentCallError) as streamed:
            async for event in EventsApi(client).stream():
                seen.append(event.seq)
        return plain.value, chosen.value, streamed.value, seen

    plain, chosen, streamed, seen = asyncio.run(_with_agent(tmp_path, body))
    assert (plain.code, plain.exit_code, str(plain)) == ("FAILED_PRECONDITION", 1, "h1: not now")
    assert (chosen.code, chosen.exit_code) == ("FAILED_PRECONDITION", 126)
    assert (streamed.code, streamed.exit_code, streamed.message, seen) == (
        "FAILED_PRECONDITION",
        1,
        "log gone",
        [1],
    )
