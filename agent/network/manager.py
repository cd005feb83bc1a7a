"""NetworkManager: container networks as users see them — the default bridge network, user-defined
networks, endpoints (attach/detach, connect/disconnect), published ports, per-container /etc files — and
the reconciliation of kernel state with the database at start.

It decides; `bridge.py` (netlink), `nft.py` (nftables), `ipam.py` (addresses), `ports.py` (host port
reservations), `names.py` (hosts files) and `store.py` carry it out. All mutations run under one asyncio
lock: they are short (a few ms of netlink plus, when ports or networks change, one ruleset load), and one
writer keeps the database, the kernel and the hosts files in step. The order inside each operation is
chosen so that a crash at any point leaves something start-up reconciliation can finish: rows before
kernel objects when creating, kernel objects (or a record of their pending deletion) before rows when
deleting.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Protocol

from agent import log
from agent.errors import (
    AgentError,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from agent.network import ipam, nft
from agent.network.bridge import BridgeDriver
from agent.network.etcfiles import EtcPaths
from agent.network.models import Endpoint, Network, PortMapping, PublishedPort
from agent.network.names import Names
from agent.network.ports import PortReservations
from agent.network.store import NetworkStore
from agent.state.db import Database

_log = log.get(__name__)

DEFAULT_NETWORK = "bridge"
RESERVED_NAMES = {"bridge", "host", "none", "default"}
NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$")
IFNAMSIZ = 15


@dataclass(frozen=True)
class NetworkSettings:
    """The agent-config part the manager needs (see AgentConfig.network_*)."""

    bridge: str = "dockyard0"
    subnet: str = "10.210.0.0/16"
    pool: str = "10.211.0.0/16"
    pool_prefixlen: int = 24
    name_prefix: str = "dy-"
    nft_table: str = "dockyard"
    mtu: int = 1500
    host_resolv_conf: Path = Path("/etc/resolv.conf")
    # Where `prepare_files` creates /etc files for containers whose manager asks us for them.
    etc_dir: Path | None = None


@dataclass(frozen=True)
class AttachRequest:
    """What the container manager asks for when a container's namespace is ready."""

    container_id: str
    name: str = ""
    hostname: str = ""
    network: str = DEFAULT_NETWORK  # name or id; "" = the default network
    ip: IPv4Address | None = None
    aliases: tuple[str, ...] = ()
    publish: tuple[PortMapping, ...] = ()
    # The container's bind-mounted /etc files; None leaves them alone (no name resolution for it).
    files: EtcPaths | None = None


@dataclass(frozen=True)
class AttachedNetwork:
    network: Network
    endpoint: Endpoint


@dataclass(frozen=True)
class AttachResult:
    networks: tuple[AttachedNetwork, ...]
    ports: tuple[PortMapping, ...]

    @property
    def ip(self) -> IPv4Address | None:
        return self.networks[0].endpoint.address.ip if self.networks else None


@dataclass(frozen=True)
class ContainerRef:
    """A container as `connect`/`disconnect` need it; netns_path is None when it is not running."""

    id: str
    name: str = ""
    hostname: str = ""
    netns_path: str | None = None


class ContainerLookup(Protocol):
    """Resolve a user's name/ID to a container; list all IDs (`attacher.ContainerLookupAdapter`)."""

    async def resolve(self, name_or_id: str) -> ContainerRef: ...

    async def existing_ids(self) -> set[str]: ...


ExistingContainers = Callable[[], Awaitable[set[str]]]


@dataclass(frozen=True)
class NetworkDetails:
    network: Network
    endpoints: tuple[Endpoint, ...]


