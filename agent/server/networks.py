"""The Networks servicer: validate → NetworkManager → convert to agent.api.v1 messages. Nothing else."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from ipaddress import IPv4Address

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent import limits
from agent.api.v1 import networks_pb2, networks_pb2_grpc
from agent.errors import InvalidArgument
from agent.network.manager import NetworkManager
from agent.network.models import Endpoint, Network, PortMapping, Protocol
from agent.server import paging

_PROTOCOLS = {Protocol.TCP: networks_pb2.PROTOCOL_TCP, Protocol.UDP: networks_pb2.PROTOCOL_UDP}


def _ts(dt: datetime | None) -> Timestamp | None:
    if dt is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _required(value: str, what: str) -> str:
    if not value:
        raise InvalidArgument(f"{what} is required")
    return value


def _ip(value: str) -> IPv4Address | None:
    if not value:
        return None
    try:
        return IPv4Address(value)
    except ValueError:
        raise InvalidArgument(f"invalid IPv4 address {value!r}") from None


def network_message(net: Network, containers: int) -> networks_pb2.Network:
    return networks_pb2.Network(
        id=net.id,
        name=net.name,
        driver="bridge",
        bridge=net.bridge,
        subnet=str(net.subnet),
        gateway=str(net.gateway),
        internal=net.internal,
        is_default=net.default,
        created_at=_ts(net.created_at),
        labels=net.labels,
        containers=containers,
    )


def endpoint_message(net: Network, ep: Endpoint) -> networks_pb2.Endpoint:
    return networks_pb2.Endpoint(
        container_id=ep.container_id,
        container_name=ep.container_name,
        network_id=net.id,
        network_name=net.name,
        address=str(ep.address),
        mac=ep.mac,
        gateway=str(net.gateway),
        host_veth=ep.host_veth,
        ifname=ep.ifname,
        aliases=list(ep.aliases),
    )


def port_message(mapping: PortMapping) -> networks_pb2.PortMapping:
    return networks_pb2.PortMapping(
        host_ip=str(mapping.host_ip),
        host_port=mapping.host_port,
        container_port=mapping.container_port,
        protocol=_PROTOCOLS[mapping.protocol],
    )


class NetworksServicer(networks_pb2_grpc.NetworksServicer):
    def __init__(self, networks: NetworkManager) -> None:
        self._networks = networks

    def _message(self, net: Network) -> networks_pb2.Network:
        return network_message(net, self._networks.attached_count(net.id))

    async def Create(
        self, request: networks_pb2.CreateNetworkRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.CreateNetworkResponse:
        limits.check_labels(request.labels)
        net = await self._networks.create(
            _required(request.name, "network name"), request.subnet, request.internal, dict(request.labels)
        )
        return networks_pb2.CreateNetworkResponse(network=self._message(net))

    async def List(
        self, request: networks_pb2.ListNetworksRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.ListNetworksResponse:
        return networks_pb2.ListNetworksResponse(
            networks=[self._message(n) for n in self._networks.networks()]
        )

    async def ListStream(
        self, request: networks_pb2.ListNetworksRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[networks_pb2.ListNetworksResponse]:
        for page in paging.pages(self._message(n) for n in self._networks.networks()):
            yield networks_pb2.ListNetworksResponse(networks=page)

    async def Inspect(
        self, request: networks_pb2.InspectNetworkRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.InspectNetworkResponse:
        details = self._networks.inspect(_required(request.name, "network name"))
        return networks_pb2.InspectNetworkResponse(
            network=network_message(details.network, len(details.endpoints)),
            endpoints=[endpoint_message(details.network, ep) for ep in details.endpoints],
        )

    async def Remove(
        self, request: networks_pb2.RemoveNetworkRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.RemoveNetworkResponse:
        net = await self._networks.remove(_required(request.name, "network name"))
        return networks_pb2.RemoveNetworkResponse(network=network_message(net, 0))

    async def Connect(
        self, request: networks_pb2.ConnectNetworkRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.ConnectNetworkResponse:
        network = _required(request.network, "network name")
        for alias in request.aliases:
            limits.check_network_alias(alias, "--alias")
        ep = await self._networks.connect(
            network, _required(request.container, "container"), _ip(request.ip), tuple(request.aliases)
        )
        return networks_pb2.ConnectNetworkResponse(endpoint=endpoint_message(self._networks.get(network), ep))

    async def Disconnect(
        self, request: networks_pb2.DisconnectNetworkRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.DisconnectNetworkResponse:
        await self._networks.disconnect(
            _required(request.network, "network name"), _required(request.container, "container")
        )
        return networks_pb2.DisconnectNetworkResponse()

    async def ListPorts(
        self, request: networks_pb2.ListPortsRequest, context: grpc.aio.ServicerContext
    ) -> networks_pb2.ListPortsResponse:
        ports = await self._networks.ports_of(_required(request.container, "container"))
        return networks_pb2.ListPortsResponse(ports=[port_message(p) for p in ports])
