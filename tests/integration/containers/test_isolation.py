"""Isolation, asserted from inside real containers (runc + conmon, started by a real agent)."""

from __future__ import annotations

import os

import pytest

from agent.runtime import cgroups
from tests.integration.containers.conftest import IMAGE, Yard
from tests.support.agent import wait_for

pytestmark = pytest.mark.root

DOCKER_DEFAULT_CAPS = 0xA80425FB  # CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETPCAP
# NET_BIND_SERVICE NET_RAW SYS_CHROOT MKNOD AUDIT_WRITE SETFCAP
CAP_NET_RAW = 13


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"{name} not in /proc/self/status:\n{text}")


def test_pid_1_is_the_command_and_host_processes_are_invisible(yard: Yard) -> None:
    out = yard.ok("run", "--rm", IMAGE, "sh", "-c", "echo pid=$$; ls /proc | grep -c '^[0-9]'")
    lines = out.split()
    assert lines[0] == "pid=1"
    # sh, ls, grep and the subshell at most: none of the host's processes
    assert int(lines[1]) <= 5, out
    out = yard.ok("run", "--rm", IMAGE, "cat", "/proc/1/cmdline")
    assert out.replace("\0", " ").strip() == "cat /proc/1/cmdline"
    assert os.getpid() > 5
    assert yard.cli("run", "--rm", IMAGE, "test", "-d", f"/proc/{os.getpid()}").returncode == 1


def test_hostname_default_and_flag(yard: Yard) -> None:
    assert yard.ok("run", "--rm", "-h", "box7", IMAGE, "hostname").strip() == "box7"
    cid = yard.ok("run", "-d", IMAGE, "sh", "-c", "hostname; sleep 30").strip()
    try:
        wait_for(lambda: yard.ok("logs", cid).strip(), 10, "hostname output")
        assert yard.ok("logs", cid).strip() == cid[:12]
        assert f"{cid[:12]}\n" in yard.ok("exec", cid, "cat", "/etc/hostname")
    finally:
        yard.ok("rm", "-f", cid)


def test_mount_is_refused(yard: Yard) -> None:
    done = yard.cli("run", "--rm", IMAGE, "mount", "-t", "tmpfs", "none", "/mnt")
    assert done.returncode != 0
    assert "permission denied" in done.stderr.lower() or "not permitted" in done.stderr.lower()


def test_default_capabilities_and_flags_in_proc_status(yard: Yard) -> None:
    status = yard.ok("run", "--rm", IMAGE, "cat", "/proc/self/status")
    assert int(status_field(status, "CapEff"), 16) == DOCKER_DEFAULT_CAPS
    assert int(status_field(status, "CapBnd"), 16) == DOCKER_DEFAULT_CAPS
    assert int(status_field(status, "CapInh"), 16) == 0
    assert status_field(status, "NoNewPrivs") == "1"
    assert status_field(status, "Seccomp") == "2"
    dropped = yard.ok("run", "--rm", "--cap-drop", "NET_RAW", IMAGE, "cat", "/proc/self/status")
    assert not int(status_field(dropped, "CapEff"), 16) >> CAP_NET_RAW & 1
    assert not int(status_field(dropped, "CapBnd"), 16) >> CAP_NET_RAW & 1
    nobody = yard.ok("run", "--rm", "-u", "nobody", IMAGE, "cat", "/proc/self/status")
    assert int(status_field(nobody, "CapEff"), 16) == 0
    assert status_field(nobody, "Uid").split()[0] == "65534"
    nnp_off = yard.ok(
        "run", "--rm", "--security-opt", "no-new-privileges=false", IMAGE, "cat", "/proc/self/status"
    )
    assert status_field(nnp_off, "NoNewPrivs") == "0"


def test_seccomp_blocks_a_denied_syscall(yard: Yard) -> None:
    # swapon needs CAP_SYS_ADMIN, which --cap-add ALL grants: only the seccomp profile can refuse it now
    denied = yard.cli("run", "--rm", "--cap-add", "ALL", IMAGE, "swapon", "/dev/null")
    assert denied.returncode != 0
    assert "operation not permitted" in denied.stderr.lower(), denied.stderr
    unconfined = yard.cli(
        "run",
        "--rm",
        "--cap-add",
        "ALL",
        "--security-opt",
        "seccomp=unconfined",
        IMAGE,
        "swapon",
        "/dev/null",
    )
    assert unconfined.returncode != 0
    assert "operation not permitted" not in unconfined.stderr.lower(), unconfined.stderr


