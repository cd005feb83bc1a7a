"""The fleet PKI: one CA in the controller's config dir, agent and client certificates signed by it.

Roles are carried by the Extended Key Usage: agent certificates are serverAuth only, client certificates
clientAuth only, so TLS stacks refuse an agent certificate presented as a client (and vice versa). Keys
are ECDSA P-256, written 0600. The CA's key never leaves the controller; agents enrolled over SSH send a
CSR (their key never leaves the host).

Every certificate issued with a CA loaded from a config dir is recorded in `issued.jsonl` there (serial,
CN, role, expiry), so `pki revoke NAME` can find serials by name and `pki ls` can show them. `crl.pem` is
the fleet's revocation list, signed by the CA, its CRL number one higher at every change. A CA rotation is
staged in `ca-rotation/` (the new CA, its cross-certificate signed by the current CA, a client certificate
of the new CA and a `ca.pem` trusting both) until every agent confirmed it; then it replaces the CA and the
old one is kept in `retired-ca/`.

What a client certificate may do (role, --allow, --scope) is carried in it as SAN URIs
(`dockyard:role:deployer`, `dockyard:allow:exec`, `dockyard:scope:site=lab`; see
agent/server/permissions.py); a client certificate without them (issued before roles) acts as admin.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent.errors import AgentError
from agent.server.permissions import Grant, Role, grant_of, grant_uris
from controller.config import CA_FILE, CLIENT_CERT_FILE, CLIENT_KEY_FILE
from controller.errors import ControllerError, UsageError

CA_CERT = CA_FILE
CA_KEY = "ca-key.pem"
CLIENT_CERT = CLIENT_CERT_FILE
CLIENT_KEY = CLIENT_KEY_FILE
AGENT_CERT = "agent.pem"
AGENT_KEY = "agent-key.pem"

ISSUED_FILE = "issued.jsonl"
CRL_FILE = "crl.pem"
ROTATION_DIR = "ca-rotation"
CROSS_CERT = "ca-cross.pem"
CONFIRMED_FILE = "confirmed"
OLD_IDENTITY_DIR = "old"
RETIRED_DIR = "retired-ca"

CA_DAYS = 3650
CRL_DAYS = 3650
CERT_DAYS = 365
ROLE_AGENT = "agent"
ROLE_CLIENT = "client"


@dataclass(frozen=True)
class CertificateAuthority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    home: Path | None = None  # the config dir whose issued.jsonl records what this CA signs

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
    grant: Grant | None = None,
) -> x509.Certificate:
    """Issue a leaf certificate for `role` (agent → serverAuth, client → clientAuth); a client's
    `grant` (role, allow, scopes) goes into its SAN URIs."""
    if role not in (ROLE_AGENT, ROLE_CLIENT):
        raise UsageError(f"unknown certificate role {role!r}")
    if grant is not None and role != ROLE_CLIENT:
        raise UsageError("only client certificates carry a role and scopes")
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
    entries = san_entries(names) if names else []
    if grant is not None:
        entries += [x509.UniformResourceIdentifier(u) for u in grant_uris(grant)]
    if entries:
        builder = builder.add_extension(x509.SubjectAlternativeName(entries), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    if ca.home is not None:
        record_issued(ca.home, cert, role)
    return cert


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
    return CertificateAuthority(cert=cert, key=key, home=config_dir)


def init(config_dir: Path, *, client_name: str = "controller", force: bool = False) -> list[Path]:
    """Create the fleet CA and the controller's own client certificate. Refuses to overwrite a CA."""
    if (config_dir / CA_KEY).exists() and not force:
        raise ControllerError(f"a fleet CA already exists in {config_dir} (use --force to replace it)")
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = dataclasses.replace(create_ca(), home=config_dir)
    write_private(config_dir / CA_KEY, key_pem(ca.key))
    write_public(config_dir / CA_CERT, ca.cert_pem)
    written = [config_dir / CA_CERT, config_dir / CA_KEY]
    written += issue_client(config_dir, client_name, config_dir, ca=ca, grant=Grant(Role.ADMIN))
    shutil.rmtree(config_dir / ROTATION_DIR, ignore_errors=True)
    if read_crl(config_dir) is not None:  # the old CA's list: start the new CA's, numbering on
        publish_crl(config_dir, ca, {})
        written.append(config_dir / CRL_FILE)
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
    grant: Grant | None = None,
) -> list[Path]:
    """Write ca.pem, client.pem, client-key.pem into `out` (an operator's config dir).

    `grant` None writes a certificate without a role (acts as admin, like those issued before roles).
    """
    ca = ca or load_ca(config_dir)
    key = new_key()
    cert = sign(ca, key.public_key(), common_name=name, role=ROLE_CLIENT, days=days, grant=grant)
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


