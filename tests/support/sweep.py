"""Finding and removing what a test agent's containers left on the machine: processes, cgroups, mounts.

Container tests tear an agent down with `sweep_agent` after removing its containers through the agent
itself, so that a failing test (or a leaking agent) still leaves nothing behind; leak assertions use
`pids_mentioning` and `mounts_under` to see the same things the sweep removes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from agent.runtime import cgroups
from tests.support.agent import AgentProcess

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cmdline(pid: int) -> str:
    """The process's command line, arguments joined by spaces ("" once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def pids_mentioning(text: str) -> list[int]:
    """Processes (other than this one) whose command line contains `text`, e.g. an agent's data root."""
    me = os.getpid()
    return [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and int(p.name) != me and text in cmdline(int(p.name))
    ]


def mounts_under(root: Path | str) -> list[str]:
    """Mount points (in /proc/self/mountinfo order) whose path starts with `root`."""
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f if line.split(" ")[4].startswith(str(root))]


def sweep_agent(agent: AgentProcess, cgroup_parent: str) -> None:
    """Stop `agent`, then kill, unmount and remove whatever its containers may have left."""
    agent.stop()
    # processes we started: conmons (their command line names our data root) and the containers'
    # processes (members of our cgroups)
    for pid in pids_mentioning(str(agent.data_root)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for group in cgroups.leftover(cgroup_parent):
        with contextlib.suppress(OSError):
            for pid_text in (group / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid_text), signal.SIGKILL)
    for target in sorted(mounts_under(agent.data_root), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    deadline = time.monotonic() + 5
    for group in cgroups.leftover(cgroup_parent):
        while True:
            try:
                group.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    rel = cgroup_parent.strip("/")
    for controller in CGROUP_ROOT.iterdir():
        with contextlib.suppress(OSError):
            (controller / rel).rmdir()
