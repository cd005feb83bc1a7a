"""Scopes by label on two real agents, and host-power options of create refused to a deployer."""

from __future__ import annotations

import pytest

from agent.server.permissions import Permission, Role
from tests.integration.security.conftest import IMAGE, SecureFleet

pytestmark = pytest.mark.root


def test_a_scoped_certificate_works_only_on_matching_hosts(fleet: SecureFleet) -> None:
    lab = fleet.start_agent("a1", labels={"site": "lab"})
    north = fleet.start_agent("a2", labels={"site": "north"})
    alice = fleet.identity("alice", Role.DEPLOYER, scopes=((("site", "lab"),),))
    done = fleet.cli(alice, "volume", "create", "scoped", host=f"{lab.tcp},{north.tcp}")
    assert done.returncode != 0
    assert "scoped" in done.stdout, done.stdout
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {north.tcp}: certificate alice is scoped to site=lab; this host is site=north"]
    assert "scoped" in fleet.cli(fleet.admin_dir, "volume", "ls", "-q", host=lab.unix).stdout.split()
    assert "scoped" not in fleet.cli(fleet.admin_dir, "volume", "ls", "-q", host=north.unix).stdout.split()


def test_a_group_scope_is_resolved_to_its_hosts_at_issue_time(fleet: SecureFleet) -> None:
    a1 = fleet.start_agent("a1")
    a2 = fleet.start_agent("a2")
    (fleet.admin_dir / "inventory.toml").write_text(
        f'[hosts.a1]\naddress = "127.0.0.1"\nport = {a1.agent.port}\n'
        f'[hosts.a2]\naddress = "127.0.0.1"\nport = {a2.agent.port}\n'
        '[groups]\nedge = ["a1"]\n'
    )
    out = fleet.root / "bob"
    issue = ["pki", "issue-client", "bob", "--role", "viewer", "--scope", "@edge", "--out", str(out)]
    done = fleet.cli(fleet.admin_dir, *issue, host=None)
    assert done.returncode == 0, done.stderr
    assert "grant: viewer @host=a1" in done.stdout
    inspected = fleet.cli(fleet.admin_dir, "pki", "inspect", str(out / "client.pem"), host=None).stdout
    assert "dockyard:scope:host=a1" in inspected and "dockyard:role:viewer" in inspected
    assert fleet.cli(out, "info", host=a1.tcp).returncode == 0
    done = fleet.cli(out, "info", host=a2.tcp)
    scoped = "certificate bob is scoped to host=a1; this host is host=a2"
    assert done.stderr.strip() == f"error: {a2.tcp}: {scoped}"


HOST_POWER = [
    (["-v", "/:/host"], "bind mount /"),
    (["--privileged"], "--privileged"),
    (["--cap-add", "SYS_ADMIN"], "--cap-add SYS_ADMIN"),
    (["--network", "host"], "--network host"),
]


def test_host_power_options_need_admin_or_allow_host(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    dee = fleet.identity("dee", Role.DEPLOYER)
    hosty = fleet.identity("hosty", Role.DEPLOYER, allow=(Permission.HOST,))
    for n, (flags, what) in enumerate(HOST_POWER):
        done = fleet.cli(dee, "create", "--name", f"d{n}", *flags, IMAGE, "true", host=a.tcp)
        assert done.returncode != 0
        refusal = f"role deployer may not use host-power options ({what}): needs admin or --allow host"
        assert done.stderr.strip() == f"error: {a.tcp}: {refusal}", done.stderr
        for who, identity in (("admin", fleet.admin_dir), ("hosty", hosty)):
            done = fleet.cli(identity, "create", "--name", f"{who}{n}", *flags, IMAGE, "true", host=a.tcp)
            assert done.returncode == 0, f"{who} {flags}: {done.stderr}"
    names = fleet.cli(fleet.admin_dir, "ps", "-a", "--format", "{{.Names}}", host=a.unix).stdout.split()
    assert not [n for n in names if n.startswith("d")]  # nothing of the refused creates exists
    # named volumes, tmpfs and default capabilities are not host power
    flags = ["-v", "data:/data", "--tmpfs", "/run", "--cap-add", "NET_BIND_SERVICE"]
    done = fleet.cli(dee, "create", "--name", "plain", *flags, IMAGE, "true", host=a.tcp)
    assert done.returncode == 0, done.stderr