def _check_name(name: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidArgument(f"invalid network name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-], at most 64")
    if name in RESERVED_NAMES:
        raise InvalidArgument(f"network name {name!r} is reserved")


def _parse_subnet(text: str) -> IPv4Network:
    try:
        subnet = IPv4Network(text, strict=False)
    except ValueError:
        raise InvalidArgument(f"invalid subnet {text!r}: expected an IPv4 CIDR such as 10.1.2.0/24") from None
    if subnet.prefixlen > 30:
        raise InvalidArgument(f"subnet {subnet} is too small: need at least a /30")
    return subnet


class NetworkManager:
    def __init__(
        self, db: Database, settings: NetworkSettings, containers: ContainerLookup | None = None
    ) -> None:
        """`containers` serves connect/disconnect by name and the orphan sweep at start (None: neither)."""
        self._settings = settings
        self._store = NetworkStore(db)
        self._ipam = ipam.Ipam(db)
        self._driver = BridgeDriver(settings.mtu)
        self._names = Names(self._store, settings.etc_dir, settings.host_resolv_conf)
        self._reservations = PortReservations()
        self._lock = asyncio.Lock()
        self._ready: set[str] = set()  # bridges known to be up in this process
        self._lookup = containers
        # Host veths being deleted in the background (see `_unplug_soon`), by name.
        self._unplugging: dict[str, asyncio.Task[None]] = {}
        if len(settings.name_prefix) > 5:
            raise InvalidArgument(
                "network name prefix must be at most 5 characters (interface names are short)"
            )

    # --- queries -------------------------------------------------------------------------------------

    def networks(self) -> list[Network]:
        return self._store.networks()

    def get(self, name_or_id: str) -> Network:
        """By exact name, exact ID, or unique ID prefix."""
        key = name_or_id or DEFAULT_NETWORK
        nets = self._store.networks()
        for net in nets:
            if key in (net.name, net.id):
                return net
        matches = [n for n in nets if n.id.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidArgument(f"network ID prefix {key!r} is ambiguous")
        raise NotFound(f"network {key!r} not found")

    def inspect(self, name_or_id: str) -> NetworkDetails:
        net = self.get(name_or_id)
        return NetworkDetails(net, tuple(self._store.endpoints(network_id=net.id)))

    def ports(self, container_id: str) -> list[PortMapping]:
        """The published ports of a container, with the host ports actually bound."""
        return [p.mapping for p in self._store.ports(container_id)]

    async def ports_of(self, container: str) -> list[PortMapping]:
        """`dockyard port CTR`: the container by name or ID; a `container:` sidecar has none of its own."""
        return self.ports((await self._resolve(container)).id)

    def attached_count(self, network_id: str) -> int:
        return len(self._store.endpoints(network_id=network_id))

    def endpoints(self, container_id: str) -> list[tuple[Network, Endpoint]]:
        nets = {n.id: n for n in self._store.networks()}
        return [(nets[e.network_id], e) for e in self._store.endpoints(container_id=container_id)]

    def existing_files(self, container_id: str) -> EtcPaths | None:
        """A container's /etc files if it has any (for `--network container:OTHER`)."""
        return self._names.existing(container_id)

    def prepare_files(self, container_id: str, hostname: str) -> EtcPaths:
        """Create a container's /etc files before it exists, for its manager to bind-mount at create;
        `attach` fills in addresses and peers later, in place. They stay until the container is gone
        (start-up reconciliation removes those of containers that no longer exist)."""
        return self._names.prepare(container_id, hostname)

    # --- networks ------------------------------------------------------------------------------------

    async def create(
        self, name: str, subnet: str = "", internal: bool = False, labels: dict[str, str] | None = None
    ) -> Network:
        _check_name(name)
        async with self._lock:
            nets = self._store.networks()
            if any(n.name == name for n in nets):
                raise AlreadyExists(f"network {name!r} already exists")
            taken = [n.subnet for n in nets]
            if subnet:
                chosen = _parse_subnet(subnet)
                clash = next((n for n in nets if n.subnet.overlaps(chosen)), None)
                if clash is not None:
                    raise AlreadyExists(f"subnet {chosen} overlaps network {clash.name!r} ({clash.subnet})")
            else:
                found = ipam.next_subnet(
                    _parse_subnet(self._settings.pool), self._settings.pool_prefixlen, taken
                )
                if found is None:
                    raise ResourceExhausted(
                        f"no free /{self._settings.pool_prefixlen} left in {self._settings.pool}"
                    )
                chosen = found
            net_id = secrets.token_hex(32)
            prefix = self._settings.name_prefix + "br"
            net = Network(
                id=net_id,
                name=name,
                bridge=prefix + net_id[: IFNAMSIZ - len(prefix)],
                subnet=chosen,
                gateway=ipam.default_gateway(chosen),
                internal=internal,
                created_at=datetime.now(UTC),
                labels=dict(labels or {}),
            )
            self._store.add_network(net)
            try:
                await self._driver.ensure_network(net)
                self._ready.add(net.bridge)
                await self._sync_rules()
            except BaseException:
                await self._driver.remove_network(net)
                self._store.delete_network(net.id)
                raise
        _log.info("network.created", network=name, id=net_id, subnet=str(chosen), internal=internal)
        return net

    async def remove(self, name_or_id: str) -> Network:
        async with self._lock:
            net = self.get(name_or_id)
            if net.default:
                raise FailedPrecondition(f"network {net.name!r} is the default network and cannot be removed")
            attached = self._store.endpoints(network_id=net.id)
            if attached:
                names = ", ".join(e.container_name or e.container_id[:12] for e in attached)
                raise FailedPrecondition(f"network {net.name!r} has attached containers: {names}")
            await self._driver.remove_network(net)
            self._ready.discard(net.bridge)
            self._ipam.release_network(net.id)
            self._store.delete_network(net.id)
            await self._sync_rules()
        _log.info("network.removed", network=net.name, id=net.id)
        return net

    def _ensure_default_record(self) -> Network:
        for net in self._store.networks():
            if net.default:
                return net
        subnet = _parse_subnet(self._settings.subnet)
        net = Network(
            id=secrets.token_hex(32),
            name=DEFAULT_NETWORK,
            bridge=self._settings.bridge,
            subnet=subnet,
            gateway=ipam.default_gateway(subnet),
            default=True,
            created_at=datetime.now(UTC),
        )
        self._store.add_network(net)
        return net

    async def _ready_network(self, net: Network) -> bool:
        """Make sure the bridge is up; True when this call created it (rules must then be synced)."""
        if net.bridge in self._ready:
            return False
        await self._driver.ensure_network(net)
        self._ready.add(net.bridge)
        return True

    # --- endpoints -----------------------------------------------------------------------------------

    def _veth_name(self, container_id: str, network_id: str) -> str:
        digest = hashlib.sha256(f"{container_id}/{network_id}".encode()).hexdigest()
        prefix = self._settings.name_prefix
        return prefix + digest[: IFNAMSIZ - len(prefix)]

    async def _add_endpoint(
        self,
        net: Network,
        ref: ContainerRef,
        seq: int,
        netns_path: str | None,
        ip: IPv4Address | None,
        aliases: tuple[str, ...],
    ) -> Endpoint:
        """Lease, record, then plug (when running). The row exists before the veth does."""
        address = await asyncio.to_thread(self._ipam.allocate, net.id, net.subnet, net.gateway, ref.id, ip)
        ep = Endpoint(
            container_id=ref.id,
            network_id=net.id,
            host_veth=self._veth_name(ref.id, net.id),
            mac=ipam.mac_for(address),
            address=IPv4Interface(f"{address}/{net.subnet.prefixlen}"),
            container_name=ref.name,
            hostname=ref.hostname,
            aliases=aliases,
        )
        self._store.put_endpoint(ep, seq)
        if netns_path is not None:
            await self._unplugged(ep.host_veth)
            ifname = await self._driver.plug(net, ep, netns_path, default_route=seq == 0)
            ep = replace(ep, ifname=ifname)
            self._store.put_endpoint(ep, seq)
        return ep

    async def attach(self, req: AttachRequest, netns_path: str) -> AttachResult:
        """Connect a container whose network namespace is at `netns_path` (e.g. /proc/PID/ns/net) to its
        network(s): the requested one first (default route), then any it was `connect`ed to while stopped.
        On failure everything of this container is released again."""
        async with self._lock:
            try:
                return await self._attach_locked(req, netns_path)
            except BaseException:
                await self._teardown(req.container_id)
                raise

    async def _attach_locked(self, req: AttachRequest, netns_path: str) -> AttachResult:
        started = time.perf_counter()
        primary = (
            self._ensure_default_record() if req.network in ("", DEFAULT_NETWORK) else self.get(req.network)
        )
        if req.publish and primary.internal:
            raise InvalidArgument(f"cannot publish ports on internal network {primary.name!r}")
        if req.aliases and primary.default:
            raise InvalidArgument("network aliases need a user-defined network")
        ref = ContainerRef(req.container_id, req.name, req.hostname or req.container_id[:12], netns_path)
        nets = {n.id: n for n in self._store.networks()}
        previous = [
            e for e in self._store.endpoints(container_id=req.container_id) if e.network_id != primary.id
        ]
        rules_changed = False
        attached: list[AttachedNetwork] = []
        plan = [(primary, req.ip, req.aliases)] + [(nets[e.network_id], None, e.aliases) for e in previous]
        for seq, (net, ip, aliases) in enumerate(plan):
            rules_changed |= await self._ready_network(net)
            ep = await self._add_endpoint(net, ref, seq, netns_path, ip, aliases)
            attached.append(AttachedNetwork(net, ep))
        published = self._publish(req.container_id, primary, attached[0].endpoint, req.publish)
        if published or rules_changed or self._store.ports(req.container_id):
            await self._sync_rules()
        files = req.files or self._names.own_files(req.container_id)
        if files is not None:
            self._store.put_etc(req.container_id, files)
        await self._names.write(req.container_id, {a.network.id for a in attached})
        _log.info(
            "network.attached",
            container_id=req.container_id,
            networks=[a.network.name for a in attached],
            ip=str(attached[0].endpoint.address.ip),
            ports=[str(p.mapping) for p in published],
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        return AttachResult(tuple(attached), tuple(p.mapping for p in published))

    def _publish(
        self, container_id: str, net: Network, ep: Endpoint, mappings: tuple[PortMapping, ...]
    ) -> list[PublishedPort]:
        self._reservations.release(container_id)
        self._store.delete_ports(container_id)
        published: list[PublishedPort] = []
        for mapping in mappings:
            bound = self._reservations.reserve(container_id, mapping)
            published.append(PublishedPort(container_id, net.id, bound, ep.address.ip))
        if published:
            self._store.add_ports(published)
        return published

    async def detach(self, container_id: str) -> None:
        """Release everything of a container: veths, leases, ports, rules, /etc files. Idempotent."""
        async with self._lock:
            await self._teardown(container_id)

    async def _teardown(self, container_id: str) -> None:
        endpoints = self._store.endpoints(container_id=container_id)
        had_ports = bool(self._store.ports(container_id))
        for ep in endpoints:
            self._unplug_soon(ep.host_veth)
        self._reservations.release(container_id)
        self._store.delete_ports(container_id)
        for ep in endpoints:
            self._store.delete_endpoint(container_id, ep.network_id)
            self._ipam.release(ep.network_id, container_id)
        if had_ports:
            await self._sync_rules()
        self._store.delete_etc(container_id)
        await self._names.refresh_peers({ep.network_id for ep in endpoints}, exclude=container_id)
        if endpoints or had_ports:
            _log.info("network.detached", container_id=container_id, networks=len(endpoints))

    def _unplug_soon(self, host_veth: str) -> None:
        """Delete a host veth in the background. Deleting a veth waits for the kernel (~20 ms, an RCU grace
        period), and after a container exits its namespace is usually being torn down anyway; the run
        path should not wait for that. The name is recorded first so a crash cannot leak the link (start-up
        deletes recorded names), and a new veth of the same name waits for the deletion (`_unplugged`)."""
        self._store.doom_link(host_veth)

        async def unplug() -> None:
            try:
                await self._driver.remove_link(host_veth)
                self._store.forget_doomed(host_veth)
            except AgentError as exc:
                _log.warning("network.veth_delete_failed", link=host_veth, error=str(exc))
            finally:
                if self._unplugging.get(host_veth) is task:
                    del self._unplugging[host_veth]

        task = asyncio.create_task(unplug(), name=f"network.unplug.{host_veth}")
        self._unplugging[host_veth] = task

    async def _unplugged(self, host_veth: str) -> None:
        """Wait until a background deletion of `host_veth` (if any) is over."""
        pending = self._unplugging.get(host_veth)
        if pending is not None:
            await asyncio.wait([pending])

    async def wait_idle(self) -> None:
        """Wait for every background veth deletion (agent stop; tests that count links)."""
        while self._unplugging:
            await asyncio.wait(list(self._unplugging.values()))

    async def connect(
        self, network: str, container: str, ip: IPv4Address | None = None, aliases: tuple[str, ...] = ()
    ) -> Endpoint:
        """`network connect`: join a further network; live when the container runs, else at next start."""
        ref = await self._resolve(container)
        async with self._lock:
            net = self.get(network)
            if aliases and net.default:
                raise InvalidArgument("network aliases need a user-defined network")
            current = self._store.endpoints(container_id=ref.id)
            if any(e.network_id == net.id for e in current):
                raise AlreadyExists(f"container {container!r} is already connected to network {net.name!r}")
            if current:
                ref = replace(ref, name=ref.name or current[0].container_name, hostname=current[0].hostname)
            rules_changed = await self._ready_network(net) if ref.netns_path else False
            try:
                ep = await self._add_endpoint(net, ref, len(current), ref.netns_path, ip, aliases)
            except BaseException:
                await self._drop_endpoint(ref.id, net.id)
                raise
            if rules_changed:
                await self._sync_rules()
            await self._names.write(ref.id, {net.id})
        _log.info("network.connected", network=net.name, container_id=ref.id, ip=str(ep.address.ip))
        return ep

    async def disconnect(self, network: str, container: str) -> None:
        ref = await self._resolve(container)
        async with self._lock:
            net = self.get(network)
            current = self._store.endpoints(container_id=ref.id)
            if not any(e.network_id == net.id for e in current):
                raise NotFound(f"container {container!r} is not connected to network {net.name!r}")
            if any(p.network_id == net.id for p in self._store.ports(ref.id)):
                raise FailedPrecondition(f"container {container!r} publishes ports on network {net.name!r}")
            await self._drop_endpoint(ref.id, net.id)
            await self._names.write(ref.id, {net.id})
        _log.info("network.disconnected", network=net.name, container_id=ref.id)

    async def _drop_endpoint(self, container_id: str, network_id: str) -> None:
        for ep in self._store.endpoints(container_id=container_id, network_id=network_id):
            await self._driver.unplug(ep)
        self._store.delete_endpoint(container_id, network_id)
        self._ipam.release(network_id, container_id)

    async def _resolve(self, container: str) -> ContainerRef:
        if self._lookup is None:
            raise FailedPrecondition("container lookup is not available in this agent")
        return await self._lookup.resolve(container)

    # --- rules and reconciliation --------------------------------------------------------------------

    async def _sync_rules(self) -> None:
        """Reload our table from the database; an agent with no bridge up and no ports has no table."""
        live = [n for n in self._store.networks() if n.bridge in self._ready]
        ports = self._store.ports()
        if not live and not ports:
            await nft.delete_table(self._settings.nft_table)
            return
        await nft.apply(nft.build_ruleset(self._settings.nft_table, live, ports))

    async def start(self, existing_containers: ExistingContainers | None = None) -> None:
        """Reconcile after a (re)start: drop what belongs to containers that no longer exist, bring
        bridges back, take the host port reservations again and reload the rules."""
        if existing_containers is None and self._lookup is not None:
            existing_containers = self._lookup.existing_ids
        async with self._lock:
            self._ensure_default_record()
            if existing_containers is not None:
                existing = await existing_containers()
                for cid in sorted(self._store.container_ids() - existing):
                    _log.info("network.orphan_removed", container_id=cid)
                    await self._teardown(cid)
                await asyncio.to_thread(self._names.sweep, existing)
            for name in self._store.doomed_links():
                await self._driver.remove_link(name)  # left by a crash during a background deletion
                self._store.forget_doomed(name)
            for net in self._store.networks():
                has_endpoints = bool(self._store.endpoints(network_id=net.id))
                if not net.default or has_endpoints or await self._driver.bridge_exists(net):
                    # Veths are only ever deleted by name from our own rows (written before each veth
                    # is created), never by sweeping a bridge: another agent may share it.
                    await self._ready_network(net)
            for port in self._store.ports():
                try:
                    self._reservations.reserve(port.container_id, port.mapping)
                except (AlreadyExists, InvalidArgument) as exc:
                    _log.warning(
                        "network.port_reclaim_failed", container_id=port.container_id, error=str(exc)
                    )
            if self._ready or self._store.ports():
                await self._sync_rules()
        _log.info("network.started", networks=len(self._store.networks()), leases=self._ipam.count())

    async def stop(self) -> None:
        """Finish veth deletions and release port reservations; the rest of the kernel state stays so
        running containers keep their network."""
        await self.wait_idle()
        self._reservations.close()
