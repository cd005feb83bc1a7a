"""Container logs in conmon's CRI ("k8s-file") format: parse, read with tail/since, follow, rotate.

One line per chunk: `<RFC3339Nano time> <stdout|stderr> <F|P> <text>`. `F` ends a line (conmon dropped
its newline), `P` is a partial chunk continued by the next entry of the same stream. Files rotate as
`ctr.log.N … ctr.log.1, ctr.log` (oldest first): the agent renames and then asks conmon to reopen, so
no line is lost; conmon's own `--log-size-max` is only the hard backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
import re
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import agent.log

log = agent.log.get(__name__)

_TIME_RE = re.compile(
    rb"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$"
)
REOPEN_LOGS = b"2 0 0\n"


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
    """The current log and its rotated predecessors, oldest first."""
    rotated: list[tuple[int, Path]] = []
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit():
            rotated.append((int(suffix), p))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.exists():
        files.append(path)
    return files


def _entries_of(data: bytes) -> list[LogEntry]:
    out = []
    for line in data.split(b"\n"):
        if line:
            entry = parse_line(line)
            if entry is not None:
                out.append(entry)
    return out


def read_entries(
    path: Path, *, since_ns: int | None = None, until_ns: int | None = None, tail: int | None = None
) -> list[LogEntry]:
    """Entries across rotated files; `tail` counts complete lines per Docker (partials join their line)."""
    selected: deque[LogEntry] | list[LogEntry] = deque() if tail is not None else []
    lines_kept = 0
    for f in log_files(path):
        try:
            data = f.read_bytes()
        except FileNotFoundError:
            continue
        for entry in _entries_of(data):
            if since_ns is not None and entry.time_ns < since_ns:
                continue
            if until_ns is not None and entry.time_ns > until_ns:
                continue
            selected.append(entry)
            if not entry.partial:
                lines_kept += 1
    if tail is None:
        return list(selected)
    if tail <= 0:
        return []
    # walk back `tail` complete lines
    result: list[LogEntry] = []
    complete = 0
    for entry in reversed(selected):
        if not entry.partial:
            if complete == tail:
                break
            complete += 1
        result.append(entry)
    return list(reversed(result))


class _DirWatch:
    """inotify on the log directory: wakes followers on writes, creates and renames (no polling)."""

    IN_MODIFY = 0x2
    IN_MOVED_TO = 0x80
    IN_CREATE = 0x100
    IN_NONBLOCK = 0o4000
    IN_CLOEXEC = 0o2000000

    def __init__(self, directory: Path) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK | self.IN_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = self.IN_MODIFY | self.IN_MOVED_TO | self.IN_CREATE
        if libc.inotify_add_watch(self.fd, str(directory).encode(), mask) < 0:
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
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)


async def follow(
    path: Path, *, done: asyncio.Event, from_start: bool = True, since_ns: int | None = None
) -> AsyncIterator[LogEntry]:
    """Yield entries as conmon writes them, across rotations, until `done` is set and the file drained.

    `done` must be set only once nothing more will be written (conmon has exited); setting it wakes the
    follower at once. With `from_start=False` only entries written after the call are yielded.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    watch = _DirWatch(path.parent)
    waker = asyncio.ensure_future(_wake_on(done, watch))
    f = None
    ino = -1
    pending = b""
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


def needs_rotation(path: Path, max_size: int) -> bool:
    try:
        return max_size > 0 and path.stat().st_size >= max_size
    except FileNotFoundError:
        return False


def rotate(path: Path, max_files: int) -> None:
    """Shift ctr.log → ctr.log.1 → … keeping `max_files` files in all (the current one included)."""
    keep = max(1, max_files) - 1
    if keep == 0:
        path.unlink(missing_ok=True)
        return
    for p in path.parent.glob(path.name + ".*"):
        suffix = p.name[len(path.name) + 1 :]
        if suffix.isdigit() and int(suffix) >= keep:
            p.unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        os.replace(path, path.with_name(f"{path.name}.1"))


def request_reopen(ctl_fifo: Path) -> bool:
    """Ask the conmon serving `ctl_fifo` to reopen its log file; False when nobody listens."""
    try:
        fd = os.open(ctl_fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        os.write(fd, REOPEN_LOGS)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
