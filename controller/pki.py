"""The fleet PKI: one CA in the controller's config dir, agent and client certificates signed by it.

Roles are carried by the Extended Key Usage: agent certificates are serverAuth only, client certificates
clientAuth only, so TLS stacks refuse an agent certificate presented as a client (and vice versa). Keys
are ECDSA P-256, written 0600. The CA's key never leaves the controller; agents enrolled over SSH send a
CSR (their key never leaves the host).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controller.config import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE
from controller.errors import ControllerError, UsageError

CA_CERT = CA_FILE
CA_KEY = "ca-key.pem"
CLIENT_CERT = CLIENT_CERT_FILE
CLIENT_KEY = CLIENT_KEY_FILE
AGENT_CERT = "agent.pem"
AGENT_KEY = "agent-key.pem"

CA_DAYS = 3650
CERT_DAYS = 365
ROLE_AGENT = "agent"
ROLE_CLIENT = "client"


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret 0600 from the first byte (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def create_ca(name: str = "Dockyard fleet CA", days: int = CA_DAYS) -> CertificateAuthority:
    key = new_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(cert=cert, key=key)


def san_entries(names: list[str]) -> list[x509.GeneralName]:
    """IP addresses become IP SANs, everything else DNS SANs (gRPC checks the dialled name against them)."""
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            if not name or " " in name:
                raise UsageError(f"invalid SAN {name!r}: give an IP address or a DNS name") from None
            entries.append(x509.DNSName(name))
    return entries


def sign(
    ca: CertificateAuthority,
    public_key: ec.EllipticCurvePublicKey,
    *,
    common_name: str,
    role: str,
    sans: list[str] | None = None,
    days: int = CERT_DAYS,
    not_before: dt.datetime | None = None,
) -> x509.Certificate:
    """Issue a leaf certificate for `role` (agent → serverAuth, client → clientAuth)."""
    if role not in (ROLE_AGENT, ROLE_CLIENT):
        raise UsageError(f"unknown certificate role {role!r}")
    start = not_before or (_now() - dt.timedelta(minutes=5))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == ROLE_AGENT else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                ]
            )
        )
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                key_cert_sign=False,
                crl_sign=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    names = list(dict.fromkeys([*(sans or []), *([common_name] if role == ROLE_AGENT else [])]))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(san_entries(names)), critical=False)
    return builder.sign(ca.key, hashes.SHA256())


def sign_csr(
    ca: CertificateAuthority,
    csr_pem: bytes,
    *,
    role: str,
    sans: list[str] | None = None,
    days: int = CERT_DAYS,
) -> x509.Certificate:
    """Sign a host's CSR (enrollment): the subject CN is kept, SANs come from the controller, not the CSR."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ControllerError(f"unreadable certificate signing request: {exc}") from exc
    if not csr.is_signature_valid:
        raise ControllerError("certificate signing request has an invalid signature")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise ControllerError("certificate signing request must carry an EC P-256 key")
    cns = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cns:
        raise ControllerError("certificate signing request has no common name")
    return sign(ca, public_key, common_name=str(cns[0].value), role=role, sans=sans, days=days)


def make_csr(key: ec.EllipticCurvePrivateKey, common_name: str) -> bytes:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def load_ca(config_dir: Path) -> CertificateAuthority:
    cert_path, key_path = config_dir / CA_CERT, config_dir / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise ControllerError(f"no fleet CA in {config_dir}; run `dockyard pki init` first")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ControllerError(f"{key_path} is not an EC private key")
    return CertificateAuthority(cert=cert, key=key)


def init(config_dir: Path, *, client_name: str = "controller", force: bool = False) -> list[Path]:
    """Create the fleet CA and the controller's own client certificate. Refuses to overwrite a CA."""
    if (config_dir / CA_KEY).exists() and not force:
        raise ControllerError(f"a fleet CA already exists in {config_dir} (use --force to replace it)")
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = create_ca()
    write_private(config_dir / CA_KEY, key_pem(ca.key))
    write_public(config_dir / CA_CERT, ca.cert_pem)
    written = [config_dir / CA_CERT, config_dir / CA_KEY]
    written += issue_client(config_dir, client_name, config_dir, ca=ca)
    return list(dict.fromkeys(written))


def issue_agent(
    config_dir: Path, name: str, sans: list[str], out: Path, *, days: int = CERT_DAYS
) -> list[Path]:
    """Write ca.pem, agent.pem, agent-key.pem into `out` for a manual agent install."""
    ca = load_ca(config_dir)
    key = new_key()
    cert = sign(ca, key.public_key(), common_name=name, role=ROLE_AGENT, sans=sans, days=days)
    write_public(out / CA_CERT, ca.cert_pem)
    write_public(out / AGENT_CERT, cert_pem(cert))
    write_private(out / AGENT_KEY, key_pem(key))
    return [out / CA_CERT, out / AGENT_CERT, out / AGENT_KEY]


def issue_client(
    config_dir: Path,
    name: str,
    out: Path,
    *,
    days: int = CERT_DAYS,
    ca: CertificateAuthority | None = None,
) -> list[Path]:
    """Write ca.pem, client.pem, client-key.pem into `out` (an operator's config dir)."""
    ca = ca or load_ca(config_dir)
    key = new_key()
    cert = sign(ca, key.public_key(), common_name=name, role=ROLE_CLIENT, days=days)
    write_public(out / CA_CERT, ca.cert_pem)
    write_public(out / CLIENT_CERT, cert_pem(cert))
    write_private(out / CLIENT_KEY, key_pem(key))
    return [out / CA_CERT, out / CLIENT_CERT, out / CLIENT_KEY]


def certificate_role(cert: x509.Certificate) -> str | None:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return None
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        return ROLE_CLIENT
    if ExtendedKeyUsageOID.SERVER_AUTH in eku:
        return ROLE_AGENT
    return None
