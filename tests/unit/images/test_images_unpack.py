"""Unpacking layers: a corpus of hostile tarballs never writes outside the snapshot; metadata is preserved;
OCI whiteouts become overlayfs whiteouts; gzip, zstd and plain layers; diff IDs over the tar bytes."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from agent.errors import InvalidArgument
from agent.images.unpack import (
    LayerStream,
    UnsafeEntry,
    compression_of,
    decompressor,
    unpack_blob,
    unpack_layer,
)
from tests.support.images import tree_summary

pytestmark = pytest.mark.root  # mknod, chown, overlay mounts

Entry = Callable[[tarfile.TarFile], None]


def add(
    name: str,
    *,
    data: bytes | None = None,
    kind: bytes = tarfile.REGTYPE,
    linkname: str = "",
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 1_600_000_000,
    devmajor: int = 0,
    devminor: int = 0,
    pax: dict[str, str] | None = None,
) -> Entry:
    def apply(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.linkname = linkname
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = mtime
        info.devmajor, info.devminor = devmajor, devminor
        info.pax_headers = dict(pax or {})
        if data is not None:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        else:
            tf.addfile(info)

    return apply


def make_tar(*entries: Entry) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for entry in entries:
            entry(tf)
    return buf.getvalue()


def unpack(data: bytes, target: Path) -> int:
    return unpack_layer(io.BytesIO(data), target)


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """(snapshot dir, outside dir with a sentinel file): outside must be untouched after every unpack."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    (outside / "sentinel").write_text("original")
    os.chmod(outside, 0o700)
    target = tmp_path / "snap" / "fs"
    target.mkdir(parents=True)
    return target, outside


def outside_state(tmp_path: Path, target: Path) -> dict[str, tuple[object, ...]]:
    """Everything under tmp_path except the snapshot, plus the outside dir's own metadata."""
    state: dict[str, tuple[object, ...]] = {}
    for child in tmp_path.iterdir():
        if child.name != "snap":
            state[child.name] = (child.lstat().st_mode,)
            if child.is_dir() and not child.is_symlink():
                state.update({f"{child.name}/{k}": v for k, v in tree_summary(child).items()})
    st = (tmp_path / "outside").stat()
    state["<outside dir>"] = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime_ns)
    return state


HOSTILE: dict[str, Callable[[Path], list[Entry]]] = {
    "dotdot": lambda out: [add("../outside/pwned", data=b"x")],
    "dotdot_nested": lambda out: [add("a/b/../../../outside/pwned", data=b"x")],
    "dotdot_dir": lambda out: [add("../outside/newdir", kind=tarfile.DIRTYPE, mode=0o777)],
    "abs_symlink_parent": lambda out: [
        add("link", kind=tarfile.SYMTYPE, linkname=str(out)),
        add("link/pwned", data=b"x"),
    ],
    "rel_symlink_parent": lambda out: [
        add("link", kind=tarfile.SYMTYPE, linkname="../../outside"),
        add("link/pwned", data=b"x"),
    ],
    "deep_symlink_parent": lambda out: [
        add("a/", kind=tarfile.DIRTYPE, mode=0o755),
        add("a/b", kind=tarfile.SYMTYPE, linkname="../../../outside"),
        add("a/b/c/d/pwned", data=b"x"),
    ],
    "symlink_then_dir_through_it": lambda out: [
        add("link", kind=tarfile.SYMTYPE, linkname=str(out)),
        add("link/sub/", kind=tarfile.DIRTYPE, mode=0o777),
    ],
    "symlink_loop_parent": lambda out: [
        add("loop", kind=tarfile.SYMTYPE, linkname="loop"),
        add("loop/pwned", data=b"x"),
    ],
    "hardlink_dotdot": lambda out: [add("hl", kind=tarfile.LNKTYPE, linkname="../outside/sentinel")],
    "hardlink_absolute_host_file": lambda out: [
        add("hl", kind=tarfile.LNKTYPE, linkname=str(out / "sentinel"))
    ],
    "hardlink_through_symlink_dir": lambda out: [
        add("link", kind=tarfile.SYMTYPE, linkname=str(out)),
        add("hl", kind=tarfile.LNKTYPE, linkname="link/sentinel"),
    ],
    "opaque_through_symlink": lambda out: [
        add("link", kind=tarfile.SYMTYPE, linkname=str(out)),
        add("link/.wh..wh..opq", data=b""),
    ],
    "whiteout_through_symlink": lambda out: [
        add("link", kind=tarfile.SYMTYPE, linkname=str(out)),
        add("link/.wh.sentinel", data=b""),
    ],
    "whiteout_dotdot_name": lambda out: [add(".wh..", data=b"")],
    "huge_component": lambda out: [add("a" * 300, data=b"x")],
    "huge_component_symlink": lambda out: [add("s" * 300, kind=tarfile.SYMTYPE, linkname="x")],
}

