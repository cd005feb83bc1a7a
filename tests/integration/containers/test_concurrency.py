"""Many containers at once, and many in a row: no collisions, nothing left behind."""

from __future__ import annotations

import asyncio
import json

import pytest

from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from tests.integration.containers.conftest import (
    IMAGE,
    Yard,
    assert_nothing_left,
    config,
    remove_many,
    start_many,
)

pytestmark = pytest.mark.root


def test_30_containers_created_and_started_in_parallel(yard: Yard) -> None:
    ids = asyncio.run(start_many(yard, [config(IMAGE, "sleep", "600") for _ in range(30)]))
    try:
        assert len(ids) == 30 and len(set(ids)) == 30 and all(len(i) == 64 for i in ids)
        listed = {c["id"]: c for c in json.loads(yard.ok("--format", "json", "ps"))}
        assert set(ids) <= set(listed)
        assert all(listed[i]["status"] == "running" for i in ids)
        names = [listed[i]["name"] for i in ids]
        assert len(set(names)) == 30
        pids = [listed[i]["pid"] for i in ids]
        assert len(set(pids)) == 30 and all(p > 0 for p in pids)
    finally:
        asyncio.run(remove_many(yard, ids))
    assert_nothing_left(yard)


async def _cycles(yard: Yard, n: int, parallel: int) -> list[str]:
    slots = asyncio.Semaphore(parallel)
    seen: list[str] = []
    async with yard.channel() as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)

        async def cycle(i: int) -> None:
            async with slots:
                r = await stub.Create(pb.CreateContainerRequest(config=config(IMAGE, "sleep", "600")))
                seen.append(r.id)
                if i % 2 == 0:  # half of them run before they are removed (forced)
                    await stub.Start(pb.StartContainerRequest(container=r.id))
                await stub.Remove(pb.RemoveContainerRequest(container=r.id, force=True))

        await asyncio.gather(*(cycle(i) for i in range(n)))
    return seen


def test_200_create_rm_cycles_leave_no_mounts_cgroups_or_processes(yard: Yard) -> None:
    seen = asyncio.run(_cycles(yard, 200, 4))
    assert len(set(seen)) == 200
    assert_nothing_left(yard)
    assert list((yard.data_root / "run" / "s").iterdir()) == []  # conmon's socket links
    assert yard.ok("ps", "-aq") == ""
