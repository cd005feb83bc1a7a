"""The PKI at file level: what an agent's TLS dir accepts, the controller's revocation record."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from agent import enroll, errors
from agent.server import tls
from controller import pki
from controller.bootstrap import facts, plan
from controller.errors import ControllerError


def _agent_dir(config_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "agent-tls"
    pki.issue_agent(config_dir, "agent", ["127.0.0.1"], out)
    return out


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    pki.init(tmp_path / "controller")
    return tmp_path / "controller"


def _pem(cert: x509.Certificate) -> bytes:
    return pki.cert_pem(cert)


def test_revoke_by_name_or_serial_numbers_the_crl_on(config_dir: Path, tmp_path: Path) -> None:
    pki.issue_client(config_dir, "bob", tmp_path / "bob")
    pki.issue_client(config_dir, "bob", tmp_path / "bob2")
    carol = pki.issue_client(config_dir, "carol", tmp_path / "carol")[1]
    bobs = {i.serial for i in pki.issued(config_dir) if i.common_name == "bob"}

    assert {i.serial for i in pki.revoke(config_dir, "bob")} == bobs
    assert pki.revoke(config_dir, "bob") == []  # already revoked: no new list
    crl = pki.read_crl(config_dir)
    assert crl is not None and pki.crl_number(crl) == 1

    carol_serial = x509.load_pem_x509_certificate(carol.read_bytes()).serial_number
    done = pki.revoke(config_dir, f"{carol_serial:x}")
    assert [i.common_name for i in done] == ["carol"]
    crl = pki.read_crl(config_dir)
    assert crl is not None and pki.crl_number(crl) == 2
    assert {r.serial_number for r in crl} == bobs | {carol_serial}

    with pytest.raises(ControllerError, match="no unexpired certificate issued to 'nobody'"):
        pki.revoke(config_dir, "nobody")
    with pytest.raises(ControllerError, match="own client certificate"):
        pki.revoke(config_dir, "controller")


def test_agent_accepts_only_a_crl_of_its_ca_never_an_older_one(config_dir: Path, tmp_path: Path) -> None:
    agent_tls = _agent_dir(config_dir, tmp_path)
    ca = pki.load_ca(config_dir)
    other = pki.create_ca()
    with pytest.raises(errors.PermissionDenied, match="not signed by a CA this agent trusts"):
        enroll.install_crl(agent_tls, pki.build_crl(other, {}, 5))
    second = pki.build_crl(ca, {7: dt.datetime.now(dt.UTC)}, 2)
    assert enroll.install_crl(agent_tls, second) == enroll.CrlInstalled(2, 1, True)
    assert enroll.install_crl(agent_tls, second).changed is False
    with pytest.raises(errors.FailedPrecondition, match="older"):
        enroll.install_crl(agent_tls, pki.build_crl(ca, {}, 1))
    with pytest.raises(errors.FailedPrecondition, match="different revocation list"):
        enroll.install_crl(agent_tls, pki.build_crl(ca, {}, 2))


def test_revocations_follow_the_file_and_name_the_certificate(config_dir: Path, tmp_path: Path) -> None:
    agent_tls = _agent_dir(config_dir, tmp_path)
    client = pki.issue_client(config_dir, "dave", tmp_path / "dave")[1].read_bytes()
    serial = x509.load_pem_x509_certificate(client).serial_number
    revocations = tls.Revocations(agent_tls)
    revocations.check(client)  # no CRL: nothing revoked
    pki.revoke(config_dir, "dave")
    enroll.install_crl(agent_tls, (config_dir / pki.CRL_FILE).read_bytes())
    with pytest.raises(errors.PermissionDenied, match=f"certificate {serial:x} \\(CN=dave\\) is revoked"):
        revocations.check(client)
    # Same serial and same CA name, but another CA's key (as after a CA rotation): not the one revoked.
    other = pki.create_ca()
    twin = pki.sign(other, pki.new_key().public_key(), common_name="dave", role=pki.ROLE_CLIENT)
    twin = x509.CertificateBuilder(
        issuer_name=twin.issuer,
        subject_name=twin.subject,
        public_key=twin.public_key(),
        serial_number=serial,
        not_valid_before=twin.not_valid_before_utc,
        not_valid_after=twin.not_valid_after_utc,
    ).sign(other.key, hashes.SHA256())
    revocations.check(_pem(twin))


def test_ssh_install_is_trust_on_install_and_drops_the_old_cas_list(config_dir: Path, tmp_path: Path) -> None:
    agent_tls = _agent_dir(config_dir, tmp_path)
    pki.issue_client(config_dir, "erin", tmp_path / "erin")
    pki.revoke(config_dir, "erin")
    enroll.install_crl(agent_tls, (config_dir / pki.CRL_FILE).read_bytes())
    fresh = tmp_path / "fresh"
    pki.init(fresh)
    new_ca = pki.load_ca(fresh)
    csr = enroll.make_csr(agent_tls, "agent", ["127.0.0.1"])
    cert = pki.sign_csr(new_ca, csr, role=pki.ROLE_AGENT, sans=["127.0.0.1"])
    assert enroll.install(agent_tls, pki.cert_pem(cert), new_ca.cert_pem) == "OU=agent,CN=agent"
    assert tls.load_anchors(agent_tls) == [new_ca.cert]
    assert not (agent_tls / tls.CRL_FILE).exists()


def test_confirm_without_a_started_rotation_changes_nothing(config_dir: Path, tmp_path: Path) -> None:
    agent_tls = _agent_dir(config_dir, tmp_path)
    client = (config_dir / pki.CLIENT_CERT).read_bytes()
    assert enroll.confirm_ca_rotation(agent_tls, client) == ("CN=Dockyard fleet CA", False)
    # A pending CA that never made it into ca.pem (cut short) is forgotten, not promoted.
    (agent_tls / tls.PENDING_CA_FILE).write_bytes(pki.create_ca().cert_pem)
    assert enroll.confirm_ca_rotation(agent_tls, client)[1] is False
    assert not (agent_tls / tls.PENDING_CA_FILE).exists()
    assert tls.load_anchors(agent_tls) == [pki.load_ca(config_dir).cert]


def test_bootstrap_pushes_the_crl_when_the_host_lacks_it() -> None:
    base = facts.Facts(
        "debian", "12", "Debian", "x86_64", "6.1", "h1", "/usr/bin/python3", (3, 11, 2), "none",
        {"runc": "/r", "conmon": "/c", "nft": "/n"}, "apt-get", "d" * 64, "c" * 64, "", "s" * 64,
        "a" * 64, True, ("10.0.0.1", "h1"), True,
    )  # fmt: skip
    desired = plan.Desired("d" * 64, "c" * 64, "s" * 64, "a" * 64, ("h1", "10.0.0.1"), crl_sha="r" * 64)
    assert plan.make(base, desired).kinds == [plan.Kind.PUSH_CRL]
    assert plan.make(dataclasses.replace(base, crl_sha="r" * 64), desired).kinds == []
    assert plan.make(base, dataclasses.replace(desired, crl_sha="")).kinds == []
    moved = dataclasses.replace(base, crl_sha="r" * 64, ca_sha="x")  # re-enrolled: its list was dropped
    assert plan.make(moved, desired).kinds == [plan.Kind.ENROLL, plan.Kind.PUSH_CRL, plan.Kind.RELOAD]
    assert "crl_sha=" in facts.COMMAND and facts.parse("crl_sha=abc\n").crl_sha == "abc"
