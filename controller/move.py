"""`dockyard move`: a container from one agent to another, with its changes and its volumes.

The steps, each through the agents' APIs:

1. read the container's stored configuration on the source; check the target answers and has no
   container of that name (nothing has been touched yet if this fails);
2. stop it (downtime starts), commit its writable layer as an image `dockyard-move/<name>:<token>`;
3. send that image to the target (`controller.send`: only the blobs the target lacks, verified, resumable);
4. copy each volume it mounts as a tar stream through this process (ExportVolume → ImportVolume);
5. recreate it on the target from the same configuration (name, env, mounts, ports, restart policy,
   labels and everything else it was created with) on the committed image, and start it if it was
   running (downtime ends);
6. only then remove it from the source (unless `keep_source`), with its anonymous volumes; named
   volumes stay on the source, as after `docker rm`.

A failure before the target runs undoes what the move made on the target (container, volumes, image
name) and on the source (the image name), and starts the source container again if it was running, so
it is left as it was.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.api.containers import Container, ContainersApi
from controller.api.images import ImagesApi
from controller.api.transfer import TransferApi
from controller.api.volumes import VolumesApi
from controller.client import AgentClient
from controller.errors import AgentCallError, ControllerError
from controller.send import AgentSource, Progress, Sender, no_progress

RUNNING = ("running", "paused", "restarting")
IMAGE_REPOSITORY = "dockyard-move"


@dataclass
class MoveResult:
    name: str
    source: str
    target: str
    container_id: str = ""
    image: str = ""
    was_running: bool = False
    downtime_s: float | None = None
    sent_bytes: int = 0
    volumes: dict[str, int] = field(default_factory=dict)  # name → bytes of file data copied
    source_removed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "target": self.target,
            "id": self.container_id,
            "image": self.image,
            "running": self.was_running,
            "downtime_seconds": None if self.downtime_s is None else round(self.downtime_s, 3),
            "sent_bytes": self.sent_bytes,
            "volumes": self.volumes,
            "source_removed": self.source_removed,
        }


def image_name(container: str) -> str:
    """The committed image's name: a valid repository made of the container's name, and a fresh tag."""
    repo = re.sub(r"[^a-z0-9]+", "-", container.lower()).strip("-") or "container"
    return f"{IMAGE_REPOSITORY}/{repo}:{secrets.token_hex(6)}"


class Mover:
    """Moves one container from `source` to `target`; `say` gets one line per step."""

    def __init__(
        self,
        source: AgentClient,
        target: AgentClient,
        *,
        say: Callable[[str], None],
        progress: Progress | None = None,
        stop_timeout: int | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.say = say
        self.progress = progress
        self.stop_timeout = stop_timeout
        self._made_volumes: list[str] = []
        self._made_container = ""
        self._sent_image = False

    async def move(self, container: str, *, keep_source: bool = False) -> MoveResult:
        src, dst = self.source, self.target
        ctr = await ContainersApi(src).inspect(container)
        result = MoveResult(ctr.name, src.name, dst.name, was_running=ctr.status in RUNNING)
        await self._preflight(ctr)
        result.image = image_name(ctr.name)
        down_since: float | None = None
        stopped = False
        try:
            if result.was_running:
                self.say(f"stopping {ctr.name} on {src.name}")
                down_since = time.monotonic()
                await ContainersApi(src).stop(ctr.id, self.stop_timeout)
                stopped = True
            self.say(f"committing {ctr.name} as {result.image}")
            await TransferApi(src).commit(
                ctr.id, reference=result.image, message=f"dockyard move from {src.name}", pause=False
            )
            self.say(f"sending {result.image} to {dst.name}")
            self._sent_image = True
            result.sent_bytes = await self._send(result.image)
            for volume in _volume_names(ctr):
                self.say(f"copying volume {volume}")
                result.volumes[volume] = await self._copy_volume(volume)
            self.say(f"creating {ctr.name} on {dst.name}")
            made = await TransferApi(dst).recreate(ctr.config, result.image)
            self._made_container = result.container_id = made.id
            if result.was_running:
                self.say(f"starting {ctr.name} on {dst.name}")
                await ContainersApi(dst).start(made.id)
                assert down_since is not None
                result.downtime_s = time.monotonic() - down_since
        except ControllerError as exc:
            restarted = await self._undo(ctr, result.image, restart=stopped)
            where = f"{ctr.name} is still on {src.name}" + (" and running again" if restarted else "")
            raise ControllerError(f"move failed: {exc}; {where}") from None
        await self._finish_source(ctr, result, keep_source)
        return result

    async def _preflight(self, ctr: Container) -> None:
        """Before anything changes: the container can move, the target answers and has no such name."""
        if ctr.config is None:
            raise ControllerError(
                f"the agent did not return the configuration of {ctr.name}", self.source.name
            )
        if ctr.auto_remove:
            raise ControllerError(
                f"{ctr.name} was started with --rm: stopping it would remove it, so it cannot be moved",
                self.source.name,
            )
        dst = self.target
        try:
            await ContainersApi(dst).inspect(ctr.name)
        except AgentCallError as exc:
            if exc.code != "NOT_FOUND":
                raise
        else:
            raise ControllerError(f"a container named {ctr.name} already exists there", dst.name)

    async def _send(self, image: str) -> int:
        source = AgentSource(self.source, image)
        sender = Sender(source, [self.target], progress=self.progress or no_progress)
        report = (await sender.run())[self.target.name]
        if report.error is not None:
            raise report.error
        return report.sent_bytes

    async def _copy_volume(self, name: str) -> int:
        src, dst = self.source, self.target
        vol = await VolumesApi(src).inspect(name)
        export = TransferApi(src).export_volume(name)
        imported = await TransferApi(dst).import_volume(
            name, export, labels=vol.labels, anonymous=vol.anonymous
        )
        if imported.created:
            self._made_volumes.append(name)
        return imported.bytes

    async def _undo(self, ctr: Container, image: str, *, restart: bool) -> bool:
        """Best effort: remove what the move made; start the source container again if it ran."""
        src, dst = self.source, self.target
        with contextlib.suppress(ControllerError):
            if self._made_container:
                await ContainersApi(dst).remove(self._made_container, force=True)
        for volume in self._made_volumes:
            with contextlib.suppress(ControllerError):
                await VolumesApi(dst).remove(volume, force=True)
        if self._sent_image:
            with contextlib.suppress(ControllerError):
                await ImagesApi(dst).remove(image)
        with contextlib.suppress(ControllerError):
            await ImagesApi(src).remove(image)
        if not restart:
            return False
        try:
            await ContainersApi(src).start(ctr.id)
        except ControllerError as exc:
            self.say(f"warning: could not start {ctr.name} again on {src.name}: {exc}")
            return False
        return True

    async def _finish_source(self, ctr: Container, result: MoveResult, keep_source: bool) -> None:
        """After the target runs: remove the source container (unless kept) and the image name there."""
        src = self.source
        if not keep_source:
            self.say(f"removing {ctr.name} from {src.name}")
            try:
                await ContainersApi(src).remove(ctr.id, force=True, volumes=True)
                result.source_removed = True
            except ControllerError as exc:
                self.say(
                    f"warning: {ctr.name} runs on {self.target.name} "
                    f"but was not removed from {src.name}: {exc}"
                )
        with contextlib.suppress(ControllerError):
            await ImagesApi(src).remove(result.image)


def _volume_names(ctr: Container) -> list[str]:
    """Volumes the container mounts, named or anonymous, in mount order (bind mounts and tmpfs stay)."""
    mounts = ctr.config.get("mounts") if isinstance(ctr.config, dict) else None
    names = [
        m.get("source")
        for m in (mounts if isinstance(mounts, list) else [])
        if isinstance(m, dict) and m.get("type") == "volume"
    ]
    return list(dict.fromkeys(n for n in names if isinstance(n, str) and n))
