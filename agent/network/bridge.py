"""The bridge driver: puts networks and endpoints into the kernel (bridge, gateway address, sysctls,
veth pairs) and takes them out again. Stateless; the manager decides what should exist.
"""

from __future__ import annotations

import asyncio

from agent import log
from agent.network import netlink, sysctl
from agent.network.models import Endpoint, Network

_log = log.get(__name__)


class BridgeDriver:
    def __init__(self, mtu: int = 1500) -> None:
        self._mtu = mtu

    async def ensure_network(self, net: Network) -> None:
        """Bridge up with the gateway address; forwarding on; route_localnet on the bridge. Idempotent."""
        await netlink.ensure_bridge(net.bridge, net.gateway_interface, self._mtu)
        await asyncio.to_thread(sysctl.enable_route_localnet, net.bridge)
        await asyncio.to_thread(sysctl.enable_forwarding)

    async def remove_network(self, net: Network) -> None:
        if await netlink.delete_link(net.bridge):
            _log.info("network.bridge_deleted", network=net.name, bridge=net.bridge)

    async def plug(self, net: Network, ep: Endpoint, netns_path: str, default_route: bool) -> str:
        """Create the endpoint's veth into `netns_path`; returns the interface name inside."""
        await netlink.delete_link(ep.host_veth)  # a leftover from a previous run of this container
        return await netlink.attach_veth(
            netlink.VethSpec(
                host_name=ep.host_veth,
                bridge=net.bridge,
                netns_path=netns_path,
                mac=ep.mac,
                address=ep.address,
                gateway=net.gateway if default_route else None,
                mtu=self._mtu,
            )
        )

    async def unplug(self, ep: Endpoint) -> None:
        """Delete the host end of the veth (the kernel removes the peer); absent is fine."""
        await netlink.delete_link(ep.host_veth)

    async def remove_link(self, name: str) -> None:
        await netlink.delete_link(name)

    async def bridge_exists(self, net: Network) -> bool:
        return await netlink.link_exists(net.bridge)
