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
separate hosts would do it in parallel. Prints a table, the ratios, and the two targets: bytes read from
the source = 1× the image for any N; wall time for 10 hosts ≤ 2× that for 1. Never a pass/fail test.

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
    """User + system CPU time of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Figures:
    """One contender at one N: wall times, bytes read from the source, CPU seconds by role."""

    times: list[float] = field(default_factory=list)
    read: int = 0
    cpu_shared: float = 0.0  # controller + source: the only parts hosts would share in a real fleet
    cpu_targets: float = 0.0  # all targets together (each a separate machine in a real fleet)


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
                    cpu0 = (children_cpu(), cpu_seconds(src.proc.pid), sum(cpu_seconds(p) for p in pids))
                    start = time.perf_counter()
                    r = run_cli(pki.config_dir, *args, timeout=900)
                    elapsed = time.perf_counter() - start
                    if r.returncode != 0:
                        raise RuntimeError(f"send to {n} failed: {r.stderr[-800:]}")
                    fig.times.append(elapsed)
                    fig.cpu_shared = children_cpu() - cpu0[0] + cpu_seconds(src.proc.pid) - cpu0[1]
                    fig.cpu_targets = sum(cpu_seconds(p) for p in pids) - cpu0[2]
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
            print(
                f"{name:28} {n:5} {statistics.median(fig.times):9.2f} {min(fig.times):7.2f} "
                f"{fig.read / 1e6:8.0f} {fig.read / image:7.2f} {shared} {fig.cpu_targets:11.2f}"
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
    lo, hi = min(dy), max(dy)
    if lo == hi:
        return
    scale = statistics.median(dy[hi].times) / statistics.median(dy[lo].times)
    verdict = "meets" if scale <= 2 else "misses"
    print(f"wall time {hi} hosts ÷ {lo}: {scale:.2f} ({verdict} the ≤ 2× target)")
    floor = dy[hi].cpu_targets / cores
    print(
        f"  here all {hi} targets share {cores} CPUs: their own work (TLS, sha256, gunzip, unpack) took "
        f"{dy[hi].cpu_targets:.1f} CPU s, a floor of {floor:.1f} s wall on this machine; what the hosts "
        f"would share in a fleet (controller + source) took "
        f"{dy[lo].cpu_shared:.2f} → {dy[hi].cpu_shared:.2f} CPU s"
    )


if __name__ == "__main__":
    main()
