"""Container logs in conmon's CRI ("k8s-file") format: parse, read with tail/since, follow, rotate.

One line per chunk: `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`. `F` ends a line (conmon dropped
its newline), `P` is a partial chunk continued by the next entry of the same stream.

Rotation: conmon itself starts a new file whenever `--log-size-max` bytes were written (it writes
`ctr.log.tmp` and renames it over `ctr.log`), which alone would drop the old content. The agent keeps a
second hard link, `ctr.log.keep`, to the current file; when inotify reports conmon's rename, the kept
file becomes `ctr.log.1` (older ones shift, at most `max_files` in all) and the new file is linked. So
files never exceed the size limit, nothing is lost while the agent runs, and while it is down the log
stays bounded (conmon truncates; the content written meanwhile beyond one file is what is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import re
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import agent.log
from agent.libc import LIBC

log = agent.log.get(__name__)

_TIME_RE = re.compile(
    rb"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)


@dataclass(frozen=True)
class LogEntry:
    time_ns: int  # nanoseconds since the epoch, UTC
    stream: str  # "stdout" | "stderr"
    data: bytes  # the text; ends with b"\n" unless the entry is partial
    partial: bool = False

    @property
    def timestamp(self) -> str:
        """RFC3339Nano in UTC, as `docker logs -t` prints it."""
        secs, nanos = divmod(self.time_ns, 1_000_000_000)
        return datetime.fromtimestamp(secs, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{nanos:09d}Z"


def parse_time(raw: bytes) -> int | None:
    """RFC3339(Nano) → ns since epoch, exact to the nanosecond; None when malformed."""
    m = _TIME_RE.match(raw)
    if not m:
        return None
    year, month, day, hour, minute, sec = (int(g) for g in m.groups()[:6])
    frac = (m.group(7) or b"").ljust(9, b"0")
    try:
        base = datetime(year, month, day, hour, minute, sec, tzinfo=UTC)
    except ValueError:
        return None
    offset = 0
    zone = m.group(8)
    if zone != b"Z":
        sign = 1 if zone[:1] == b"+" else -1
        offset = sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return (int(base.timestamp()) - offset) * 1_000_000_000 + int(frac)


def parse_line(line: bytes) -> LogEntry | None:
    """One k8s-file line (without its trailing newline) → entry; None for a malformed line."""
    parts = line.split(b" ", 3)
    if len(parts) < 3 or parts[1] not in (b"stdout", b"stderr") or parts[2] not in (b"F", b"P"):
        return None
    ts = parse_time(parts[0])
    if ts is None:
        return None
    text = parts[3] if len(parts) == 4 else b""
    partial = parts[2] == b"P"
    return LogEntry(ts, parts[1].decode(), text if partial else text + b"\n", partial)


def log_files(path: Path) -> list[Path]:
    """The current log and its rotated predecessors, oldest first (a kept file not yet shifted included)."""
    rotated: list[tuple[int, Path]] = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    keep = keep_path(path)
    try:
        if keep.stat().st_ino != path.stat().st_ino:
            files.append(keep)
    except FileNotFoundError:
        pass
    if path.exists():
        files.append(path)
    return files


def keep_path(path: Path) -> Path:
    return path.with_name(path.name + ".keep")


def _entries_of(data: bytes) -> list[LogEntry]:
    out = []
    for line in data.split(b"\n"):
        if line:
            entry = parse_line(line)
            if entry is not None:
                out.append(entry)
    return out


@dataclass(frozen=True)
class Position:
    """Where a reader stopped in a log file: its inode and the offset after its last complete line."""

    inode: int
    offset: int


def read_entries(
    path: Path, *, since_ns: int | None = None, until_ns: int | None = None, tail: int | None = None
) -> list[LogEntry]:
    """Entries across rotated files; `tail` counts complete lines per Docker (partials join their line)."""
    return read_with_position(path, since_ns=since_ns, until_ns=until_ns, tail=tail)[0]


def read_with_position(
    path: Path, *, since_ns: int | None = None, until_ns: int | None = None, tail: int | None = None
) -> tuple[list[LogEntry], Position | None]:
    """`read_entries` plus the position in the current file, so `follow(start=…)` continues gaplessly."""
    selected: list[LogEntry] = []
    position: Position | None = None
    for f in log_files(path):
        try:
            with f.open("rb") as fh:
                inode = os.fstat(fh.fileno()).st_ino
                data = fh.read()
        except FileNotFoundError:
            continue
        complete = data.rfind(b"\n") + 1
        if f == path:
            position = Position(inode, complete)
        for entry in _entries_of(data[:complete]):
            if since_ns is not None and entry.time_ns < since_ns:
                continue
            if until_ns is not None and entry.time_ns > until_ns:
                continue
            selected.append(entry)
    if tail is None:
        return selected, position
    if tail <= 0:
        return [], position
    # walk back `tail` complete lines
    result: list[LogEntry] = []
    count = 0
    for entry in reversed(selected):
        if not entry.partial:
            if count == tail:
                break
            count += 1
        result.append(entry)
    return list(reversed(result)), position


def _open_at(path: Path, start: Position) -> tuple[BinaryIO, int] | None:
    """The file (current or rotated) with `start.inode`, positioned at `start.offset`."""
    for candidate in [path, *reversed(log_files(path))]:
        try:
            fh = candidate.open("rb")
        except FileNotFoundError:
            continue
        inode = os.fstat(fh.fileno()).st_ino
        if inode == start.inode:
            fh.seek(start.offset)
            return fh, inode
        fh.close()
    return None


class _DirWatch:
    """inotify on the log directory: wakes followers on writes, creates and renames (no polling)."""

    IN_MODIFY = 0x2
    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000

    def __init__(self, directory: Path) -> None:
        self.fd = LIBC.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = self.IN_MODIFY | self.IN_MOVED_TO | self.IN_CREATE
        if LIBC.inotify_add_watch(self.fd, str(directory).encode(), mask) < 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, os.strerror(err), str(directory))
        self._event = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._drain)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.fd, 65536):
                pass
        self._event.set()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._event.wait()
        self._event.clear()

    def close(self) -> None:
        """Closing an inotify instance waits for an RCU grace period in the kernel (8–20 ms here): done
        on the loop, it held up every follower's end, e.g. each attached run's reply, by that much."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.fd)
        loop.run_in_executor(None, os.close, self.fd)


