"""The System service: ping, versions, host facts."""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent.api.v1 import system_pb2 as pb
from controller.client import DEFAULT_TIMEOUT, AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["System"]
PING = rpc(_SERVICE, "Ping", pb.PingRequest, pb.PingResponse)
VERSION = rpc(_SERVICE, "Version", pb.VersionRequest, pb.VersionResponse)
INFO = rpc(_SERVICE, "Info", pb.InfoRequest, pb.InfoResponse)


@dataclass(frozen=True)
class RuntimeBinary:
    name: str
    path: str
    version: str
    usable: bool
    problem: str


@dataclass(frozen=True)
class Info:
    hostname: str
    os: str
    kernel: str
    arch: str
    cpus: int
    memory_bytes: int
    agent_version: str
    default_runtime: str
    cgroup_layout: str
    data_root: str
    images: int
    containers: int
    containers_running: int
    started_at: str  # ISO 8601, UTC, with a Z
    runtimes: tuple[RuntimeBinary, ...]


@dataclass(frozen=True)
class AgentVersion:
    version: str
    api_version: str
    python: str
    grpc: str


class SystemApi:
    """Typed calls to one agent's System service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def ping(self, *, timeout: float = DEFAULT_TIMEOUT) -> float:
        """The round-trip time of one Ping, in seconds."""
        start = time.perf_counter()
        await self.client.unary(PING, pb.PingRequest(), timeout=timeout)
        return time.perf_counter() - start

    async def version(self) -> AgentVersion:
        r = await self.client.unary(VERSION, pb.VersionRequest())
        return AgentVersion(r.agent_version, r.api_version, r.python_version, r.grpc_version)

    async def info(self, *, timeout: float = DEFAULT_TIMEOUT) -> Info:
        r = await self.client.unary(INFO, pb.InfoRequest(), timeout=timeout)
        return Info(
            hostname=r.hostname,
            os=r.os,
            kernel=r.kernel,
            arch=r.arch,
            cpus=r.cpus,
            memory_bytes=r.memory_bytes,
            agent_version=r.agent_version,
            default_runtime=r.default_runtime,
            cgroup_layout=r.cgroup_layout,
            data_root=r.data_root,
            images=r.images,
            containers=r.containers,
            containers_running=r.containers_running,
            started_at=r.started_at.ToDatetime().isoformat() + "Z",
            runtimes=tuple(RuntimeBinary(b.name, b.path, b.version, b.usable, b.problem) for b in r.runtimes),
        )
