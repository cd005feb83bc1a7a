"""The host's half of enrollment, rotation and revocation: key and CSR made here, certificates checked here.

The private key is generated on the host and never leaves it: it waits as `agent-key.pem.new` until
the fleet CA's certificate for it comes back, then both are moved into place together.

Two ways in, with different trust:
- over SSH (`python -m agent.enroll csr|install|crl`, run by `dockyard bootstrap` as root): `install`
  is trust-on-install, the CA given becomes the only anchor; whoever is root on the host decides anyway;
- over mTLS (the Pki service, `install_certificate`/`confirm_ca_rotation`/`install_crl`): any client
  certificate can call these, so nothing is installed unless it chains to a CA the agent already trusts.
  A new CA gets in only cross-signed by a trusted one, and the old one stays trusted until a client
  certificate of the new CA confirms the rotation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent import errors
from agent.oci.files import write_atomic
from agent.server.tls import (
    CA_FILE,
    CERT_FILE,
    CRL_FILE,
    KEY_FILE,
    PENDING_CA_FILE,
    common_name,
    crl_number,
    has_usage,
    is_ca,
    issuing_anchor,
    load_anchors,
    parse_certificate,
    pem,
    valid_now,
    verify_crl,
)

PENDING_KEY = KEY_FILE + ".new"
ROTATE_HINT = "a new CA is accepted only cross-signed by the current one (dockyard pki rotate-ca)"


@dataclass(frozen=True)
class Installed:
    subject: str
    not_after: dt.datetime
    rotation_pending: bool


@dataclass(frozen=True)
class CrlInstalled:
    number: int
    revoked: int
    changed: bool


def make_csr(tls_dir: Path, common_name: str, names: list[str]) -> bytes:
    """Generate a fresh P-256 key (kept as the pending key) and return a CSR for it, PEM encoded."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    tls_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(tls_dir / PENDING_KEY, key_pem, mode=0o600)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .add_extension(x509.SubjectAlternativeName(_general_names(names)), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def _general_names(names: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def _names(certs: list[x509.Certificate]) -> str:
    return ", ".join(f"CN={common_name(c.subject)}" for c in certs)


def _check_agent_certificate(
    cert: x509.Certificate, anchors: list[x509.Certificate], key_pem: bytes
) -> x509.Certificate:
    """Trust first (signature by an anchor), then role, validity and key; returns the issuing anchor."""
    anchor = issuing_anchor(cert, anchors)
    if anchor is None:
        raise errors.PermissionDenied(
            f"certificate CN={common_name(cert.subject)} was not issued by a CA this agent trusts "
            f"({_names(anchors)}); {ROTATE_HINT}"
        )
    if is_ca(cert) or not has_usage(cert, ExtendedKeyUsageOID.SERVER_AUTH):
        raise errors.InvalidArgument(
            f"certificate CN={common_name(cert.subject)} is not an agent certificate "
            "(needs extended key usage serverAuth and no CA flag)"
        )
    if not valid_now(cert):
        raise errors.FailedPrecondition(
            f"certificate CN={common_name(cert.subject)} is not valid now (valid from "
            f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M} to {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC)"
        )
    key = serialization.load_pem_private_key(key_pem, password=None)
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise errors.FailedPrecondition(
            f"certificate CN={common_name(cert.subject)} is not for this agent's pending key "
            "(make a CSR with CreateCsr and have that signed)"
        )
    return anchor


def _check_new_ca(
    new_ca: x509.Certificate, cross: x509.Certificate, established: list[x509.Certificate]
) -> None:
    """The rotation proof: `cross` is `new_ca`'s subject and key, signed by a CA trusted today."""
    signer = issuing_anchor(cross, established)
    if signer is None:
        raise errors.PermissionDenied(
            f"the cross-signed certificate for CN={common_name(cross.subject)} is not signed by a CA this "
            f"agent trusts ({_names(established)})"
        )
    if cross.subject != new_ca.subject or cross.public_key() != new_ca.public_key():
        raise errors.PermissionDenied(
            f"the cross-signed certificate (CN={common_name(cross.subject)}) is not for the new CA "
            f"CN={common_name(new_ca.subject)} (subject and key must match)"
        )
    for cert, what in ((cross, "cross-signed certificate"), (new_ca, "new CA certificate")):
        if not is_ca(cert):
            raise errors.InvalidArgument(f"the {what} is not a CA certificate")
        if not valid_now(cert):
            raise errors.FailedPrecondition(f"the {what} is not valid now")
    if issuing_anchor(new_ca, [new_ca]) is None:
        raise errors.InvalidArgument(
            f"the new CA certificate CN={common_name(new_ca.subject)} is not self-signed"
        )


