"""The host's half of enrollment and rotation: make a key and CSR here, install the signed certificate.

The private key is generated on the host and never leaves it: it waits as `agent-key.pem.new` until
the fleet CA's certificate for it comes back, then both are moved into place together. Used over SSH
by `dockyard bootstrap` (`python -m agent.enroll csr|install`) and by the Pki service for rotation.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import errors
from agent.server.tls import CA_FILE, CERT_FILE, KEY_FILE, load_identity
from agent.state.files import write_atomic

PENDING_KEY = KEY_FILE + ".new"


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


def install(tls_dir: Path, cert_pem: bytes, ca_pem: bytes) -> str:
    """Install a certificate for the pending key (or, if none is pending, the current key).

    Everything is checked before anything is replaced; returns the certificate's subject.
    """
    pending = tls_dir / PENDING_KEY
    key_path = pending if pending.exists() else tls_dir / KEY_FILE
    try:
        key_pem = key_path.read_bytes()
    except FileNotFoundError as exc:
        raise errors.FailedPrecondition(f"no key in {tls_dir}: make a CSR first") from exc
    staging = tls_dir / ".staging"
    staging.mkdir(mode=0o700, exist_ok=True)
    write_atomic(staging / CA_FILE, ca_pem)
    write_atomic(staging / CERT_FILE, cert_pem)
    write_atomic(staging / KEY_FILE, key_pem, mode=0o600)
    identity = load_identity(staging)  # refuses a cert that does not match the key or the CA
    write_atomic(tls_dir / CA_FILE, ca_pem)
    write_atomic(tls_dir / KEY_FILE, key_pem, mode=0o600)
    write_atomic(tls_dir / CERT_FILE, cert_pem)
    for leftover in (staging / CA_FILE, staging / CERT_FILE, staging / KEY_FILE, pending):
        leftover.unlink(missing_ok=True)
    staging.rmdir()
    return identity.subject


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m agent.enroll", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    csr = sub.add_parser("csr", help="make a key and print its CSR")
    csr.add_argument("--tls-dir", type=Path, required=True)
    csr.add_argument("--name", required=True, help="certificate common name (the inventory name)")
    csr.add_argument("--san", action="append", default=[], help="DNS name or IP address (repeatable)")
    inst = sub.add_parser("install", help="read the certificate then the CA (PEM) from stdin, install")
    inst.add_argument("--tls-dir", type=Path, required=True)
    ns = p.parse_args(argv)
    os.umask(0o077)
    try:
        if ns.cmd == "csr":
            sys.stdout.write(make_csr(ns.tls_dir, ns.name, [ns.name, *ns.san]).decode())
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
