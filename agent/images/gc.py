"""Garbage collection of blobs and snapshots nothing references, and the lock that keeps it safe.

Roots are the image records (`ImageStore.referenced_blobs` / `referenced_chain_ids`). Work that writes
content before its record exists (pull, load, import) holds `GcLock.operation()` (shared, any number at
once); collection holds `GcLock.exclusive()`, so it never sees the blobs of an in-flight operation as
garbage. Partial ingests are not garbage for an `rmi` (they make resumes possible) until they are a week
old; `image prune` (`partials=True`) takes every partial and temp file no writer holds, at once: with the
exclusive lock held no pull, send, load, import, build or commit is running, and an ingest's own flock (or
a temp file's listing in the content store) still protects one that is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import agent.log
from agent.errors import NotFound
from agent.images.content import ContentStore
from agent.images.snapshots import SnapshotStore
from agent.images.store import ImageStore

log = agent.log.get(__name__)

STALE_INGEST_SECONDS = 7 * 24 * 3600


class GcLock:
    """A readers/writer lock on the event loop: many content writers or one collector."""

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer)
            self._readers += 1
        try:
            yield
        finally:
            async with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        async with self._cond:
            await self._cond.wait_for(lambda: not self._writer)
            self._writer = True
            await self._cond.wait_for(lambda: self._readers == 0)
        try:
            yield
        finally:
            async with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(frozen=True)
class GcResult:
    blobs_removed: int = 0
    blob_bytes: int = 0
    snapshots_removed: int = 0
    snapshot_bytes: int = 0
    partials_removed: int = 0
    partial_bytes: int = 0

    @property
    def reclaimed(self) -> int:
        return self.blob_bytes + self.snapshot_bytes + self.partial_bytes


def collect(
    images: ImageStore,
    content: ContentStore,
    snapshots: SnapshotStore,
    *,
    keep_chain_ids: frozenset[str] = frozenset(),
    partials: bool = False,
) -> GcResult:
    """Delete every blob and snapshot no record references (blocking; run under `GcLock.exclusive`), and
    partial ingests and temp files: all abandoned ones with `partials`, else those a week old."""
    blobs_keep = images.referenced_blobs()
    chains_keep = images.referenced_chain_ids() | keep_chain_ids
    blobs_removed = blob_bytes = 0
    for digest in list(content.digests()):
        if digest in blobs_keep:
            continue
        try:
            size = content.size(digest)
        except NotFound:  # vanished meanwhile
            size = 0
        content.delete(digest)
        blobs_removed += 1
        blob_bytes += size
    snaps_removed = snap_bytes = 0
    for snap in snapshots.list():
        if snap.chain_id in chains_keep:
            continue
        snapshots.remove(snap.chain_id)
        snaps_removed += 1
        snap_bytes += snap.size
    partials_removed, partial_bytes = content.remove_partials(0.0 if partials else STALE_INGEST_SECONDS)
    result = GcResult(blobs_removed, blob_bytes, snaps_removed, snap_bytes, partials_removed, partial_bytes)
    if blobs_removed or snaps_removed or partials_removed:
        log.info(
            "images.gc",
            blobs=blobs_removed,
            blob_bytes=blob_bytes,
            snapshots=snaps_removed,
            snapshot_bytes=snap_bytes,
            partials=partials_removed,
            partial_bytes=partial_bytes,
        )
    return result
