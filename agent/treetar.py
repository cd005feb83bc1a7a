"""Tar streams of trees inside a container's root or a volume, read and written by directory fd.

Used by `cp` (both directions) and by volume export/import (`dockyard move`). Paths are resolved with
`agent.fsroot` (never a chroot, never a symlink followed out of the root), and owners are numbers only:
entries are written with their numeric uid/gid and empty user/group names, and extraction applies the
numeric ids of the stream. No user or group name is ever looked up, in the container or on the host,
so nothing of the container (its nsswitch.conf, its NSS modules) is read or loaded on the way.

Writing: regular files, directories, symlinks, FIFOs and devices with mode (all 12 bits), owner and
whole-second mtime; a file linked several times becomes one file plus hard links; sockets are left out.
A file that shrinks while it is read is padded with zeros (the header already promised its size).

Extraction: block and character devices are skipped and logged (the agent's policy: no device nodes
from outside under its data root; a container that needs one gets it from the runtime). Every member's
parent directory is resolved inside the root starting at the destination (existing symlinks followed as
the container would, never out of the root; missing directories made 0755 root), then the member is
made there by name with no-follow calls. The stream's root entry ("./") is skipped: the destination
keeps its owner and mode, as with docker. A name that climbs out with `..` is refused; an existing
non-directory is replaced, an existing directory is merged into and never replaced by a non-directory.
Hard links point at entries resolved the same way. Blocking: run in a thread.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field
from typing import BinaryIO

import agent.log
from agent import fsroot
from agent.errors import InvalidArgument

log = agent.log.get(__name__)

_CHUNK = 1 << 20


class Refused(InvalidArgument):
    """A stream member that cannot be extracted where it says (a `..` name, a directory in the way)."""


# ---- writing ---------------------------------------------------------------------------------------


class Padded:
    """The first `size` bytes of an fd as a file object; zeros after a premature end."""

    def __init__(self, fd: int, size: int) -> None:
        self._fd = fd
        self._left = size
        self._eof = False

    def read(self, n: int = -1) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        if n <= 0:
            return b""
        data = b"" if self._eof else os.read(self._fd, n)
        if not data:
            self._eof = True
            data = bytes(n)
        self._left -= len(data)
        return data


class TreeWriter:
    """Writes entries found by directory fd into a tar stream."""

    def __init__(self, tf: tarfile.TarFile) -> None:
        self.tf = tf
        self._links: dict[tuple[int, int], str] = {}

    def add(self, parent: int, name: str, st: os.stat_result, arcname: str) -> None:
        """One entry (`name` in directory `parent`, as `lstat` saw it); sockets are skipped."""
        info = tarfile.TarInfo(arcname)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                info.type = tarfile.LNKTYPE
                info.linkname = self._links[key]
            else:
                opened = fsroot.open_regular(parent, name)
                if opened is None:
                    return  # replaced by something else meanwhile
                fd, fst = opened
                try:
                    if fst.st_nlink > 1:
                        self._links[(fst.st_dev, fst.st_ino)] = arcname
                    info.size = fst.st_size
                    self.tf.addfile(info, Padded(fd, fst.st_size))  # type: ignore[arg-type]
                finally:
                    os.close(fd)
                return
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            try:
                info.linkname = os.readlink(name, dir_fd=parent)
            except OSError:
                return
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return
        self.tf.addfile(info)

    def tree(self, dirfd: int, prefix: str) -> None:
        """Everything below the directory `dirfd`, named `prefix/...` (or bare names for "")."""
        for entry in fsroot.walk(dirfd):
            self.add(entry.parent, entry.name, entry.st, f"{prefix}/{entry.rel}" if prefix else entry.rel)


def open_writer(out: BinaryIO) -> tarfile.TarFile:
    """A PAX tar stream writer (long names, big ids, exact sizes); names kept byte for byte."""
    return tarfile.open(  # type: ignore[call-overload, no-any-return]
        fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
    )


def write_path(out: BinaryIO, rootfd: int, path: str) -> None:
    """`path` inside the root (a symlink at its end is written as the link) with everything below it,
    named after its last component ("." for the root itself); FileNotFoundError if it does not exist."""
    norm = os.path.normpath("/" + path)
    parent_path, base = os.path.split(norm)
    try:
        parent = fsroot.resolve(rootfd, parent_path)
    except NotADirectoryError as exc:
        raise FileNotFoundError(errno.ENOENT, "not found", path) from exc
    try:
        if not base:
            base, arcname = ".", "."
        else:
            arcname = base
        st = fsroot.lstat(parent, base)
        with open_writer(out) as tf:
            writer = TreeWriter(tf)
            writer.add(parent, base, st, arcname)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(base, fsroot.O_DIR, dir_fd=parent)
                try:
                    writer.tree(fd, arcname)
                finally:
                    os.close(fd)
    finally:
        os.close(parent)


# ---- extraction ------------------------------------------------------------------------------------


def _parts(name: str, what: str) -> list[str]:
    """The components of a member name (or hard link target) relative to the destination; a name that
    climbs out of it with `..` is refused (one that climbs and comes back in is fine)."""
    if "\x00" in name:
        raise Refused(f"{what} contains NUL; refused")
    norm = posixpath.normpath(name.lstrip("/") or ".")
    if norm == ".." or norm.startswith("../"):
        raise Refused(f"{what} points outside the archive's destination; refused")
    return [p for p in norm.split("/") if p not in ("", ".")]


@dataclass
class Extractor:
    """Extracts tar members below `dest` (a path inside the root fd `rootfd`, which it does not own).

    `rename` replaces the first component of every name (docker's `cp FILE CTR:/dir/newname`);
    `owner` and `mode` replace every member's (a build's `ADD --chown/--chmod`)."""

    rootfd: int
    dest: str = "/"
    rename: str | None = None
    owner: tuple[int, int] | None = None
    mode: int | None = None
    written: int = 0
    _top: str | None = None
    _dirs: list[tuple[list[str], int]] = field(default_factory=list)
    _cache: tuple[tuple[str, ...], int] | None = None

    def close(self) -> None:
        if self._cache is not None:
            os.close(self._cache[1])
            self._cache = None

    def _name(self, name: str, what: str) -> list[str]:
        parts = _parts(name, what)
        if self.rename is not None:
            if self._top is None:
                self._top = parts[0] if parts else ""
            if not parts:
                parts = [self.rename]
            elif parts[0] == self._top:
                parts = [self.rename, *parts[1:]]
        return parts

    def _dir(self, parts: list[str]) -> int:
        """A borrowed fd of directory `dest/parts` (made, 0755 root, where missing); cached for the next
        member, which is usually in the same directory."""
        key = tuple(parts)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        self.close()
        fd = self._open_dir(parts)
        self._cache = (key, fd)
        return fd

    def _path(self, parts: list[str]) -> str:
        return "/".join([self.dest.rstrip("/"), *parts]) or "/"

    def _open_dir(self, parts: list[str]) -> int:
        try:
            return fsroot.resolve(self.rootfd, self._path(parts))
        except FileNotFoundError:
            if not parts:
                raise
        except NotADirectoryError as exc:
            raise Refused(f"cannot extract into {self._path(parts)}: not a directory") from exc
        parent = self._open_dir(parts[:-1])
        try:
            try:
                os.mkdir(parts[-1], 0o700, dir_fd=parent)
            except FileExistsError as exc:  # a dangling symlink, or a race
                raise Refused(f"cannot extract into {self._path(parts)}: not a directory") from exc
            fd = os.open(parts[-1], fsroot.O_DIR, dir_fd=parent)
            try:
                os.fchmod(fd, 0o755)
            finally:
                os.close(fd)
        finally:
            os.close(parent)
        return fsroot.resolve(self.rootfd, self._path(parts))

    def _clear(self, pfd: int, base: str, path: str) -> None:
        """Make room for a non-directory: remove what is there unless it is a directory."""
        try:
            st = fsroot.lstat(pfd, base)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise Refused(f"cannot overwrite directory {path} with a non-directory")
        os.unlink(base, dir_fd=pfd)

    def member(self, tf: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self._name(member.name, f"entry {member.name[:200]}")
        uid, gid = self.owner or (member.uid, member.gid)
        mode = self.mode if self.mode is not None else member.mode & 0o7777
        ns = int(float(member.mtime) * 1_000_000_000)
        if not parts:
            return  # the destination itself ("./"): it exists and keeps its owner and mode, as in docker
        base = parts[-1]
        path = self._path(parts)
        pfd = self._dir(parts[:-1])
        if member.isdir():
            try:
                st = fsroot.lstat(pfd, base)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(base, dir_fd=pfd)
                    raise FileNotFoundError
            except FileNotFoundError:
                os.mkdir(base, 0o700, dir_fd=pfd)
            fd = os.open(base, fsroot.O_DIR, dir_fd=pfd)
            try:
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            self._dirs.append((parts, ns))
            return
        if member.islnk():
            self._hardlink(member, pfd, base, path)
            return
        self._clear(pfd, base, path)
        if member.isreg():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(base, flags, 0o600, dir_fd=pfd)
            try:
                src = tf.extractfile(member)
                assert src is not None
                while chunk := src.read(_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    self.written += len(chunk)
                os.fchown(fd, uid, gid)
                os.fchmod(fd, mode)
                os.utime(fd, ns=(ns, ns))
            finally:
                os.close(fd)
            return
        if member.issym():
            os.symlink(member.linkname, base, dir_fd=pfd)
            os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            return
        if member.ischr() or member.isblk():
            # the agent's policy (as for image layers): no device nodes from outside under the data root
            log.info("copy.device_skipped", entry=path[:200], device=f"{member.devmajor}:{member.devminor}")
            return
        if member.isfifo():
            kind = stat.S_IFIFO
            os.mkfifo(base, 0o600, dir_fd=pfd)
            # by an O_PATH fd of the node just made: a name could be swapped for a symlink meanwhile
            fd = os.open(base, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                if stat.S_IFMT(os.fstat(fd).st_mode) == kind:
                    os.chown(f"/proc/self/fd/{fd}", uid, gid)
                    os.chmod(f"/proc/self/fd/{fd}", mode)
            finally:
                os.close(fd)
            os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            return
        # other types (sockets cannot be in a tar; unknown types): nothing to make

    def _hardlink(self, member: tarfile.TarInfo, pfd: int, base: str, path: str) -> None:
        link = f"hard link {member.name[:200]} -> {member.linkname[:200]}"
        tparts = self._name(member.linkname, link)
        if not tparts:
            raise Refused(f"{link}: the target is the archive's destination directory; refused")
        missing = Refused(f"{link}: the target is not in the archive (or comes after the link)")
        try:
            tfd = fsroot.resolve(self.rootfd, self._path(tparts[:-1]))
        except (FileNotFoundError, NotADirectoryError) as exc:
            raise missing from exc
        try:
            try:
                tst = fsroot.lstat(tfd, tparts[-1])
            except FileNotFoundError as exc:
                raise missing from exc
            if stat.S_ISDIR(tst.st_mode):
                raise Refused(f"{link}: the target is a directory")
            if (tst.st_dev, tst.st_ino) == _ino(pfd, base):
                return
            self._clear(pfd, base, path)
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)

    def finish(self) -> None:
        """Directory mtimes last (making their entries changed them), deepest first."""
        self.close()
        for parts, ns in sorted(self._dirs, key=lambda item: len(item[0]), reverse=True):
            try:
                pfd = self._dir(parts[:-1])
                os.utime(parts[-1], ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
            except (OSError, InvalidArgument):
                continue
        self.close()


def _ino(dirfd: int, name: str) -> tuple[int, int] | None:
    try:
        st = fsroot.lstat(dirfd, name)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def extract(
    src: BinaryIO,
    rootfd: int,
    dest: str = "/",
    rename: str | None = None,
    *,
    owner: tuple[int, int] | None = None,
    mode: int | None = None,
) -> int:
    """Unpack a tar stream (plain or compressed) below `dest` inside the root; returns file bytes written.

    A member that cannot be extracted stops it with `Refused` (what was extracted before stays);
    a corrupt stream is InvalidArgument."""
    ex = Extractor(rootfd, dest, rename, owner, mode)
    try:
        try:
            tf = tarfile.open(fileobj=src, mode="r|*", encoding="utf-8", errors="surrogateescape")  # type: ignore[call-overload]
        except tarfile.TarError as exc:
            raise InvalidArgument(f"not a tar stream: {exc}") from exc
        with tf:
            while True:
                try:
                    member = tf.next()
                except tarfile.TarError as exc:
                    raise InvalidArgument(f"corrupt tar stream: {exc}") from exc
                if member is None:
                    break
                tf.members = []  # type: ignore[attr-defined]  # streaming: keep no list of headers
                try:
                    ex.member(tf, member)
                except tarfile.TarError as exc:
                    raise InvalidArgument(f"corrupt tar stream at {member.name[:200]!r}: {exc}") from exc
        ex.finish()
    finally:
        ex.close()
    return ex.written