# --- the record of issued certificates ------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    serial: int
    common_name: str
    role: str
    not_after: dt.datetime
    issuer: str
    grant: str = ""  # a client's role, +allow and @scopes as `pki ls` shows them

    @property
    def serial_hex(self) -> str:
        return f"{self.serial:x}"


def _cn(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def record_issued(config_dir: Path, cert: x509.Certificate, role: str) -> None:
    """Append one line to issued.jsonl (O_APPEND: concurrent CLI runs never interleave a line)."""
    line = json.dumps(
        {
            "serial": f"{cert.serial_number:x}",
            "cn": _cn(cert.subject),
            "role": role,
            "not_after": cert.not_valid_after_utc.isoformat(),
            "issuer": _cn(cert.issuer),
            **({"grant": grant_of(cert).describe()} if role == ROLE_CLIENT else {}),
        }
    )
    config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(config_dir / ISSUED_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def issued(config_dir: Path) -> list[Issued]:
    try:
        text = (config_dir / ISSUED_FILE).read_text()
    except FileNotFoundError:
        return []
    out: list[Issued] = []
    for line in text.splitlines():
        try:
            d = json.loads(line)
            out.append(
                Issued(
                    int(d["serial"], 16),
                    str(d["cn"]),
                    str(d["role"]),
                    dt.datetime.fromisoformat(d["not_after"]),
                    str(d.get("issuer", "")),
                    str(d.get("grant") or (grant_of_legacy() if d["role"] == ROLE_CLIENT else "")),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line; the rest stays usable
    return out


def grant_of_legacy() -> str:
    """What a client certificate recorded before roles existed can do."""
    return Grant(Role.ADMIN, legacy=True).describe()


@dataclass(frozen=True)
class Inspected:
    path: Path
    common_name: str
    serial: str
    kind: str  # agent | client | ?
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    grant: str  # for a client: role +allow @scope, or "admin (legacy: admin)"
    sans: tuple[str, ...]


def inspect_certificate(path: Path) -> Inspected:
    """What a certificate file says: names, validity, and (for a client) its role, allows and scopes."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError as exc:
        raise ControllerError(f"{path} does not exist") from exc
    except ValueError as exc:
        raise ControllerError(f"{path} is not a PEM certificate: {exc}") from exc
    kind = certificate_role(cert) or "?"
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple(str(getattr(n, "value", n)) for n in san)
    except x509.ExtensionNotFound:
        sans = ()
    grant = ""
    if kind == ROLE_CLIENT:
        try:
            grant = grant_of(cert).describe()
        except AgentError as exc:  # a malformed grant: say so, the agent refuses it
            grant = f"invalid ({exc.message})"
    return Inspected(
        path,
        _cn(cert.subject),
        f"{cert.serial_number:x}",
        kind,
        _cn(cert.issuer),
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        grant,
        sans,
    )


# --- revocation ---------------------------------------------------------------------------------------


def read_crl(config_dir: Path) -> x509.CertificateRevocationList | None:
    try:
        return x509.load_pem_x509_crl((config_dir / CRL_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ControllerError(f"{config_dir / CRL_FILE} is unreadable: {exc}") from exc


def crl_number(crl: x509.CertificateRevocationList) -> int:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0


def _signed_by(crl: x509.CertificateRevocationList, ca: CertificateAuthority) -> bool:
    return crl.issuer == ca.cert.subject and crl.is_signature_valid(ca.key.public_key())


def build_crl(ca: CertificateAuthority, revoked: dict[int, dt.datetime], number: int) -> bytes:
    """A CRL signed by `ca` naming `revoked` (serial → revocation time)."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.cert.subject)
        .last_update(now - dt.timedelta(minutes=5))
        .next_update(now + dt.timedelta(days=CRL_DAYS))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    for serial, when in sorted(revoked.items()):
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def current_revocations(config_dir: Path, ca: CertificateAuthority) -> dict[int, dt.datetime]:
    """What the CRL in config_dir revokes, if `ca` signed it (a retired CA's list is history)."""
    crl = read_crl(config_dir)
    if crl is None or not _signed_by(crl, ca):
        return {}
    return {r.serial_number: r.revocation_date_utc for r in crl}


def publish_crl(config_dir: Path, ca: CertificateAuthority, revoked: dict[int, dt.datetime]) -> bytes:
    """Write crl.pem for `revoked`, signed by `ca`, numbered one above the CRL it replaces."""
    previous = read_crl(config_dir)
    data = build_crl(ca, revoked, (crl_number(previous) if previous is not None else 0) + 1)
    write_public(config_dir / CRL_FILE, data)
    return data


def crl_for_push(config_dir: Path, ca: CertificateAuthority) -> bytes | None:
    """The CRL agents should have: crl.pem if `ca` signed it, None if nothing was ever revoked.

    After a CA change the list is re-issued by the current CA (same revocations of its own, next number).
    """
    crl = read_crl(config_dir)
    if crl is None:
        return None
    if _signed_by(crl, ca):
        return (config_dir / CRL_FILE).read_bytes()
    return publish_crl(config_dir, ca, {})


def parse_serial(text: str) -> int | None:
    """A hex serial as `pki ls` prints it (colons allowed), or None if `text` is not one."""
    digits = text.lower().replace(":", "")
    if digits.startswith("0x"):
        digits = digits[2:]
    if not digits or any(c not in "0123456789abcdef" for c in digits):
        return None
    return int(digits, 16)


def revoke(config_dir: Path, what: str) -> list[Issued]:
    """Revoke every unexpired certificate issued to CN `what`, or the one with serial `what`.

    Writes the new crl.pem and returns what was revoked. Refuses this controller's own client certificate
    (that would lock this config dir out of every agent).
    """
    ca = load_ca(config_dir)
    record = [i for i in issued(config_dir) if i.issuer == _cn(ca.cert.subject)]
    now = _now()
    chosen = [i for i in record if i.common_name == what and i.not_after > now]
    if not chosen:
        serial = parse_serial(what)
        if serial is None:
            raise ControllerError(
                f"no unexpired certificate issued to {what!r} on record ({config_dir / ISSUED_FILE}); "
                "give its serial number (hex, as `dockyard pki ls` shows)"
            )
        chosen = [i for i in record if i.serial == serial] or [Issued(serial, "?", "?", now, "")]
    own = _own_client_serial(config_dir)
    if own is not None and any(i.serial == own for i in chosen):
        raise ControllerError(
            f"refusing to revoke this controller's own client certificate ({config_dir / CLIENT_CERT}): "
            "issue another client certificate and use it first"
        )
    revoked = current_revocations(config_dir, ca)
    fresh = [i for i in chosen if i.serial not in revoked]
    for i in fresh:
        revoked[i.serial] = now
    if fresh:
        publish_crl(config_dir, ca, revoked)
    return fresh


def _own_client_serial(config_dir: Path) -> int | None:
    try:
        return x509.load_pem_x509_certificate((config_dir / CLIENT_CERT).read_bytes()).serial_number
    except (FileNotFoundError, ValueError):
        return None


# --- CA rotation ----------------------------------------------------------------------------------


def cross_sign(current: CertificateAuthority, new: CertificateAuthority) -> x509.Certificate:
    """The new CA's subject and key signed by the current CA: agents' proof that `current` chose `new`."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(new.cert.subject)
        .issuer_name(current.cert.subject)
        .public_key(new.key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(new.cert.not_valid_after_utc, current.cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(new.key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(current.key.public_key()), critical=False
        )
        .sign(current.key, hashes.SHA256())
    )


@dataclass(frozen=True)
class Rotation:
    """A CA rotation in progress: its files live in config_dir/ca-rotation/."""

    dir: Path
    current: CertificateAuthority
    new: CertificateAuthority
    cross: x509.Certificate

    @property
    def old_identity(self) -> Path:
        return self.dir / OLD_IDENTITY_DIR

    def confirmed(self) -> set[str]:
        try:
            return set((self.dir / CONFIRMED_FILE).read_text().split())
        except FileNotFoundError:
            return set()

    def record_confirmed(self, hosts: set[str]) -> None:
        write_public(self.dir / CONFIRMED_FILE, "".join(f"{h}\n" for h in sorted(hosts)).encode())


def begin_ca_rotation(config_dir: Path, *, client_name: str = "controller") -> Rotation:
    """Start (or resume) a CA rotation: a new CA, cross-signed by the current one, staged aside.

    The staging dir is a config dir of its own: its ca.pem trusts both CAs (agents answer with a
    certificate of either during the rotation) and its client certificate is the new CA's; its `old/`
    is the same with this controller's current client certificate (what agents accept until confirmed).
    """
    current = load_ca(config_dir)
    staging = config_dir / ROTATION_DIR
    if (staging / CA_KEY).exists():
        new = load_ca(staging)
        cross = x509.load_pem_x509_certificate((staging / CROSS_CERT).read_bytes())
        try:
            cross.verify_directly_issued_by(current.cert)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise ControllerError(
                f"{staging} holds a rotation that is not from the current CA; remove it to start over"
            ) from exc
        return Rotation(staging, current, dataclasses.replace(new, home=config_dir), cross)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True, mode=0o700)
    new = dataclasses.replace(create_ca(), home=config_dir)
    cross = cross_sign(current, new)
    write_public(staging / CROSS_CERT, cert_pem(cross))
    issue_client(config_dir, client_name, staging, ca=new, grant=Grant(Role.ADMIN))
    write_public(staging / CA_CERT, new.cert_pem + current.cert_pem)
    old = staging / OLD_IDENTITY_DIR
    write_public(old / CA_CERT, current.cert_pem + new.cert_pem)
    write_public(old / CLIENT_CERT, (config_dir / CLIENT_CERT).read_bytes())
    write_private(old / CLIENT_KEY, (config_dir / CLIENT_KEY).read_bytes())
    write_private(staging / CA_KEY, key_pem(new.key))  # last: its presence marks a complete staging dir
    return Rotation(staging, current, new, cross)


def staged_crl(config_dir: Path, rotation: Rotation) -> bytes | None:
    """The new CA's revocation list, pushed once an agent dropped the old CA (None: nothing revoked ever).

    It revokes nothing (every certificate revoked so far is the old CA's) and numbers on from crl.pem;
    made once per rotation so every agent gets the same list.
    """
    staged = rotation.dir / CRL_FILE
    if staged.exists():
        return staged.read_bytes()
    previous = read_crl(config_dir)
    if previous is None:
        return None
    data = build_crl(rotation.new, {}, crl_number(previous) + 1)
    write_public(staged, data)
    return data


def finish_ca_rotation(config_dir: Path, rotation: Rotation) -> list[Path]:
    """Make the new CA the fleet CA (old files kept in retired-ca/<serial>/) and re-issue the CRL."""
    retired = config_dir / RETIRED_DIR / f"{rotation.current.cert.serial_number:x}"[:16]
    retired.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in (CA_CERT, CA_KEY, CLIENT_CERT, CLIENT_KEY):
        if (config_dir / name).exists():
            shutil.copy2(config_dir / name, retired / name)
    write_public(config_dir / CA_CERT, rotation.new.cert_pem)
    write_public(config_dir / CLIENT_CERT, (rotation.dir / CLIENT_CERT).read_bytes())
    write_private(config_dir / CLIENT_KEY, (rotation.dir / CLIENT_KEY).read_bytes())
    write_private(config_dir / CA_KEY, key_pem(rotation.new.key))
    staged = rotation.dir / CRL_FILE
    if staged.exists():
        write_public(config_dir / CRL_FILE, staged.read_bytes())
    shutil.rmtree(rotation.dir)
    return [config_dir / CA_CERT, config_dir / CA_KEY, config_dir / CLIENT_CERT, retired]
