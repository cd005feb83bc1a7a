"""NetworkManager against real kernel objects: "containers" are plain network namespaces running busybox.

Traffic goes only to addresses these tests create inside 10.232.0.0/16.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from agent.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from agent.network.attacher import BridgeAttacher
from agent.network.manager import AttachRequest, ContainerRef, NetworkManager
from agent.network.models import PortMapping, Protocol
from tests.integration.network.conftest import Lab, bridge_ports, fetch_host, link_exists, sh, table_rules

pytestmark = pytest.mark.root


def cid() -> str:
    return secrets.token_hex(32)


async def test_attach_default_network_configures_the_namespace(lab: Lab, manager: NetworkManager) -> None:
    ns = lab.netns("a")
    container = cid()
    result = await manager.attach(
        AttachRequest(container, name="alpha", hostname="alpha-host", files=ns.etc), ns.path
    )

    net = result.networks[0].network
    ep = result.networks[0].endpoint
    assert net.default and net.bridge == lab.bridge
    assert ep.address.ip in lab.block.default_subnet and ep.ifname == "eth0"
    addr = ns.run("ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert str(ep.address) in addr
    assert f"default via {net.gateway} dev eth0" in ns.run("ip", "route").stdout
    assert "UP" in ns.run("ip", "-o", "link", "show", "lo").stdout
    assert ep.host_veth in bridge_ports(lab.bridge)
    hosts = ns.etc.hosts.read_text()
    assert f"{ep.address.ip}\talpha-host alpha" in hosts
    assert ns.etc.hostname.read_text() == "alpha-host\n"
    # the host reaches the namespace through the bridge
    ns.serve_http(lab.www(ns), "alpha")
    assert fetch_host(f"http://{ep.address.ip}/") == "alpha\n"

    await manager.detach(container)
    await manager.wait_idle()  # host veths are deleted in the background
    assert not link_exists(ep.host_veth)
    assert "eth0" not in ns.run("ip", "-o", "link").stdout
    assert manager.inspect("bridge").endpoints == ()
    await manager.detach(container)  # idempotent


async def test_user_network_names_aliases_and_isolation(lab: Lab, manager: NetworkManager) -> None:
    await manager.create("front")
    await manager.create("back")
    web, client, other = lab.netns("web"), lab.netns("client"), lab.netns("other")
    web_id, client_id, other_id = cid(), cid(), cid()
    r_web = await manager.attach(
        AttachRequest(web_id, name="web", network="front", aliases=("www",), files=web.etc), web.path
    )
    await manager.attach(
        AttachRequest(client_id, name="client", network="front", files=client.etc), client.path
    )
    await manager.attach(AttachRequest(other_id, name="other", network="back", files=other.etc), other.path)
    web.serve_http(lab.www(web), "web")
    client.mount_etc = other.mount_etc = True

    assert client.fetch("http://web/") == "web\n"
    assert client.fetch("http://www/") == "web\n"
    # the hosts file of a member that joined earlier learnt about the later one
    assert "\tclient " in web.etc.hosts.read_text()
    # another network: no name, and no route through the host either
    assert other.fetch("http://web/", timeout=1.5) is None
    assert other.fetch(f"http://{r_web.ip}/", timeout=1.5) is None

    await manager.detach(client_id)
    assert "client" not in web.etc.hosts.read_text()
    with pytest.raises(FailedPrecondition, match="attached"):
        await manager.remove("front")
    await manager.detach(web_id)
    await manager.detach(other_id)
    removed = await manager.remove("front")
    assert not link_exists(removed.bridge)
    with pytest.raises(NotFound):
        manager.get("front")


async def test_create_validates_and_allocates_subnets(lab: Lab, manager: NetworkManager) -> None:
    a = await manager.create("a")
    b = await manager.create("b", internal=True)
    assert a.subnet != b.subnet and a.subnet.subnet_of(lab.block.pool) and b.internal
    with pytest.raises(AlreadyExists):
        await manager.create("a")
    with pytest.raises(AlreadyExists, match="overlaps"):
        await manager.create("c", subnet=str(a.subnet))
    with pytest.raises(InvalidArgument):
        await manager.create("bridge")
    with pytest.raises(InvalidArgument):
        await manager.create("bad name")
    with pytest.raises(FailedPrecondition):
        await manager.remove("bridge")
    custom = await manager.create("custom", subnet=str(lab.block.link_net(5).supernet(new_prefix=28)))
    assert custom.gateway == custom.subnet.network_address + 1
    assert manager.get(custom.id[:10]).name == "custom"
    assert {n.name for n in manager.networks()} == {"bridge", "a", "b", "custom"}


async def test_published_port_from_host_gateway_and_another_host(lab: Lab, manager: NetworkManager) -> None:
    ctr, (remote, host_side, remote_side) = lab.netns("srv"), lab.test_host("remote", 0)
    container = cid()
    result = await manager.attach(
        AttachRequest(
            container,
            name="srv",
            publish=(PortMapping(80), PortMapping(80, host_port=0, host_ip=IPv4Address("127.0.0.1"))),
        ),
        ctr.path,
    )
    ctr.serve_http(lab.www(ctr), "srv")
    any_port, local_port = (p.host_port for p in result.ports)
    assert any_port and local_port and manager.ports(container) == list(result.ports)
    gateway = result.networks[0].network.gateway

    assert fetch_host(f"http://127.0.0.1:{any_port}/") == "srv\n"
    assert fetch_host(f"http://{gateway}:{any_port}/") == "srv\n"
    assert fetch_host(f"http://127.0.0.1:{local_port}/") == "srv\n"
    seen = remote.fetch(f"http://{host_side.ip}:{any_port}/cgi-bin/whoami")
    assert seen == f"srv {remote_side.ip}\n"  # other hosts keep their address
    # a port published on 127.0.0.1 only is not reachable from elsewhere
    assert remote.fetch(f"http://{host_side.ip}:{local_port}/", timeout=1.5) is None

    # the host port is held: neither a host program nor another container can take it
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("0.0.0.0", any_port))
    other = lab.netns("other")
    with pytest.raises(AlreadyExists, match="in use"):
        await manager.attach(AttachRequest(cid(), publish=(PortMapping(81, host_port=any_port),)), other.path)
    assert manager.inspect("bridge").endpoints[0].container_id == container  # the failed one left nothing

    await manager.detach(container)
    assert not [r for r in await table_rules(lab.table) if "comment" in r]
    with socket.socket() as probe:
        probe.bind(("0.0.0.0", any_port))


async def test_egress_is_masqueraded_and_internal_networks_have_none(
    lab: Lab, manager: NetworkManager
) -> None:
    upstream, host_side, upstream_side = lab.test_host("up", 1)
    upstream.serve_http(lab.www(upstream), "upstream")
    # the upstream namespace knows no route back to container subnets: only masquerade makes replies work
    await manager.create("sealed", internal=True)
    out, sealed = lab.netns("out"), lab.netns("sealed")
    await manager.attach(AttachRequest(cid(), name="out"), out.path)
    r_sealed = await manager.attach(AttachRequest(cid(), name="sealed", network="sealed"), sealed.path)

    assert out.fetch(f"http://{upstream_side.ip}/cgi-bin/whoami") == f"upstream {host_side.ip}\n"
    assert sealed.fetch(f"http://{upstream_side.ip}/", timeout=1.5) is None
    # internal still means reachable from the host and within the network
    sealed.serve_http(lab.www(sealed), "sealed")
    assert fetch_host(f"http://{r_sealed.ip}/") == "sealed\n"
    with pytest.raises(InvalidArgument, match="internal"):
        await manager.attach(
            AttachRequest(cid(), network="sealed", publish=(PortMapping(80),)), lab.netns("x").path
        )


class Lookup:
    """The containers a test made known by name (what the container records give the agent's manager)."""

    def __init__(self) -> None:
        self.known: dict[str, ContainerRef] = {}

    async def resolve(self, name_or_id: str) -> ContainerRef:
        if name_or_id not in self.known:
            raise NotFound(f"no container {name_or_id}")
        return self.known[name_or_id]

    async def existing_ids(self) -> set[str]:
        return {ref.id for ref in self.known.values()}


async def test_requested_ip_exhaustion_and_connect(lab: Lab, tmp_path: Path) -> None:
    lookup = Lookup()
    manager = lab.manager(tmp_path / "dockyard.db", containers=lookup)
    await manager.start()
    try:
        await _exhaust_and_connect(lab, manager, lookup)
    finally:
        await manager.stop()


async def _exhaust_and_connect(lab: Lab, manager: NetworkManager, lookup: Lookup) -> None:
    tiny = await manager.create("tiny", subnet="10.232.255.0/30")  # inside our /16; one usable address
    a, b = lab.netns("a"), lab.netns("b")
    a_id = cid()
    with pytest.raises(InvalidArgument):
        await manager.attach(AttachRequest(a_id, network="tiny", ip=IPv4Address("10.232.254.9")), a.path)
    r = await manager.attach(AttachRequest(a_id, network="tiny", ip=IPv4Address("10.232.255.2")), a.path)
    assert r.ip == IPv4Address("10.232.255.2")
    with pytest.raises(ResourceExhausted):
        await manager.attach(AttachRequest(cid(), network="tiny"), b.path)

    lookup.known["a"] = ContainerRef(a_id, "a", "a", a.path)
    await manager.create("extra")
    ep = await manager.connect("extra", "a", aliases=("alias-a",))
    assert ep.ifname == "eth1"
    assert str(ep.address) in a.run("ip", "-4", "-o", "addr", "show", "eth1").stdout
    assert "default via 10.232.255.1" in a.run("ip", "route").stdout  # the first network keeps the route
    with pytest.raises(AlreadyExists):
        await manager.connect("extra", "a")
    await manager.disconnect("extra", "a")
    assert "eth1" not in a.run("ip", "-o", "link").stdout
    with pytest.raises(NotFound):
        await manager.disconnect("extra", "a")
    await manager.detach(a_id)
    assert tiny.name == "tiny"


async def test_hundred_cycles_leave_nothing_behind(lab: Lab, manager: NetworkManager) -> None:
    ns = lab.netns("cycle")
    await manager.create("user")
    for i in range(100):
        container = cid()
        network = "user" if i % 2 else "bridge"
        publish = (PortMapping(80, Protocol.UDP if i % 3 else Protocol.TCP),)
        r = await manager.attach(
            AttachRequest(container, name=f"c{i}", network=network, publish=publish), ns.path
        )
        assert r.ports[0].host_port > 0
        await manager.detach(container)
    await manager.wait_idle()
    bridges = [n.bridge for n in manager.networks()]
    assert all(bridge_ports(b) == [] for b in bridges)
    assert "eth0" not in ns.run("ip", "-o", "link").stdout
    assert not [r for r in await table_rules(lab.table) if "comment" in r]
    assert manager._ipam.count() == 0
    assert manager._reservations.held() == 0


async def test_restart_keeps_addresses_and_ports_and_cleans_orphans(lab: Lab, tmp_path: Path) -> None:
    db = tmp_path / "dockyard.db"
    first = lab.manager(db)
    await first.start()
    keep_ns, gone_ns = lab.netns("keep"), lab.netns("gone")
    keep, gone = cid(), cid()
    r_keep = await first.attach(AttachRequest(keep, name="keep", publish=(PortMapping(80),)), keep_ns.path)
    r_gone = await first.attach(AttachRequest(gone, name="gone"), gone_ns.path)
    keep_ns.serve_http(lab.www(keep_ns), "keep")
    port = r_keep.ports[0].host_port
    await first.stop()  # like a crash for what matters: reservations gone, kernel state stays
    sh("nft", "delete", "table", "inet", lab.table)  # and say the rules were lost too

    second = lab.manager(db)
    await second.start(existing_containers=_existing({keep}))
    assert fetch_host(f"http://127.0.0.1:{port}/") == "keep\n"
    assert second.ports(keep) == list(r_keep.ports)
    assert [e.address for _, e in second.endpoints(keep)] == [r_keep.networks[0].endpoint.address]
    await second.wait_idle()
    assert not link_exists(r_gone.networks[0].endpoint.host_veth)
    assert second.endpoints(gone) == []
    fresh = await second.attach(AttachRequest(cid(), name="fresh"), gone_ns.path)
    assert fresh.ip != r_keep.ip
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("0.0.0.0", port))
    await second.stop()


