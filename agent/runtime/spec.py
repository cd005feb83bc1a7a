"""Build an OCI runtime `config.json` from run options and the image config (pure: no I/O).

Everything the container's isolation depends on is decided here, so it is golden-tested field by field:
namespaces, Docker's default capabilities, no_new_privileges, masked/read-only /proc paths, the default
seccomp profile, rlimits capped at the agent's own hard limits, Docker's rules for entrypoint/cmd/env/
workdir, mounts and cgroup resources. Callers do the I/O first (resolve the user from the rootfs, volume
names to host directories, write the /etc files) and pass the results in.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.errors import InvalidArgument
from agent.runtime import seccomp
from agent.runtime.options import ULIMIT_NAMES, HealthConfig, MountSpec, MountType, RunOptions
from agent.runtime.users import ResolvedUser

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD = 100_000
DEFAULT_NOFILE = 1_048_576

# Docker's default capability set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Every capability by number (linux/capability.h); `HostFacts.cap_last` trims to what the kernel knows.
ALL_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN",
    "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip

# Docker's masked and read-only paths (moby oci/defaults.go).
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")


@dataclass(frozen=True)
class HostFacts:
    """What the spec needs to know about the host; gathered once by `agent.runtime.host`."""

    arch: str = "amd64"
    cpus: int = 1
    hostname: str = "localhost"
    rlimit_hard: Mapping[str, int] = field(default_factory=dict)  # "RLIMIT_NOFILE" → agent's hard limit
    can_raise_rlimits: bool = False  # holds CAP_SYS_RESOURCE
    cgroup_namespace: bool = True
    swap_accounting: bool = True
    cap_last: int = 40
    # the agent's own bounding set (CAP_* names); None = every capability up to cap_last
    capabilities: frozenset[str] | None = None


@dataclass(frozen=True)
class ImageConfig:
    """The parts of an OCI image config (`config` object) that shape a container."""

    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    stop_signal: str = ""
    healthcheck: HealthConfig | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_oci(cls, image_config: Mapping[str, Any]) -> ImageConfig:
        """From the whole image config JSON (with its `config` object) as the image store returns it."""
        cfg = image_config.get("config") or {}
        hc = cfg.get("Healthcheck")
        health = None
        if isinstance(hc, dict) and hc.get("Test"):
            health = HealthConfig(
                test=tuple(hc["Test"]),
                interval_s=(hc.get("Interval") or 30e9) / 1e9,
                timeout_s=(hc.get("Timeout") or 30e9) / 1e9,
                retries=int(hc.get("Retries") or 3),
                start_period_s=(hc.get("StartPeriod") or 0) / 1e9,
            )
        ep, cmd = cfg.get("Entrypoint"), cfg.get("Cmd")
        return cls(
            entrypoint=tuple(ep) if ep else None,
            cmd=tuple(cmd) if cmd else None,
            env=tuple(cfg.get("Env") or ()),
            working_dir=cfg.get("WorkingDir") or "",
            user=cfg.get("User") or "",
            stop_signal=cfg.get("StopSignal") or "",
            healthcheck=health,
            labels=dict(cfg.get("Labels") or {}),
        )


@dataclass(frozen=True)
class ProcessPlan:
    args: tuple[str, ...]
    env: tuple[str, ...]
    cwd: str


@dataclass(frozen=True)
class SpecInputs:
    """Facts resolved by the caller's I/O: ids, paths, the user, where each volume lives."""

    container_id: str
    rootfs: str
    hostname: str
    user: ResolvedUser
    cgroups_path: str
    etc_files: Mapping[str, str] = field(default_factory=dict)  # container path → host file
    netns_path: str | None = None  # join this network namespace instead of creating one
    volume_sources: Mapping[str, str] = field(default_factory=dict)  # mount target → host dir


