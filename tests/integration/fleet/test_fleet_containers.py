"""Container commands fan out through the same mechanism: import, run -d, ps, exec, logs, rm on 5 hosts.

Uses its own small fleet (3 hosts) so it does not depend on the order of test_fleet.py's tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller import pki
from controller.bootstrap import wheelhouse as wh_mod
from tests.support.agent import run_cli
from tests.support.netns_hosts import Fleet, TestHost, fleet

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

N_HOSTS = 3
NAME = "dyf-web"


@dataclass
class Env:
    fleet: Fleet
    config_dir: Path
    wheelhouse: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if run_cli(Path("/nonexistent"), "run", "--help").returncode != 0:
        pytest.skip("no container commands in this build")
    base = tmp_path_factory.mktemp("fleet-containers")
    config_dir = base / "controller"
    pki.init(config_dir)
    wheelhouse = asyncio.run(wh_mod.build(base / "wh", *wh_mod.local_platform())).path
    with fleet(N_HOSTS) as f:
        hosts = [a for h in f.hosts for a in ("-H", f"{h.name}={h.address}")]
        extra = ["--wheelhouse", str(wheelhouse), "--ssh-key", str(f.client_key), "--accept-new-host-keys"]
        r = run_cli(config_dir, *hosts, "bootstrap", *extra, timeout=300)
        assert r.returncode == 0, r.stderr
        try:
            yield Env(f, config_dir, wheelhouse)
        finally:
            run_cli(config_dir, "-H", "all", "rm", "-f", NAME)
            for h in f.hosts:
                log = h.private("/var/lib/dockyard/agent.log")
                if log.exists():
                    print(f"\n----- {h.name} agent log (tail) -----\n{log.read_text()[-3000:]}")


def busybox_tar(dest: Path) -> Path:
    root = dest / "rootfs"
    (root / "bin").mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for tool in ("sh", "sleep", "true", "echo", "cat"):
        (root / "bin" / tool).symlink_to("busybox")
    tar = dest / "busybox.tar"
    with tarfile.open(tar, "w") as t:
        t.add(root, arcname=".")
    return tar


def sleeping_container(host: TestHost) -> list[int]:
    """Pids of the container processes on `host`: children of the conmon processes in its namespace.

    (The container has its own network namespace, so it is found through its conmon.)
    """
    conmons = set()
    for pid in host.pids():
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() == "conmon":
                conmons.add(pid)
        except OSError:
            continue
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in conmons:
                found.append(int(entry.name))
    return sorted(found)


def test_container_commands_fan_out(env: Env, tmp_path: Path) -> None:
    def cli(*args: str) -> tuple[int, str, str]:
        r = run_cli(env.config_dir, "-H", "all", *args, timeout=120)
        return r.returncode, r.stdout, r.stderr

    names = [h.name for h in env.fleet.hosts]
    rc, out, err = cli("import", str(busybox_tar(tmp_path)), "dyf/busybox:1")
    assert rc == 0 and f"{N_HOSTS} ok, 0 failed" in err, err
    rc, out, err = cli("run", "-d", "--name", NAME, "--network", "none", "dyf/busybox:1", "sh", "-c",
                       "echo hello-from-container; exec sleep 600")  # fmt: skip
    assert rc == 0, err
    assert sorted(line.split(" | ")[0] for line in out.splitlines()) == names

    rc, out, err = cli("ps")
    assert rc == 0, err
    header, *rows = out.splitlines()
    assert header.split()[0] == "HOST"
    assert sorted(r.split()[0] for r in rows if NAME in r) == names

    # exec fans out: each host's lines prefixed, a non-zero exit code is that host's failure.
    rc, out, err = cli("exec", NAME, "sh", "-c", "echo exec-ok-$(hostname)")
    assert rc == 0 and f"{N_HOSTS} ok, 0 failed" in err, err
    assert sorted(line.split(" | ")[0] for line in out.splitlines()) == names
    assert all(line.split(" | ")[1].startswith("exec-ok-") for line in out.splitlines())
    first = names[0]
    r = run_cli(env.config_dir, "-H", first, "exec", NAME, "sh", "-c", ": > /fail-here")
    assert r.returncode == 0, r.stderr
    rc, out, err = cli("exec", NAME, "sh", "-c", "[ -e /fail-here ] && exit 3; echo fine")
    assert rc == 1 and f"{N_HOSTS - 1} ok, 1 failed" in err
    assert f"error: {first}: command exited with code 3" in err
    assert sorted(line.split(" | ")[0] for line in out.splitlines()) == [n for n in names if n != first]

    deadline = time.monotonic() + 10
    while True:  # the container's first line may land a moment after `run -d` returns
        rc, out, err = cli("logs", NAME)
        if (rc == 0 and out.count("hello-from-container") == N_HOSTS) or time.monotonic() > deadline:
            break
    assert sorted(out.splitlines()) == [f"{n} | hello-from-container" for n in names]

    # One agent dies: that host is reported, the others answer, within the timeout.
    victim = env.fleet[1]
    sup, pid = (
        victim.read_pidfile("/run/dockyard/supervisor.pid"),
        victim.read_pidfile("/run/dockyard/agent.pid"),
    )
    assert sup and pid
    os.kill(sup, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    rc, out, err = cli("--timeout", "3", "ps")
    assert time.monotonic() - start < 6
    assert rc == 1 and f"{N_HOSTS - 1} ok, 1 failed" in err and f"error: {victim.name}:" in err
    assert sorted(r.split()[0] for r in out.splitlines()[1:] if NAME in r) == [
        n for n in names if n != victim.name
    ]
    # The container outlived its agent (conmon keeps it); bootstrap restarts the agent, which finds it.
    r = run_cli(env.config_dir, "-H", victim.name, "bootstrap", timeout=300)
    assert r.returncode == 0 and "start agent" in r.stdout, r.stderr
    rc, out, err = cli("ps")
    assert rc == 0 and sum(NAME in line for line in out.splitlines()) == N_HOSTS, out + err

    # --upgrade replaces the agent on a host while its container keeps running (same process).
    host = env.fleet[0]
    sleepers = sleeping_container(host)
    assert len(sleepers) == 1
    newer = tmp_path / "newer-wheelhouse"
    shutil.copytree(env.wheelhouse, newer)
    with zipfile.ZipFile(newer / "dyfmarker-1.0-py3-none-any.whl", "w") as z:
        z.writestr("dyfmarker/__init__.py", "")
    agent_before = host.read_pidfile("/run/dockyard/agent.pid")
    r = run_cli(
        env.config_dir, "-H", host.name, "bootstrap", "--upgrade", "--wheelhouse", str(newer), timeout=300
    )
    assert r.returncode == 0 and "restart agent" in r.stdout, r.stderr
    assert host.read_pidfile("/run/dockyard/agent.pid") != agent_before
    assert sleeping_container(host) == sleepers
    r = run_cli(env.config_dir, "-H", host.name, "ps", timeout=60)
    assert r.returncode == 0 and NAME in r.stdout and "Up" in r.stdout, r.stdout + r.stderr

    rc, out, err = cli("rm", "-f", NAME)
    assert rc == 0, err
    rc, out, err = cli("ps", "-a")
    assert rc == 0 and NAME not in out
