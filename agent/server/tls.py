"""Server-side mutual TLS: the agent's identity, its trust anchors and its revocation list.

The listener keeps running across a reload: gRPC asks `fetch` for the current certificate configuration
at every new handshake, and we hand it a new one only after `reload()` validated the files on disk. A bad
new set of files is refused (logged) and the old identity stays in force, so a botched rotation never
takes an agent off the network. Docker cannot do this (moby#23936).

`ca.pem` holds the trust anchors: one CA, or two while a CA rotation waits for its confirmation
(`ca-pending.pem` names the new one). `crl.pem` is the fleet's revocation list. gRPC Python cannot hand a
CRL to its TLS stack, so revocation is enforced after the handshake, on every call, by `Revocations`
(used by the server interceptor); the file is re-read whenever it changes on disk.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from agent import errors, log

_log = log.get(__name__)

CA_FILE = "ca.pem"
CERT_FILE = "agent.pem"
KEY_FILE = "agent-key.pem"
PENDING_CA_FILE = "ca-pending.pem"
CRL_FILE = "crl.pem"


@dataclass(frozen=True)
class TlsIdentity:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    subject: str
    not_after: str


def parse_certificates(pem: bytes, what: str) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; InvalidArgument if there is none or one is unreadable."""
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise errors.InvalidArgument(f"{what}: unreadable PEM certificate: {exc}") from exc
    if not certs:
        raise errors.InvalidArgument(f"{what}: no PEM certificate")
    return certs


def parse_certificate(pem: bytes, what: str) -> x509.Certificate:
    certs = parse_certificates(pem, what)
    if len(certs) != 1:
        raise errors.InvalidArgument(f"{what}: expected one PEM certificate, got {len(certs)}")
    return certs[0]


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def common_name(name: x509.Name) -> str:
    cns = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else name.rfc4514_string()


