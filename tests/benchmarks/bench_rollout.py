"""Rollout benchmark: `rollout apply --canary 1 --batch exp --min-healthy 0` of v1 → v2 on N netns hosts,
against the same switch done naively (`-H all pull`, `-H all rm -f`, `-H all run -d`), in the same run.

Hosts: N network namespaces on a private bridge (tests/support/fleet_hosts.py), each with its own real agent
started directly in the namespace with nsenter — not bootstrapped over SSH (bench_fleet measures that):
the same agent, mTLS on the host's address, its own data root and cgroup parent, logging at `info` as
deployed. A Debian docker-registry on the bridge serves the image: busybox + ~150 MB in 3 gzip layers
(bench_pull's) + a small top layer (`--top-mb`, the app). Every version shares the big layers and differs in
the top layer only, like a real release; v1 is on every host before anything is timed (a first rollout),
and each timed switch goes to a version no host has yet (`v2-rK` for rollout K, `v2-nK` for naive switch K,
so neither benefits from the other's download). Rollout and naive switch alternate, `--repeat` times each;
medians are reported.

- rollout: `dockyard -H all --format json rollout apply -f web.toml --canary 1 --batch exp --min-healthy 0`,
  one container (busybox httpd, `--network none`, stop signal KILL, no health check: healthy = running).
  Its split comes from its own JSON events (`at` = wall clock): start-up + plan + pin (process start → the
  first event), stage (state staging → running), each wave (its first `activating` → its last
  `committed`), and the end (done → exit). It runs in the CLI process (`DOCKYARD_WARM=0`, cold start-up
  paid every time), so its CPU is this script's child's (rusage).
- naive: the three whole commands of the same container, with the warm command server as users get it.
- one host: the canary's agent-side time from receiving Activate (its `rpc.finished` log line minus its
  duration) to `release.healthy` in its log, against `dockyard -H HOST run -d` of the same container on an
  idle host (whole command, and the agent-side span of its RPCs from the same log).
- CPU: the controller CLI's (rusage), the agents' (/proc/PID/stat, waited-for runc children included) and
  the whole machine's busy time (/proc/stat, conmon and kernel included) during each timed switch.

Targets (issue 14): rollout ≤ 1.2× naive; one host's Activate → verified ≤ 1.5× `run -d`. All N agents
share this machine's cores; where a target cannot hold for that reason, the CPU arithmetic is printed.
Never a pass/fail test.

    .venv/bin/python tests/benchmarks/bench_rollout.py [--hosts 50] [--repeat 3] [--size-mb 150] [--top-mb 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_pull import build_image  # noqa: E402
from tests.benchmarks.bench_send import children_cpu, cpu_seconds, machine_busy  # noqa: E402
from tests.benchmarks.commands import median_of, timed  # noqa: E402
from tests.support.agent import CLI_BIN  # noqa: E402
from tests.support.fleet_hosts import AgentFleet, FleetHost, NetnsAgent  # noqa: E402
from tests.support.images import busybox_rootfs_bytes  # noqa: E402
from tests.support.oci_layout import (  # noqa: E402
    LAYER_TYPES,
    OCI_CONFIG,
    OCI_MANIFEST,
    OciLayout,
    compress,
    compressible_bytes,
    sha256,
    tar_of,
)
from tests.support.warm import stop_servers  # noqa: E402

RELEASE = "web"
NAIVE = "naive-app"
REPOSITORY = "bench/app"
COMMAND = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
RUN_FLAGS = ["--network", "none", "--stop-signal", "KILL"]
ROLLOUT_FLAGS = ["--canary", "1", "--batch", "exp", "--min-healthy", "0s"]
TIMEOUT = 1800.0


# ---- the fleet: agents as deployed ---------------------------------------------------------------------


class DeployedAgent(NetnsAgent):
    """A netns host's agent as it runs on a device: `info` logs (the tests' agents log at debug), and no
    test network slot — the namespace already gives each agent its own bridge and nft table, and the
    machine has only 64 slots for every test run going on."""

    def args(self) -> list[str]:
        argv = super().args()
        argv[argv.index("--log-level") + 1] = "info"
        return argv

    def _isolate_network(self) -> None:
        return None


class BenchFleet(AgentFleet):
    def _agent(self, host: FleetHost, tmpfs_bytes: int) -> NetnsAgent:
        a = super()._agent(host, tmpfs_bytes)
        return DeployedAgent(
            root=a.root, tls_dir=a.tls_dir, listen=a.listen, extra_args=a.extra_args, netns=a.netns
        )


# ---- the image ------------------------------------------------------------------------------------------


def build_versions(layout_dir: Path, size_mb: int, top_mb: int, tags: list[str]) -> tuple[int, int]:
    """bench_pull's 3 big layers under busybox, one small top layer per tag; (big bytes, top bytes) gzip."""
    build_image(layout_dir, size_mb)
    blobs = layout_dir / "blobs" / "sha256"
    index = json.loads((layout_dir / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":", 1)[1]).read_bytes())
    data_ids = json.loads((blobs / manifest["config"]["digest"].split(":", 1)[1]).read_bytes())["rootfs"]
    layout = OciLayout(layout_dir)  # the same directory: bench_pull's blobs stay
    base_tar = busybox_rootfs_bytes()
    base = layout.add_blob(compress(base_tar, "gzip"), LAYER_TYPES["gzip"])
    top_size = 0
    for i, tag in enumerate(tags):
        top_tar = tar_of(
            {"www/index.html": f"{tag}\n".encode(), "www/app.dat": compressible_bytes(top_mb << 20, seed=i)}
        )
        top = layout.add_blob(compress(top_tar, "gzip"), LAYER_TYPES["gzip"])
        top_size = top["size"]
        config = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": COMMAND, "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {
                "type": "layers",
                "diff_ids": [sha256(base_tar), *data_ids["diff_ids"], sha256(top_tar)],
            },
            "created": "2024-01-01T00:00:00Z",
        }
        config_descriptor = layout.add_blob(json.dumps(config, sort_keys=True).encode(), OCI_CONFIG)
        image = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_descriptor,
            "layers": [base, *manifest["layers"], top],
        }
        layout.tag(layout.add_blob(json.dumps(image, sort_keys=True).encode(), OCI_MANIFEST), tag)
    return base["size"] + sum(int(layer["size"]) for layer in manifest["layers"]), top_size


