"""Timing whole commands for the run benchmarks, and the podman invocation they compare against.

A command is timed from process start to exit (so CLI start-up counts for every tool); a failing command
ends the benchmark with its output tail. `median_of` warms the path up once (first use creates bridges,
caches, page cache) and reports the median of `repeat` runs.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

IMAGE = "busybox:bench"
# podman with runc and the rlimits this host allows (its hard nofile limit is below podman's default)
PODMAN_RUN = ["--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"]


def podman_cli(work: Path) -> list[str]:
    """podman with private storage and run root under `work`."""
    return ["podman", "--root", str(work / "podman"), "--runroot", str(work / "podman-run")]


def timed(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 120) -> float:
    """Seconds from start to exit of one command; a failure ends the benchmark."""
    start = time.perf_counter()
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:8])} exited {r.returncode}: {(r.stderr or r.stdout)[-600:]}")
    return elapsed


def median_of(argv: Sequence[str], repeat: int, env: dict[str, str] | None = None) -> float:
    """Median seconds of `repeat` runs after one untimed warm-up run."""
    timed(argv, env)
    return statistics.median(timed(argv, env) for _ in range(repeat))
