"""Issue 12 item 3: host users must not reach the data root (setuid binaries, device nodes, env secrets).

A real agent with a real container running (as uid 1000) and an image carrying a setuid-root binary, a
block device node and files under implied directories. Every path under the data root is then tried as
`nobody`: nothing can be listed, read or executed. The data root starts out as an older agent left it
(0755 with a 0644 database): the agent fixes it at start-up and says so once.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, config_text, run_cli
from tests.support.images import busybox_rootfs_bytes
from tests.support.sweep import sweep_agent

pytestmark = pytest.mark.root

NOBODY = 65534
IMAGE = "perms:test"
SECRET = "DB_PASSWORD=" + secrets.token_hex(8)
SUID_C = """#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d\\n", (int)geteuid()); return 0; }
"""


def as_nobody(fn: Callable[..., Any], *args: Any) -> Any:
    """Run `fn(*args)` in a forked child that dropped to nobody:nogroup; returns its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(NOBODY, NOBODY, NOBODY)
            os.setresuid(NOBODY, NOBODY, NOBODY)
            data = memoryview(json.dumps(fn(*args)).encode())
            while data:
                data = data[os.write(w, data) :]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    with os.fdopen(r, "rb") as f:
        while chunk := f.read(1 << 16):
            chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the nobody probe failed"
    return json.loads(b"".join(chunks))


def probe(paths: list[str]) -> dict[str, list[str]]:
    """What nobody can do with each path: stat it, list it, read it, run it (and as whom)."""
    found: dict[str, list[str]] = {}
    for p in paths:
        done = []
        try:
            st = os.lstat(p)
            done.append("stat")
        except OSError:
            found[p] = done
            continue
        if stat.S_ISDIR(st.st_mode):
            try:
                os.listdir(p)
                done.append("list")
            except OSError:
                pass
        elif not stat.S_ISLNK(st.st_mode):
            try:
                os.close(os.open(p, os.O_RDONLY | os.O_NONBLOCK))
                done.append("open")
            except OSError:
                pass
            if st.st_mode & 0o111:
                try:
                    out = subprocess.run([p], capture_output=True, text=True, timeout=10).stdout
                    done.append("exec" + (" as root" if "euid=0" in out else ""))
                except OSError:
                    pass
        found[p] = done
    return {p: d for p, d in found.items() if d}


def image_tar(dest: Path, suid: Path) -> Path:
    """busybox plus a setuid-root binary, a world-writable block device and a file under implied dirs."""
    buf = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(busybox_rootfs_bytes()), mode="r") as src,
        tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for member in src:
            out.addfile(member, src.extractfile(member) if member.isreg() else None)
        info = tarfile.TarInfo("bin/suid")
        data = suid.read_bytes()
        info.size, info.mode = len(data), 0o4755
        out.addfile(info, io.BytesIO(data))
        dev = tarfile.TarInfo("dev/loop7")
        dev.type, dev.devmajor, dev.devminor, dev.mode = tarfile.BLKTYPE, 7, 7, 0o666
        out.addfile(dev)
        note = tarfile.TarInfo("opt/app/data.txt")  # no entries for opt/ and opt/app/
        note.size, note.mode = 5, 0o644
        out.addfile(note, io.BytesIO(b"hello"))
    dest.write_bytes(buf.getvalue())
    return dest


