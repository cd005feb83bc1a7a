"""`cp` never runs anything from the container, keeps owners and modes, and stays inside the container.

The attack (the CVE-2019-14271 class): an image ships `/etc/nsswitch.conf` naming an NSS module and that
module (`libnss_evil.so.2`, plus the names glibc tries for `files`/`compat`) in every library directory.
A `cp` that resolves a user or group name inside the container's root would have glibc load it into a
process running as host root. The module here is a real shared library built with `cc`; its constructor
writes a marker file on the host outside the container, reaching it through a fresh procfs of the
loading process's pid namespace (works from inside a chroot too) and, failing that, by the classic
chroot escape. The test first proves the payload works when loaded, then that no `cp` loads it.
"""

from __future__ import annotations

import io
import os
import platform
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.containers.conftest import Yard
from tests.support.agent import CLI_BIN
from tests.support.images import busybox_rootfs_bytes

pytestmark = pytest.mark.root

PAYLOAD_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int mark(int dirfd, const char *path) {
    int fd = openat(dirfd, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) return -1;
    dprintf(fd, "loaded as uid %d pid %d\n", (int)getuid(), (int)getpid());
    close(fd);
    return 0;
}

__attribute__((constructor)) static void payload(void) {
    char path[4096];
    int fs = syscall(430 /* fsopen */, "proc", 0);
    if (fs >= 0) {
        if (syscall(431 /* fsconfig */, fs, 6 /* FSCONFIG_CMD_CREATE */, 0, 0, 0) == 0) {
            int mnt = syscall(432 /* fsmount */, fs, 0, 0);
            if (mnt >= 0) {
                snprintf(path, sizeof path, "%d/root%s", (int)getppid(), MARKER);
                int done = mark(mnt, path) == 0;
                if (!done) {
                    snprintf(path, sizeof path, "1/root%s", MARKER);
                    done = mark(mnt, path) == 0;
                }
                close(mnt);
                close(fs);
                if (done) return;
            }
        }
        close(fs);
    }
    mkdir("/.nss-escape", 0700);
    if (chroot("/.nss-escape") == 0) {
        for (int i = 0; i < 256; i++) chdir("..");
        chroot(".");
    }
    mark(AT_FDCWD, MARKER);
}
"""

NSS_NAMES = ("libnss_evil.so.2", "libnss_files.so.2", "libnss_compat.so.2")
NSSWITCH = b"passwd: evil files\ngroup: evil files\nshadow: evil files\n"


def _build_payload(tmp: Path, marker: Path) -> bytes:
    src = tmp / "payload.c"
    src.write_text(PAYLOAD_C)
    lib = tmp / "libnss_evil.so.2"
    subprocess.run(
        ["cc", "-shared", "-fPIC", f'-DMARKER="{marker}"', "-o", str(lib), str(src)],
        check=True, capture_output=True,
    )  # fmt: skip
    return lib.read_bytes()


def _lib_dirs() -> list[str]:
    arch = f"{platform.machine()}-linux-gnu"
    return [f"lib/{arch}", f"usr/lib/{arch}", "lib", "lib64", "usr/lib", "usr/lib64"]


@pytest.fixture(scope="module")
def evil(yard: Yard, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image `evil:test` carrying the payload; returns the marker path its constructor writes."""
    tmp = tmp_path_factory.mktemp("nss")
    marker = tmp / "marker"
    lib = _build_payload(tmp, marker)
    # the payload really runs when something loads it (else "no marker" would prove nothing)
    subprocess.run(
        ["python3", "-c", f"import ctypes; ctypes.CDLL({str(tmp / 'libnss_evil.so.2')!r})"], check=True
    )
    assert marker.read_text().startswith("loaded as uid 0")
    marker.unlink()
    extra = {f"{d}/{name}": lib for d in _lib_dirs() for name in NSS_NAMES}
    extra["etc/nsswitch.conf"] = NSSWITCH
    image = tmp / "evil.tar"
    image.write_bytes(busybox_rootfs_bytes(extra))
    yard.ok("import", str(image), "evil:test", timeout=120)
    return marker


