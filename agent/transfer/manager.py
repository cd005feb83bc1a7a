"""TransferManager: the facade the Transfer servicer calls (blobs, commit, volume archives, recreate).

It owns no state of its own: blobs live in the image manager's content store, volumes and containers
with their managers. `recreate` is here because it is half of a move: the configuration a container was
created with (as its record stores it) applied again, on another agent, to another image.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import agent.log
from agent.containers.manager import ContainerManager
from agent.containers.volumes import VolumeManager
from agent.errors import InvalidArgument
from agent.images.manager import ImageManager
from agent.runtime.options import RunOptions, options_from_dict
from agent.state.containers import ContainerRecord
from agent.transfer.blobs import BlobTransfer
from agent.transfer.commit import Committer
from agent.transfer.volume_archive import VolumeArchive

log = agent.log.get(__name__)


class TransferManager:
    def __init__(self, images: ImageManager, containers: ContainerManager, volumes: VolumeManager) -> None:
        self.blobs = BlobTransfer(images)
        self.committer = Committer(containers, images)
        self.volumes = VolumeArchive(volumes)
        self._containers = containers

    async def recreate(
        self, config_json: str, image: str, check: Callable[[RunOptions], None] = lambda _: None
    ) -> ContainerRecord:
        """Create (not start) a container from another's stored configuration, with `image`; `check`
        sees the parsed options first (the caller's permission for host-power options)."""
        try:
            data: Any = json.loads(config_json)
        except ValueError as exc:
            raise InvalidArgument(f"the container configuration is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidArgument("the container configuration must be a JSON object")
        try:
            opts = options_from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidArgument(f"the container configuration is not valid: {exc}") from exc
        if image:
            opts = replace(opts, image=image)
        check(opts)
        rec = await self._containers.create(opts)
        log.info("transfer.container_recreated", id=rec.id, name=rec.name, image=opts.image)
        return rec
