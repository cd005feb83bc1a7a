"""ImageManager: the images facade the Images servicer, the container manager, builds and transfers call.

It ties together the content store (`content.py`), snapshots (`snapshots.py`), metadata (`store.py`),
unpacking (`unpack.py`), archives (`archive_read.py`, `archive_write.py`, `rootfs_import.py`) and GC
(`gc.py`). Pull and push live in `pull.py` / `push.py` and are exposed here as `pull(...)` / `push(...)`.

* Running: `await images.resolve_for_run(ref)` → `RunnableImage` (digest, config, lowerdirs); `lowerdirs` are
  the image's snapshot directories, top-most first, ready for an overlay mount; the config dict is the OCI
  image config. `in_use` (given at construction) names the digests containers use, so that `rmi` refuses
  (without -f) and `image prune` / GC keeps their snapshots.
* Writing content (pull, load, build, commit): ingest blobs inside `async with self.operation():`, then
  `await self.register(name, manifest_digest, index_digest=...)`, which reads manifest and config from the
  content store, unpacks any layer whose snapshot is missing, and records the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, cast

import agent.log
from agent.bytestreams import ChunkWriter, read_in_thread, written_in_thread
from agent.containers.seams import RunnableImage
from agent.errors import AgentError, FailedPrecondition, Integrity, InvalidArgument, NotFound
from agent.images import archive_read, archive_write, gc, rootfs_import
from agent.images import pull as pull_mod
from agent.images import push as push_mod
from agent.images.content import ContentStore, tree_size
from agent.images.snapshots import SnapshotStore, chain_ids
from agent.images.store import ImageRecord, ImageStore, Layer, normalize_name, parse_created
from agent.images.unpack import unpack_blob
from agent.oci import manifests
from agent.oci import platform as platform_mod
from agent.oci.platform import Platform
from agent.oci.reference import Reference
from agent.registry.auth import Credentials
from agent.registry.client import RegistryClient
from agent.registry.sources import BlobSources
from agent.state.db import Database
from agent.trust.signatures import SignatureStore

log = agent.log.get(__name__)

InUse = Callable[[], set[str]]
HeldBy = Callable[[str], str | None]  # digest → who holds it besides containers ("release web (…)")
SAVE_FORMATS = ("docker", "oci")


@dataclass(frozen=True)
class ResolvedImage:
    """A reference resolved in its registry without pulling (`Images.Resolve`, rollouts pin tags by it)."""

    reference: str
    digest: str  # the platform manifest's digest: `repository@digest` pulls exactly this
    size: int  # its layers' compressed sizes, summed
    media_type: str
    index_digest: str | None
    platform: str  # the index entry's platform ("" without an index)


@dataclass(frozen=True)
class RemoveResult:
    untagged: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    reclaimed: int = 0


@dataclass(frozen=True)
class PruneResult:
    deleted: tuple[str, ...] = ()
    untagged: tuple[str, ...] = ()
    reclaimed: int = 0


@dataclass(frozen=True)
class DiskUsage:
    images: int
    images_active: int
    images_size: int
    images_reclaimable: int
    snapshots: int
    snapshots_size: int
    content_blobs: int
    content_size: int
    ingest_size: int


def _no_containers() -> set[str]:
    return set()


def _held_by_nobody(digest: str) -> str | None:
    return None


class ImageManager:
    """Owner of `<data_root>/content`, `<data_root>/snapshots` and the `images_*` tables."""

    def __init__(
        self,
        data_root: Path,
        db: Database,
        *,
        in_use: InUse | None = None,
        held_by: HeldBy | None = None,
        registry: RegistryClient | None = None,
        pull_concurrency: int = pull_mod.DEFAULT_CONCURRENCY,
        durable: bool = True,
        unpack_parallelism: int = 4,
    ) -> None:
        """`registry` is what pull, push and login go through (None: those fail with FailedPrecondition)."""
        self.data_root = data_root
        self.content = ContentStore(data_root / "content", space_root=data_root)
        self.snapshots = SnapshotStore(data_root / "snapshots", db, durable=durable)
        self.store = ImageStore(db)
        self.signatures = SignatureStore(db)  # cosign signatures fetched at pull (agent/trust)
        self.tmp_dir = data_root / "tmp" / "images"
        self.in_use: InUse = in_use or _no_containers
        self.held_by: HeldBy = held_by or _held_by_nobody
        self.registry = registry
        self.blob_sources = BlobSources(db) if registry is not None else None
        self.pull_concurrency = pull_concurrency
        self.gc_lock = gc.GcLock()
        self._unpack_slots = asyncio.Semaphore(max(1, unpack_parallelism))

    # ---- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Reconcile on-disk state with the database (half-done snapshots, temp files)."""
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        """Nothing can be writing yet: what killed loads, imports, builds and commits left is garbage."""
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.content.remove_temp_files()
        self.snapshots.reconcile()

    def operation(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold while writing content whose image record does not exist yet (keeps GC away)."""
        return self.gc_lock.operation()

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """`operation()` for work that stages and stores content, with a full disk reported as NoSpace."""
        async with self.operation():
            with self.content.no_space():
                yield

    def count(self) -> int:
        return len(self.store.records())

    # ---- registration ------------------------------------------------------------------------------

    async def register(
        self, name: str, manifest_digest: str, *, index_digest: str | None = None
    ) -> ImageRecord:
        """Record the image whose manifest (and config, layers) are in the content store under `name`.

        Unpacks missing snapshots (verifying each layer's diff ID against the config) before the record
        becomes visible; `name` may be "" for an untagged image. Returns the stored record.
        """
        if name:
            name = normalize_name(name)
        manifest_bytes = self.content.read_bytes(manifest_digest)
        where = f"manifest {manifest_digest}"
        media_type = manifests.media_type_of(manifest_bytes, None, where)
        if media_type not in manifests.MANIFEST_TYPES:
            raise InvalidArgument(f"{where} is an index, not an image manifest")
        manifest = manifests.parse_manifest(manifest_bytes, where)
        config_bytes = self.content.read_bytes(manifest.config.digest)
        diff_ids = manifests.config_diff_ids(config_bytes, f"config {manifest.config.digest}")
        if len(diff_ids) != len(manifest.layers):
            raise FailedPrecondition(
                f"{where}: {len(manifest.layers)} layers but the config lists {len(diff_ids)} diff IDs"
            )
        layers = tuple(Layer(d.digest, d.media_type, d.size) for d in manifest.layers)
        for layer in layers:
            if not self.content.has(layer.digest):
                raise NotFound(f"{where}: layer blob {layer.digest} is not in the content store")
        chains = await self.ensure_snapshots(layers, diff_ids)
        config = json.loads(config_bytes)
        platform = manifests.config_platform(config_bytes) or Platform("linux", "amd64")
        size = sum(self.snapshots.get(c).size for c in chains)
        record = ImageRecord(
            name=name,
            digest=manifest_digest,
            media_type=media_type,
            platform=str(platform),
            config_digest=manifest.config.digest,
            size=size,
            created=parse_created(config.get("created") if isinstance(config, dict) else None),
            chain_ids=tuple(chains),
            diff_ids=tuple(diff_ids),
            layers=layers,
            index_digest=index_digest,
            content_size=len(manifest_bytes) + manifest.config.size + sum(x.size for x in layers),
        )
        previous = await asyncio.to_thread(self.store.put, record)
        stored = self.store.by_digest(manifest_digest)
        assert stored is not None
        log.info("image.registered", image_ref=name or None, digest=manifest_digest, layers=len(layers))
        if previous:
            log.info("image.name_moved", image_ref=name, old_digest=previous, new_digest=manifest_digest)
        return replace(stored, name=name or stored.name)

    async def ensure_snapshots(self, layers: Sequence[Layer], diff_ids: Sequence[str]) -> list[str]:
        """Chain IDs of the layers, unpacking (in parallel threads) each one not yet a snapshot."""
        chains = chain_ids(list(diff_ids))

        async def one(i: int) -> None:
            if self.snapshots.has(chains[i]):
                return
            async with self._unpack_slots:
                await asyncio.to_thread(self._unpack_one, chains[i], layers[i], diff_ids[i])

        try:
            async with asyncio.TaskGroup() as tg:
                for i in range(len(layers)):
                    tg.create_task(one(i))
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        return chains

    def _unpack_one(self, chain_id: str, layer: Layer, diff_id: str) -> None:
        if self.snapshots.has(chain_id):
            return
        tmp = self.snapshots.prepare(chain_id)
        try:
            with self.content.open(layer.digest) as blob, self.content.no_space(layer.size):
                got, tar_size, written = unpack_blob(blob, layer.media_type, tmp)
            if got != diff_id:
                raise Integrity(
                    f"layer {layer.digest}: uncompressed digest {got} does not match diff ID {diff_id}"
                )
            self.snapshots.commit(chain_id, tmp, diff_id, written)
        except BaseException:
            self.snapshots.abort(tmp)
            raise
        self.store.record_layer_size(diff_id, tar_size)

    # ---- queries -------------------------------------------------------------------------------------

    def images(self) -> list[tuple[ImageRecord, list[str], bool]]:
        """Every image once: (record, all its names, whether a container uses it), newest first."""
        used = self.in_use()
        out = [(r, self.store.names_of(r.digest), r.digest in used) for r in self.store.records()]
        out.sort(key=lambda item: item[0].stored_at, reverse=True)
        return out

    def names_of(self, digest: str) -> list[str]:
        return self.store.names_of(digest)

    def is_in_use(self, digest: str) -> bool:
        return digest in self.in_use()

    def get(self, ref: str) -> ImageRecord:
        return self.store.get(ref)

    def inspect(self, ref: str) -> tuple[ImageRecord, list[str], dict[str, Any], dict[str, Any]]:
        """(record, all its names, image config, manifest) for `image inspect`."""
        record = self.store.get(ref)
        config = json.loads(self.content.read_bytes(record.config_digest))
        manifest = json.loads(self.content.read_bytes(record.digest))
        return record, self.store.names_of(record.digest), config, manifest

    def documents(self, record: ImageRecord) -> tuple[bytes, bytes]:
        """(config, manifest) bytes exactly as stored."""
        return self.content.read_bytes(record.config_digest), self.content.read_bytes(record.digest)

    async def resolve_for_run(self, ref: str) -> RunnableImage:
        """What a container needs: the digest, the image config dict and overlayfs lowerdirs (top first)."""
        record = self.store.get(ref)
        async with self.operation():
            config_bytes = self.content.read_bytes(record.config_digest)
            if not all(self.snapshots.has(c) for c in record.chain_ids):
                await self.ensure_snapshots(record.layers, record.diff_ids)
            lowerdirs = self.snapshots.lowerdirs(list(record.chain_ids))
        config: dict[str, Any] = json.loads(config_bytes)
        return RunnableImage(record.digest, config, tuple(lowerdirs))

    # ---- names ---------------------------------------------------------------------------------------

    def tag(self, src: str, dst: str) -> ImageRecord:
        record = self.store.tag(src, dst)
        log.info("image.tagged", source=src, image_ref=record.name, digest=record.digest)
        return record

    async def remove(self, ref: str, *, force: bool = False) -> RemoveResult:
        """`rmi`: untag a name, and delete the image when no name is left and no container uses it.

        A name whose image has other names is only untagged. Removing an image's last name, or an image by
        ID, while a container uses it is FailedPrecondition unless `force` (then only names go; the image
        stays, dangling, until no container uses it). An image ID with several names needs `force`.
        """
        record = self.store.get(ref)
        names = self.store.names_of(record.digest)
        used = record.digest in self.in_use()
        by_name = _matching_name(ref, names)
        untagged: list[str] = []
        if by_name is not None and len(names) > 1:
            self.store.untag(by_name)
            log.info("image.untagged", image_ref=by_name, digest=record.digest)
            return RemoveResult(untagged=(by_name,))
        if by_name is None and len(names) > 1 and not force:
            raise FailedPrecondition(
                f"image {ref} is referenced by {len(names)} names ({', '.join(names)}); use -f to remove all"
            )
        if used and not force:
            holder = self.held_by(record.digest)
            if holder is not None:
                raise FailedPrecondition(f"image {ref} is used by {holder}")
            raise FailedPrecondition(
                f"image {ref} is in use by a container; stop and remove it first or use -f"
            )
        for name in names:
            self.store.untag(name)
            untagged.append(name)
        if used:
            return RemoveResult(untagged=tuple(untagged))
        async with self.gc_lock.exclusive():
            self.store.delete(record.digest)
            result = await asyncio.to_thread(self._collect)
        log.info("image.removed", digest=record.digest, names=untagged, reclaimed=result.reclaimed)
        return RemoveResult(untagged=tuple(untagged), deleted=(record.digest,), reclaimed=result.reclaimed)

    async def prune(self, *, all_unused: bool = False) -> PruneResult:
        """Delete dangling images (or, with `all_unused`, every image no container uses) and their data,
        and every abandoned partial download or temp file (an ongoing one is never touched)."""
        used = self.in_use()
        deleted: list[str] = []
        untagged: list[str] = []
        async with self.gc_lock.exclusive():
            for record in self.store.records():
                if record.digest in used:
                    continue
                names = self.store.names_of(record.digest)
                if names and not all_unused:
                    continue
                untagged.extend(names)
                self.store.delete(record.digest)
                deleted.append(record.digest)
            result = await asyncio.to_thread(self._collect, True)
        log.info("image.pruned", deleted=len(deleted), reclaimed=result.reclaimed)
        return PruneResult(deleted=tuple(deleted), untagged=tuple(untagged), reclaimed=result.reclaimed)

    async def collect_garbage(self) -> gc.GcResult:
        async with self.gc_lock.exclusive():
            return await asyncio.to_thread(self._collect)

    def _collect(self, partials: bool = False) -> gc.GcResult:
        return gc.collect(self.store, self.content, self.snapshots, partials=partials)

    # ---- archives --------------------------------------------------------------------------------------

    def _save_items(self, refs: Sequence[str]) -> list[archive_write.SaveItem]:
        """Resolve every ref before any byte is sent: a bad name fails the call, not the stream."""
        if not refs:
            raise InvalidArgument("save needs at least one image")
        items: dict[str, tuple[ImageRecord, list[str]]] = {}
        for ref in refs:
            record = self.store.get(ref)
            names = self.store.names_of(record.digest)
            name = _matching_name(ref, names)
            entry = items.setdefault(record.digest, (record, []))
            if name is not None and name not in entry[1]:
                entry[1].append(name)
        return [archive_write.SaveItem(rec, tuple(names)) for rec, names in items.values()]

    def _layer_size(self, digest: str, media_type: str, diff_id: str) -> int:
        known = self.store.layer_size(diff_id)
        if known is not None:
            return known
        size = archive_write.uncompressed_size(self.content, digest, media_type, diff_id)
        self.store.record_layer_size(diff_id, size)
        return size

    async def save(self, refs: Sequence[str], fmt: str = "docker") -> AsyncIterator[bytes]:
        """Stream a docker-archive (`fmt="docker"`) or OCI-archive (`"oci"`) tar of the images, in chunks.

        Names are checked before the first chunk; content errors during the stream raise from the iterator.
        """
        if fmt not in SAVE_FORMATS:
            raise InvalidArgument(f"unknown archive format {fmt!r}: want one of {', '.join(SAVE_FORMATS)}")
        items = self._save_items(refs)
        return self._save_stream(items, fmt)

    async def _save_stream(self, items: list[archive_write.SaveItem], fmt: str) -> AsyncIterator[bytes]:
        def work(writer: ChunkWriter) -> None:
            if fmt == "oci":
                archive_write.write_oci_archive(writer, items, self.content)  # type: ignore[arg-type]
            else:
                archive_write.write_docker_archive(writer, items, self.content, self._layer_size)  # type: ignore[arg-type]

        async with self.operation():
            async with contextlib.aclosing(written_in_thread(work)) as chunks:
                async for chunk in chunks:
                    yield chunk
        log.info("image.saved", images=[i.record.digest for i in items], format=fmt)

    async def load(
        self, chunks: AsyncIterable[bytes], warn: Callable[[str], None] | None = None
    ) -> list[ImageRecord]:
        """`load -i`: docker-archive or OCI-archive bytes (maybe compressed) → registered images.

        Names in the archive that are not valid references are dropped, each reported through `warn`.
        """
        work = self.tmp_dir / f"load-{secrets.token_hex(8)}"
        try:
            async with self._writing():
                staged = await read_in_thread(
                    chunks, lambda r: archive_read.stage_archive(cast(BinaryIO, r), work)
                )
                planned = await asyncio.to_thread(archive_read.plan_archive, staged, self.content)
                if not planned:
                    raise InvalidArgument("the archive contains no images")
                records = []
                for item in planned:
                    for line in item.dropped:
                        if warn is not None:
                            warn(line)
                    first = item.names[0] if item.names else ""
                    record = await self.register(first, item.manifest_digest, index_digest=item.index_digest)
                    for extra in item.names[1:]:
                        self.store.tag(record.digest, extra)
                    records.append(record)
                    for name in item.names:
                        log.info("image.loaded", image_ref=name, digest=record.digest)
                return records
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def import_rootfs(
        self,
        chunks: AsyncIterable[bytes],
        ref: str,
        *,
        changes: Iterable[str] = (),
        message: str = "",
    ) -> ImageRecord:
        """`import ROOTFS.tar REF`: a one-layer image from a rootfs tarball (plain, gzip, zstd, xz, bzip2)."""
        name = _tag_name(ref) if ref else ""
        config_changes = rootfs_import.parse_changes(changes)
        work = self.tmp_dir / f"import-{secrets.token_hex(8)}"
        try:
            async with self._writing():
                layer: rootfs_import.ImportedLayer = await read_in_thread(
                    chunks, lambda r: rootfs_import.stage_rootfs(cast(BinaryIO, r), work, self.content)
                )
                config = rootfs_import.import_config(layer.diff_id, changes=config_changes, message=message)
                config_digest = await asyncio.to_thread(self.content.put_bytes, config)
                manifest = rootfs_import.single_layer_manifest(config, config_digest, layer)
                manifest_digest = await asyncio.to_thread(self.content.put_bytes, manifest)
                record = await self.register(name, manifest_digest)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        log.info("image.imported", image_ref=name or None, digest=record.digest, bytes=layer.size)
        return record

    def disk_usage(self) -> DiskUsage:
        records = self.store.records()
        used = self.in_use()
        chain_sizes = {s.chain_id: s.size for s in self.snapshots.list()}
        active_chains = {c for r in records if r.digest in used for c in r.chain_ids}
        reclaimable = sum(size for c, size in chain_sizes.items() if c not in active_chains)
        blobs = list(self.content.digests())
        return DiskUsage(
            images=len(records),
            images_active=len([r for r in records if r.digest in used]),
            images_size=sum(chain_sizes.get(c, 0) for c in {c for r in records for c in r.chain_ids}),
            images_reclaimable=reclaimable,
            snapshots=len(chain_sizes),
            snapshots_size=sum(chain_sizes.values()),
            content_blobs=len(blobs),
            content_size=sum(_size_or_zero(self.content, d) for d in blobs),
            ingest_size=self.content.partials_size() + tree_size(self.tmp_dir),
        )

    def list(self) -> list[ImageRecord]:
        return self.store.list()

    # ---- registry: pull, push, login check (pull.py, push.py) -----------------------------------------

    def _registry(self) -> tuple[RegistryClient, BlobSources]:
        if self.registry is None or self.blob_sources is None:
            raise FailedPrecondition("this agent has no registry client configured")
        return self.registry, self.blob_sources

    def pull(
        self,
        reference: str,
        *,
        platform: Platform | None = None,
        credentials: Credentials | None = None,
        check_space: bool = False,
    ) -> AsyncIterator[pull_mod.PullEvent]:
        """Pull from a registry, yielding progress; the last event is `PullFinished`. `check_space`:
        refuse before downloading when the missing layers cannot fit (release staging)."""
        client, sources = self._registry()
        options = pull_mod.PullOptions(platform, credentials, self.pull_concurrency, check_space)
        return pull_mod.pull(self, client, sources, reference, options)

    def push(
        self, reference: str, *, credentials: Credentials | None = None
    ) -> AsyncIterator[push_mod.PushEvent]:
        """Push to the registry the name points at, yielding progress; the last event is `PushFinished`."""
        client, sources = self._registry()
        return push_mod.push(self, client, sources, reference, push_mod.PushOptions(credentials))

    async def check_login(self, registry: str, credentials: Credentials) -> None:
        client, _ = self._registry()
        await asyncio.to_thread(client.check_login, registry, credentials)

    async def resolve(
        self, reference: str, *, platform: Platform | None = None, credentials: Credentials | None = None
    ) -> ResolvedImage:
        """The manifest a pull of `reference` would fetch for `platform` (default: this host's), read from
        the registry the way pull resolves it (mirrors, credentials, retries), without pulling it."""
        client, _ = self._registry()
        ref = Reference.parse(reference)
        wanted = platform or platform_mod.host()

        def work() -> ResolvedImage:
            repo = client.repository(ref, credentials)
            top, document = repo.resolve(wanted, explicit=platform is not None)
            manifest = manifests.parse_manifest(document.data, f"manifest {document.digest}")
            chosen = ""
            if top is not None:
                index = manifests.parse_index(top.data, f"index {top.digest}")
                entry = next((d for d in index.manifests if d.digest == document.digest), None)
                chosen = str(entry.platform) if entry is not None and entry.platform is not None else ""
            return ResolvedImage(
                str(ref),
                document.digest,
                sum(layer.size for layer in manifest.layers),
                document.media_type,
                top.digest if top is not None else None,
                chosen,
            )

        return await asyncio.to_thread(work)


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from parallel layer work: the first AgentError, else the first failure."""
    leaves: list[BaseException] = []

    def walk(g: BaseExceptionGroup[BaseException]) -> None:
        for exc in g.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                leaves.append(exc)

    walk(group)
    for exc in leaves:
        if isinstance(exc, AgentError):
            return exc
    return leaves[0]


def _size_or_zero(content: ContentStore, digest: str) -> int:
    try:
        return content.size(digest)
    except NotFound:
        return 0


def _tag_name(ref: str) -> str:
    """A name to give an image: a valid reference with a tag, not a digest."""
    parsed = Reference.parse(ref)
    if parsed.digest is not None:
        raise InvalidArgument(f"cannot name an image with a digest reference {ref!r}")
    return str(parsed)


def _matching_name(ref: str, names: list[str]) -> str | None:
    """The stored name `ref` spells, if the user named the image rather than giving its ID or digest."""
    try:
        name = str(Reference.parse(ref))
    except InvalidArgument:
        return None
    return name if name in names else None
