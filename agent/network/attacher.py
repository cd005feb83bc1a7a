"""The bridge networking plug for the container manager's `NetworkAttacher` seam, and the container lookup
the network manager needs for `network connect/disconnect` and `port`.

The container manager calls `etc_files(container_id, hostname)` at create (the files it bind-mounts),
`attach(container_id, netns_path, options)` once the runtime has created the container's network
namespace (before the process starts) and `detach(container_id)` whenever a run ends.
`options` carries `network`, `name` and `hostname`; the optional `ip`, `aliases`, `publish` (raw `-p`
strings) and `etc_files` (container path → host file it bind-mounts) are read when present, so this plug
works with the seam as it grows. `container:OTHER` shares another container's namespace: nothing to attach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Protocol

from agent.errors import InvalidArgument
from agent.network.etcfiles import EtcPaths
from agent.network.manager import AttachRequest, ContainerRef, NetworkManager
from agent.network.models import PortMapping
from agent.network.ports import parse_publish

CONTAINER_MODE = "container:"
RUNNING_STATES = {"running", "paused"}  # a pid recorded for any other state may belong to someone else


class ContainerNetworkOptions(Protocol):
    @property
    def network(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def hostname(self) -> str: ...


def _strings(options: object, attr: str) -> tuple[str, ...]:
    value = getattr(options, attr, ())
    return tuple(str(v) for v in value) if isinstance(value, Sequence) and not isinstance(value, str) else ()


def _etc_paths(options: object) -> EtcPaths | None:
    files = getattr(options, "etc_files", None)
    if not isinstance(files, Mapping):
        return None
    try:
        return EtcPaths(
            Path(files["/etc/hosts"]), Path(files["/etc/hostname"]), Path(files["/etc/resolv.conf"])
        )
    except KeyError:
        return None


def parse_ip(value: str) -> IPv4Address | None:
    if not value:
        return None
    try:
        return IPv4Address(value)
    except ValueError:
        raise InvalidArgument(f"invalid --ip {value!r}: expected an IPv4 address") from None


def request_for(container_id: str, options: ContainerNetworkOptions) -> AttachRequest:
    """Validate and convert; also usable at create time so a bad `-p`/`--ip` fails before anything runs."""
    publish: tuple[PortMapping, ...] = tuple(parse_publish(p) for p in _strings(options, "publish"))
    return AttachRequest(
        container_id=container_id,
        name=options.name,
        hostname=options.hostname,
        network=options.network,
        ip=parse_ip(str(getattr(options, "ip", "") or "")),
        aliases=_strings(options, "aliases"),
        publish=publish,
        files=_etc_paths(options),
    )


class BridgeAttacher:
    """Implements the container manager's NetworkAttacher with a NetworkManager."""

    def __init__(self, networks: NetworkManager) -> None:
        self.networks = networks

    def etc_files(self, container_id: str, hostname: str) -> dict[str, str]:
        """Called at create: the /etc files to bind-mount (container path → host file)."""
        paths = self.networks.prepare_files(container_id, hostname)
        return {
            "/etc/hosts": str(paths.hosts),
            "/etc/hostname": str(paths.hostname),
            "/etc/resolv.conf": str(paths.resolv_conf),
        }

    def etc_files_of(self, other_container_id: str) -> dict[str, str] | None:
        """For `--network container:OTHER`: OTHER's files, shared as they are (None if it has none)."""
        paths = self.networks.existing_files(other_container_id)
        if paths is None:
            return None
        return {
            "/etc/hosts": str(paths.hosts),
            "/etc/hostname": str(paths.hostname),
            "/etc/resolv.conf": str(paths.resolv_conf),
        }

    async def attach(self, container_id: str, netns_path: str, options: ContainerNetworkOptions) -> None:
        request = request_for(container_id, options)
        if options.network.startswith(CONTAINER_MODE):
            if request.publish or request.ip or request.aliases:
                raise InvalidArgument(
                    "--network container:… takes no -p, --ip or --network-alias (the other owns it)"
                )
            return
        await self.networks.attach(request, netns_path)

    async def detach(self, container_id: str) -> None:
        await self.networks.detach(container_id)

    def ports(self, container_id: str) -> list[str]:
        """`ps`-style strings: "0.0.0.0:32768->80/tcp"."""
        return [str(m) for m in self.networks.ports(container_id)]


class ContainerRecordLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def hostname(self) -> str: ...

    @property
    def pid(self) -> int: ...

    @property
    def status(self) -> str: ...


class ContainerFinder(Protocol):
    """The container records (`agent.containers.view.ContainerView`): by name/ID prefix, and all of them."""

    def find(self, ref: str) -> ContainerRecordLike: ...

    def list_containers(self, *, all_: bool = True) -> Sequence[ContainerRecordLike]: ...


class ContainerLookupAdapter:
    """Resolves names/IDs through the container records; a running container's namespace via its pid."""

    def __init__(self, containers: ContainerFinder) -> None:
        self._containers = containers

    async def resolve(self, name_or_id: str) -> ContainerRef:
        rec = self._containers.find(name_or_id)
        running = str(rec.status) in RUNNING_STATES and rec.pid > 0
        netns = f"/proc/{rec.pid}/ns/net" if running and Path(f"/proc/{rec.pid}/ns/net").exists() else None
        return ContainerRef(rec.id, rec.name, rec.hostname, netns)

    async def existing_ids(self) -> set[str]:
        """Every container the agent knows (running or not): the rest are orphans at start-up."""
        return {rec.id for rec in self._containers.list_containers(all_=True)}
