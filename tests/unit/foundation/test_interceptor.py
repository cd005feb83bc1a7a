"""The API edge on a real in-process grpc.aio server: error mapping, request ids, the System servicer."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
import pytest

from agent import errors
from agent.api.v1 import system_pb2, system_pb2_grpc
from agent.server.interceptors import AgentInterceptor
from agent.server.status import STATUS_BY_ERROR, code_for
from agent.server.system import Counts, SystemServicer


class FailingSystem(system_pb2_grpc.SystemServicer):
    """Raises whatever the test puts in `exc`, to exercise the interceptor's mapping."""

    exc: BaseException = errors.NotFound("no such thing")

    async def Ping(
        self, request: system_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.PingResponse:
        raise self.exc


@pytest.fixture
async def failing_server() -> AsyncIterator[tuple[str, type[FailingSystem]]]:
    server = grpc.aio.server(interceptors=[AgentInterceptor()])
    system_pb2_grpc.add_SystemServicer_to_server(FailingSystem(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", FailingSystem
    finally:
        await server.stop(None)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (errors.InvalidArgument("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("gone"), grpc.StatusCode.NOT_FOUND),
        (errors.Integrity("digest mismatch"), grpc.StatusCode.DATA_LOSS),
        (errors.RegistryAuth("denied"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.RuntimeCommand("runc", 1, "line1\nboom"), grpc.StatusCode.INTERNAL),
        (errors.ResourceExhausted("full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
    ],
)
async def test_agent_errors_map_to_their_codes(
    failing_server: tuple[str, type[FailingSystem]], exc: errors.AgentError, code: grpc.StatusCode
) -> None:
    address, servicer = failing_server
    servicer.exc = exc
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await system_pb2_grpc.SystemStub(channel).Ping(system_pb2.PingRequest())
    assert info.value.code() == code
    assert info.value.details() == exc.message


async def test_unexpected_exception_is_internal_with_request_id(
    failing_server: tuple[str, type[FailingSystem]],
) -> None:
    address, servicer = failing_server
    servicer.exc = ZeroDivisionError("secret detail")
    async with grpc.aio.insecure_channel(address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await system_pb2_grpc.SystemStub(channel).Ping(
                system_pb2.PingRequest(), metadata=(("x-request-id", "req-42"),)
            )
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == "internal error (request_id=req-42)"


def test_every_error_class_has_a_code() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.AgentError)]
    for cls in classes:
        if cls is errors.AgentError:
            continue
        instance = cls.__new__(cls)
        assert code_for(instance) in set(STATUS_BY_ERROR.values())
    assert code_for(errors.NetworkSetup("x")) == grpc.StatusCode.INTERNAL


def test_runtime_command_keeps_stderr_tail() -> None:
    exc = errors.RuntimeCommand("runc create", 1, "a\nb\nc\nd\ne\nf\nlast words")
    assert exc.message.startswith("runc create failed (exit 1): ")
    assert exc.message.endswith("last words") and "a;" not in exc.message


async def test_system_servicer_info_counts() -> None:
    server = grpc.aio.server(interceptors=[AgentInterceptor()])
    servicer = SystemServicer(
        data_root="/x",
        default_runtime="runc",
        started_at=dt.datetime.now(dt.UTC),
        counts=lambda: Counts(3, 5, 2),
    )
    system_pb2_grpc.add_SystemServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = await system_pb2_grpc.SystemStub(channel).Info(system_pb2.InfoRequest())
    finally:
        await server.stop(None)
    assert (info.images, info.containers, info.containers_running) == (3, 5, 2)
    assert info.data_root == "/x" and info.cpus >= 1
