"""COPY and ADD on the filesystem: find the sources, hash them for the cache, copy them into a rootfs.

Paths are resolved the way a container sees them: symlinks inside the build context or a rootfs are
followed *within* that root (an absolute link target starts again at the root, `..` stops at it), so a
hostile context or image can never make the builder read or write outside. Semantics follow the
Dockerfile reference:

* sources are relative to the context (or the `--from` stage's root); globs use Go's `filepath.Match`;
  a directory source copies its contents, not itself; a top-level symlink source is followed;
* with several sources (or a glob) the destination must be a directory (end with `/`, or exist as one);
  a single file copied to a path without a trailing `/` (that is not an existing directory) is renamed;
* a relative destination is relative to WORKDIR; missing parent directories are created (0755);
* context files are owned by root, `--from` files keep their owner, `--chown` sets user and group (a
  user alone also sets the group to the same numeric id), `--chmod` sets every copied entry's mode;
* ADD extracts a local tar archive (plain, gzip, bzip2, xz — recognised by content) into the
  destination directory instead of copying it; URLs are refused.

All functions block; the builder calls them through `asyncio.to_thread`. Errors are InvalidArgument
without a line; the builder adds the Dockerfile line.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import stat
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent import fsroot, treetar
from agent.errors import InvalidArgument
from agent.oci.dockerignore import glob_regex

_MAX_LINKS = 40
ETC_FILE_MAX = 1 << 20  # /etc/passwd and /etc/group are read whole: bounded (a hostile image's may be huge)
_GLOB_CHARS = frozenset("*?[")
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")


# ---- path resolution inside a root -------------------------------------------------------------------


def _split(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def resolve_in_root(root: Path, path: str, *, follow_last: bool = True) -> Path:
    """`path` inside `root` with every symlink resolved as if `root` were `/` (chroot-like, no escape)."""
    pending = deque(_split(path))
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.popleft()
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if (pending or follow_last) and candidate.is_symlink():
            links += 1
            if links > _MAX_LINKS:
                raise InvalidArgument(f"too many levels of symbolic links in {path!r}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed(_split(target)))
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def relative_inside(path: str, what: str) -> str:
    """A source path cleaned and made relative to its root; a `../` that climbs out is refused."""
    norm = posixpath.normpath(path) if path else "."
    if norm == ".." or norm.startswith("../"):
        raise InvalidArgument(f"forbidden path outside the {what}: {path}")
    return norm.lstrip("/") or "."


# ---- sources -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    rel: str  # relative to the source root, "." for the root itself
    path: Path  # the resolved host path (inside the source root)
    is_dir: bool


def _has_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _glob(root: Path, pattern: str) -> list[str]:
    """Context-relative paths matching `pattern` component by component (meta chars never cross `/`)."""
    matches = [""]
    for part in _split(pattern):
        nxt: list[str] = []
        for base in matches:
            directory = resolve_in_root(root, base) if base else root
            if not _has_glob(part):
                candidate = f"{base}/{part}" if base else part
                if os.path.lexists(directory / part):
                    nxt.append(candidate)
                continue
            if not directory.is_dir():
                continue
            regex = glob_regex(part)
            for name in sorted(os.listdir(directory)):
                if regex.match(name):
                    nxt.append(f"{base}/{name}" if base else name)
        matches = nxt
    return sorted(m for m in matches if m)


def resolve_sources(
    root: Path, patterns: Sequence[str], what: str = "build context"
) -> tuple[list[Source], bool]:
    """The sources the patterns name, in order, and whether more than one entry was meant (glob or list)."""
    out: list[Source] = []
    multiple = len(patterns) > 1
    for pattern in patterns:
        if "://" in pattern or pattern.startswith("git@"):
            raise InvalidArgument(
                f"remote sources are not supported ({pattern}): put the file in the context"
            )
        rel = relative_inside(pattern, what)
        if _has_glob(rel):
            multiple = True
            found = _glob(root, rel)
            if not found:
                raise InvalidArgument(
                    f"no source files were specified: {pattern} matches nothing in the {what}"
                )
        else:
            found = [rel]
        for item in found:
            path = resolve_in_root(root, item) if item != "." else root
            try:
                st = os.stat(path)
            except FileNotFoundError:
                raise InvalidArgument(
                    f"{pattern}: not found in the {what}"
                    + (" (or excluded by .dockerignore)" if what == "build context" else "")
                ) from None
            out.append(Source(item, path, stat.S_ISDIR(st.st_mode)))
    return out, multiple


def _walk(path: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """(relative name, path, lstat) for everything below `path`, parents first, in name order."""
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        st = entry.stat(follow_symlinks=False)
        yield entry.name, Path(entry.path), st
        if stat.S_ISDIR(st.st_mode):
            for name, sub, sst in _walk(Path(entry.path)):
                yield f"{entry.name}/{name}", sub, sst


def checksum(sources: Sequence[Source], *, with_owner: bool = False) -> str:
    """A content hash of the sources (names, types, modes, link targets, file bytes; never mtimes)."""
    h = hashlib.sha256()

    def add(name: str, path: Path, st: os.stat_result) -> None:
        mode = st.st_mode
        owner = f"{st.st_uid}:{st.st_gid}" if with_owner else ""
        h.update(f"{name}\0{stat.S_IFMT(mode)}\0{stat.S_IMODE(mode)}\0{owner}\0".encode())
        if stat.S_ISREG(mode):
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        elif stat.S_ISLNK(mode):
            h.update(os.readlink(path).encode())
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            h.update(str(st.st_rdev).encode())
        h.update(b"\1")

    for source in sources:
        st = os.stat(source.path)
        add(f"@{source.rel}", source.path, st)
        if source.is_dir:
            for name, path, est in _walk(source.path):
                add(f"{source.rel}/{name}", path, est)
    return "sha256:" + h.hexdigest()


# ---- ownership ---------------------------------------------------------------------------------------


def _lookup(text: str, name: str) -> int | None:
    for line in text.splitlines():
        parts = line.split(":")
        if len(parts) >= 3 and parts[0] == name and parts[2].isdigit():
            return int(parts[2])
    return None


def parse_chown(spec: str, passwd: str | None, group: str | None) -> tuple[int, int]:
    """`--chown=user[:group]` against the image's passwd/group files (None: too large to read); a lone
    user sets gid = uid."""
    user, _, grp = spec.partition(":")
    for text, what, part in ((passwd, "passwd", user), (group, "group", grp)):
        if text is None and part and not part.isdigit():
            raise InvalidArgument(
                f"--chown={spec}: the image's /etc/{what} is larger than {ETC_FILE_MAX >> 20} MiB; "
                "use numeric ids"
            )
    uid = int(user) if user.isdigit() else _lookup(passwd or "", user)
    if uid is None:
        raise InvalidArgument(f"--chown={spec}: unable to find user {user} in the image's /etc/passwd")
    if not grp:
        return uid, uid
    gid = int(grp) if grp.isdigit() else _lookup(group or "", grp)
    if gid is None:
        raise InvalidArgument(f"--chown={spec}: unable to find group {grp} in the image's /etc/group")
    return uid, gid


def read_etc(rootfs: Path, name: str) -> str | None:
    """/etc/<name> of a rootfs read as data (by directory fd, bounded; never through NSS): "" when
    absent, None when too large to read (over ETC_FILE_MAX)."""
    try:
        rootfd = fsroot.open_root(rootfs)
    except OSError:
        return ""
    try:
        data = fsroot.read_file(rootfd, f"/etc/{name}", ETC_FILE_MAX)
    except InvalidArgument:  # only a file over the limit
        return None
    except OSError:
        return ""
    finally:
        os.close(rootfd)
    return "" if data is None else data.decode(errors="replace")


# ---- copying -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyOptions:
    owner: tuple[int, int] | None = None  # --chown resolved; None keeps the source owner (or root)
    keep_owner: bool = False  # --from: keep the source's owner; the context: root
    mode: int | None = None  # --chmod
    extract_archives: bool = False  # ADD


class _Copier:
    def __init__(self, rootfs: Path, options: CopyOptions) -> None:
        self.rootfs = rootfs
        self.options = options
        self.dir_times: list[tuple[Path, float]] = []

    def owner_of(self, st: os.stat_result) -> tuple[int, int]:
        if self.options.owner is not None:
            return self.options.owner
        return (st.st_uid, st.st_gid) if self.options.keep_owner else (0, 0)

    def ensure_dir(self, rel: str, *, leaf_owner: tuple[int, int] | None = None) -> Path:
        """Create the directory `rel` (and missing parents, 0755 root) inside the rootfs; return it."""
        current = ""
        parts = _split(rel)
        for i, part in enumerate(parts):
            current = f"{current}/{part}"
            path = resolve_in_root(self.rootfs, current)
            if not os.path.lexists(path):
                os.makedirs(path, 0o755)  # a symlink may have pointed several levels down
                os.chmod(path, 0o755)  # not the agent's umask (0077)
                if i == len(parts) - 1 and leaf_owner is not None:
                    os.chown(path, *leaf_owner)
            elif not path.is_dir():
                raise InvalidArgument(f"cannot copy into {current}: it exists and is not a directory")
        return resolve_in_root(self.rootfs, rel)

    def _clear(self, target: Path, *, is_dir: bool) -> None:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            if not is_dir:
                raise InvalidArgument(f"cannot overwrite directory {target.name} with a non-directory")
            return
        os.unlink(target)

    def entry(self, src: Path, st: os.stat_result, target: Path) -> None:
        """Copy one entry (not recursing) to `target`, with owner, mode and mtime."""
        mode = st.st_mode
        is_dir = stat.S_ISDIR(mode)
        self._clear(target, is_dir=is_dir)
        if is_dir:
            if not os.path.lexists(target):
                os.mkdir(target, 0o700)
        elif stat.S_ISREG(mode):
            shutil.copyfile(src, target, follow_symlinks=False)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(src), target)
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            os.mknod(target, stat.S_IFMT(mode) | 0o600, st.st_rdev)
        else:
            return  # sockets
        uid, gid = self.owner_of(st)
        os.chown(target, uid, gid, follow_symlinks=False)
        if not stat.S_ISLNK(mode):
            perm = self.options.mode if self.options.mode is not None else stat.S_IMODE(mode)
            os.chmod(target, perm)
        if is_dir:
            self.dir_times.append((target, st.st_mtime))
        else:
            os.utime(target, (st.st_mtime, st.st_mtime), follow_symlinks=False)

    def tree(self, src: Path, target_dir: Path) -> None:
        """The contents of directory `src` into the existing directory `target_dir`."""
        for name, path, st in _walk(src):
            parent, _, base = name.rpartition("/")
            where = target_dir / parent if parent else target_dir
            self.entry(path, st, where / base)

    def finish(self) -> None:
        for path, mtime in reversed(self.dir_times):
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def is_archive(path: Path) -> bool:
    """A tar file, plain or compressed with gzip, bzip2 or xz (by content, as Docker decides)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError:
        return False
    if head.startswith(_ARCHIVE_MAGIC):
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def extract_archive(archive: Path, rootfs: Path, dest_rel: str, options: CopyOptions) -> None:
    """Unpack a local tar (any supported compression) into `dest_rel` inside the rootfs, like `tar -x`.

    By directory fd (`agent.treetar`): a symlink, whether in the rootfs or made by the archive itself,
    is followed inside the rootfs only, and nothing is ever changed through one (a hard link to a
    symlink, a directory entry over one); names with `..` are refused, saying why."""
    _Copier(rootfs, CopyOptions()).ensure_dir(dest_rel)
    rootfd = fsroot.open_root(rootfs)
    try:
        with open(archive, "rb") as src:
            treetar.extract(src, rootfd, dest_rel, owner=options.owner, mode=options.mode)
    except treetar.Refused as exc:
        raise InvalidArgument(f"{archive.name}: {exc}") from None
    except InvalidArgument as exc:
        raise InvalidArgument(f"archive {archive.name} is corrupt: {exc}") from None
    finally:
        os.close(rootfd)