def load_anchors(tls_dir: Path) -> list[x509.Certificate]:
    """The CAs this agent trusts (ca.pem); InvalidArgument if there is none."""
    try:
        data = (tls_dir / CA_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise errors.InvalidArgument(f"TLS dir {tls_dir} lacks {CA_FILE}") from exc
    return parse_certificates(data, f"{tls_dir / CA_FILE}")


def issuing_anchor(cert: x509.Certificate, anchors: list[x509.Certificate]) -> x509.Certificate | None:
    """The anchor whose key signed `cert` (issuer name and signature both checked), or None."""
    for anchor in anchors:
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return anchor
    return None


def valid_now(cert: x509.Certificate, now: dt.datetime | None = None) -> bool:
    now = now or dt.datetime.now(dt.UTC)
    return cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def has_usage(cert: x509.Certificate, usage: x509.ObjectIdentifier) -> bool:
    try:
        return usage in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False


def load_identity(tls_dir: Path) -> TlsIdentity:
    """Read and check ca.pem, agent.pem and agent-key.pem; InvalidArgument says what is wrong."""
    try:
        ca_pem = (tls_dir / CA_FILE).read_bytes()
        cert_pem = (tls_dir / CERT_FILE).read_bytes()
        key_pem = (tls_dir / KEY_FILE).read_bytes()
    except FileNotFoundError as exc:
        raise errors.InvalidArgument(
            f"TLS dir {tls_dir} lacks {Path(exc.filename).name} (needs {CA_FILE}, {CERT_FILE}, {KEY_FILE})"
        ) from exc
    anchors = parse_certificates(ca_pem, f"TLS dir {tls_dir}: {CA_FILE}")
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise errors.InvalidArgument(f"TLS dir {tls_dir}: unreadable PEM: {exc}") from exc
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise errors.InvalidArgument(f"TLS dir {tls_dir}: {KEY_FILE} does not match {CERT_FILE}")
    if issuing_anchor(cert, anchors) is None:
        raise errors.InvalidArgument(f"TLS dir {tls_dir}: {CERT_FILE} was not issued by {CA_FILE}")
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and ExtendedKeyUsageOID.SERVER_AUTH not in eku:
        raise errors.InvalidArgument(f"TLS dir {tls_dir}: {CERT_FILE} is not an agent (server) certificate")
    return TlsIdentity(
        ca_pem=ca_pem,
        cert_pem=cert_pem,
        key_pem=key_pem,
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc.isoformat(),
    )


def crl_number(crl: x509.CertificateRevocationList) -> int | None:
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return None


def verify_crl(crl_pem: bytes, anchors: list[x509.Certificate]) -> x509.CertificateRevocationList:
    """Parse a CRL and check it is signed by one of `anchors`; PermissionDenied if not."""
    return verify_crl_signer(crl_pem, anchors)[0]


def verify_crl_signer(
    crl_pem: bytes, anchors: list[x509.Certificate]
) -> tuple[x509.CertificateRevocationList, x509.Certificate]:
    """`verify_crl`, also returning the anchor that signed the list."""
    try:
        crl = x509.load_pem_x509_crl(crl_pem)
    except ValueError as exc:
        raise errors.InvalidArgument(f"unreadable PEM certificate revocation list: {exc}") from exc
    for anchor in anchors:
        if crl.issuer == anchor.subject and crl.is_signature_valid(anchor.public_key()):  # type: ignore[arg-type]
            return crl, anchor
    trusted = ", ".join(f"CN={common_name(a.subject)}" for a in anchors)
    raise errors.PermissionDenied(
        f"the revocation list of CN={common_name(crl.issuer)} is not signed by a CA this agent trusts "
        f"({trusted})"
    )


@dataclass(frozen=True)
class _RevokedSet:
    signer: x509.Certificate | None  # the CA whose certificates the list revokes
    serials: frozenset[int]


_NO_CRL = _RevokedSet(None, frozenset())


class Revocations:
    """The CRL in force (`crl.pem`, verified against `ca.pem`), re-read whenever either file changes.

    `check` runs on every call made with a client certificate, so it costs two stat() calls and a dict
    lookup; a CRL that no longer verifies (say, signed by a CA dropped by a rotation) revokes nothing,
    which is right: every certificate it named was issued by a CA the agent no longer trusts.
    """

    _CACHE_MAX = 1024

    def __init__(self, tls_dir: Path) -> None:
        self.tls_dir = tls_dir
        self._key: tuple[tuple[int, int, int], ...] | None = None
        self._revoked = _NO_CRL
        self._peers: dict[bytes, tuple[x509.Certificate, int, str]] = {}

    def _stamp(self) -> tuple[tuple[int, int, int], ...]:
        out = []
        for name in (CRL_FILE, CA_FILE):
            try:
                st = os.stat(self.tls_dir / name)
            except FileNotFoundError:
                out.append((0, 0, 0))
                continue
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(out)

    def _current(self) -> _RevokedSet:
        stamp = self._stamp()
        if stamp != self._key:
            self._key = stamp
            self._revoked = self._load()
        return self._revoked

    def _load(self) -> _RevokedSet:
        try:
            crl_pem = (self.tls_dir / CRL_FILE).read_bytes()
        except FileNotFoundError:
            return _NO_CRL
        try:
            crl, signer = verify_crl_signer(crl_pem, load_anchors(self.tls_dir))
        except errors.AgentError as exc:
            _log.warning("tls.crl_ignored", reason=exc.message)
            return _NO_CRL
        revoked = frozenset(r.serial_number for r in crl)
        _log.info("tls.crl_loaded", crl_number=crl_number(crl), revoked=len(revoked))
        return _RevokedSet(signer, revoked)

    def _peer(self, cert_pem: bytes) -> tuple[x509.Certificate, int, str]:
        found = self._peers.get(cert_pem)
        if found is None:
            cert = x509.load_pem_x509_certificate(cert_pem)
            found = (cert, cert.serial_number, common_name(cert.subject))
            if len(self._peers) >= self._CACHE_MAX:
                self._peers.clear()
            self._peers[cert_pem] = found
        return found

    def check(self, cert_pem: bytes) -> None:
        """PermissionDenied if the peer certificate is on the CRL in force."""
        revoked = self._current()
        if not revoked.serials:
            return
        cert, serial, cn = self._peer(cert_pem)
        # Same serial and issued by the list's signer (by key: a rotated CA keeps its name).
        if serial in revoked.serials and revoked.signer and issuing_anchor(cert, [revoked.signer]):
            raise errors.PermissionDenied(f"certificate {serial:x} (CN={cn}) is revoked")


class ReloadableServerCredentials:
    """Server credentials whose certificate set can be swapped while the listener keeps serving."""

    def __init__(self, tls_dir: Path) -> None:
        self.tls_dir = tls_dir
        self._lock = threading.Lock()
        self._identity = load_identity(tls_dir)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.credentials = grpc.dynamic_ssl_server_credentials(
            self._configuration(self._identity),
            self._fetch,
            require_client_authentication=True,
        )

    @staticmethod
    def _configuration(identity: TlsIdentity) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(identity.key_pem, identity.cert_pem)], root_certificates=identity.ca_pem
        )

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        # Called by gRPC core at each new handshake; None means "keep what you have".
        with self._lock:
            pending, self._pending = self._pending, None
            return pending

    @property
    def identity(self) -> TlsIdentity:
        return self._identity

    def reload(self) -> bool:
        """Re-read the TLS dir; on success new handshakes use the new files. Returns False if refused."""
        try:
            identity = load_identity(self.tls_dir)
        except errors.AgentError as exc:
            _log.error("tls.reload_refused", reason=exc.message)
            return False
        with self._lock:
            self._identity = identity
            self._pending = self._configuration(identity)
        _log.info("tls.reloaded", subject=identity.subject, not_after=identity.not_after)
        return True