@pytest.fixture
def base() -> Iterator[Path]:
    """A directory nobody can traverse (tmp_path is not), so only the agent's own modes protect it."""
    d = Path(tempfile.mkdtemp(prefix="dy-perms-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_nobody_reaches_nothing_under_the_data_root(base: Path) -> None:
    suid = base / "suid"
    subprocess.run(["cc", "-x", "c", "-o", str(suid), "-"], input=SUID_C, text=True, check=True)
    tar = image_tar(base / "image.tar", suid)
    pki = FleetPki.create(base / "pki")
    root = base / "agent"
    root.mkdir(mode=0o755)
    data = root / "data"
    # as an agent without a umask left it: everything open to everyone
    for d in (data, data / "containers", data / "snapshots"):
        d.mkdir(mode=0o755)
        d.chmod(0o755)
    sqlite3.connect(data / "dockyard.db").close()
    (data / "dockyard.db").chmod(0o644)
    cgroup_parent = f"/dytest-{secrets.token_hex(4)}"
    cfg = root / "agent.toml"
    cfg.write_text(config_text({"cgroup_parent": cgroup_parent}))
    agent = AgentProcess(root=root, tls_dir=None, listen=None, extra_args=["--config", str(cfg)])

    def ok(*args: str) -> str:
        done = run_cli(pki.config_dir, *args, host=agent.unix_target, timeout=120)
        assert done.returncode == 0, f"dockyard {' '.join(args)}: {done.stderr}"
        return done.stdout

    try:
        agent.start()
        fixed = [e for e in agent.events() if e.get("event") == "data_root.permissions_fixed"]
        assert len(fixed) == 1, "the agent must say once what it closed"
        assert {c.split(" ")[0] for c in fixed[0]["changed"]} >= {
            str(data),
            str(data / "containers"),
            str(data / "dockyard.db"),
        }

        ok("import", str(tar), IMAGE)
        ok("volume", "create", "vol1")
        run = ["-d", "--name", "c", "-u", "1000", "-e", SECRET, "-v", "vol1:/srv/deep/data"]
        ok("run", *run, IMAGE, "sleep", "600")

        # the container's non-root user still reaches everything it should
        assert ok("exec", "c", "id", "-u").strip() == "1000"
        assert ok("exec", "c", "cat", "/opt/app/data.txt") == "hello"
        for f in ("/etc/hosts", "/etc/resolv.conf", "/etc/hostname"):
            ok("exec", "c", "cat", f)
        ok("exec", "c", "ls", "/", "/srv/deep/data", "/opt/app", "/bin")  # runc made /srv/deep
        assert ok("exec", "c", "sh", "-c", "umask").strip() == "0022"  # not the agent's 0077
        ok("exec", "c", "sh", "-c", "echo hi > /tmp/x")
        assert ok("exec", "c", "stat", "-c", "%a", "/tmp/x").strip() == "644"

        paths = [str(data)]
        devices = []
        for dirpath, dirnames, filenames in os.walk(data):
            for name in [*dirnames, *filenames]:
                p = Path(dirpath) / name
                paths.append(str(p))
                st = p.lstat()
                if (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)) and st.st_rdev != 0:
                    devices.append(str(p))
        suids = [p for p in paths if p.endswith("/fs/bin/suid")]
        assert suids, "the image's setuid binary must be in a snapshot"
        assert any(p.startswith(str(data / "containers")) for p in paths), "a container must be running"
        assert devices == [], "device nodes from images must not be created"

        reached = as_nobody(probe, paths)
        assert reached == {str(data): ["stat"]}, f"nobody reached: {dict(list(reached.items())[:20])}"
        for suid_path in suids:
            done = subprocess.run(
                ["su", "nobody", "-s", "/bin/sh", "-c", suid_path],
                capture_output=True,
                text=True,
                check=False,
            )
            assert "euid=0" not in done.stdout and done.returncode != 0

        # defence in depth: what the agent wrote is root's alone, even below the closed top
        for name in ("dockyard.db", "dockyard.db-wal"):
            if (data / name).exists():
                assert stat.S_IMODE((data / name).stat().st_mode) & 0o077 == 0, name
        as_su = ["su", "nobody", "-s", "/bin/sh", "-c", f"cat {data}/dockyard.db*"]
        assert SECRET.encode() not in subprocess.run(as_su, capture_output=True, check=False).stdout
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
    finally:
        if agent.running:
            run_cli(pki.config_dir, "rm", "-f", "c", host=agent.unix_target, timeout=60)
        sweep_agent(agent, cgroup_parent)
        agent.release()
        if agent.proc is not None and agent.proc.returncode not in (0, None):
            print(f"\n----- agent log -----\n{agent.log_text()[-20000:]}")
