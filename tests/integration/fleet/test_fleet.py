"""The fleet end to end: 5 hosts (netns + mount ns, own sshd), bootstrapped over SSH, then fanned out to.

One module-scoped fleet keeps the suite fast: the wheelhouse is built once, the hosts are bootstrapped
once, and each test restores what it broke (sshd, host keys, agents) in `finally`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from controller import pki
from controller.bootstrap import wheelhouse as wh_mod
from tests.support.agent import run_cli
from tests.support.netns_hosts import Fleet, TestHost, fleet, wait_until

pytestmark = [pytest.mark.root, pytest.mark.timeout(600)]

N_HOSTS = 5
SUPERVISOR_PID = "/run/dockyard/supervisor.pid"
AGENT_PID = "/run/dockyard/agent.pid"


@dataclass
class Env:
    fleet: Fleet
    config_dir: Path
    wheelhouse: Path
    first: subprocess.CompletedProcess[str]
    first_seconds: float

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return run_cli(self.config_dir, *args, timeout=timeout)

    def bootstrap(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.cli(*args, "bootstrap", "--wheelhouse", str(self.wheelhouse), timeout=300)

    def all_hosts(self) -> list[str]:
        return [a for h in self.fleet.hosts for a in ("-H", f"{h.name}={h.address}")]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    base = tmp_path_factory.mktemp("fleet")
    config_dir = base / "controller"
    pki.init(config_dir)
    import asyncio

    wheelhouse = asyncio.run(wh_mod.build(base / "wheelhouse-cache", *wh_mod.local_platform())).path
    with fleet(N_HOSTS) as f:
        try:
            e = Env(f, config_dir, wheelhouse, subprocess.CompletedProcess([], 0), 0.0)
            start = time.monotonic()
            e.first = e.cli(
                *e.all_hosts(),
                "bootstrap",
                "--wheelhouse",
                str(wheelhouse),
                "--ssh-key",
                str(f.client_key),
                "--accept-new-host-keys",
                "--label",
                "site=lab",
                timeout=300,
            )
            e.first_seconds = time.monotonic() - start
            yield e
        finally:
            for h in f.hosts:
                log = h.private("/var/lib/dockyard/agent.log")
                if log.exists():
                    print(f"\n----- {h.name} agent log (tail) -----\n{log.read_text()[-3000:]}")


def agent_pid(host: TestHost) -> int | None:
    return host.read_pidfile(AGENT_PID)


def test_unknown_host_keys_are_refused(env: Env, tmp_path: Path) -> None:
    config_dir = tmp_path / "other-controller"
    skip = shutil.ignore_patterns("known_hosts", "inventory.toml")
    shutil.copytree(env.config_dir, config_dir, ignore=skip)
    host = env.fleet[0]
    r = run_cli(
        config_dir,
        "-H",
        f"{host.name}={host.address}",
        "bootstrap",
        "--wheelhouse",
        str(env.wheelhouse),
        "--ssh-key",
        str(env.fleet.client_key),
    )
    assert r.returncode == 1
    assert f"error: {host.name}: ssh root@{host.address}: unknown host key" in r.stderr
    assert "--accept-new-host-keys" in r.stderr
    assert not (config_dir / "known_hosts").exists()
    assert not (config_dir / "inventory.toml").exists()


def test_bootstrap_from_nothing_in_parallel(env: Env) -> None:
    r = env.first
    assert r.returncode == 0, r.stderr
    assert f"{N_HOSTS} ok, 0 failed" in r.stderr
    for h in env.fleet.hosts:
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{h.name} | "))
        for step in ("install agent", "enroll", "write config", "write service", "start agent", "recorded"):
            assert step in line
        # Enrollment: the key was made on the host and stayed there; the controller has none.
        key = h.private("/etc/dockyard/tls/agent-key.pem")
        assert key.stat().st_mode & 0o777 == 0o600
        assert not h.private("/etc/dockyard/tls/agent-key.pem.new").exists()
    assert not list(env.config_dir.rglob("agent-key.pem"))
    known = (env.config_dir / "known_hosts").read_text().splitlines()
    assert sorted(line.split()[0] for line in known) == sorted(h.address for h in env.fleet.hosts)
    print(f"bootstrap of {N_HOSTS} hosts in parallel: {env.first_seconds:.1f}s")
    assert env.first_seconds < 60


def test_info_answers_from_every_host(env: Env) -> None:
    r = env.cli("--format", "json", "-H", "all", "info")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert sorted(doc) == sorted(h.name for h in env.fleet.hosts)
    assert all(d["data_root"] == "/var/lib/dockyard" and d["agent_version"] for d in doc.values())
    assert r.stderr.strip() == f"{N_HOSTS} ok, 0 failed"

    r = env.cli("-H", "dyf-h1,dyf-h3", "ping")
    assert r.returncode == 0, r.stderr
    assert [line.split(" | ")[0] for line in r.stdout.splitlines()] == ["dyf-h1", "dyf-h3"]
    assert all("pong" in line for line in r.stdout.splitlines())

    r = env.cli("--selector", "site=lab", "hosts")
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert sorted(row[0] for row in rows) == [h.name for h in env.fleet.hosts]
    assert all(row[2] == "up" for row in rows)

    r = env.cli("-H", "dyf-h2", "info")  # one host: output exactly as for a single agent
    assert r.returncode == 0 and r.stdout.startswith("Hostname:") and "ok," not in r.stderr


def test_rerun_changes_nothing(env: Env) -> None:
    pids = {h.name: agent_pid(h) for h in env.fleet.hosts}
    r = env.bootstrap("-H", "all")
    assert r.returncode == 0, r.stderr
    lines = sorted(x for x in r.stdout.splitlines() if " | " in x and "note:" not in x)
    assert len(lines) == N_HOSTS and all(" | no changes" in x for x in lines), r.stdout
    assert {h.name: agent_pid(h) for h in env.fleet.hosts} == pids


def test_stopped_sshd_fails_only_that_host(env: Env) -> None:
    host = env.fleet[3]
    host.stop_sshd()
    try:
        r = env.bootstrap("-H", "all")
        assert r.returncode == 1
        assert f"{N_HOSTS - 1} ok, 1 failed" in r.stderr
        assert f"error: {host.name}: ssh root@{host.address}" in r.stderr
        assert sum(" | no changes" in x for x in r.stdout.splitlines()) == N_HOSTS - 1
    finally:
        host.start_sshd()


def test_changed_host_key_is_refused_loudly(env: Env) -> None:
    host = env.fleet[4]
    old = host.replace_host_key()
    try:
        wh = str(env.wheelhouse)
        r = env.cli("-H", host.name, "bootstrap", "--wheelhouse", wh, "--accept-new-host-keys")
        assert r.returncode == 1
        assert "HOST KEY CHANGED" in r.stderr and "may be an attack" in r.stderr
        assert (env.config_dir / "known_hosts").read_text().count(host.address) == 1
    finally:
        host.restore_host_key(old)


def test_dead_and_hung_agents_are_reported_within_the_timeout(env: Env) -> None:
    dead, hung = env.fleet[1], env.fleet[2]
    sup = dead.read_pidfile(SUPERVISOR_PID)
    pid_dead, pid_hung = agent_pid(dead), agent_pid(hung)
    assert sup and pid_dead and pid_hung
    os.kill(sup, signal.SIGKILL)  # no restart: the supervisor goes first
    os.kill(pid_dead, signal.SIGKILL)
    os.kill(pid_hung, signal.SIGSTOP)  # accepts TCP (kernel backlog) but never answers
    try:
        start = time.monotonic()
        r = env.cli("--timeout", "2", "-H", "all", "info")
        elapsed = time.monotonic() - start
        assert r.returncode == 1
        assert f"{N_HOSTS - 2} ok, 2 failed" in r.stderr
        assert f"error: {dead.name}: " in r.stderr and "refused" in r.stderr
        assert f"error: {hung.name}: timed out after 2s" in r.stderr
        r = env.cli("--timeout", "2", "--format", "json", "-H", "all", "ping")
        doc = json.loads(r.stdout)
        assert sorted(doc) == [h.name for h in env.fleet.hosts]
        assert "error" in doc[dead.name] and doc[env.fleet[0].name]["ok"] is True
        assert elapsed < 2 + 3.0, f"fan-out took {elapsed:.1f}s with a 2s per-host timeout"
        assert env.cli("--timeout", "2", "--max-fail", "2", "-H", "all", "ping").returncode == 0
        assert env.cli("--timeout", "2", "--max-fail", "20%", "-H", "all", "ping").returncode == 1
    finally:
        os.kill(pid_hung, signal.SIGCONT)
    # Bootstrap heals the dead host: it only starts the agent again.
    r = env.bootstrap("-H", dead.name)
    assert r.returncode == 0, r.stderr
    assert f"{dead.name} | changed: start agent" in r.stdout
    wait_until(lambda: env.cli("-H", "all", "ping").returncode == 0, 20, "every agent to answer")


def test_upgrade_replaces_the_agent_in_place(env: Env, tmp_path: Path) -> None:
    def build_with_marker(name: str, content: str) -> Path:
        wheelhouse = tmp_path / name
        shutil.copytree(env.wheelhouse, wheelhouse)
        with zipfile.ZipFile(wheelhouse / "dyfmarker-1.0-py3-none-any.whl", "w") as z:
            z.writestr("dyfmarker/__init__.py", content)  # a different build: the digest changes
        return wheelhouse

    newer = build_with_marker("wheelhouse", "BUILD = 1\n")
    host = env.fleet[0]
    before = agent_pid(host)
    r = env.cli("-H", host.name, "bootstrap", "--wheelhouse", str(newer), timeout=300)
    assert r.returncode == 0, r.stderr
    assert "note:" in r.stdout and "--upgrade" in r.stdout and "no changes" in r.stdout
    r = env.cli("-H", host.name, "bootstrap", "--wheelhouse", str(newer), "--upgrade", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "install agent" in r.stdout and "restart agent" in r.stdout
    after = agent_pid(host)
    assert after and after != before
    assert host.private("/opt/dockyard/installed").read_text().strip() == wh_mod.digest_of(newer)
    assert env.cli("-H", host.name, "ping").returncode == 0
    # A rebuild whose wheel keeps its file name (as the project's own wheel does) is uploaded and installed.
    rebuilt = build_with_marker("rebuilt", "BUILD = 2\n")
    r = env.cli("-H", host.name, "bootstrap", "--wheelhouse", str(rebuilt), "--upgrade", timeout=300)
    assert r.returncode == 0, r.stderr
    marker = "dyfmarker-1.0-py3-none-any.whl"
    uploaded = host.private(f"/opt/dockyard/wheelhouse/{marker}").read_bytes()
    assert uploaded == (rebuilt / marker).read_bytes()
    assert host.private("/opt/dockyard/installed").read_text().strip() == wh_mod.digest_of(rebuilt)
    # And back to the suite's build, so later runs see the fleet as bootstrapped.
    r = env.cli("-H", host.name, "bootstrap", "--wheelhouse", str(env.wheelhouse), "--upgrade", timeout=300)
    assert r.returncode == 0, r.stderr


def served_certificate(env: Env, address: str) -> bytes:
    """The DER certificate the agent presents to a new mTLS handshake."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(env.config_dir / "ca.pem")
    ctx.load_cert_chain(env.config_dir / "client.pem", env.config_dir / "client-key.pem")
    with socket.create_connection((address, 7443), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def test_pki_rotate_renews_and_hot_reloads(env: Env) -> None:
    hosts = [env.fleet[1], env.fleet[2]]
    pids = [agent_pid(h) for h in hosts]
    before = [h.private("/etc/dockyard/tls/agent.pem").read_bytes() for h in hosts]
    key_before = hosts[0].private("/etc/dockyard/tls/agent-key.pem").read_bytes()
    r = env.cli("-H", ",".join(h.name for h in hosts), "pki", "rotate", "--days", "30")
    assert r.returncode == 0, r.stderr
    assert "2 ok, 0 failed" in r.stderr
    for h, old, pid in zip(hosts, before, pids, strict=True):
        assert f"{h.name} | rotated: " in r.stdout and f"CN={h.name}" in r.stdout
        new = h.private("/etc/dockyard/tls/agent.pem").read_bytes()
        assert new != old
        cert = x509.load_pem_x509_certificate(new)
        assert served_certificate(env, h.address) == cert.public_bytes(serialization.Encoding.DER)
        assert agent_pid(h) == pid  # hot reload, no restart
        assert not h.private("/etc/dockyard/tls/agent-key.pem.new").exists()
    assert hosts[0].private("/etc/dockyard/tls/agent-key.pem").read_bytes() != key_before
    assert env.cli("-H", "all", "ping").returncode == 0


def test_bootstrap_pushes_the_revocation_list(env: Env, tmp_path: Path) -> None:
    hosts = [env.fleet[0], env.fleet[4]]
    leaver = tmp_path / "leaver"
    pki.issue_client(env.config_dir, "leaver", leaver)
    assert env.cli("pki", "revoke", "leaver").returncode == 0
    names = ",".join(h.name for h in hosts)
    r = env.bootstrap("-H", names)
    assert r.returncode == 0, r.stderr
    crl = (env.config_dir / "crl.pem").read_bytes()
    for h in hosts:
        line = next(x for x in r.stdout.splitlines() if x.startswith(f"{h.name} | "))
        assert "push revocation list" in line, line
        assert h.private("/etc/dockyard/tls/crl.pem").read_bytes() == crl
        refused = run_cli(leaver, "ping", host=f"{h.address}:7443")
        assert refused.returncode != 0 and "(CN=leaver) is revoked" in refused.stderr, refused.stderr
    again = env.bootstrap("-H", names)
    assert again.returncode == 0 and "push revocation list" not in again.stdout, again.stdout
