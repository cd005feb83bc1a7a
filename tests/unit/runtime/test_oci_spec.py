"""Golden tests for the pure OCI spec builder: every isolation decision is pinned in a reviewed JSON file.

Regenerate after an intended change with `DOCKYARD_UPDATE_GOLDEN=1 pytest tests/unit/runtime/test_oci_spec.py`
and review the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidArgument
from agent.runtime.options import (
    HealthConfig,
    MountSpec,
    MountType,
    RunOptions,
    Ulimit,
    parse_mount,
    parse_tmpfs,
    parse_volume,
)
from agent.runtime.spec import (
    DEFAULT_CAPABILITIES,
    HostFacts,
    ImageConfig,
    SpecInputs,
    build_spec,
    capability_set,
    exec_process,
    resolve_process,
)
from agent.runtime.users import ResolvedUser

GOLDEN = Path(__file__).parent / "golden"
HOST = HostFacts(
    arch="amd64",
    cpus=2,
    hostname="host1",
    rlimit_hard={"RLIMIT_NOFILE": 20000, "RLIMIT_NPROC": 96365},
    can_raise_rlimits=False,
    cgroup_namespace=True,
    swap_accounting=True,
    cap_last=40,
)
IMAGE = ImageConfig(
    entrypoint=None,
    cmd=("sh",),
    env=("PATH=/usr/bin:/bin", "LANG=C.UTF-8"),
    working_dir="/srv",
)
CID = "0123456789ab" + "c" * 52


def inputs(**kw: Any) -> SpecInputs:
    base: dict[str, Any] = {
        "container_id": CID,
        "rootfs": "/var/lib/dockyard/containers/x/rootfs",
        "hostname": CID[:12],
        "user": ResolvedUser(0, 0),
        "cgroups_path": f"/dockyard/{CID}",
        "etc_files": {
            "/etc/hosts": "/var/lib/dockyard/containers/x/hosts",
            "/etc/hostname": "/var/lib/dockyard/containers/x/hostname",
            "/etc/resolv.conf": "/var/lib/dockyard/containers/x/resolv.conf",
        },
    }
    base.update(kw)
    return SpecInputs(**base)


CASES: dict[str, tuple[RunOptions, ImageConfig, SpecInputs]] = {
    "default": (RunOptions(image="busybox"), IMAGE, inputs()),
    "resources_mounts_user": (
        RunOptions(
            image="busybox",
            command=("sleep", "60"),
            env=("LANG=en_US.UTF-8", "FOO=bar"),
            workdir="/data",
            memory=64 << 20,
            cpus=0.5,
            cpu_shares=512,
            pids_limit=100,
            ulimits=(Ulimit("nproc", 512, 1024),),
            mounts=(
                parse_volume("/srv/www:/var/www:ro"),
                parse_volume("cache:/cache"),
                parse_tmpfs("/run:size=16m"),
                parse_mount("type=bind,src=/etc/ssl,dst=/etc/ssl,readonly"),
            ),
            cap_add=("NET_ADMIN",),
            cap_drop=("MKNOD", "cap_net_raw"),
        ),
        IMAGE,
        inputs(
            user=ResolvedUser(1000, 1000, (27,), "app", "/home/app"),
            volume_sources={"/cache": "/var/lib/dockyard/volumes/cache/_data"},
        ),
    ),
    "privileged_host_network_tty": (
        RunOptions(image="busybox", privileged=True, network="host", tty=True, stdin_open=True),
        ImageConfig(entrypoint=("/bin/sh", "-c"), cmd=("echo hi",)),
        inputs(hostname="host1"),
    ),
    "read_only_unconfined_nnp_off": (
        RunOptions(
            image="busybox",
            entrypoint=("/bin/app",),
            read_only=True,
            seccomp="unconfined",
            no_new_privileges=False,
            memory=32 << 20,
            memory_swap=-1,
        ),
        ImageConfig(entrypoint=("/bin/ignored",), cmd=("also-ignored",)),
        inputs(netns_path="/run/dockyard/netns/x"),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_spec_matches_golden(case: str) -> None:
    opts, image, inp = CASES[case]
    spec = build_spec(opts, image, HOST, inp)
    path = GOLDEN / f"{case}.json"
    text = json.dumps(spec, indent=2, sort_keys=True) + "\n"
    if os.environ.get("DOCKYARD_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"missing golden file {path}; run with DOCKYARD_UPDATE_GOLDEN=1"
    assert json.loads(path.read_text()) == json.loads(text)


def test_default_isolation_properties() -> None:
    spec = build_spec(RunOptions(image="b"), IMAGE, HOST, inputs())
    ns = {n["type"] for n in spec["linux"]["namespaces"]}
    assert ns == {"pid", "ipc", "uts", "mount", "network", "cgroup"}
    assert spec["process"]["noNewPrivileges"] is True
    assert set(spec["process"]["capabilities"]["bounding"]) == set(DEFAULT_CAPABILITIES)
    assert "CAP_SYS_ADMIN" not in spec["process"]["capabilities"]["effective"]
    denied = spec["linux"]["seccomp"]["syscalls"][0]["names"]
    for name in (
        "mount",
        "umount2",
        "kexec_load",
        "bpf",
        "init_module",
        "ptrace",
        "reboot",
        "unshare",
        "keyctl",
    ):
        assert name in denied
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]
    nofile = next(r for r in spec["process"]["rlimits"] if r["type"] == "RLIMIT_NOFILE")
    assert nofile["hard"] <= 20000


def test_cap_add_sys_admin_lifts_mount_from_seccomp() -> None:
    spec = build_spec(RunOptions(image="b", cap_add=("SYS_ADMIN",)), IMAGE, HOST, inputs())
    denied = spec["linux"]["seccomp"]["syscalls"][0]["names"]
    assert "mount" not in denied and "kexec_load" in denied
    assert not any(s["names"] == ["clone"] for s in spec["linux"]["seccomp"]["syscalls"])


def test_capability_all_forms() -> None:
    assert capability_set(RunOptions(image="b", cap_drop=("ALL",), cap_add=("chown",)), HOST) == (
        "CAP_CHOWN",
    )
    assert len(capability_set(RunOptions(image="b", cap_add=("ALL",)), HOST)) == 41
    with pytest.raises(InvalidArgument, match="unknown capability"):
        capability_set(RunOptions(image="b", cap_add=("FLY",)), HOST)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        (RunOptions(image="b", ulimits=(Ulimit("nofile", 1024, 1 << 20),)), "agent's own hard limit"),
        (RunOptions(image="b", cpus=3.0), "more than the 2 CPUs"),
        (RunOptions(image="b", memory=64 << 20, memory_swap=32 << 20), "at least --memory"),
        (RunOptions(image="b", memory_swap=64 << 20), "needs --memory"),
        (RunOptions(image="b", cpu_shares=1), "cpu-shares"),
        (RunOptions(image="b", seccomp="weird"), "unknown seccomp"),
        (RunOptions(image="b", workdir="rel"), "must be absolute"),
        (RunOptions(image="b", entrypoint=()), "no command specified"),
    ],
)
def test_impossible_options_are_invalid(opts: RunOptions, message: str) -> None:
    image = IMAGE if opts.entrypoint is None else ImageConfig()
    with pytest.raises(InvalidArgument, match=message):
        build_spec(opts, image, HOST, inputs())


def test_process_resolution_follows_docker() -> None:
    img = ImageConfig(entrypoint=("/ep",), cmd=("a", "b"), env=("A=1", "PATH=/x"), working_dir="/w")
    assert resolve_process(RunOptions(image="i"), img, "h").args == ("/ep", "a", "b")
    assert resolve_process(RunOptions(image="i", command=("c",)), img, "h").args == ("/ep", "c")
    assert resolve_process(RunOptions(image="i", entrypoint=("/o",)), img, "h").args == ("/o",)
    plan = resolve_process(RunOptions(image="i", env=("A=2",), tty=True), img, "h")
    assert plan.env == ("A=2", "PATH=/x", "HOSTNAME=h", "TERM=xterm")
    assert plan.cwd == "/w"
    assert resolve_process(RunOptions(image="i"), ImageConfig(cmd=("x",)), "h").env[0].startswith("PATH=/usr")


def test_user_mount_replaces_default_and_etc_file() -> None:
    opts = RunOptions(
        image="b",
        mounts=(
            MountSpec(MountType.TMPFS, "/dev/shm", "tmpfs"),
            MountSpec(MountType.BIND, "/etc/hosts", "/h"),
        ),
    )
    dests = [m["destination"] for m in build_spec(opts, IMAGE, HOST, inputs())["mounts"]]
    assert dests.count("/dev/shm") == 1 and dests.count("/etc/hosts") == 1


def test_image_config_from_oci() -> None:
    cfg = ImageConfig.from_oci(
        {
            "config": {
                "Entrypoint": ["/e"],
                "Cmd": None,
                "Env": ["A=1"],
                "Healthcheck": {"Test": ["CMD", "true"], "Interval": 5_000_000_000, "Retries": 2},
                "StopSignal": "SIGQUIT",
            }
        }
    )
    assert cfg.entrypoint == ("/e",) and cfg.cmd is None and cfg.stop_signal == "SIGQUIT"
    assert cfg.healthcheck == HealthConfig(test=("CMD", "true"), interval_s=5.0, retries=2)


def test_exec_process_overrides() -> None:
    base = build_spec(RunOptions(image="b"), IMAGE, HOST, inputs())["process"]
    proc = exec_process(base, ("ls",), env=("X=1",), user=ResolvedUser(5, 6), cwd="/tmp", tty=True)
    assert proc["args"] == ["ls"] and "X=1" in proc["env"] and "TERM=xterm" in proc["env"]
    assert proc["user"] == {"uid": 5, "gid": 6} and proc["capabilities"]["effective"] == []
    assert base["args"] == ["sh"]
