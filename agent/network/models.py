"""Network records: what a network, an endpoint and a published port are (frozen, no I/O).

These are the manager's vocabulary; the SQLite rows (`store.py`), the nftables ruleset (`nft.py`) and the
gRPC messages (`agent/server/networks.py`) are all derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


ANY_IP = IPv4Address("0.0.0.0")


@dataclass(frozen=True)
class PortMapping:
    """`-p [HOST_IP:]HOST_PORT:CTR_PORT[/proto]`; host_port 0 means "pick a free one" until published."""

    container_port: int
    protocol: Protocol = Protocol.TCP
    host_ip: IPv4Address = ANY_IP
    host_port: int = 0

    def __str__(self) -> str:
        return f"{self.host_ip}:{self.host_port}->{self.container_port}/{self.protocol}"


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    bridge: str
    subnet: IPv4Network
    gateway: IPv4Address
    internal: bool = False
    # The default network ("bridge", on the configured bridge): no name resolution between its
    # containers, as in Docker; it is created on first use and cannot be removed.
    default: bool = False
    created_at: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def gateway_interface(self) -> IPv4Interface:
        return IPv4Interface(f"{self.gateway}/{self.subnet.prefixlen}")


@dataclass(frozen=True)
class Endpoint:
    """One container's attachment to one network."""

    container_id: str
    network_id: str
    host_veth: str
    mac: str
    address: IPv4Interface
    container_name: str = ""
    hostname: str = ""
    aliases: tuple[str, ...] = ()
    ifname: str = ""  # inside the container; empty until the veth exists


@dataclass(frozen=True)
class PublishedPort:
    """A port mapping bound to a concrete host port and container address."""

    container_id: str
    network_id: str
    mapping: PortMapping  # host_port is never 0 here
    container_ip: IPv4Address
