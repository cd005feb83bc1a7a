"""The build context on the agent: a tar stream that arrives in chunks, unpacked safely into a fresh dir.

The CLI sends the context as an uncompressed (or gzip) tar in gRPC messages; `receive` feeds them to an
extractor thread through a small bounded queue (back-pressure: the client never gets far ahead of the disk).
The extractor trusts nothing: names are relative with no `..`, no entry is created through a symlink or
non-directory, files are created with O_EXCL|O_NOFOLLOW, devices and FIFOs are skipped, and hardlinks must
point at a file already extracted. Everything is owned by root (as `docker build` sends it). A failure
leaves the caller to remove the directory (`BuildManager` owns its lifetime).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import agent.log
from agent.bytestreams import ChunkReader
from agent.errors import InvalidArgument

log = agent.log.get(__name__)

_QUEUE_DEPTH = 8


@dataclass(frozen=True)
class ContextStats:
    files: int
    dirs: int
    bytes: int


def _parts(name: str) -> list[str]:
    """The path components of a tar member name, refusing anything that could leave the root."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidArgument(f"build context entry {name!r} points outside the context")
    return parts


def _parent(root: Path, parts: list[str], name: str) -> Path:
    """Create (0755) or check the parent directories of an entry; none may be a symlink or a file."""
    current = root
    for part in parts[:-1]:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"build context entry {name!r} goes through a symlink or a file")
    return current


def _clear(path: Path) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def extract(stream: io.RawIOBase | io.BufferedIOBase, root: Path) -> ContextStats:
    """Unpack a (possibly gzip) tar stream into the existing, empty `root`. Blocking."""
    files = dirs = size = 0
    dir_times: list[tuple[Path, int, float]] = []
    try:
        tf = tarfile.open(fileobj=stream, mode="r|*")
    except tarfile.TarError as exc:
        raise InvalidArgument(f"the build context is not a tar stream: {exc}") from None
    with tf:
        try:
            for member in tf:
                parts = _parts(member.name)
                if not parts:
                    continue
                parent = _parent(root, parts, member.name)
                path = parent / parts[-1]
                mode = member.mode & 0o7777
                if member.isdir():
                    try:
                        st = os.lstat(path)
                        if not stat.S_ISDIR(st.st_mode):
                            _clear(path)
                            os.mkdir(path, 0o700)
                    except FileNotFoundError:
                        os.mkdir(path, 0o700)
                    dir_times.append((path, mode, float(member.mtime)))
                    dirs += 1
                elif member.isreg():
                    _clear(path)
                    src = tf.extractfile(member)
                    assert src is not None
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                        os.fchmod(out.fileno(), mode)
                    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
                    files += 1
                    size += member.size
                elif member.issym():
                    _clear(path)
                    os.symlink(member.linkname, path)
                    os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)
                    files += 1
                elif member.islnk():
                    target_parts = _parts(member.linkname)
                    target = root.joinpath(*target_parts)
                    _parent(root, target_parts, member.linkname)
                    if not target_parts or not stat.S_ISREG(os.lstat(target).st_mode):
                        raise InvalidArgument(
                            f"build context hardlink {member.name!r} has no file to link to"
                        )
                    _clear(path)
                    os.link(target, path, follow_symlinks=False)
                    files += 1
                # devices, FIFOs: not part of a build context; skipped
        except tarfile.TarError as exc:
            raise InvalidArgument(f"the build context tar stream is corrupt: {exc}") from None
        except FileNotFoundError as exc:
            raise InvalidArgument(f"build context entry refers to a missing file: {exc.filename}") from None
    for path, mode, mtime in reversed(dir_times):
        os.chmod(path, mode)
        os.utime(path, (mtime, mtime), follow_symlinks=False)
    os.chmod(root, 0o755)
    return ContextStats(files=files, dirs=dirs, bytes=size)


async def receive(chunks: AsyncIterator[bytes], root: Path) -> ContextStats:
    """Unpack the chunks of a tar stream into `root` (created here) as they arrive."""
    root.mkdir(parents=True, exist_ok=False)
    reader = ChunkReader(max_chunks=_QUEUE_DEPTH)
    result: list[ContextStats | BaseException] = []
    received = 0

    def work() -> None:
        try:
            result.append(extract(reader, root))
        except BaseException as exc:
            result.append(exc)
        finally:
            reader.close()  # tar padding, or the rest after an error: the producer stops feeding

    thread = threading.Thread(target=work, name="build-context", daemon=True)
    thread.start()
    try:
        async for chunk in chunks:
            if chunk:
                received += len(chunk)
                await reader.feed(chunk)
        await reader.finish()
    except BaseException as exc:
        reader.fail(InvalidArgument("the build context stream ended early"))
        await asyncio.to_thread(thread.join)
        raise exc
    await asyncio.to_thread(thread.join)
    outcome = result[0] if result else InvalidArgument("the build context could not be read")
    if isinstance(outcome, BaseException):
        raise outcome
    log.info("build.context_received", files=outcome.files, bytes=outcome.bytes, wire_bytes=received)
    return outcome
