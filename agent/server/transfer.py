"""The Transfer servicer: validate → TransferManager → convert to agent.api.v1 messages. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc

from agent.api.v1 import transfer_pb2 as pb
from agent.api.v1 import transfer_pb2_grpc
from agent.errors import InvalidArgument
from agent.images.manager import ImageManager
from agent.images.store import ImageRecord
from agent.server import permissions
from agent.server.images import image_message
from agent.server.requests import data_chunks, first_message
from agent.transfer.blobs import Blob
from agent.transfer.commit import CommitOptions
from agent.transfer.manager import TransferManager


class TransferServicer(transfer_pb2_grpc.TransferServicer):
    def __init__(self, manager: TransferManager, images: ImageManager) -> None:
        self._m = manager
        self._images = images

    def _image(self, record: ImageRecord) -> Any:
        return image_message(
            record, self._images.names_of(record.digest), self._images.is_in_use(record.digest)
        )

    async def DescribeImage(
        self, request: pb.DescribeImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.DescribeImageResponse:
        if not request.reference:
            raise InvalidArgument("an image reference is required")
        found = await asyncio.to_thread(self._m.blobs.describe, request.reference)
        return pb.DescribeImageResponse(
            manifest_digest=found.record.digest,
            blobs=[
                pb.BlobDescriptor(digest=b.digest, size=b.size, media_type=b.media_type) for b in found.blobs
            ],
            names=list(found.names),
            image=self._image(found.record),
        )

    async def CheckBlobs(
        self, request: pb.CheckBlobsRequest, context: grpc.aio.ServicerContext
    ) -> pb.CheckBlobsResponse:
        states = await asyncio.to_thread(
            self._m.blobs.check, [Blob(b.digest, b.size, b.media_type) for b in request.blobs]
        )
        return pb.CheckBlobsResponse(
            blobs=[pb.BlobStatus(digest=s.digest, present=s.present, offset=s.offset) for s in states]
        )

    async def ReadBlob(
        self, request: pb.ReadBlobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ReadBlobResponse]:
        async for chunk in await self._m.blobs.read(request.digest, request.offset):
            yield pb.ReadBlobResponse(data=chunk)

    async def WriteBlob(
        self, request_iterator: AsyncIterator[pb.WriteBlobRequest], context: grpc.aio.ServicerContext
    ) -> pb.WriteBlobResponse:
        header = await first_message(request_iterator, "header")
        result = await self._m.blobs.write(
            header.digest, header.size, header.offset, data_chunks(request_iterator)
        )
        return pb.WriteBlobResponse(
            digest=result.digest, received=result.received, already_present=result.already_present
        )

    async def RegisterImage(
        self, request: pb.RegisterImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.RegisterImageResponse:
        record = await self._m.blobs.register(request.manifest_digest, list(request.names))
        return pb.RegisterImageResponse(image=self._image(record))

    async def Commit(self, request: pb.CommitRequest, context: grpc.aio.ServicerContext) -> pb.CommitResponse:
        if not request.container:
            raise InvalidArgument("a container is required")
        result = await self._m.committer.commit(
            request.container,
            CommitOptions(
                reference=request.reference,
                message=request.message,
                author=request.author,
                changes=tuple(request.changes),
                pause=not request.no_pause,
            ),
        )
        layer = result.layer
        return pb.CommitResponse(
            image=self._image(result.record),
            layer=pb.BlobDescriptor(digest=layer.digest, size=layer.size, media_type=layer.media_type),
        )

    async def ExportVolume(
        self, request: pb.ExportVolumeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExportVolumeResponse]:
        async for chunk in await self._m.volumes.export(request.name):
            yield pb.ExportVolumeResponse(data=chunk)

    async def ImportVolume(
        self, request_iterator: AsyncIterator[pb.ImportVolumeRequest], context: grpc.aio.ServicerContext
    ) -> pb.ImportVolumeResponse:
        header = await first_message(request_iterator, "header")
        total, created = await self._m.volumes.import_(
            header.name, dict(header.labels), header.anonymous, data_chunks(request_iterator)
        )
        return pb.ImportVolumeResponse(name=header.name, bytes=total, created=created)

    async def Recreate(
        self, request: pb.RecreateContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RecreateContainerResponse:
        rec = await self._m.recreate(request.config_json, request.image, permissions.check_run_options)
        return pb.RecreateContainerResponse(id=rec.id, name=rec.name)