def release_file(path: Path, image: str) -> Path:
    path.write_text(
        "\n".join(
            [
                f'name = "{RELEASE}"',
                "[containers.app]",
                f'image = "{image}"',
                f"command = {json.dumps(COMMAND)}",
                'network = "none"',
                'stop_signal = "KILL"',
                "",
            ]
        )
    )
    return path


# ---- measuring ------------------------------------------------------------------------------------------


@dataclass
class Cpu:
    """CPU seconds spent during one timed switch."""

    controller: float = 0.0  # the rollout CLI (rusage); 0 for the naive commands (warm server)
    agents: float = 0.0  # every agent process, waited-for children (runc) included
    machine: float = 0.0  # every core's busy time

    @staticmethod
    def snapshot(pids: list[int]) -> tuple[float, float, float]:
        return children_cpu(), sum(cpu_seconds(p) for p in pids), machine_busy()

    @classmethod
    def since(cls, before: tuple[float, float, float], pids: list[int]) -> Cpu:
        now = cls.snapshot(pids)
        return cls(now[0] - before[0], now[1] - before[1], now[2] - before[2])


@dataclass
class RolloutRun:
    wall: float
    cpu: Cpu
    startup: float  # process start → first event (start-up, plan, pin the tags, journal)
    stage: float
    waves: list[tuple[int, float]]  # (hosts, seconds) per wave, canary first
    between: float  # the rest between staging's end and done (journal between waves)
    end: float  # done → exit
    canary: str
    activate_to_verified: float  # on the canary's agent
    activate_rpc: float  # the Activate call itself (stop the old container, create + start the new)


