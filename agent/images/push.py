"""Push a stored image to a registry: blobs first (skipping, mounting or uploading each), then manifests.

Per blob: HEAD — the repository already has it → skip; else, when another repository of the same registry
is known to hold it (`BlobSources`), a cross-repository mount (`POST …/uploads/?mount=&from=`, 201 → done);
else an upload — monolithic (one PUT) up to `monolithic_limit`, chunked (PATCH per `chunk_size`, then PUT)
above it. A failed upload is restarted from scratch (bounded). Then the manifest; when the image was pulled
from an index and every platform's manifest is present locally, those manifests and the index are pushed
too, so the digest users pulled stays the digest they push. Progress events stream like a pull's.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

import agent.log
from agent.errors import FailedPrecondition
from agent.images.jobs import ThreadedJob, stream
from agent.images.store import ImageRecord
from agent.oci import manifests
from agent.oci.manifests import Descriptor, Document
from agent.oci.reference import Reference
from agent.registry.auth import Credentials
from agent.registry.client import Cancelled, RegistryClient, Repository
from agent.registry.sources import BlobSources
from agent.registry.transport import Transient

if TYPE_CHECKING:
    from agent.images.manager import ImageManager

log = agent.log.get(__name__)

_PROGRESS_INTERVAL = 0.2
_UPLOAD_ATTEMPTS = 3
DEFAULT_CHUNK_SIZE = 16 * 1024 * 1024
DEFAULT_MONOLITHIC_LIMIT = 64 * 1024 * 1024
DEFAULT_CONCURRENCY = 3


class BlobState(enum.StrEnum):
    WAITING = "waiting"
    UPLOADING = "uploading"
    EXISTS = "exists"
    MOUNTED = "mounted"
    DONE = "done"


@dataclass(frozen=True)
class BlobProgress:
    digest: str
    state: BlobState
    current: int
    total: int


@dataclass(frozen=True)
class PushFinished:
    reference: str
    digest: str  # what the pushed tag now points at (the index's digest when an index was pushed)
    uploaded: int  # blob bytes sent


PushEvent = BlobProgress | PushFinished


@dataclass(frozen=True)
class PushOptions:
    credentials: Credentials | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    chunk_size: int = DEFAULT_CHUNK_SIZE
    monolithic_limit: int = DEFAULT_MONOLITHIC_LIMIT


async def push(
    images: ImageManager,
    registry: RegistryClient,
    sources: BlobSources,
    reference: str,
    options: PushOptions | None = None,
) -> AsyncIterator[PushEvent]:
    """Push the local image named `reference` to the registry the name points at; yields progress."""
    ref = Reference.parse(reference)
    record = images.get(reference)
    job = _PushJob(images, registry, sources, ref, record, options or PushOptions())
    async with contextlib.aclosing(stream(job)) as events:
        async for event in events:
            yield event


class _PushJob(ThreadedJob[PushEvent]):
    def __init__(
        self,
        images: ImageManager,
        registry: RegistryClient,
        sources: BlobSources,
        ref: Reference,
        record: ImageRecord,
        options: PushOptions,
    ) -> None:
        super().__init__()
        self.images = images
        self.registry = registry
        self.sources = sources
        self.ref = ref
        self.record = record
        self.options = options

    def _documents(self) -> tuple[list[Document], Document | None]:
        """(manifests to push, index to push or None), all read from the content store."""
        content = self.images.content
        manifest = Document(
            content.read_bytes(self.record.digest), self.record.media_type, self.record.digest
        )
        index_digest = self.record.index_digest
        if not index_digest or not content.has(index_digest):
            return [manifest], None
        data = content.read_bytes(index_digest)
        where = f"index {index_digest}"
        index = manifests.parse_index(data, where)
        children: list[Document] = []
        for entry in index.manifests:
            if not content.has(entry.digest):
                return [manifest], None
            child = content.read_bytes(entry.digest)
            parsed = manifests.parse_manifest(child, f"manifest {entry.digest}")
            if not all(content.has(d.digest) for d in (parsed.config, *parsed.layers)):
                return [manifest], None
            children.append(Document(child, entry.media_type, entry.digest))
        return children, Document(data, manifests.media_type_of(data, None, where), index_digest)

    async def run(self) -> None:
        started = time.monotonic()
        async with self.images.operation():
            documents, index = await self._thread(self._documents)
            repo = self.registry.repository(self.ref, self.options.credentials, push=True, cancel=self.cancel)
            blobs: dict[str, Descriptor] = {}
            for document in documents:
                parsed = manifests.parse_manifest(document.data, f"manifest {document.digest}")
                for descriptor in (parsed.config, *parsed.layers):
                    blobs.setdefault(descriptor.digest, descriptor)
            for descriptor in blobs.values():
                self.queue.put_nowait(BlobProgress(descriptor.digest, BlobState.WAITING, 0, descriptor.size))
            calls = [functools.partial(self._blob, repo, d) for d in blobs.values()]
            await self._parallel(calls, self.options.concurrency, "blob")
            tag = self.ref.tag
            if index is None:
                identifier = self.ref.digest or tag or documents[0].digest
                await self._thread(repo.put_manifest, identifier, documents[0])
                pushed = documents[0]
            else:
                for document in documents:
                    await self._thread(repo.put_manifest, document.digest, document)
                await self._thread(repo.put_manifest, self.ref.digest or tag or index.digest, index)
                pushed = index
            if self.ref.digest is not None and self.ref.digest != pushed.digest:
                raise FailedPrecondition(
                    f"{self.ref} names digest {self.ref.digest} but the image is {pushed.digest}"
                )
        all_digests = [*blobs, *(d.digest for d in documents), *([index.digest] if index else [])]
        await self._thread(self.sources.record, self.ref.registry, self.ref.repository, all_digests)
        log.info(
            "image.pushed",
            image_ref=str(self.ref),
            digest=pushed.digest,
            uploaded=self.transferred,
            seconds=round(time.monotonic() - started, 3),
        )
        self.queue.put_nowait(PushFinished(str(self.ref), pushed.digest, self.transferred))

    # -- one blob, in a worker thread --------------------------------------------------------------------
    def _blob(self, repo: Repository, descriptor: Descriptor) -> None:
        digest, size = descriptor.digest, descriptor.size
        if repo.blob_size(digest) is not None:
            self.emit(BlobProgress(digest, BlobState.EXISTS, size, size))
            return
        candidates = [
            r for r in self.sources.repositories(digest, self.ref.registry) if r != self.ref.repository
        ]
        location: str | None = None
        if candidates:
            location = repo.start_upload(digest, candidates[0])
            if location is None:
                log.info(
                    "image.blob_mounted", digest=digest, source=candidates[0], target=self.ref.repository
                )
                self.emit(BlobProgress(digest, BlobState.MOUNTED, size, size))
                return
        for attempt in range(1, _UPLOAD_ATTEMPTS + 1):
            if location is None:
                location = repo.start_upload(digest, None)
                if location is None:
                    raise FailedPrecondition(f"registry answered an upload of {digest} without a session")
            try:
                self._upload(repo, location, descriptor)
                break
            except Transient as exc:
                if attempt == _UPLOAD_ATTEMPTS:
                    raise
                log.warning("image.upload_restarted", digest=digest, attempt=attempt, error=str(exc))
                location = None
                if self.cancel.wait(0.2 * attempt):
                    raise Cancelled("cancelled") from exc
        self.emit(BlobProgress(digest, BlobState.DONE, size, size))

    def _upload(self, repo: Repository, location: str, descriptor: Descriptor) -> None:
        digest, size = descriptor.digest, descriptor.size
        progress = _Progress(self, descriptor)
        with self.images.content.open(digest) as blob:
            if size <= self.options.monolithic_limit:
                repo.finish_upload(location, digest, _Counted(blob, progress), size)
                return
            offset = 0
            while offset < size:
                if self.cancel.is_set():
                    raise Cancelled("cancelled")
                chunk = blob.read(self.options.chunk_size)
                if not chunk:
                    raise FailedPrecondition(f"local blob {digest} is shorter than its {size} bytes")
                location = repo.upload_chunk(location, chunk, offset)
                offset += len(chunk)
                progress.add(len(chunk))
            repo.finish_upload(location, digest, None, size)


class _Progress:
    def __init__(self, job: _PushJob, descriptor: Descriptor) -> None:
        self.job = job
        self.descriptor = descriptor
        self.current = 0
        self._last = 0.0
        job.emit(BlobProgress(descriptor.digest, BlobState.UPLOADING, 0, descriptor.size))

    def add(self, n: int) -> None:
        self.current += n
        self.job._count(n)
        now = time.monotonic()
        if now - self._last >= _PROGRESS_INTERVAL:
            self._last = now
            self.job.emit(
                BlobProgress(self.descriptor.digest, BlobState.UPLOADING, self.current, self.descriptor.size)
            )


class _Counted:
    """A file the HTTP client reads the body from, counting what it sent and stopping on cancel."""

    def __init__(self, src: BinaryIO, progress: _Progress) -> None:
        self._src = src
        self._progress = progress

    def read(self, amount: int = -1) -> bytes:
        if self._progress.job.cancel.is_set():
            raise Cancelled("cancelled")
        data = self._src.read(amount)
        if data:
            self._progress.add(len(data))
        return data
