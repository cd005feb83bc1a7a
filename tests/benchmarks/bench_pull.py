"""Pull benchmark: `dockyard pull` (to unpacked snapshots, ready to run) vs `podman pull` and `skopeo copy`.

Builds one ~150 MB (uncompressed), 3-layer gzip image of random-ish compressible files, pushes it once
with skopeo to a local `docker-registry` (plain HTTP on 127.0.0.1), then times whole commands, each on
fresh private storage, median of --repeat runs:

- dockyard: `dockyard pull` against a real agent (fresh data root per run; agent start not timed);
- podman:   `podman pull --tls-verify=false` with private --root/--runroot (unpacks into its storage);
- skopeo:   `skopeo copy docker://… oci:DIR` (downloads and verifies; no unpack);
- floor:    one core doing what any pull must — gunzip + sha256 of the layer blobs (`gzip -dc`, `sha256sum`).

Prints a table and the ratios; the target is dockyard ≤ 0.7× podman. Never a pass/fail test.

    .venv/bin/python tests/benchmarks/bench_pull.py [--repeat 3] [--size-mb 150]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.agent import AgentProcess, FleetPki, run_cli  # noqa: E402
from tests.support.oci_layout import OciLayout, tar_of  # noqa: E402
from tests.support.registry import running_registry, skopeo  # noqa: E402

FILE_SIZE = 1 << 20


def _chunk_pool(seed: int, count: int = 64, size: int = 64 * 1024) -> list[bytes]:
    """Text-like chunks (words from a small vocabulary, some random bytes): gzip takes them to ~45%."""
    rng = random.Random(seed)
    words = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz0123456789_", k=rng.randint(2, 10)))
        for _ in range(2048)
    ]
    pool = []
    for _ in range(count):
        parts: list[bytes] = []
        total = 0
        while total < size:
            piece = rng.choice(words) + b" " if rng.random() < 0.85 else rng.randbytes(12)
            parts.append(piece)
            total += len(piece)
        pool.append(b"".join(parts)[:size])
    return pool


def _layer_tar(index: int, megabytes: int, pool: list[bytes]) -> bytes:
    rng = random.Random(1000 + index)
    files = {}
    per_file = FILE_SIZE // len(pool[0])
    for n in range(megabytes):
        files[f"layer{index}/file{n:04d}.dat"] = b"".join(rng.choice(pool) for _ in range(per_file))
    return tar_of(files)


def build_image(layout_dir: Path, size_mb: int) -> tuple[list[int], int]:
    """Write the OCI layout; returns (compressed layer sizes, uncompressed total)."""
    pool = _chunk_pool(42)
    sizes = [size_mb // 3] * 3
    with concurrent.futures.ThreadPoolExecutor(3) as ex:
        tars = list(ex.map(lambda i: _layer_tar(i, sizes[i], pool), range(3)))
    layout = OciLayout(layout_dir)
    with concurrent.futures.ThreadPoolExecutor(3) as ex:  # zlib releases the GIL
        compressed = list(ex.map(_gzip, tars))
    image = _add_precompressed(layout, tars, compressed)
    layout.tag(image, "bench")
    return [len(c) for c in compressed], sum(len(t) for t in tars)


def _gzip(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


def _add_precompressed(layout: OciLayout, tars: list[bytes], compressed: list[bytes]) -> dict[str, object]:
    from tests.support.oci_layout import LAYER_TYPES, OCI_CONFIG, OCI_MANIFEST, sha256

    layers = [layout.add_blob(c, LAYER_TYPES["gzip"]) for c in compressed]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(t) for t in tars]},
    }
    config_descriptor = layout.add_blob(json.dumps(config).encode(), OCI_CONFIG)
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config_descriptor, "layers": layers}
    return layout.add_blob(json.dumps(manifest).encode(), OCI_MANIFEST)


def timed(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600) -> float:
    start = time.perf_counter()
    r = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}… exited {r.returncode}: {(r.stderr or r.stdout)[-600:]}")
    return elapsed


def fresh(work: Path, name: str) -> Path:
    path = work / name
    if path.exists():
        subprocess.run(["umount", "-R", "-l", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def bench_dockyard(work: Path, ref: str, registry_host: str, repeat: int) -> list[float]:
    pki = FleetPki.create(fresh(work, "dockyard-pki"))
    times = []
    for i in range(repeat):
        agent = AgentProcess(
            root=fresh(work, f"dockyard-{i}"), listen=None, extra_args=["--insecure-registry", registry_host]
        )
        agent.start()
        try:
            start = time.perf_counter()
            r = run_cli(pki.config_dir, "pull", "-q", ref, host=agent.unix_target, timeout=600)
            elapsed = time.perf_counter() - start
            if r.returncode != 0:
                raise RuntimeError(f"dockyard pull failed: {r.stderr[-600:]}")
            times.append(elapsed)
        finally:
            agent.stop()
            shutil.rmtree(agent.root, ignore_errors=True)
    return times


def bench_podman(work: Path, ref: str, repeat: int) -> list[float]:
    conf = work / "podman-conf"
    conf.mkdir(exist_ok=True)
    (conf / "registries.conf").write_text("")
    (conf / "auth.json").write_text("{}")
    (conf / "policy.json").write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    env = {
        **os.environ,
        "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf"),
        "REGISTRY_AUTH_FILE": str(conf / "auth.json"),
        "TMPDIR": str(fresh(work, "podman-tmp")),
    }
    times = []
    for i in range(repeat):
        root, runroot = fresh(work, f"podman-root-{i}"), fresh(work, f"podman-run-{i}")
        base = ["podman", "--root", str(root), "--runroot", str(runroot), "--cgroup-manager", "cgroupfs"]
        base += ["--events-backend", "none"]
        pull = ["pull", "-q", "--tls-verify=false", "--signature-policy", str(conf / "policy.json"), ref]
        try:
            times.append(timed([*base, *pull], env))
        finally:
            subprocess.run([*base, "system", "reset", "-f"], env=env, capture_output=True)
            fresh(work, f"podman-root-{i}")
    return times


def bench_skopeo(work: Path, ref: str, repeat: int) -> list[float]:
    times = []
    for i in range(repeat):
        dest = work / f"skopeo-{i}"
        shutil.rmtree(dest, ignore_errors=True)
        start = time.perf_counter()
        skopeo(
            ["copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{dest}:bench"], work / "skopeo-env"
        )
        times.append(time.perf_counter() - start)
        shutil.rmtree(dest, ignore_errors=True)
    return times


def bench_floor(blobs: list[Path], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        total = 0.0
        for blob in blobs:
            total += timed(["sh", "-c", f"gzip -dc < {blob} > /dev/null"])
            total += timed(["sha256sum", str(blob)])
        times.append(total)
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--size-mb", type=int, default=150)
    p.add_argument("--only", default="dockyard,podman,skopeo,floor")
    ns = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_pull: needs root (agent snapshots, podman storage)")
    work = Path(tempfile.mkdtemp(prefix="dy-bench-pull-"))
    try:
        run(work, ns.size_mb, ns.repeat, set(ns.only.split(",")))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size_mb: int, repeat: int, only: set[str]) -> None:
    started = time.perf_counter()
    sizes, uncompressed = build_image(work / "layout", size_mb)
    print(
        f"image: 3 layers, {uncompressed / 1e6:.0f} MB uncompressed, {sum(sizes) / 1e6:.0f} MB gzip "
        f"(built in {time.perf_counter() - started:.1f} s); {repeat} runs each, median"
    )
    with running_registry(work / "registry", "http") as registry:
        ref = f"{registry.host}/bench/image:1"
        skopeo(
            ["copy", f"oci:{work / 'layout'}:bench", f"docker://{ref}", "--dest-tls-verify=false"],
            work / "sk",
        )
        index = json.loads((work / "layout" / "index.json").read_text())
        manifest = json.loads(
            (work / "layout" / "blobs" / "sha256" / index["manifests"][0]["digest"][7:]).read_text()
        )
        blobs = [registry.blob_data(layer["digest"]) for layer in manifest["layers"]]
        contenders: list[tuple[str, Callable[[], list[float]]]] = [
            ("dockyard pull (unpacked)", lambda: bench_dockyard(work, ref, registry.host, repeat)),
            ("podman pull (unpacked)", lambda: bench_podman(work, ref, repeat)),
            ("skopeo copy (no unpack)", lambda: bench_skopeo(work, ref, repeat)),
            ("floor: 1 core gunzip+sha256", lambda: bench_floor(blobs, repeat)),
        ]
        results: dict[str, list[float]] = {}
        for name, fn in contenders:
            if name.split()[0].rstrip(":") not in only:
                continue
            try:
                results[name] = fn()
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                print(f"  ! {name}: {exc}")
    podman = (
        statistics.median(results["podman pull (unpacked)"]) if "podman pull (unpacked)" in results else None
    )
    print(f"{'':30} {'median s':>9} {'min s':>7} {'× podman':>9}")
    for name, times in results.items():
        median = statistics.median(times)
        ratio = f"{median / podman:9.2f}" if podman else f"{'-':>9}"
        print(f"{name:30} {median:9.2f} {min(times):7.2f} {ratio}")
    dockyard = results.get("dockyard pull (unpacked)")
    if dockyard and podman:
        ratio = statistics.median(dockyard) / podman
        verdict = "meets" if ratio <= 0.7 else "misses"
        print(f"dockyard/podman = {ratio:.2f} ({verdict} the ≤ 0.70 target)")


if __name__ == "__main__":
    main()
