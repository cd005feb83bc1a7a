"""`agent.fsroot` and `agent.treetar`: paths inside a root resolved by directory fd, tar streams with numeric
owners only, and the layer/volume writers built on them never following a symlink swapped in meanwhile."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from agent import fsroot, treetar
from agent.build import layer
from agent.errors import InvalidArgument
from agent.transfer import volume_archive

pytestmark = pytest.mark.root  # chown to other ids


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    os.symlink("/", r / "up")
    os.symlink("../../../../..", r / "dots")
    os.symlink("/proc/self/root", r / "magic")
    return r


def _open(root: Path) -> int:
    return fsroot.open_root(root)


def test_resolution_stays_in_the_root(root: Path, tmp_path: Path) -> None:
    (tmp_path / "host-only").write_text("host\n")
    rootfd = _open(root)
    try:
        for path in ("/up/etc/passwd", "dots/etc/passwd", "/../../etc/passwd", "up/up/dots/etc/passwd"):
            assert fsroot.read_file(rootfd, path, 1 << 20) == b"root:x:0:0::/root:/bin/sh\n", path
        assert fsroot.read_file(rootfd, "/up/host-only", 100) is None  # never the host's file
        with pytest.raises(OSError):  # /proc magic links are refused
            fsroot.resolve(rootfd, "/magic/etc")
    finally:
        os.close(rootfd)


def test_read_file_is_bounded_and_never_blocks(root: Path) -> None:
    (root / "etc" / "group").write_bytes(b"x" * 2000)
    os.mkfifo(root / "etc" / "fifo")
    rootfd = _open(root)
    try:
        with pytest.raises(InvalidArgument, match="larger than 1000 bytes"):
            fsroot.read_file(rootfd, "/etc/group", 1000)
        assert fsroot.read_file(rootfd, "/etc/group", 2000) == b"x" * 2000
        assert fsroot.read_file(rootfd, "/etc/fifo", 1000) is None  # no writer: an open would block
        assert fsroot.read_file(rootfd, "/etc/missing", 1000) is None
    finally:
        os.close(rootfd)


def _tree(src: Path) -> None:
    (src / "d" / "e").mkdir(parents=True)
    (src / "d" / "f").write_text("file\n")
    os.link(src / "d" / "f", src / "d" / "hard")
    os.symlink("/etc/shadow", src / "d" / "abs")
    os.mkfifo(src / "d" / "fifo")
    os.chown(src / "d" / "f", 1234, 5678)
    os.chmod(src / "d" / "f", 0o4750)
    os.chown(src / "d" / "e", 99, 98)
    os.chmod(src / "d" / "e", 0o1777)


def test_round_trip_keeps_numeric_owners_modes_links(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    _tree(src)
    buf = io.BytesIO()
    rootfd = _open(src)
    try:
        treetar.write_path(buf, rootfd, "/d")
    finally:
        os.close(rootfd)
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(buf.getvalue()))}
    assert set(members) == {"d", "d/e", "d/f", "d/hard", "d/abs", "d/fifo"}
    assert all(m.uname == "" and m.gname == "" for m in members.values())
    assert members["d/hard"].islnk() and members["d/hard"].linkname == "d/f"
    buf.seek(0)
    rootfd = _open(dst)
    try:
        treetar.extract(buf, rootfd, "/", rename="copy")
    finally:
        os.close(rootfd)
    st = os.stat(dst / "copy" / "f")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o4750)
    assert os.path.samefile(dst / "copy" / "f", dst / "copy" / "hard")
    st = os.stat(dst / "copy" / "e")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (99, 98, 0o1777)
    assert os.readlink(dst / "copy" / "abs") == "/etc/shadow"
    assert stat.S_ISFIFO(os.lstat(dst / "copy" / "fifo").st_mode)


def _stream(*members: tarfile.TarInfo) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for m in members:
            tf.addfile(m, io.BytesIO(b"x" * m.size) if m.isreg() else None)
    buf.seek(0)
    return buf


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", **attrs: int) -> tarfile.TarInfo:
    m = tarfile.TarInfo(name)
    m.type, m.linkname, m.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    for k, v in attrs.items():
        setattr(m, k, v)
    return m


def test_extraction_refuses_to_leave_and_never_follows_out(root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("host\n")
    victim.chmod(0o600)
    rootfd = _open(root)
    try:
        with pytest.raises(treetar.Refused, match="points outside"):
            treetar.extract(_stream(_member("../../victim")), rootfd, "/etc")
        with pytest.raises(treetar.Refused, match="points outside"):
            treetar.extract(_stream(_member("h", tarfile.LNKTYPE, "../../../victim")), rootfd, "/etc")
        # a symlink to the host file, then a hard link to it and a file over it: nothing reaches the host
        treetar.extract(
            _stream(
                _member("s", tarfile.SYMTYPE, str(victim)),
                _member("h", tarfile.LNKTYPE, "s", mode=0o777, uid=4242),
                _member("u", tarfile.SYMTYPE, "/"),
                _member("u/tmp-file"),
                _member("dev", tarfile.CHRTYPE, devmajor=7, devminor=0),
            ),
            rootfd,
            "/etc",
        )
    finally:
        os.close(rootfd)
    st = victim.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, victim.read_text()) == (0o600, 0, "host\n")
    assert os.readlink(root / "etc" / "h") == str(victim)
    assert (root / "tmp-file").read_bytes() == b"x"  # "u" is "/" of the root
    assert not (root / "etc" / "dev").exists()  # no device nodes from outside


def test_layer_never_reads_through_a_symlink_swapped_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live container swaps a file for a symlink to a host file between the walk's lstat and open."""
    secret = tmp_path / "secret"
    secret.write_text("host secret!!!\n")  # as long as the file: a reader sees no short read
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "f").write_text("container file\n")
    real, real_os = fsroot.lstat, os.lstat

    def swapping(dirfd: int, name: str) -> os.stat_result:
        st = real(dirfd, name)
        if name == "f":
            os.unlink(name, dir_fd=dirfd)
            os.symlink(str(secret), name, dir_fd=dirfd)
        return st

    def swapping_path(path: str | os.PathLike[str], **kw: object) -> os.stat_result:
        st = real_os(path, **kw)  # type: ignore[arg-type]
        if os.path.basename(path) == "f" and not kw:
            os.unlink(path)
            os.symlink(str(secret), path)
        return st

    monkeypatch.setattr(fsroot, "lstat", swapping)
    monkeypatch.setattr(os, "lstat", swapping_path)  # a path-based walker's race window
    out = io.BytesIO()
    layer.write_layer(upper, out)
    data = tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz")
    for m in data.getmembers():
        f = data.extractfile(m) if m.isreg() else None
        assert f is None or b"host secret" not in f.read()


def test_volume_export_and_import(tmp_path: Path) -> None:
    vol, new = tmp_path / "vol", tmp_path / "new"
    vol.mkdir()
    new.mkdir()
    _tree(vol)
    os.symlink("/", vol / "hostroot")  # not followed on export
    buf = io.BytesIO()
    volume_archive._write_tar(vol, buf)
    names = [m.name for m in tarfile.open(fileobj=io.BytesIO(buf.getvalue()))]
    assert names == ["d", "d/abs", "d/e", "d/f", "d/fifo", "d/hard", "hostroot"]
    buf.seek(0)
    assert volume_archive._read_tar(buf, new) == len("file\n")
    assert os.readlink(new / "hostroot") == "/"
    assert (os.stat(new / "d" / "f").st_uid, stat.S_IMODE(os.stat(new / "d" / "f").st_mode)) == (1234, 0o4750)
    with pytest.raises(InvalidArgument, match="not a valid tar stream"):
        volume_archive._read_tar(io.BytesIO(b"garbage" * 100), tmp_path / "new")
