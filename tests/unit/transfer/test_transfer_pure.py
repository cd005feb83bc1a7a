"""Pure parts of the transfer area: commit's config rules and stubs, the fan-out window, move's names."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.runtime.options import RunOptions
from agent.transfer.commit import container_config, mount_stubs, parse_changes
from controller.errors import ControllerError
from controller.move import image_name
from controller.send import WINDOW, _Broadcast


def test_changes_accept_what_docker_commit_accepts_and_refuse_the_rest() -> None:
    parsed = parse_changes(('CMD ["sh"]', "ENV A=1 B=2", "EXPOSE 80/udp", "VOLUME /v", "workdir /w"))
    assert [i.keyword for i in parsed] == ["CMD", "ENV", "EXPOSE", "VOLUME", "WORKDIR"]
    for bad in ("RUN true", "COPY a b", "FROM x", "", "STOPSIGNAL 9"):
        with pytest.raises(InvalidArgument, match="is not allowed"):
            parse_changes((bad,))
    with pytest.raises(InvalidArgument, match="--change 'ENV': ENV requires"):
        parse_changes(("ENV",))
    with pytest.raises(InvalidArgument, match="--change line 1: EXPOSE: invalid port"):
        parse_changes(("EXPOSE notaport",))[0].expand({})  # values are checked when applied


def test_container_settings_carry_into_the_committed_config() -> None:
    base = {"Env": ["PATH=/bin", "A=image"], "Cmd": ["sh"], "Entrypoint": None, "Labels": {"x": "1"}}
    opts = RunOptions(
        image="i", env=("A=run", "B=2", "BARE"), labels={"y": "2"}, workdir="/srv", user="nobody"
    )
    got = container_config(base, opts)
    assert got["Env"] == ["PATH=/bin", "A=run", "B=2"]
    assert got["Labels"] == {"x": "1", "y": "2"} and got["WorkingDir"] == "/srv" and got["User"] == "nobody"
    assert got["Cmd"] == ["sh"]
    assert base["Env"] == ["PATH=/bin", "A=image"]  # the image's config is not modified
    reset = container_config(base, RunOptions(image="i", entrypoint=("/init",)))
    assert reset["Entrypoint"] == ["/init"] and reset["Cmd"] is None
    both = container_config(base, RunOptions(image="i", entrypoint=("/init",), command=("x",)))
    assert both["Cmd"] == ["x"]


def test_mount_stubs_are_only_empty_things_no_image_layer_has(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    for d in (upper / "etc", upper / "data", upper / "full", lower / "etc", lower / "proc"):
        d.mkdir(parents=True)
    (upper / "etc" / "hosts").write_bytes(b"")  # runc's stub
    (upper / "etc" / "hostname").write_bytes(b"")  # exists below: a real change, kept
    (lower / "etc" / "hostname").write_bytes(b"img\n")
    (upper / "full" / "f").write_bytes(b"user data")  # a mount point the container wrote into: kept
    spec = {
        "mounts": [
            {"destination": d}
            for d in ("/etc/hosts", "/etc/hostname", "/data", "/full", "/proc", "/missing", "/", "/../x")
        ]
    }
    assert mount_stubs(upper, spec, [lower]) == frozenset({"etc/hosts", "data"})


def test_broadcast_keeps_producer_within_the_window_of_the_slowest_and_forgets_leavers() -> None:
    async def scenario() -> None:
        bc = _Broadcast(["fast", "slow"])
        produced = 0

        async def produce() -> None:
            nonlocal produced
            for i in range(WINDOW * 3):
                if not await bc.put(i, b"x"):
                    return
                produced += 1
            await bc.finish()

        producer = asyncio.create_task(produce())
        fast = [await bc.get("fast") for _ in range(WINDOW)]
        await asyncio.sleep(0.01)
        assert produced == WINDOW and not producer.done()  # "slow" has taken nothing yet
        assert [item[0] for item in fast if item] == list(range(WINDOW))
        await bc.leave("slow")
        rest = []
        while (item := await bc.get("fast")) is not None:
            rest.append(item[0])
        await producer
        assert rest == list(range(WINDOW, WINDOW * 3))

    asyncio.run(scenario())


def test_broadcast_hands_out_what_arrived_then_the_source_error() -> None:
    async def scenario() -> None:
        bc = _Broadcast(["t"])
        await bc.put(0, b"abc")
        await bc.finish(ControllerError("source went away"))
        assert await bc.get("t") == (0, b"abc")
        with pytest.raises(ControllerError, match="went away"):
            await bc.get("t")

    asyncio.run(scenario())


def test_move_image_names_are_valid_references() -> None:
    from agent.images.reference import Reference

    for name in ("web", "Web_1", "a..b", "__", "x.y-z"):
        ref = image_name(name)
        Reference.parse(ref)
        assert ref.startswith("dockyard-move/")


def test_a_plan_counts_a_layer_listed_twice_once() -> None:
    from controller.send import Blob, ImagePlan

    empty = Blob("sha256:" + "e" * 64, 32)
    plan = ImagePlan("sha256:" + "m" * 64, (empty, Blob("sha256:" + "a" * 64, 100), empty), ("x:1",))
    assert [b.digest for b in plan.unique_blobs] == [empty.digest, "sha256:" + "a" * 64]
    assert plan.size == 132
