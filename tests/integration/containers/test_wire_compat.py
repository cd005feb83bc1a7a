"""An older controller sends run options only as strings ("512m", "1.5", "30s", "KEY=VALUE" filters); a newer
one adds typed fields. A real agent must make the same container of either, and list the same for either
form of `ps` filters. The requests here are built from the raw stubs, as each controller would send them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

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

SHARED: dict[str, Any] = {
    "health_cmd": "true",
    "health_retries": 2,
    "tmpfs": ["/scratch:size=8m"],
    "volumes": ["/tmp:/host-tmp:ro"],
}
# what an older controller sends: the user's strings only
OLD: dict[str, Any] = {
    "memory": "64m",
    "memory_swap": "128m",
    "cpus": "1.5",
    "health_interval": "1m30s",
    "health_timeout": "500ms",
    "health_start_period": "2s",
    "stop_timeout": 7,
}


def _duration(ns: int) -> Duration:
    d = Duration()
    d.FromNanoseconds(ns)
    return d


# the same values in the typed fields only (a newer controller also keeps the strings, which then lose)
TYPED: dict[str, Any] = {
    "memory_bytes": 64 << 20,
    "memory_swap_bytes": 128 << 20,
    "nano_cpus": 1_500_000_000,
    "health_interval_duration": _duration(90 * 10**9),
    "health_timeout_duration": _duration(500_000_000),
    "health_start_period_duration": _duration(2 * 10**9),
    "stop_timeout_duration": _duration(6_200_000_000),  # whole seconds: rounded up to 7
}


async def _create_and_inspect(yard: Yard, cfgs: dict[str, pb.ContainerConfig]) -> dict[str, pb.Container]:
    async with yard.channel() as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        out: dict[str, pb.Container] = {}
        for name, cfg in cfgs.items():
            cfg.name = name
            created = await stub.Create(pb.CreateContainerRequest(config=cfg))
            inspected = await stub.Inspect(pb.InspectContainerRequest(container=created.id))
            out[name] = inspected.container
        return out


async def _listed(yard: Yard, request: pb.ListContainersRequest) -> list[str]:
    async with yard.channel() as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        return sorted(c.name for c in (await stub.List(request)).containers)


def _comparable(c: pb.Container) -> tuple[dict[str, Any], dict[str, Any], list[tuple[Any, ...]]]:
    options = json.loads(c.config_json)
    options.pop("name")
    resources = json.loads(c.spec_json)["linux"]["resources"]
    mounts = [(m.type, m.mount_type, m.source, m.destination, m.read_only) for m in c.mounts]
    return options, resources, mounts


def test_string_fields_alone_make_the_same_container_as_typed_fields(yard: Yard) -> None:
    cfgs = {
        "compat-old": config(IMAGE, "sleep", "600", **SHARED, **OLD),
        "compat-new": config(IMAGE, "sleep", "600", **SHARED, **TYPED),
        # a newer controller sends both; a string the agent would refuse shows that it is not read
        "compat-both": config(
            IMAGE, "sleep", "600", **SHARED, **TYPED, memory="not a size", cpus="x", stop_timeout=-3
        ),
    }
    made = asyncio.run(_create_and_inspect(yard, cfgs))
    try:
        old, new, both = (_comparable(made[n]) for n in ("compat-old", "compat-new", "compat-both"))
        assert new == old and both == old
        options, resources, mounts = old
        assert (options["memory"], options["memory_swap"], options["cpus"]) == (64 << 20, 128 << 20, 1.5)
        assert options["health"]["interval_s"] == 90 and options["health"]["timeout_s"] == 0.5
        assert options["health"]["start_period_s"] == 2
        assert options["stop_timeout"] == 7
        assert resources["memory"]["limit"] == 64 << 20 and resources["memory"]["swap"] == 128 << 20
        assert resources["cpu"]["quota"] == 150000 and resources["cpu"]["period"] == 100000
        assert sorted((m[0], m[1]) for m in mounts) == [
            ("bind", pb.MOUNT_TYPE_BIND),
            ("tmpfs", pb.MOUNT_TYPE_TMPFS),
        ]
    finally:
        asyncio.run(remove_many(yard, [c.id for c in made.values()]))
    assert_nothing_left(yard)


CLI_FLAGS = [
    "--network", "none", "--health-cmd", "true", "--health-retries", "2", "--tmpfs", "/scratch:size=8m",
    "-v", "/tmp:/host-tmp:ro", "-m", "64m", "--memory-swap", "128m", "--cpus", "1.5",
    "--health-interval", "1m30s", "--health-timeout", "500ms", "--health-start-period", "2s",
    "--stop-timeout", "7",
]  # fmt: skip


def test_the_cli_makes_the_same_container_as_an_older_controller(yard: Yard) -> None:
    made = asyncio.run(
        _create_and_inspect(yard, {"compat-strings": config(IMAGE, "sleep", "600", **SHARED, **OLD)})
    )
    cid = yard.ok("create", "--name", "compat-cli", *CLI_FLAGS, IMAGE, "sleep", "600").strip()
    try:

        async def inspect() -> pb.Container:
            async with yard.channel() as ch:
                stub = containers_pb2_grpc.ContainersStub(ch)
                return (await stub.Inspect(pb.InspectContainerRequest(container=cid))).container

        assert _comparable(asyncio.run(inspect())) == _comparable(made["compat-strings"])
    finally:
        asyncio.run(remove_many(yard, [cid, made["compat-strings"].id]))
    assert_nothing_left(yard)


def test_ps_filters_as_strings_or_pairs_list_the_same(yard: Yard) -> None:
    cfgs = {
        "filter-a": config(IMAGE, "true", labels={"tier": "web", "team": "x"}),
        "filter-b": config(IMAGE, "true", labels={"tier": "db"}),
        "filter-c": config(IMAGE, "true"),
    }
    made = asyncio.run(_create_and_inspect(yard, cfgs))
    try:
        cases = [
            (["label=tier"], ["filter-a", "filter-b"]),
            (["label=tier=web", "label=team"], ["filter-a"]),
            (["name=filter-b", "name=filter-c"], ["filter-b", "filter-c"]),
            (["status=created", "label=tier=db"], ["filter-b"]),
        ]
        for strings, expected in cases:
            pairs = [pb.ContainerFilter(key=k, value=v) for k, _, v in (s.partition("=") for s in strings)]
            old = asyncio.run(_listed(yard, pb.ListContainersRequest(all=True, filters=strings)))
            new = asyncio.run(_listed(yard, pb.ListContainersRequest(all=True, filter_pairs=pairs)))
            assert old == new == expected, strings
    finally:
        asyncio.run(remove_many(yard, [c.id for c in made.values()]))
    assert_nothing_left(yard)


def test_a_stop_with_only_the_duration_waits_that_long_before_sigkill(yard: Yard) -> None:
    """An older controller sends Stop's timeout as an int, a newer one also as a Duration; an agent that
    read only the int would give this TERM-ignoring container the default 10 s instead of 1 s."""
    cfg = config(IMAGE, "sh", "-c", 'trap "" TERM; sleep 1000', name="compat-stop")
    [cid] = asyncio.run(start_many(yard, [cfg]))

    async def stop() -> tuple[list[grpc.aio.AioRpcError], pb.Container, float]:
        async with yard.channel() as ch:
            stub = containers_pb2_grpc.ContainersStub(ch)
            refused = []
            for bad in (
                pb.StopContainerRequest(container=cid, timeout=-1),
                pb.StopContainerRequest(container=cid, timeout_duration=_duration(-500_000_000)),
            ):
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await stub.Stop(bad)
                refused.append(info.value)
            began = time.monotonic()
            reply = await stub.Stop(pb.StopContainerRequest(container=cid, timeout_duration=_duration(10**9)))
            return refused, reply.container, time.monotonic() - began

    try:
        refused, stopped, elapsed = asyncio.run(stop())
        for err in refused:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert err.details() == "the stop timeout must not be negative"
        assert stopped.status == pb.CONTAINER_STATUS_EXITED
        assert stopped.exit_code == 137  # SIGKILL: the TERM was ignored
        assert 0.9 <= elapsed < 8, elapsed  # the 1 s grace, not the 10 s default
    finally:
        asyncio.run(remove_many(yard, [cid]))
    assert_nothing_left(yard)
