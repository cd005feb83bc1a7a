"""Fixtures for build tests: a real agent on its own bridge/subnet/nft table, busybox imported from
busybox-static, a context-directory factory, and the leftover check every failing build must pass.

Names start with `dyb`, subnets are inside 10.233.0.0/16 (other areas use other ranges), so build tests can
run next to other areas' tests. Teardown removes the bridge, its ports and the nft table.
"""

from __future__ import annotations

import random
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli
from tests.support.images import busybox_rootfs_tar
from tests.support.sweep import mounts_under

Cli = Callable[..., subprocess.CompletedProcess[str]]
BUSYBOX = "busybox:test"


def sh(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


def failed(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode != 0, f"unexpected success\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def leftovers(agent: AgentProcess) -> list[str]:
    """Everything a build may leave behind if cleanup failed: dirs, mounts, runtime state, namespaces."""
    found: list[str] = []
    data = agent.data_root
    build = data / "build"
    if build.exists():
        found += [f"dir {p}" for p in build.iterdir()]
    found += [f"mount {target}" for target in mounts_under(build)]
    runc_root = data / "run" / "build-runc"
    if runc_root.exists():
        found += [f"runc {p.name}" for p in runc_root.iterdir() if (p / "state.json").exists()]
    netns = Path("/run/netns")
    if netns.exists():
        found += [f"netns {p.name}" for p in netns.iterdir() if p.name.startswith("dy-build-")]
    tmp = data / "snapshots" / ".tmp"
    if tmp.exists():
        found += [f"snapshot tmp {p.name}" for p in tmp.iterdir()]
    ingest = data / "content" / "ingest"
    if ingest.exists():
        found += [f"ingest {p.name}" for p in ingest.iterdir() if p.name.startswith(".build-")]
    return found


class Net:
    """This test's bridge, subnet and nft table."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        third = random.randrange(250)
        self.bridge = f"dyb{tag}"
        self.table = f"dyb{tag}"
        self.subnet = f"10.233.{third}.0/25"
        self.pool = f"10.233.{third}.128/25"

    def config(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f'network_bridge = "{self.bridge}"\nnetwork_subnet = "{self.subnet}"\n'
            f'network_pool = "{self.pool}"\nnetwork_name_prefix = "dyb-"\n'
            f'network_nft_table = "{self.table}"\n'
        )
        return path

    def teardown(self) -> None:
        out = sh("ip", "-o", "link", "show", "master", self.bridge).stdout
        for line in out.splitlines():
            if ":" in line:
                sh("ip", "link", "del", line.split(":")[1].strip().split("@")[0])
        sh("ip", "link", "del", self.bridge)
        sh("nft", "delete", "table", "inet", self.table)


@pytest.fixture
def net() -> Iterator[Net]:
    n = Net()
    try:
        yield n
    finally:
        n.teardown()


@pytest.fixture
def build_agent_factory(
    agent_factory: Callable[..., AgentProcess], net: Net, tmp_path: Path
) -> Callable[..., AgentProcess]:
    def make(name: str = "builder", extra_args: tuple[str, ...] = ()) -> AgentProcess:
        config = net.config(tmp_path / f"{name}.toml")
        return agent_factory(name, extra_args=["--config", str(config), *extra_args])  # type: ignore[no-any-return]

    return make


@pytest.fixture
def build_agent(build_agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    return build_agent_factory()


@pytest.fixture
def bcli(fleet_pki: FleetPki, build_agent: AgentProcess) -> Iterator[Cli]:
    """The CLI against `build_agent` (unix socket); removes the containers it started at teardown."""

    def run(*args: str, host: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("timeout", 120)
        return run_cli(fleet_pki.config_dir, *args, host=host or build_agent.unix_target, **kwargs)

    yield run
    if build_agent.running:
        ids = run("ps", "-aq").stdout.split()
        if ids:
            run("rm", "-f", *ids)


@pytest.fixture
def busybox(bcli: Cli, tmp_path: Path) -> str:
    """`busybox:test` in the agent's store, imported from a busybox-static rootfs."""
    ok(bcli("import", str(busybox_rootfs_tar(tmp_path / "busybox.tar")), BUSYBOX))
    return BUSYBOX


@pytest.fixture
def context_dir(tmp_path: Path) -> Callable[..., Path]:
    """`context_dir("name", dockerfile, {"path": content})`: a build context directory."""

    def make(name: str, dockerfile: str, files: dict[str, str | bytes] | None = None) -> Path:
        ctx = tmp_path / "contexts" / name
        ctx.mkdir(parents=True)
        (ctx / "Dockerfile").write_text(dockerfile)
        for rel, content in (files or {}).items():
            path = ctx / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
        return ctx

    return make
