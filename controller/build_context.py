"""The build context as the CLI sends it: the context directory walked in name order, `.dockerignore`
applied (with the agent's own matcher), written as a tar stream and cut into chunks for the Build RPC.

Entries are owned by root (uid/gid 0, no names), as `docker build` sends them; modes and mtimes are kept.
Directories a pattern excludes are not walked unless an exception pattern names something below them
(Docker's rule). Reading happens in a worker thread; chunks cross to the event loop through a bounded queue.
"""

from __future__ import annotations

import asyncio
import os
import stat
import tarfile
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from agent.oci.dockerignore import IGNORE_FILE, IgnoreRules
from agent.oci.errors import InvalidArgument
from controller.errors import UsageError

CHUNK = 1 << 20
_DONE = object()


def load_rules(context: Path) -> IgnoreRules:
    path = context / IGNORE_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return IgnoreRules([])
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    try:
        return IgnoreRules.parse(text)
    except InvalidArgument as exc:
        raise UsageError(f"{context / IGNORE_FILE}: {exc}") from None


class _Sink:
    """A write-only file object that hands out what was written in chunks."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts, self.size = [], 0
        return out


def _entries(context: Path, rules: IgnoreRules, rel: str = "") -> Iterator[tuple[str, os.stat_result]]:
    directory = context / rel if rel else context
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise UsageError(f"cannot read context directory {directory}: {exc.strerror}") from None
    for name in names:
        path = f"{rel}/{name}" if rel else name
        try:
            st = os.lstat(context / path)
        except OSError as exc:
            raise UsageError(f"cannot read {context / path}: {exc.strerror}") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        if rules.excludes(path):
            if is_dir and rules.may_reinclude_below(path):
                yield from _entries(context, rules, path)
            continue
        yield path, st
        if is_dir:
            yield from _entries(context, rules, path)


def iter_tar(context: Path, rules: IgnoreRules, chunk_size: int = CHUNK) -> Iterator[bytes]:
    """The context as tar bytes, in chunks of about `chunk_size`. UsageError for unreadable files."""
    sink = _Sink()
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        for rel, st in _entries(context, rules):
            info = tarfile.TarInfo(rel)
            info.mode = stat.S_IMODE(st.st_mode)
            info.mtime = int(st.st_mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if stat.S_ISDIR(st.st_mode):
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif stat.S_ISLNK(st.st_mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(context / rel)
                tf.addfile(info)
            elif stat.S_ISREG(st.st_mode):
                info.size = st.st_size
                try:
                    with open(context / rel, "rb") as fh:
                        tf.addfile(info, fh)
                except OSError as exc:
                    raise UsageError(f"cannot read {context / rel}: {exc.strerror}") from None
            else:
                continue  # sockets, FIFOs, devices are not part of a build context
            if sink.size >= chunk_size:
                yield sink.take()
    if sink.size:
        yield sink.take()


async def stream(context: Path, rules: IgnoreRules, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    """`iter_tar` run in a worker thread, yielded on the event loop."""
    loop = asyncio.get_running_loop()
    q: asyncio.Queue[object] = asyncio.Queue(maxsize=4)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in iter_tar(context, rules, chunk_size):
                if stop.is_set():
                    return
                asyncio.run_coroutine_threadsafe(q.put(chunk), loop).result()
            asyncio.run_coroutine_threadsafe(q.put(_DONE), loop).result()
        except BaseException as exc:
            if not stop.is_set():
                asyncio.run_coroutine_threadsafe(q.put(exc), loop).result()

    worker = loop.run_in_executor(None, produce)
    try:
        while True:
            item = await q.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        while not q.empty():  # unblock a producer waiting on a full queue
            q.get_nowait()
        await worker