@dataclass
class NaiveRun:
    wall: float
    cpu: Cpu
    parts: dict[str, float] = field(default_factory=dict)


def log_lines(host: FleetHost, since: float) -> list[dict[str, Any]]:
    """The agent's JSON log lines from `since` (epoch seconds) on, each with its time as `at`."""
    assert host.agent is not None
    out = []
    for e in host.agent.events():
        stamp = e.get("timestamp")
        if isinstance(stamp, str):
            e["at"] = datetime.fromisoformat(stamp).timestamp()
            if e["at"] >= since:
                out.append(e)
    return out


def rpc_spans(lines: list[dict[str, Any]], until: float) -> list[tuple[str, float, float]]:
    """(rpc, start, end) of the calls that finished before `until`."""
    return [
        (str(e.get("rpc", "")), e["at"] - float(e["duration_ms"]) / 1000, e["at"])
        for e in lines
        if e.get("event") == "rpc.finished" and e["at"] <= until
    ]


def run_rollout(fleet: AgentFleet, env: dict[str, str], file: Path, pids: list[int]) -> RolloutRun:
    argv = [CLI_BIN, "-H", "all", "--format", "json", "rollout", "apply", "-f", str(file), *ROLLOUT_FLAGS]
    cold = {**env, "DOCKYARD_WARM": "0"}
    before = Cpu.snapshot(pids)
    t0 = time.time()
    start = time.perf_counter()
    r = subprocess.run(argv, env=cold, capture_output=True, text=True, timeout=TIMEOUT)
    wall = time.perf_counter() - start
    t_end = time.time()
    cpu = Cpu.since(before, pids)
    events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = next((e for e in events if e.get("kind") == "result"), {})
    if r.returncode != 0 or result.get("state") != "done":
        raise SystemExit(
            f"rollout of {file.name} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-1500:]}"
        )
    states = {e["state"]: e["at"] for e in events if e.get("kind") == "rollout"}
    hosts = [e for e in events if e.get("kind") == "host"]
    waves: list[tuple[int, float]] = []
    in_waves = 0.0
    for number in sorted({e["wave"] for e in hosts if "wave" in e}):
        mine = [e for e in hosts if e.get("wave") == number]
        begin = min(e["at"] for e in mine if e.get("step") == "activating")
        done = max(e["at"] for e in mine if e.get("step") == "committed")
        waves.append((len({e["host"] for e in mine}), done - begin))
        in_waves += done - begin
    canary = next(e["host"] for e in hosts if e.get("wave") == 0)
    lines = log_lines(fleet[canary], t0)
    activate = next(s for s in rpc_spans(lines, t_end) if s[0].endswith("/Activate"))
    healthy = next(e["at"] for e in lines if e.get("event") == "release.healthy" and e["at"] >= activate[1])
    first = min(e["at"] for e in events if "at" in e)
    return RolloutRun(
        wall=wall,
        cpu=cpu,
        startup=first - t0,
        stage=states["running"] - states["staging"],
        waves=waves,
        between=states["done"] - states["running"] - in_waves,
        end=t_end - states["done"],
        canary=canary,
        activate_to_verified=healthy - activate[1],
        activate_rpc=activate[2] - activate[1],
    )


def run_naive(env: dict[str, str], image: str, pids: list[int]) -> NaiveRun:
    steps = {
        "pull": ["pull", "-q", image],
        "rm -f": ["rm", "-f", NAIVE],
        "run -d": ["run", "-d", "--name", NAIVE, *RUN_FLAGS, image, *COMMAND],
    }
    before = Cpu.snapshot(pids)
    parts = {name: timed([CLI_BIN, "-H", "all", *args], env, timeout=TIMEOUT) for name, args in steps.items()}
    cpu = Cpu.since(before, pids)
    cpu.controller = 0.0  # the warm server's workers are not this script's children
    return NaiveRun(sum(parts.values()), cpu, parts)


