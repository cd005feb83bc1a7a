"""Bounds on what a caller may store (labels, argv, env, hostnames, names) and lists that no record can
break: against a real agent, through the CLI and through raw gRPC clients with gRPC's default limits."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc, volumes_pb2, volumes_pb2_grpc
from tests.integration.containers.conftest import IMAGE, Yard, assert_nothing_left, config

pytestmark = pytest.mark.root

KiB, MiB = 1 << 10, 1 << 20


def _default_channel(yard: Yard) -> grpc.aio.Channel:
    """A client as other programs make one: gRPC's default 4 MiB receive limit."""
    return grpc.aio.insecure_channel(f"unix:{yard.agent.socket}")


async def _create_error(yard: Yard, cfg: pb.ContainerConfig) -> grpc.aio.AioRpcError:
    async with _default_channel(yard) as ch:
        stub = containers_pb2_grpc.ContainersStub(ch)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Create(pb.CreateContainerRequest(config=cfg))
        return info.value


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"labels": {"big": "x" * (12 * MiB)}},
            "--label 'big': the value is 12582912 bytes, over the limit of 64 KiB",
        ),
        (
            {"labels": {f"k{i}": "x" * (60 * KiB) for i in range(5)}},
            "--label: the labels together is 307210 bytes, over the limit of 256 KiB",
        ),
        (
            {"env": ["BIG=" + "x" * (10 * MiB)]},
            "-e 'BIG': one argument is 10485764 bytes, over the limit of 128 KiB",
        ),
        (
            {"env": [f"V{i}=" + "x" * (100 * KiB) for i in range(100)]},
            "the command, entrypoint and environment together is",
        ),
    ],
    ids=["12MB-label", "labels-total", "10MB-env", "10MB-env-total"],
)
def test_records_over_the_bounds_are_refused_naming_field_and_limit(
    yard: Yard, fields: dict[str, object], message: str
) -> None:
    err = asyncio.run(_create_error(yard, config(IMAGE, "true", **fields)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
    assert message in (err.details() or ""), err.details()
    assert yard.ok("ps", "-aq") == ""
    assert_nothing_left(yard)


def test_a_10mb_argv_is_refused(yard: Yard) -> None:
    one = asyncio.run(_create_error(yard, config(IMAGE, "echo", "x" * (10 * MiB))))
    assert one.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the command: one argument is 10485760 bytes, over the limit of 128 KiB" in (one.details() or "")
    many = asyncio.run(_create_error(yard, config(IMAGE, "echo", *["x" * (100 * KiB)] * 100)))
    assert many.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "together is 10240105 bytes, over the limit of 1 MiB" in (many.details() or "")
    assert yard.ok("ps", "-aq") == ""


def test_a_label_over_the_bound_from_the_cli(yard: Yard) -> None:
    done = yard.cli("create", "-l", "note=" + "x" * (65 * KiB), IMAGE, "true")
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("error: ") and "over the limit of 64 KiB" in done.stderr, done.stderr
    assert yard.ok("ps", "-aq") == ""


def test_large_but_allowed_labels_on_many_containers_do_not_break_listing(yard: Yard) -> None:
    """20 containers × 250 KiB of labels: 5 MiB of records, past gRPC's default 4 MiB message limit."""
    labels = {f"blob{i}": f"{i}" * (62 * KiB) for i in range(4)}
    cfgs = [config(IMAGE, "true", name=f"lab{n}", labels=labels) for n in range(20)]

    async def create_all() -> list[str]:
        async with _default_channel(yard) as ch:
            stub = containers_pb2_grpc.ContainersStub(ch)
            return [(await stub.Create(pb.CreateContainerRequest(config=c))).id for c in cfgs]

    async def list_stream() -> list[pb.ListContainersResponse]:
        async with _default_channel(yard) as ch:
            stub = containers_pb2_grpc.ContainersStub(ch)
            return [page async for page in stub.ListStream(pb.ListContainersRequest(all=True))]

    ids = asyncio.run(create_all())
    try:
        pages = asyncio.run(list_stream())
        listed = [c for page in pages for c in page.containers]
        assert sorted(c.id for c in listed) == sorted(ids)
        assert all(dict(c.labels) == labels for c in listed)
        assert len(pages) > 1 and all(p.ByteSize() < 4 * MiB for p in pages)
        assert sum(p.ByteSize() for p in pages) > 4 * MiB
        out = yard.ok("ps", "-a", "--no-trunc")
        assert all(cid in out for cid in ids)
        assert sorted(yard.ok("ps", "-aq", "--no-trunc").split()) == sorted(ids)
    finally:
        yard.ok("rm", "-f", *ids)
    assert_nothing_left(yard)


HUGE = "9" * 23
LONG = "h" * 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["run", "--pids-limit", "99999999999999999999", IMAGE, "true"],
            "error: --pids-limit: 99999999999999999999 is out of range (max 9223372036854775807)",
        ),
        (
            ["run", "--pids-limit", "5000000", IMAGE, "true"],
            "--pids-limit: 5000000 is out of range (max 4194304)",
        ),
        (
            ["run", "--stop-timeout", "99999999999", IMAGE, "true"],
            "error: --stop-timeout: 99999999999 is out of range (max 2147483647)",
        ),
        (
            ["run", "--health-retries", "99999999999", IMAGE, "true"],
            "error: --health-retries: 99999999999 is out of range (max 2147483647)",
        ),
        (
            ["run", "-c", "99999999999999999999", IMAGE, "true"],
            "error: --cpu-shares: 99999999999999999999 is out of range",
        ),
        (["run", "-c", "300000", IMAGE, "true"], "--cpu-shares 300000 is outside 2..262144"),
        (
            ["run", "-m", HUGE, IMAGE, "true"],
            f"invalid --memory value '{HUGE}': out of range (max 9223372036854775807 bytes)",
        ),
        (["run", "-h", LONG, IMAGE, "true"], "invalid --hostname 'hhhh"),
        (["run", "-v", f"{LONG}:/data", IMAGE, "true"], "-v volume name 'hhhh"),
        (["run", "--network-alias", "db\n10.0.0.9 bank", IMAGE, "true"], "invalid --network-alias 'db\\n10"),
        (["volume", "create", LONG], "volume name 'hhhh"),
        (["create", "--name", "n" * 200, IMAGE, "true"], "over the limit of 128"),
        (
            ["stop", "-t", "99999999999", "nothing"],
            "error: --time: 99999999999 is out of range (max 2147483647)",
        ),
        (
            ["logs", "--tail", "99999999999", "nothing"],
            "error: --tail: 99999999999 is out of range (max 2147483647)",
        ),
    ],
    ids=[
        "pids-limit",
        "pids-limit-kernel",
        "stop-timeout",
        "health-retries",
        "cpu-shares",
        "cpu-shares-kernel",
        "memory",
        "hostname",
        "volume-flag",
        "alias-newline",
        "volume-create",
        "name",
        "stop-time",
        "logs-tail",
    ],
)
def test_out_of_range_values_are_one_line_errors(yard: Yard, args: list[str], message: str) -> None:
    done = yard.cli(*args)
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr and "runc" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr
    assert yard.ok("ps", "-aq") == ""
    assert "hhhh" not in yard.ok("volume", "ls", "-q")


def test_volume_names_and_labels_are_bounded_over_grpc(yard: Yard) -> None:
    async def create(req: volumes_pb2.CreateVolumeRequest) -> grpc.aio.AioRpcError:
        async with _default_channel(yard) as ch:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await volumes_pb2_grpc.VolumesStub(ch).Create(req)
            return info.value

    err = asyncio.run(create(volumes_pb2.CreateVolumeRequest(name="v" * 129)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "over the limit of 128" in (err.details() or "")
    err = asyncio.run(create(volumes_pb2.CreateVolumeRequest(name="v", labels={"a": "b" * (12 * MiB)})))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "over the limit of 64 KiB" in (
        err.details() or ""
    )
    assert "v" not in yard.ok("volume", "ls", "-q").split()
