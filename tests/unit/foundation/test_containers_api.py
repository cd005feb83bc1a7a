"""The typed Containers client (controller/api/containers.py) and the attached session (controller/session.py)
against a fake agent on a unix socket: conversions, typed wire fields, exit codes chosen at the call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from controller import session
from controller.api.containers import ContainerConfig, ContainersApi, ExecSpec
from controller.client import AgentClient
from controller.commands.containers import container_json, status_text
from controller.errors import AgentCallError
from controller.target import Target
from controller.terminal import Size
from controller.times import parse_time

T = TypeVar("T")


class _Agent(containers_pb2_grpc.ContainersServicer):
    def __init__(self) -> None:
        self.configs: list[pb.ContainerConfig] = []
        self.lists: list[pb.ListContainersRequest] = []

    async def ListStream(self, request: Any, context: Any) -> AsyncIterator[pb.ListContainersResponse]:
        self.lists.append(request)
        c = pb.Container(
            id="a" * 64,
            status=pb.CONTAINER_STATUS_EXITED,
            exit_code=3,
            finished_at=Timestamp(seconds=1_700_000_000),
            mounts=[pb.ContainerMount(type="", mount_type=pb.MOUNT_TYPE_TMPFS, destination="/t")],
            config_json='{"a": 1}',
        )
        yield pb.ListContainersResponse(containers=[c])

    async def Run(self, requests: Any, context: Any) -> AsyncIterator[pb.RunContainerResponse]:
        first = await requests.__anext__()
        self.configs.append(first.start.config)
        yield pb.RunContainerResponse(id="c1")
        yield pb.RunContainerResponse(output=pb.Output(stream=pb.OUTPUT_STREAM_STDERR, data=b"warn\n"))
        stdin = b""
        async for r in requests:
            if r.WhichOneof("msg") == "close_stdin":
                break
            stdin += r.stdin
        yield pb.RunContainerResponse(output=pb.Output(stream=pb.OUTPUT_STREAM_STDOUT, data=b"got " + stdin))
        yield pb.RunContainerResponse(exit=pb.ExitStatus(code=7))

    async def Exec(self, requests: Any, context: Any) -> AsyncIterator[pb.ExecContainerResponse]:
        await requests.__anext__()
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "container is paused")
        yield pb.ExecContainerResponse()  # never reached


def _with_agent(tmp_path: Path, body: Callable[[ContainersApi, _Agent], Awaitable[T]]) -> T:
    async def main() -> T:
        agent = _Agent()
        server = grpc.aio.server()
        containers_pb2_grpc.add_ContainersServicer_to_server(agent, server)
        sock = tmp_path / "agent.sock"
        server.add_insecure_port(f"unix:{sock}")
        await server.start()
        client = AgentClient(Target(name="h1", kind="unix", address=str(sock)), tmp_path)
        try:
            return await body(ContainersApi(client), agent)
        finally:
            await client.close()
            await server.stop(None)

    return asyncio.run(main())


def test_ls_sends_filter_pairs_and_reads_typed_results(tmp_path: Path) -> None:
    async def body(api: ContainersApi, agent: _Agent) -> None:
        [c] = await api.ls(all=True, filters=("Status=exited", "label=a=b"))
        assert [(p.key, p.value) for p in agent.lists[0].filter_pairs] == [
            ("status", "exited"),
            ("label", "a=b"),
        ]
        assert list(agent.lists[0].filters) == ["Status=exited", "label=a=b"]  # older agents read these
        assert c.status == "exited" and c.mounts[0].type == "tmpfs" and c.config == {"a": 1}
        d = container_json(c)
        assert d["finished_at"] == "2023-11-14T22:13:20+00:00" and d["started_at"] is None
        assert d["config"] == {"a": 1} and "oci_spec" not in d and "health_log" not in d
        assert status_text(c).startswith("Exited (3) ")

    _with_agent(tmp_path, body)


def test_a_bad_filter_is_refused_as_the_agent_did(tmp_path: Path) -> None:
    async def body(api: ContainersApi, agent: _Agent) -> None:
        with pytest.raises(AgentCallError) as err:
            await api.ls(filters=("bogus",))
        assert str(err.value) == "h1: invalid filter 'bogus': expected KEY=VALUE"
        assert err.value.exit_code == 1 and agent.lists == []

    _with_agent(tmp_path, body)


def test_run_session_sends_typed_fields_and_stdin_and_returns_the_exit(
    tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    config = ContainerConfig(image="img", command=("sh",), memory="512m", cpus="1.5", health_interval="1m30s")

    async def body(api: ContainersApi, agent: _Agent) -> tuple[int | None, list[str]]:
        ids: list[str] = []
        run = api.run(config, detach=False, size=Size(0, 0))
        run.send_stdin(b"abc")
        run.close_stdin()
        return await session.drive(run, interactive=False, tty=False, on_id=ids.append), ids

    code, ids = _with_agent(tmp_path, body)
    assert (code, ids) == (7, ["c1"])
    out, err = capfdbinary.readouterr()
    assert (out, err) == (b"got abc", b"warn\n")


def test_run_refuses_a_bad_size_with_exit_125_before_calling(tmp_path: Path) -> None:
    async def body(api: ContainersApi, agent: _Agent) -> None:
        with pytest.raises(AgentCallError) as err:
            api.run(ContainerConfig(image="img", memory="lots"), detach=True, size=Size(0, 0))
        assert err.value.exit_code == 125 and "invalid --memory value 'lots'" in err.value.message
        assert agent.configs == []

    _with_agent(tmp_path, body)


def test_run_config_carries_both_forms(tmp_path: Path) -> None:
    async def body(api: ContainersApi, agent: _Agent) -> pb.ContainerConfig:
        run = api.run(
            ContainerConfig(image="i", memory="512m", cpus="1.5", health_interval="1m30s"),
            detach=False,
            size=Size(0, 0),
        )
        run.close_stdin()
        await session.drive(run, interactive=False, tty=False)
        return agent.configs[0]

    cfg = _with_agent(tmp_path, body)
    assert (cfg.memory, cfg.memory_bytes, cfg.cpus, cfg.nano_cpus) == (
        "512m",
        512 << 20,
        "1.5",
        1_500_000_000,
    )
    assert cfg.health_interval == "1m30s" and cfg.health_interval_duration.ToSeconds() == 90
    assert not cfg.HasField("memory_swap_bytes") and not cfg.HasField("health_timeout_duration")


def test_exec_not_running_exits_126(tmp_path: Path) -> None:
    async def body(api: ContainersApi, agent: _Agent) -> None:
        with pytest.raises(AgentCallError) as err:
            await session.drive(
                api.exec(ExecSpec("c", ("ls",)), size=Size(0, 0)), interactive=False, tty=False
            )
        assert err.value.exit_code == 126 and str(err.value) == "h1: container is paused"

    _with_agent(tmp_path, body)


def test_parse_time_forms() -> None:
    from datetime import UTC, datetime

    now = datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert parse_time("10m", now) == 1_704_164_045_123_456_000
    assert parse_time("1700000000.5", now) == 1_700_000_000_500_000_000
    assert parse_time("2024-01-01T00:00:00Z", now) == parse_time("2024-01-01T00:00:00", now)
    for bad in ("soon", "inf", "1e30"):
        with pytest.raises(Exception, match="invalid time"):
            parse_time(bad, now)