@dataclass
class Solo:
    """One host, the fleet idle: the naive switch of the same container, command by command."""

    run_wall: float  # `dockyard -H HOST run -d …`, whole command
    run_agent: float  # the agent-side span of its RPCs
    rm_agent: float  # the same for `rm -f` of it (what stopping the old container costs)


def agent_side(host: FleetHost, argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(whole command, first RPC received → last RPC answered on the host's agent, from its log)."""
    t0 = time.time()
    wall = timed(argv, env)
    spans = rpc_spans(log_lines(host, t0), time.time())
    return wall, (max(s[2] for s in spans) - min(s[1] for s in spans)) if spans else 0.0


def one_host(host: FleetHost, env: dict[str, str], image: str, name: str) -> Solo:
    cli = [CLI_BIN, "-H", host.name]
    run_wall, run_agent = agent_side(
        host, [*cli, "run", "-d", "--name", name, *RUN_FLAGS, image, *COMMAND], env
    )
    _, rm_agent = agent_side(host, [*cli, "rm", "-f", name], env)
    return Solo(run_wall, run_agent, rm_agent)


# ---- the run --------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hosts", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size-mb", type=int, default=150)
    p.add_argument("--top-mb", type=int, default=2)
    ns = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_rollout: needs root (network namespaces, agents)")
    work = Path(tempfile.mkdtemp(prefix="dy-bench-rollout-"))
    (work / "fleet").mkdir()
    fleet = BenchFleet(work / "fleet", [{"n": str(i % 4)} for i in range(ns.hosts)])
    runtime_dir = work / "rt"
    runtime_dir.mkdir(mode=0o700)
    try:
        run(fleet, work, runtime_dir, ns)
    finally:
        stop_servers(runtime_dir)
        t = time.perf_counter()
        fleet.close()
        print(f"(fleet torn down in {time.perf_counter() - t:.0f} s)")
        shutil.rmtree(work, ignore_errors=True)


def run(fleet: BenchFleet, work: Path, runtime_dir: Path, ns: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    started = time.perf_counter()
    fleet.setup()
    print(
        f"{ns.hosts} netns hosts, each with its own agent (started in its namespace, no SSH), "
        f"in {time.perf_counter() - started:.0f} s; {cores} CPUs shared by all of them"
    )
    assert fleet.registry is not None
    tags = ["v1", *(f"v2-r{k}" for k in range(ns.repeat)), *(f"v2-n{k}" for k in range(ns.repeat))]
    t = time.perf_counter()
    big, top = build_versions(work / "layout", ns.size_mb, ns.top_mb, tags)
    for tag in tags:
        fleet.registry.push(work / "layout", tag, REPOSITORY)
    image = {tag: f"{fleet.registry.host}/{REPOSITORY}:{tag}" for tag in tags}
    print(
        f"image: busybox + {ns.size_mb} MB in 3 layers ({big / 1e6:.0f} MB gzip) + a {ns.top_mb} MB top "
        f"layer ({top / 1e3:.0f} kB gzip) that differs per version; {len(tags)} versions built and pushed in "
        f"{time.perf_counter() - t:.0f} s"
    )
    env = {
        **os.environ,
        "DOCKYARD_CONFIG_DIR": str(fleet.config_dir),
        "DOCKYARD_RUNTIME_DIR": str(runtime_dir),
        "COLUMNS": "200",
    }
    env.pop("DOCKYARD_HOST", None)
    pids = [h.agent.proc.pid for h in fleet.hosts if h.agent is not None and h.agent.proc is not None]

    # v1 everywhere: the release (a first rollout, every host at once) and the naive container
    t = time.perf_counter()
    first = [CLI_BIN, "-H", "all", "--format", "json", "rollout", "apply"]
    first += ["-f", str(release_file(work / "web-v1.toml", image["v1"])), "--canary", "0", "--batch", "100%"]
    timed([*first, "--min-healthy", "0s"], env, timeout=TIMEOUT)
    print(
        f"v1 rolled out to every host at once (the {ns.size_mb} MB download included): "
        f"{time.perf_counter() - t:.0f} s"
    )
    naive_v1 = [CLI_BIN, "-H", "all", "run", "-d", "--name", NAIVE, *RUN_FLAGS, image["v1"], *COMMAND]
    timed(
        [CLI_BIN, "-H", "all", "pull", "-q", image["v1"]], env, TIMEOUT
    )  # the tag (the release pins digests)
    timed(naive_v1, env, TIMEOUT)

    # one host, idle fleet: `run -d` of the same container (a warm-up first)
    one = fleet.hosts[-1]
    one_host(one, env, image["v1"], "solo-warmup")
    solo = [one_host(one, env, image["v1"], f"solo-{k}") for k in range(max(3, ns.repeat))]
    cold = median_of([CLI_BIN, "--version"], 3, {**env, "DOCKYARD_WARM": "0"})
    busy0 = machine_busy()
    time.sleep(5)
    others = (machine_busy() - busy0) / 5
    print(
        f"idle fleet: the machine is {others:.2f} of {cores} cores busy (other work going on); the cold CLI "
        f"starts (`dockyard --version`, DOCKYARD_WARM=0) in {cold:.2f} s"
    )

    rollouts: list[RolloutRun] = []
    naives: list[NaiveRun] = []
    for k in range(ns.repeat):
        order = ("rollout", "naive") if k % 2 == 0 else ("naive", "rollout")
        for what in order:
            if what == "rollout":
                file = release_file(work / f"web-r{k}.toml", image[f"v2-r{k}"])
                rollouts.append(run_rollout(fleet, env, file, pids))
                r = rollouts[-1]
                print(
                    f"  rollout {k + 1}: {r.wall:6.1f} s (stage {r.stage:.1f}, waves "
                    f"{' '.join(f'{s:.1f}' for _, s in r.waves)}), controller CPU {r.cpu.controller:.1f} s"
                )
            else:
                naives.append(run_naive(env, image[f"v2-n{k}"], pids))
                n = naives[-1]
                parts = ", ".join(f"{a} {s:.1f}" for a, s in n.parts.items())
                print(f"  naive   {k + 1}: {n.wall:6.1f} s ({parts})")
    report(ns.hosts, cores, rollouts, naives, solo, cold)


def med(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def report(
    n: int,
    cores: int,
    rollouts: list[RolloutRun],
    naives: list[NaiveRun],
    solo: list[Solo],
    cold: float,
) -> None:
    ro, nv = med([r.wall for r in rollouts]), med([x.wall for x in naives])
    print(f"\n== {n} hosts, v1 → v2, median of {len(rollouts)} (alternating)")
    print(f"  rollout --canary 1 --batch exp --min-healthy 0   {ro:7.1f} s")
    startup = med([r.startup for r in rollouts])
    print(
        f"    start-up + plan + pin tags                     {startup:7.2f} s (cold CLI alone {cold:.2f} s)"
    )
    print(f"    stage (every host, in parallel)                {med([r.stage for r in rollouts]):7.2f} s")
    sizes = [h for h, _ in rollouts[0].waves]
    for i, hosts in enumerate(sizes):
        label = "canary" if i == 0 else f"wave {i}"
        seconds = med([r.waves[i][1] for r in rollouts if i < len(r.waves)])
        print(f"    {label:<7} ({hosts:2} hosts) activate → verified → commit {seconds:6.2f} s")
    print(f"    between waves (journal, events)                {med([r.between for r in rollouts]):7.2f} s")
    print(f"    done → exit                                    {med([r.end for r in rollouts]):7.2f} s")
    print(f"  naive -H all pull; rm -f; run -d                 {nv:7.1f} s")
    for part in ("pull", "rm -f", "run -d"):
        print(f"    {part:<46} {med([x.parts[part] for x in naives]):7.2f} s")
    ratio = ro / nv
    print(f"  rollout / naive = {ratio:.2f}x ({'meets' if ratio <= 1.2 else 'misses'} the ≤ 1.2× target)")

    ctl = med([r.cpu.controller for r in rollouts])
    print(f"\n  controller CPU (the rollout CLI, rusage): {ctl:.2f} s = {ctl / n * 1000:.0f} ms per host")
    ra, na = med([r.cpu.agents for r in rollouts]), med([x.cpu.agents for x in naives])
    rm, nm = med([r.cpu.machine for r in rollouts]), med([x.cpu.machine for x in naives])
    print(
        f"  agents' CPU: rollout {ra:.1f} s ({ra / n:.2f} s per host), naive {na:.1f} s ({na / n:.2f} s per "
        f"host); whole machine busy: rollout {rm:.1f} s, naive {nm:.1f} s on {cores} cores (other helpers'"
        f" work included)"
    )

    a2v = med([r.activate_to_verified for r in rollouts])
    rpc = med([r.activate_rpc for r in rollouts])
    wall1 = med([x.run_wall for x in solo])
    run1, rm1 = med([x.run_agent for x in solo]), med([x.rm_agent for x in solo])
    print(
        f"\n  one host (the canary, the rest idle): agent receives Activate → release.healthy "
        f"{a2v * 1000:.0f} ms (the Activate call — stop v1, create + start v2 — {rpc * 1000:.0f} ms)"
    )
    print(
        f"  `dockyard -H HOST run -d` of the same container on an idle host: {wall1 * 1000:.0f} ms whole "
        f"command; agent side {run1 * 1000:.0f} ms (+ {rm1 * 1000:.0f} ms for `rm -f` of the old one)"
    )
    r1 = a2v / wall1
    print(
        f"  Activate → verified / run -d = {r1:.2f}x ({'meets' if r1 <= 1.5 else 'misses'} the ≤ 1.5× "
        f"target); agent side only: / run -d {a2v / run1:.2f}x, / rm -f + run -d {a2v / (run1 + rm1):.2f}x"
    )

    if ratio <= 1.2:
        return
    # Why not: the rollout's waves run one after another, each at least one host's round trip, and it pays
    # a cold CLI start (for its rusage); with few hosts these fixed latencies are most of its time.
    waves = len(rollouts[0].waves)
    one = med([r.waves[0][1] for r in rollouts])  # the canary wave: one host's activate → commit, alone
    stage = med([r.stage for r in rollouts])
    fixed = startup + waves * one
    print(
        f"\n  why {ratio:.2f}x here: the rollout is latency-bound at {n} hosts — start-up + plan + pin "
        f"{startup:.2f} s (a cold CLI; the naive commands use the warm one) + {waves} waves in sequence, "
        f"each at least one host's activate → verified → commit ({one:.2f} s alone): {fixed:.1f} s of its "
        f"{ro:.1f} s are fixed latency, before any per-host work"
    )
    print(
        f"  for ≤ 1.2× here the waves would have to take ≤ 1.2 × {nv:.1f} − {startup:.2f} − {stage:.2f} "
        f"(stage) = {1.2 * nv - startup - stage:.2f} s, i.e. ≤ {(1.2 * nv - startup - stage) / waves:.2f} s "
        f"per wave. CPU per host is small: the rollout's own processes use {ctl + ra:.1f} CPU s "
        f"(controller {ctl:.2f} + agents {ra:.1f} = {(ctl + ra) / n:.2f} per host), the naive switch's "
        f"agents {na:.1f} (+ its 3 CLI calls in the warm server)"
    )


if __name__ == "__main__":
    main()
