"""Archive benchmark: `dockyard import|save|load` vs `podman import|save|load` on the same rootfs.

Builds one rootfs tarball (busybox-static plus ~--size-mb of text-like files), then times whole commands,
median of --repeat runs, each on fresh storage (a fresh agent data root; podman with a private --root):

- import: the rootfs tarball → a one-layer image (unpacked, ready to run);
- save:   that image → a docker-archive file;
- load:   the docker-archive → a fresh store (unpacked, ready to run).

Prints a table and dockyard/podman ratios. Never a pass/fail test.

    .venv/bin/python tests/benchmarks/bench_images_archive.py [--repeat 3] [--size-mb 100]
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.support.agent import AgentProcess, FleetPki, run_cli  # noqa: E402
from tests.support.images import busybox_rootfs_bytes  # noqa: E402


def build_rootfs(path: Path, size_mb: int) -> None:
    rng = random.Random(7)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randint(2, 9))) for _ in range(4096)]
    base = busybox_rootfs_bytes()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as out:
        with tarfile.open(fileobj=io.BytesIO(base)) as src:
            for member in src.getmembers():
                out.addfile(member, src.extractfile(member) if member.isreg() else None)
        for n in range(size_mb * 4):  # 256 KiB files
            data = b" ".join(rng.choice(words) for _ in range(40_000))[: 256 * 1024]
            info = tarfile.TarInfo(f"srv/data/{n // 100:02d}/file{n:05d}.txt")
            info.size = len(data)
            info.mode = 0o644
            out.addfile(info, io.BytesIO(data))


def timed(fn: Callable[..., None], *args: object) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def check(result: subprocess.CompletedProcess[str]) -> None:
    if result.returncode != 0:
        raise SystemExit(f"command failed: {result.args}\n{result.stderr}")


class Podman:
    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("s", "r", "t"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str) -> None:
        r = self.root
        cmd = [
            "podman",
            "--root",
            str(r / "s"),
            "--runroot",
            str(r / "r"),
            "--tmpdir",
            str(r / "t"),
            "--storage-driver",
            "vfs",
            "--events-backend",
            "none",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]
        check(subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(r / "t")}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dy-bench-img-", dir="/tmp"))
    results: dict[str, dict[str, list[float]]] = {"dockyard": {}, "podman": {}}
    try:
        rootfs = work / "rootfs.tar"
        build_rootfs(rootfs, ns.size_mb)
        pki = FleetPki.create(work / "pki")
        for i in range(ns.repeat):
            # dockyard: fresh agents (start not timed)
            a = AgentProcess(root=work / f"a{i}", listen=None).start()
            b = AgentProcess(root=work / f"b{i}", listen=None).start()
            archive = work / f"dy{i}.tar"
            try:

                def cli(agent: AgentProcess, *args: str) -> None:
                    check(run_cli(pki.config_dir, *args, host=agent.unix_target, timeout=600))

                results["dockyard"].setdefault("import", []).append(
                    timed(cli, a, "import", str(rootfs), "bench/img:1")
                )
                results["dockyard"].setdefault("save", []).append(
                    timed(cli, a, "save", "bench/img:1", "-o", str(archive))
                )
                results["dockyard"].setdefault("load", []).append(timed(cli, b, "load", "-i", str(archive)))
            finally:
                a.stop()
                b.stop()
                shutil.rmtree(a.root, ignore_errors=True)
                shutil.rmtree(b.root, ignore_errors=True)
            p1, p2 = Podman(work / f"p{i}a"), Podman(work / f"p{i}b")
            parchive = work / f"pod{i}.tar"
            results["podman"].setdefault("import", []).append(
                timed(p1, "import", str(rootfs), "localhost/bench/img:1")
            )
            results["podman"].setdefault("save", []).append(
                timed(p1, "save", "-o", str(parchive), "localhost/bench/img:1")
            )
            results["podman"].setdefault("load", []).append(timed(p2, "load", "-i", str(archive)))
            for p in (p1, p2):
                shutil.rmtree(p.root, ignore_errors=True)
            archive.unlink(missing_ok=True)
            parchive.unlink(missing_ok=True)
        size = rootfs.stat().st_size / 1e6
        print(f"rootfs {size:.0f} MB, median of {ns.repeat}")
        print(f"{'op':<8}{'dockyard s':>12}{'podman s':>12}{'ratio':>8}")
        for op in ("import", "save", "load"):
            dy = statistics.median(results["dockyard"][op])
            pod = statistics.median(results["podman"][op])
            print(f"{op:<8}{dy:>12.2f}{pod:>12.2f}{dy / pod:>8.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
