"""COPY/ADD semantics on real directories: sources, globs, destinations, owners, archives, escapes."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from agent.build import fileops
from agent.build.fileops import CopyOptions
from agent.errors import InvalidArgument
from tests.support.images import tree_summary

pytestmark = pytest.mark.root  # chown and mknod need root


@pytest.fixture
def ctx(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "src" / "sub").mkdir(parents=True)
    (root / "src" / "a.txt").write_text("a")
    (root / "src" / "b.txt").write_text("b")
    (root / "src" / "c.md").write_text("c")
    (root / "src" / "sub" / "d.txt").write_text("d")
    (root / "src" / "run.sh").write_text("#!/bin/sh\n")
    (root / "src" / "run.sh").chmod(0o755)
    os.symlink("a.txt", root / "src" / "link")
    os.symlink("/src/b.txt", root / "abs-link")  # absolute: must resolve inside the context
    os.symlink("../../../../../etc", root / "escape")
    return root


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    (root / "existing").mkdir()
    os.symlink("/existing", root / "dirlink")
    return root


def names(root: Path) -> set[str]:
    return set(tree_summary(root))


def copy(ctx: Path, rootfs: Path, patterns: list[str], dest: str, **opts: object) -> None:
    sources, multiple = fileops.resolve_sources(ctx, patterns)
    fileops.copy_into(sources, multiple, rootfs, dest, CopyOptions(**opts))  # type: ignore[arg-type]


def test_resolve_in_root_never_leaves_the_root(ctx: Path) -> None:
    assert fileops.resolve_in_root(ctx, "abs-link") == ctx / "src" / "b.txt"
    assert fileops.resolve_in_root(ctx, "escape") == ctx / "etc"
    assert fileops.resolve_in_root(ctx, "../../x") == ctx / "x"
    assert fileops.resolve_in_root(ctx, "src/link", follow_last=False) == ctx / "src" / "link"


def test_sources_outside_the_context_are_refused(ctx: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"forbidden path outside the build context: \.\./x"):
        fileops.resolve_sources(ctx, ["../x"])
    with pytest.raises(InvalidArgument, match="forbidden path outside"):
        fileops.resolve_sources(ctx, ["src/../../x"])
    sources, _ = fileops.resolve_sources(ctx, ["/src/a.txt"])  # absolute means context-relative
    assert sources[0].path == ctx / "src" / "a.txt"


def test_globs_and_missing_sources(ctx: Path) -> None:
    sources, multiple = fileops.resolve_sources(ctx, ["src/*.txt"])
    assert [s.rel for s in sources] == ["src/a.txt", "src/b.txt"] and multiple
    sources, multiple = fileops.resolve_sources(ctx, ["src/[ab].txt", "src/sub"])
    assert [s.rel for s in sources] == ["src/a.txt", "src/b.txt", "src/sub"] and multiple
    assert sources[2].is_dir
    with pytest.raises(InvalidArgument, match="no source files were specified"):
        fileops.resolve_sources(ctx, ["*.none"])
    with pytest.raises(InvalidArgument, match=r"nope\.txt: not found in the build context"):
        fileops.resolve_sources(ctx, ["nope.txt"])
    with pytest.raises(InvalidArgument, match="remote sources are not supported"):
        fileops.resolve_sources(ctx, ["https://example.com/x"])


def test_file_destinations(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["src/a.txt"], "/renamed")
    copy(ctx, rootfs, ["src/a.txt"], "/into/")
    copy(ctx, rootfs, ["src/a.txt"], "/existing")  # an existing directory: copied into it
    copy(ctx, rootfs, ["src/b.txt"], "/dirlink/")  # through a symlink of the rootfs, inside it
    copy(ctx, rootfs, ["abs-link"], "/followed")  # a top-level symlink source is followed
    assert (rootfs / "renamed").read_text() == "a"
    assert (rootfs / "into" / "a.txt").read_text() == "a"
    assert (rootfs / "existing" / "a.txt").read_text() == "a"
    assert (rootfs / "existing" / "b.txt").read_text() == "b"
    assert (rootfs / "followed").read_text() == "b" and not (rootfs / "followed").is_symlink()
    assert oct((rootfs / "into").stat().st_mode & 0o777) == oct(0o755)


def test_directory_contents_and_modes(ctx: Path, rootfs: Path) -> None:
    copy(ctx, rootfs, ["src"], "/app")
    got = names(rootfs / "app")
    assert {"a.txt", "b.txt", "c.md", "sub", "sub/d.txt", "run.sh", "link"} == got
    assert (rootfs / "app" / "link").is_symlink() and os.readlink(rootfs / "app" / "link") == "a.txt"
    assert (rootfs / "app" / "run.sh").stat().st_mode & 0o777 == 0o755
    assert (rootfs / "app" / "a.txt").stat().st_mtime == (ctx / "src" / "a.txt").stat().st_mtime
    with pytest.raises(InvalidArgument, match="the destination must be a directory"):
        copy(ctx, rootfs, ["src/a.txt", "src/b.txt"], "/notdir")
    copy(ctx, rootfs, ["src/a.txt"], "/app/sub/../sub")  # an existing directory: into it
    assert (rootfs / "app" / "sub" / "a.txt").is_file()
    (rootfs / "app" / "c.md").unlink()
    (rootfs / "app" / "c.md").mkdir()
    with pytest.raises(InvalidArgument, match=r"cannot overwrite directory c\.md with a non-directory"):
        copy(ctx, rootfs, ["src"], "/app")


def test_owner_and_mode(ctx: Path, rootfs: Path) -> None:
    os.chown(ctx / "src" / "a.txt", 7, 7)
    owner = fileops.parse_chown(
        "app:staff", fileops.read_etc(rootfs, "passwd"), fileops.read_etc(rootfs, "group")
    )
    assert owner == (1000, 50)
    assert fileops.parse_chown("app", "app:x:1000:1001::/:/bin/sh\n", "") == (1000, 1000)
    assert fileops.parse_chown("5:6", "", "") == (5, 6)
    with pytest.raises(InvalidArgument, match="unable to find group nope"):
        fileops.parse_chown("app:nope", "app:x:1:1::/:/bin/sh\n", "")
    copy(ctx, rootfs, ["src/a.txt"], "/ctx-owned")
    copy(ctx, rootfs, ["src/a.txt"], "/kept", keep_owner=True)
    copy(ctx, rootfs, ["src/sub"], "/chowned/", owner=owner, mode=0o640)
    assert (rootfs / "ctx-owned").stat().st_uid == 0  # context files are root's
    assert (rootfs / "kept").stat().st_uid == 7  # --from keeps owners
    st = (rootfs / "chowned" / "d.txt").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (1000, 50, 0o640)
    assert (rootfs / "chowned").stat().st_uid == 1000  # the directory COPY created gets the owner too


def tar_bytes(members: list[tarfile.TarInfo], data: dict[str, bytes], mode: str = "w:gz") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


def info(
    name: str, kind: bytes = tarfile.REGTYPE, link: str = "", mode: int = 0o644, uid: int = 0
) -> tarfile.TarInfo:
    t = tarfile.TarInfo(name)
    t.type, t.linkname, t.mode, t.uid = kind, link, mode, uid
    return t


def test_add_extracts_local_archives(tmp_path: Path, rootfs: Path) -> None:
    ctx = tmp_path / "addctx"
    ctx.mkdir()
    (ctx / "pkg.tar.gz").write_bytes(
        tar_bytes(
            [
                info("pkg/", tarfile.DIRTYPE, mode=0o755),
                info("pkg/bin", mode=0o755, uid=42),
                info("pkg/l", tarfile.SYMTYPE, "bin"),
            ],
            {"pkg/bin": b"binary"},
        )
    )
    (ctx / "plain.tar").write_bytes(tar_bytes([info("p.txt")], {"p.txt": b"plain"}, mode="w"))
    (ctx / "notar.gz.txt").write_bytes(b"just text")
    sources, multiple = fileops.resolve_sources(ctx, ["pkg.tar.gz", "plain.tar", "notar.gz.txt"])
    fileops.copy_into(sources, multiple, rootfs, "/opt/", CopyOptions(extract_archives=True))
    assert (rootfs / "opt" / "pkg" / "bin").read_bytes() == b"binary"
    assert (rootfs / "opt" / "pkg" / "bin").stat().st_uid == 42  # the archive's owners are kept
    assert os.readlink(rootfs / "opt" / "pkg" / "l") == "bin"
    assert (rootfs / "opt" / "p.txt").read_bytes() == b"plain"
    assert (rootfs / "opt" / "notar.gz.txt").read_bytes() == b"just text"  # decided by content
    sources, multiple = fileops.resolve_sources(ctx, ["pkg.tar.gz"])
    fileops.copy_into(sources, multiple, rootfs, "/copied/", CopyOptions())  # COPY never extracts
    assert (rootfs / "copied" / "pkg.tar.gz").is_file()


def test_hostile_archive_stays_inside_the_rootfs(tmp_path: Path, rootfs: Path) -> None:
    outside = tmp_path / "outside-marker"
    cases = {
        "climbs": ([info("../../outside-marker")], "points outside the archive's destination; refused"),
        "up": ([info("up", tarfile.SYMTYPE, str(tmp_path)), info("up/outside-marker")], "not a directory"),
    }
    for name, (members, reason) in cases.items():
        archive = tmp_path / f"{name}.tar"
        archive.write_bytes(tar_bytes(members, {m.name: b"x" for m in members if m.isreg()}, mode="w"))
        with pytest.raises(InvalidArgument, match=reason):
            fileops.extract_archive(archive, rootfs, "/dest", CopyOptions())
    assert not outside.exists()
    archive = tmp_path / "abs.tar"
    archive.write_bytes(
        tar_bytes([info("abs", tarfile.SYMTYPE, "/"), info("abs/etc/evil")], {"abs/etc/evil": b"z"}, mode="w")
    )
    fileops.extract_archive(archive, rootfs, "/dest", CopyOptions())
    assert (rootfs / "etc" / "evil").read_bytes() == b"z"  # "/" of the archive's symlink is the rootfs


def test_archive_changes_nothing_through_a_symlink(tmp_path: Path, rootfs: Path) -> None:
    """A hard link to a symlink, or a directory entry over one, must not chmod/chown/utime its host target."""
    victim = tmp_path / "victim"
    victim.write_text("host file\n")
    victim.chmod(0o600)
    victim_dir = tmp_path / "victim-dir"
    victim_dir.mkdir(mode=0o700)
    members = [
        info("s", tarfile.SYMTYPE, str(victim)),
        info("h", tarfile.LNKTYPE, "s", mode=0o777, uid=4242),
        info("d", tarfile.SYMTYPE, str(victim_dir)),
        info("d", tarfile.DIRTYPE, mode=0o777, uid=4242),
    ]
    archive = tmp_path / "through.tar"
    archive.write_bytes(tar_bytes(members, {}, mode="w"))
    fileops.extract_archive(archive, rootfs, "/dest", CopyOptions())
    for path, mode in ((victim, 0o600), (victim_dir, 0o700)):
        st = path.stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (mode, 0), path
    assert os.readlink(rootfs / "dest" / "h") == str(victim)  # the link itself, inside the rootfs
    assert (rootfs / "dest" / "d").is_dir() and not (rootfs / "dest" / "d").is_symlink()


def test_checksum_ignores_mtimes_but_sees_content_and_modes(ctx: Path) -> None:
    sources, _ = fileops.resolve_sources(ctx, ["src"])
    first = fileops.checksum(sources)
    os.utime(ctx / "src" / "a.txt", (1, 1))
    assert fileops.checksum(sources) == first
    (ctx / "src" / "a.txt").chmod(0o600)
    second = fileops.checksum(sources)
    assert second != first
    (ctx / "src" / "sub" / "d.txt").write_text("changed")
    assert fileops.checksum(sources) != second


def test_workdir_creation(rootfs: Path) -> None:
    assert fileops.ensure_directory(rootfs, "/srv/app") is True
    assert (rootfs / "srv" / "app").is_dir()
    assert fileops.ensure_directory(rootfs, "/srv/app") is False
    assert fileops.ensure_directory(rootfs, "/dirlink") is False  # a symlink to a directory is fine
