"""Registry mistakes a user makes, and what the CLI says about them: a real agent process, real
`docker-registry` servers on 127.0.0.1, the `dockyard` CLI.

* a plain-HTTP registry not listed as insecure: the error blames the registry and names `--insecure-registry`,
  never "cannot reach the agent" (the agent was reached; the registry was not spoken to over TLS);
* token auth whose realm is plain HTTP: allowed for a registry listed as insecure when the token server is on
  the registry's own host (as docker, podman and skopeo allow it) or is itself listed as insecure; refused
  otherwise, naming the flag that allows it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli
from tests.support.images import busybox_rootfs_tar
from tests.support.registry import PASSWORD, USER, running_registry

pytestmark = [pytest.mark.root, pytest.mark.timeout(180)]

Cli = Callable[..., subprocess.CompletedProcess[str]]


def start_agent(agent_factory: Callable[..., AgentProcess], name: str, insecure: list[str]) -> AgentProcess:
    args: list[str] = []
    for host in insecure:
        args += ["--insecure-registry", host]
    return agent_factory(name, extra_args=args)  # type: ignore[no-any-return]


def cli_for(fleet_pki: FleetPki, target: str) -> Cli:
    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(fleet_pki.config_dir, *args, host=target, **kwargs)

    return run


def test_plain_http_registry_not_listed_as_insecure_is_blamed_not_the_agent(
    agent_factory: Callable[..., AgentProcess], fleet_pki: FleetPki, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "registry", "http") as registry:
        agent = start_agent(agent_factory, "agent", [])
        want = (
            f"registry {registry.host} does not speak TLS (plain HTTP?); if it is meant to, add it with "
            f"--insecure-registry {registry.host}"
        )
        for target in (agent.unix_target, agent.tcp_target):  # the unix socket and mTLS over TCP
            cli = cli_for(fleet_pki, target)
            for args in (("pull", f"{registry.host}/test/app:1"), ("login", registry.host, "-u", USER)):
                result = cli(*args, "--password-stdin", input=b"pw\n") if args[0] == "login" else cli(*args)
                assert result.returncode != 0
                assert want in result.stderr, (target, args, result.stderr)
                assert "cannot reach the agent" not in result.stderr
                assert "TLS failure" not in result.stderr
                assert result.stderr.count("error: ") == 1
        # an agent that is really not there is still diagnosed as such
        agent.stop()
        gone = cli_for(fleet_pki, agent.unix_target)("pull", f"{registry.host}/test/app:1")
        assert gone.returncode != 0
        assert "no agent socket" in gone.stderr or "cannot reach the agent" in gone.stderr, gone.stderr


def _push_and_pull(cli: Cli, host: str, tmp_path: Path) -> None:
    assert cli("import", str(busybox_rootfs_tar(tmp_path / "bb.tar")), "bb:1").returncode == 0
    ref = f"{host}/private/bb:1"
    assert cli("tag", "bb:1", ref).returncode == 0
    pushed = cli("push", ref)
    assert pushed.returncode == 0, pushed.stderr
    assert cli("rmi", ref, "bb:1").returncode == 0
    pulled = cli("pull", ref)
    assert pulled.returncode == 0, pulled.stderr


def test_token_realm_over_plain_http_on_the_registrys_host(
    agent_factory: Callable[..., AgentProcess], fleet_pki: FleetPki, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "registry", "token-http") as registry:
        assert registry.issuer is not None and registry.issuer.realm.startswith("http://127.0.0.1:")
        agent = start_agent(agent_factory, "agent", [registry.host])
        cli = cli_for(fleet_pki, agent.unix_target)
        login = cli("login", registry.host, "-u", USER, "--password-stdin", input=f"{PASSWORD}\n".encode())
        assert login.returncode == 0, login.stderr
        assert "Login Succeeded" in login.stdout
        assert any(r.user == USER and r.status == 200 for r in registry.issuer.requests)
        _push_and_pull(cli, registry.host, tmp_path)

        wrong = cli("login", registry.host, "-u", USER, "--password-stdin", input=b"wrong\n")
        assert wrong.returncode != 0
        assert f"refused the credentials of user '{USER}'" in wrong.stderr


def test_token_realm_over_plain_http_on_another_host_needs_it_listed(
    agent_factory: Callable[..., AgentProcess], fleet_pki: FleetPki, tmp_path: Path
) -> None:
    with running_registry(tmp_path / "registry", "token-http", realm_host="localhost") as registry:
        assert registry.issuer is not None
        realm_host = registry.issuer.host  # localhost:PORT: not the registry's host (127.0.0.1)
        agent = start_agent(agent_factory, "strict", [registry.host])
        cli = cli_for(fleet_pki, agent.unix_target)
        refused = cli("login", registry.host, "-u", USER, "--password-stdin", input=f"{PASSWORD}\n".encode())
        assert refused.returncode != 0
        assert (
            f"refusing to send credentials over plain HTTP to the token server {realm_host}: "
            f"list it with --insecure-registry {realm_host}"
        ) in refused.stderr, refused.stderr
        assert not any(r.user is not None for r in registry.issuer.requests)  # no password went out
        agent.stop()

        listed = start_agent(agent_factory, "listed", [registry.host, realm_host])
        cli = cli_for(fleet_pki, listed.unix_target)
        login = cli("login", registry.host, "-u", USER, "--password-stdin", input=f"{PASSWORD}\n".encode())
        assert login.returncode == 0, login.stderr
        _push_and_pull(cli, registry.host, tmp_path)
