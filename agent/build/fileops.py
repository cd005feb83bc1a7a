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
import tarfile
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agent.build.dockerignore import glob_regex
from agent.errors import InvalidArgument

_MAX_LINKS = 40
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


def parse_chown(spec: str, passwd: str, group: str) -> tuple[int, int]:
    """`--chown=user[:group]` against the image's passwd/group files; a lone user sets gid = uid."""
    user, _, grp = spec.partition(":")
    uid = int(user) if user.isdigit() else _lookup(passwd, user)
    if uid is None:
        raise InvalidArgument(f"--chown={spec}: unable to find user {user} in the image's /etc/passwd")
    if not grp:
        return uid, uid
    gid = int(grp) if grp.isdigit() else _lookup(group, grp)
    if gid is None:
        raise InvalidArgument(f"--chown={spec}: unable to find group {grp} in the image's /etc/group")
    return uid, gid


def read_etc(rootfs: Path, name: str) -> str:
    """/etc/<name> of a rootfs (symlinks followed inside it), "" when absent."""
    try:
        return resolve_in_root(rootfs, f"/etc/{name}").read_text(errors="replace")
    except (OSError, InvalidArgument):
        return ""


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


def _hard_link(
    archive_name: str, member: tarfile.TarInfo, rootfs: Path, dest_rel: str, target: Path, copier: _Copier
) -> None:
    """A hard link of the archive: its target is a path of the archive itself, so it must stay inside the
    destination (a `..` that climbs out is refused, as Docker does) and exist (extracted earlier)."""
    link = f"{archive_name}: hard link {member.name} -> {member.linkname}"
    norm = posixpath.normpath(member.linkname.lstrip("/") or ".")
    if norm == ".." or norm.startswith("../"):
        raise InvalidArgument(f"{link} points outside the archive's destination; refused")
    source = resolve_in_root(rootfs, "/".join([dest_rel.rstrip("/"), norm]), follow_last=False)
    if not os.path.lexists(source):
        raise InvalidArgument(f"{link}: the target is not in the archive (or comes after the link)")
    if os.path.isdir(source) and not os.path.islink(source):
        raise InvalidArgument(f"{link}: the target is a directory")
    copier._clear(target, is_dir=False)
    os.link(source, target, follow_symlinks=False)


def extract_archive(archive: Path, rootfs: Path, dest_rel: str, options: CopyOptions) -> None:
    """Unpack a local tar (any supported compression) into `dest_rel` inside the rootfs, like `tar -x`."""
    copier = _Copier(rootfs, CopyOptions(owner=options.owner, keep_owner=True, mode=options.mode))
    copier.ensure_dir(dest_rel)
    try:
        tf = tarfile.open(archive, mode="r:*")
    except (tarfile.TarError, OSError) as exc:
        raise InvalidArgument(f"cannot read archive {archive.name}: {exc}") from None
    dir_times: list[tuple[Path, float]] = []
    with tf:
        try:
            for member in tf:
                parts = [p for p in _split(member.name) if p != ".."]
                if not parts:
                    continue
                parent_rel = "/".join([dest_rel.rstrip("/"), *parts[:-1]])
                parent = copier.ensure_dir(parent_rel)
                target = parent / parts[-1]
                owner = options.owner or (member.uid, member.gid)
                if member.isdir():
                    if os.path.lexists(target) and not target.is_dir():
                        os.unlink(target)
                    if not os.path.lexists(target):
                        os.mkdir(target, 0o700)
                    dir_times.append((target, float(member.mtime)))
                elif member.isreg():
                    copier._clear(target, is_dir=False)
                    src = tf.extractfile(member)
                    assert src is not None
                    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        shutil.copyfileobj(src, out, 1 << 20)
                elif member.issym():
                    copier._clear(target, is_dir=False)
                    os.symlink(member.linkname, target)
                elif member.islnk():
                    _hard_link(archive.name, member, rootfs, dest_rel, target, copier)
                elif member.isfifo() or member.ischr() or member.isblk():
                    copier._clear(target, is_dir=False)
                    kind = (
                        stat.S_IFIFO if member.isfifo() else stat.S_IFCHR if member.ischr() else stat.S_IFBLK
                    )
                    os.mknod(target, kind | 0o600, os.makedev(member.devmajor, member.devminor))
                else:
                    continue
                os.chown(target, *owner, follow_symlinks=False)
                if not member.issym():
                    mode = options.mode if options.mode is not None else member.mode & 0o7777
                    os.chmod(target, mode)
                    if not member.isdir():
                        os.utime(target, (member.mtime, member.mtime))
        except tarfile.TarError as exc:
            raise InvalidArgument(f"archive {archive.name} is corrupt: {exc}") from None
    for path, mtime in reversed(dir_times):
        os.utime(path, (mtime, mtime))


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
