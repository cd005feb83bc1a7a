"""The CRI log format: parsing, tail/since across rotated files, and following through a rotation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.runtime import logs


def line(ts: str, stream: str, text: str, tag: str = "F") -> bytes:
    return f"{ts} {stream} {tag} {text}\n".encode()


def test_parse_line_and_time() -> None:
    e = logs.parse_line(b"2024-01-02T03:04:05.123456789+00:00 stdout F hello world")
    assert e is not None and e.stream == "stdout" and e.data == b"hello world\n" and not e.partial
    assert e.time_ns == 1704164645123456789
    assert e.timestamp == "2024-01-02T03:04:05.123456789Z"
    p = logs.parse_line(b"2024-01-02T05:04:05.5+02:00 stderr P part")
    assert p is not None and p.partial and p.data == b"part" and p.time_ns == 1704164645500000000
    assert logs.parse_line(b"2024-01-02T03:04:05Z stdout F ") is not None
    for bad in (b"", b"garbage", b"2024-13-02T03:04:05Z stdout F x", b"2024-01-02T03:04:05Z stdin F x"):
        assert logs.parse_line(bad) is None


def test_tail_since_and_rotated_order(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    (tmp_path / "ctr.log.2").write_bytes(line("2024-01-01T00:00:01Z", "stdout", "one"))
    (tmp_path / "ctr.log.1").write_bytes(
        line("2024-01-01T00:00:02Z", "stdout", "tw", "P") + line("2024-01-01T00:00:02Z", "stdout", "o")
    )
    log.write_bytes(
        line("2024-01-01T00:00:03Z", "stderr", "three") + b"2024-01-01T00:00:04Z stdout F incompl"
    )
    assert [e.data for e in logs.read_entries(log)] == [b"one\n", b"tw", b"o\n", b"three\n"]
    assert [e.data for e in logs.read_entries(log, tail=2)] == [b"tw", b"o\n", b"three\n"]
    assert logs.read_entries(log, tail=0) == []
    since = logs.parse_time(b"2024-01-01T00:00:02Z")
    assert [e.data for e in logs.read_entries(log, since_ns=since, until_ns=since)] == [b"tw", b"o\n"]
    _, pos = logs.read_with_position(log)
    assert pos is not None and pos.offset == len(line("2024-01-01T00:00:03Z", "stderr", "three"))


def test_rotate_keeps_max_files(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    for i in range(5):
        log.write_text(f"gen{i}")
        logs.rotate(log, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ctr.log.1", "ctr.log.2"]
    assert (tmp_path / "ctr.log.1").read_text() == "gen4" and (tmp_path / "ctr.log.2").read_text() == "gen3"


async def test_follow_continues_from_a_position_through_a_rotation(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_bytes(line("2024-01-01T00:00:00Z", "stdout", "old"))
    _, pos = logs.read_with_position(log)
    done = asyncio.Event()
    got: list[bytes] = []
    three = asyncio.Event()

    async def reader() -> None:
        async for e in logs.follow(log, done=done, start=pos):
            got.append(e.data)
            if len(got) == 3:
                three.set()

    task = asyncio.create_task(reader())
    with log.open("ab") as f:  # the writer keeps its descriptor across the rename, as conmon does
        f.write(line("2024-01-01T00:00:01Z", "stdout", "a"))
        f.flush()
        logs.rotate(log, 3)
        f.write(line("2024-01-01T00:00:02Z", "stdout", "b"))  # still lands in the rotated file
    log.write_bytes(line("2024-01-01T00:00:03Z", "stdout", "c"))  # "reopen": a new current file
    async with asyncio.timeout(5):
        await three.wait()
    done.set()
    async with asyncio.timeout(5):
        await task
    assert got == [b"a\n", b"b\n", b"c\n"]


def test_collect_keeps_what_conmon_replaces(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    log.write_text("first\n")
    assert logs.collect(log, 3) is False
    assert logs.keep_path(log).read_text() == "first\n"

    def conmon_reopens(text: str) -> None:  # what conmon does at --log-size-max
        tmp = tmp_path / "ctr.log.tmp"
        tmp.write_text(text)
        tmp.replace(log)

    conmon_reopens("second\n")
    assert [p.name for p in logs.log_files(log)] == ["ctr.log.keep", "ctr.log"]  # readable before collect
    assert logs.collect(log, 3) is True
    assert (tmp_path / "ctr.log.1").read_text() == "first\n"
    assert logs.keep_path(log).stat().st_ino == log.stat().st_ino
    for text in ("third\n", "fourth\n"):
        conmon_reopens(text)
        logs.collect(log, 3)
    assert [p.read_text() for p in logs.log_files(log)] == ["second\n", "third\n", "fourth\n"]


async def test_rotations_react_to_conmons_rename(tmp_path: Path) -> None:
    log = tmp_path / "ctr.log"
    rotations = logs.Rotations(3)
    try:
        rotations.watch(log)
        log.write_text("one\n")  # conmon creates the file after the watch began
        async with asyncio.timeout(5):
            # the inotify callback runs on this loop: yield to it until it has acted
            while not logs.keep_path(log).exists():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        tmp = tmp_path / "ctr.log.tmp"
        tmp.write_text("two\n")
        tmp.replace(log)
        async with asyncio.timeout(5):
            while not (tmp_path / "ctr.log.1").exists():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert (tmp_path / "ctr.log.1").read_text() == "one\n"
    finally:
        rotations.close()
