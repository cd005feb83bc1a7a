"""Name resolution for containers: what each container's /etc/hosts lists, and keeping every member's
file current as containers join and leave networks (the files themselves: `etcfiles.py`).

A container lists its own addresses under its hostname, name and aliases; on a user-defined network also
every other member under its name, aliases and short ID. The default network lists no peers (Docker's
default bridge does not resolve container names either). Why hosts files and not a DNS responder: see
`etcfiles.py`.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from agent.errors import FailedPrecondition
from agent.network import etcfiles
from agent.network.etcfiles import EtcPaths, HostEntry, render_hosts
from agent.network.models import Network
from agent.network.store import NetworkStore

LOCAL_HOSTNAME_ADDRESS = IPv4Address("127.0.1.1")  # Debian's convention before an address is known


class Names:
    def __init__(self, store: NetworkStore, etc_dir: Path | None, host_resolv_conf: Path) -> None:
        self._store = store
        self._etc_dir = etc_dir
        self._host_resolv_conf = host_resolv_conf

    # --- which files --------------------------------------------------------------------------------

    def _own_paths(self, container_id: str) -> EtcPaths | None:
        if self._etc_dir is None:
            return None
        base = self._etc_dir / container_id
        return EtcPaths(base / "hosts", base / "hostname", base / "resolv.conf")

    def own_files(self, container_id: str) -> EtcPaths | None:
        """Files `prepare` made for this container, if any."""
        paths = self._own_paths(container_id)
        return paths if paths is not None and paths.hosts.exists() else None

    def existing(self, container_id: str) -> EtcPaths | None:
        """A container's files: the ones it was attached with, or the ones we prepared for it."""
        return self._store.etc(container_id) or self.own_files(container_id)

    def prepare(self, container_id: str, hostname: str) -> EtcPaths:
        """Create the files before the container exists (its manager bind-mounts them at create)."""
        paths = self._own_paths(container_id)
        if paths is None:
            raise FailedPrecondition("this network manager has no etc_dir for container /etc files")
        paths.hosts.parent.mkdir(parents=True, exist_ok=True)
        hosts = render_hosts([HostEntry(LOCAL_HOSTNAME_ADDRESS, (hostname,))], [])
        etcfiles.write_all(paths, hostname, hosts, self._resolv_conf())
        return paths

    def sweep(self, keep: set[str]) -> None:
        """Remove prepared files of containers not in `keep` (start-up reconciliation)."""
        if self._etc_dir is None or not self._etc_dir.is_dir():
            return
        for entry in self._etc_dir.iterdir():
            if entry.name not in keep:
                shutil.rmtree(entry, ignore_errors=True)

    # --- what they say ------------------------------------------------------------------------------

    def _resolv_conf(self) -> str:
        return etcfiles.render_resolv_conf(etcfiles.read_host_resolv_conf(self._host_resolv_conf))

    def hosts_for(self, container_id: str, nets: dict[str, Network]) -> str | None:
        """The hosts file of an attached container; None when it has no endpoint."""
        mine = self._store.endpoints(container_id=container_id)
        if not mine:
            return None
        own = [HostEntry(e.address.ip, (e.hostname, e.container_name, *e.aliases)) for e in mine]
        peers: list[HostEntry] = []
        for e in mine:
            if nets[e.network_id].default:
                continue
            for p in self._store.endpoints(network_id=e.network_id):
                if p.container_id != container_id:
                    peers.append(HostEntry(p.address.ip, (p.container_name, *p.aliases, p.container_id[:12])))
        return render_hosts(own, peers)

    async def write(self, container_id: str, network_ids: Iterable[str]) -> None:
        """Write a container's files, then refresh its peers' hosts files on `network_ids`."""
        nets = {n.id: n for n in self._store.networks()}
        hosts = self.hosts_for(container_id, nets)
        paths = self._store.etc(container_id)
        if hosts is not None and paths is not None:
            mine = self._store.endpoints(container_id=container_id)
            hostname = mine[0].hostname if mine else container_id[:12]
            await asyncio.to_thread(etcfiles.write_all, paths, hostname, hosts, self._resolv_conf())
        await self.refresh_peers(network_ids, exclude=container_id)

    async def refresh_peers(self, network_ids: Iterable[str], exclude: str) -> None:
        """Rewrite the hosts files of every member of these user-defined networks except `exclude`."""
        nets = {n.id: n for n in self._store.networks()}
        members: set[str] = set()
        for nid in network_ids:
            if nid in nets and not nets[nid].default:
                members |= {e.container_id for e in self._store.endpoints(network_id=nid)}
        members.discard(exclude)
        updates: list[tuple[Path, str]] = []
        for cid in sorted(members):
            paths, text = self._store.etc(cid), self.hosts_for(cid, nets)
            if paths is not None and text is not None:
                updates.append((paths.hosts, text))
        await asyncio.to_thread(_update_all, updates)


def _update_all(updates: list[tuple[Path, str]]) -> None:
    for path, text in updates:
        etcfiles.update_hosts(path, text)