async def follow(
    path: Path,
    *,
    done: asyncio.Event,
    from_start: bool = True,
    since_ns: int | None = None,
    start: Position | None = None,
) -> AsyncIterator[LogEntry]:
    """Yield entries as conmon writes them, across rotations, until `done` is set and the file drained.

    `done` must be set only once nothing more will be written (conmon has exited); setting it wakes the
    follower at once. `start` continues exactly where `read_with_position` stopped (even if the file was
    rotated meanwhile); without it, `from_start=False` yields only entries written after the call.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    watch = _DirWatch(path.parent)
    waker = asyncio.ensure_future(_wake_on(done, watch))
    f: BinaryIO | None = None
    ino = -1
    pending = b""
    if start is not None:
        opened = _open_at(path, start)
        if opened is not None:
            f, ino = opened
    try:
        while True:
            if f is None:
                try:
                    f = path.open("rb")
                except FileNotFoundError:
                    f = None
                else:
                    ino = os.fstat(f.fileno()).st_ino
                    if not from_start:
                        f.seek(0, os.SEEK_END)
            finished = done.is_set()  # sample before reading so the final drain sees everything
            if f is not None:
                try:
                    rotated = path.stat().st_ino != ino
                except FileNotFoundError:
                    rotated = False
                chunk = f.read()  # after the stat: a rotated file gets its last bytes read here
                if chunk:
                    data = pending + chunk
                    lines = data.split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        entry = parse_line(line)
                        if entry is not None and (since_ns is None or entry.time_ns >= since_ns):
                            yield entry
                if rotated:  # the old file is drained: continue with the new one from its start
                    f.close()
                    f, pending, from_start = None, b"", True
                    continue
                if chunk:
                    continue
            if finished:
                return
            await watch.wait(0.5)
    finally:
        waker.cancel()
        if f is not None:
            f.close()
        watch.close()


async def _wake_on(done: asyncio.Event, watch: _DirWatch) -> None:
    await done.wait()
    watch.wake()


def rotate(path: Path, max_files: int, newest: Path | None = None) -> None:
    """Shift ctr.log.N → ctr.log.N+1 and move `newest` (default: the current file) to ctr.log.1,
    keeping `max_files` files in all (the current one included)."""
    newest = newest or path
    keep = max(1, max_files) - 1
    if keep == 0:
        newest.unlink(missing_ok=True)
        return
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit() and int(suffix) >= keep:
            p.unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    if newest.exists():
        os.replace(newest, path.with_name(f"{path.name}.1"))


def collect(path: Path, max_files: int) -> bool:
    """Keep what conmon replaced (see the module docstring) and link the current file; True if rotated."""
    keep = keep_path(path)
    rotated = False
    try:
        current = path.stat().st_ino
    except FileNotFoundError:
        current = -1
    try:
        if keep.stat().st_ino != current:
            rotate(path, max_files, newest=keep)
            rotated = True
    except FileNotFoundError:
        pass
    if current != -1 and not keep.exists():
        try:
            os.link(path, keep)
        except FileExistsError:
            pass
        except FileNotFoundError:  # replaced again in between: the next event links it
            pass
    return rotated


class Rotations:
    """One inotify instance watching the log directories of running containers for conmon's renames."""

    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000
    _EVENT = struct.Struct("iIII")

    def __init__(self, max_files: int) -> None:
        self.max_files = max_files
        self.fd = LIBC.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        self._by_wd: dict[int, Path] = {}
        self._by_path: dict[Path, int] = {}
        asyncio.get_running_loop().add_reader(self.fd, self._on_events)

    def watch(self, path: Path) -> None:
        """Start keeping `path`'s replaced files (call when a run starts or is adopted)."""
        if path in self._by_path:
            collect(path, self.max_files)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        wd = LIBC.inotify_add_watch(self.fd, str(path.parent).encode(), self.IN_MOVED_TO | self.IN_CREATE)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path.parent))
        self._by_wd[wd] = path
        self._by_path[path] = wd
        collect(path, self.max_files)

    def unwatch(self, path: Path) -> None:
        wd = self._by_path.pop(path, None)
        if wd is not None:
            self._by_wd.pop(wd, None)
            LIBC.inotify_rm_watch(self.fd, wd)

    def _on_events(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        offset = 0
        while offset + self._EVENT.size <= len(data):
            wd, _mask, _cookie, length = self._EVENT.unpack_from(data, offset)
            name = data[offset + self._EVENT.size : offset + self._EVENT.size + length].rstrip(b"\0")
            offset += self._EVENT.size + length
            path = self._by_wd.get(wd)
            if path is not None and name == path.name.encode():
                try:
                    if collect(path, self.max_files):
                        log.info("container.log_rotated", path=str(path))
                except OSError as exc:
                    log.warning("container.log_rotation_failed", path=str(path), error=str(exc))

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