def _payload_dir(tmp: Path) -> Path:
    src = tmp / "payload"
    (src / "sub" / "deep").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    (src / "sub" / "deep" / "x.sh").write_text("#!/bin/sh\n")
    os.link(src / "a.txt", src / "hard.txt")
    os.symlink("sub/b.txt", src / "rel-link")
    os.symlink("/etc/shadow", src / "abs-link")
    modes = {"a.txt": 0o640, "sub": 0o750, "sub/b.txt": 0o4755, "sub/deep/x.sh": 0o700, "empty": 0o1777}
    owners = {"a.txt": (1234, 5678), "sub": (4321, 8765), "sub/b.txt": (0, 42), "empty": (65534, 65534)}
    for rel, (uid, gid) in owners.items():
        os.chown(src / rel, uid, gid)
    for rel, mode in modes.items():  # after chown, which clears setuid
        os.chmod(src / rel, mode)
    os.chown(src / "rel-link", 777, 888, follow_symlinks=False)
    return src


EXPECTED_IN = {
    "a.txt": "regular file 1234 5678 640",
    "hard.txt": "regular file 1234 5678 640",
    "sub": "directory 4321 8765 750",
    "sub/b.txt": "regular file 0 42 4755",
    "sub/deep": "directory 0 0 755",
    "sub/deep/x.sh": "regular file 0 0 700",
    "empty": "directory 65534 65534 1777",
    "rel-link": "symbolic link 777 888 777",
    "abs-link": "symbolic link 0 0 777",
}


def _stat_in(yard: Yard, ctr: str, base: str) -> dict[str, str]:
    names = " ".join(EXPECTED_IN)
    out = yard.ok("exec", ctr, "sh", "-c", f"cd {base} && stat -c '%n|%F %u %g %a' {names}")
    return dict(line.split("|", 1) for line in out.splitlines())


def _cp_out_tar(yard: Yard, ctr_path: str) -> tarfile.TarFile:
    done = subprocess.run(
        [CLI_BIN, "-H", yard.host, "cp", ctr_path, "-"],
        capture_output=True, env={**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return tarfile.open(fileobj=io.BytesIO(done.stdout))


def _cp_in_tar(yard: Yard, ctr_path: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [CLI_BIN, "-H", yard.host, "cp", "-", ctr_path],
        input=data, capture_output=True, timeout=60,
        env={**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)},
    )  # fmt: skip


def _check_out(tar: tarfile.TarFile) -> None:
    members = {m.name: m for m in tar.getmembers()}
    a = members["payload/a.txt"]
    assert (a.uid, a.gid, a.mode, a.isreg()) == (1234, 5678, 0o640, True)
    assert tar.extractfile(a).read() == b"alpha\n"  # type: ignore[union-attr]
    hard = members["payload/hard.txt"]
    assert hard.islnk() and hard.linkname == "payload/a.txt"
    assert (members["payload/sub"].uid, members["payload/sub"].mode) == (4321, 0o750)
    assert members["payload/sub/b.txt"].mode == 0o4755 and members["payload/sub/b.txt"].gid == 42
    assert members["payload/empty"].isdir() and members["payload/empty"].mode == 0o1777
    assert members["payload/rel-link"].issym() and members["payload/rel-link"].linkname == "sub/b.txt"
    assert members["payload/abs-link"].linkname == "/etc/shadow"
    # numbers only: no name looked up anywhere (not in the container, not on the host)
    assert all(m.uname == "" and m.gname == "" for m in members.values())


def test_cp_loads_nothing_from_the_container_and_keeps_owners(yard: Yard, evil: Path, tmp_path: Path) -> None:
    src = _payload_dir(tmp_path)
    yard.ok("run", "-d", "--name", "nss", "evil:test", "sleep", "300")
    try:
        yard.ok("cp", str(src), "nss:/tmp/")
        assert not evil.exists(), "cp into a running container loaded the container's NSS module"
        assert _stat_in(yard, "nss", "/tmp/payload") == EXPECTED_IN
        _check_out(_cp_out_tar(yard, "nss:/tmp/payload"))
        assert not evil.exists(), "cp out of a running container loaded the container's NSS module"
        yard.ok("cp", "nss:/tmp/payload", str(tmp_path / "back"))
        back = tmp_path / "back"
        assert (back / "sub" / "b.txt").read_text() == "beta\n"
        st = os.stat(back / "a.txt")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1234, 5678, 0o640)
        assert os.readlink(back / "rel-link") == "sub/b.txt"

        yard.ok("exec", "nss", "mkdir", "/stopped")
        yard.ok("stop", "-t", "0", "nss")
        yard.ok("cp", str(src), "nss:/stopped/")
        assert not evil.exists(), "cp into a stopped container loaded the container's NSS module"
        _check_out(_cp_out_tar(yard, "nss:/stopped/payload"))
        assert not evil.exists(), "cp out of a stopped container loaded the container's NSS module"
        yard.ok("start", "nss")
        assert _stat_in(yard, "nss", "/stopped/payload") == EXPECTED_IN
    finally:
        yard.ok("rm", "-f", "nss")
    assert not evil.exists()


