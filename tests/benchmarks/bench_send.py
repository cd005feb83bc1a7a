"""Send benchmark: `dockyard image send` of a ~150 MB image to 1, 5 and 10 agents vs podman save | load.

The image is bench_pull's: 3 gzip layers of text-like files, ~150 MB uncompressed. It is loaded once into
a source agent (and into a source podman root). Then, for each N:

- dockyard: N fresh target agents (separate processes on 127.0.0.1, own data roots, mutual TLS); the
  whole `dockyard image send bench:1 --from SRC -H T1 … -H TN` is timed — every blob read once from the
  source, fanned out by the controller, verified, and unpacked on every target (ready to run). Bytes
  read from the source come from the source agent's own log (`transfer.blob_read`).
- podman: `podman save | podman load` repeated per host, each into its own private root; the `ssh HOST`
  of the real-world pipeline is a local pipe here (no sshd cost counted). Bytes read from the source =
  what `podman save` wrote, summed over hosts.

All N agents share this machine's cores, so target-side work (hashing, unpacking) adds up here where
separate hosts would do it in parallel. So every dockyard case also reports the CPU seconds (utime +
stime from /proc/<pid>/stat, waited-for children included) of the controller CLI, the source agent and
the targets (summed and per target), the target's split from its own logs (receive = gRPC + TLS +
protobuf on the event loop; store = sha256 + write + fsync of the blob; unpack = gunzip + diff ID + tar
extraction), the whole machine's busy CPU from /proc/stat (kernel writeback threads included, and
anything else running meanwhile), and the floor that makes: CPU seconds ÷ cores. Prints a table, the
ratios, and the two targets: bytes read from the source = 1× the image for any N; wall time for 10 hosts
≤ 2× that for 1. Never a pass/fail test.

    .venv/bin/python tests/benchmarks/bench_send.py [--repeat 3] [--size-mb 150] [--sizes 1,5,10]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_pull import build_image, fresh  # noqa: E402
from tests.support.agent import AgentProcess, FleetPki, run_cli  # noqa: E402

REF = "bench:1"
# The controller runs in the CLI process (no warm command server), so its CPU is this script's child's.
IN_PROCESS = {"DOCKYARD_WARM": "0"}
DOCKYARD = "dockyard image send"
PODMAN = "podman save | load per host*"


def layout_archive(layout: Path, out: Path) -> Path:
    """The OCI layout directory as an oci-archive tar (what `load` takes)."""
    index = json.loads((layout / "index.json").read_text())
    for desc in index["manifests"]:
        desc.setdefault("annotations", {})["org.opencontainers.image.ref.name"] = REF
        desc["annotations"]["io.containerd.image.name"] = f"docker.io/library/{REF}"
    with tarfile.open(out, "w") as tf:
        tf.add(layout / "oci-layout", "oci-layout")
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        tf.add(layout / "blobs", "blobs")
    return out


def agent(pki: FleetPki, root: Path, name: str) -> AgentProcess:
    return AgentProcess(root=root, tls_dir=pki.agent_tls(root / "tls", name=name)).start()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process and of its waited-for children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all cores spent not idle (nor waiting for I/O) since boot, kernel threads included."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class TargetSplit:
    """One target's CPU seconds by stage, from its `transfer.*` log events (see `target_split`)."""

    total: float = 0.0  # the process, from /proc
    store: float = 0.0  # sha256 + write + fsync of the blobs (worker threads)
    unpack: float = 0.0  # gunzip + diff ID + extraction, on arrival and at register

    @property
    def receive(self) -> float:
        """The rest: gRPC, TLS and protobuf on the event loop (and anything else the agent did)."""
        return max(0.0, self.total - self.store - self.unpack)


