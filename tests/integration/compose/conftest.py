"""Fixtures for `dockyard compose` tests: one real agent per test module (runc + conmon), the busybox test
image of the compose corpus under every image name the corpus uses, and the CLI run in a project directory.

The corpus image (`dyc/app:1`, also tagged as each `dyc/...` name in tests/data/compose/corpus) serves
HTTP GET / with "ok" on every port a corpus service publishes or talks to, so published ports and name
resolution can be checked; small shims named like the tools the corpus' health checks call (pg_isready,
mysqladmin, redis-cli, curl) fetch that page, so the files' own health checks run unchanged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import CLI_BIN, AgentProcess, FleetPki, config_text, wait_for
from tests.support.images import busybox_rootfs_tar
from tests.support.sweep import sweep_agent

pytestmark = pytest.mark.root

DATA = Path(__file__).parents[2] / "data" / "compose"
CORPUS = DATA / "corpus"
IMAGE = "dyc/app:1"
CHECK_PORT = 8080  # every corpus container serves on it; name-resolution checks use it
SERVED_PORTS = (
    53, 80, 443, 3000, 3306, 4200, 5000, 5044, 5050, 5054, 5432, 5601, 6379, 8000, 8080, 9000, 9090, 9200,
    9300, 9600, 25565, 27017,
)  # fmt: skip

SERVE = f"""#!/bin/sh
# The compose corpus' stand-in for every service: HTTP "ok" on the ports the corpus uses, until stopped.
for port in {" ".join(map(str, SERVED_PORTS))}; do httpd -p "$port" -h /www 2>/dev/null; done
trap 'exit 0' TERM INT
sleep 2147483647 &
wait
"""
# (busybox's `wget -T` crashes: the agent's health check timeout bounds these instead)
_FETCH = '#!/bin/sh\nexec wget -q -O /dev/null "http://127.0.0.1:{port}/"\n'
CURL = """#!/bin/sh
# curl stand-in: fetch / of the last argument's host:port
for arg; do url=$arg; done
url=${url#*://}
exec wget -q -O /dev/null "http://${url%%/*}/"
"""
SHIMS = {
    "usr/bin/pg_isready": _FETCH.format(port=5432),
    "usr/bin/mysqladmin": _FETCH.format(port=3306),
    "usr/bin/redis-cli": _FETCH.format(port=6379),
    "usr/bin/curl": CURL,
    "serve.sh": SERVE,
}
PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "postgres:x:70:70:postgres:/home:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/home:/bin/false\n"
)


def corpus_image_tar(path: Path) -> Path:
    busybox_rootfs_tar(path, extra={"www/index.html": b"ok\n", "etc/passwd": PASSWD.encode()})
    with tarfile.open(path, "a") as tf:
        for name, text in SHIMS.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o755, 1_700_000_000
            tf.addfile(info, io.BytesIO(data))
    return path


def corpus_images() -> set[str]:
    """Every `image:` of the corpus (all `dyc/...` names)."""
    names = set()
    for file in CORPUS.glob("*/compose.yaml"):
        names.update(re.findall(r"^\s*image:\s*(\S+)\s*$", file.read_text(), flags=re.M))
    return names


@dataclass
class Yard:
    agent: AgentProcess
    config_dir: Path
    cgroup_parent: str

    @property
    def host(self) -> str:
        return self.agent.unix_target

    def cli(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "DOCKYARD_CONFIG_DIR": str(self.config_dir),
            "COLUMNS": "200",
            **(env or {}),
        }
        for key in ("DOCKYARD_HOST", "COMPOSE_PROJECT_NAME", "COMPOSE_PROFILES"):
            if env is None or key not in env:
                full_env.pop(key, None)
        return subprocess.run(
            [CLI_BIN, "-H", self.host, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            cwd=cwd,
        )

    def ok(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        done = self.cli(*args, **kwargs)
        assert done.returncode == 0, f"dockyard {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
        return done

    def json(self, *args: str, **kwargs: Any) -> Any:
        return json.loads(self.ok("--format", "json", *args, **kwargs).stdout)

    def project_objects(self, project: str) -> dict[str, list[str]]:
        """What the agent still has of a project: containers, networks and volumes by name."""
        containers = [c["name"] for c in self.json("ps", "-a") if c.get("labels", {}).get(
            "com.docker.compose.project") == project or c["name"].startswith(f"{project}-")]  # fmt: skip
        networks = [n["name"] for n in self.json("network", "ls") if n["name"].startswith(f"{project}_")]
        volumes = [v["name"] for v in self.json("volume", "ls") if v["name"].startswith(f"{project}_")]
        return {"containers": containers, "networks": networks, "volumes": volumes}


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yard]:
    """One agent for the module's tests, with the corpus image under all its names."""
    base = tmp_path_factory.mktemp("compose")
    pki = FleetPki.create(base)
    root = base / "agent"
    root.mkdir()
    parent = f"/dytest-{secrets.token_hex(4)}"
    cfg = root / "agent.toml"
    cfg.write_text(config_text({"cgroup_parent": parent}))
    agent = AgentProcess(root=root, tls_dir=None, listen=None, extra_args=["--config", str(cfg)])
    yard = Yard(agent, pki.config_dir, parent)
    agent.start(timeout=90)  # a busy machine can take a while
    try:
        tar = corpus_image_tar(base / "corpus-image.tar")
        yard.ok("import", "-c", 'ENTRYPOINT ["/bin/sh", "/serve.sh"]', str(tar), IMAGE, timeout=120)
        for name in sorted(corpus_images()):
            yard.ok("tag", IMAGE, name)
        yield yard
    finally:
        try:
            with contextlib.suppress(Exception):
                ids = yard.cli("ps", "-aq", "--no-trunc", timeout=30).stdout.split()
                if ids:
                    yard.cli("rm", "-f", *ids, timeout=120)
            sweep_agent(agent, parent)
        finally:
            agent.release()


def wait_healthy(yard: Yard, cwd: Path, env: dict[str, str], timeout: float = 90) -> list[dict[str, Any]]:
    """Until every container of the project with a health check is healthy; the `compose ps` rows."""

    def check() -> list[dict[str, Any]] | None:
        rows: list[dict[str, Any]] = yard.json("compose", "ps", "-a", cwd=cwd, env=env)
        bad = [r for r in rows if r["health"] == "unhealthy" or r["status"] != "running"]
        assert not bad, f"containers not running or unhealthy: {bad}"
        return rows if all(r["health"] in ("", "healthy") for r in rows) else None

    rows: list[dict[str, Any]] = wait_for(check, timeout, "the project's health checks to pass", interval=0.5)
    return rows
