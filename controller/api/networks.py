"""The Networks service: bridge networks, endpoints and published ports on one agent."""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.api.v1 import networks_pb2 as pb
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Networks"]
CREATE = rpc(_SERVICE, "Create", pb.CreateNetworkRequest, pb.CreateNetworkResponse)
LIST = rpc(_SERVICE, "List", pb.ListNetworksRequest, pb.ListNetworksResponse)
LIST_STREAM = rpc(_SERVICE, "ListStream", pb.ListNetworksRequest, pb.ListNetworksResponse)
INSPECT = rpc(_SERVICE, "Inspect", pb.InspectNetworkRequest, pb.InspectNetworkResponse)
REMOVE = rpc(_SERVICE, "Remove", pb.RemoveNetworkRequest, pb.RemoveNetworkResponse)
CONNECT = rpc(_SERVICE, "Connect", pb.ConnectNetworkRequest, pb.ConnectNetworkResponse)
DISCONNECT = rpc(_SERVICE, "Disconnect", pb.DisconnectNetworkRequest, pb.DisconnectNetworkResponse)
LIST_PORTS = rpc(_SERVICE, "ListPorts", pb.ListPortsRequest, pb.ListPortsResponse)

_PROTOCOLS = {pb.PROTOCOL_TCP: "tcp", pb.PROTOCOL_UDP: "udp"}


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    driver: str
    bridge: str
    subnet: str
    gateway: str
    internal: bool
    default: bool
    created: str | None  # ISO 8601, UTC, with a Z
    labels: dict[str, str]
    containers: int


@dataclass(frozen=True)
class Endpoint:
    """One container's place on one network."""

    container_id: str
    container_name: str
    network: str
    address: str
    mac: str
    gateway: str
    host_veth: str
    ifname: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class NetworkDetails:
    network: Network
    endpoints: tuple[Endpoint, ...]


@dataclass(frozen=True)
class PortMapping:
    host_ip: str
    host_port: int
    container_port: int
    protocol: str  # tcp | udp


class NetworksApi:
    """Typed calls to one agent's Networks service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def create(
        self, name: str, *, subnet: str = "", internal: bool = False, labels: Mapping[str, str] | None = None
    ) -> Network:
        request = pb.CreateNetworkRequest(
            name=name, subnet=subnet, internal=internal, labels=dict(labels or {})
        )
        return _network((await self.client.unary(CREATE, request)).network)

    async def list(self) -> builtins.list[Network]:
        pages = self.client.paged(LIST_STREAM, LIST, pb.ListNetworksRequest())
        return [_network(n) async for page in pages for n in page.networks]

    async def inspect(self, name: str) -> NetworkDetails:
        r = await self.client.unary(INSPECT, pb.InspectNetworkRequest(name=name))
        return NetworkDetails(_network(r.network), tuple(_endpoint(e) for e in r.endpoints))

    async def remove(self, name: str) -> None:
        await self.client.unary(REMOVE, pb.RemoveNetworkRequest(name=name))

    async def connect(
        self, network: str, container: str, *, ip: str = "", aliases: Sequence[str] = ()
    ) -> Endpoint:
        request = pb.ConnectNetworkRequest(network=network, container=container, ip=ip, aliases=aliases)
        return _endpoint((await self.client.unary(CONNECT, request)).endpoint)

    async def disconnect(self, network: str, container: str) -> None:
        await self.client.unary(DISCONNECT, pb.DisconnectNetworkRequest(network=network, container=container))

    async def ports(self, container: str) -> builtins.list[PortMapping]:
        """The container's published ports."""
        r = await self.client.unary(LIST_PORTS, pb.ListPortsRequest(container=container))
        return [
            PortMapping(p.host_ip, p.host_port, p.container_port, _PROTOCOLS.get(p.protocol, "tcp"))
            for p in r.ports
        ]


def _network(n: pb.Network) -> Network:
    return Network(
        id=n.id,
        name=n.name,
        driver=n.driver,
        bridge=n.bridge,
        subnet=n.subnet,
        gateway=n.gateway,
        internal=n.internal,
        default=n.is_default,
        created=n.created_at.ToDatetime().isoformat() + "Z" if n.HasField("created_at") else None,
        labels=dict(n.labels),
        containers=n.containers,
    )


def _endpoint(e: pb.Endpoint) -> Endpoint:
    return Endpoint(
        container_id=e.container_id,
        container_name=e.container_name,
        network=e.network_name,
        address=e.address,
        mac=e.mac,
        gateway=e.gateway,
        host_veth=e.host_veth,
        ifname=e.ifname,
        aliases=tuple(e.aliases),
    )
