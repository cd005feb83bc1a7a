"""The agent's side of `dockyard image send`: describe an image as blobs, report which blobs are here,
read a blob from an offset, write one resumably, and register the image once its blobs arrived.

All bytes go through the content store (`ContentStore.ingest`), so a blob becomes visible
only after its digest and size were verified (Integrity → DATA_LOSS otherwise, nothing kept) and a write
cut short keeps its bytes for the next attempt. Every read and write logs one event with the bytes that
moved (`transfer.blob_read`, `transfer.blob_written`): the figures tests and operators check.

A blob that arrives whole (from byte 0) and looks like a layer (gzip, zstd or tar) is unpacked in the same
pass as it is hashed and written, as a pull does: one worker thread, no second read of the blob, and the
unpacking overlaps the transfer instead of following it. The target does not know the layer's chain ID
yet (that needs the config, which arrives later), so the unpacked directory waits, prepared but not
committed, until `register` finds it among the image's layers with the diff ID the config names; only
then does it become a snapshot. Anything else (a resumed write, a layer that does not unpack, a diff ID
or compression that does not match) leaves it to `ImageManager.register` to unpack from the stored blob,
exactly as before. `transfer.blob_written` and `transfer.image_registered` carry the seconds and CPU
seconds they took, so a slow send can be split into receive, verify+write and unpack.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import agent.log
from agent.bytestreams import ChunkReader, Tee, read_in_thread
from agent.errors import AgentError, Conflict, FailedPrecondition, InvalidArgument
from agent.images.content import Ingest, validate_digest
from agent.images.manager import ImageManager
from agent.images.snapshots import chain_ids
from agent.images.store import ImageRecord, normalize_name
from agent.images.unpack import compression_of, sniff_compression, unpack_blob
from agent.oci import manifests
from agent.oci.reference import Reference

log = agent.log.get(__name__)

READ_CHUNK = 1 << 20
UNPACKED_TTL = 3600.0  # seconds an unpacked layer waits for its `register` before it is thrown away


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


@dataclass
class _Unpacked:
    """A layer unpacked on arrival into a prepared snapshot directory, waiting for its chain ID."""

    tmp: Path
    compression: str
    diff_id: str
    tar_size: int
    written: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class _Received:
    """What the worker thread of one write did: the unpacked layer, if any, and its CPU seconds."""

    unpacked: _Unpacked | None = None
    store_cpu: float = 0.0  # sha256 + write + fsync of the blob
    unpack_cpu: float = 0.0  # gunzip + diff ID + extraction


def _layer_compression(head: bytes) -> str | None:
    """ "gzip", "zstd" or "" (tar) when the first bytes of a blob look like a layer we can unpack, else None
    (configs, manifests, other compressions: those are left to `register`)."""
    kind = sniff_compression(head)
    if kind in ("gzip", "zstd"):
        return kind
    if kind == "" and head[257:262] == b"ustar":
        return ""
    return None


async def _skipping(chunks: AsyncIterator[bytes], skip: int) -> AsyncIterator[bytes]:
    """`chunks` without their first `skip` bytes (those the target kept from an earlier attempt)."""
    async for chunk in chunks:
        if skip:
            if len(chunk) <= skip:
                skip -= len(chunk)
                continue
            chunk, skip = chunk[skip:], 0
        yield chunk


async def _prepended(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for chunk in rest:
        yield chunk


class BlobTransfer:
    """Blob-level transfer on top of one agent's ImageManager."""

    def __init__(self, images: ImageManager) -> None:
        self._images = images
        self._content = images.content
        self._unpacked: dict[str, _Unpacked] = {}  # blob digest → layer unpacked on arrival

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
            await asyncio.to_thread(self._drop_stale_unpacked)
            started = time.monotonic()
            ingest: Ingest = await asyncio.to_thread(self._content.ingest, digest, size)
            start = ingest.offset
            received = _Received()
            try:
                if ingest.offset < offset:
                    raise FailedPrecondition(
                        f"blob {digest}: this agent kept {ingest.offset} bytes, cannot continue at {offset}"
                    )
                data = _skipping(chunks, ingest.offset - offset)
                first = await anext(data, b"")
                compression = _layer_compression(first) if start == 0 else None
                with self._content.no_space(size):  # the blob's or its unpacked layer's writes
                    await read_in_thread(
                        _prepended(first, data),
                        lambda reader: self._receive(reader, ingest, size, compression, received),
                    )
            finally:
                done = ingest.offset - start
                ingest.close()
                log.info(
                    "transfer.blob_written",
                    digest=digest,
                    size=size,
                    resumed_at=start,
                    received=done,
                    complete=self._content.has(digest),
                    unpacked=received.unpacked is not None,
                    seconds=round(time.monotonic() - started, 4),
                    store_cpu=round(received.store_cpu, 4),
                    unpack_cpu=round(received.unpack_cpu, 4),
                )
        return WriteResult(digest, done)

    def _receive(
        self, reader: ChunkReader, ingest: Ingest, size: int, compression: str | None, received: _Received
    ) -> None:
        """In a worker thread: the blob into the ingest and, if it is a layer, through the unpacker too,
        in one pass; then verified and published. A failure leaves no unpacked directory behind.

        What it did goes into `received` as it happens, so the write's log line tells the truth also when
        the call fails after the blob was published (the connection cut while the reply was on its way)."""

        def store(data: bytes) -> None:
            """Append to the ingest (hashing), timing it apart from the unpacking."""
            start = time.thread_time()
            ingest.write(data)
            received.store_cpu += time.thread_time() - start

        tee = io.BufferedReader(Tee(reader, store), READ_CHUNK)
        cpu = time.thread_time()
        unpacked: _Unpacked | None = None
        try:
            if compression is not None:
                unpacked = self._unpack(tee, ingest.digest, compression)
            while tee.read(READ_CHUNK):
                pass
            received.unpack_cpu = time.thread_time() - cpu - received.store_cpu
            if ingest.offset < size:
                raise Conflict(
                    f"blob {ingest.digest} incomplete: {ingest.offset} of {size} bytes arrived "
                    "(kept to resume)"
                )
            if unpacked is not None:
                # Listed before the blob becomes visible: a `register` that sees the blob (say, the
                # controller retried after losing our answer) must find its unpacked layer too.
                stale = self._unpacked.pop(ingest.digest, None)
                if stale is not None:
                    self._images.snapshots.abort(stale.tmp)
                self._unpacked[ingest.digest] = unpacked
                received.unpacked = unpacked
            start = time.thread_time()
            ingest.commit()
            received.store_cpu += time.thread_time() - start
        except BaseException:
            if unpacked is not None:
                if self._unpacked.get(ingest.digest) is unpacked:
                    del self._unpacked[ingest.digest]
                self._images.snapshots.abort(unpacked.tmp)
                received.unpacked = None
            raise

    def _unpack(self, blob: BinaryIO, digest: str, compression: str) -> _Unpacked | None:
        """Unpack a layer as it arrives; None (and nothing kept) when it does not unpack: `register` will
        try again from the stored blob and report the real error, if there is one."""
        snapshots = self._images.snapshots
        tmp = snapshots.prepare(digest)
        try:
            diff_id, tar_size, written = unpack_blob(blob, None, tmp)
        except AgentError as exc:
            snapshots.abort(tmp)
            if not isinstance(exc, InvalidArgument):
                raise
            log.info("transfer.unpack_deferred", digest=digest, reason=exc.message[:200])
            return None
        except BaseException:
            snapshots.abort(tmp)
            raise
        return _Unpacked(tmp, compression, diff_id, tar_size, written)

    def _drop_stale_unpacked(self) -> None:
        """Forget layers unpacked on arrival whose `register` never came (e.g. the controller was killed)."""
        now = time.monotonic()
        for digest, entry in list(self._unpacked.items()):
            if now - entry.at > UNPACKED_TTL and self._unpacked.pop(digest, None) is entry:
                self._images.snapshots.abort(entry.tmp)

    async def register(self, manifest_digest: str, names: Sequence[str]) -> ImageRecord:
        """Record the image under `names` (checked before anything is recorded), adopting first the layers
        that were unpacked on arrival."""
        validate_digest(manifest_digest)
        normalized = [_tag_name(n) for n in names]
        started, cpu = time.monotonic(), time.process_time()
        async with self._images.operation():
            adopted = await asyncio.to_thread(self._adopt_unpacked, manifest_digest)
            record = await self._images.register(normalized[0] if normalized else "", manifest_digest)
            for extra in normalized[1:]:
                self._images.tag(record.digest, extra)
        log.info(
            "transfer.image_registered",
            digest=manifest_digest,
            names=normalized,
            unpacked_on_arrival=adopted,
            seconds=round(time.monotonic() - started, 4),
            cpu=round(time.process_time() - cpu, 4),
        )
        return record

    def _adopt_unpacked(self, manifest_digest: str) -> int:
        """Commit the image's layers unpacked on arrival as snapshots under their chain IDs; returns how many.

        Only a layer whose diff ID is the config's and whose compression is its media type's is adopted;
        the others are thrown away and left to `ImageManager.register` (which reports what is wrong).
        """
        content, snapshots = self._content, self._images.snapshots
        try:
            manifest = manifests.parse_manifest(content.read_bytes(manifest_digest), manifest_digest)
            config = content.read_bytes(manifest.config.digest)
            diff_ids = manifests.config_diff_ids(config, manifest.config.digest)
        except AgentError:
            return 0  # register says what is wrong
        chains = chain_ids(diff_ids) if len(diff_ids) == len(manifest.layers) else []
        adopted = 0
        for i, layer in enumerate(manifest.layers):
            entry = self._unpacked.pop(layer.digest, None)
            if entry is None:
                continue
            try:
                fits = bool(chains) and compression_of(layer.media_type) == entry.compression
            except InvalidArgument:
                fits = False
            if not fits or entry.diff_id != diff_ids[i] or snapshots.has(chains[i]):
                snapshots.abort(entry.tmp)
                continue
            snapshots.commit(chains[i], entry.tmp, entry.diff_id, entry.written)
            self._images.store.record_layer_size(entry.diff_id, entry.tar_size)
            adopted += 1
        return adopted


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
