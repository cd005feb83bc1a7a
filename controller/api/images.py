"""The Images service (store side): list, inspect, tag, remove, prune, disk usage, save/load/import.
Registry traffic of the same service (pull, push, login check) is in controller/api/registry.py."""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC

from agent.api.v1 import images_pb2 as pb
from controller.api import JsonValue
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Images"]
LIST = rpc(_SERVICE, "List", pb.ListImagesRequest, pb.ListImagesResponse)
LIST_STREAM = rpc(_SERVICE, "ListStream", pb.ListImagesRequest, pb.ListImagesResponse)
INSPECT = rpc(_SERVICE, "Inspect", pb.InspectImageRequest, pb.InspectImageResponse)
TAG = rpc(_SERVICE, "Tag", pb.TagImageRequest, pb.TagImageResponse)
REMOVE = rpc(_SERVICE, "Remove", pb.RemoveImageRequest, pb.RemoveImageResponse)
PRUNE = rpc(_SERVICE, "Prune", pb.PruneImagesRequest, pb.PruneImagesResponse)
DISK_USAGE = rpc(_SERVICE, "DiskUsage", pb.ImagesDiskUsageRequest, pb.ImagesDiskUsageResponse)
SAVE = rpc(_SERVICE, "Save", pb.SaveImagesRequest, pb.SaveImagesResponse)
LOAD = rpc(_SERVICE, "Load", pb.LoadImagesRequest, pb.LoadImagesResponse)
IMPORT = rpc(_SERVICE, "Import", pb.ImportImageRequest, pb.ImportImageResponse)

ARCHIVE_FORMATS = {"docker": pb.ARCHIVE_FORMAT_DOCKER, "oci": pb.ARCHIVE_FORMAT_OCI}


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str
    chain_id: str


@dataclass(frozen=True)
class Image:
    id: str
    digest: str
    names: tuple[str, ...]
    media_type: str
    platform: str
    size: int
    content_size: int
    created: str | None  # ISO 8601 with +00:00; None when the config has no date
    index_digest: str | None
    in_use: bool
    layers: tuple[Layer, ...]


@dataclass(frozen=True)
class ImageDetails:
    image: Image
    config: JsonValue  # the image config, as JSON
    manifest: JsonValue


@dataclass(frozen=True)
class Removed:
    """What a remove or prune did."""

    untagged: tuple[str, ...]
    deleted: tuple[str, ...]
    reclaimed_bytes: int


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
    partial_size: int  # partial downloads and temp files of loads, builds, commits


@dataclass(frozen=True)
class Loaded:
    images: tuple[Image, ...]
    warnings: tuple[str, ...]


class ImagesApi:
    """Typed calls to one agent's Images service (the store side)."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def list(self) -> builtins.list[Image]:
        pages = self.client.paged(LIST_STREAM, LIST, pb.ListImagesRequest())
        return [image(i) async for page in pages for i in page.images]

    async def inspect(self, reference: str) -> ImageDetails:
        r = await self.client.unary(INSPECT, pb.InspectImageRequest(reference=reference))
        return ImageDetails(image(r.image), json.loads(r.config_json), json.loads(r.manifest_json))

    async def tag(self, source: str, target: str) -> Image:
        r = await self.client.unary(TAG, pb.TagImageRequest(source=source, target=target))
        return image(r.image)

    async def remove(self, reference: str, *, force: bool = False) -> Removed:
        r = await self.client.unary(REMOVE, pb.RemoveImageRequest(reference=reference, force=force))
        return Removed(tuple(r.untagged), tuple(r.deleted), r.reclaimed_bytes)

    async def prune(self, *, all_unused: bool = False) -> Removed:
        """Dangling images (every unused one with `all_unused`) and content nothing references."""
        r = await self.client.unary(PRUNE, pb.PruneImagesRequest(all=all_unused), timeout=None)
        return Removed(tuple(r.untagged), tuple(r.deleted), r.reclaimed_bytes)

    async def disk_usage(self) -> DiskUsage:
        r = await self.client.unary(DISK_USAGE, pb.ImagesDiskUsageRequest())
        return DiskUsage(
            images=r.images,
            images_active=r.images_active,
            images_size=r.images_size,
            images_reclaimable=r.images_reclaimable,
            snapshots=r.snapshots,
            snapshots_size=r.snapshots_size,
            content_blobs=r.content_blobs,
            content_size=r.content_size,
            partial_size=r.ingest_size,
        )

    async def save(self, references: Sequence[str], archive_format: str = "docker") -> AsyncIterator[bytes]:
        """The images as one archive (`archive_format`: a key of ARCHIVE_FORMATS), in chunks."""
        request = pb.SaveImagesRequest(references=list(references), format=ARCHIVE_FORMATS[archive_format])
        async for msg in self.client.server_stream(SAVE, request):
            yield msg.chunk

    async def load(self, archive: AsyncIterable[bytes]) -> Loaded:
        """Load a docker-archive or OCI archive (possibly compressed) read from `archive`."""

        async def requests() -> AsyncIterator[pb.LoadImagesRequest]:
            async for chunk in archive:
                yield pb.LoadImagesRequest(chunk=chunk)

        r = await self.client.client_stream(LOAD, requests())
        return Loaded(tuple(image(i) for i in r.images), tuple(r.warnings))

    async def import_rootfs(
        self,
        rootfs: AsyncIterable[bytes],
        *,
        reference: str = "",
        changes: Sequence[str] = (),
        message: str = "",
    ) -> Image:
        """An image of one layer from a root filesystem tarball, with Dockerfile `changes` applied."""

        async def requests() -> AsyncIterator[pb.ImportImageRequest]:
            yield pb.ImportImageRequest(reference=reference, changes=changes, message=message)
            async for chunk in rootfs:
                yield pb.ImportImageRequest(chunk=chunk)

        return image((await self.client.client_stream(IMPORT, requests())).image)


def image(img: pb.Image) -> Image:
    """The dataclass of a proto Image (also used for the images pull and build report)."""
    return Image(
        id=img.id,
        digest=img.digest,
        names=tuple(img.names),
        media_type=img.media_type,
        platform=img.platform,
        size=img.size,
        content_size=img.content_size,
        created=img.created.ToDatetime(tzinfo=UTC).isoformat() if img.HasField("created") else None,
        index_digest=img.index_digest or None,
        in_use=img.in_use,
        layers=tuple(
            Layer(layer.digest, layer.media_type, layer.size, layer.diff_id, layer.chain_id)
            for layer in img.layers
        ),
    )
