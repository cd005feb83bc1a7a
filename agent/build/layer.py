"""A layer from a directory diff: an overlayfs upper dir written as an OCI layer tar (gzip), with digests.

`write_layer(upper, out)` walks the upper directory of a container's overlay (after it was unmounted)
in name order, parents before children, and writes what changed as a layer:

* overlay whiteouts (character device 0:0, or an empty file with `trusted.overlay.whiteout`) become
  `.wh.NAME` entries; a directory with `trusted.overlay.opaque=y` is written followed by `.wh..wh..opq`
  (its lower contents are hidden);
* regular files, directories, symlinks, FIFOs and devices keep their mode, numeric owner, whole-second
  mtime and xattrs (overlay's own `trusted.overlay.*` are dropped); a file linked several times in the diff
  becomes one file plus hardlinks. User and group names, atime and ctime are left out.

The walk is by directory fd without following any symlink (`agent.fsroot`): a commit may run on a live
container's upper dir (`--pause=false`), whose processes could swap a file for a symlink to a host path
meanwhile; files are opened with O_NOFOLLOW and only if they are still regular files.

The same upper dir always gives the same bytes (entries sorted, gzip header without name or time), so
the layer digest is reproducible. Returns the compressed digest and size and the diff ID (digest of the
uncompressed tar). Blocking: call it through `asyncio.to_thread`. Used by `build` and `commit`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agent import fsroot, treetar
from agent.errors import Internal

MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OPAQUE_XATTR = "trusted.overlay.opaque"
_WHITEOUT_XATTR = "trusted.overlay.whiteout"
_UNSUPPORTED_XATTRS = ("trusted.overlay.redirect", "trusted.overlay.metacopy")
_OVERLAY_XATTR_PREFIX = "trusted.overlay."
DEFAULT_LEVEL = 6
_COPY_BUF = 1 << 20


@dataclass(frozen=True)
class LayerInfo:
    digest: str  # sha256 of the compressed blob, "sha256:<hex>"
    size: int  # bytes of the compressed blob
    diff_id: str  # sha256 of the uncompressed tar
    uncompressed_size: int
    entries: int
    media_type: str = MEDIA_TYPE

    @property
    def empty(self) -> bool:
        return self.entries == 0


class _Hashing:
    """A write-only file object that hashes and counts what passes through to `sink`."""

    def __init__(self, sink: BinaryIO | gzip.GzipFile) -> None:
        self.sink = sink
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.hash.update(data)
        self.size += len(data)
        self.sink.write(data)
        return len(data)

    def flush(self) -> None:
        self.sink.flush()

    @property
    def digest(self) -> str:
        return f"sha256:{self.hash.hexdigest()}"


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    out: dict[str, bytes] = {}
    for name in sorted(names):
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _is_whiteout(st: os.stat_result, xattrs: dict[str, bytes]) -> bool:
    if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
        return True
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and _WHITEOUT_XATTR in xattrs


class _Writer:
    def __init__(self, tf: tarfile.TarFile, upper: Path) -> None:
        self.tf = tf
        self.upper = upper
        self.links: dict[tuple[int, int], str] = {}
        self.entries = 0
        self.exclude: frozenset[str] = frozenset()  # commit: runc's mount-point stubs

    def _info(self, name: str, st: os.stat_result, xattrs: dict[str, bytes]) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        kept = {k: v for k, v in xattrs.items() if not k.startswith(_OVERLAY_XATTR_PREFIX)}
        if kept:
            info.pax_headers = {
                f"SCHILY.xattr.{k}": v.decode("utf-8", "surrogateescape") for k, v in kept.items()
            }
        return info

    def _whiteout(self, name: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(name)
        info.mode = 0
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        self.tf.addfile(info)
        self.entries += 1

    def walk(self, dirfd: int, rel: str) -> None:
        """The entries of directory `dirfd` (`rel` below the upper dir), by name, never following links."""
        for entry_name in sorted(os.listdir(dirfd)):
            name = f"{rel}/{entry_name}" if rel else entry_name
            if name in self.exclude:  # commit: left out as the caller asked
                continue
            try:
                st = fsroot.lstat(dirfd, entry_name)
            except FileNotFoundError:
                continue  # removed meanwhile (a live container)
            xattrs = fsroot.xattrs(dirfd, entry_name)
            for unsupported in _UNSUPPORTED_XATTRS:
                if unsupported in xattrs:
                    raise Internal(
                        f"cannot export {name}: overlayfs {unsupported.rsplit('.', 1)[1]} is in use; "
                        "mount build overlays with redirect_dir=off,metacopy=off"
                    )
            parent, _, base = name.rpartition("/")
            if _is_whiteout(st, xattrs):
                self._whiteout(f"{parent}/{WHITEOUT_PREFIX}{base}" if parent else WHITEOUT_PREFIX + base, st)
                continue
            info = self._info(name, st, xattrs)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                info.type = tarfile.DIRTYPE
                self.tf.addfile(info)
                self.entries += 1
                if xattrs.get(_OPAQUE_XATTR) == b"y":
                    self._whiteout(f"{name}/{OPAQUE_MARKER}", st)
                try:
                    sub = os.open(entry_name, fsroot.O_DIR, dir_fd=dirfd)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                        continue  # replaced meanwhile
                    raise
                try:
                    self.walk(sub, name)
                finally:
                    os.close(sub)
            elif stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in self.links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = self.links[key]
                    self.tf.addfile(info)
                else:
                    opened = fsroot.open_regular(dirfd, entry_name)
                    if opened is None:
                        continue  # replaced meanwhile by something that is not a file
                    fd, fst = opened
                    try:
                        if st.st_nlink > 1:
                            self.links[key] = name
                        info.size = fst.st_size
                        self.tf.addfile(info, treetar.Padded(fd, fst.st_size))  # type: ignore[arg-type]
                    finally:
                        os.close(fd)
                self.entries += 1
            elif stat.S_ISLNK(mode):
                info.type = tarfile.SYMTYPE
                info.linkname = os.readlink(entry_name, dir_fd=dirfd)
                self.tf.addfile(info)
                self.entries += 1
            elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                info.type = (
                    tarfile.FIFOTYPE
                    if stat.S_ISFIFO(mode)
                    else tarfile.CHRTYPE
                    if stat.S_ISCHR(mode)
                    else tarfile.BLKTYPE
                )
                info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                self.tf.addfile(info)
                self.entries += 1
            # sockets cannot be represented in a tar: left out, as Docker does


def strip_overlay_metadata(upper: Path) -> None:
    """Drop overlayfs bookkeeping xattrs (origin, impure, ...) from a former upper dir before it serves as
    a lower dir; whiteouts and `opaque=y` stay, they are the layer's content."""
    for dirpath, dirnames, filenames in os.walk(upper):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            for attr, value in _xattrs(path).items():
                if not attr.startswith(_OVERLAY_XATTR_PREFIX) or attr == _WHITEOUT_XATTR:
                    continue
                if attr == _OPAQUE_XATTR and value == b"y":
                    continue
                with contextlib.suppress(OSError):
                    os.removexattr(path, attr, follow_symlinks=False)


def write_layer(
    upper: Path, out: BinaryIO, *, level: int = DEFAULT_LEVEL, exclude: frozenset[str] = frozenset()
) -> LayerInfo:
    """Write the diff in `upper` to `out` as a gzip-compressed OCI layer; see the module docstring.

    `exclude`: paths relative to `upper` ("etc/hosts") to leave out, with everything under them
    (commit uses it for the files runc created as mount points in a live container's upper dir)."""
    compressed = _Hashing(out)
    with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, compresslevel=level, mtime=0) as gz:  # type: ignore[arg-type]
        raw = _Hashing(gz)
        tf = tarfile.open(  # type: ignore[call-overload]
            fileobj=raw, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
        )
        tf.copybufsize = _COPY_BUF
        writer = _Writer(tf, upper)
        writer.exclude = exclude
        rootfd = os.open(upper, fsroot.O_DIR)
        try:
            with tf:
                writer.walk(rootfd, "")
        finally:
            os.close(rootfd)
    with contextlib.suppress(AttributeError, OSError):
        out.flush()
    return LayerInfo(
        digest=compressed.digest,
        size=compressed.size,
        diff_id=raw.digest,
        uncompressed_size=raw.size,
        entries=writer.entries,
    )
