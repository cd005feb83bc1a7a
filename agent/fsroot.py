"""Paths inside a container's or an image's root, resolved from the host by directory fd.

A container's files belong to whoever runs in it, and they change while the agent works on them. So the
agent never chroots into them and never hands a path string under such a root to a call that follows
symlinks. Instead:

* `open_root` opens the root once (for a running container `/proc/<pid>/root`, whose mounts are the
  container's own) as an `O_PATH` directory fd;
* `resolve` opens a path below it with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel
  follows symlinks as if the root were `/` (an absolute target starts again at the root, `..` stops at
  it) and refuses `/proc` magic links, so nothing outside the root is ever reached, whatever the
  container does meanwhile;
* below a resolved directory, entries are handled by (directory fd, name) with no-follow calls: `walk`
  lists a tree without following any symlink, `open_regular` opens a file only if it is one.

Nothing here resolves user or group names or loads anything: reading a container's `/etc/passwd` is
`read_file` (bounded, as data). All calls block; run them in a thread.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass

from agent.errors import Internal, InvalidArgument
from agent.libc import LIBC

SYS_OPENAT2 = 437  # the same number on every architecture (added after the syscall table unification)
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
O_PATH_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
MAX_DEPTH = 1024  # directory levels a walk descends (each holds an fd; a hostile tree may be deeper)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd: int, path: str, flags: int, mode: int = 0, resolve: int = IN_ROOT) -> int:
    """The openat2(2) system call (Linux 5.6+); raises OSError like `os.open`."""
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    name = os.fsencode(path)
    for _ in range(16):
        fd = int(
            LIBC.syscall(
                ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(name),
                ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)),
            )
        )  # fmt: skip
        if fd >= 0:
            return fd
        err = ctypes.get_errno()
        if err == errno.EAGAIN:  # a rename raced with `..` resolution: the kernel asks to retry
            continue
        if err == errno.ENOSYS:
            raise Internal("this kernel has no openat2 (Linux 5.6 or later is needed to copy files safely)")
        raise OSError(err, os.strerror(err), path)
    raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN), path)


def relative(path: str) -> str:
    """`path` as openat2 wants it below a root: no leading `/`, "." for the root itself."""
    return path.lstrip("/") or "."


def open_root(path: str | os.PathLike[str]) -> int:
    """An O_PATH fd of a root directory (a mounted rootfs, `/proc/<pid>/root`, a volume's directory).

    The path itself is agent-made (not inside the root), so it is opened with the ordinary rules; a
    `/proc/<pid>/root` magic link is followed here, once, to the container's root with its mounts."""
    return os.open(path, O_PATH_DIR)


def resolve(rootfd: int, path: str, flags: int = O_PATH_DIR, mode: int = 0) -> int:
    """Open `path` inside the root as the container sees it (symlinks followed, never out of the root)."""
    return openat2(rootfd, relative(path), flags, mode)


def lstat(dirfd: int, name: str) -> os.stat_result:
    return os.stat(name, dir_fd=dirfd, follow_symlinks=False)


def open_regular(dirfd: int, name: str) -> tuple[int, os.stat_result] | None:
    """Open `name` for reading if it is (still) a regular file, else None: never a symlink, and never a
    FIFO or device swapped in since it was listed (O_NONBLOCK: a FIFO would block the open)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.EISDIR):
            return None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return fd, st


def xattrs(dirfd: int, name: str) -> dict[str, bytes]:
    """The extended attributes of `name` itself (a symlink's own), sorted by name; {} when unsupported."""
    path = f"/proc/self/fd/{dirfd}/{name}"
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for key in sorted(names):
        try:
            out[key] = os.getxattr(path, key, follow_symlinks=False)
        except OSError:
            continue
    return out


@dataclass(frozen=True)
class Entry:
    """One entry of a walk: `parent` is a directory fd, borrowed and valid until the walk moves on."""

    rel: str  # path relative to the walked directory
    parent: int
    name: str
    st: os.stat_result


def walk(dirfd: int, rel: str = "", depth: int = 0) -> Iterator[Entry]:
    """Everything below the directory `dirfd`, parents first, in name order, without following a symlink.

    Entries that vanish while they are walked are left out (a running container changes its files)."""
    if depth >= MAX_DEPTH:
        raise InvalidArgument(f"{rel}: directories nested more than {MAX_DEPTH} levels deep")
    for name in sorted(os.listdir(dirfd)):
        try:
            st = lstat(dirfd, name)
        except FileNotFoundError:
            continue
        sub = f"{rel}/{name}" if rel else name
        yield Entry(sub, dirfd, name, st)
        if not stat.S_ISDIR(st.st_mode):
            continue
        try:
            fd = os.open(name, O_DIR, dir_fd=dirfd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                continue  # replaced meanwhile
            raise
        try:
            yield from walk(fd, sub, depth + 1)
        finally:
            os.close(fd)


def read_file(rootfd: int, path: str, limit: int) -> bytes | None:
    """A small file inside the root read as data (e.g. /etc/passwd), None if absent or not a regular file.

    Over `limit` bytes is InvalidArgument: such files are read whole, and a hostile image may make them
    huge or sparse."""
    try:
        fd = resolve(rootfd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV, errno.ENXIO):
            return None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks = []
        total = 0
        while chunk := os.read(fd, min(1 << 16, limit + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise InvalidArgument(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
