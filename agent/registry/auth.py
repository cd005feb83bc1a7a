"""Registry authentication: anonymous, Basic, and the Bearer-token scheme of Docker Hub, GHCR and Harbor.

A registry answers 401 with `WWW-Authenticate`. For `Basic` we send the caller's credentials; for `Bearer`
we ask the token server named by `realm` for a token covering `service` and the scopes we need
(`repository:<name>:pull[,push]`), authenticating to it with Basic if the caller gave credentials, and cache
the token per scope set until shortly before it expires. Credentials arrive with each request and live only
in memory for that call: never written, never logged (`Credentials.__repr__` hides the password).
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from agent.errors import RegistryAuth, Unavailable
from agent.registry.transport import Transport, registry_error

_TOKEN_BODY_LIMIT = 1024 * 1024
DEFAULT_TOKEN_LIFETIME = 60.0
# Refresh a little before the server's expiry so a token does not lapse mid-request.
EXPIRY_MARGIN = 10.0


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Challenge:
    scheme: str  # lower-case: "basic", "bearer", ...
    params: dict[str, str]


_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z/]+")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\.)*)"')


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse WWW-Authenticate values (RFC 7235): several challenges per header, quoted strings with commas."""
    out: list[Challenge] = []
    for header in headers:
        current: Challenge | None = None
        text, pos = header, 0
        while True:
            while pos < len(text) and text[pos] in " \t,":
                pos += 1
            token = _TOKEN_RE.match(text, pos)
            if token is None:
                break  # end, or a malformed tail: keep what parsed
            pos = token.end()
            after = pos
            while after < len(text) and text[after] in " \t":
                after += 1
            equals = after
            while equals < len(text) and text[equals] == "=":
                equals += 1
            rest = equals
            while rest < len(text) and text[rest] in " \t":
                rest += 1
            is_param = equals - after == 1 and rest < len(text) and text[rest] != ","
            if not is_param:
                if equals > after:  # token68 (e.g. `Negotiate abc==`): belongs to the current scheme
                    pos = equals
                    continue
                current = Challenge(token.group().lower(), {})
                out.append(current)
                continue
            quoted = _QUOTED_RE.match(text, rest)
            if quoted is not None:
                value = re.sub(r"\\(.)", r"\1", quoted.group(1))
                pos = quoted.end()
            else:
                bare = re.compile(r"[^\s,]*").match(text, rest)
                assert bare is not None
                value, pos = bare.group(), bare.end()
            if current is not None:
                current.params[token.group().lower()] = value
    return out


def _hostname(netloc: str) -> str | None:
    """The host part of `host[:port]` (IPv6 brackets removed), lower-cased."""
    return urlsplit(f"//{netloc}").hostname


def repository_scope(repository: str, actions: str) -> str:
    return f"repository:{repository}:{actions}"


@dataclass
class _Token:
    value: str
    expires: float


class Authenticator:
    """Authorization for one registry host during one call; thread-safe (layers are fetched in parallel)."""

    def __init__(self, transport: Transport, host: str, credentials: Credentials | None) -> None:
        self._transport = transport
        self.host = host
        self._credentials = credentials
        self._lock = threading.Lock()
        self._basic = False
        self._bearer: Challenge | None = None
        self._tokens: dict[frozenset[str], _Token] = {}

    def header(self, scopes: frozenset[str]) -> str | None:
        """The Authorization value to send up front, or None (anonymous until challenged)."""
        with self._lock:
            if self._basic and self._credentials is not None:
                return self._credentials.basic()
            token = self._tokens.get(scopes)
            if token is not None and token.expires > time.monotonic():
                return f"Bearer {token.value}"
            bearer = self._bearer
        if bearer is not None:
            return self._fetch_token(bearer, scopes)
        return None

    def challenged(self, www_authenticate: list[str], scopes: frozenset[str]) -> str:
        """React to a 401: the Authorization to retry with once (a second 401 means `refused()`)."""
        challenges = parse_challenges(www_authenticate)
        bearer = next((c for c in challenges if c.scheme == "bearer" and "realm" in c.params), None)
        if bearer is not None:
            with self._lock:
                self._bearer = bearer
                self._tokens.pop(scopes, None)
            wanted = scopes | frozenset(bearer.params.get("scope", "").split())
            return self._fetch_token(bearer, wanted, cache_as=scopes)
        if any(c.scheme == "basic" for c in challenges):
            if self._credentials is None:
                raise self.refused()
            with self._lock:
                self._basic = True
            return self._credentials.basic()
        raise RegistryAuth(
            f"{self.host} asked for an unsupported authentication scheme: {www_authenticate!r}"
        )

    def refused(self) -> RegistryAuth:
        """The error for a registry that still says 401 after we authenticated as well as we could."""
        if self._credentials is None:
            return RegistryAuth(f"{self.host} requires a login: run `dockyard login {self.host}`")
        return RegistryAuth(f"{self.host} refused the credentials of user {self._credentials.username!r}")

    def _plain_http_realm_allowed(self, realm_netloc: str) -> bool:
        """Credentials may go to a plain-HTTP token server that is itself listed as insecure, or that runs
        on the host of a registry we already talk plain HTTP to (the usual lab and CI setup, which docker,
        podman and skopeo accept): the password would cross the same unencrypted path either way."""
        if self._transport.is_insecure(realm_netloc):
            return True
        return self._transport.is_insecure(self.host) and _hostname(realm_netloc) == _hostname(self.host)

    def _fetch_token(
        self, challenge: Challenge, scopes: frozenset[str], cache_as: frozenset[str] | None = None
    ) -> str:
        realm = challenge.params["realm"]
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RegistryAuth(f"{self.host} named an invalid token realm {realm!r}")
        headers: dict[str, str] = {"Accept": "application/json"}
        if self._credentials is not None:
            if parts.scheme == "http" and not self._plain_http_realm_allowed(parts.netloc):
                raise RegistryAuth(
                    f"refusing to send credentials over plain HTTP to the token server {parts.netloc}: "
                    f"list it with --insecure-registry {parts.netloc} if that is intended"
                )
            headers["Authorization"] = self._credentials.basic()
        query: list[tuple[str, str]] = []
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        query += [("scope", scope) for scope in sorted(scopes)]
        url = realm + ("&" if parts.query else "?") + urlencode(query) if query else realm
        response = self._transport.request("GET", url, headers)
        if response.status in (401, 403):
            response.close()
            raise self.refused()
        if response.status != 200:
            raise registry_error(response, f"token server {parts.netloc}")
        try:
            doc = json.loads(response.body(_TOKEN_BODY_LIMIT))
        except ValueError as exc:
            raise Unavailable(f"token server {parts.netloc} sent invalid JSON") from exc
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise Unavailable(f"token server {parts.netloc} sent no token")
        lifetime = doc.get("expires_in")
        if not isinstance(lifetime, int | float) or isinstance(lifetime, bool) or lifetime <= 0:
            lifetime = DEFAULT_TOKEN_LIFETIME
        expires = time.monotonic() + max(float(lifetime) - EXPIRY_MARGIN, float(lifetime) / 2)
        with self._lock:
            self._tokens[cache_as if cache_as is not None else scopes] = _Token(token, expires)
        return f"Bearer {token}"
