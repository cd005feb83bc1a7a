"""The bounds of agent/limits.py, where they are applied (run options, Dockerfile lines), and list paging."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent import limits
from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from agent.errors import InvalidArgument
from agent.oci.dockerfile import parse
from agent.oci.instructions import DockerfileError
from agent.runtime.options import check_name, parse_memory, parse_restart, parse_ulimit, parse_volume
from agent.server.containers import run_options
from agent.server.paging import pages
from controller.client import AgentClient
from controller.target import Target

KiB, MiB = limits.KiB, limits.MiB


def _config(**fields: object) -> pb.ContainerConfig:
    return pb.ContainerConfig(image="busybox", **fields)  # type: ignore[arg-type]


def test_labels_near_the_bounds_pass_and_over_them_name_field_and_bound() -> None:
    limits.check_labels({"k" * 1024: "v" * (64 * KiB)})
    limits.check_labels({f"k{i}": "v" * (60 * KiB) for i in range(4)})  # 240 KiB together
    with pytest.raises(InvalidArgument, match=r"--label 'big': the value is 65537 bytes.*64 KiB"):
        limits.check_labels({"big": "v" * (64 * KiB + 1)})
    with pytest.raises(InvalidArgument, match=r"--label: the key .* is 1025 bytes.*1 KiB"):
        limits.check_labels({"k" * 1025: ""})
    with pytest.raises(InvalidArgument, match=r"--label: the labels together .*256 KiB"):
        limits.check_labels({f"k{i}": "v" * (60 * KiB) for i in range(5)})
    with pytest.raises(InvalidArgument, match=r"^--label 'x': the value is \d+ bytes, over the limit"):
        run_options(_config(labels={"x": "y" * (12 * MiB)}))


def test_argv_and_env_are_bounded_per_string_and_in_total() -> None:
    run_options(_config(command=pb.StringList(values=["sh", "-c", "x" * (128 * KiB)])))
    with pytest.raises(InvalidArgument, match=r"the command: one argument is 10485760 bytes.*128 KiB"):
        limits.check_argv_env(["x" * (10 * MiB)], [], [])
    with pytest.raises(InvalidArgument, match=r"-e 'BIG': one argument .*128 KiB"):
        run_options(_config(env=["BIG=" + "x" * (200 * KiB)]))
    many = [f"V{i}=" + "x" * (100 * KiB) for i in range(11)]
    with pytest.raises(InvalidArgument, match=r"command, entrypoint and environment together .*1 MiB"):
        run_options(_config(env=many))
    with pytest.raises(InvalidArgument, match=r"the container config is \d+ bytes.*2 MiB"):
        run_options(_config(tmpfs=["/t" + "x" * (3 * MiB)]))


@pytest.mark.parametrize("name", ["box7", "my_host", "a.b-c.example", "x" * 63, "a" * 30 + "." + "b" * 33])
def test_hostnames_docker_users_pick_pass(name: str) -> None:
    limits.check_hostname(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("h" * 300, "300 characters, over the limit of 64"),
        ("x" * 64, "1-63"),
        ("bad\n10.0.0.1 evil", "1-63"),  # a newline would reach /etc/hosts
        ("-dash", "not starting or ending"),
        ("a..b", "1-63"),
    ],
)
def test_bad_hostnames_are_refused(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        run_options(_config(hostname=name))


def test_network_aliases_cannot_inject_lines_into_etc_hosts() -> None:
    opts = run_options(_config(network_aliases=["db", "db.internal.example"]))
    assert opts.network_aliases == ("db", "db.internal.example")
    with pytest.raises(InvalidArgument, match=r"invalid --network-alias 'db\\n10.0.0.9 bank'"):
        run_options(_config(network_aliases=["db\n10.0.0.9 bank"]))
    with pytest.raises(InvalidArgument, match="254 characters, over the limit of 253"):
        limits.check_network_alias(".".join(["a" * 63] * 3 + ["b" * 62]))


def test_names_are_bounded() -> None:
    assert check_name("c" * 128) == "c" * 128
    with pytest.raises(InvalidArgument, match=r"container name .*129 characters, over the limit of 128"):
        check_name("c" * 129)
    with pytest.raises(InvalidArgument, match=r"volume name .*300 characters, over the limit of 128"):
        parse_volume("v" * 300 + ":/data")


def test_numbers_out_of_range_are_refused_not_crashed() -> None:
    assert parse_memory(str(limits.INT64_MAX)) == limits.INT64_MAX
    assert parse_memory("1.5g") == 1536 * MiB
    for text in ("99999999999999999999999", "9" * 5000, "8589934592g"):
        with pytest.raises(
            InvalidArgument, match=r"invalid --memory value .*out of range \(max 9223372036854775807"
        ):
            parse_memory(text)
    with pytest.raises(InvalidArgument, match=r"out of range \(max 18446744073709551615 or -1\)"):
        parse_ulimit("nofile=18446744073709551616")
    with pytest.raises(InvalidArgument, match=r"out of range \(max 2147483647\)"):
        parse_restart("on-failure:" + "9" * 5000)
    with pytest.raises(InvalidArgument, match=r"^--pids-limit: 4194305 is out of range \(max 4194304\)$"):
        run_options(_config(pids_limit=4194305))
    with pytest.raises(InvalidArgument, match=r"^--stop-timeout: -1 is out of range \(min 0\)$"):
        run_options(_config(stop_timeout=-1))
    opts = run_options(_config(pids_limit=-1, stop_timeout=0))
    assert opts.pids_limit == -1 and opts.stop_timeout == 0


def test_a_huge_error_message_is_clipped_to_fit_a_trailer() -> None:
    assert limits.clip_message("short") == "short"
    clipped = limits.clip_message("x" * (10 * MiB))
    assert len(clipped) <= limits.ERROR_MESSAGE_CHARS and clipped.endswith("(10485760 characters in all)")


def test_a_dockerfile_line_over_the_bound_is_refused_with_its_line_number() -> None:
    ok = parse("FROM scratch\nLABEL a=" + "x" * (512 * KiB) + "\n")
    assert len(ok.stages) == 1
    continued = "FROM scratch\nRUN echo \\\n" + "".join("x" * 1000 + " \\\n" for _ in range(1100)) + "done\n"
    with pytest.raises(
        DockerfileError, match=r"Dockerfile line 2: the instruction is \d+ bytes, over the limit of 1 MiB"
    ):
        parse(continued)


def test_pages_stay_within_the_budget_and_a_big_record_travels_alone() -> None:
    small = [pb.Container(id=f"{i:064x}", labels={"k": "v" * 100}) for i in range(50)]
    big = pb.Container(id="b" * 64, labels={"k": "v" * 5000})
    got = list(pages([*small[:10], big, *small[10:]], budget=2000))
    assert [c.id for page in got for c in page] == [c.id for c in [*small[:10], big, *small[10:]]]
    assert [big] in got
    for page in got:
        if page != [big]:
            assert pb.ListContainersResponse(containers=page).ByteSize() <= 2000
    assert list(pages([], budget=2000)) == []


async def _list_via_pages(tmp_path: Path, servicer: containers_pb2_grpc.ContainersServicer) -> list[str]:
    server = grpc.aio.server()
    containers_pb2_grpc.add_ContainersServicer_to_server(servicer, server)
    sock = tmp_path / "agent.sock"
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    client = AgentClient(Target(name="t", kind="unix", address=str(sock)), tmp_path)
    try:
        from controller.api import containers as api

        pages = client.paged(api.LIST_STREAM, api.LIST, pb.ListContainersRequest(all=True))
        return [c.id async for page in pages for c in page.containers]
    finally:
        await client.close()
        await server.stop(None)


class _OldAgent(containers_pb2_grpc.ContainersServicer):
    """An agent from before ListStream: only the unary List."""

    async def List(self, request: Any, context: Any) -> pb.ListContainersResponse:
        return pb.ListContainersResponse(containers=[pb.Container(id="a"), pb.Container(id="b")])


class _NewAgent(containers_pb2_grpc.ContainersServicer):
    async def ListStream(self, request: Any, context: Any) -> AsyncIterator[pb.ListContainersResponse]:
        for page in pages((pb.Container(id=f"c{i}", labels={"k": "v" * 1000}) for i in range(30)), 4000):
            yield pb.ListContainersResponse(containers=page)


def test_the_controller_reads_pages_and_falls_back_to_list_on_an_older_agent(tmp_path: Path) -> None:
    assert asyncio.run(_list_via_pages(tmp_path, _OldAgent())) == ["a", "b"]
    assert asyncio.run(_list_via_pages(tmp_path, _NewAgent())) == [f"c{i}" for i in range(30)]
