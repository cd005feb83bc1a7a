"""Pure controller pieces: the fleet PKI's roles and files, target parsing, agent config loading."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from agent import config as agent_config
from agent import errors
from agent.server import tls
from controller import pki, target, tlsdiag
from controller.errors import UsageError


def test_init_writes_ca_and_client_with_private_keys(tmp_path: Path) -> None:
    written = pki.init(tmp_path / "cfg")
    assert sorted(p.name for p in written) == ["ca-key.pem", "ca.pem", "client-key.pem", "client.pem"]
    for key in ("ca-key.pem", "client-key.pem"):
        assert (tmp_path / "cfg" / key).stat().st_mode & 0o777 == 0o600
    client = x509.load_pem_x509_certificate((tmp_path / "cfg" / "client.pem").read_bytes())
    assert pki.certificate_role(client) == pki.ROLE_CLIENT
    with pytest.raises(Exception, match="already exists"):
        pki.init(tmp_path / "cfg")


def test_agent_certificate_role_and_sans(tmp_path: Path) -> None:
    pki.init(tmp_path / "cfg")
    pki.issue_agent(tmp_path / "cfg", "edge-1", ["192.0.2.5", "edge-1.lab"], tmp_path / "out")
    cert = x509.load_pem_x509_certificate((tmp_path / "out" / "agent.pem").read_bytes())
    assert pki.certificate_role(cert) == pki.ROLE_AGENT
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"192.0.2.5"}
    assert set(san.get_values_for_type(x509.DNSName)) == {"edge-1.lab", "edge-1"}
    assert (tmp_path / "out" / "agent-key.pem").stat().st_mode & 0o777 == 0o600
    identity = tls.load_identity(tmp_path / "out")
    assert "CN=edge-1" in identity.subject


def test_agent_tls_dir_rejects_client_certificate(tmp_path: Path) -> None:
    pki.init(tmp_path / "cfg")
    out = tmp_path / "out"
    pki.issue_client(tmp_path / "cfg", "op", out)
    (out / "client.pem").rename(out / "agent.pem")
    (out / "client-key.pem").rename(out / "agent-key.pem")
    with pytest.raises(errors.InvalidArgument, match="not an agent"):
        tls.load_identity(out)


def test_csr_signing_keeps_key_on_host(tmp_path: Path) -> None:
    pki.init(tmp_path / "cfg")
    ca = pki.load_ca(tmp_path / "cfg")
    host_key = pki.new_key()
    cert = pki.sign_csr(ca, pki.make_csr(host_key, "edge-2"), role=pki.ROLE_AGENT, sans=["198.51.100.7"])
    assert cert.public_key().public_numbers() == host_key.public_key().public_numbers()
    assert tlsdiag.check_client_identity(ca.cert_pem, pki.cert_pem(cert)) is not None  # an agent cert


def test_client_identity_check_accepts_good_cert(tmp_path: Path) -> None:
    pki.init(tmp_path / "cfg")
    cfg = tmp_path / "cfg"
    assert (
        tlsdiag.check_client_identity((cfg / "ca.pem").read_bytes(), (cfg / "client.pem").read_bytes())
        is None
    )


@pytest.mark.parametrize(
    ("text", "kind", "address", "port"),
    [
        ("unix:///run/dockyard/agent.sock", "unix", "/run/dockyard/agent.sock", 0),
        ("10.0.0.5:7000", "tcp", "10.0.0.5", 7000),
        ("edge-1.lab", "tcp", "edge-1.lab", 7443),
        ("tcp://edge-1.lab:9", "tcp", "edge-1.lab", 9),
        ("[fd00::1]:7443", "tcp", "fd00::1", 7443),
    ],
)
def test_target_parse(text: str, kind: str, address: str, port: int) -> None:
    t = target.parse(text)
    assert (t.kind, t.address, t.port) == (kind, address, port)


@pytest.mark.parametrize("text", ["unix://relative.sock", "host:port", "host:70000", ":7443"])
def test_target_parse_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        target.parse(text)


def test_agent_config_file_and_overrides(tmp_path: Path) -> None:
    cfg_file = tmp_path / "agent.toml"
    cfg_file.write_text(
        'listen = ["0.0.0.0:7443"]\ndata_root = "/srv/dy"\ninsecure_registries = ["r:5000"]\n'
    )
    cfg = agent_config.load(cfg_file)
    assert cfg.listen == ("0.0.0.0:7443",) and cfg.data_root == Path("/srv/dy")
    assert cfg.with_overrides(data_root=Path("/x"), listen=None).data_root == Path("/x")
    cfg_file.write_text("bogus = 1\n")
    with pytest.raises(errors.InvalidArgument, match="unknown key"):
        agent_config.load(cfg_file)
    with pytest.raises(errors.InvalidArgument, match="does not exist"):
        agent_config.load(tmp_path / "missing.toml")
