"""Probe the host facts the spec depends on (rlimits, capabilities, cgroup features), once per agent."""

from __future__ import annotations

import functools
import os
import resource
import socket
from pathlib import Path

from agent.hostinfo import cgroup_layout, oci_arch
from agent.runtime.spec import ALL_CAPABILITIES, HostFacts

_RLIMITS = {
    "RLIMIT_NOFILE": resource.RLIMIT_NOFILE,
    "RLIMIT_NPROC": resource.RLIMIT_NPROC,
    "RLIMIT_CORE": resource.RLIMIT_CORE,
    "RLIMIT_MEMLOCK": resource.RLIMIT_MEMLOCK,
    "RLIMIT_STACK": resource.RLIMIT_STACK,
    "RLIMIT_MSGQUEUE": resource.RLIMIT_MSGQUEUE,
    "RLIMIT_NICE": resource.RLIMIT_NICE,
    "RLIMIT_RTPRIO": resource.RLIMIT_RTPRIO,
    "RLIMIT_SIGPENDING": resource.RLIMIT_SIGPENDING,
}
CAP_SYS_RESOURCE = 24


def _has_effective_cap(bit: int) -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return False


def _bounding_set() -> frozenset[str] | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapBnd:"):
                mask = int(line.split()[1], 16)
                return frozenset(name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1)
    except OSError:
        pass
    return None


def _hard_limits() -> dict[str, int]:
    out: dict[str, int] = {}
    for name, kind in _RLIMITS.items():
        hard = resource.getrlimit(kind)[1]
        if hard != resource.RLIM_INFINITY:
            out[name] = hard
    return out


def _cap_last() -> int:
    try:
        return int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    except (OSError, ValueError):
        return 40


def _swap_accounting(layout: str) -> bool:
    if layout == "v2":
        return True
    return Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()


@functools.cache
def probe() -> HostFacts:
    layout = cgroup_layout()
    return HostFacts(
        arch=oci_arch(),
        cpus=os.cpu_count() or 1,
        hostname=socket.gethostname(),
        rlimit_hard=_hard_limits(),
        can_raise_rlimits=_has_effective_cap(CAP_SYS_RESOURCE),
        cgroup_namespace=Path("/proc/self/ns/cgroup").exists(),
        swap_accounting=_swap_accounting(layout),
        cap_last=_cap_last(),
        capabilities=_bounding_set(),
    )
