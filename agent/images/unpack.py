"""Layer decompression and hostile-input-safe unpacking of layer tarballs into a snapshot directory.

Safety model: every entry is created relative to a directory file descriptor obtained by walking the
entry's parent components one at a time with `O_NOFOLLOW|O_DIRECTORY` from the snapshot root. A symlink
(or non-directory) anywhere in a parent path is refused, `..` components are refused, leading `/` is
stripped, and the final component is always removed and recreated with `O_EXCL|O_NOFOLLOW`; hardlink
targets are resolved the same way and linked without following symlinks. No path outside the root is ever
opened, so nothing can be written outside the snapshot whatever the tarball says.

OCI whiteouts become overlayfs whiteouts: `.wh.NAME` → character device 0:0 `NAME`, `.wh..wh..opq` → the
parent directory gets `trusted.overlay.opaque=y`. Layer-provided `trusted.overlay.*` xattrs are dropped.

Device nodes are not created (policy): a block or character device from an image would sit in the
snapshot as a real device file (`brw-rw-rw- 7,0` opens a loop device), and containers never need one —
the runtime makes `/dev` itself. They are skipped and logged (`unpack.device_skipped`). A character
device 0:0 is kept: it is an overlayfs whiteout (as tools that tar an overlay upper dir write it) and
opens nothing.

All functions here block; call them through `asyncio.to_thread` (hashlib and zlib release the GIL, so
several layers unpack in parallel threads).
"""

from __future__ import annotations

import bz2
import errno
import gzip
import hashlib
import io
import lzma
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import IO, Protocol, cast

import zstandard

import agent.log
from agent.bytestreams import Prefixed, ReadStream, Source, Tee
from agent.errors import NO_SPACE_ERRNOS, InvalidArgument

log = agent.log.get(__name__)

_CHUNK = 1 << 20
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
XZ_MAGIC = b"\xfd7zXZ\x00"
BZIP2_MAGIC = b"BZh"


class UnsafeEntry(InvalidArgument):
    """A layer entry that would land outside its snapshot or cannot be represented safely."""


class Decompressor(Protocol):
    """Push-style streaming decompressor: feed compressed chunks, get uncompressed bytes back."""

    def decompress(self, data: bytes) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def decompress(self, data: bytes) -> bytes:
        return data

    def flush(self) -> bytes:
        return b""


class _Gzip:
    """Multi-member gzip (as `gzip` and pigz write), trailing zero padding ignored."""

    def __init__(self) -> None:
        self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            out.append(self._d.decompress(data))
            if not self._d.eof:
                break
            data = self._d.unused_data
            if not data.startswith(GZIP_MAGIC):
                break  # trailing padding after the last member
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        return b"".join(out)

    def flush(self) -> bytes:
        return self._d.flush()


class _Zstd:
    def __init__(self) -> None:
        self._d = zstandard.ZstdDecompressor().decompressobj(read_across_frames=True)

    def decompress(self, data: bytes) -> bytes:
        out: bytes = self._d.decompress(data)
        return out

    def flush(self) -> bytes:
        return b""


def compression_of(media_type: str) -> str:
    """ "gzip", "zstd" or "" for a layer media type (OCI and Docker names); InvalidArgument if unknown."""
    mt = media_type.strip().lower()
    if mt.endswith(("+gzip", ".tar.gzip", ".tar.gz")):
        return "gzip"
    if mt.endswith(("+zstd", ".tar.zstd", ".tar.zst")):
        return "zstd"
    if mt.endswith((".tar", "v1.tar")):
        return ""
    raise InvalidArgument(f"unsupported layer media type {media_type!r}")


def decompressor(media_type: str) -> Decompressor:
    """A push-style streaming decompressor for a layer media type (gzip, zstd or uncompressed)."""
    kind = compression_of(media_type)
    if kind == "gzip":
        return _Gzip()
    if kind == "zstd":
        return _Zstd()
    return _Identity()


def sniff_compression(head: bytes) -> str:
    """Compression by magic number: "gzip", "zstd", "xz", "bzip2" or "" (plain)."""
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    if head.startswith(XZ_MAGIC):
        return "xz"
    if head.startswith(BZIP2_MAGIC):
        return "bzip2"
    return ""


def _as_file(src: Source) -> IO[bytes]:
    """The decompressors' stubs ask for a whole file object; they only ever call `read(size)` on it."""
    return cast(IO[bytes], src)


