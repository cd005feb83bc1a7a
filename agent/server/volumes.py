"""The Volumes servicer: validate → VolumeManager → convert. Nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent import limits
from agent.api.v1 import volumes_pb2 as pb
from agent.api.v1 import volumes_pb2_grpc
from agent.containers.volumes import Volume, VolumeManager
from agent.errors import InvalidArgument
from agent.server import paging


def volume_message(v: Volume, users: list[str]) -> pb.Volume:
    created = Timestamp()
    created.FromDatetime(v.created_at)
    return pb.Volume(
        name=v.name,
        driver=v.driver,
        mountpoint=str(v.mountpoint),
        created=created,
        labels=v.labels,
        anonymous=v.anonymous,
        used_by=users,
    )


class VolumesServicer(volumes_pb2_grpc.VolumesServicer):
    def __init__(self, volumes: VolumeManager) -> None:
        self._v = volumes

    def _msg(self, v: Volume) -> pb.Volume:
        return volume_message(v, self._v.users_of(v.name))

    async def Create(
        self, request: pb.CreateVolumeRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateVolumeResponse:
        limits.check_name_length(request.name, "volume name")
        limits.check_labels(request.labels)
        vol = await asyncio.to_thread(self._v.create, request.name, dict(request.labels))
        return pb.CreateVolumeResponse(volume=self._msg(vol))

    async def List(
        self, request: pb.ListVolumesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVolumesResponse:
        return pb.ListVolumesResponse(volumes=[self._msg(v) for v in self._v.list_volumes()])

    async def ListStream(
        self, request: pb.ListVolumesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListVolumesResponse]:
        for page in paging.pages(self._msg(v) for v in self._v.list_volumes()):
            yield pb.ListVolumesResponse(volumes=page)

    async def Inspect(
        self, request: pb.InspectVolumeRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectVolumeResponse:
        if not request.name:
            raise InvalidArgument("a volume name is required")
        return pb.InspectVolumeResponse(volume=self._msg(self._v.get(request.name)))

    async def Remove(
        self, request: pb.RemoveVolumeRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveVolumeResponse:
        if not request.name:
            raise InvalidArgument("a volume name is required")
        await asyncio.to_thread(self._v.remove, request.name, force=request.force)
        return pb.RemoveVolumeResponse()

    async def Prune(
        self, request: pb.PruneVolumesRequest, context: grpc.aio.ServicerContext
    ) -> pb.PruneVolumesResponse:
        return pb.PruneVolumesResponse(removed=await asyncio.to_thread(self._v.prune))
