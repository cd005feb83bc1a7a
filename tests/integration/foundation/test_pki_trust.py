"""Who may change what an agent trusts: certificate installs, CA rotation and revocation, end to end.

Real agent processes over mTLS. The attacker holds a valid client certificate of the fleet (any operator's,
or one stolen) and talks to the Pki service directly, without the CLI's own checks.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from agent.api.v1 import pki_pb2, pki_pb2_grpc, system_pb2, system_pb2_grpc
from controller import pki
from tests.support.agent import AgentProcess, FleetPki, run_cli


@contextmanager
def _pki_stub(port: int, identity: Path) -> Iterator[pki_pb2_grpc.PkiStub]:
    """A Pki stub on a channel with the client certificate of a config dir (ca.pem may be a bundle)."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=(identity / "ca.pem").read_bytes(),
        private_key=(identity / "client-key.pem").read_bytes(),
        certificate_chain=(identity / "client.pem").read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        yield pki_pb2_grpc.PkiStub(channel)


def _ping(port: int, identity: Path, roots: bytes | None = None) -> tuple[grpc.StatusCode, str]:
    creds = grpc.ssl_channel_credentials(
        root_certificates=roots or (identity / "ca.pem").read_bytes(),
        private_key=(identity / "client-key.pem").read_bytes(),
        certificate_chain=(identity / "client.pem").read_bytes(),
    )
    with grpc.secure_channel(f"127.0.0.1:{port}", creds) as channel:
        try:
            system_pb2_grpc.SystemStub(channel).Ping(system_pb2.PingRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""  # type: ignore[no-any-return]
    return grpc.StatusCode.OK, ""


def _operator(fleet_pki: FleetPki, tmp_path: Path, name: str) -> Path:
    """Another client certificate of the fleet, in a config dir of its own."""
    out = tmp_path / name
    pki.issue_client(fleet_pki.config_dir, name, out)
    return out


def _anchors(agent: AgentProcess) -> list[x509.Certificate]:
    assert agent.tls_dir is not None
    return x509.load_pem_x509_certificates((agent.tls_dir / "ca.pem").read_bytes())


def _refused(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


def test_a_client_cannot_make_the_agent_trust_its_own_ca(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    mallory = _operator(fleet_pki, tmp_path, "mallory")
    evil = FleetPki.create(tmp_path / "evil")  # same CA name as the fleet's: only the key differs
    evil_ca = pki.load_ca(evil.config_dir)
    before = _anchors(agent)
    with _pki_stub(agent.port, mallory) as stub:
        csr = stub.CreateCsr(pki_pb2.CreateCsrRequest(common_name="agent", names=["127.0.0.1"]))
        cert = pki.sign_csr(evil_ca, csr.csr_pem, role=pki.ROLE_AGENT, sans=["127.0.0.1"])
        for ca_pem in (evil_ca.cert_pem, (fleet_pki.config_dir / "ca.pem").read_bytes()):
            request = pki_pb2.InstallCertificateRequest(certificate_pem=pki.cert_pem(cert), ca_pem=ca_pem)
            err = _refused(partial(stub.InstallCertificate, request))
            assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()
            assert "trust" in (err.details() or "") and "rotate-ca" in (err.details() or "")
        # A new CA "cross-signed" by itself proves nothing either.
        self_cross = pki.cross_sign(evil_ca, evil_ca)
        request = pki_pb2.InstallCertificateRequest(
            certificate_pem=pki.cert_pem(cert),
            ca_pem=evil_ca.cert_pem,
            ca_cross_signed_pem=pki.cert_pem(self_cross),
        )
        err = _refused(lambda: stub.InstallCertificate(request))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err.details()

    assert _anchors(agent) == before
    agent.stop()
    agent.start()
    assert _anchors(agent) == before
    assert _ping(agent.port, evil.config_dir, roots=evil_ca.cert_pem)[0] == grpc.StatusCode.UNAVAILABLE
    result = run_cli(fleet_pki.config_dir, "ping", host=agent.tcp_target)
    assert result.returncode == 0, result.stderr


def test_a_certificate_of_the_right_ca_must_still_be_right(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    ca = pki.load_ca(fleet_pki.config_dir)
    assert agent.tls_dir is not None
    served = (agent.tls_dir / "agent.pem").read_bytes()
    with _pki_stub(agent.port, fleet_pki.config_dir) as stub:
        csr = stub.CreateCsr(pki_pb2.CreateCsrRequest(common_name="agent", names=["127.0.0.1"]))
        pending = x509.load_pem_x509_csr(csr.csr_pem).public_key()
        assert isinstance(pending, ec.EllipticCurvePublicKey)
        past = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
        cases = {
            "wrong role": (
                pki.sign_csr(ca, csr.csr_pem, role=pki.ROLE_CLIENT),
                grpc.StatusCode.INVALID_ARGUMENT,
                "not an agent certificate",
            ),
            "expired": (
                pki.sign(ca, pending, common_name="agent", role=pki.ROLE_AGENT, days=2, not_before=past),
                grpc.StatusCode.FAILED_PRECONDITION,
                "not valid now",
            ),
            "another key": (
                pki.sign(ca, pki.new_key().public_key(), common_name="agent", role=pki.ROLE_AGENT),
                grpc.StatusCode.FAILED_PRECONDITION,
                "pending key",
            ),
        }
        for what, (cert, code, reason) in cases.items():
            request = pki_pb2.InstallCertificateRequest(
                certificate_pem=pki.cert_pem(cert), ca_pem=ca.cert_pem
            )
            err = _refused(partial(stub.InstallCertificate, request))
            assert (err.code(), reason in (err.details() or "")) == (code, True), (what, err.details())
        # The right certificate is still accepted after all that.
        good = pki.sign_csr(ca, csr.csr_pem, role=pki.ROLE_AGENT, sans=["127.0.0.1"], days=30)
        stub.InstallCertificate(pki_pb2.InstallCertificateRequest(certificate_pem=pki.cert_pem(good)))
    assert (agent.tls_dir / "agent.pem").read_bytes() not in (served, b"")
    assert run_cli(fleet_pki.config_dir, "ping", host=agent.tcp_target).returncode == 0


def test_ca_rotation_keeps_the_old_ca_until_confirmed(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    old_identity = tmp_path / "old-controller"
    shutil.copytree(fleet_pki.config_dir, old_identity)
    rotation = pki.begin_ca_rotation(fleet_pki.config_dir)
    both = (rotation.dir / "ca.pem").read_bytes()
    with _pki_stub(agent.port, rotation.old_identity) as stub:
        csr = stub.CreateCsr(pki_pb2.CreateCsrRequest(common_name="agent", names=["127.0.0.1"]))
        cert = pki.sign_csr(rotation.new, csr.csr_pem, role=pki.ROLE_AGENT, sans=["127.0.0.1"])
        r = stub.InstallCertificate(
            pki_pb2.InstallCertificateRequest(
                certificate_pem=pki.cert_pem(cert),
                ca_pem=rotation.new.cert_pem,
                ca_cross_signed_pem=pki.cert_pem(rotation.cross),
            )
        )
        assert r.ca_rotation_pending
    assert _anchors(agent) == [rotation.new.cert, rotation.current.cert]
    # Both CAs' clients get in; the old client cannot confirm.
    assert _ping(agent.port, old_identity, roots=both)[0] == grpc.StatusCode.OK
    assert _ping(agent.port, rotation.dir)[0] == grpc.StatusCode.OK
    with _pki_stub(agent.port, rotation.old_identity) as stub:
        err = _refused(lambda: stub.ConfirmCaRotation(pki_pb2.ConfirmCaRotationRequest()))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "new CA" in (err.details() or "")
    agent.stop()
    agent.start()  # still both after a restart
    assert _anchors(agent) == [rotation.new.cert, rotation.current.cert]
    assert _ping(agent.port, old_identity, roots=both)[0] == grpc.StatusCode.OK

    with _pki_stub(agent.port, rotation.dir) as stub:
        done = stub.ConfirmCaRotation(pki_pb2.ConfirmCaRotationRequest())
        assert done.changed and "Dockyard fleet CA" in done.ca_subject
    assert _anchors(agent) == [rotation.new.cert]
    assert _ping(agent.port, old_identity, roots=both)[0] == grpc.StatusCode.UNAVAILABLE
    assert _ping(agent.port, rotation.dir)[0] == grpc.StatusCode.OK


def test_rotate_ca_command_moves_the_fleet_and_resumes(
    fleet_pki: FleetPki, agent_factory: Callable[..., AgentProcess], tmp_path: Path
) -> None:
    a, b = agent_factory("a"), agent_factory("b")
    old_identity = tmp_path / "old-controller"
    shutil.copytree(fleet_pki.config_dir, old_identity)
    hosts = ["-H", f"a={a.tcp_target}", "-H", f"b={b.tcp_target}"]
    b.stop()  # down during the first run: a rotates, the fleet CA stays as it is
    first = run_cli(fleet_pki.config_dir, *hosts, "pki", "rotate-ca")
    assert first.returncode != 0
    assert "a | rotated: trusts only" in first.stdout and "CA rotation incomplete" in first.stderr
    assert (fleet_pki.config_dir / "ca.pem").read_bytes() == (old_identity / "ca.pem").read_bytes()
    assert len(_anchors(a)) == 1 and _anchors(a)[0] != _anchors(b)[0]

    b.listen = b.tcp_target
    b.start()
    second = run_cli(fleet_pki.config_dir, *hosts, "pki", "rotate-ca")
    assert second.returncode == 0, second.stderr
    assert "a | already rotated" in second.stdout and "b | rotated: trusts only" in second.stdout
    new_ca = x509.load_pem_x509_certificate((fleet_pki.config_dir / "ca.pem").read_bytes())
    assert _anchors(a) == _anchors(b) == [new_ca]
    assert not (fleet_pki.config_dir / "ca-rotation").exists()
    assert list((fleet_pki.config_dir / "retired-ca").glob("*/ca-key.pem"))
    ok = run_cli(fleet_pki.config_dir, *hosts, "ping")
    assert ok.returncode == 0, ok.stderr
    stale = run_cli(old_identity, "ping", host=a.tcp_target)
    assert stale.returncode != 0 and "unknown CA" in stale.stderr  # the old CA no longer vouches for a


def test_revoked_client_is_refused_with_the_reason(
    fleet_pki: FleetPki, agent: AgentProcess, tmp_path: Path
) -> None:
    mallory = _operator(fleet_pki, tmp_path, "mallory")
    alice = _operator(fleet_pki, tmp_path, "alice")
    assert _ping(agent.port, mallory)[0] == grpc.StatusCode.OK
    serial = f"{x509.load_pem_x509_certificate((mallory / 'client.pem').read_bytes()).serial_number:x}"

    revoked = run_cli(fleet_pki.config_dir, "pki", "revoke", "mallory")
    assert revoked.returncode == 0, revoked.stderr
    assert f"revoked: {serial} (CN=mallory, client)" in revoked.stdout
    listed = run_cli(fleet_pki.config_dir, "pki", "ls")
    assert any(serial in line and "revoked" in line for line in listed.stdout.splitlines()), listed.stdout
    assert _ping(agent.port, mallory)[0] == grpc.StatusCode.OK  # not pushed yet

    pushed = run_cli(fleet_pki.config_dir, "-H", f"agent={agent.tcp_target}", "pki", "push-crl")
    assert pushed.returncode == 0, pushed.stderr
    assert "crl 1 in force: 1 revoked" in pushed.stdout
    reason = f"certificate {serial} (CN=mallory) is revoked"
    assert _ping(agent.port, mallory) == (grpc.StatusCode.PERMISSION_DENIED, reason)
    cli = run_cli(mallory, "ping", host=agent.tcp_target)
    assert cli.returncode != 0 and reason in cli.stderr and cli.stderr.count("\n") == 1
    assert _ping(agent.port, alice)[0] == grpc.StatusCode.OK
    assert run_cli(fleet_pki.config_dir, "ping", host=agent.tcp_target).returncode == 0

    agent.stop()
    agent.start()
    assert _ping(agent.port, mallory) == (grpc.StatusCode.PERMISSION_DENIED, reason)
    assert _ping(agent.port, alice)[0] == grpc.StatusCode.OK

    # Lists the agent must refuse: another CA's (even with a higher number), an older one of ours.
    evil = pki.load_ca(FleetPki.create(tmp_path / "evil").config_dir)
    ca = pki.load_ca(fleet_pki.config_dir)
    with _pki_stub(agent.port, alice) as stub:
        forged = pki.build_crl(evil, {}, 99)
        err = _refused(lambda: stub.InstallCrl(pki_pb2.InstallCrlRequest(crl_pem=forged)))
        assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "not signed by a CA this agent trusts" in (
            err.details() or ""
        )
        stale = pki.build_crl(ca, {}, 0)
        err = _refused(lambda: stub.InstallCrl(pki_pb2.InstallCrlRequest(crl_pem=stale)))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "older" in (err.details() or "")
    assert _ping(agent.port, mallory) == (grpc.StatusCode.PERMISSION_DENIED, reason)

    # `pki rotate` pushes the list too: revoke alice, rotate, alice is out.
    assert run_cli(fleet_pki.config_dir, "pki", "revoke", "alice").returncode == 0
    rotated = run_cli(fleet_pki.config_dir, "-H", f"agent={agent.tcp_target}", "pki", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    assert _ping(agent.port, alice)[0] == grpc.StatusCode.PERMISSION_DENIED