def _tar(*members: tuple[str, str, str]) -> bytes:
    """(name, kind, data-or-link) entries: kind is file, dir, sym or lnk."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, arg in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                info.size = len(arg)
                tf.addfile(info, io.BytesIO(arg.encode()))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "lnk": tarfile.LNKTYPE}[kind]
            info.linkname = arg
            tf.addfile(info)
    return buf.getvalue()


def test_cp_stays_inside_the_container(yard: Yard, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_text("host secret\n")
    yard.ok("run", "-d", "--name", "jail", "busybox:test", "sleep", "300")
    try:
        yard.ok(
            "exec", "jail", "sh", "-c",
            f"ln -s / /hostroot && ln -s ../../../../../.. /tmp/up && ln -s {host} /abs "
            "&& mkdir -p /data && echo mine > /data/secret && ln -s /data /tmp/datalink",
        )  # fmt: skip
        # paths through planted symlinks and `..` resolve inside the container
        for target in ("jail:/hostroot/tmp/esc1", "jail:/tmp/up/tmp/esc2", "jail:/../../../tmp/esc3"):
            done = _cp_in_tar(yard, target, _tar(("f", "file", "in\n")))
            assert done.returncode == 0, done.stderr
        assert not list(Path("/tmp").glob("esc[123]"))
        assert yard.ok("exec", "jail", "cat", "/tmp/esc1", "/tmp/esc2", "/tmp/esc3") == "in\n" * 3
        done = _cp_in_tar(yard, "jail:/abs/", _tar(("planted", "file", "x\n")))
        assert not (host / "planted").exists()
        assert done.returncode != 0 or yard.ok("exec", "jail", "cat", f"{host}/planted") == "x\n"
        # reading through them reads the container's files, never the host's
        for path in ("jail:/hostroot/data/secret", "jail:/tmp/up/data/secret", "jail:/abs/../data/secret"):
            tar = _cp_out_tar(yard, path)
            assert tar.extractfile("secret").read() == b"mine\n"  # type: ignore[union-attr]
        missing = yard.cli("cp", "jail:/abs/secret", str(tmp_path / "x"))
        assert missing.returncode == 1 and "no such file" in missing.stderr
        # a symlink at the end of the source is copied as the link
        tar = _cp_out_tar(yard, "jail:/tmp/datalink")
        assert [(m.name, m.issym(), m.linkname) for m in tar.getmembers()] == [("datalink", True, "/data")]
        # hostile tar streams: `..` members, a symlink then a file through it, a hard link out
        refused = {
            "points outside": _tar(("../../../../../../tmp/esc4", "file", "x\n")),
            "not a directory": _tar(("d", "sym", str(host)), ("d/esc5", "file", "x\n")),
            "not in the archive": _tar(("h", "lnk", str(host / "secret"))),
            "points outside ": _tar(("h2", "lnk", "../../../../../../../" + str(host / "secret"))),
        }
        for reason, data in refused.items():
            done = _cp_in_tar(yard, "jail:/data/", data)
            assert done.returncode == 1 and reason.strip() in done.stderr.decode(), done.stderr
        # a symlink the stream made is followed inside the container, like one the container made
        assert (
            _cp_in_tar(
                yard, "jail:/data/", _tar(("d2", "sym", "/"), ("d2/tmp/esc6", "file", "x\n"))
            ).returncode
            == 0
        )
        assert yard.ok("exec", "jail", "cat", "/tmp/esc6") == "x\n"
        assert sorted(p.name for p in host.iterdir()) == ["secret"]
        assert not list(Path("/tmp").glob("esc[456]"))
        assert (host / "secret").stat().st_nlink == 1
    finally:
        yard.ok("rm", "-f", "jail")
