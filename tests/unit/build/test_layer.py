"""`write_layer` against real overlay mounts: the layer of an upper dir, unpacked by the image store and
stacked on the same lower, shows exactly the tree the container saw (deletions as whiteouts, opaque dirs).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.build.layer import MEDIA_TYPE, write_layer
from agent.images.unpack import unpack_blob
from tests.support.images import tree_summary

pytestmark = pytest.mark.root


def mount_overlay(
    target: Path, lowers: list[Path], upper: Path | None = None, work: Path | None = None
) -> None:
    opts = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None and work is not None:
        opts += f",upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, str(target)], check=True)


def umount(target: Path) -> None:
    subprocess.run(["umount", str(target)], check=True)


def is_mounted(target: Path) -> bool:
    return f" {target} " in Path("/proc/self/mountinfo").read_text()


@pytest.fixture
def dirs(tmp_path: Path) -> Iterator[dict[str, Path]]:
    names = ("lower", "upper", "work", "merged", "snap", "merged2")
    out = {n: tmp_path / n for n in names}
    for p in out.values():
        p.mkdir()
    yield out
    for n in ("merged", "merged2"):
        while is_mounted(out[n]):
            umount(out[n])


def populate_lower(lower: Path) -> None:
    (lower / "etc").mkdir()
    (lower / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (lower / "etc" / "keep").write_text("unchanged\n")
    (lower / "data" / "sub").mkdir(parents=True)
    (lower / "data" / "a.txt").write_text("a\n")
    (lower / "data" / "sub" / "b.txt").write_text("b\n")
    (lower / "gone.txt").write_text("bye\n")
    (lower / "gonedir" / "deep").mkdir(parents=True)
    (lower / "gonedir" / "deep" / "x").write_text("x\n")
    (lower / "opaque").mkdir()
    (lower / "opaque" / "old1").write_text("1\n")
    (lower / "opaque" / "old2").write_text("2\n")
    os.symlink("data/a.txt", lower / "link")


def change_through_overlay(merged: Path) -> None:
    with open(merged / "etc" / "passwd", "a") as fh:
        fh.write("app:x:1000:1000::/home/app:/bin/sh\n")
    (merged / "gone.txt").unlink()
    subprocess.run(["rm", "-r", str(merged / "gonedir")], check=True)
    subprocess.run(["rm", "-r", str(merged / "opaque")], check=True)
    (merged / "opaque").mkdir()
    (merged / "opaque" / "new").write_text("new\n")
    (merged / "data" / "a.txt").chmod(0o600)
    new = merged / "new" / "dir"
    new.mkdir(parents=True)
    (new / "file").write_bytes(os.urandom(200_000))
    (new / "file").chmod(0o751)
    os.chown(new / "file", 1234, 5678)
    os.link(new / "file", merged / "new" / "hardlink")
    os.symlink("/etc/passwd", merged / "newlink")
    os.mkfifo(merged / "new" / "fifo")
    (merged / "link").unlink()
    os.symlink("data/sub/b.txt", merged / "link")


def test_layer_round_trips_through_the_image_store(dirs: dict[str, Path]) -> None:
    populate_lower(dirs["lower"])
    mount_overlay(dirs["merged"], [dirs["lower"]], dirs["upper"], dirs["work"])
    change_through_overlay(dirs["merged"])
    seen = tree_summary(dirs["merged"])
    umount(dirs["merged"])

    buf = io.BytesIO()
    info = write_layer(dirs["upper"], buf)
    blob = buf.getvalue()
    assert info.digest == "sha256:" + hashlib.sha256(blob).hexdigest()
    assert info.size == len(blob)
    raw = gzip.decompress(blob)
    assert info.diff_id == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert info.uncompressed_size == len(raw)

    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(raw))}
    assert ".wh.gone.txt" in members and ".wh.gonedir" in members
    assert "opaque/.wh..wh..opq" in members and "opaque/new" in members
    assert "gonedir/deep/x" not in members and "etc/keep" not in members  # only the diff
    hard = [m for m in members.values() if m.islnk()]
    assert [(m.name, m.linkname) for m in hard] == [("new/hardlink", "new/dir/file")]
    assert members["new/dir/file"].uid == 1234 and members["new/dir/file"].mode == 0o751
    assert members["new/fifo"].isfifo()
    order = list(members)
    for i, name in enumerate(order):  # parents before children
        parent = name.rpartition("/")[0]
        assert not parent or order.index(parent) < i
    top = [n.removeprefix(".wh.") for n in order if "/" not in n]
    assert top == sorted(top)  # name order (a whiteout sits where its name sorts)
    assert all(m.uname == "" and m.gname == "" for m in members.values())

    written = dirs["snap"]
    _, _, _ = unpack_blob(io.BytesIO(blob), MEDIA_TYPE, written)
    mount_overlay(dirs["merged2"], [written, dirs["lower"]])
    assert tree_summary(dirs["merged2"]) == seen
    assert not (dirs["merged2"] / "gone.txt").exists()
    assert sorted(os.listdir(dirs["merged2"] / "opaque")) == ["new"]


def test_layer_is_deterministic(dirs: dict[str, Path]) -> None:
    populate_lower(dirs["lower"])
    mount_overlay(dirs["merged"], [dirs["lower"]], dirs["upper"], dirs["work"])
    change_through_overlay(dirs["merged"])
    umount(dirs["merged"])
    first, second = io.BytesIO(), io.BytesIO()
    a = write_layer(dirs["upper"], first)
    b = write_layer(dirs["upper"], second)
    assert a == b and first.getvalue() == second.getvalue()
    assert first.getvalue()[4:8] == b"\0\0\0\0"  # gzip header: no timestamp


def test_empty_upper_has_no_entries(tmp_path: Path) -> None:
    info = write_layer(tmp_path, io.BytesIO())
    assert info.empty and info.entries == 0


def test_xattrs_are_kept_and_overlay_ones_dropped(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    f = upper / "cap"
    f.write_text("x")
    try:
        os.setxattr(f, "user.dockyard", b"v1")
    except OSError:
        pytest.skip("this filesystem has no user xattrs")
    os.setxattr(f, "trusted.overlay.origin", b"junk")
    buf = io.BytesIO()
    write_layer(upper, buf)
    member = tarfile.open(fileobj=io.BytesIO(gzip.decompress(buf.getvalue()))).getmember("cap")
    assert member.pax_headers.get("SCHILY.xattr.user.dockyard") == "v1"
    assert not any("trusted.overlay" in k for k in member.pax_headers)