def merge_env(base: tuple[str, ...], overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Later `K=V` entries replace earlier ones with the same key, keeping first-seen order."""
    merged: dict[str, str] = {}
    for item in (*base, *overrides):
        key = item.split("=", 1)[0]
        merged[key] = item
    return tuple(merged.values())


def resolve_process(opts: RunOptions, image: ImageConfig, hostname: str) -> ProcessPlan:
    """Docker's rules: --entrypoint replaces the image's and drops its CMD; a CMD replaces the image's."""
    if opts.entrypoint is not None:
        entrypoint: tuple[str, ...] = opts.entrypoint
        cmd = opts.command or ()
    else:
        entrypoint = image.entrypoint or ()
        cmd = opts.command if opts.command else (image.cmd or ())
    args = (*entrypoint, *cmd)
    if not args:
        raise InvalidArgument("no command specified: the image has no entrypoint or CMD and none was given")
    env = merge_env(image.env, (f"HOSTNAME={hostname}", *opts.env))
    if not any(e.startswith("PATH=") for e in env):
        env = (f"PATH={DEFAULT_PATH}", *env)
    if opts.tty and not any(e.startswith("TERM=") for e in env):
        env = (*env, "TERM=xterm")
    cwd = opts.workdir or image.working_dir or "/"
    if not cwd.startswith("/"):
        raise InvalidArgument(f"the working directory {cwd!r} must be absolute")
    return ProcessPlan(args, env, posixpath.normpath(cwd))


def normalize_capability(name: str) -> str:
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    full = upper if upper.startswith("CAP_") else "CAP_" + upper
    if full not in ALL_CAPABILITIES:
        raise InvalidArgument(f"unknown capability {name!r}")
    return full


def capability_set(opts: RunOptions, host: HostFacts) -> tuple[str, ...]:
    """Docker's order of operations: start from the default set (or all when privileged), drop, then add."""
    held = host.capabilities
    known = tuple(c for c in ALL_CAPABILITIES[: host.cap_last + 1] if held is None or c in held)
    if opts.privileged:
        return known
    adds = [normalize_capability(c) for c in opts.cap_add]
    for cap in adds:
        if cap != "ALL" and cap not in known:
            raise InvalidArgument(f"--cap-add {cap}: the agent itself does not hold this capability")
    drops = [normalize_capability(c) for c in opts.cap_drop]
    caps = [] if "ALL" in drops else [c for c in DEFAULT_CAPABILITIES if c not in drops]
    if "ALL" in adds:
        caps = list(known)
    for cap in adds:
        if cap != "ALL" and cap not in caps:
            caps.append(cap)
    return tuple(c for c in caps if c in known)


def _rlimits(opts: RunOptions, host: HostFacts) -> list[dict[str, Any]]:
    wanted: dict[str, tuple[int, int]] = {}
    nofile_cap = host.rlimit_hard.get("RLIMIT_NOFILE", DEFAULT_NOFILE)
    default_nofile = DEFAULT_NOFILE if host.can_raise_rlimits else min(DEFAULT_NOFILE, nofile_cap)
    wanted["RLIMIT_NOFILE"] = (default_nofile, default_nofile)
    for u in opts.ulimits:
        kind = ULIMIT_NAMES[u.name]
        cap = host.rlimit_hard.get(kind)
        if cap is not None and not host.can_raise_rlimits and u.hard > cap:
            raise InvalidArgument(
                f"--ulimit {u.name}={u.soft}:{u.hard} is above the agent's own hard limit {cap} "
                "and the agent lacks CAP_SYS_RESOURCE to raise it"
            )
        wanted[kind] = (u.soft, u.hard)
    return [{"type": k, "hard": h, "soft": s} for k, (s, h) in wanted.items()]


def _resources(opts: RunOptions, host: HostFacts) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": [{"allow": opts.privileged, "access": "rwm"}]}
    memory: dict[str, int] = {}
    if opts.memory_swap is not None and opts.memory is None:
        raise InvalidArgument("--memory-swap needs --memory as well")
    if opts.memory is not None:
        memory["limit"] = opts.memory
        if host.swap_accounting:
            if opts.memory_swap is None:
                memory["swap"] = 2 * opts.memory
            elif opts.memory_swap == -1:
                memory["swap"] = -1
            elif opts.memory_swap < opts.memory:
                raise InvalidArgument("--memory-swap must be at least --memory (it counts memory plus swap)")
            else:
                memory["swap"] = opts.memory_swap
    if memory:
        res["memory"] = memory
    cpu: dict[str, int] = {}
    if opts.cpus is not None:
        if opts.cpus > host.cpus:
            raise InvalidArgument(
                f"--cpus {opts.cpus:g} is more than the {host.cpus} CPUs available "
                f"(range 0.01 to {host.cpus}.00)"
            )
        cpu["quota"] = int(opts.cpus * CPU_PERIOD)
        cpu["period"] = CPU_PERIOD
    if opts.cpu_shares is not None:
        if not 2 <= opts.cpu_shares <= 262_144:
            raise InvalidArgument(f"--cpu-shares {opts.cpu_shares} is outside 2..262144")
        cpu["shares"] = opts.cpu_shares
    if cpu:
        res["cpu"] = cpu
    if opts.pids_limit is not None and opts.pids_limit > 0:
        res["pids"] = {"limit": opts.pids_limit}
    return res


def _default_mounts(opts: RunOptions) -> list[dict[str, Any]]:
    sys_mode = "rw" if opts.privileged else "ro"
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", sys_mode],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", sys_mode],
        },
    ]


