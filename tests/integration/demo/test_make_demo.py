"""`make demo` end to end, as a new user runs it, then `make demo-clean` leaves nothing behind.

The demo (scripts/demo.py) makes 3 netns hosts with sshd, bootstraps them, builds and pushes a web app to a
registry, rolls v1 and v2 out and fails to roll out the broken v3. Checked here from outside the demo:
its printed pages (every host served v1, then v2, and still v2 after v3), the hosts' pages and release
states read afresh (`release ls --format json`: the canary reverted with the reason, the others committed
on the same revision), then everything the demo made — namespaces, links, its processes (sshd, agents,
conmon, containers, registry, the warm CLI server), the containers' cgroups, mounts, the demo directory —
is gone after `make demo-clean`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from pathlib import Path

import pytest

from scripts import demo
from scripts.netns_hosts import namespaces, netns_pids, with_descendants

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[3]


def make(target: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DOCKYARD_CONFIG_DIR", "DOCKYARD_HOST")}
    return subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def links(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return re.findall(rf"^\d+: ({re.escape(prefix)}[^:@]*)", out, re.M)


def cgroup_dirs(names: set[str]) -> list[str]:
    return [f"{root}/{d}" for root, dirs, _ in os.walk("/sys/fs/cgroup") for d in dirs if d in names]


def pushed_digests(output: str) -> list[str]:
    """The digests `push -q` printed for v1, v2 and v3, in that order."""
    block = next(b for b in output.split("\n$ ") if b.startswith("for v in 1 2 3; do dockyard"))
    digests = re.findall(r"^(sha256:[0-9a-f]{64})$", block, re.M)
    assert len(digests) == 3, block
    return digests


def printed_pages(output: str) -> list[dict[str, str]]:
    """Each `curl` loop's answers in the demo's output, in order: address → page."""
    rounds: list[dict[str, str]] = []
    for block in output.split("\n$ ")[1:]:
        if block.startswith("for ip in"):
            lines = block.splitlines()[1:]
            rounds.append(dict(re.findall(r"^(10\.232\.0\.\d+): (\S*)$", "\n".join(lines), re.M)))
    return rounds


def test_make_demo_then_demo_clean() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    try:
        run = make("demo", timeout=600)
        assert run.returncode == 0, f"make demo failed:\n{run.stdout[-6000:]}\n{run.stderr[-3000:]}"
        addresses = {h.address: h.name for h in demo.demo_hosts()}
        canary = demo.demo_hosts()[0]

        # the pages as the demo printed them: v1 everywhere, then v2, still v2 after the broken v3
        rounds = printed_pages(run.stdout)
        assert [set(r.values()) for r in rounds] == [{"v1"}, {"v2"}, {"v2"}], rounds
        assert all(set(r) == set(addresses) for r in rounds), rounds
        assert "$ dockyard -H all bootstrap --accept-new-host-keys" in run.stdout
        assert "$ export DOCKYARD_CONFIG_DIR=" in run.stdout
        assert "make demo-clean" in run.stdout.splitlines()[-1]

        # the same, read afresh: each host's page, and its release state
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        for address in addresses:
            with direct.open(f"http://{address}:8080/", timeout=10) as page:
                assert page.read().decode().strip() == "v2", address
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(demo.DEMO / "config"), "DOCKYARD_WARM": "0"}
        ls = subprocess.run(
            [str(REPO / ".venv/bin/dockyard"), "-H", "all", "--format", "json", "release", "ls"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ls.returncode == 0, ls.stderr
        releases = json.loads(ls.stdout)
        assert sorted(releases) == sorted(addresses.values()), releases
        v2 = pushed_digests(run.stdout)[1]
        for host, rows in releases.items():
            [web] = rows
            assert web["release"] == "web"
            assert web["image_digests"] == {"app": v2}, web  # v2 runs everywhere, by digest
            assert web["active_revision"] == web["last_known_good"] == 2, web
            if host == canary.name:  # v3 was tried there and reverted by the agent, with the reason
                assert (web["phase"], web["candidate_revision"]) == ("reverted", 3), web
                assert "health check failing" in web["reason"], web
            else:  # never touched by v3
                assert (web["phase"], web["candidate_revision"]) == ("committed", 2), web

        # what `make demo-clean` must remove, recorded while it all runs
        netnses = namespaces(demo.PREFIX)
        assert len(netnses) == 3, netnses
        pids = with_descendants([pid for ns in netnses for pid in netns_pids(ns)])
        pids += demo._demo_pids_outside_hosts()  # the registry, the demo's warm CLI server
        container_ids = {p.name for p in (demo.DEMO / "hosts").glob("*/var-lib-dockyard/containers/*")}
        assert container_ids and cgroup_dirs(container_ids), "the demo's containers should have cgroups"
        assert len(pids) > 9, pids  # 3 × (sshd, agent, conmon, container …) and the registry
    finally:
        clean = make("demo-clean", timeout=300)
    assert clean.returncode == 0, clean.stderr

    assert namespaces(demo.PREFIX) == []
    assert links(demo.PREFIX) == []
    assert [p for p in pids if alive(p)] == []
    assert cgroup_dirs(container_ids) == []
    with open("/proc/self/mountinfo") as f:
        assert [line for line in f if str(demo.DEMO) in line] == []
    assert not demo.DEMO.exists()
    assert not demo.OWNER_FILE.exists()

    # and again: clean on nothing is fine
    assert make("demo-clean", timeout=120).returncode == 0
