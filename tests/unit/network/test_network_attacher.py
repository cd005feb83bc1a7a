"""The plug into the container manager's seam: options → AttachRequest, container lookup."""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.network.attacher import ContainerLookupAdapter, request_for
from agent.network.models import PortMapping, Protocol


@dataclass(frozen=True)
class Basic:
    network: str
    name: str
    hostname: str


@dataclass(frozen=True)
class Full(Basic):
    ip: str = ""
    aliases: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    etc_files: dict[str, str] = field(default_factory=dict)


def test_basic_options_give_a_plain_request() -> None:
    req = request_for("c1", Basic("bridge", "web", "h"))
    assert (req.network, req.name, req.hostname, req.publish, req.files) == ("bridge", "web", "h", (), None)


def test_full_options_are_parsed() -> None:
    etc = {"/etc/hosts": "/x/hosts", "/etc/hostname": "/x/hostname", "/etc/resolv.conf": "/x/resolv.conf"}
    req = request_for("c1", Full("net", "web", "h", "10.1.0.5", ("w",), ("8080:80", "53/udp"), etc))
    assert req.ip == IPv4Address("10.1.0.5") and req.aliases == ("w",)
    assert req.publish == (PortMapping(80, host_port=8080), PortMapping(53, Protocol.UDP))
    assert req.files is not None and req.files.hosts == Path("/x/hosts")
    with pytest.raises(InvalidArgument):
        request_for("c1", Full("net", "web", "h", ip="10.1.0"))
    with pytest.raises(InvalidArgument):
        request_for("c1", Full("net", "web", "h", publish=("80/sctp",)))


@dataclass
class Rec:
    id: str
    name: str
    hostname: str
    pid: int
    status: str


class Finder:
    def __init__(self, rec: Rec) -> None:
        self.rec = rec

    def find(self, ref: str) -> Rec:
        return self.rec

    def list_containers(self, *, all_: bool = True) -> list[Rec]:
        return [self.rec]


async def test_lookup_gives_a_namespace_only_for_running_containers() -> None:
    import os

    running = await ContainerLookupAdapter(Finder(Rec("id1", "n", "h", os.getpid(), "running"))).resolve("n")
    assert running.netns_path == f"/proc/{os.getpid()}/ns/net"
    stopped = await ContainerLookupAdapter(Finder(Rec("id1", "n", "h", os.getpid(), "exited"))).resolve("n")
    assert stopped.netns_path is None
    assert await ContainerLookupAdapter(Finder(Rec("id1", "n", "h", 0, "exited"))).existing_ids() == {"id1"}


async def test_container_mode_attaches_nothing_and_refuses_ports() -> None:
    from agent.network.attacher import BridgeAttacher

    class Refuse:
        async def attach(self, *args: object) -> None:
            raise AssertionError("must not be called")

    attacher = BridgeAttacher(Refuse())  # type: ignore[arg-type]
    await attacher.attach("c1", "/proc/1/ns/net", Basic("container:other", "n", "h"))
    with pytest.raises(InvalidArgument, match="container:"):
        await attacher.attach("c1", "/proc/1/ns/net", Full("container:other", "n", "h", publish=("80",)))
