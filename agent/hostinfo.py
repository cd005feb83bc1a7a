"""Facts about the host the agent runs on: OS, kernel, CPUs, memory, cgroup layout, runtime binaries.

Probing runtime versions spawns processes, so results are computed once per agent process (they do not
change while it runs; an upgrade restarts the agent).
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

RUNTIME_BINARIES = ("runc", "crun", "conmon")


@dataclass(frozen=True)
class RuntimeBinary:
    name: str
    path: str
    version: str
    usable: bool
    problem: str


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    os: str
    kernel: str
    arch: str
    cpus: int
    memory_bytes: int
    cgroup_layout: str


def os_release(path: Path = Path("/etc/os-release")) -> str:
    try:
        fields = dict(
            line.split("=", 1)
            for line in path.read_text().splitlines()
            if "=" in line and not line.startswith("#")
        )
    except OSError:
        return platform.system()
    return fields.get("PRETTY_NAME", fields.get("NAME", platform.system())).strip('"')


def memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def oci_arch(machine: str | None = None) -> str:
    """The OCI/Go name of the CPU architecture (x86_64 → amd64, aarch64 → arm64, …)."""
    machine = machine or platform.machine()
    return {
        "x86_64": "amd64",
        "aarch64": "arm64",
        "armv7l": "arm",
        "armv6l": "arm",
        "i686": "386",
        "i386": "386",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(machine, machine)


def cgroup_layout(root: Path = Path("/sys/fs/cgroup")) -> str:
    """`v2` (unified), `hybrid` (v1 controllers + cgroup2 at /unified) or `v1`."""
    if (root / "cgroup.controllers").exists():
        return "v2"
    if (root / "unified" / "cgroup.controllers").exists() or (root / "unified").is_mount():
        return "hybrid"
    return "v1"


def host_facts() -> HostFacts:
    uname = os.uname()
    return HostFacts(
        hostname=uname.nodename,
        os=os_release(),
        kernel=uname.release,
        arch=oci_arch(uname.machine),
        cpus=os.cpu_count() or 1,
        memory_bytes=memory_bytes(),
        cgroup_layout=cgroup_layout(),
    )


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    first = (out.stdout or out.stderr).strip().splitlines()
    if not first:
        return ""
    words = first[0].split()
    # "runc version 1.1.5", "crun version 1.8.1", "conmon version 2.1.6"
    return words[2] if len(words) >= 3 and words[1] == "version" else first[0]


@functools.cache
def runtime_binaries() -> tuple[RuntimeBinary, ...]:
    layout = cgroup_layout()
    found: list[RuntimeBinary] = []
    for name in RUNTIME_BINARIES:
        path = shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/usr/bin:/usr/local/bin")
        if path is None:
            found.append(RuntimeBinary(name, "", "", False, "not installed"))
            continue
        problem = ""
        if name == "crun" and layout == "hybrid":
            problem = "crun refuses the cgroup v1/v2 hybrid layout of this host"
        found.append(RuntimeBinary(name, path, _version(path), not problem, problem))
    return tuple(found)
