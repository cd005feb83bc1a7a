"""HTTP(S) to registries: TLS policy per host, pooled connections, and the one place mapping HTTP errors.

Why the standard library (http.client + ssl) in worker threads rather than an async client (httpx,
aiohttp): a layer's bytes go through sha256, zlib/zstd, tar extraction and fsync — all blocking work that
has to run in a thread anyway. With a blocking client the whole chain is one pull-based file object in one
thread per layer (hashlib and zlib release the GIL, so layers proceed in parallel), a dropped connection
is resumed with a Range request inside `read()` without the unpacker noticing, and client certificates are
plain `ssl.SSLContext` settings. An async client would add a queue hand-off per chunk between the loop and
the unpacking thread, and a dependency, for no gain.

TLS is verified by default against the system CAs plus `<config_dir>/certs.d/<host:port>/*.crt`; a client
certificate is `client.cert` + `client.key` (any `X.cert` with its `X.key`) in the same directory, as Docker
lays them out. Plain HTTP is used only for hosts listed as insecure registries.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urljoin, urlsplit

from agent.errors import (
    AgentError,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RegistryAuth,
    Unavailable,
)

DEFAULT_TIMEOUT = 60.0
MAX_REDIRECTS = 5
_ERROR_BODY_LIMIT = 64 * 1024
_POOL_LIMIT = 8
_BLOCK = 256 * 1024  # bytes per send() of a streamed request body
USER_AGENT = "dockyard-agent"
# OpenSSL's reasons when the peer answers a ClientHello with something that is not TLS (an HTTP response).
_NOT_TLS_REASONS = frozenset({"WRONG_VERSION_NUMBER", "PACKET_LENGTH_TOO_LONG"})
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"  # where docker.io's distribution API answers


class Readable(Protocol):
    """A request body streamed from a file-like object (http.client reads it block by block)."""

    def read(self, amount: int = -1, /) -> bytes: ...


Body = bytes | Readable | None


class Transient(Unavailable):
    """A failure worth retrying with backoff: dropped connection, timeout, 5xx, 429."""


@dataclass(frozen=True)
class Endpoint:
    """Where a registry (or mirror) answers: scheme, `host[:port]` and an optional path prefix."""

    scheme: str
    host: str
    prefix: str = ""

    def url(self, path: str) -> str:
        return f"{self.scheme}://{self.host}{self.prefix}{path}"


class Response:
    """One HTTP response; the body is streamed. Close it (or read it to the end) to reuse the connection."""

    def __init__(
        self, transport: Transport, key: tuple[str, str], conn: http.client.HTTPConnection, raw: Any, url: str
    ) -> None:
        self._transport = transport
        self._key = key
        self._conn: http.client.HTTPConnection | None = conn
        self._raw: http.client.HTTPResponse = raw
        self.status: int = raw.status
        self.url = url

    def header(self, name: str) -> str | None:
        return self._raw.getheader(name)

    def headers(self, name: str) -> list[str]:
        return self._raw.headers.get_all(name) or []

    def read(self, amount: int) -> bytes:
        """Up to `amount` bytes; b"" at the end (or when the peer closed early: callers check lengths)."""
        try:
            data = self._raw.read(amount)
        except (OSError, http.client.HTTPException) as exc:
            self._discard()
            raise Transient(f"connection to {self._key[1]} dropped: {_describe(exc)}") from exc
        if not data:
            self.close()
        return data

    def body(self, limit: int) -> bytes:
        """The whole body, refusing more than `limit` bytes."""
        chunks: list[bytes] = []
        total = 0
        while True:
            data = self.read(min(1 << 20, limit + 1 - total))
            if not data:
                break
            total += len(data)
            chunks.append(data)
            if total > limit:
                self._discard()
                raise FailedPrecondition(f"response from {self.url} is larger than {limit} bytes")
        return b"".join(chunks)

    def close(self) -> None:
        """Release the connection: back to the pool if the body was consumed, else closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if self._raw.isclosed() and not self._raw.will_close:
            self._transport._release(self._key, conn)
        else:
            self._raw.close()
            conn.close()

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._raw.close()
            conn.close()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Transport:
    """Opens HTTP(S) connections with the right TLS policy per host; thread-safe; pools idle connections."""

    def __init__(
        self,
        certs_dir: Path,
        insecure: Iterable[str] = (),
        *,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.certs_dir = certs_dir
        self.insecure = frozenset(h.lower() for h in insecure)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._contexts: dict[str, ssl.SSLContext] = {}
        self._idle: dict[tuple[str, str], list[http.client.HTTPConnection]] = {}

    # -- policy ------------------------------------------------------------------------------------------
    def is_insecure(self, host: str) -> bool:
        return host.lower() in self.insecure

    def endpoint(self, location: str) -> Endpoint:
        """The endpoint for a registry host or a mirror URL (`host:port` or `https://host:port/prefix`)."""
        if "://" in location:
            parts = urlsplit(location)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidArgument(f"invalid registry URL {location!r}")
            if parts.scheme == "http" and not self.is_insecure(parts.netloc):
                raise InvalidArgument(
                    f"registry URL {location!r} is plain HTTP but {parts.netloc} is not an insecure registry"
                )
            return Endpoint(parts.scheme, parts.netloc, parts.path.rstrip("/"))
        host = DOCKER_HUB_API if location == DOCKER_HUB else location
        return Endpoint("http" if self.is_insecure(location) else "https", host)

    def ssl_context(self, host: str) -> ssl.SSLContext:
        """System CAs + certs.d/<host>/*.crt; client cert pairs X.cert/X.key from the same directory."""
        with self._lock:
            cached = self._contexts.get(host)
        if cached is not None:
            return cached
        context = ssl.create_default_context()
        hostname, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
        directories = [self.certs_dir / host]
        if port == "443":
            directories.append(self.certs_dir / hostname)
        for directory in directories:
            if not directory.is_dir():
                continue
            try:
                for ca in sorted(directory.glob("*.crt")):
                    context.load_verify_locations(cafile=str(ca))
                for cert in sorted(directory.glob("*.cert")):
                    key = cert.with_suffix(".key")
                    if not key.exists():
                        raise FailedPrecondition(f"client certificate {cert} has no matching {key.name}")
                    context.load_cert_chain(str(cert), str(key))
            except (OSError, ssl.SSLError) as exc:
                raise FailedPrecondition(f"cannot load TLS files from {directory}: {_describe(exc)}") from exc
        with self._lock:
            self._contexts[host] = context
        return context

    # -- requests ----------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        *,
        follow_redirects: bool = True,
    ) -> Response:
        """Send one request (following redirects for GET/HEAD); socket and TLS failures become AgentErrors.

        HTTP error statuses are returned, not raised: callers decide (401 → auth, 404 → maybe fine).
        Redirects to another host drop the Authorization header (blob storage backends sign their URLs).
        """
        current = dict(headers or {})
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(method, url, current, body)
            if not (
                follow_redirects
                and method in ("GET", "HEAD")
                and response.status in (301, 302, 303, 307, 308)
            ):
                return response
            location = response.header("Location")
            response.close()
            if not location:
                raise Unavailable(f"{url}: redirect without a Location")
            target = urljoin(url, location)
            if urlsplit(target).netloc != urlsplit(url).netloc:
                current.pop("Authorization", None)
            if urlsplit(target).scheme == "http" and urlsplit(url).scheme == "https":
                raise Unavailable(f"{url}: refusing a redirect from HTTPS to plain HTTP ({target})")
            url = target
        raise Unavailable(f"{url}: too many redirects")

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise InvalidArgument(f"unsupported URL {url!r}")
        key = (parts.scheme, parts.netloc)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        headers = {"User-Agent": USER_AGENT, **headers}
        # A pooled connection may have been closed by the server while idle: one retry on a fresh one,
        # unless the body is a stream we may already have consumed.
        replayable = body is None or isinstance(body, bytes)
        for attempt in (0, 1):
            conn, reused = self._acquire(key)
            try:
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
            except ssl.SSLCertVerificationError as exc:
                conn.close()
                raise Unavailable(
                    f"TLS certificate of {parts.netloc} not trusted ({exc.verify_message}); put its CA in "
                    f"{self.certs_dir / parts.netloc / 'ca.crt'}"
                ) from exc
            except ssl.SSLError as exc:
                conn.close()
                if exc.reason in _NOT_TLS_REASONS:
                    raise Unavailable(
                        f"registry {parts.netloc} does not speak TLS (plain HTTP?); if it is meant to, "
                        f"add it with --insecure-registry {parts.netloc} (a dockyard-agent flag, or "
                        "insecure_registries in its config)"
                    ) from exc
                raise Unavailable(f"TLS with {parts.netloc} failed: {_describe(exc)}") from exc
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if reused and replayable and attempt == 0 and _is_stale(exc):
                    continue
                raise Transient(f"cannot reach {parts.netloc}: {_describe(exc)}") from exc
            except BaseException:
                conn.close()  # e.g. a body reader that was cancelled mid-upload
                raise
            return Response(self, key, conn, raw, url)
        raise Internal("unreachable")  # pragma: no cover

    def _acquire(self, key: tuple[str, str]) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            idle = self._idle.get(key)
            if idle:
                return idle.pop(), True
        scheme, netloc = key
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = http.client.HTTPSConnection(
                netloc, timeout=self.timeout, context=self.ssl_context(netloc), blocksize=_BLOCK
            )
        else:
            conn = http.client.HTTPConnection(netloc, timeout=self.timeout, blocksize=_BLOCK)
        return conn, False

    def _release(self, key: tuple[str, str], conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < _POOL_LIMIT:
                idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            pools, self._idle = self._idle, {}
        for idle in pools.values():
            for conn in idle:
                conn.close()


def _is_stale(exc: BaseException) -> bool:
    return isinstance(
        exc,
        (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, http.client.BadStatusLine),
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return text


def registry_error(response: Response, what: str) -> AgentError:
    """Map an unexpected HTTP status to the AgentError a caller should see, with the registry's message."""
    detail = ""
    try:
        raw = response.body(_ERROR_BODY_LIMIT)
        errors = json.loads(raw).get("errors") if raw else None
        if isinstance(errors, list) and errors:
            detail = "; ".join(
                f"{e.get('code', '')}: {e.get('message', '')}".strip(": ")
                for e in errors
                if isinstance(e, dict)
            )
        elif raw:
            detail = raw[:200].decode("utf-8", "replace").strip()
    except (AgentError, ValueError, AttributeError):
        pass
    finally:
        response.close()
    status = response.status
    message = f"{what}: HTTP {status}" + (f" ({detail})" if detail else "")
    if status == 401:
        return RegistryAuth(message)
    if status == 403:
        return PermissionDenied(message)
    if status == 404:
        return NotFound(message)
    if status == 429:
        return Transient(message)
    if status >= 500:
        return Transient(message)
    if status in (400, 405, 411, 413, 415, 416):
        return FailedPrecondition(message)
    return Unavailable(message)
