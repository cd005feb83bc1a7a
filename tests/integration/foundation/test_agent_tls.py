"""The foundation end to end: a real agent process, the real CLI, real certificates from `dockyard pki`."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import socket
import ssl
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from cryptography import x509

from agent.api.v1 import system_pb2, system_pb2_grpc
from controller import pki
from tests.support.agent import AgentProcess, FleetPki, run_cli, wait_for


def _peer_cn(port: int, ca: Path, client_dir: Path) -> str:
    """Handshake with the agent and return its certificate's CN (what a new connection sees)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.load_cert_chain(str(client_dir / "client.pem"), str(client_dir / "client-key.pem"))
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    cert = x509.load_der_x509_certificate(der)
    return str(cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


def _raw_ping(port: int, ca: bytes, cert: bytes | None, key: bytes | None) -> grpc.StatusCode:
    """Ping with explicit credentials, bypassing the CLI's own checks: what does the agent itself allow?"""
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        try:
            system_pb2_grpc.SystemStub(channel).Ping(system_pb2.PingRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_info_over_mtls_and_unix_socket(fleet_pki: FleetPki, agent: AgentProcess) -> None:
    over_tcp = run_cli(fleet_pki.config_dir, "--format", "json", "info", host=agent.tcp_target)
    assert over_tcp.returncode == 0, over_tcp.stderr
    info = json.loads(over_tcp.stdout)
    assert info["data_root"] == str(agent.data_root)
    assert info["cpus"] >= 1 and info["memory_bytes"] > 0
    assert {r["name"] for r in info["runtimes"]} == {"runc", "crun", "conmon"}

    over_unix = run_cli(fleet_pki.config_dir, "info", host=agent.unix_target)
    assert over_unix.returncode == 0, over_unix.stderr
    assert f"Data Root: {agent.data_root}" in over_unix.stdout

    version = run_cli(fleet_pki.config_dir, "--format", "json", "version", host=agent.tcp_target)
    assert json.loads(version.stdout)["agent"]["api_version"] == "agent.api.v1"

    # The agent logs one rpc.finished line per call, with the client certificate's CN as the peer.
    finished = [e for e in agent.events() if e.get("event") == "rpc.finished"]
    assert any(e["peer"] == "controller" and e["rpc"].endswith("/Info") for e in finished)
    assert any(e["peer"] == "local" for e in finished)


def test_unix_socket_is_private(agent: AgentProcess) -> None:
    assert agent.socket.stat().st_mode & 0o777 == 0o660


def test_no_client_certificate_is_refused(fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path) -> None:
    ca = (fleet_pki.config_dir / "ca.pem").read_bytes()
    assert _raw_ping(agent.port, ca, None, None) == grpc.StatusCode.UNAVAILABLE

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(fleet_pki.config_dir / "ca.pem", bare / "ca.pem")
    result = run_cli(bare, "info", host=agent.tcp_target)
    assert result.returncode != 0
    assert result.stderr.startswith("error: ") and "no client TLS identity" in result.stderr
    assert "Traceback" not in result.stderr


def test_client_certificate_from_another_ca_is_refused(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    other = FleetPki.create(tmp_path / "other")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(fleet_pki.config_dir / "ca.pem", mixed / "ca.pem")
    shutil.copy(other.config_dir / "client.pem", mixed / "client.pem")
    shutil.copy(other.config_dir / "client-key.pem", mixed / "client-key.pem")

    code = _raw_ping(
        agent.port,
        (fleet_pki.config_dir / "ca.pem").read_bytes(),
        (mixed / "client.pem").read_bytes(),
        (mixed / "client-key.pem").read_bytes(),
    )
    assert code == grpc.StatusCode.UNAVAILABLE
    result = run_cli(mixed, "info", host=agent.tcp_target)
    assert result.returncode != 0
    assert "not issued by the fleet CA" in result.stderr


def test_expired_client_certificate_is_refused(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    ca = pki.load_ca(fleet_pki.config_dir)
    key = pki.new_key()
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    cert = pki.sign(ca, key.public_key(), common_name="old", role=pki.ROLE_CLIENT, days=2, not_before=past)
    expired = tmp_path / "expired"
    pki.write_public(expired / "ca.pem", ca.cert_pem)
    pki.write_public(expired / "client.pem", pki.cert_pem(cert))
    pki.write_private(expired / "client-key.pem", pki.key_pem(key))

    assert (
        _raw_ping(agent.port, ca.cert_pem, pki.cert_pem(cert), pki.key_pem(key))
        == grpc.StatusCode.UNAVAILABLE
    )
    result = run_cli(expired, "info", host=agent.tcp_target)
    assert result.returncode != 0
    assert "expired" in result.stderr


def test_agent_certificate_cannot_act_as_client(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    stolen = tmp_path / "stolen"
    pki.issue_agent(fleet_pki.config_dir, "impostor", ["127.0.0.1"], stolen)
    ca = (stolen / "ca.pem").read_bytes()
    code = _raw_ping(
        agent.port, ca, (stolen / "agent.pem").read_bytes(), (stolen / "agent-key.pem").read_bytes()
    )
    assert code == grpc.StatusCode.UNAVAILABLE

    (stolen / "agent.pem").rename(stolen / "client.pem")
    (stolen / "agent-key.pem").rename(stolen / "client-key.pem")
    result = run_cli(stolen, "info", host=agent.tcp_target)
    assert result.returncode != 0
    assert "not a client certificate" in result.stderr


def test_agent_name_mismatch_is_reported(
    fleet_pki: FleetPki, agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    agent = agent_factory("mismatch", start=False)
    pki.issue_agent(fleet_pki.config_dir, "elsewhere", ["10.9.9.9", "elsewhere.example"], agent.root / "tls")
    agent.start()
    result = run_cli(fleet_pki.config_dir, "ping", host=agent.tcp_target)
    assert result.returncode != 0
    assert "name mismatch" in result.stderr
    assert result.stderr.count("\n") == 1  # one line


def test_agent_down_is_one_clear_line(fleet_pki: FleetPki, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_cli(fleet_pki.config_dir, "ping", host=f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert (
        result.stderr == f"error: 127.0.0.1:{port}: connection refused by 127.0.0.1:{port} "
        "(is dockyard-agent running and listening there?)\n"
    )
    missing = run_cli(fleet_pki.config_dir, "ping", host=f"unix://{tmp_path}/nothing.sock")
    assert missing.returncode == 1 and "no agent socket" in missing.stderr


def test_sighup_reloads_certificates_without_dropping_listener(
    fleet_pki: FleetPki, agent: AgentProcess
) -> None:
    ca = fleet_pki.config_dir / "ca.pem"
    assert _peer_cn(agent.port, ca, fleet_pki.config_dir) == "agent"
    assert agent.tls_dir is not None

    # A broken set of files is refused and the old identity stays in force.
    (agent.tls_dir / "agent-key.pem").write_bytes(pki.key_pem(pki.new_key()))
    agent.signal(signal.SIGHUP)
    wait_for(
        lambda: any(e.get("event") == "tls.reload_refused" for e in agent.events()), 10, "refused reload"
    )
    assert _peer_cn(agent.port, ca, fleet_pki.config_dir) == "agent"

    pki.issue_agent(fleet_pki.config_dir, "agent-rotated", ["127.0.0.1"], agent.tls_dir)
    agent.signal(signal.SIGHUP)
    wait_for(lambda: _peer_cn(agent.port, ca, fleet_pki.config_dir) == "agent-rotated", 10, "new certificate")
    assert agent.running
    result = run_cli(fleet_pki.config_dir, "ping", host=agent.tcp_target)
    assert result.returncode == 0, result.stderr


def test_sigterm_exits_zero_and_removes_socket(agent: AgentProcess) -> None:
    assert agent.socket.exists()
    assert agent.stop() == 0
    assert not agent.socket.exists()
    assert any(e.get("event") == "agent.stopped" for e in agent.events())


def test_second_agent_on_same_data_root_is_refused(agent: AgentProcess, tmp_path: Path) -> None:
    twin = AgentProcess(root=tmp_path / "twin", listen=None, extra_args=["--data-root", str(agent.data_root)])
    with pytest.raises(RuntimeError, match="another dockyard-agent is using data root"):
        twin.start(timeout=10)


def test_fan_out_over_two_agents(fleet_pki: FleetPki, agent_factory: Callable[..., AgentProcess]) -> None:
    a, b = agent_factory("a"), agent_factory("b")
    result = run_cli(fleet_pki.config_dir, "-H", b.tcp_target, "--format", "json", "info", host=a.tcp_target)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc[a.tcp_target]["data_root"] == str(a.data_root)
    assert doc[b.tcp_target]["data_root"] == str(b.data_root)
    assert "2 ok, 0 failed" in result.stderr
