"""The agent's side of `dockyard image send`: describe an image as blobs, report which blobs are here,
read a blob from an offset, write one resumably, and register the image once its blobs arrived.

All bytes go through the images area's content store (`ContentStore.ingest`), so a blob becomes visible
only after its digest and size were verified (Integrity → DATA_LOSS otherwise, nothing kept) and a write
cut short keeps its bytes for the next attempt. Every read and write logs one event with the bytes that
moved (`transfer.blob_read`, `transfer.blob_written`): the figures tests and operators check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import agent.log
from agent.errors import Conflict, FailedPrecondition, InvalidArgument
from agent.images.content import Ingest, validate_digest
from agent.images.manager import ImageManager
from agent.images.reference import Reference
from agent.images.store import ImageRecord, normalize_name

log = agent.log.get(__name__)

READ_CHUNK = 1 << 20
T = TypeVar("T")


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""


@dataclass(frozen=True)
class ImageBlobs:
    """What a target needs to hold an image: its blobs (layers, config, manifest last) and names."""

    record: ImageRecord
    blobs: tuple[Blob, ...]
    names: tuple[str, ...]


@dataclass(frozen=True)
class BlobState:
    digest: str
    present: bool
    offset: int = 0  # bytes kept from an interrupted write


@dataclass(frozen=True)
class WriteResult:
    digest: str
    received: int
    already_present: bool = False


async def _finish_in_thread(fn: Callable[[], T]) -> T:
    """Run blocking `fn` in a thread and let it finish even if we are cancelled meanwhile, so the ingest
    file is never closed under a write in progress (the cancellation is re-raised afterwards)."""
    task: asyncio.Future[T] = asyncio.ensure_future(asyncio.to_thread(fn))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await task
        raise


class BlobTransfer:
    """Blob-level transfer on top of one agent's ImageManager."""

    def __init__(self, images: ImageManager) -> None:
        self._images = images
        self._content = images.content

    # ---- the source side -----------------------------------------------------------------------------

    def describe(self, ref: str) -> ImageBlobs:
        """The image `ref` resolves to as blobs; names: the one `ref` spells, else all of the image's."""
        record = self._images.get(ref)
        names = self._images.names_of(record.digest)
        spelled = _spelled_name(ref, names)
        blobs = [Blob(layer.digest, layer.size, layer.media_type) for layer in record.layers]
        blobs.append(Blob(record.config_digest, self._content.size(record.config_digest), "config"))
        blobs.append(Blob(record.digest, self._content.size(record.digest), record.media_type))
        return ImageBlobs(record, tuple(blobs), (spelled,) if spelled else tuple(names))

    async def read(self, digest: str, offset: int) -> AsyncIterator[bytes]:
        """The blob's bytes from `offset` on; NotFound if absent (checked before the first chunk)."""
        validate_digest(digest)
        size = self._content.size(digest)
        if offset < 0 or offset > size:
            raise InvalidArgument(f"offset {offset} is outside blob {digest} ({size} bytes)")
        return self._read(digest, offset)

    async def _read(self, digest: str, offset: int) -> AsyncIterator[bytes]:
        fh: BinaryIO = await asyncio.to_thread(self._content.open, digest)
        sent = 0
        try:
            await asyncio.to_thread(fh.seek, offset)
            while chunk := await asyncio.to_thread(fh.read, READ_CHUNK):
                sent += len(chunk)
                yield chunk
        finally:
            fh.close()
            log.info("transfer.blob_read", digest=digest, offset=offset, bytes=sent)

    # ---- the target side -----------------------------------------------------------------------------

    def check(self, blobs: Sequence[Blob]) -> list[BlobState]:
        """Which blobs are here; for the others, the bytes a partial write kept (a hint for the offset)."""
        partial = {digest: kept for digest, kept, _ in self._content.ingests()}
        out = []
        for blob in blobs:
            validate_digest(blob.digest)
            if self._content.has(blob.digest):
                out.append(BlobState(blob.digest, True))
                continue
            kept = partial.get(blob.digest, 0)
            out.append(BlobState(blob.digest, False, kept if kept <= blob.size else 0))
        return out

    async def write(self, digest: str, size: int, offset: int, chunks: AsyncIterator[bytes]) -> WriteResult:
        """Write `chunks` (the blob's bytes from `offset`) into the store; see the proto for the contract."""
        validate_digest(digest)
        if size < 0 or not 0 <= offset <= size:
            raise InvalidArgument(f"invalid size {size} / offset {offset} for blob {digest}")
        async with self._images.operation():
            if self._content.has(digest):
                log.info("transfer.blob_present", digest=digest)
                return WriteResult(digest, 0, already_present=True)
            ingest: Ingest = await asyncio.to_thread(self._content.ingest, digest, size)
            start = ingest.offset
            try:
                if ingest.offset < offset:
                    raise FailedPrecondition(
                        f"blob {digest}: this agent kept {ingest.offset} bytes, cannot continue at {offset}"
                    )
                skip = ingest.offset - offset
                async for chunk in chunks:
                    if skip:
                        if len(chunk) <= skip:
                            skip -= len(chunk)
                            continue
                        chunk, skip = chunk[skip:], 0
                    await _finish_in_thread(functools.partial(ingest.write, chunk))
                if ingest.offset < size:
                    raise Conflict(
                        f"blob {digest} incomplete: {ingest.offset} of {size} bytes arrived (kept to resume)"
                    )
                await _finish_in_thread(ingest.commit)
            finally:
                received = ingest.offset - start
                ingest.close()
                log.info(
                    "transfer.blob_written",
                    digest=digest,
                    size=size,
                    resumed_at=start,
                    received=received,
                    complete=self._content.has(digest),
                )
        return WriteResult(digest, received)

    async def register(self, manifest_digest: str, names: Sequence[str]) -> ImageRecord:
        """Record the image under `names` (checked before anything is recorded)."""
        validate_digest(manifest_digest)
        normalized = [_tag_name(n) for n in names]
        async with self._images.operation():
            record = await self._images.register(normalized[0] if normalized else "", manifest_digest)
            for extra in normalized[1:]:
                self._images.tag(record.digest, extra)
        log.info("transfer.image_registered", digest=manifest_digest, names=normalized)
        return record


def _spelled_name(ref: str, names: list[str]) -> str | None:
    try:
        name = str(Reference.parse(ref))
    except InvalidArgument:
        return None
    return name if name in names else None


def _tag_name(text: str) -> str:
    name = normalize_name(text)
    if Reference.parse(name).digest is not None:
        raise InvalidArgument(f"cannot name an image with a digest reference {text!r}")
    return name
