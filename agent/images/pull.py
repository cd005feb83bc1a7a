"""Pull an image from a registry: resolve, then fetch and unpack layers in parallel, then record it.

Each missing layer goes through ONE pass in one worker thread: HTTP body → content-store ingest (running
sha256) → decompression (running diff ID) → tar extraction into a prepared snapshot directory. The blob
becomes visible only when its digest matches, the snapshot only when the diff ID matches the config; any
mismatch is `Integrity` (DATA_LOSS) and leaves neither behind. A connection cut mid-layer is resumed with
Range inside the blob reader, invisible to the unpacker; a partial ingest left by a killed agent is
continued from its offset (then unpacked from the local blob). Layers whose blob and snapshot are already
present are skipped. Progress events stream to the caller while this runs.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import shutil
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import agent.log
from agent.bytestreams import Tee
from agent.errors import (
    AgentError,
    Conflict,
    FailedPrecondition,
    Integrity,
    InvalidArgument,
    NoSpace,
    NotFound,
    human_size,
)
from agent.images.content import Ingest
from agent.images.jobs import ThreadedJob, stream
from agent.images.snapshots import chain_ids
from agent.images.store import ImageRecord
from agent.images.unpack import unpack_blob
from agent.oci import manifests, platform
from agent.oci.manifests import Descriptor
from agent.oci.platform import Platform
from agent.oci.reference import Reference
from agent.registry.auth import Credentials
from agent.registry.client import BlobReader, Cancelled, RegistryClient, Repository
from agent.registry.sources import BlobSources
from agent.trust import signatures as trust_signatures

if TYPE_CHECKING:
    from agent.images.manager import ImageManager

log = agent.log.get(__name__)

_PROGRESS_INTERVAL = 0.2
_CONFLICT_POLL = 0.1
DEFAULT_CONCURRENCY = 3


class LayerState(enum.StrEnum):
    WAITING = "waiting"
    DOWNLOADING = "downloading"
    EXTRACTING = "extracting"
    EXISTS = "exists"
    DONE = "done"


@dataclass(frozen=True)
class PullResolved:
    """The reference resolved: which manifest (and index) will be pulled, and its layers."""

    reference: str
    digest: str
    index_digest: str | None
    platform: str
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class LayerProgress:
    digest: str
    state: LayerState
    current: int
    total: int


@dataclass(frozen=True)
class PullFinished:
    record: ImageRecord
    downloaded: int  # bytes received from registries by this pull (resumes included)


PullEvent = PullResolved | LayerProgress | PullFinished


@dataclass(frozen=True)
class PullOptions:
    platform: Platform | None = None
    credentials: Credentials | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    # refuse before downloading when the data root cannot hold the missing layers (release staging)
    check_space: bool = False


async def pull(
    images: ImageManager,
    registry: RegistryClient,
    sources: BlobSources,
    reference: str,
    options: PullOptions | None = None,
) -> AsyncIterator[PullEvent]:
    """Pull `reference` and yield progress; the last event is `PullFinished`. Errors are AgentErrors.

    Closing the iterator early (the caller went away) stops the worker threads at their next read and
    keeps partial downloads for a later resume.
    """
    job = _PullJob(images, registry, sources, Reference.parse(reference), options or PullOptions())
    async with contextlib.aclosing(stream(job)) as events:
        async for event in events:
            yield event


class _PullJob(ThreadedJob[PullEvent]):
    def __init__(
        self,
        images: ImageManager,
        registry: RegistryClient,
        sources: BlobSources,
        ref: Reference,
        options: PullOptions,
    ) -> None:
        super().__init__()
        self.images = images
        self.registry = registry
        self.sources = sources
        self.ref = ref
        self.options = options

    async def run(self) -> None:
        started = time.monotonic()
        wanted = self.options.platform or platform.host()
        explicit = self.options.platform is not None
        async with self.images.operation():
            repo = self.registry.repository(self.ref, self.options.credentials, cancel=self.cancel)
            top, document = await self._thread(lambda: repo.resolve(wanted, explicit=explicit))
            where = f"manifest {document.digest}"
            manifest = manifests.parse_manifest(document.data, where)
            config = await self._thread(self._config, repo, manifest.config)
            self._check_platform(top is not None, config, wanted, explicit)
            diff_ids = manifests.config_diff_ids(config, f"config {manifest.config.digest}")
            if len(diff_ids) != len(manifest.layers):
                raise FailedPrecondition(
                    f"{where}: {len(manifest.layers)} layers but its config lists {len(diff_ids)} diff IDs"
                )
            chains = chain_ids(diff_ids)
            self.queue.put_nowait(
                PullResolved(
                    str(self.ref),
                    document.digest,
                    top.digest if top is not None else None,
                    str(manifests.config_platform(config) or wanted),
                    manifest.layers,
                )
            )
            if self.options.check_space:
                await self._thread(self._check_space, manifest.layers, chains)
            await self._layers(repo, manifest.layers, chains, diff_ids)
            for doc in (document, top):
                if doc is not None:
                    await self._thread(self.images.content.put_bytes, doc.data, doc.digest)
            for layer, chain in zip(manifest.layers, chains, strict=True):
                if not self.images.snapshots.has(chain):
                    self.queue.put_nowait(
                        LayerProgress(layer.digest, LayerState.EXTRACTING, layer.size, layer.size)
                    )
            record = await self.images.register(
                str(self.ref), document.digest, index_digest=top.digest if top is not None else None
            )
            # kept with the image so a trust policy can check them at run time, offline
            await self._thread(
                trust_signatures.keep_fetched, self.images.signatures, repo, document.digest, top
            )
        blobs = [document.digest, manifest.config.digest, *(layer.digest for layer in manifest.layers)]
        await self._thread(self.sources.record, self.ref.registry, self.ref.repository, blobs)
        for layer in manifest.layers:
            self.queue.put_nowait(LayerProgress(layer.digest, LayerState.DONE, layer.size, layer.size))
        log.info(
            "image.pulled",
            image_ref=str(self.ref),
            digest=document.digest,
            platform=record.platform,
            downloaded=self.transferred,
            seconds=round(time.monotonic() - started, 3),
        )
        self.queue.put_nowait(PullFinished(record, self.transferred))

    def _check_space(self, layers: Sequence[Descriptor], chains: Sequence[str]) -> None:
        """NoSpace with the numbers unless the data root's free space covers the missing layers: each
        missing blob its size, each missing snapshot at least as much again (a lower bound: unpacked
        layers are rarely smaller than compressed ones)."""
        content, snapshots = self.images.content, self.images.snapshots
        blobs = {layer.digest: layer.size for layer in layers if not content.has(layer.digest)}
        pairs = zip(layers, chains, strict=True)
        unpack = sum(layer.size for layer, chain in pairs if not snapshots.has(chain))
        needs = sum(blobs.values()) + unpack
        free = shutil.disk_usage(content.space_root).free
        if needs > free:
            raise NoSpace(
                f"not enough space on {content.space_root} for {self.ref}: needs at least {human_size(needs)}"
                f" ({human_size(sum(blobs.values()))} to download, {human_size(unpack)} to unpack),"
                f" {human_size(free)} free"
            )

    def _config(self, repo: Repository, descriptor: Descriptor) -> bytes:
        content = self.images.content
        if content.has(descriptor.digest):
            return content.read_bytes(descriptor.digest)
        data = repo.get_blob_bytes(descriptor)
        content.put_bytes(data, descriptor.digest)
        self._count(len(data))
        return data

    def _check_platform(self, from_index: bool, config: bytes, wanted: Platform, explicit: bool) -> None:
        declared = manifests.config_platform(config)
        if from_index or declared is None or platform.select(wanted, [declared]) is not None:
            return
        if explicit:
            raise NotFound(f"{self.ref} is a {declared} image, not {wanted}")
        log.warning("image.platform_mismatch", image_ref=str(self.ref), image=str(declared), host=str(wanted))

    async def _layers(
        self, repo: Repository, layers: Sequence[Descriptor], chains: Sequence[str], diff_ids: Sequence[str]
    ) -> None:
        """Fetch every layer, at most `concurrency` at a time; the first failure stops the others."""
        first_of_digest: dict[str, int] = {}
        for i, layer in enumerate(layers):
            first_of_digest.setdefault(layer.digest, i)
            self.queue.put_nowait(LayerProgress(layer.digest, LayerState.WAITING, 0, layer.size))
        # A blob listed twice (e.g. empty layers) is fetched once; later positions unpack from it.
        calls = [
            functools.partial(
                self._layer, repo, layers[i], chains[i], diff_ids[i], first_of_digest[layers[i].digest] == i
            )
            for i in range(len(layers))
        ]
        await self._parallel(calls, self.options.concurrency, "layer")

    def _layer(self, repo: Repository, layer: Descriptor, chain: str, diff_id: str, unpack: bool) -> None:
        """One layer, in a worker thread; a full disk (blob or snapshot) is NoSpace, needs its size."""
        with self.images.content.no_space(layer.size):
            self._fetch_layer(repo, layer, chain, diff_id, unpack)

    def _fetch_layer(
        self, repo: Repository, layer: Descriptor, chain: str, diff_id: str, unpack: bool
    ) -> None:
        content, snapshots = self.images.content, self.images.snapshots
        if content.has(layer.digest):
            if snapshots.has(chain):
                self.emit(LayerProgress(layer.digest, LayerState.EXISTS, layer.size, layer.size))
            return  # unpacked from the local blob by `register` if the snapshot is missing
        ingest = self._open_ingest(layer)
        if ingest is None:
            return  # another pull finished this blob meanwhile
        with ingest:
            progress = _Progress(self, layer, ingest.offset)
            reader = repo.open_blob(layer.digest, layer.size, ingest.offset)
            try:
                if ingest.offset or not unpack or snapshots.has(chain):
                    if ingest.offset:
                        log.info(
                            "image.layer_resumed", digest=layer.digest, offset=ingest.offset, size=layer.size
                        )
                    _teed(reader, ingest, progress).drain()
                    ingest.commit()
                    return
                self._unpack_streaming(reader, ingest, progress, layer, chain, diff_id)
            finally:
                reader.close()
                progress.flush()

    def _open_ingest(self, layer: Descriptor) -> Ingest | None:
        """The layer's ingest; if another operation is writing the same blob, wait for it to finish."""
        while True:
            try:
                return self.images.content.ingest(layer.digest, layer.size)
            except Conflict:
                if self.cancel.wait(_CONFLICT_POLL):
                    raise Cancelled("cancelled") from None
                if self.images.content.has(layer.digest):
                    return None

    def _unpack_streaming(
        self,
        reader: BlobReader,
        ingest: Ingest,
        progress: _Progress,
        layer: Descriptor,
        chain: str,
        diff_id: str,
    ) -> None:
        snapshots = self.images.snapshots
        tee = _teed(reader, ingest, progress)
        tmp = snapshots.prepare(chain)
        try:
            try:
                got, tar_size, written = unpack_blob(tee, layer.media_type, tmp)
                tee.drain()
            except AgentError as exc:
                if not isinstance(exc, InvalidArgument):
                    raise
                # Undecodable data: if the blob itself is corrupt, that (DATA_LOSS) is the real error.
                tee.drain()
                ingest.commit()
                raise
            ingest.commit()  # Integrity if the bytes do not match the digest; nothing is left then
            if got != diff_id:
                self.images.content.delete(layer.digest)
                raise Integrity(
                    f"layer {layer.digest}: uncompressed digest {got} does not match diff ID {diff_id}"
                )
            snapshots.commit(chain, tmp, diff_id, written)
        except BaseException:
            snapshots.abort(tmp)
            raise
        self.images.store.record_layer_size(diff_id, tar_size)


class _Progress:
    """Counts a layer's bytes and emits throttled progress events."""

    def __init__(self, job: _PullJob, layer: Descriptor, offset: int) -> None:
        self.job = job
        self.layer = layer
        self.current = offset
        self._last = 0.0
        job.emit(LayerProgress(layer.digest, LayerState.DOWNLOADING, offset, layer.size))

    def add(self, n: int) -> None:
        self.current += n
        self.job._count(n)
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self.flush()

    def flush(self) -> None:
        self.job.emit(LayerProgress(self.layer.digest, LayerState.DOWNLOADING, self.current, self.layer.size))


def _teed(reader: BlobReader, ingest: Ingest, progress: _Progress) -> Tee:
    """Bytes from the registry, appended to the ingest (hashing them) and counted on the way through."""

    def store(data: bytes) -> None:
        ingest.write(data)
        progress.add(len(data))

    return Tee(reader, store)
