"""The Images servicer: validate → ImageManager → convert to agent.api.v1 messages. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import images_pb2, images_pb2_grpc
from agent.errors import InvalidArgument
from agent.images.manager import ImageManager
from agent.images.pull import LayerProgress, LayerState, PullEvent, PullResolved
from agent.images.push import BlobProgress, BlobState, PushFinished
from agent.images.store import ImageRecord
from agent.oci.platform import Platform
from agent.registry.auth import Credentials
from agent.server import paging

_FORMATS = {
    images_pb2.ARCHIVE_FORMAT_UNSPECIFIED: "docker",
    images_pb2.ARCHIVE_FORMAT_DOCKER: "docker",
    images_pb2.ARCHIVE_FORMAT_OCI: "oci",
}


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def image_message(record: ImageRecord, names: list[str], in_use: bool) -> images_pb2.Image:
    msg = images_pb2.Image(
        id=record.config_digest,
        digest=record.digest,
        names=names,
        media_type=record.media_type,
        platform=record.platform,
        size=record.size,
        content_size=record.content_size,
        index_digest=record.index_digest or "",
        in_use=in_use,
        stored_at=_ts(record.stored_at),
        layers=[
            images_pb2.ImageLayer(
                digest=layer.digest,
                media_type=layer.media_type,
                size=layer.size,
                diff_id=diff,
                chain_id=chain,
            )
            for layer, diff, chain in zip(record.layers, record.diff_ids, record.chain_ids, strict=False)
        ],
    )
    if record.created is not None:
        msg.created.CopyFrom(_ts(record.created))
    return msg


def _required(value: str, what: str) -> str:
    if not value:
        raise InvalidArgument(f"{what} is required")
    return value


class ImagesServicer(images_pb2_grpc.ImagesServicer):
    def __init__(self, images: ImageManager) -> None:
        self._images = images

    def _message(self, record: ImageRecord) -> images_pb2.Image:
        return image_message(
            record, self._images.names_of(record.digest), self._images.is_in_use(record.digest)
        )

    async def List(
        self, request: images_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.ListImagesResponse:
        found = await asyncio.to_thread(self._images.images)
        return images_pb2.ListImagesResponse(images=[image_message(r, n, u) for r, n, u in found])

    async def ListStream(
        self, request: images_pb2.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.ListImagesResponse]:
        found = await asyncio.to_thread(self._images.images)
        for page in paging.pages(image_message(r, n, u) for r, n, u in found):
            yield images_pb2.ListImagesResponse(images=page)

    async def Inspect(
        self, request: images_pb2.InspectImageRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.InspectImageResponse:
        ref = _required(request.reference, "image reference")
        record = self._images.get(ref)
        config, manifest = self._images.documents(record)
        return images_pb2.InspectImageResponse(
            image=self._message(record), config_json=config, manifest_json=manifest
        )

    async def Tag(
        self, request: images_pb2.TagImageRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.TagImageResponse:
        record = self._images.tag(
            _required(request.source, "source image"), _required(request.target, "target name")
        )
        return images_pb2.TagImageResponse(image=self._message(record))

    async def Remove(
        self, request: images_pb2.RemoveImageRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.RemoveImageResponse:
        result = await self._images.remove(
            _required(request.reference, "image reference"), force=request.force
        )
        return images_pb2.RemoveImageResponse(
            untagged=result.untagged, deleted=result.deleted, reclaimed_bytes=result.reclaimed
        )

    async def Prune(
        self, request: images_pb2.PruneImagesRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.PruneImagesResponse:
        result = await self._images.prune(all_unused=request.all)
        return images_pb2.PruneImagesResponse(
            deleted=result.deleted, untagged=result.untagged, reclaimed_bytes=result.reclaimed
        )

    async def DiskUsage(
        self, request: images_pb2.ImagesDiskUsageRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.ImagesDiskUsageResponse:
        du = await asyncio.to_thread(self._images.disk_usage)
        return images_pb2.ImagesDiskUsageResponse(
            images=du.images,
            images_active=du.images_active,
            images_size=du.images_size,
            images_reclaimable=du.images_reclaimable,
            snapshots=du.snapshots,
            snapshots_size=du.snapshots_size,
            content_blobs=du.content_blobs,
            content_size=du.content_size,
            ingest_size=du.ingest_size,
        )

    async def Save(
        self, request: images_pb2.SaveImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.SaveImagesResponse]:
        fmt = _FORMATS.get(request.format)
        if fmt is None:
            raise InvalidArgument(f"unknown archive format {request.format}")
        stream = await self._images.save(list(request.references), fmt)
        async for chunk in stream:
            yield images_pb2.SaveImagesResponse(chunk=chunk)

    async def Load(
        self,
        request_iterator: AsyncIterator[images_pb2.LoadImagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> images_pb2.LoadImagesResponse:
        async def chunks() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                yield message.chunk

        warnings: list[str] = []
        records = await self._images.load(chunks(), warnings.append)
        return images_pb2.LoadImagesResponse(images=[self._message(r) for r in records], warnings=warnings)

    async def Import(
        self,
        request_iterator: AsyncIterator[images_pb2.ImportImageRequest],
        context: grpc.aio.ServicerContext,
    ) -> images_pb2.ImportImageResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument("import needs a root filesystem tarball")

        async def chunks() -> AsyncIterator[bytes]:
            yield first.chunk
            async for message in request_iterator:
                yield message.chunk

        record = await self._images.import_rootfs(
            chunks(), first.reference, changes=list(first.changes), message=first.message
        )
        return images_pb2.ImportImageResponse(image=self._message(record))

    # ---- Pull, Push, CheckLogin ------------------------------------------------------------------------

    async def Pull(
        self, request: images_pb2.PullImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.PullImageResponse]:
        reference = _required(request.reference, "image reference")
        wanted = Platform.parse(request.platform) if request.platform else None
        events = self._images.pull(reference, platform=wanted, credentials=_credentials(request))
        async for event in events:
            yield _pull_message(event, self)

    async def Push(
        self, request: images_pb2.PushImageRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.PushImageResponse]:
        reference = _required(request.reference, "image reference")
        async for event in self._images.push(reference, credentials=_credentials(request)):
            if isinstance(event, PushFinished):
                finished = images_pb2.PushFinished(
                    reference=event.reference, digest=event.digest, uploaded_bytes=event.uploaded
                )
                yield images_pb2.PushImageResponse(finished=finished)
            else:
                yield images_pb2.PushImageResponse(progress=_progress(event.digest, event.state, event))

    async def CheckLogin(
        self, request: images_pb2.CheckLoginRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.CheckLoginResponse:
        registry = _required(request.registry, "registry")
        credentials = _credentials(request)
        if credentials is None:
            raise InvalidArgument("a username is required")
        await self._images.check_login(registry, credentials)
        return images_pb2.CheckLoginResponse()

    async def Resolve(
        self, request: images_pb2.ResolveImageRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.ResolveImageResponse:
        reference = _required(request.reference, "image reference")
        wanted = Platform.parse(request.platform) if request.platform else None
        r = await self._images.resolve(reference, platform=wanted, credentials=_credentials(request))
        return images_pb2.ResolveImageResponse(
            reference=r.reference,
            digest=r.digest,
            size=r.size,
            media_type=r.media_type,
            index_digest=r.index_digest or "",
            platform=r.platform,
        )


_TRANSFER_STATES = {
    LayerState.WAITING: images_pb2.TRANSFER_STATE_WAITING,
    LayerState.DOWNLOADING: images_pb2.TRANSFER_STATE_DOWNLOADING,
    LayerState.EXTRACTING: images_pb2.TRANSFER_STATE_EXTRACTING,
    LayerState.EXISTS: images_pb2.TRANSFER_STATE_EXISTS,
    LayerState.DONE: images_pb2.TRANSFER_STATE_DONE,
    BlobState.WAITING: images_pb2.TRANSFER_STATE_WAITING,
    BlobState.UPLOADING: images_pb2.TRANSFER_STATE_UPLOADING,
    BlobState.EXISTS: images_pb2.TRANSFER_STATE_EXISTS,
    BlobState.MOUNTED: images_pb2.TRANSFER_STATE_MOUNTED,
    BlobState.DONE: images_pb2.TRANSFER_STATE_DONE,
}


def _credentials(
    request: images_pb2.PullImageRequest
    | images_pb2.PushImageRequest
    | images_pb2.CheckLoginRequest
    | images_pb2.ResolveImageRequest,
) -> Credentials | None:
    if not request.HasField("credentials") or not request.credentials.username:
        return None
    return Credentials(request.credentials.username, request.credentials.password)


def _progress(
    digest: str, state: LayerState | BlobState, event: LayerProgress | BlobProgress
) -> images_pb2.TransferProgress:
    return images_pb2.TransferProgress(
        digest=digest, state=_TRANSFER_STATES[state], current=event.current, total=event.total
    )


def _pull_message(event: PullEvent, servicer: ImagesServicer) -> images_pb2.PullImageResponse:
    if isinstance(event, LayerProgress):
        return images_pb2.PullImageResponse(progress=_progress(event.digest, event.state, event))
    if isinstance(event, PullResolved):
        resolved = images_pb2.PullResolved(
            reference=event.reference,
            digest=event.digest,
            index_digest=event.index_digest or "",
            platform=event.platform,
            layers=[
                images_pb2.ImageLayer(digest=d.digest, media_type=d.media_type, size=d.size)
                for d in event.layers
            ],
        )
        return images_pb2.PullImageResponse(resolved=resolved)
    finished = images_pb2.PullFinished(
        image=servicer._message(event.record), downloaded_bytes=event.downloaded
    )
    return images_pb2.PullImageResponse(finished=finished)

