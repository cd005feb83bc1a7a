"""`cp`: tar streams into and out of a container's filesystem, safely.

The tar work runs in a helper process that chroots into the container's root first (the running
container's `/proc/<pid>/root`, which includes its mounts; or the mounted rootfs of a stopped one), so
symlinks planted inside the container can never point the agent at host paths.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import FailedPrecondition, InvalidArgument, NotFound
from agent.runtime import bundle
from agent.state.containers import ACTIVE

if TYPE_CHECKING:
    from agent.containers.manager import ContainerManager

CHUNK = 256 * 1024

# Runs as `python -I -c HELPER {in|out} ROOT PATH`; exit 2 = path missing, 3 = not a directory.
HELPER = r"""
import os, posixpath, sys, tarfile
mode, root, path = sys.argv[1], sys.argv[2], sys.argv[3]
os.chroot(root)
os.chdir("/")
path = posixpath.normpath("/" + path)
if mode == "out":
    if not os.path.lexists(path):
        sys.exit(2)
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as tar:
        tar.add(path, arcname=posixpath.basename(path) or ".")
    sys.exit(0)
if os.path.isdir(path):
    dest, rename = path, None
else:
    dest, rename = posixpath.dirname(path), posixpath.basename(path)
    if not os.path.isdir(dest):
        sys.exit(3 if os.path.lexists(dest) else 2)
with tarfile.open(fileobj=sys.stdin.buffer, mode="r|*") as tar:
    for member in tar:
        if rename is not None:
            head, sep, rest = member.name.lstrip("./").partition("/")
            member.name = rename + (sep + rest if sep else "")
        tar.extract(member, dest, filter="tar")
"""


async def _root(mgr: ContainerManager, ref: str) -> tuple[str, Path | None]:
    """The directory to chroot into, and the rootfs we mounted for the copy (to unmount after)."""
    rec = mgr.find(ref)
    if rec.status in ACTIVE and rec.pid > 0:
        return f"/proc/{rec.pid}/root", None
    paths = mgr.paths(rec.id)
    if bundle.is_mounted(paths.rootfs):
        return str(paths.rootfs), None
    await asyncio.to_thread(bundle.mount_rootfs, paths, [Path(p) for p in rec.lowerdirs])
    return str(paths.rootfs), paths.root


async def _release(mgr: ContainerManager, mounted: Path | None) -> None:
    if mounted is not None:
        await asyncio.to_thread(bundle.unmount_rootfs, bundle.ContainerPaths(mounted))


def _check(code: int, path: str, err: bytes) -> None:
    if code == 2:
        raise NotFound(f"no such file or directory in the container: {path}")
    if code == 3:
        raise FailedPrecondition(f"not a directory in the container: {path}")
    if code != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["copy failed"]
        raise InvalidArgument(f"copy failed: {tail[0]}")


async def copy_to(mgr: ContainerManager, ref: str, path: str, chunks: AsyncIterator[bytes]) -> None:
    if not path.startswith("/"):
        raise InvalidArgument(f"the container path {path!r} must be absolute")
    root, mounted = await _root(mgr, ref)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", HELPER, "in", root, path,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdin is not None and proc.stderr is not None
        err_task = asyncio.ensure_future(proc.stderr.read())
        try:
            async for chunk in chunks:
                proc.stdin.write(chunk)
                await proc.stdin.drain()
            proc.stdin.close()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except BaseException:
            proc.kill()
            await proc.wait()
            raise
        err = await err_task
        _check(await proc.wait(), path, err)
    finally:
        await _release(mgr, mounted)


async def copy_from(mgr: ContainerManager, ref: str, path: str) -> AsyncIterator[bytes]:
    if not path.startswith("/"):
        raise InvalidArgument(f"the container path {path!r} must be absolute")
    root, mounted = await _root(mgr, ref)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", HELPER, "out", root, path,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        err_task = asyncio.ensure_future(proc.stderr.read())
        try:
            first = await proc.stdout.read(CHUNK)
            if not first:
                code = await proc.wait()
                _check(code, path, await err_task)
            else:
                yield first
                while chunk := await proc.stdout.read(CHUNK):
                    yield chunk
                _check(await proc.wait(), path, await err_task)
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
    finally:
        await _release(mgr, mounted)