class LayerStream(ReadStream):
    """A readable view of the uncompressed bytes of a layer, hashing them on the way (the diff ID).

    `compression` is "gzip", "zstd", "xz", "bzip2", "" or None (sniff the magic number).
    """

    def __init__(self, src: Source, compression: str | None = None) -> None:
        if compression is None:
            head = src.read(8)
            compression = sniff_compression(head)
            src = io.BufferedReader(Prefixed(head, src))
        self.compression = compression
        self._src: Source
        if compression == "gzip":
            self._src = gzip.GzipFile(fileobj=_as_file(src), mode="rb")
        elif compression == "zstd":
            self._src = zstandard.ZstdDecompressor().stream_reader(_as_file(src), read_across_frames=True)
        elif compression == "xz":
            self._src = lzma.LZMAFile(_as_file(src))
        elif compression == "bzip2":
            self._src = bz2.BZ2File(_as_file(src))
        elif compression == "":
            self._src = src
        else:
            raise InvalidArgument(f"unsupported compression {compression!r}")
        self._hash = hashlib.sha256()
        self.size = 0

    @classmethod
    def for_media_type(cls, src: Source, media_type: str) -> LayerStream:
        return cls(src, compression_of(media_type))

    def read(self, n: int | None = -1) -> bytes:
        try:
            data = self._src.read(_CHUNK if n is None or n < 0 else n)
        except (OSError, EOFError, zlib.error, lzma.LZMAError, zstandard.ZstdError) as exc:
            if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
                raise  # a full disk where the source tees the bytes to, not corrupt data
            raise InvalidArgument(f"corrupt {self.compression or 'tar'} layer data: {exc}") from exc
        self._hash.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read to the end so `diff_id` covers every byte (tar padding included)."""
        while self.read(_CHUNK):
            pass

    @property
    def diff_id(self) -> str:
        return f"sha256:{self._hash.hexdigest()}"


def _split(name: str) -> list[str]:
    if "\x00" in name:
        raise UnsafeEntry(f"layer entry name contains NUL: {name!r}")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeEntry(f"layer entry {name!r} escapes the layer root")
    return parts


class _Tree:
    """Relative-to-root operations that never follow a symlink or leave the root."""

    def __init__(self, root: Path) -> None:
        try:
            self.rootfd = os.open(root, _O_DIR)
        except OSError as exc:
            raise InvalidArgument(f"unpack target {root} is not a directory: {exc}") from exc
        self._cache_key: tuple[str, ...] | None = None
        self._cache_fd = -1

    def close(self) -> None:
        self.invalidate()
        os.close(self.rootfd)

    def invalidate(self) -> None:
        if self._cache_fd >= 0:
            os.close(self._cache_fd)
        self._cache_key = None
        self._cache_fd = -1

    def parent(self, parts: list[str], *, create: bool) -> int:
        """A borrowed fd of the directory holding parts[-1] (valid until the next call)."""
        key = tuple(parts[:-1])
        if key == self._cache_key:
            return self._cache_fd
        fd = os.dup(self.rootfd)
        try:
            for comp in key:
                try:
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                    os.fchmod(nfd, 0o755)  # an implied parent: 0755 whatever the agent's umask (0077)
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeEntry(
                            f"layer entry {'/'.join(parts)!r}: parent {comp!r} is a symlink or not a dir"
                        ) from exc
                    raise
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self.invalidate()
        self._cache_key, self._cache_fd = key, fd
        return fd

    def remove(self, dirfd: int, name: str) -> None:
        """Remove whatever is at name (a directory tree too) without following symlinks."""
        try:
            st = os.lstat(name, dir_fd=dirfd)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self.invalidate_below()
            shutil.rmtree(name, dir_fd=dirfd)
        else:
            os.unlink(name, dir_fd=dirfd)

    def invalidate_below(self) -> None:
        # A removed directory may be the cached parent or one of its ancestors.
        if self._cache_key:
            self.invalidate()


def _xattrs(member: tarfile.TarInfo) -> list[tuple[str, bytes]]:
    out = []
    for key, value in member.pax_headers.items():
        if not key.startswith("SCHILY.xattr."):
            continue
        name = key[len("SCHILY.xattr.") :]
        if name.startswith("trusted.overlay."):
            continue  # only whiteout conversion may set overlay metadata
        out.append((name, value.encode("utf-8", "surrogateescape")))
    return out


def _set_xattrs(target: int | str, member: tarfile.TarInfo, *, symlink: bool = False) -> None:
    for name, value in _xattrs(member):
        try:
            os.setxattr(target, name, value, follow_symlinks=not symlink)
        except OSError as exc:
            if exc.errno in (errno.ENOTSUP, errno.EPERM, errno.EINVAL):
                log.warning("unpack.xattr_skipped", entry=member.name, xattr=name, error=exc.strerror)
                continue
            raise


def _mtime_ns(member: tarfile.TarInfo) -> int:
    return int(float(member.mtime) * 1_000_000_000)


def unpack_layer(tar_stream: Source, target: Path) -> int:
    """Unpack an uncompressed layer tar stream into `target`; returns the bytes of file data written.

    Unsafe entries raise UnsafeEntry (an InvalidArgument) and corrupt tars InvalidArgument; the caller
    throws the half-filled target away. The stream is read to its end so a wrapping `LayerStream` has the
    complete diff ID afterwards.
    """
    tree = _Tree(target)
    written = 0
    dir_times: list[tuple[list[str], int]] = []
    counted = Tee(tar_stream, lambda _data: None)
    try:
        try:
            tf = tarfile.open(fileobj=counted, mode="r|", encoding="utf-8", errors="surrogateescape")
        except tarfile.ReadError as exc:
            if counted.total == 0:
                return 0  # an empty layer: not even an end-of-archive block
            raise InvalidArgument(f"layer is not a tar archive: {exc}") from exc
        with tf:
            while True:
                try:
                    member = tf.next()
                except tarfile.TarError as exc:
                    raise InvalidArgument(f"corrupt layer tar: {exc}") from exc
                if member is None:
                    break
                tf.members = []  # type: ignore[attr-defined]  # streaming: don't keep every header in memory
                try:
                    written += _apply(tf, tree, member, dir_times)
                except UnsafeEntry:
                    raise
                except (ValueError, OSError) as exc:
                    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
                        raise
                    raise UnsafeEntry(f"layer entry {member.name[:200]!r}: {exc}") from exc
            _set_dir_times(tree, dir_times)
        while tar_stream.read(_CHUNK):
            pass
    finally:
        tree.close()
    return written


def _set_dir_times(tree: _Tree, dir_times: list[tuple[list[str], int]]) -> None:
    for parts, ns in sorted(dir_times, key=lambda item: len(item[0]), reverse=True):
        try:
            if not parts:
                os.utime(tree.rootfd, ns=(ns, ns))
                continue
            fd = tree.parent(parts, create=False)
            os.utime(parts[-1], ns=(ns, ns), dir_fd=fd, follow_symlinks=False)
        except (FileNotFoundError, UnsafeEntry):
            continue


def _copy_data(tf: tarfile.TarFile, member: tarfile.TarInfo, fd: int) -> int:
    """Write a regular member's data; sparse members keep their holes."""
    src = tf.fileobj
    assert src is not None
    src.seek(member.offset_data)
    sparse: list[tuple[int, int]] | None = member.sparse  # type: ignore[assignment]
    if sparse:
        for offset, numbytes in sparse:
            remaining = numbytes
            pos = offset
            while remaining:
                chunk = src.read(min(remaining, _CHUNK))
                if not chunk:
                    raise InvalidArgument(f"layer entry {member.name!r}: unexpected end of data")
                os.pwrite(fd, chunk, pos)
                pos += len(chunk)
                remaining -= len(chunk)
        os.ftruncate(fd, member.size)
        return sum(n for _, n in sparse)
    remaining = member.size
    while remaining:
        chunk = src.read(min(remaining, _CHUNK))
        if not chunk:
            raise InvalidArgument(f"layer entry {member.name!r}: unexpected end of data")
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]
        remaining -= len(chunk)
    return member.size