def test_masked_and_read_only_proc_paths(yard: Yard) -> None:
    # readable and non-empty on this host (see the assertion), masked (empty) inside
    assert os.path.getsize("/proc/keys") == 0 and len(open("/proc/keys").read()) > 0
    script = "cat /proc/keys /proc/timer_list | wc -c; echo 1 > /proc/sys/vm/drop_caches"
    out = yard.cli("run", "--rm", IMAGE, "sh", "-c", script)
    assert out.stdout.split()[0] == "0"
    assert "read-only file system" in out.stderr.lower()


def test_read_only_rootfs_holds(yard: Yard) -> None:
    done = yard.cli("run", "--rm", "--read-only", IMAGE, "touch", "/x")
    assert done.returncode != 0 and "read-only file system" in done.stderr.lower()
    assert yard.cli("run", "--rm", "--read-only", "--tmpfs", "/tmp", IMAGE, "touch", "/tmp/x").returncode == 0


def test_no_network_means_loopback_only(yard: Yard) -> None:
    out = yard.ok("run", "--rm", "--network", "none", IMAGE, "cat", "/proc/net/dev")
    interfaces = [line.split(":")[0].strip() for line in out.splitlines()[2:]]
    assert interfaces == ["lo"]


def test_rlimits_capped_at_the_agents_hard_limit(yard: Yard) -> None:
    hard = int(open("/proc/self/limits").read().split("Max open files")[1].split()[1])
    assert int(yard.ok("run", "--rm", IMAGE, "sh", "-c", "ulimit -n").strip()) <= hard
    assert (
        yard.ok("run", "--rm", "--ulimit", "nofile=512:1024", IMAGE, "sh", "-c", "ulimit -n").strip() == "512"
    )
    too_high = yard.cli("run", "--rm", "--ulimit", f"nofile={hard + 1}", IMAGE, "true")
    assert too_high.returncode == 125
    assert "hard limit" in too_high.stderr


def test_memory_limit_oom_kills_and_is_reported(yard: Yard) -> None:
    done = yard.cli(
        "run", "--name", "oomer", "--memory", "16m", "--memory-swap", "16m", IMAGE,
        "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1",
    )  # fmt: skip
    try:
        assert done.returncode == 137, done.stderr
        info = yard.inspect("oomer")
        assert info["oom_killed"] is True
        assert info["exit_code"] == 137
        events = yard.ok("events", "--since", "0", "--no-follow", "--filter", "container=oomer")
        assert " oom " in events and "exitCode=137" in events
    finally:
        yard.ok("rm", "-f", "oomer")


def test_pids_limit_stops_a_fork_bomb(yard: Yard) -> None:
    # a bounded bomb in a subshell: 100 background sleeps against a limit of 20. busybox sh gives up on
    # the first failed fork; `echo` is a builtin and `exec` replaces the shell, neither needs a fork.
    script = "(i=0; while [ $i -lt 100 ]; do sleep 60 & i=$((i+1)); done); echo done-forking; exec sleep 60"
    cid = yard.ok("run", "-d", "--pids-limit", "20", IMAGE, "sh", "-c", script).strip()
    try:
        wait_for(lambda: "done-forking" in yard.ok("logs", cid), 30, "the loop to finish")
        group = cgroups.ROOT / "pids" / yard.cgroup_parent.strip("/") / cid
        if not group.exists():  # cgroup v2
            group = cgroups.ROOT / yard.cgroup_parent.strip("/") / cid
        assert (group / "pids.max").read_text().strip() == "20"
        assert int((group / "pids.current").read_text()) <= 20
        logs = yard.cli("logs", cid)
        assert "fork" in logs.stderr.lower(), logs.stderr
    finally:
        yard.ok("rm", "-f", cid)


def test_user_and_workdir(yard: Yard) -> None:
    out = yard.ok("run", "--rm", "-u", "nobody", "-w", "/tmp", IMAGE, "sh", "-c", "id -u; pwd")
    assert out.split() == ["65534", "/tmp"]
