"""A small Docker token server for tests: Basic-authenticates users and signs ES256 JWTs the registry trusts.

distribution 2.8 accepts a JWT whose header carries an `x5c` chain ending at its `rootcertbundle`; `aud`
must be one string (the registry's `service`) and `iss` its configured issuer. Every request is recorded
so tests can assert on scopes and on token caching.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from controller import pki

SERVICE = "dockyard-test-registry"
ISSUER = "dockyard-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@dataclass
class TokenRequest:
    user: str | None
    scopes: list[str]
    status: int


@dataclass
class TokenIssuer:
    """Serves GET /token over HTTPS (plain HTTP with `tls=False`) on 127.0.0.1; `users` maps name → password.

    `realm_host` is the name the realm URL gives for it (e.g. "localhost": another host than the registry's).
    """

    ca: pki.CertificateAuthority
    workdir: Path
    users: dict[str, str]
    anonymous_pull: bool = False
    lifetime: int = 300
    tls: bool = True
    realm_host: str = "127.0.0.1"
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._signing_key = pki.new_key()
        self._signing_cert = pki.sign(
            self.ca, self._signing_key.public_key(), common_name="token-signer", role=pki.ROLE_AGENT
        )
        server_key = pki.new_key()
        server_cert = pki.sign(
            self.ca, server_key.public_key(), common_name="127.0.0.1", role=pki.ROLE_AGENT, sans=["127.0.0.1"]
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "issuer.pem").write_bytes(pki.cert_pem(server_cert))
        (self.workdir / "issuer-key.pem").write_bytes(pki.key_pem(server_key))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.workdir / "issuer.pem", self.workdir / "issuer-key.pem")
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                issuer._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls:
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"{self.realm_host}:{self._server.server_address[1]}"

    @property
    def realm(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}/token"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _user(self, header: str | None) -> tuple[str | None, bool]:
        """(user, credentials valid); no header → (None, True)."""
        if not header:
            return None, True
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None, False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None, False
        return user, self.users.get(user) == password

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        scopes = query.get("scope", [])
        user, valid = self._user(handler.headers.get("Authorization"))
        status = 200 if parts.path == "/token" and valid and query.get("service") == [SERVICE] else 401
        with self._lock:
            self.requests.append(TokenRequest(user, scopes, status))
        if status != 200:
            body = json.dumps({"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]}).encode()
            handler.send_response(401)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
            return
        access = []
        for scope in " ".join(scopes).split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            granted = (
                wanted if user is not None else [a for a in wanted if a == "pull" and self.anonymous_pull]
            )
            access.append({"type": kind, "name": name, "actions": granted})
        token = self.sign(user or "", access)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = json.dumps({"token": token, "expires_in": self.lifetime, "issued_at": now}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def sign(self, subject: str, access: list[dict[str, Any]]) -> str:
        der = self._signing_cert.public_bytes(serialization.Encoding.DER)
        header = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode("ascii")]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,
            "exp": now + self.lifetime,
            "nbf": now - 30,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        der_signature = self._signing_key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der_signature)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"
