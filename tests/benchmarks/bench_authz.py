"""Authz + audit benchmark: the cost of the permission check and the audit log on the hot path.

Two fleets of simulated hosts on this machine, each `--agents` real agents (mTLS, their own data roots)
behind N inventory names (names round-robin over the agents, so `-H @all` fans out N calls):

* "on":  agents with the audit log (`audit = true`, the default), called with a deployer certificate
         (role checked, host-power options checked, two fsynced audit entries per mutating call);
* "off": agents with `audit = false`, called with an admin certificate (the check passes at once).

Times whole commands (median of --repeat runs, the two fleets alternating): `dockyard run --rm busybox
true` on one host, and a fan-out `dockyard -H @all ps` to N hosts. Prints each median and the on/off
ratio (target ≤ 1.05×). The check itself cannot be switched off (there is no build without it): this
measures what a deployment can choose. Needs root.

    .venv/bin/python tests/benchmarks/bench_authz.py [--hosts 50] [--agents 5] [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from agent.server.permissions import Grant, Role  # noqa: E402
from controller import pki  # noqa: E402
from tests.support.agent import CLI_BIN, AgentProcess, FleetPki, config_text  # noqa: E402
from tests.support.images import busybox_rootfs_tar  # noqa: E402
from tests.support.sweep import sweep_agent  # noqa: E402

IMAGE = "busybox:bench"


@dataclass
class Side:
    name: str
    identity: Path  # a controller config dir: the certificate used and the inventory of N names
    agents: list[AgentProcess]
    cgroup_parent: str


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:6])}... exited {done.returncode}: {done.stderr[-400:]}")
    return elapsed


def make_side(
    name: str, fleet: FleetPki, work: Path, tar: Path, *, audit: bool, role: Role, agents: int, hosts: int
) -> Side:
    parent = f"/dybench-{secrets.token_hex(3)}"
    started = []
    for i in range(agents):
        root = work / f"{name}-{i}"
        root.mkdir(parents=True)
        cfg = root / "agent.toml"
        cfg.write_text(config_text({"cgroup_parent": parent, "audit": audit}))
        tls = fleet.agent_tls(root / "tls", name=f"{name}-{i}")
        agent = AgentProcess(root=root, tls_dir=tls, extra_args=["--config", str(cfg)]).start()
        started.append(agent)
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(fleet.config_dir)}
        subprocess.run(
            [CLI_BIN, "-H", agent.unix_target, "import", str(tar), IMAGE],
            env=env,
            check=True,
            capture_output=True,
        )
    identity = work / f"{name}-identity"
    grant = None if role is Role.ADMIN else Grant(role)
    pki.issue_client(fleet.config_dir, f"bench-{role}", identity, grant=grant)
    lines = [
        f'[hosts.h{n:03d}]\naddress = "127.0.0.1"\nport = {started[n % agents].port}\n' for n in range(hosts)
    ]
    (identity / "inventory.toml").write_text("".join(lines))
    return Side(name, identity, started, parent)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--agents", type=int, default=5)
    p.add_argument("--repeat", type=int, default=15)
    ns = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_authz: needs root (containers)")
    work = Path(tempfile.mkdtemp(prefix="dya-bench-"))
    fleet = FleetPki.create(work)
    tar = busybox_rootfs_tar(work / "busybox.tar")
    sides: list[Side] = []
    try:
        sides.append(make_side("on", fleet, work, tar, audit=True, role=Role.DEPLOYER, agents=ns.agents,
                               hosts=ns.hosts))  # fmt: skip
        sides.append(make_side("off", fleet, work, tar, audit=False, role=Role.ADMIN, agents=ns.agents,
                               hosts=ns.hosts))  # fmt: skip
        measure(sides, ns.hosts, ns.repeat)
    finally:
        for side in sides:
            for agent in side.agents:
                agent.stop()
                sweep_agent(agent, side.cgroup_parent)
                agent.release()
        shutil.rmtree(work, ignore_errors=True)


def measure(sides: list[Side], hosts: int, repeat: int) -> None:
    results: dict[tuple[str, str], list[float]] = {}
    commands = {
        "run --rm": lambda s: [CLI_BIN, "-H", "h000", "run", "--rm", "--network", "none", IMAGE, "true"],
        f"ps fan-out N={hosts}": lambda s: [CLI_BIN, "-H", "all", "ps", "-a"],
    }
    for label, argv in commands.items():
        for side in sides:  # warm-up: the CLI's warm server, page cache, first container
            timed(argv(side), {**os.environ, "DOCKYARD_CONFIG_DIR": str(side.identity)})
        for k in range(repeat):
            for side in sides if k % 2 == 0 else sides[::-1]:  # alternate who goes first
                env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(side.identity)}
                results.setdefault((label, side.name), []).append(timed(argv(side), env))
    print(f"{'command':<24} {'on (audit, deployer)':>22} {'off (no audit, admin)':>22} {'ratio':>7}")
    for label in commands:
        on = statistics.median(results[(label, "on")])
        off = statistics.median(results[(label, "off")])
        print(f"{label:<24} {on * 1000:>19.1f} ms {off * 1000:>19.1f} ms {on / off:>6.3f}x")
    print("agent side (rpc.finished duration_ms from the agents' logs, median):")
    for rpc in ("Containers/Run", "Containers/ListStream"):
        on, off = (_agent_side(s, rpc) for s in sides)
        if on and off:
            print(f"  {rpc:<22} on {on:>8.2f} ms   off {off:>8.2f} ms   +{on - off:.2f} ms ({on / off:.3f}x)")
    audit = sides[0].agents[0].data_root / "audit" / "audit.log"
    entries = sum(1 for _ in audit.open()) if audit.exists() else 0
    print(f"(audit entries written by one 'on' agent: {entries}; target ratio <= 1.05)")


def _agent_side(side: Side, rpc: str) -> float:
    durations = [
        float(e["duration_ms"])
        for agent in side.agents
        for e in agent.events()
        if e.get("event") == "rpc.finished" and str(e.get("rpc", "")).endswith(rpc) and e.get("code") == "OK"
    ]
    return statistics.median(durations) if durations else 0.0


if __name__ == "__main__":
    main()
