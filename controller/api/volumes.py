"""The Volumes service: named volumes on one agent."""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass

from agent.api.v1 import volumes_pb2 as pb
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Volumes"]
CREATE = rpc(_SERVICE, "Create", pb.CreateVolumeRequest, pb.CreateVolumeResponse)
LIST = rpc(_SERVICE, "List", pb.ListVolumesRequest, pb.ListVolumesResponse)
LIST_STREAM = rpc(_SERVICE, "ListStream", pb.ListVolumesRequest, pb.ListVolumesResponse)
INSPECT = rpc(_SERVICE, "Inspect", pb.InspectVolumeRequest, pb.InspectVolumeResponse)
REMOVE = rpc(_SERVICE, "Remove", pb.RemoveVolumeRequest, pb.RemoveVolumeResponse)
PRUNE = rpc(_SERVICE, "Prune", pb.PruneVolumesRequest, pb.PruneVolumesResponse)


@dataclass(frozen=True)
class Volume:
    name: str
    driver: str
    mountpoint: str
    created: str  # ISO 8601, UTC, with a Z
    labels: dict[str, str]
    anonymous: bool
    used_by: tuple[str, ...]  # ids of the containers that mount it


class VolumesApi:
    """Typed calls to one agent's Volumes service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def create(self, name: str = "", labels: Mapping[str, str] | None = None) -> Volume:
        """Create a volume (the agent picks a random name for "")."""
        r = await self.client.unary(CREATE, pb.CreateVolumeRequest(name=name, labels=dict(labels or {})))
        return _volume(r.volume)

    async def list(self) -> list[Volume]:
        return [
            _volume(v)
            async for page in self.client.paged(LIST_STREAM, LIST, pb.ListVolumesRequest())
            for v in page.volumes
        ]

    async def inspect(self, name: str) -> Volume:
        r = await self.client.unary(INSPECT, pb.InspectVolumeRequest(name=name))
        return _volume(r.volume)

    async def remove(self, name: str, *, force: bool = False) -> None:
        await self.client.unary(REMOVE, pb.RemoveVolumeRequest(name=name, force=force))

    async def prune(self) -> builtins.list[str]:
        """Remove every volume no container uses; the names removed."""
        r = await self.client.unary(PRUNE, pb.PruneVolumesRequest())
        return list(r.removed)


def _volume(v: pb.Volume) -> Volume:
    return Volume(
        name=v.name,
        driver=v.driver,
        mountpoint=v.mountpoint,
        created=v.created.ToDatetime().isoformat() + "Z",
        labels=dict(v.labels),
        anonymous=v.anonymous,
        used_by=tuple(v.used_by),
    )
