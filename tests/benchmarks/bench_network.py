"""Network benchmark: `dockyard run --rm IMAGE true` on the default bridge against `podman run --rm` with its
default network (netavark bridge), in one run, plus both with `--network none` to show what networking adds.

Times whole commands (process start to exit, median of --repeat runs after a warm-up) and prints ratios.
Both run the same busybox rootfs (imported from /bin/busybox). The agent gets a private data root, socket,
bridge (dyb0), subnet (10.232.240.0/24) and nft table (dyb); podman a private --root/--runroot and runc
with the rlimits this host allows. Everything is removed afterwards. The issue's target: dockyard ≤ 0.8×
podman. Needs root.

    .venv/bin/python tests/benchmarks/bench_network.py [--repeat 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.commands import IMAGE, PODMAN_RUN, median_of, podman_cli, timed  # noqa: E402
from tests.support.agent import CLI_BIN, AgentProcess, wait_for  # noqa: E402
from tests.support.images import busybox_rootfs_tar  # noqa: E402

AGENT_CONFIG = """network_bridge = "dyb0"
network_subnet = "10.232.240.0/24"
network_pool = "10.232.244.0/22"
network_name_prefix = "dyb-"
network_nft_table = "dyb"
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=15)
    ns = p.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_network: needs root")
    work = Path(tempfile.mkdtemp(prefix="dyb-bench-"))
    tar = busybox_rootfs_tar(work / "busybox.tar")
    results: dict[str, float] = {}
    agent = AgentProcess(root=work / "agent", tls_dir=None, listen=None)
    (work / "agent").mkdir()
    (work / "agent.toml").write_text(AGENT_CONFIG)
    agent.extra_args = ["--config", str(work / "agent.toml")]
    podman = podman_cli(work)
    try:
        agent.start()
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(work / "controller")}
        dy = [CLI_BIN, "-H", agent.unix_target]
        timed([*dy, "import", str(tar), IMAGE], env)
        results["dockyard bridge"] = median_of([*dy, "run", "--rm", IMAGE, "true"], ns.repeat, env)
        results["dockyard none"] = median_of(
            [*dy, "run", "--rm", "--network", "none", IMAGE, "true"], ns.repeat, env
        )
        if shutil.which("podman"):
            timed([*podman, "import", str(tar), IMAGE])
            results["podman bridge"] = median_of(
                [*podman, "run", "--rm", *PODMAN_RUN, IMAGE, "true"], ns.repeat
            )
            results["podman none"] = median_of(
                [*podman, "run", "--rm", "--network", "none", *PODMAN_RUN, IMAGE, "true"], ns.repeat
            )
        else:
            print("podman: not installed, skipped")
    finally:
        agent.stop()
        if shutil.which("podman"):
            subprocess.run([*podman, "rm", "-af"], capture_output=True)
            subprocess.run([*podman, "rmi", "-af"], capture_output=True)
        for link in ("dyb0",):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["nft", "delete", "table", "inet", "dyb"], capture_output=True)
        wait_for(lambda: not agent.running, 10, "agent to stop")
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'command':<24}{'median s':>10}")
    for name, value in results.items():
        print(f"{name:<24}{value:>10.3f}")
    if "podman bridge" in results:
        ratio = results["dockyard bridge"] / results["podman bridge"]
        print(f"dockyard/podman, default bridge: {ratio:.2f}x (target <= 0.80)")
        print(f"dockyard/podman, --network none: {results['dockyard none'] / results['podman none']:.2f}x")
        print(
            "networking adds: dockyard "
            f"{(results['dockyard bridge'] - results['dockyard none']) * 1000:.0f} ms, podman "
            f"{(results['podman bridge'] - results['podman none']) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