CONTAINED: dict[str, Callable[[Path], list[Entry]]] = {
    # Absolute names land inside the snapshot (as GNU tar and Docker do).
    "absolute_name": lambda out: [add(str(out / "pwned"), data=b"inside")],
    # A file entry over a symlink to outside replaces the symlink; the target is untouched.
    "file_over_symlink": lambda out: [
        add("victim", kind=tarfile.SYMTYPE, linkname=str(out / "sentinel")),
        add("victim", data=b"pwned"),
    ],
    # A directory entry over a symlink to outside replaces it; chmod never reaches outside.
    "dir_over_symlink": lambda out: [
        add("d", kind=tarfile.SYMTYPE, linkname=str(out)),
        add("d/", kind=tarfile.DIRTYPE, mode=0o777, uid=4242),
    ],
    # A hardlink to a symlink links the symlink itself, never its target.
    "hardlink_to_symlink": lambda out: [
        add("s", kind=tarfile.SYMTYPE, linkname=str(out / "sentinel")),
        add("h", kind=tarfile.LNKTYPE, linkname="s"),
    ],
    # Symlinks may point anywhere: they are only data here and never followed during unpack.
    "dangling_escape_symlinks": lambda out: [
        add("abs", kind=tarfile.SYMTYPE, linkname="/etc/shadow"),
        add("rel", kind=tarfile.SYMTYPE, linkname="../../../../../../etc"),
    ],
    # A whiteout over a symlink to outside removes the symlink, not what it points at.
    "whiteout_over_symlink": lambda out: [
        add("victim", kind=tarfile.SYMTYPE, linkname=str(out)),
        add(".wh.victim", data=b""),
    ],
    # Device nodes are created inside the snapshot only.
    "device_nodes": lambda out: [
        add("dev/", kind=tarfile.DIRTYPE, mode=0o755),
        add("dev/null", kind=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        add("dev/loop9", kind=tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660),
    ],
    # Very deep paths: walked one component at a time, so PATH_MAX does not matter.
    "deep_path": lambda out: [add("/".join(["d" * 200] * 30) + "/f", data=b"deep")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_rejected_and_write_nothing_outside(
    tmp_path: Path, arena: tuple[Path, Path], case: str
) -> None:
    target, outside = arena
    before = outside_state(tmp_path, target)
    with pytest.raises(UnsafeEntry):
        unpack(make_tar(*HOSTILE[case](outside)), target)
    assert outside_state(tmp_path, target) == before
    assert (outside / "sentinel").read_text() == "original"
    assert not (outside / "pwned").exists()
    assert os.listxattr(outside) == []


@pytest.mark.parametrize("case", sorted(CONTAINED))
def test_contained_layers_stay_inside_the_snapshot(
    tmp_path: Path, arena: tuple[Path, Path], case: str
) -> None:
    target, outside = arena
    before = outside_state(tmp_path, target)
    unpack(make_tar(*CONTAINED[case](outside)), target)
    assert outside_state(tmp_path, target) == before
    assert (outside / "sentinel").read_text() == "original"
    assert (outside / "sentinel").stat().st_nlink == 1


def test_contained_cases_land_where_expected(arena: tuple[Path, Path]) -> None:
    target, outside = arena
    unpack(make_tar(*CONTAINED["absolute_name"](outside)), target)
    assert (target / str(outside).lstrip("/") / "pwned").read_bytes() == b"inside"
    unpack(make_tar(*CONTAINED["file_over_symlink"](outside)), target)
    assert not (target / "victim").is_symlink()
    assert (target / "victim").read_bytes() == b"pwned"
    unpack(make_tar(*CONTAINED["dir_over_symlink"](outside)), target)
    st = (target / "d").lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == 4242 and stat.S_IMODE(st.st_mode) == 0o777
    unpack(make_tar(*CONTAINED["hardlink_to_symlink"](outside)), target)
    assert (target / "h").is_symlink() and os.readlink(target / "h") == str(outside / "sentinel")
    unpack(make_tar(*CONTAINED["whiteout_over_symlink"](outside)), target)
    st = (target / "victim").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def test_hostile_corpus_inside_a_real_gzip_layer_fails_cleanly(arena: tuple[Path, Path]) -> None:
    target, outside = arena
    blob = gzip.compress(make_tar(add("ok", data=b"fine"), *HOSTILE["rel_symlink_parent"](outside)))
    with pytest.raises(InvalidArgument):
        unpack_blob(io.BytesIO(blob), "application/vnd.oci.image.layer.v1.tar+gzip", target)
    assert not (outside / "pwned").exists()


def test_metadata_is_preserved(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    cap = "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
    layer = make_tar(
        add("./", kind=tarfile.DIRTYPE, mode=0o755, mtime=1_500_000_000),
        add("bin/", kind=tarfile.DIRTYPE, mode=0o751, uid=3, gid=4, mtime=1_400_000_000),
        add("bin/suid", data=b"#!/bin/sh\n", mode=0o4755, uid=0, gid=0, mtime=1_300_000_000),
        add("bin/owned", data=b"data", mode=0o640, uid=1234, gid=5678),
        add(
            "bin/ping",
            data=b"elf",
            mode=0o755,
            pax={"SCHILY.xattr.security.capability": cap, "SCHILY.xattr.user.note": "hello"},
        ),
        add("bin/evil-overlay", data=b"x", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc"}),
        add("bin/link", kind=tarfile.SYMTYPE, linkname="owned", uid=77, gid=88, mtime=1_200_000_000),
        add("bin/hard", kind=tarfile.LNKTYPE, linkname="bin/owned"),
        add("run/fifo", kind=tarfile.FIFOTYPE, mode=0o620),
        add("dev/tty0", kind=tarfile.CHRTYPE, devmajor=4, devminor=0, mode=0o620, uid=0, gid=5),
    )
    written = unpack(layer, target)
    assert written == len(b"#!/bin/sh\n") + 4 + 3 + 1
    bindir = (target / "bin").lstat()
    assert stat.S_IMODE(bindir.st_mode) == 0o751 and (bindir.st_uid, bindir.st_gid) == (3, 4)
    assert bindir.st_mtime == 1_400_000_000  # set after its children were created
    assert target.stat().st_mtime == 1_500_000_000
    suid = (target / "bin/suid").lstat()
    assert stat.S_IMODE(suid.st_mode) == 0o4755 and suid.st_mtime == 1_300_000_000
    owned = (target / "bin/owned").lstat()
    assert (owned.st_uid, owned.st_gid, stat.S_IMODE(owned.st_mode)) == (1234, 5678, 0o640)
    assert owned.st_nlink == 2 and (target / "bin/hard").lstat().st_ino == owned.st_ino
    assert os.getxattr(target / "bin/ping", "user.note") == b"hello"
    assert os.getxattr(target / "bin/ping", "security.capability") == cap.encode("latin-1")
    assert "trusted.overlay.redirect" not in os.listxattr(target / "bin/evil-overlay")
    link = (target / "bin/link").lstat()
    assert os.readlink(target / "bin/link") == "owned"
    assert (link.st_uid, link.st_gid, link.st_mtime) == (77, 88, 1_200_000_000)
    assert stat.S_ISFIFO((target / "run/fifo").lstat().st_mode)
    assert not (target / "dev/tty0").exists()  # device nodes are skipped by policy (see unpack.py)


def test_device_nodes_are_skipped_but_whiteout_devices_kept(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    unpack(
        make_tar(
            add("dev/", kind=tarfile.DIRTYPE, mode=0o755),
            add("dev/loop0", kind=tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o666),
            add("dev/mem", kind=tarfile.CHRTYPE, devmajor=1, devminor=1, mode=0o666),
            add("etc/gone", kind=tarfile.CHRTYPE, devmajor=0, devminor=0),  # an overlay upper dir's whiteout
            add("etc/.wh.motd", data=b""),
            add("run/fifo", kind=tarfile.FIFOTYPE, mode=0o600),
        ),
        target,
    )
    assert sorted(os.listdir(target / "dev")) == []
    for name in ("etc/gone", "etc/motd"):
        st = (target / name).lstat()
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(0, 0)
    assert stat.S_ISFIFO((target / "run/fifo").lstat().st_mode)


def test_implied_parent_directories_are_0755_whatever_the_umask(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    old = os.umask(0o077)
    try:
        unpack(make_tar(add("opt/app/data.txt", data=b"x", mode=0o644)), target)
    finally:
        os.umask(old)
    for d in ("opt", "opt/app"):
        assert stat.S_IMODE((target / d).lstat().st_mode) == 0o755


def test_whiteouts_become_overlayfs_whiteouts(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    unpack(
        make_tar(
            add("etc/.wh.motd", data=b""),
            add("var/cache/", kind=tarfile.DIRTYPE, mode=0o755),
            add("var/cache/.wh..wh..opq", data=b""),
            add("var/cache/new", data=b"fresh"),
            add("opt/.wh..wh.plnk", data=b""),  # AUFS metadata: ignored
        ),
        target,
    )
    motd = (target / "etc/motd").lstat()
    assert stat.S_ISCHR(motd.st_mode) and motd.st_rdev == os.makedev(0, 0)
    assert not (target / "etc/.wh.motd").exists()
    assert os.getxattr(target / "var/cache", "trusted.overlay.opaque") == b"y"
    assert (target / "var/cache/new").read_bytes() == b"fresh"
    assert not (target / "var/cache/.wh..wh..opq").exists()
    assert os.listdir(target / "opt") == []


def test_sparse_files_keep_their_holes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "disk.img"
    with open(sparse, "wb") as fh:
        fh.write(b"head")
        fh.seek(64 * 1024 * 1024)
        fh.write(b"tail")
    archive = tmp_path / "sparse.tar"
    subprocess.run(
        ["tar", "--sparse", "--format=pax", "-cf", str(archive), "-C", str(src), "disk.img"], check=True
    )
    target = tmp_path / "fs"
    target.mkdir()
    unpack(archive.read_bytes(), target)
    out = target / "disk.img"
    assert out.stat().st_size == sparse.stat().st_size
    assert out.stat().st_blocks * 512 < 1024 * 1024  # not 64 MiB of zeros on disk
    with open(out, "rb") as fh:
        assert fh.read(4) == b"head"
        fh.seek(64 * 1024 * 1024)
        assert fh.read(4) == b"tail"
        fh.seek(1024 * 1024)
        assert fh.read(16) == bytes(16)


def test_later_entries_replace_earlier_ones(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    unpack(
        make_tar(
            add("x/", kind=tarfile.DIRTYPE),
            add("x/inner", data=b"1"),
            add("x", data=b"now a file"),
            add("y", data=b"file"),
            add("y/", kind=tarfile.DIRTYPE, mode=0o700),
        ),
        target,
    )
    assert (target / "x").read_bytes() == b"now a file"
    assert (target / "y").is_dir()


@pytest.mark.parametrize("kind", ["", "gzip", "zstd"])
def test_unpack_blob_by_media_type_computes_diff_id(tmp_path: Path, kind: str) -> None:
    tar = make_tar(add("hello", data=b"hello world\n" * 1000))
    blob = {"": tar, "gzip": gzip.compress(tar), "zstd": zstandard.ZstdCompressor().compress(tar)}[kind]
    media_type = "application/vnd.oci.image.layer.v1.tar" + (f"+{kind}" if kind else "")
    target = tmp_path / kind / "fs"
    target.mkdir(parents=True)
    diff_id, tar_size, written = unpack_blob(io.BytesIO(blob), media_type, target)
    assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert tar_size == len(tar)  # the tar's zero padding is hashed too
    assert written == 12000
    assert (target / "hello").read_bytes() == b"hello world\n" * 1000


def test_multi_member_gzip_and_sniffing(tmp_path: Path) -> None:
    tar = make_tar(add("a", data=b"A" * 5000), add("b", data=b"B" * 5000))
    blob = gzip.compress(tar[:3000]) + gzip.compress(tar[3000:])
    target = tmp_path / "fs"
    target.mkdir()
    diff_id, _, _ = unpack_blob(io.BytesIO(blob), None, target)  # sniffed
    assert diff_id == "sha256:" + hashlib.sha256(tar).hexdigest()
    assert (target / "b").read_bytes() == b"B" * 5000
    push = decompressor("application/vnd.docker.image.rootfs.diff.tar.gzip")
    assert push.decompress(blob[:100]) + push.decompress(blob[100:]) + push.flush() == tar


def test_empty_layer_and_corrupt_input(tmp_path: Path) -> None:
    target = tmp_path / "fs"
    target.mkdir()
    stream = LayerStream(io.BytesIO(bytes(1024)), "")
    assert unpack_layer(stream, target) == 0  # type: ignore[arg-type]
    assert stream.diff_id == "sha256:" + hashlib.sha256(bytes(1024)).hexdigest()
    assert os.listdir(target) == []
    with pytest.raises(InvalidArgument):
        unpack_blob(io.BytesIO(b"\x1f\x8b\x08\x00garbage-not-deflate"), None, target)
    with pytest.raises(InvalidArgument):
        compression_of("application/vnd.oci.image.layer.v1.tar+lz4")
