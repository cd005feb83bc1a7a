"""Fleet benchmark: `dockyard -H <N hosts> ping|info|ps` vs `ansible -m raw true` and `parallel-ssh true`.

Makes the largest N test hosts once (network + mount namespaces with their own sshd, as the tests do),
times `dockyard bootstrap` of the first 10 in parallel, bootstraps the rest, then for each N times whole
commands (process start to exit, median of --repeat runs) and prints ratios. Peers run over SSH with
their defaults and host keys verified; a peer that is not installed is reported as skipped
(`apt-get install ansible-core pssh`).

    .venv/bin/python tests/benchmarks/bench_fleet.py [--sizes 10,50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from controller import inventory, pki  # noqa: E402
from controller.bootstrap import wheelhouse as wh_mod  # noqa: E402
from tests.support.images import busybox_rootfs_tar  # noqa: E402
from tests.support.netns_hosts import Fleet  # noqa: E402

DOCKYARD = str(Path(sys.executable).parent / "dockyard")


def timed(argv: Sequence[str], env: dict[str, str], timeout: float = 300) -> tuple[float, int]:
    """Wall time of one whole command; on timeout its process group is killed and inf returned."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        print(f"  ! {' '.join(argv[:6])}... timed out after {timeout:g}s")
        return math.inf, -1
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"  ! {' '.join(argv[:6])}... exited {proc.returncode}: {(err or out)[-400:]}")
    return elapsed, proc.returncode


def median_of(argv: Sequence[str], env: dict[str, str], repeat: int) -> float:
    return statistics.median(timed(argv, env, timeout=120)[0] for _ in range(repeat))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,50")
    p.add_argument("--repeat", type=int, default=5)
    ns = p.parse_args()
    sizes = sorted(int(s) for s in ns.sizes.split(","))
    if os.geteuid() != 0:
        sys.exit("bench_fleet: needs root (network namespaces)")
    work = Path(tempfile.mkdtemp(prefix="dyf-bench-"))
    fleet = Fleet(max(sizes))
    try:
        run(fleet, work, sizes, ns.repeat)
    finally:
        fleet.close()
        shutil.rmtree(work, ignore_errors=True)


def run(fleet: Fleet, work: Path, sizes: list[int], repeat: int) -> None:
    t = time.perf_counter()
    fleet.setup()
    print(f"made {fleet.count} test hosts (netns + mount ns + sshd) in {time.perf_counter() - t:.1f}s")
    config_dir = work / "controller"
    pki.init(config_dir)
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(config_dir), "COLUMNS": "200"}
    wheelhouse = asyncio.run(wh_mod.build(work / "wh-cache", *wh_mod.local_platform())).path
    hosts = fleet.hosts

    def bootstrap(subset: Sequence[object]) -> tuple[float, int]:
        args = [a for h in subset for a in ("-H", f"{h.name}={h.address}")]  # type: ignore[attr-defined]
        extra = ["--wheelhouse", str(wheelhouse), "--ssh-key", str(fleet.client_key)]
        extra.append("--accept-new-host-keys")
        return timed([DOCKYARD, *args, "bootstrap", *extra], env, timeout=1800)

    first = min(10, len(hosts))
    seconds, rc = bootstrap(hosts[:first])
    print(f"bootstrap of {first} hosts in parallel: {seconds:.1f}s (rc={rc}; target < 60 s)")
    if len(hosts) > first:
        seconds, rc = bootstrap(hosts[first:])
        print(f"bootstrap of {len(hosts) - first} more hosts in parallel: {seconds:.1f}s (rc={rc})")
    inv_path = config_dir / inventory.INVENTORY_FILE
    inv = inventory.load(inv_path)
    groups = {f"b{n}": tuple(h.name for h in hosts[:n]) for n in sizes}
    inventory.save(inventory.Inventory(hosts=inv.hosts, groups=groups), inv_path)

    known_hosts = work / "ssh_known_hosts"
    known_hosts.write_text("".join(f"{h.address} {Path(f'{h.host_key}.pub').read_text()}" for h in hosts))
    ssh_opts = f"-o UserKnownHostsFile={known_hosts} -o StrictHostKeyChecking=yes -o BatchMode=yes"
    have_ansible, have_pssh = shutil.which("ansible"), shutil.which("parallel-ssh")
    # A running container on every host, for `exec true` (the fan-out case).
    everyone = f"@b{max(sizes)}"
    tar = busybox_rootfs_tar(work / "busybox.tar")
    setup = [
        ["import", str(tar), "bench/busybox:1"],
        ["run", "-d", "--name", "bench-idle", "--network", "none", "bench/busybox:1", "sh", "-c",
         "exec sleep 3600"],
    ]  # fmt: skip
    exec_available = True
    for args in setup:
        r = subprocess.run(
            [DOCKYARD, "-H", everyone, "--timeout", "120", *args], env=env, capture_output=True
        )
        if r.returncode != 0:
            exec_available = False
            print(f"  (setup `dockyard {args[0]}` failed, exec skipped: {r.stderr.decode()[-300:]})")
            break

    try:
        for n in sizes:
            print(f"\n== N = {n} hosts (median of {repeat} runs, whole command)")
            group = f"@b{n}"
            results: dict[str, float] = {}
            results["dockyard ping"] = median_of([DOCKYARD, "-H", group, "ping"], env, repeat)
            results["dockyard info"] = median_of([DOCKYARD, "-H", group, "info"], env, repeat)
            results["dockyard ps"] = median_of([DOCKYARD, "-H", group, "ps"], env, repeat)
            if exec_available:
                argv = [DOCKYARD, "-H", group, "exec", "bench-idle", "true"]
                results["dockyard exec true"] = median_of(argv, env, repeat)
            addrs = [h.address for h in hosts[:n]]
            if have_ansible:
                inv_file = work / f"ansible-{n}.ini"
                inv_file.write_text("\n".join(addrs) + "\n")
                ansible_env = {
                    **env,
                    "ANSIBLE_HOST_KEY_CHECKING": "True",
                    "ANSIBLE_SSH_ARGS": ssh_opts,
                    "ANSIBLE_PRIVATE_KEY_FILE": str(fleet.client_key),
                    "ANSIBLE_REMOTE_USER": "root",
                    "ANSIBLE_FORKS": str(n),
                    "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
                }
                argv = ["ansible", "all", "-i", str(inv_file), "-m", "raw", "-a", "true"]
                results["ansible raw true"] = median_of(argv, ansible_env, repeat)
            else:
                print("  ansible: skipped (not installed)")
            if have_pssh:
                hosts_file = work / f"pssh-{n}.txt"
                hosts_file.write_text("\n".join(addrs) + "\n")
                argv = ["parallel-ssh", "-h", str(hosts_file), "-l", "root", "-p", str(n), "-t", "60"]
                argv += ["-x", f"-i {fleet.client_key} {ssh_opts}", "true"]
                results["parallel-ssh true"] = median_of(argv, env, repeat)
            else:
                print("  parallel-ssh: skipped (not installed)")
            for name, value in results.items():
                print(f"  {name:<20} {value:7.3f} s")
            for ours in ("dockyard ping", "dockyard info", "dockyard ps", "dockyard exec true"):
                if ours not in results:
                    continue
                for peer in ("parallel-ssh true", "ansible raw true"):
                    if peer in results:
                        print(f"  {ours} / {peer}: {results[ours] / results[peer]:.3f}x")

    finally:  # the containers' conmon and sleep live on in the host namespaces otherwise
        subprocess.run([DOCKYARD, "-H", everyone, "rm", "-f", "bench-idle"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