@dataclass
class Figures:
    """One contender at one N: wall times, bytes read from the source, CPU seconds by role (per run)."""

    times: list[float] = field(default_factory=list)
    read: int = 0
    cpu_controller: list[float] = field(default_factory=list)
    cpu_source: list[float] = field(default_factory=list)
    cpu_machine: list[float] = field(default_factory=list)  # every core's busy time during the send
    targets: list[list[TargetSplit]] = field(default_factory=list)  # per run, per target
    cpu_targets: float = 0.0  # podman: save + load of every host

    @property
    def cpu_shared(self) -> float:
        """Controller + source: the only parts hosts would share in a real fleet (mean of the runs)."""
        return _mean(self.cpu_controller) + _mean(self.cpu_source)

    def target_mean(self, attr: str) -> float:
        """Mean over runs of the targets' summed `attr` (total, store, unpack, receive)."""
        return _mean([sum(getattr(t, attr) for t in run) for run in self.targets])


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def target_split(target: AgentProcess, total: float) -> TargetSplit:
    """Split a target's CPU by stage from the durations its agent logs with each blob and the register."""
    split = TargetSplit(total=total)
    for e in target.events():
        if e.get("event") == "transfer.blob_written":
            split.store += float(e.get("store_cpu", 0.0))
            split.unpack += float(e.get("unpack_cpu", 0.0))
        elif e.get("event") == "transfer.image_registered":
            split.unpack += float(e.get("cpu", 0.0))
    return split


def source_read_bytes(src: AgentProcess) -> int:
    return sum(int(e["bytes"]) for e in src.events() if e.get("event") == "transfer.blob_read")


