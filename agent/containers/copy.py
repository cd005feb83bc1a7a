"""`cp`: tar streams into and out of a container's filesystem, without trusting anything in it.

The container's root is opened from the host (a running container's `/proc/<pid>/root`, which shows its
own mounts such as volumes; or the mounted rootfs of a stopped one) and every path is resolved below it
by directory fd (`agent.fsroot`, `openat2(RESOLVE_IN_ROOT)`): symlinks planted in the container are
followed the way the container sees them and can never lead the agent to a host path. The tar work runs
in the agent itself, in a thread (`agent.treetar`), with numeric owners only: nothing of the container
is loaded or executed and no user or group name is resolved (no chroot, no NSS in the container's root;
the CVE-2019-14271 class).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

import agent.log
from agent import fsroot, treetar
from agent.bytestreams import read_in_thread, written_in_thread
from agent.errors import (
    AgentError,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    is_no_space,
)
from agent.runtime import bundle
from agent.state.containers import ACTIVE

if TYPE_CHECKING:
    from agent.containers.manager import ContainerManager

log = agent.log.get(__name__)


async def _open_root(mgr: ContainerManager, ref: str) -> tuple[int, Path | None]:
    """An O_PATH fd of the container's root, and the rootfs we mounted for the copy (to unmount after)."""
    rec = mgr.find(ref)
    paths = mgr.paths(rec.id)
    if rec.status in ACTIVE and rec.pid > 0:
        try:
            fd = fsroot.open_root(f"/proc/{rec.pid}/root")
        except OSError:
            fd = -1
        # The pid may have ended and been reused by a host process since the record was read: the root
        # must be on the container's own overlay (a chroot inside the container still is).
        try:
            if fd >= 0 and os.fstat(fd).st_dev == os.stat(paths.rootfs).st_dev:
                return fd, None
        except OSError:
            pass
        if fd >= 0:
            os.close(fd)
        raise Conflict(f"container {rec.name} stopped while the copy started; try again")
    mounted = None
    if not bundle.is_mounted(paths.rootfs):
        await asyncio.to_thread(bundle.mount_rootfs, paths, [Path(p) for p in rec.lowerdirs])
        mounted = paths.root
    try:
        return fsroot.open_root(paths.rootfs), mounted
    except BaseException:
        await _release(mounted)
        raise


async def _release(mounted: Path | None) -> None:
    if mounted is not None:
        await asyncio.to_thread(bundle.unmount_rootfs, bundle.ContainerPaths(mounted))


@contextlib.contextmanager
def _errors(path: str) -> Iterator[None]:
    """OSErrors of a copy as the API's errors (the path named is the container's, never a host one)."""
    try:
        yield
    except AgentError:
        raise
    except OSError as exc:
        if is_no_space(exc):
            raise ResourceExhausted(
                f"no space left in the container's filesystem while copying {path}"
            ) from exc
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise NotFound(f"no such file or directory in the container: {path}") from exc
        if exc.errno == errno.ELOOP:
            raise InvalidArgument(f"copy failed: too many levels of symbolic links in {path}") from exc
        raise InvalidArgument(f"copy failed: {exc.strerror or exc}") from exc


def _destination(rootfd: int, path: str) -> tuple[str, str | None]:
    """Where to extract: `path` itself if it is a directory, else its parent with the copy renamed."""
    norm = os.path.normpath("/" + path)
    try:
        os.close(fsroot.resolve(rootfd, norm))
        return norm, None
    except (FileNotFoundError, NotADirectoryError):
        pass
    parent, base = os.path.split(norm)
    if path.endswith("/"):
        raise NotFound(f"no such directory in the container: {path}")
    try:
        os.close(fsroot.resolve(rootfd, parent))
    except NotADirectoryError as exc:
        raise FailedPrecondition(f"not a directory in the container: {path}") from exc
    except FileNotFoundError as exc:
        raise NotFound(f"no such file or directory in the container: {path}") from exc
    return parent, base


def _copy_in(reader: BinaryIO, rootfd: int, path: str) -> int:
    with _errors(path):
        dest, rename = _destination(rootfd, path)
        return treetar.extract(reader, rootfd, dest, rename)


async def copy_to(mgr: ContainerManager, ref: str, path: str, chunks: AsyncIterator[bytes]) -> None:
    if not path.startswith("/"):
        raise InvalidArgument(f"the container path {path!r} must be absolute")
    rootfd, mounted = await _open_root(mgr, ref)
    try:
        written = await read_in_thread(chunks, lambda reader: _copy_in(cast(BinaryIO, reader), rootfd, path))
    finally:
        os.close(rootfd)
        await _release(mounted)
    log.info("container.copied_to", container=ref, path=path, bytes=written)


def _copy_out(writer: BinaryIO, rootfd: int, path: str) -> None:
    with _errors(path):
        treetar.write_path(writer, rootfd, path)


async def copy_from(mgr: ContainerManager, ref: str, path: str) -> AsyncIterator[bytes]:
    if not path.startswith("/"):
        raise InvalidArgument(f"the container path {path!r} must be absolute")
    rootfd, mounted = await _open_root(mgr, ref)
    try:
        tar = written_in_thread(lambda writer: _copy_out(cast(BinaryIO, writer), rootfd, path))
        async with contextlib.aclosing(tar) as stream:
            async for chunk in stream:
                yield chunk
    finally:
        os.close(rootfd)
        await _release(mounted)