def _apply(
    tf: tarfile.TarFile, tree: _Tree, member: tarfile.TarInfo, dir_times: list[tuple[list[str], int]]
) -> int:
    parts = _split(member.name)
    uid, gid = member.uid, member.gid
    mode = member.mode & 0o7777

    if not parts:  # the layer root itself ("./")
        if member.isdir():
            os.chown(tree.rootfd, uid, gid)
            os.chmod(tree.rootfd, mode)
            _set_xattrs(tree.rootfd, member)
            dir_times.append(([], _mtime_ns(member)))
        return 0

    base = parts[-1]
    if base.startswith(WHITEOUT_PREFIX):
        return _whiteout(tree, parts, member)

    pfd = tree.parent(parts, create=True)

    if member.isdir():
        try:
            st = os.lstat(base, dir_fd=pfd)
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(base, dir_fd=pfd)
                raise FileNotFoundError
        except FileNotFoundError:
            os.mkdir(base, 0o700, dir_fd=pfd)
        fd = os.open(base, _O_DIR, dir_fd=pfd)
        try:
            os.chown(fd, uid, gid)
            os.chmod(fd, mode)
            _set_xattrs(fd, member)
        finally:
            os.close(fd)
        dir_times.append((parts, _mtime_ns(member)))
        return 0

    if member.islnk():
        tparts = _split(member.linkname)
        if not tparts:
            raise UnsafeEntry(f"hardlink {member.name!r} points at the layer root")
        if tparts == parts:
            return 0
        tfd = os.dup(tree.parent(tparts, create=False)) if len(tparts) > 1 else os.dup(tree.rootfd)
        try:
            try:
                tst = os.lstat(tparts[-1], dir_fd=tfd)
            except FileNotFoundError as exc:
                raise UnsafeEntry(
                    f"hardlink {member.name!r} → {member.linkname!r}: target not in this layer"
                ) from exc
            if stat.S_ISDIR(tst.st_mode):
                raise UnsafeEntry(f"hardlink {member.name!r} → {member.linkname!r} is a directory")
            pfd = tree.parent(parts, create=True)
            tree.remove(pfd, base)
            pfd = tree.parent(parts, create=True)
            os.link(tparts[-1], base, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tfd)
        return 0

    tree.remove(pfd, base)
    pfd = tree.parent(parts, create=True)
    ns = _mtime_ns(member)

    if member.isreg():
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(base, flags, 0o600, dir_fd=pfd)
        try:
            n = _copy_data(tf, member, fd)
            os.chown(fd, uid, gid)
            os.chmod(fd, mode)
            _set_xattrs(fd, member)
            os.utime(fd, ns=(ns, ns))
        finally:
            os.close(fd)
        return n

    if member.issym():
        os.symlink(member.linkname, base, dir_fd=pfd)
        os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        _set_xattrs(f"/proc/self/fd/{pfd}/{base}", member, symlink=True)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
        return 0

    if (member.ischr() or member.isblk()) and not _is_whiteout_device(member):
        log.info(
            "unpack.device_skipped",
            entry=member.name[:200],
            type="block" if member.isblk() else "char",
            device=f"{member.devmajor}:{member.devminor}",
        )
        return 0

    if member.ischr() or member.isblk() or member.isfifo():
        if member.isfifo():
            os.mkfifo(base, 0o600, dir_fd=pfd)
        else:
            kind = stat.S_IFCHR if member.ischr() else stat.S_IFBLK
            os.mknod(base, kind | 0o600, os.makedev(member.devmajor, member.devminor), dir_fd=pfd)
        # Freshly created by us and not a symlink, so following is safe here.
        os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
        os.chmod(base, mode, dir_fd=pfd)
        _set_xattrs(f"/proc/self/fd/{pfd}/{base}", member)
        os.utime(base, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
        return 0

    log.warning("unpack.entry_skipped", entry=member.name[:200], type=repr(member.type))
    return 0


def _is_whiteout_device(member: tarfile.TarInfo) -> bool:
    return member.ischr() and member.devmajor == 0 and member.devminor == 0


def _whiteout(tree: _Tree, parts: list[str], member: tarfile.TarInfo) -> int:
    base = parts[-1]
    pfd = tree.parent(parts, create=True)
    if base == OPAQUE_WHITEOUT:
        fd = os.open(".", _O_DIR, dir_fd=pfd)
        try:
            os.setxattr(fd, OVERLAY_OPAQUE_XATTR, b"y")
        finally:
            os.close(fd)
        return 0
    if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
        return 0  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): meaningless here
    name = base[len(WHITEOUT_PREFIX) :]
    if name in ("", ".", ".."):
        raise UnsafeEntry(f"invalid whiteout {member.name!r}")
    tree.remove(pfd, name)
    pfd = tree.parent(parts, create=True)
    os.mknod(name, stat.S_IFCHR, os.makedev(0, 0), dir_fd=pfd)
    os.chown(name, member.uid, member.gid, dir_fd=pfd, follow_symlinks=False)
    return 0


def unpack_blob(
    blob: Source,
    media_type: str | None,
    target: Path,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[str, int, int]:
    """Decompress (by media type; sniffed when None) and unpack; returns (diff_id, tar bytes, written)."""
    src = blob if on_progress is None else Tee(blob, lambda data: on_progress(len(data)))
    stream = LayerStream(src, None if media_type is None else compression_of(media_type))
    written = unpack_layer(stream, target)
    stream.drain()
    return stream.diff_id, stream.size, written
