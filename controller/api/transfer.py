"""The Transfer service: images as blobs between agents (describe, check, read, write, register),
commit, volume export/import and recreating a container from its stored configuration."""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass

from agent.api.v1 import transfer_pb2 as pb
from controller.api import JsonValue
from controller.api.trust import Signature
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Transfer"]
DESCRIBE_IMAGE = rpc(_SERVICE, "DescribeImage", pb.DescribeImageRequest, pb.DescribeImageResponse)
CHECK_BLOBS = rpc(_SERVICE, "CheckBlobs", pb.CheckBlobsRequest, pb.CheckBlobsResponse)
READ_BLOB = rpc(_SERVICE, "ReadBlob", pb.ReadBlobRequest, pb.ReadBlobResponse)
WRITE_BLOB = rpc(_SERVICE, "WriteBlob", pb.WriteBlobRequest, pb.WriteBlobResponse)
REGISTER_IMAGE = rpc(_SERVICE, "RegisterImage", pb.RegisterImageRequest, pb.RegisterImageResponse)
COMMIT = rpc(_SERVICE, "Commit", pb.CommitRequest, pb.CommitResponse)
EXPORT_VOLUME = rpc(_SERVICE, "ExportVolume", pb.ExportVolumeRequest, pb.ExportVolumeResponse)
IMPORT_VOLUME = rpc(_SERVICE, "ImportVolume", pb.ImportVolumeRequest, pb.ImportVolumeResponse)
RECREATE = rpc(_SERVICE, "Recreate", pb.RecreateContainerRequest, pb.RecreateContainerResponse)


@dataclass(frozen=True)
class Blob:
    digest: str
    size: int
    media_type: str = ""

    @property
    def short(self) -> str:
        return self.digest.split(":", 1)[-1][:12]


@dataclass(frozen=True)
class ImagePlan:
    """An image as blobs (layers, config, manifest last) and the names it gets on the targets."""

    manifest_digest: str
    blobs: tuple[Blob, ...]
    names: tuple[str, ...]
    image_id: str = ""
    signatures: tuple[Signature, ...] = ()  # the source's cosign signatures of the image, sent after it

    @property
    def unique_blobs(self) -> list[Blob]:
        """Each blob once (an image may list the same layer twice, e.g. empty ones)."""
        return list({b.digest: b for b in self.blobs}.values())

    @property
    def size(self) -> int:
        return sum(b.size for b in self.unique_blobs)


@dataclass(frozen=True)
class BlobState:
    present: bool
    offset: int  # bytes of a partial blob the agent kept (a send resumes there)


@dataclass(frozen=True)
class ImageName:
    """An image an operation made or registered: its ID and names."""

    id: str
    digest: str
    names: tuple[str, ...]


@dataclass(frozen=True)
class Committed:
    image: ImageName
    layer_digest: str
    layer_size: int


@dataclass(frozen=True)
class ImportedVolume:
    name: str
    bytes: int  # file data written
    created: bool  # False: it existed and was filled


@dataclass(frozen=True)
class Recreated:
    id: str
    name: str


class TransferApi:
    """Typed calls to one agent's Transfer service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def describe_image(self, reference: str) -> ImagePlan:
        r = await self.client.unary(DESCRIBE_IMAGE, pb.DescribeImageRequest(reference=reference))
        return ImagePlan(
            manifest_digest=r.manifest_digest,
            blobs=tuple(Blob(b.digest, b.size, b.media_type) for b in r.blobs),
            names=tuple(r.names),
            image_id=r.image.id,
        )

    async def check_blobs(self, blobs: Sequence[Blob]) -> dict[str, BlobState]:
        """For each blob's digest: whether the agent has it, or how much of it."""
        request = pb.CheckBlobsRequest(
            blobs=[pb.BlobDescriptor(digest=b.digest, size=b.size, media_type=b.media_type) for b in blobs]
        )
        r = await self.client.unary(CHECK_BLOBS, request)
        return {s.digest: BlobState(s.present, s.offset) for s in r.blobs}

    async def read_blob(self, digest: str, offset: int = 0) -> AsyncIterator[bytes]:
        async for msg in self.client.server_stream(
            READ_BLOB, pb.ReadBlobRequest(digest=digest, offset=offset)
        ):
            yield msg.data

    async def write_blob(self, blob: Blob, offset: int, data: AsyncIterable[bytes]) -> int:
        """Write `blob` from `offset` on with the bytes of `data`; how many bytes the agent received."""

        async def requests() -> AsyncIterator[pb.WriteBlobRequest]:
            yield pb.WriteBlobRequest(
                header=pb.WriteBlobHeader(digest=blob.digest, size=blob.size, offset=offset)
            )
            async for chunk in data:
                yield pb.WriteBlobRequest(data=chunk)

        return (await self.client.client_stream(WRITE_BLOB, requests())).received

    async def register_image(self, manifest_digest: str, names: Sequence[str]) -> ImageName:
        """Make the image of a manifest whose blobs are all there, with `names`."""
        request = pb.RegisterImageRequest(manifest_digest=manifest_digest, names=list(names))
        r = await self.client.unary(REGISTER_IMAGE, request, timeout=None)
        return ImageName(r.image.id, r.image.digest, tuple(r.image.names))

    async def commit(
        self,
        container: str,
        *,
        reference: str = "",
        message: str = "",
        author: str = "",
        changes: Sequence[str] = (),
        pause: bool = True,
    ) -> Committed:
        request = pb.CommitRequest(
            container=container,
            reference=reference,
            message=message,
            author=author,
            changes=list(changes),
            no_pause=not pause,
        )
        r = await self.client.unary(COMMIT, request, timeout=None)
        return Committed(
            ImageName(r.image.id, r.image.digest, tuple(r.image.names)), r.layer.digest, r.layer.size
        )

    async def export_volume(self, name: str) -> AsyncIterator[bytes]:
        """The volume's files as a tar stream."""
        async for msg in self.client.server_stream(EXPORT_VOLUME, pb.ExportVolumeRequest(name=name)):
            yield msg.data

    async def import_volume(
        self, name: str, tar: AsyncIterable[bytes], *, labels: Mapping[str, str], anonymous: bool
    ) -> ImportedVolume:
        """Fill volume `name` (made if missing, with `labels`) from a tar stream."""

        async def requests() -> AsyncIterator[pb.ImportVolumeRequest]:
            header = pb.ImportVolumeHeader(name=name, labels=dict(labels), anonymous=anonymous)
            yield pb.ImportVolumeRequest(header=header)
            async for chunk in tar:
                yield pb.ImportVolumeRequest(data=chunk)

        r = await self.client.client_stream(IMPORT_VOLUME, requests())
        return ImportedVolume(r.name, r.bytes, r.created)

    async def recreate(self, config: JsonValue, image: str) -> Recreated:
        """A container made from another's stored configuration (`Container.config`), on `image`."""
        request = pb.RecreateContainerRequest(config_json=json.dumps(config), image=image)
        r = await self.client.unary(RECREATE, request, timeout=None)
        return Recreated(r.id, r.name)