def copy_into(
    sources: Sequence[Source], multiple: bool, rootfs: Path, dest: str, options: CopyOptions
) -> None:
    """Copy resolved sources to `dest` (absolute, inside the rootfs); see the module docstring."""
    to_dir = dest.endswith("/")
    dest_rel = dest.rstrip("/") or "/"
    existing = resolve_in_root(rootfs, dest_rel)
    if existing.is_dir():
        to_dir = True
    if multiple and not to_dir:
        raise InvalidArgument(
            "when copying more than one source (or a wildcard) the destination must be a directory "
            f"and end with a /: {dest}"
        )
    copier = _Copier(rootfs, options)
    for source in sources:
        if source.is_dir:
            target = copier.ensure_dir(dest_rel, leaf_owner=options.owner)
            copier.tree(source.path, target)
        elif options.extract_archives and is_archive(source.path):
            extract_archive(source.path, rootfs, dest_rel, options)
        else:
            if to_dir:
                parent = copier.ensure_dir(dest_rel, leaf_owner=options.owner)
                target = (
                    parent / source.path.name
                    if source.rel == "."
                    else parent / posixpath.basename(source.rel)
                )
            else:
                parent_rel, _, base = dest_rel.rpartition("/")
                parent = copier.ensure_dir(parent_rel or "/")
                target = parent / base
            copier.entry(source.path, os.stat(source.path), target)
    copier.finish()


def ensure_directory(rootfs: Path, path: str) -> bool:
    """WORKDIR: create `path` (0755, root) inside the rootfs if missing; True when something was made."""
    target = resolve_in_root(rootfs, path)
    if target.is_dir():
        return False
    _Copier(rootfs, CopyOptions()).ensure_dir(path)
    return True
