"""A named volume's files as a tar stream, out of one agent and into another (the data of `dockyard move`).

Export writes the volume directory (`<data_root>/volumes/<name>/_data`) as a PAX tar with numeric owners
(no names), modes, mtimes and symlinks as they are; import creates the volume and unpacks the stream into
it, keeping numeric owners and every mode bit. Both go through `agent.treetar`, by directory fd below the
volume's directory: containers using the volume may change it meanwhile, and no symlink in it, planted
or streamed, ever leads outside (nor is any user or group name looked up). An import into a volume that
already holds files is refused before anything is written, and a failed import removes the volume it
created, so a target never keeps half of a volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO, cast

import agent.log
from agent import fsroot, treetar
from agent.bytestreams import read_in_thread, written_in_thread
from agent.containers.volumes import Volume, VolumeManager
from agent.errors import AlreadyExists, InvalidArgument

log = agent.log.get(__name__)


def _write_tar(root: Path, out: BinaryIO) -> None:
    fd = os.open(root, fsroot.O_DIR)
    try:
        with treetar.open_writer(out) as tf:
            treetar.TreeWriter(tf).tree(fd, "")
    finally:
        os.close(fd)


def _read_tar(src: BinaryIO, root: Path) -> int:
    rootfd = fsroot.open_root(root)
    try:
        return treetar.extract(src, rootfd)
    except treetar.Refused:
        raise
    except InvalidArgument as exc:
        raise InvalidArgument(f"the volume data is not a valid tar stream: {exc}") from exc
    finally:
        os.close(rootfd)


class VolumeArchive:
    """Export and import of volumes on one agent."""

    def __init__(self, volumes: VolumeManager) -> None:
        self._volumes = volumes

    async def export(self, name: str) -> AsyncIterator[bytes]:
        """The volume as tar chunks; NotFound before the first chunk if there is no such volume."""
        volume = self._volumes.get(name)
        return self._export(volume)

    async def _export(self, volume: Volume) -> AsyncIterator[bytes]:
        sent = 0
        try:
            tar = written_in_thread(lambda writer: _write_tar(volume.mountpoint, cast(BinaryIO, writer)))
            async with contextlib.aclosing(tar) as chunks:
                async for chunk in chunks:
                    sent += len(chunk)
                    yield chunk
        finally:
            log.info("transfer.volume_exported", volume=volume.name, bytes=sent)

    async def import_(
        self, name: str, labels: dict[str, str], anonymous: bool, chunks: AsyncIterable[bytes]
    ) -> tuple[int, bool]:
        """Create volume `name` from a tar stream; returns (bytes of file data unpacked, created)."""
        if not name:
            raise InvalidArgument("a volume name is required")
        existed = any(v.name == name for v in self._volumes.list_volumes())
        volume = self._volumes.create(name, labels, anonymous=anonymous)
        if existed and any(volume.mountpoint.iterdir()):
            raise AlreadyExists(f"volume {name} already exists on this host and is not empty")
        try:
            total = await read_in_thread(
                chunks, lambda reader: _read_tar(cast(BinaryIO, reader), volume.mountpoint)
            )
        except BaseException:
            if not existed:
                self._volumes.remove(name, force=True)
            else:
                await asyncio.to_thread(_empty, volume.mountpoint)
            raise
        log.info("transfer.volume_imported", volume=name, bytes=total, created=not existed)
        return total, not existed


def _empty(root: Path) -> None:
    for child in root.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
