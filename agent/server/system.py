"""The System servicer: Ping, Version, Info. The pattern for servicers: validate → manager → convert."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent import hostinfo
from agent.api.v1 import system_pb2, system_pb2_grpc
from agent.version import API_VERSION, agent_version


@dataclass(frozen=True)
class Counts:
    images: int = 0
    containers: int = 0
    containers_running: int = 0


def timestamp(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


class SystemServicer(system_pb2_grpc.SystemServicer):
    def __init__(
        self,
        *,
        data_root: str,
        default_runtime: str,
        started_at: datetime,
        counts: Callable[[], Counts],
    ) -> None:
        self._data_root = data_root
        self._default_runtime = default_runtime
        self._started_at = started_at
        self._counts = counts

    async def Ping(
        self, request: system_pb2.PingRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.PingResponse:
        now = Timestamp()
        now.GetCurrentTime()
        return system_pb2.PingResponse(time=now)

    async def Version(
        self, request: system_pb2.VersionRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.VersionResponse:
        return system_pb2.VersionResponse(
            agent_version=agent_version(),
            api_version=API_VERSION,
            python_version=platform.python_version(),
            grpc_version=grpc.__version__,
        )

    async def Info(
        self, request: system_pb2.InfoRequest, context: grpc.aio.ServicerContext
    ) -> system_pb2.InfoResponse:
        facts = hostinfo.host_facts()
        counts = self._counts()
        return system_pb2.InfoResponse(
            hostname=facts.hostname,
            os=facts.os,
            kernel=facts.kernel,
            arch=facts.arch,
            cpus=facts.cpus,
            memory_bytes=facts.memory_bytes,
            runtimes=[
                system_pb2.RuntimeBinary(
                    name=b.name, path=b.path, version=b.version, usable=b.usable, problem=b.problem
                )
                for b in hostinfo.runtime_binaries()
            ],
            default_runtime=self._default_runtime,
            data_root=self._data_root,
            images=counts.images,
            containers=counts.containers,
            containers_running=counts.containers_running,
            agent_version=agent_version(),
            started_at=timestamp(self._started_at),
            cgroup_layout=facts.cgroup_layout,
        )