def _existing(ids: set[str]):  # type: ignore[no-untyped-def]
    async def existing() -> set[str]:
        return set(ids)

    return existing


async def test_files_prepared_at_create_are_filled_at_attach_and_swept_when_orphaned(
    lab: Lab, tmp_path: Path
) -> None:
    mgr = lab.manager(tmp_path / "dockyard.db")
    await mgr.start()
    attacher = BridgeAttacher(mgr)
    ns, container = lab.netns("p"), cid()
    files = attacher.etc_files(container, "ph")
    assert Path(files["/etc/hostname"]).read_text() == "ph\n"
    assert "127.0.1.1\tph" in Path(files["/etc/hosts"]).read_text()
    inode = Path(files["/etc/hosts"]).stat().st_ino

    @dataclass(frozen=True)
    class Options:
        network: str = "bridge"
        name: str = "pname"
        hostname: str = "ph"

    assert attacher.etc_files_of(container) == files  # what a `container:` sidecar would share
    assert attacher.etc_files_of(cid()) is None
    await attacher.attach(container, ns.path, Options())
    ip = mgr.endpoints(container)[0][1].address.ip
    assert f"{ip}\tph pname" in Path(files["/etc/hosts"]).read_text()
    assert Path(files["/etc/hosts"]).stat().st_ino == inode
    await attacher.detach(container)
    assert Path(files["/etc/hosts"]).exists()  # a stopped container keeps its files for the next start
    await mgr.stop()

    again = lab.manager(tmp_path / "dockyard.db")
    await again.start(existing_containers=_existing(set()))
    assert not Path(files["/etc/hosts"]).exists()
    await again.stop()


async def test_containers_reach_published_ports_through_host_addresses(
    lab: Lab, manager: NetworkManager
) -> None:
    srv, other = lab.netns("hp"), lab.netns("hq")
    r = await manager.attach(AttachRequest(cid(), name="hp", publish=(PortMapping(80),)), srv.path)
    await manager.attach(AttachRequest(cid(), name="hq"), other.path)
    srv.serve_http(lab.www(srv), "hp")
    url = f"http://{r.networks[0].network.gateway}:{r.ports[0].host_port}/"
    assert other.fetch(url) == "hp\n"  # a sibling, through the gateway
    assert srv.fetch(url) == "hp\n"  # itself (hairpin)
