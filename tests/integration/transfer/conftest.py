"""Fixtures for transfer tests: several real agents on 127.0.0.1, each a "host" of its own.

Every host is a separate `dockyard-agent` process with its own data root, unix socket, cgroup parent and
mTLS listener on 127.0.0.1 (its certificate from the test fleet CA), reached by the CLI as
`NAME=127.0.0.1:PORT` like any fleet host, and has the busybox image imported. Teardown removes every
container through the agent, stops it, then kills whatever its containers left (conmon and container
processes, cgroups) and unmounts anything under its data root, even when the test failed.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, config_text, run_cli, wait_for
from tests.support.images import busybox_rootfs_tar
from tests.support.sweep import mounts_under, sweep_agent

pytestmark = pytest.mark.root

IMAGE = "busybox:test"


@dataclass
class Host:
    """One agent under test, seen as a fleet host."""

    name: str
    agent: AgentProcess
    config_dir: Path
    cgroup_parent: str

    @property
    def target(self) -> str:
        """How the CLI names it: NAME=127.0.0.1:PORT (mutual TLS)."""
        return f"{self.name}={self.agent.tcp_target}"

    @property
    def data_root(self) -> Path:
        return self.agent.data_root

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """The CLI against this host only (over its unix socket)."""
        return run_cli(self.config_dir, *args, host=self.agent.unix_target, **kwargs)

    def ok(self, *args: str, **kwargs: Any) -> str:
        done = self.cli(*args, **kwargs)
        assert done.returncode == 0, f"dockyard {' '.join(args)} on {self.name} failed: {done.stderr}"
        return done.stdout

    def inspect(self, ref: str) -> dict[str, Any]:
        data: list[dict[str, Any]] = json.loads(self.ok("inspect", ref))
        return data[0]

    def containers(self) -> list[str]:
        return _names(self)

    def exec(self, ctr: str, *argv: str) -> str:
        return self.ok("exec", ctr, *argv)

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.agent.events() if e.get("event") == name]


def _names(host: Host) -> list[str]:
    listed = json.loads(host.ok("--format", "json", "ps", "-a"))
    return [str(c["name"]) for c in listed]


def sweep(host: Host) -> None:
    """Remove everything the host's containers may have left, whatever state the test ended in."""
    if host.agent.running:
        with contextlib.suppress(Exception):
            names = _names(host)
            if names:
                host.cli("rm", "-f", *names, timeout=120)
    sweep_agent(host.agent, host.cgroup_parent)


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("transfer-images") / "busybox.tar")


HostFactory = Callable[..., Host]


@pytest.fixture
def hosts(tmp_path: Path, busybox_tar: Path, request: pytest.FixtureRequest) -> Iterator[HostFactory]:
    """`hosts("a", "b")` starts one agent per name (busybox:test imported unless `image=False`)."""
    pki = FleetPki.create(tmp_path)
    made: list[Host] = []

    def make(*names: str, image: bool = True, extra_args: tuple[str, ...] = ()) -> list[Host]:
        out = []
        for name in names:
            root = tmp_path / name
            root.mkdir(parents=True)
            parent = f"/dytest-{secrets.token_hex(4)}"
            cfg = root / "agent.toml"
            cfg.write_text(config_text({"cgroup_parent": parent}))
            agent = AgentProcess(
                root=root,
                tls_dir=pki.agent_tls(root / "tls", name=name),
                extra_args=["--config", str(cfg), *extra_args],
            )
            host = Host(name, agent, pki.config_dir, parent)
            made.append(host)
            agent.start()
            out.append(host)
        if image:
            for host in out:
                host.ok("import", str(busybox_tar), IMAGE, timeout=120)
        return out

    try:
        yield make
    finally:
        failed = any(
            getattr(request.node, f"rep_{w}", None) is not None and getattr(request.node, f"rep_{w}").failed
            for w in ("setup", "call")
        )
        for host in made:
            try:
                sweep(host)
            finally:
                if failed:
                    print(f"\n----- agent log {host.name} -----\n{host.agent.log_text()[-15000:]}")


def cli_for(hosts: list[Host]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """The CLI with the hosts' controller config (no default -H: commands name their hosts)."""
    config_dir = hosts[0].config_dir

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(config_dir, *args, **kwargs)

    return run


__all__ = ["IMAGE", "Host", "HostFactory", "cli_for", "mounts_under", "wait_for"]
