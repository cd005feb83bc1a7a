"""Build benchmark: `dockyard build` against `podman build` (buildah inside), cold and fully cached.

The same Dockerfile (RUN and COPY steps on a busybox image imported from busybox-static into both) is
built by each tool: cold (`--no-cache`: every step runs and is committed) and fully cached (an unchanged
rebuild). Whole commands are timed (process start to exit, median of --repeat runs), so the CLI's own
start-up counts for both. podman gets private storage (overlay driver), run root and tmp dir, runc, and
`--ulimit nofile=20000:20000` (this machine's hard limit). Targets: cold ≤ 1.0×, cached ≤ 0.5× podman.

    .venv/bin/python tests/benchmarks/bench_build.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.integration.build.conftest import Net, leftovers  # noqa: E402
from tests.support.agent import CLI_BIN, AgentProcess, FleetPki  # noqa: E402
from tests.support.images import busybox_rootfs_tar  # noqa: E402

DOCKERFILE = """ARG BASE
FROM $BASE
RUN echo one > /one && mkdir -p /app/bin
COPY data/ /app/data/
RUN cat /app/data/* | wc -c > /app/size && sha256sum /app/data/* > /app/sums
COPY script.sh /app/bin/script.sh
RUN /app/bin/script.sh > /app/out && rm /one
ENV APP=/app
WORKDIR /app
CMD ["/app/bin/script.sh"]
"""
SCRIPT = "#!/bin/sh\necho running in $(pwd)\nls /app/data | wc -l\n"


def make_context(root: Path) -> Path:
    ctx = root / "ctx"
    (ctx / "data").mkdir(parents=True)
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    (ctx / "script.sh").write_text(SCRIPT)
    (ctx / "script.sh").chmod(0o755)
    for i in range(20):
        (ctx / "data" / f"f{i:02}.bin").write_bytes(os.urandom(50_000))
    return ctx


def timed(argv: Sequence[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:8])}... failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return elapsed


def median(argv: Sequence[str], env: dict[str, str], repeat: int) -> float:
    return statistics.median(timed(argv, env) for _ in range(repeat))


class Podman:
    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("storage", "run", "tmp"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "TMPDIR": str(root / "tmp")}

    def argv(self, *args: str) -> list[str]:
        return [
            "podman",
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--tmpdir", str(self.root / "tmp"),
            "--storage-driver", "overlay",
            "--events-backend", "none",
            "--cgroup-manager", "cgroupfs",
            "--runtime", "runc",
            *args,
        ]  # fmt: skip

    def build_argv(self, ctx: Path, *extra: str) -> list[str]:
        return self.argv(
            "build", "--ulimit", "nofile=20000:20000", "--build-arg", "BASE=localhost/busybox:bench",
            "-t", "bench:podman", *extra, str(ctx),
        )  # fmt: skip

    def cleanup(self) -> None:
        subprocess.run(self.argv("system", "reset", "-f"), env=self.env, capture_output=True, timeout=120)
        for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
            target = line.split()[4]
            if target.startswith(str(self.root)):
                subprocess.run(["umount", "-l", target], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5)
    ns = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (runc, overlay mounts)")

    work = Path(tempfile.mkdtemp(prefix="dy-bench-build-", dir="/tmp"))
    net = Net()
    agent: AgentProcess | None = None
    podman = Podman(Path(tempfile.mkdtemp(prefix="dy-bbp-", dir="/tmp")))  # podman wants a short run root
    try:
        pki = FleetPki.create(work)
        agent = AgentProcess(
            root=work / "agent",
            tls_dir=None,
            listen=None,
            extra_args=["--config", str(net.config(work / "a.toml"))],
        ).start()
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(pki.config_dir)}
        env.pop("DOCKYARD_HOST", None)
        dy = [CLI_BIN, "-H", agent.unix_target]
        rootfs = busybox_rootfs_tar(work / "busybox.tar")
        timed([*dy, "import", str(rootfs), "busybox:bench"], env)
        timed(podman.argv("import", str(rootfs), "localhost/busybox:bench"), podman.env)
        ctx = make_context(work)

        dy_build = [*dy, "build", "--build-arg", "BASE=busybox:bench", "-t", "bench:dockyard"]
        timed([*dy_build, str(ctx)], env)  # warm both tools' code paths once
        timed(podman.build_argv(ctx), podman.env)

        results = {
            "cold": (
                median([*dy_build, "--no-cache", str(ctx)], env, ns.repeat),
                median(podman.build_argv(ctx, "--no-cache"), podman.env, ns.repeat),
            ),
            "cached": (
                median([*dy_build, str(ctx)], env, ns.repeat),
                median(podman.build_argv(ctx), podman.env, ns.repeat),
            ),
        }
        targets = {"cold": 1.0, "cached": 0.5}
        lines = DOCKERFILE.count("\n")
        print(f"build benchmark: {lines}-line Dockerfile, 3 RUN + 2 COPY, median of {ns.repeat}")
        print(f"{'case':8} {'dockyard':>10} {'podman':>10} {'ratio':>7}  target")
        for case, (mine, peer) in results.items():
            ratio = mine / peer
            verdict = "ok" if ratio <= targets[case] else "MISSED"
            print(f"{case:8} {mine:9.3f}s {peer:9.3f}s {ratio:6.2f}x  <= {targets[case]:.1f}x {verdict}")
        left = leftovers(agent)
        if left:
            raise SystemExit(f"dockyard left build state behind: {left}")
    finally:
        if agent is not None:
            agent.stop()
        podman.cleanup()
        net.teardown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