def _user_mount(m: MountSpec, inputs: SpecInputs) -> dict[str, Any]:
    if m.type is MountType.TMPFS:
        opts = ["nosuid", "nodev", "noexec", *m.tmpfs_options]
        return {"destination": m.target, "type": "tmpfs", "source": "tmpfs", "options": opts}
    source = m.source
    if m.type is MountType.VOLUME:
        source = inputs.volume_sources.get(m.target, "")
        if not source:
            raise InvalidArgument(f"volume for {m.target} was not resolved to a host directory")
    options = ["rbind", m.propagation or "rprivate", "ro" if m.read_only else "rw"]
    return {"destination": m.target, "type": "bind", "source": source, "options": options}


def _mounts(opts: RunOptions, inputs: SpecInputs) -> list[dict[str, Any]]:
    user_targets = {m.target for m in opts.mounts}
    mounts = [m for m in _default_mounts(opts) if m["destination"] not in user_targets]
    for target, source in sorted(inputs.etc_files.items()):
        if target not in user_targets:
            options = ["rbind", "rprivate", "ro" if opts.read_only else "rw"]
            mounts.append({"destination": target, "type": "bind", "source": source, "options": options})
    ordered = sorted(opts.mounts, key=lambda m: (m.target.count("/"), m.target))
    mounts.extend(_user_mount(m, inputs) for m in ordered)
    return mounts


def _namespaces(opts: RunOptions, host: HostFacts, inputs: SpecInputs) -> list[dict[str, str]]:
    ns: list[dict[str, str]] = [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
    if opts.network != "host":
        net: dict[str, str] = {"type": "network"}
        if inputs.netns_path:
            net["path"] = inputs.netns_path
        ns.append(net)
    if host.cgroup_namespace:
        ns.append({"type": "cgroup"})
    return ns


def build_spec(opts: RunOptions, image: ImageConfig, host: HostFacts, inputs: SpecInputs) -> dict[str, Any]:
    """The complete OCI runtime config for one container. Raises InvalidArgument for impossible options."""
    plan = resolve_process(opts, image, inputs.hostname)
    caps = list(capability_set(opts, host))
    root_user = inputs.user.uid == 0
    process: dict[str, Any] = {
        "terminal": opts.tty,
        "user": {
            "uid": inputs.user.uid,
            "gid": inputs.user.gid,
            **({"additionalGids": list(inputs.user.additional_gids)} if inputs.user.additional_gids else {}),
        },
        "args": list(plan.args),
        "env": list(plan.env),
        "cwd": plan.cwd,
        "capabilities": {
            "bounding": caps,
            "effective": caps if root_user else [],
            "permitted": caps if root_user else [],
        },
        "rlimits": _rlimits(opts, host),
        "noNewPrivileges": opts.no_new_privileges,
    }
    linux: dict[str, Any] = {
        "namespaces": _namespaces(opts, host, inputs),
        "cgroupsPath": inputs.cgroups_path,
        "resources": _resources(opts, host),
    }
    if not opts.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if opts.seccomp == "default":
            linux["seccomp"] = seccomp.default_profile(host.arch, frozenset(caps))
        elif opts.seccomp != "unconfined":
            raise InvalidArgument(f"unknown seccomp profile {opts.seccomp!r}: use default or unconfined")
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": inputs.rootfs, "readonly": opts.read_only},
        "hostname": inputs.hostname,
        "mounts": _mounts(opts, inputs),
        "annotations": {"io.dockyard.container.id": inputs.container_id},
        "linux": linux,
    }


def exec_process(
    base: Mapping[str, Any],
    args: tuple[str, ...],
    *,
    env: tuple[str, ...] = (),
    user: ResolvedUser | None = None,
    cwd: str = "",
    tty: bool = False,
) -> dict[str, Any]:
    """The OCI `process` object for `exec`: the container's process with new args/env/user/cwd/tty."""
    if not args:
        raise InvalidArgument("exec needs a command")
    if cwd and not cwd.startswith("/"):
        raise InvalidArgument(f"the working directory {cwd!r} must be absolute")
    proc = dict(base)
    proc["args"] = list(args)
    proc["env"] = list(merge_env(tuple(base.get("env", ())), env))
    proc["terminal"] = tty
    if tty and not any(e.startswith("TERM=") for e in proc["env"]):
        proc["env"].append("TERM=xterm")
    if cwd:
        proc["cwd"] = posixpath.normpath(cwd)
    if user is not None:
        proc["user"] = {"uid": user.uid, "gid": user.gid}
        if user.additional_gids:
            proc["user"]["additionalGids"] = list(user.additional_gids)
        if user.uid != 0:
            caps = dict(proc.get("capabilities", {}))
            caps["effective"], caps["permitted"] = [], []
            proc["capabilities"] = caps
    return proc