def _pending_ca(tls_dir: Path) -> x509.Certificate | None:
    try:
        return parse_certificate((tls_dir / PENDING_CA_FILE).read_bytes(), str(tls_dir / PENDING_CA_FILE))
    except FileNotFoundError:
        return None


def _write_anchors(tls_dir: Path, anchors: list[x509.Certificate]) -> None:
    write_atomic(tls_dir / CA_FILE, b"".join(pem(a) for a in anchors))


def install_certificate(tls_dir: Path, cert_pem: bytes, ca_pem: bytes, cross_pem: bytes = b"") -> Installed:
    """Install a certificate for the pending key, issued by a trusted CA (the Pki service's path).

    With `cross_pem`, `ca_pem` is a new CA proven by the current one: it joins the anchors (the old one
    stays) and becomes the pending CA that `confirm_ca_rotation` makes the only one. Everything is
    checked before anything is written.
    """
    anchors = load_anchors(tls_dir)
    pending = _pending_ca(tls_dir)
    cert = parse_certificate(cert_pem, "certificate")
    try:
        key_pem = (tls_dir / PENDING_KEY).read_bytes()
    except FileNotFoundError as exc:
        raise errors.FailedPrecondition("no pending key on this agent: call CreateCsr first") from exc
    new_anchors = anchors
    if cross_pem:
        new_ca = parse_certificate(ca_pem, "ca_pem")
        established = [a for a in anchors if pending is None or a != pending]
        _check_new_ca(new_ca, parse_certificate(cross_pem, "ca_cross_signed_pem"), established)
        if new_ca not in established:  # else: nothing to rotate, the CA is trusted already
            new_anchors, pending = [new_ca, *established], new_ca
    elif ca_pem:
        given = parse_certificate(ca_pem, "ca_pem")
        if given not in anchors:
            raise errors.PermissionDenied(
                f"CA CN={common_name(given.subject)} is not a CA this agent trusts ({_names(anchors)}); "
                f"{ROTATE_HINT}"
            )
    _check_agent_certificate(cert, new_anchors, key_pem)
    if new_anchors != anchors:
        assert pending is not None
        write_atomic(tls_dir / PENDING_CA_FILE, pem(pending))
        _write_anchors(tls_dir, new_anchors)
    write_atomic(tls_dir / KEY_FILE, key_pem, mode=0o600)
    write_atomic(tls_dir / CERT_FILE, cert_pem)
    (tls_dir / PENDING_KEY).unlink(missing_ok=True)
    return Installed(cert.subject.rfc4514_string(), cert.not_valid_after_utc, pending is not None)


def confirm_ca_rotation(tls_dir: Path, client_cert_pem: bytes) -> tuple[str, bool]:
    """Drop every anchor but the pending CA; the caller must have used a client certificate of it.

    Returns the subject of the CA now trusted and whether anything changed.
    """
    pending = _pending_ca(tls_dir)
    anchors = load_anchors(tls_dir)
    if pending is None or pending not in anchors:  # not in ca.pem: a rotation cut short before it began
        (tls_dir / PENDING_CA_FILE).unlink(missing_ok=True)
        return anchors[0].subject.rfc4514_string(), False
    client = parse_certificate(client_cert_pem, "client certificate") if client_cert_pem else None
    if client is None or issuing_anchor(client, [pending]) is None:
        used = f"CN={common_name(client.issuer)}" if client is not None else "none (unix socket)"
        raise errors.FailedPrecondition(
            "confirm the CA rotation with a client certificate of the new CA "
            f"CN={common_name(pending.subject)} (this call's certificate was issued by {used})"
        )
    own = parse_certificate((tls_dir / CERT_FILE).read_bytes(), str(tls_dir / CERT_FILE))
    if issuing_anchor(own, [pending]) is None:
        raise errors.FailedPrecondition(
            f"this agent's certificate is not from the new CA CN={common_name(pending.subject)}: "
            "install one first (CreateCsr, InstallCertificate)"
        )
    _write_anchors(tls_dir, [pending])
    (tls_dir / PENDING_CA_FILE).unlink(missing_ok=True)
    return pending.subject.rfc4514_string(), True


