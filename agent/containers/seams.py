"""The container core's typed seams to the rest of the agent: the image source and the network attacher.

The runtime and the monitor seams are `agent.runtime.protocols`; the composition root (`agent/daemon.py`)
passes the real objects in, tests pass fakes (`tests/support/fake_runtime.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RunnableImage:
    """What a container needs of an image: its digest (kept with the container, so the image stays in use),
    the OCI image config (`config.Env`, `config.Cmd`, …) and its snapshot directories, top-most first,
    ready to be overlayfs lowerdirs."""

    digest: str
    config: dict[str, Any]
    lowerdirs: tuple[Path, ...]


class ImageSource(Protocol):
    async def resolve_for_run(self, ref: str) -> RunnableImage: ...


class RunGate(Protocol):
    """Asked before an image runs — at create (and run), and at a start or restart a user or a release
    asks for; not at restarts by policy — with the reference the container is made from and the manifest
    digest it runs. Raises (PermissionDenied, naming why) to refuse. The trust policy (agent/trust) is one."""

    async def check(self, reference: str, digest: str) -> None: ...


@dataclass(frozen=True)
class NetworkOptions:
    """One run's network: the network's name, the container's name, hostname, and `--ip`,
    `--network-alias`, `-p` as the user gave them."""

    network: str
    name: str
    hostname: str
    ip: str = ""
    aliases: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()


class NetworkAttacher(Protocol):
    """Bridge networking (agent/network plugs in here).

    `etc_files` is called at create for the /etc files to bind-mount (container path → host file);
    `etc_files_of` gives those of another container, for `--network container:OTHER` (None: it has none);
    `attach` once per run with the new network namespace (`/proc/<pid>/ns/net`, the runtime created it,
    the process has not started yet); `detach` when the run ends and at removal (idempotent); `ports`
    the published ports for ps/inspect, as "0.0.0.0:32768->80/tcp".
    """

    def etc_files(self, container_id: str, hostname: str) -> dict[str, str]: ...

    def etc_files_of(self, other_container_id: str) -> dict[str, str] | None: ...

    async def attach(self, container_id: str, netns_path: str, options: NetworkOptions) -> None: ...

    async def detach(self, container_id: str) -> None: ...

    def ports(self, container_id: str) -> list[str]: ...
