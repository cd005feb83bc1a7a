"""The container lifecycle when something dies half-way: the agent during a commit, the runtime during a
create, and agent restarts in the middle of a restart back-off (issue 12, items 8, 10 and 15)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.containers.conftest import IMAGE, Yard, YardFactory
from tests.support.agent import CLI_BIN, wait_for

pytestmark = pytest.mark.root


def runtime_status(yard: Yard, cid: str) -> str:
    """What runc itself says (created|running|paused|stopped), "" when it has no state for `cid`."""
    done = subprocess.run(
        ["runc", "--root", str(yard.data_root / "run" / "runc"), "state", cid],
        capture_output=True,
        text=True,
        check=False,
    )
    return str(json.loads(done.stdout)["status"]) if done.returncode == 0 else ""


def test_agent_killed_during_commit_thaws_the_container_at_start(yard_factory: YardFactory) -> None:
    yard = yard_factory("commitkill")
    # 48 MB of random data in the container's layer: writing it takes the commit a while, paused
    cid = yard.ok(
        "run", "-d", IMAGE, "sh", "-c",
        "dd if=/dev/urandom of=/big bs=1M count=48 2>/dev/null; echo ready; exec sleep 600",
    ).strip()  # fmt: skip
    wait_for(lambda: "ready" in yard.ok("logs", cid), 60, "the container to write its file", 0.1)
    commit = subprocess.Popen(
        [CLI_BIN, "-H", yard.host, "commit", cid, "frozen:1"],
        env={**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: runtime_status(yard, cid) == "paused", 60, "the commit to pause it", 0.005)
        yard.agent.kill()
    finally:
        commit.kill()
        commit.wait()
    assert runtime_status(yard, cid) == "paused"  # frozen with nobody left to thaw it
    yard.agent.start()
    wait_for(lambda: runtime_status(yard, cid) == "running", 20, "the container to be thawed", 0.05)
    assert yard.status(cid) == "running"
    assert yard.ok("exec", cid, "echo", "alive") == "alive\n"
    # a pause the user asked for is theirs: it survives an agent restart
    yard.ok("pause", cid)
    yard.agent.kill()
    yard.agent.start()
    assert yard.status(cid) == "paused" and runtime_status(yard, cid) == "paused"
    yard.ok("rm", "-f", cid)


def test_restart_back_off_goes_on_across_agent_restarts(yard_factory: YardFactory) -> None:
    yard = yard_factory("backoff")
    cid = yard.ok("run", "-d", "--restart", "always", IMAGE, "false").strip()
    # six policy restarts: the back-off doubled from 0.1 s to 3.2 s, the next one is 6.4 s
    wait_for(lambda: yard.inspect(cid)["restart_count"] >= 6, 60, "six restarts", 0.1)
    before = yard.inspect(cid)["restart_count"]
    yard.restart_agent()
    # a back-off that started over (0.1, 0.2, 0.4, 0.8 s...) restarts it 4 times in 2 s; the kept one
    # (6.4 s or what is left of it, then 12.8 s) at most once, plus once more if a restart came
    # between `before` and the agent's stop
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        info = yard.inspect(cid)
        assert info["status"] in ("running", "restarting", "exited"), info
        count = info["restart_count"] - before
        assert count <= 2, f"restarted {count} times right after the agent restarted"
        time.sleep(0.1)
    yard.ok("rm", "-f", cid)


KILLING_RUNC = """#!/bin/sh
# runc, except that the first `create` is SIGKILLed at its very end: the runtime's state and the
# container's init exist, the caller only sees a runtime killed by a signal
for a in "$@"; do
    if [ "$a" = create ] && mkdir MARK 2>/dev/null; then
        REAL "$@"
        kill -9 $$
    fi
done
exec REAL "$@"
"""


def zombie_children(pid: int) -> list[str]:
    """Zombies whose parent is `pid`: "PID NAME" each."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = dict(
                line.split(":\t", 1) for line in (entry / "status").read_text().splitlines() if ":\t" in line
            )
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid) and fields.get("State", "").startswith("Z"):
            found.append(f"{entry.name} {fields.get('Name', '').strip()}")
    return found


def test_runc_killed_during_run_fails_the_run_and_leaves_no_zombie(
    yard_factory: YardFactory, tmp_path: Path
) -> None:
    yard = yard_factory("runckill")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "runc"
    real = subprocess.run(["sh", "-c", "command -v runc"], capture_output=True, text=True).stdout.strip()
    mark = tmp_path / "killed-once"
    wrapper.write_text(KILLING_RUNC.replace("REAL", real).replace("MARK", str(mark)))
    wrapper.chmod(0o755)
    yard.agent.env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    yard.restart_agent()
    failed = yard.cli("run", "-d", "--name", "victim", IMAGE, "sleep", "600", timeout=30)
    assert mark.exists()
    assert failed.returncode != 0 and failed.stderr.startswith("error:"), failed
    assert yard.status("victim") in ("created", "exited")
    # the failed create left nothing that keeps the next start from working
    yard.ok("start", "victim")
    assert yard.status("victim") == "running"
    assert yard.ok("exec", "victim", "echo", "ok") == "ok\n"
    # every process the failed run left behind was reaped by the agent
    assert yard.agent.proc is not None
    agent_pid = yard.agent.proc.pid
    wait_for(lambda: not zombie_children(agent_pid), 10, "no zombie children of the agent", 0.05)
    yard.ok("rm", "-f", "victim")
