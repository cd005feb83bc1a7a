"""Real agents over mTLS with real client certificates of every role, for the authz and audit tests.

`SecureFleet` holds the fleet CA (a controller config dir) and makes client config dirs with a grant
(`identity("olga", Role.OPERATOR, allow=...)`); `secure_agent(...)` starts an agent with TLS, its own
cgroup parent and labels, and the busybox image imported over the unix socket. Teardown removes the
containers through the agent and sweeps what might be left.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from agent.server.permissions import Grant, Permission, Role
from controller import pki
from tests.support.agent import AgentProcess, FleetPki, config_text, run_cli
from tests.support.images import busybox_rootfs_tar
from tests.support.sweep import sweep_agent

IMAGE = "busybox:test"


@dataclass
class SecureAgent:
    agent: AgentProcess
    name: str
    cgroup_parent: str

    @property
    def tcp(self) -> str:
        return self.agent.tcp_target

    @property
    def unix(self) -> str:
        return self.agent.unix_target


@dataclass
class SecureFleet:
    root: Path
    pki: FleetPki
    busybox: Path
    agents: list[SecureAgent] = field(default_factory=list)

    @property
    def admin_dir(self) -> Path:
        return self.pki.config_dir

    def identity(
        self,
        name: str,
        role: Role | None,
        allow: tuple[Permission, ...] = (),
        scopes: tuple[tuple[tuple[str, str], ...], ...] = (),
    ) -> Path:
        """A controller config dir holding a client certificate for `name` (role None: no grant)."""
        out = self.root / "identities" / name
        grant = None if role is None else Grant(role, frozenset(allow), scopes)
        pki.issue_client(self.pki.config_dir, name, out, grant=grant)
        return out

    def cli(self, identity: Path, *args: str, host: str, **kw: Any) -> Any:
        return run_cli(identity, *args, host=host, **kw)

    def start_agent(self, name: str, labels: dict[str, str] | None = None, **config: Any) -> SecureAgent:
        root = self.root / name
        root.mkdir(parents=True)
        parent = f"/dytest-{secrets.token_hex(4)}"
        cfg = root / "agent.toml"
        text = config_text({"cgroup_parent": parent, **config})
        if labels:
            text += "labels = { " + ", ".join(f'"{k}" = "{v}"' for k, v in labels.items()) + " }\n"
        cfg.write_text(text)
        tls = self.pki.agent_tls(root / "tls", name=name)
        agent = AgentProcess(root=root, tls_dir=tls, extra_args=["--config", str(cfg)])
        made = SecureAgent(agent, name, parent)
        self.agents.append(made)
        agent.start()
        done = run_cli(self.admin_dir, "import", str(self.busybox), IMAGE, host=made.unix, timeout=120)
        assert done.returncode == 0, done.stderr
        return made

    def close(self) -> None:
        for a in self.agents:
            try:
                if a.agent.running:
                    with contextlib.suppress(Exception):
                        ids = run_cli(self.admin_dir, "ps", "-aq", host=a.unix, timeout=30).stdout.split()
                        if ids:
                            run_cli(self.admin_dir, "rm", "-f", *ids, host=a.unix, timeout=120)
                sweep_agent(a.agent, a.cgroup_parent)
            finally:
                a.agent.release()


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return busybox_rootfs_tar(tmp_path_factory.mktemp("images") / "busybox.tar")


@pytest.fixture
def fleet(tmp_path: Path, busybox_tar: Path, request: pytest.FixtureRequest) -> Iterator[SecureFleet]:
    made = SecureFleet(tmp_path, FleetPki.create(tmp_path), busybox_tar)
    try:
        yield made
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            for a in made.agents:
                print(f"\n----- agent log {a.name} -----\n{a.agent.log_text()[-8000:]}")
        made.close()


def channel(identity: Path, port: int) -> grpc.aio.Channel:
    """An mTLS channel to 127.0.0.1:port with the client certificate of `identity`."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(identity / "ca.pem").read_bytes(),
        private_key=(identity / "client-key.pem").read_bytes(),
        certificate_chain=(identity / "client.pem").read_bytes(),
    )
    return grpc.aio.secure_channel(f"127.0.0.1:{port}", creds)


Caller = Callable[..., Any]
