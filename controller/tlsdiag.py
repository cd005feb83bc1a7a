"""Explain a failed mutual-TLS connection in one sentence (gRPC only says the handshake failed).

Checks our own client identity first (expired, wrong role, wrong CA), then performs a TLS handshake
with Python's ssl module against the agent to learn what the agent's side says: unknown CA, name
mismatch, expired, or that it rejected our certificate.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from controller import pki

_REJECT_REASONS = {
    "TLSV1_ALERT_UNKNOWN_CA": "the agent does not trust our client certificate's CA",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the agent says our client certificate has expired",
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (
        "the agent refuses our certificate's purpose (not a client certificate)"
    ),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the agent requires a client certificate",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the agent rejected our client certificate",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the agent rejected the TLS handshake",
}


def check_client_identity(ca_pem: bytes, cert_pem: bytes, now: dt.datetime | None = None) -> str | None:
    """A reason our own client certificate cannot work, or None."""
    now = now or dt.datetime.now(dt.UTC)
    cert = x509.load_pem_x509_certificate(cert_pem)
    ca = x509.load_pem_x509_certificate(ca_pem)
    if cert.not_valid_after_utc < now:
        return f"our client certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    if cert.not_valid_before_utc > now:
        return f"our client certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
    role = pki.certificate_role(cert)
    if role != pki.ROLE_CLIENT:
        return f"our certificate is not a client certificate (role: {role or 'none'})"
    public_key = ca.public_key()
    try:
        if cert.issuer != ca.subject or not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise ValueError
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return "our client certificate was not issued by the fleet CA (ca.pem)"
    return None


def diagnose(
    host: str, port: int, ca_file: Path, cert_file: Path, key_file: Path, timeout: float = 3.0
) -> str | None:
    """Describe why a TLS connection to the agent fails, or None if it works from here."""
    try:
        local = check_client_identity(ca_file.read_bytes(), cert_file.read_bytes())
    except (OSError, ValueError) as exc:
        return f"cannot read our TLS files: {exc}"
    if local:
        return local
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))
    ctx.load_cert_chain(str(cert_file), str(key_file))
    ctx.set_alpn_protocols(["h2"])
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port} (is dockyard-agent running and listening there?)"
    except TimeoutError:
        return f"timed out connecting to {host}:{port}"
    except OSError as exc:
        return f"cannot connect to {host}:{port}: {exc.strerror or exc}"
    try:
        with ctx.wrap_socket(raw, server_hostname=host) as tls:
            tls.settimeout(timeout)
            try:
                tls.recv(1)  # TLS 1.3: the agent judges our certificate after our Finished; wait for its word
            except TimeoutError:
                return None
            return None
    except ssl.SSLCertVerificationError as exc:
        return _verify_reason(exc, host)
    except ssl.SSLError as exc:
        reason = exc.reason or ""
        if reason in _REJECT_REASONS:
            return _REJECT_REASONS[reason]
        return f"TLS handshake failed: {reason or exc}"
    except TimeoutError:
        return f"timed out in the TLS handshake with {host}:{port}"
    except OSError as exc:
        return f"connection to {host}:{port} broke during the TLS handshake: {exc.strerror or exc}"
    finally:
        raw.close()


def _verify_reason(exc: ssl.SSLCertVerificationError, host: str) -> str:
    code = exc.verify_code
    if code == 10:
        return "the agent's certificate has expired"
    if code == 9:
        return "the agent's certificate is not yet valid"
    if code in (62, 64):  # hostname or IP address mismatch
        return f"the agent's certificate does not match the name {host!r} (name mismatch)"
    if code in (2, 18, 19, 20, 21):
        return "the agent's certificate is signed by an unknown CA (not this fleet's CA)"
    return f"the agent's certificate was rejected: {exc.verify_message}"
