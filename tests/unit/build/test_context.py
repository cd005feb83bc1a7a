"""The context transport: the CLI's tar (with .dockerignore) unpacked by the agent; hostile tars refused."""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.build import context as agent_context
from agent.errors import InvalidArgument
from controller import build_context
from controller.errors import UsageError
from tests.support.images import tree_summary


def make_context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "src" / "deep").mkdir(parents=True)
    (ctx / "vendor" / "keep").mkdir(parents=True)
    (ctx / "node_modules" / "pkg").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM scratch\n")
    (ctx / "src" / "main.c").write_text("int main(){}\n")
    (ctx / "src" / "deep" / "x.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (ctx / "src" / "run.sh").write_text("#!/bin/sh\n")
    (ctx / "src" / "run.sh").chmod(0o755)
    (ctx / "vendor" / "drop.txt").write_text("drop")
    (ctx / "vendor" / "keep" / "k.txt").write_text("keep")
    (ctx / "node_modules" / "pkg" / "i.js").write_text("x")
    (ctx / "notes.md").write_text("md")
    (ctx / "README.md").write_text("readme")
    os.symlink("src/main.c", ctx / "link")
    (ctx / ".dockerignore").write_text("node_modules\n*.md\n!README.md\nvendor\n!vendor/keep\n")
    return ctx


async def chunks_of(data: bytes, size: int = 1000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def test_round_trip_honours_dockerignore(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    rules = build_context.load_rules(ctx)
    out = tmp_path / "out"
    stats = await agent_context.receive(build_context.stream(ctx, rules, chunk_size=64 * 1024), out)
    got = tree_summary(out)
    assert "node_modules" not in got and "notes.md" not in got and "vendor/drop.txt" not in got
    assert {"README.md", "vendor/keep/k.txt", "src/deep/x.bin", "link", ".dockerignore"} <= set(got)
    want = tree_summary(ctx)
    for path, entry in got.items():
        assert entry == want[path], path  # content, mode, link target preserved; owner root (we are root)
    assert got["src/run.sh"][1] == 0o755
    assert got["link"][3] == "src/main.c"
    assert stats.files == sum(1 for e in got.values() if e[0] in ("file", "link"))
    assert (out / "src" / "deep" / "x.bin").stat().st_mtime == int((ctx / "src/deep/x.bin").stat().st_mtime)


async def test_unreadable_context_file_is_a_usage_error(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "dangling").symlink_to("/nonexistent")
    os.mkfifo(ctx / "fifo")
    data = b"".join(build_context.iter_tar(ctx, build_context.load_rules(ctx)))
    names = tarfile.open(fileobj=io.BytesIO(data)).getnames()
    assert names == ["dangling"]  # the symlink is sent as a link, the FIFO skipped
    (ctx / ".dockerignore").write_text("a[\n")
    with pytest.raises(UsageError, match=r"\.dockerignore"):
        build_context.load_rules(ctx)


def hostile_tar(*members: tuple[str, bytes | str | None, bytes]) -> bytes:
    """Members as (name, type, payload): type b"0" file (payload = data), b"2" symlink, b"1" hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                info.type = kind
                info.linkname = payload.decode()
                tf.addfile(info)
            elif kind == tarfile.DIRTYPE:
                info.type = kind
                tf.addfile(info)
            else:
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([("../escape", tarfile.REGTYPE, b"x")], "points outside the context"),
        ([("a/../../escape", tarfile.REGTYPE, b"x")], "points outside the context"),
        (
            [("evil", tarfile.SYMTYPE, b"/tmp"), ("evil/owned", tarfile.REGTYPE, b"x")],
            "goes through a symlink or a file",
        ),
        ([("hl", tarfile.LNKTYPE, b"../../etc/passwd")], "points outside the context"),
        ([("hl", tarfile.LNKTYPE, b"missing")], "missing file"),
    ],
)
async def test_hostile_context_refused(
    tmp_path: Path, members: list[tuple[str, bytes, bytes]], message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(InvalidArgument, match=message):
        await agent_context.receive(chunks_of(hostile_tar(*members)), out)
    assert not (tmp_path / "escape").exists()
    assert not Path("/tmp/owned").exists()


async def test_absolute_names_are_made_relative(tmp_path: Path) -> None:
    out = tmp_path / "out"
    await agent_context.receive(chunks_of(hostile_tar(("/abs/file", tarfile.REGTYPE, b"data"))), out)
    assert (out / "abs" / "file").read_bytes() == b"data"


async def test_garbage_is_not_a_tar(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="build context"):
        await agent_context.receive(chunks_of(b"\x00garbage" * 1000), tmp_path / "out")


async def test_client_stream_failure_stops_the_extractor(tmp_path: Path) -> None:
    data = hostile_tar(("big", tarfile.REGTYPE, os.urandom(200_000)))

    async def broken() -> AsyncIterator[bytes]:
        yield data[:50_000]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await agent_context.receive(broken(), tmp_path / "out")
