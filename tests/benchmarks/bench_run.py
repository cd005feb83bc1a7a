"""Run benchmark: the same busybox image, `true` as the command, in one run:

* the floor: bare `runc run` of a bundle (the same OCI spec the agent writes: namespaces, seccomp, caps);
* `dockyard run --rm --network none` end to end (CLI process → mTLS → agent → conmon → runc), as users
  get it (the warm command server running, controller/warm.py) and cold (`DOCKYARD_WARM=0`: every call
  imports grpc, protobuf and click itself);
* `podman run --rm --network none` (runc, private --root/--runroot, the rlimits this host allows);
* `docker run --rm --network none` when a Docker engine (dockerd) is installed.

Times whole commands (median of --repeat runs after a warm-up) and prints ratios. Also reports the
agent-side latency, from RPC receipt to the container's exit observed, taken from the agent's own log
(`rpc.finished` minus its duration → `container.exit_observed`, matched by request id), and the CLI's bare
start-up (`dockyard --version`). The issue's targets: end to end ≤ 0.8× podman; agent-side overhead
over bare runc ≤ 25 ms. Needs root.

    .venv/bin/python tests/benchmarks/bench_run.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.runtime import host  # noqa: E402
from agent.runtime.options import RunOptions  # noqa: E402
from agent.runtime.spec import ImageConfig, SpecInputs, build_spec  # noqa: E402
from agent.runtime.users import ResolvedUser  # noqa: E402
from tests.benchmarks.commands import IMAGE, PODMAN_RUN, median_of, podman_cli, timed  # noqa: E402
from tests.support.agent import CLI_BIN, AgentProcess, FleetPki, wait_for  # noqa: E402
from tests.support.images import busybox_rootfs_tar  # noqa: E402
from tests.support.warm import server_pids, stop_servers  # noqa: E402

CGROUP_PARENT = f"/dybench-{secrets.token_hex(3)}"
E2E = "dockyard run --rm --network none (mTLS)"
E2E_COLD = "  the same, cold CLI (DOCKYARD_WARM=0)"


def runc_floor(work: Path, tar: Path, repeat: int) -> float:
    """`runc run` of a bundle made with the agent's own spec builder (so the same isolation)."""
    bundle = work / "bundle"
    rootfs = bundle / "rootfs"
    rootfs.mkdir(parents=True)
    with tarfile.open(tar) as tf:
        tf.extractall(rootfs, filter="tar")
    cid = "bench" + secrets.token_hex(8)
    spec = build_spec(
        RunOptions(image=IMAGE, command=("true",)),
        ImageConfig(),
        host.probe(),
        SpecInputs(cid, str(rootfs), cid[:12], ResolvedUser(0, 0), f"{CGROUP_PARENT}/floor"),
    )
    (bundle / "config.json").write_text(json.dumps(spec))
    state = work / "runc-state"
    times = []
    for i in range(repeat + 1):
        t = timed(["runc", "--root", str(state), "run", "-b", str(bundle), f"{cid}-{i}"])
        if i:
            times.append(t)
    return statistics.median(times)


def agent_side_latencies(agent: AgentProcess) -> list[float]:
    """Per attached `Run` RPC: seconds from the RPC's receipt to the container's exit being observed."""
    started: dict[str, float] = {}
    exited: dict[str, float] = {}
    for e in agent.events():
        rid = e.get("request_id")
        if not rid or e.get("rpc") != "/agent.api.v1.Containers/Run":
            continue
        ts = datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        if e.get("event") == "rpc.finished":
            started[rid] = ts - float(e["duration_ms"]) / 1000
        elif e.get("event") == "container.exit_observed":  # the pidfd woke the agent: conmon is done
            exited[rid] = ts
    return [exited[r] - started[r] for r in started if r in exited]


