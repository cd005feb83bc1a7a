"""Server-side mutual TLS: load the agent's identity from its TLS dir and hot-reload it on demand.

The listener keeps running across a reload: gRPC asks `fetch` for the current certificate configuration
at every new handshake, and we hand it a new one only after `reload()` validated the files on disk. A bad
new set of files is refused (logged) and the old identity stays in force, so a botched rotation never
takes an agent off the network. Docker cannot do this (moby#23936).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent import errors, log

_log = log.get(__name__)

CA_FILE = "ca.pem"
CERT_FILE = "agent.pem"
KEY_FILE = "agent-key.pem"


@dataclass(frozen=True)
class TlsIdentity:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes
    subject: str
    not_after: str


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
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
        ca = x509.load_pem_x509_certificate(ca_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
    except ValueError as exc:
        raise errors.InvalidArgument(f"TLS dir {tls_dir}: unreadable PEM: {exc}") from exc
    if cert.public_key().public_numbers() != key.public_key().public_numbers():  # type: ignore[union-attr]
        raise errors.InvalidArgument(f"TLS dir {tls_dir}: {KEY_FILE} does not match {CERT_FILE}")
    if cert.issuer != ca.subject:
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