def bench_dockyard(work: Path, archive: Path, sizes: list[int], repeat: int) -> dict[int, Figures]:
    pki = FleetPki.create(fresh(work, "pki"))
    src = agent(pki, fresh(work, "src"), "src")
    assert src.proc is not None
    out: dict[int, Figures] = {}
    try:
        r = run_cli(pki.config_dir, "load", "-q", "-i", str(archive), host=src.unix_target, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(f"load failed: {r.stderr[-600:]}")
        for n in sizes:
            fig = out[n] = Figures()
            for rep in range(repeat):
                targets = [agent(pki, fresh(work, f"t{n}-{rep}-{i}"), f"t{i}") for i in range(n)]
                try:
                    before = source_read_bytes(src)
                    args = ["--format", "json", "image", "send", REF, "--from", f"src={src.tcp_target}"]
                    for i, t in enumerate(targets):
                        args += ["-H", f"t{i}={t.tcp_target}"]
                    pids = [t.proc.pid for t in targets if t.proc is not None]
                    ctl0, src0, machine0 = children_cpu(), cpu_seconds(src.proc.pid), machine_busy()
                    target0 = [cpu_seconds(p) for p in pids]
                    start = time.perf_counter()
                    r = run_cli(pki.config_dir, *args, timeout=900, env=IN_PROCESS)
                    elapsed = time.perf_counter() - start
                    machine = machine_busy() - machine0
                    if r.returncode != 0:
                        raise RuntimeError(f"send to {n} failed: {r.stderr[-800:]}")
                    fig.times.append(elapsed)
                    fig.cpu_machine.append(machine)
                    fig.cpu_controller.append(children_cpu() - ctl0)
                    fig.cpu_source.append(cpu_seconds(src.proc.pid) - src0)
                    used = [cpu_seconds(p) - c0 for p, c0 in zip(pids, target0, strict=True)]
                    fig.targets.append([target_split(t, c) for t, c in zip(targets, used, strict=True)])
                    fig.read = source_read_bytes(src) - before
                    reported = json.loads(r.stdout)["bytes_read"]
                    if reported != fig.read:
                        raise RuntimeError(
                            f"controller counted {reported} bytes, source agent logged {fig.read}"
                        )
                finally:
                    for t in targets:
                        t.stop()
                        shutil.rmtree(t.root, ignore_errors=True)
    finally:
        src.stop()
    return out


def _podman(root: Path, runroot: Path) -> list[str]:
    return [
        "podman", "--root", str(root), "--runroot", str(runroot), "--cgroup-manager", "cgroupfs",
        "--events-backend", "none", "--storage-driver", "overlay",
    ]  # fmt: skip


def _pipe(save: list[str], load: list[str], env: dict[str, str]) -> int:
    """`save | load` with the bytes counted on the way; returns the bytes save wrote."""
    saver = subprocess.Popen(save, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    loader = subprocess.Popen(
        load, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    )
    assert saver.stdout is not None and loader.stdin is not None
    total = 0
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(loader.stderr.read() if loader.stderr else b""))
    reader.start()
    while chunk := saver.stdout.read(1 << 20):
        total += len(chunk)
        loader.stdin.write(chunk)
    loader.stdin.close()
    saver.wait(600)
    loader.wait(600)
    reader.join()
    if saver.returncode or loader.returncode:
        raise RuntimeError(
            f"podman save|load failed: {(saver.stderr.read() if saver.stderr else b'')[-400:]!r} {err}"
        )
    return total


def bench_podman(
    work: Path, archive: Path, sizes: list[int], repeat: int
) -> dict[int, tuple[list[float], int]]:
    env = {**os.environ, "TMPDIR": str(fresh(work, "podman-tmp"))}
    src = _podman(fresh(work, "pm-src"), fresh(work, "pm-src-run"))
    r = subprocess.run([*src, "load", "-q", "-i", str(archive)], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"podman load failed: {r.stderr[-600:]}")
    out: dict[int, Figures] = {}
    try:
        for n in sizes:
            fig = out[n] = Figures()
            for rep in range(repeat):
                roots = [
                    (fresh(work, f"pm-{n}-{rep}-{i}"), fresh(work, f"pm-run-{n}-{rep}-{i}")) for i in range(n)
                ]
                try:
                    cpu0 = children_cpu()
                    start = time.perf_counter()
                    read = 0
                    for root, runroot in roots:  # one host after another, as `for h in …; do … | ssh $h …`
                        save = [*src, "save", "--format", "docker-archive", f"docker.io/library/{REF}"]
                        read += _pipe(save, [*_podman(root, runroot), "load", "-q"], env)
                    fig.times.append(time.perf_counter() - start)
                    fig.read = read
                    fig.cpu_targets = children_cpu() - cpu0  # save and load together
                finally:
                    for root, runroot in roots:
                        subprocess.run(
                            [*_podman(root, runroot), "system", "reset", "-f"], env=env, capture_output=True
                        )
                        subprocess.run(["umount", "-R", "-l", str(root)], capture_output=True)
                        shutil.rmtree(root, ignore_errors=True)
                        shutil.rmtree(runroot, ignore_errors=True)
    finally:
        subprocess.run([*src, "system", "reset", "-f"], env=env, capture_output=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size-mb", type=int, default=150)
    p.add_argument("--sizes", default="1,5,10")
    p.add_argument("--only", default="dockyard,podman")
    ns = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_send: needs root (agents, podman storage)")
    sizes = [int(s) for s in ns.sizes.split(",")]
    work = Path(tempfile.mkdtemp(prefix="dy-bench-send-"))
    try:
        run(work, ns.size_mb, sizes, ns.repeat, set(ns.only.split(",")))
    finally:
        subprocess.run(["umount", "-R", "-l", str(work)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size_mb: int, sizes: list[int], repeat: int, only: set[str]) -> None:
    started = time.perf_counter()
    layer_sizes, uncompressed = build_image(work / "layout", size_mb)
    archive = layout_archive(work / "layout", work / "image.tar")
    image = sum(layer_sizes)
    cores = os.cpu_count() or 1
    print(
        f"image: 3 layers, {uncompressed / 1e6:.0f} MB uncompressed, {image / 1e6:.0f} MB gzip "
        f"(built in {time.perf_counter() - started:.1f} s); {repeat} runs each, median; "
        f"{cores} CPUs shared by every agent of the run"
    )
    results: dict[str, dict[int, Figures]] = {}
    if "dockyard" in only:
        results[DOCKYARD] = bench_dockyard(work, archive, sizes, repeat)
    if "podman" in only:
        try:
            results[PODMAN] = bench_podman(work, archive, sizes, repeat)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"  ! podman: {exc}")
    print(
        f"{'':28} {'hosts':>5} {'median s':>9} {'min s':>7} {'read MB':>8} {'÷image':>7} "
        f"{'cpu ctl+src':>11} {'cpu targets':>11}"
    )
    for name, per_n in results.items():
        for n, fig in per_n.items():
            shared = f"{fig.cpu_shared:11.2f}" if name == DOCKYARD else f"{'-':>11}"
            targets = fig.target_mean("total") if name == DOCKYARD else fig.cpu_targets
            print(
                f"{name:28} {n:5} {statistics.median(fig.times):9.2f} {min(fig.times):7.2f} "
                f"{fig.read / 1e6:8.0f} {fig.read / image:7.2f} {shared} {targets:11.2f}"
            )
    print("* the `ssh HOST` leg is a local pipe into another private podman root (uncompressed tars)")
    print("  podman's cpu column is save + load together (the whole pipeline, per host, summed)")
    dy, pm = results.get(DOCKYARD), results.get(PODMAN)
    if dy and pm:
        for n in sizes:
            if n in dy and n in pm:
                ratio = statistics.median(dy[n].times) / statistics.median(pm[n].times)
                print(f"{n:2} hosts: dockyard/podman wall time = {ratio:.2f}")
    if not dy:
        return
    reads = {n: round(fig.read / image, 3) for n, fig in dy.items()}
    ok = all(abs(r - 1) < 0.01 for r in reads.values())
    print(
        f"bytes read from the source ÷ image (layers): {reads} ({'meets' if ok else 'misses'} the 1× target)"
    )
    print(f"CPU seconds (mean of the runs) and the floor they set on {cores} shared cores:")
    for n, fig in dy.items():
        print_cpu(n, fig, cores)
    lo, hi = min(dy), max(dy)
    if lo == hi:
        return
    scale = statistics.median(dy[hi].times) / statistics.median(dy[lo].times)
    verdict = "meets" if scale <= 2 else "misses"
    print(f"wall time {hi} hosts ÷ {lo}: {scale:.2f} ({verdict} the ≤ 2× target)")
    per_target = dy[hi].target_mean("total") / hi
    budget = 2 * statistics.median(dy[lo].times) * cores - dy[hi].cpu_shared
    print(
        f"  for ≤ 2× here, {hi} targets sharing {cores} cores would have to use at most "
        f"(2 × {statistics.median(dy[lo].times):.2f} s × {cores} − {dy[hi].cpu_shared:.2f}) ÷ {hi} = "
        f"{budget / hi:.2f} CPU s each; they use {per_target:.2f}"
    )


def print_cpu(n: int, fig: Figures, cores: int) -> None:
    """`N hosts: wall …, CPU: controller X, source Y, targets Z (per target W) → floor (X+Y+Z)/cores`."""
    ctl, src, tgt = _mean(fig.cpu_controller), _mean(fig.cpu_source), fig.target_mean("total")
    machine = _mean(fig.cpu_machine)
    print(
        f"{n:2} hosts: wall {statistics.median(fig.times):.2f} s, CPU: controller {ctl:.2f} s, source "
        f"{src:.2f} s, targets {tgt:.2f} s (per target {tgt / n:.2f} s) → CPU-bound floor on {cores} cores "
        f"= ({ctl:.2f}+{src:.2f}+{tgt:.2f})/{cores} = {(ctl + src + tgt) / cores:.2f} s; whole machine busy "
        f"{machine:.2f} s → {machine / cores:.2f} s"
    )
    parts = {k: fig.target_mean(k) / n for k in ("receive", "store", "unpack")}
    print(
        f"          per target: receive (gRPC+TLS+protobuf) {parts['receive']:.2f} s, verify+write "
        f"{parts['store']:.2f} s, unpack (gunzip+diff ID+extract) {parts['unpack']:.2f} s"
    )


if __name__ == "__main__":
    main()