def install_crl(tls_dir: Path, crl_pem: bytes) -> CrlInstalled:
    """Store a CRL signed by a trusted CA; never one older (lower CRL number) than the one in force."""
    crl = verify_crl(crl_pem, load_anchors(tls_dir))
    number = crl_number(crl)
    if number is None:
        raise errors.InvalidArgument("the revocation list has no CRL number")
    revoked = sum(1 for _ in crl)
    try:
        current_pem = (tls_dir / CRL_FILE).read_bytes()
    except FileNotFoundError:
        current_pem = b""
    if current_pem:
        try:
            current = crl_number(x509.load_pem_x509_crl(current_pem))
        except ValueError:
            current = None
        if current is not None and number < current:
            raise errors.FailedPrecondition(
                f"revocation list number {number} is older than the one in force ({current})"
            )
        if current == number:
            if current_pem == crl_pem:
                return CrlInstalled(number, revoked, False)
            raise errors.FailedPrecondition(
                f"a different revocation list with number {number} is already in force"
            )
    write_atomic(tls_dir / CRL_FILE, crl_pem)
    return CrlInstalled(number, revoked, True)


def install(tls_dir: Path, cert_pem: bytes, ca_pem: bytes) -> str:
    """Trust-on-install over SSH (root only): `ca_pem` becomes the one anchor, with the certificate.

    Used by bootstrap's enrollment; the certificate is checked against that CA and the pending key (or,
    if none is pending, the current key). A CRL of another CA is dropped with the old anchor.
    Returns the certificate's subject.
    """
    ca = parse_certificate(ca_pem, "CA")
    if not is_ca(ca) or issuing_anchor(ca, [ca]) is None:
        raise errors.InvalidArgument(f"CA CN={common_name(ca.subject)} is not a self-signed CA certificate")
    pending_key = tls_dir / PENDING_KEY
    key_path = pending_key if pending_key.exists() else tls_dir / KEY_FILE
    try:
        key_pem = key_path.read_bytes()
    except FileNotFoundError as exc:
        raise errors.FailedPrecondition(f"no key in {tls_dir}: make a CSR first") from exc
    cert = parse_certificate(cert_pem, "certificate")
    _check_agent_certificate(cert, [ca], key_pem)
    try:
        previous = load_anchors(tls_dir)
    except errors.AgentError:
        previous = []
    if previous != [ca]:
        (tls_dir / CRL_FILE).unlink(missing_ok=True)
    _write_anchors(tls_dir, [ca])
    (tls_dir / PENDING_CA_FILE).unlink(missing_ok=True)
    write_atomic(tls_dir / KEY_FILE, key_pem, mode=0o600)
    write_atomic(tls_dir / CERT_FILE, cert_pem)
    pending_key.unlink(missing_ok=True)
    return cert.subject.rfc4514_string()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m agent.enroll", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    csr = sub.add_parser("csr", help="make a key and print its CSR")
    csr.add_argument("--tls-dir", type=Path, required=True)
    csr.add_argument("--name", required=True, help="certificate common name (the inventory name)")
    csr.add_argument("--san", action="append", default=[], help="DNS name or IP address (repeatable)")
    inst = sub.add_parser("install", help="read the certificate then the CA (PEM) from stdin, install")
    inst.add_argument("--tls-dir", type=Path, required=True)
    crl = sub.add_parser("crl", help="read a revocation list (PEM) from stdin, check and install it")
    crl.add_argument("--tls-dir", type=Path, required=True)
    ns = p.parse_args(argv)
    os.umask(0o077)
    try:
        if ns.cmd == "csr":
            sys.stdout.write(make_csr(ns.tls_dir, ns.name, [ns.name, *ns.san]).decode())
        elif ns.cmd == "crl":
            done = install_crl(ns.tls_dir, sys.stdin.buffer.read())
            print(f"crl {done.number}: {done.revoked} revoked" + ("" if done.changed else " (unchanged)"))
        else:
            blocks = _pem_blocks(sys.stdin.buffer.read())
            if len(blocks) != 2:
                raise errors.InvalidArgument("expected two PEM certificates on stdin: agent, then CA")
            print(install(ns.tls_dir, blocks[0], blocks[1]))
    except errors.AgentError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(1)


def _pem_blocks(data: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [part.strip() + b"\n" + end + b"\n" for part in data.split(end) if part.strip()]


if __name__ == "__main__":
    main()