def docker_engine(work: Path) -> tuple[list[str], subprocess.Popen[bytes]] | None:
    dockerd = shutil.which("dockerd")
    docker = "/usr/bin/docker" if Path("/usr/bin/docker").exists() else shutil.which("docker")
    if dockerd is None or docker is None:
        return None
    sock = work / "docker.sock"
    argv = [dockerd, "--data-root", str(work / "docker"), "--exec-root", str(work / "docker-exec")]
    argv += ["-H", f"unix://{sock}", "--pidfile", str(work / "docker.pid"), "--bridge", "none"]
    proc = subprocess.Popen([*argv, "--iptables=false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = [docker, "-H", f"unix://{sock}"]
    deadline = time.monotonic() + 30
    while subprocess.run([*client, "version"], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            proc.wait()
            return None
        time.sleep(0.2)
    return client, proc


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=15)
    ns = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_run: needs root")
    work = Path(tempfile.mkdtemp(prefix="dy-bench-run-"))
    runtime_dir = work / "rt"
    tar = busybox_rootfs_tar(work / "busybox.tar")
    results: dict[str, float] = {}
    pki = FleetPki.create(work)
    (work / "agent").mkdir()
    (work / "agent.toml").write_text(f'cgroup_parent = "{CGROUP_PARENT}"\n')
    agent = AgentProcess(
        root=work / "agent",
        tls_dir=pki.agent_tls(work / "agent" / "tls"),
        extra_args=["--config", str(work / "agent.toml")],
    )
    podman = podman_cli(work)
    engine = None
    try:
        results["runc run (floor)"] = runc_floor(work, tar, ns.repeat)
        agent.start()
        runtime_dir.mkdir(mode=0o700)
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(pki.config_dir)}
        env["DOCKYARD_RUNTIME_DIR"] = str(runtime_dir)
        cold = {**env, "DOCKYARD_WARM": "0"}
        local = [CLI_BIN, "-H", agent.unix_target]
        timed([*local, "import", str(tar), IMAGE], env)
        wait_for(lambda: server_pids(runtime_dir), 30, "the warm CLI server")
        remote = [CLI_BIN, "-H", agent.tcp_target]
        run_true = [*remote, "run", "--rm", "--network", "none", IMAGE, "true"]
        results[E2E] = median_of(run_true, ns.repeat, env)
        results[E2E_COLD] = median_of(run_true, ns.repeat, cold)
        results["dockyard CLI start-up (--version)"] = median_of([CLI_BIN, "--version"], ns.repeat, env)
        results["  cold (DOCKYARD_WARM=0)"] = median_of([CLI_BIN, "--version"], ns.repeat, cold)
        agent_side = agent_side_latencies(agent)
        if agent_side:
            results["agent-side: RPC receipt → exit observed"] = statistics.median(agent_side)
        timed([*podman, "import", str(tar), IMAGE])
        results["podman run --rm --network none"] = median_of(
            [*podman, "run", "--rm", "--network", "none", *PODMAN_RUN, IMAGE, "true"], ns.repeat
        )
        engine = docker_engine(work)
        if engine is not None:
            client, _ = engine
            timed(["sh", "-c", f"{' '.join(client)} import {tar} {IMAGE}"])
            results["docker run --rm --network none"] = median_of(
                [*client, "run", "--rm", "--network", "none", IMAGE, "true"], ns.repeat
            )
        else:
            print("docker: no Docker engine (dockerd) on this host, skipped")
    finally:
        stop_servers(runtime_dir)
        agent.stop()
        if engine is not None:
            engine[1].terminate()
            engine[1].wait(30)
        subprocess.run([*podman, "rm", "-af"], capture_output=True)
        subprocess.run(["umount", "-R", str(work / "podman")], capture_output=True)
        for controller in Path("/sys/fs/cgroup").iterdir():
            for leaf in sorted((controller / CGROUP_PARENT.strip("/")).glob("*"), reverse=True):
                if leaf.is_dir():
                    leaf.rmdir()
            if (controller / CGROUP_PARENT.strip("/")).is_dir():
                (controller / CGROUP_PARENT.strip("/")).rmdir()
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(k) for k in results)
    print(f"\nmedian of {ns.repeat} runs (busybox, `true`):")
    for name, seconds in results.items():
        print(f"  {name:<{width}}  {seconds * 1000:8.1f} ms")
    floor = results["runc run (floor)"]
    e2e = results[E2E]
    pod = results["podman run --rm --network none"]
    print(f"\n  dockyard / podman        {e2e / pod:5.2f}x   (target ≤ 0.80)")
    print(f"  cold CLI / podman        {results[E2E_COLD] / pod:5.2f}x")
    if "docker run --rm --network none" in results:
        print(f"  dockyard / docker        {e2e / results['docker run --rm --network none']:5.2f}x")
    print(f"  dockyard / runc floor    {e2e / floor:5.2f}x")
    if "agent-side: RPC receipt → exit observed" in results:
        overhead = results["agent-side: RPC receipt → exit observed"] - floor
        print(f"  agent-side overhead over bare runc: {overhead * 1000:6.1f} ms   (target ≤ 25 ms)")


if __name__ == "__main__":
    main()
