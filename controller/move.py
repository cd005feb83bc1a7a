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
import json
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from agent.api.v1 import containers_pb2 as cpb
from agent.api.v1 import (
    containers_pb2_grpc,
    images_pb2,
    images_pb2_grpc,
    transfer_pb2_grpc,
    volumes_pb2,
    volumes_pb2_grpc,
)
from agent.api.v1 import transfer_pb2 as tpb
from controller.client import AgentClient
from controller.errors import AgentCallError, ControllerError
from controller.send import AgentSource, Progress, Sender, no_progress

RUNNING = (cpb.CONTAINER_STATUS_RUNNING, cpb.CONTAINER_STATUS_PAUSED, cpb.CONTAINER_STATUS_RESTARTING)
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

    @staticmethod
    def _containers(client: AgentClient) -> containers_pb2_grpc.ContainersStub:
        return client.stub(containers_pb2_grpc.ContainersStub)

    @staticmethod
    def _transfer(client: AgentClient) -> transfer_pb2_grpc.TransferStub:
        return client.stub(transfer_pb2_grpc.TransferStub)

    async def move(self, container: str, *, keep_source: bool = False) -> MoveResult:
        src, dst = self.source, self.target
        found = await src.call(
            self._containers(src).Inspect, cpb.InspectContainerRequest(container=container)
        )
        ctr = found.container
        result = MoveResult(ctr.name, src.name, dst.name, was_running=ctr.status in RUNNING)
        await self._preflight(ctr)
        result.image = image_name(ctr.name)
        down_since: float | None = None
        stopped = False
        try:
            if result.was_running:
                self.say(f"stopping {ctr.name} on {src.name}")
                down_since = time.monotonic()
                stop = cpb.StopContainerRequest(container=ctr.id)
                if self.stop_timeout is not None:
                    stop.timeout = self.stop_timeout
                await src.call(self._containers(src).Stop, stop, timeout=None)
                stopped = True
            self.say(f"committing {ctr.name} as {result.image}")
            commit = tpb.CommitRequest(
                container=ctr.id,
                reference=result.image,
                message=f"dockyard move from {src.name}",
                no_pause=True,
            )
            await src.call(self._transfer(src).Commit, commit, timeout=None)
            self.say(f"sending {result.image} to {dst.name}")
            self._sent_image = True
            result.sent_bytes = await self._send(result.image)
            for volume in _volume_names(ctr):
                self.say(f"copying volume {volume}")
                result.volumes[volume] = await self._copy_volume(volume)
            self.say(f"creating {ctr.name} on {dst.name}")
            made = await dst.call(
                self._transfer(dst).Recreate,
                tpb.RecreateContainerRequest(config_json=ctr.config_json, image=result.image),
                timeout=None,
            )
            self._made_container = result.container_id = made.id
            if result.was_running:
                self.say(f"starting {ctr.name} on {dst.name}")
                await dst.call(self._containers(dst).Start, cpb.StartContainerRequest(container=made.id))
                assert down_since is not None
                result.downtime_s = time.monotonic() - down_since
        except ControllerError as exc:
            restarted = await self._undo(ctr, result.image, restart=stopped)
            where = f"{ctr.name} is still on {src.name}" + (" and running again" if restarted else "")
            raise ControllerError(f"move failed: {exc}; {where}") from None
        await self._finish_source(ctr, result, keep_source)
        return result

    async def _preflight(self, ctr: cpb.Container) -> None:
        """Before anything changes: the container can move, the target answers and has no such name."""
        if not ctr.config_json:
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
            await dst.call(self._containers(dst).Inspect, cpb.InspectContainerRequest(container=ctr.name))
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
        vol = await src.call(
            src.stub(volumes_pb2_grpc.VolumesStub).Inspect, volumes_pb2.InspectVolumeRequest(name=name)
        )
        header = tpb.ImportVolumeHeader(
            name=name, labels=dict(vol.volume.labels), anonymous=vol.volume.anonymous
        )
        export = src.stream(self._transfer(src).ExportVolume, tpb.ExportVolumeRequest(name=name))

        async def requests() -> AsyncIterator[tpb.ImportVolumeRequest]:
            yield tpb.ImportVolumeRequest(header=header)
            async for msg in export:
                yield tpb.ImportVolumeRequest(data=msg.data)

        call = self._transfer(dst).ImportVolume(requests(), metadata=dst.metadata())
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            raise await dst.translate(exc) from None
        if response.created:
            self._made_volumes.append(name)
        return int(response.bytes)

    async def _undo(self, ctr: cpb.Container, image: str, *, restart: bool) -> bool:
        """Best effort: remove what the move made; start the source container again if it ran."""
        src, dst = self.source, self.target
        with contextlib.suppress(ControllerError):
            if self._made_container:
                request = cpb.RemoveContainerRequest(container=self._made_container, force=True)
                await dst.call(self._containers(dst).Remove, request, timeout=None)
        for volume in self._made_volumes:
            with contextlib.suppress(ControllerError):
                vstub = dst.stub(volumes_pb2_grpc.VolumesStub)
                await dst.call(vstub.Remove, volumes_pb2.RemoveVolumeRequest(name=volume, force=True))
        if self._sent_image:
            with contextlib.suppress(ControllerError):
                await dst.call(
                    dst.stub(images_pb2_grpc.ImagesStub).Remove,
                    images_pb2.RemoveImageRequest(reference=image),
                )
        with contextlib.suppress(ControllerError):
            await src.call(
                src.stub(images_pb2_grpc.ImagesStub).Remove, images_pb2.RemoveImageRequest(reference=image)
            )
        if not restart:
            return False
        try:
            await src.call(self._containers(src).Start, cpb.StartContainerRequest(container=ctr.id))
        except ControllerError as exc:
            self.say(f"warning: could not start {ctr.name} again on {src.name}: {exc}")
            return False
        return True

    async def _finish_source(self, ctr: cpb.Container, result: MoveResult, keep_source: bool) -> None:
        """After the target runs: remove the source container (unless kept) and the image name there."""
        src = self.source
        if not keep_source:
            self.say(f"removing {ctr.name} from {src.name}")
            try:
                request = cpb.RemoveContainerRequest(container=ctr.id, force=True, volumes=True)
                await src.call(self._containers(src).Remove, request, timeout=None)
                result.source_removed = True
            except ControllerError as exc:
                self.say(
                    f"warning: {ctr.name} runs on {self.target.name} "
                    f"but was not removed from {src.name}: {exc}"
                )
        with contextlib.suppress(ControllerError):
            await src.call(
                src.stub(images_pb2_grpc.ImagesStub).Remove,
                images_pb2.RemoveImageRequest(reference=result.image),
            )


def _volume_names(ctr: cpb.Container) -> list[str]:
    """Volumes the container mounts, named or anonymous, in mount order (bind mounts and tmpfs stay)."""
    config = json.loads(ctr.config_json)
    names = [m.get("source", "") for m in config.get("mounts", ()) if m.get("type") == "volume"]
    return list(dict.fromkeys(n for n in names if n))
