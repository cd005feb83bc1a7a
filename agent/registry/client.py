"""The distribution-protocol client: manifests and indexes, platform choice, blobs with Range resume, uploads.

Blocking by design (see transport.py): pull and push run each layer in a worker thread. One `Repository`
serves one call: it holds that call's credentials and token cache and forgets them when the call ends.
Reads try the configured mirrors of the registry first (anonymously), then the origin; writes go to the
origin only. Transient failures (dropped connections, timeouts, 5xx, 429) are retried with exponential
backoff; a blob download that breaks mid-stream continues with `Range: bytes=<offset>-` inside `read()`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlencode, urljoin, urlsplit

import agent.log
from agent.config import AgentConfig
from agent.errors import (
    AgentError,
    FailedPrecondition,
    Integrity,
    NotFound,
    RegistryAuth,
    Unavailable,
)
from agent.oci import manifests
from agent.oci.manifests import Descriptor, Document
from agent.oci.platform import Platform, select
from agent.oci.reference import Reference
from agent.registry.auth import Authenticator, Credentials, repository_scope
from agent.registry.transport import Body, Endpoint, Response, Transient, Transport, registry_error

log = agent.log.get(__name__)

T = TypeVar("T")
_CHUNK = 256 * 1024
_SMALL_BLOB_LIMIT = 16 * 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried (per request, and per stalled blob)."""

    attempts: int = 6
    first_delay: float = 0.2
    max_delay: float = 4.0


class Cancelled(Unavailable):
    """The caller went away; the worker thread stops at its next read."""


@dataclass
class _Site:
    endpoint: Endpoint
    auth: Authenticator
    mirror: bool


class RegistryClient:
    """Long-lived: the agent's transport and mirror configuration; hands out per-call `Repository`s."""

    def __init__(
        self,
        transport: Transport,
        mirrors: Mapping[str, Sequence[str]] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.transport = transport
        self.mirrors = {k: tuple(v) for k, v in (mirrors or {}).items()}
        self.retry = retry or RetryPolicy()

    @classmethod
    def from_config(cls, config: AgentConfig) -> RegistryClient:
        """The agent's client: certs.d under the config dir, insecure registries and mirrors from config."""
        transport = Transport(config.config_dir / "certs.d", config.insecure_registries)
        return cls(transport, config.registry_mirrors)

    async def aclose(self) -> None:
        self.close()

    def repository(
        self,
        ref: Reference,
        credentials: Credentials | None = None,
        *,
        push: bool = False,
        cancel: threading.Event | None = None,
    ) -> Repository:
        return Repository(self, ref, credentials, push=push, cancel=cancel)

    def check_login(self, registry: str, credentials: Credentials) -> None:
        """Authenticate against `GET /v2/` as `docker login` does; RegistryAuth if refused."""
        site = _Site(
            self.transport.endpoint(registry), Authenticator(self.transport, registry, credentials), False
        )
        url = site.endpoint.url("/v2/")
        response = self.transport.request("GET", url)
        if response.status == 401:
            challenge = response.headers("WWW-Authenticate")
            _drain(response)
            authorization = site.auth.challenged(challenge, frozenset())
            response = self.transport.request("GET", url, {"Authorization": authorization})
            if response.status == 401:
                _drain(response)
                raise site.auth.refused()
        if response.status != 200:
            raise registry_error(response, f"login to {registry}")
        _drain(response)

    def close(self) -> None:
        self.transport.close()


class Repository:
    """One repository on one registry for the length of one pull or push; thread-safe."""

    def __init__(
        self,
        client: RegistryClient,
        ref: Reference,
        credentials: Credentials | None,
        *,
        push: bool,
        cancel: threading.Event | None,
    ) -> None:
        self.client = client
        self.ref = ref
        self.name = ref.repository
        self.cancel = cancel or threading.Event()
        self._retry = client.retry
        transport = client.transport
        self.origin = _Site(
            transport.endpoint(ref.registry), Authenticator(transport, ref.registry, credentials), False
        )
        self._mirrors: list[_Site] = []
        if not push:
            for location in client.mirrors.get(ref.registry, ()):
                endpoint = transport.endpoint(location)
                self._mirrors.append(_Site(endpoint, Authenticator(transport, endpoint.host, None), True))
        self._failed_mirrors: set[str] = set()
        self._lock = threading.Lock()
        actions = "pull,push" if push else "pull"
        self.scopes = frozenset({repository_scope(self.name, actions)})

    # -- plumbing ----------------------------------------------------------------------------------------
    def _path(self, tail: str) -> str:
        return f"/v2/{self.name}/{tail}"

    def _request(
        self,
        site: _Site,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Body = None,
        scopes: frozenset[str] | None = None,
    ) -> Response:
        """One request with the auth dance: anonymous or cached auth first, one retry after a 401."""
        scopes = scopes or self.scopes
        sent = dict(headers or {})
        authorization = site.auth.header(scopes)
        if authorization:
            sent["Authorization"] = authorization
        response = self.client.transport.request(method, url, sent, body)
        if response.status != 401:
            return response
        challenge = response.headers("WWW-Authenticate")
        _drain(response)
        if not isinstance(body, bytes | None):
            raise site.auth.refused()  # cannot replay a streamed body
        sent["Authorization"] = site.auth.challenged(challenge, scopes)
        response = self.client.transport.request(method, url, sent, body)
        if response.status == 401:
            error = registry_error(response, f"{method} {urlsplit(url).path}")
            raise RegistryAuth(f"{site.auth.refused()}: {error}") from error
        return response

    def _retrying(self, what: str, call: Callable[[], T], attempts: int | None = None) -> T:
        delay = self._retry.first_delay
        attempts = attempts or self._retry.attempts
        for attempt in range(1, attempts + 1):
            self._check_cancel()
            try:
                return call()
            except Transient as exc:
                if attempt == attempts:
                    raise
                log.warning("registry.retry", what=what, attempt=attempt, error=str(exc))
                if self.cancel.wait(delay * (1 + random.random() / 4)):
                    raise Cancelled("cancelled") from exc
                delay = min(delay * 2, self._retry.max_delay)
        raise Unavailable(f"{what}: gave up")  # pragma: no cover

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise Cancelled("cancelled")

    def _read_sites(self) -> list[_Site]:
        with self._lock:
            failed = set(self._failed_mirrors)
        return [m for m in self._mirrors if m.endpoint.host not in failed] + [self.origin]

    def _from_any(self, what: str, call: Callable[[_Site], T], attempts: int | None = None) -> T:
        """Try the mirrors, then the origin; a mirror that fails is skipped for the rest of the call."""
        for site in self._read_sites():
            if not site.mirror:
                return self._retrying(what, lambda site=site: call(site), attempts)  # type: ignore[misc]
            try:
                return self._retrying(what, lambda site=site: call(site), min(attempts or 2, 2))  # type: ignore[misc]
            except (NotFound, Unavailable, RegistryAuth, FailedPrecondition, Integrity) as exc:
                if isinstance(exc, Cancelled):
                    raise
                log.warning("registry.mirror_failed", mirror=site.endpoint.host, what=what, error=str(exc))
                with self._lock:
                    self._failed_mirrors.add(site.endpoint.host)
        raise Unavailable(f"{what}: no endpoint answered")  # pragma: no cover

    # -- manifests ---------------------------------------------------------------------------------------
    def get_document(self, identifier: str, expected: Descriptor | None = None) -> Document:
        """GET a manifest or index by tag or digest; verifies the digest when it is known."""
        what = (
            f"manifest {self.ref.name}:{identifier}"
            if ":" not in identifier
            else f"{self.ref.name}@{identifier}"
        )

        def fetch(site: _Site) -> Document:
            url = site.endpoint.url(self._path(f"manifests/{identifier}"))
            response = self._request(site, "GET", url, headers={"Accept": ", ".join(manifests.ACCEPT)})
            if response.status != 200:
                raise registry_error(response, what)
            content_type = response.header("Content-Type")
            header_digest = response.header("Docker-Content-Digest")
            data = response.body(manifests.MAX_MANIFEST_BYTES)
            digest = manifests.sha256_digest(data)
            if ":" in identifier:  # a digest (a tag has no colon, and may start with "sha": cosign's)
                manifests.verify(data, identifier, what)
                digest = identifier
            elif header_digest and header_digest.startswith("sha256:") and header_digest != digest:
                raise Integrity(f"{what}: registry says {header_digest} but the content is {digest}")
            if expected is not None and (expected.size != len(data)):
                raise Integrity(f"{what}: {len(data)} bytes, the index says {expected.size}")
            return Document(data, manifests.media_type_of(data, content_type, what), digest)

        return self._from_any(what, fetch)

    def resolve(self, platform: Platform, *, explicit: bool) -> tuple[Document | None, Document]:
        """(index or None, the platform's manifest) for this repository's reference."""
        top = self.get_document(self.ref.identifier)
        if not top.is_index:
            return None, top
        index = manifests.parse_index(top.data, f"index {top.digest}")
        entries = [d for d in index.manifests if d.media_type in manifests.MANIFEST_TYPES]
        chosen = select(platform, [d.platform for d in entries])
        if chosen is None:
            offered = (
                ", ".join(sorted({str(d.platform) for d in entries if d.platform is not None})) or "none"
            )
            how = "requested" if explicit else "this host's"
            raise NotFound(f"{self.ref} has no manifest for {how} platform {platform} (offered: {offered})")
        entry = entries[chosen]
        manifest = self.get_document(entry.digest, expected=entry)
        if manifest.is_index:
            raise FailedPrecondition(f"{self.ref}: nested indexes are not supported")
        return top, manifest

    # -- blobs -------------------------------------------------------------------------------------------
    def get_blob_bytes(self, descriptor: Descriptor) -> bytes:
        """A small blob (an image config) in memory, verified."""
        if descriptor.size > _SMALL_BLOB_LIMIT:
            raise FailedPrecondition(f"blob {descriptor.digest} is too large to read into memory")
        reader = self.open_blob(descriptor.digest, descriptor.size)
        chunks = []
        while data := reader.read(_CHUNK):
            chunks.append(data)
        blob = b"".join(chunks)
        manifests.verify(blob, descriptor.digest, f"blob {descriptor.digest}")
        return blob

    def open_blob(self, digest: str, size: int | None, offset: int = 0) -> BlobReader:
        """A reader of the blob's bytes from `offset`; survives dropped connections by resuming with Range."""
        return BlobReader(self, digest, size, offset)

    def _get_blob(self, digest: str, offset: int) -> tuple[Response, int]:
        """(response positioned at `offset`, the blob's total size if the registry said)."""
        what = f"blob {digest}"

        def fetch(site: _Site) -> tuple[Response, int]:
            headers = {"Range": f"bytes={offset}-"} if offset else {}
            response = self._request(
                site, "GET", site.endpoint.url(self._path(f"blobs/{digest}")), headers=headers
            )
            if response.status == 206:
                start, total = _content_range(response.header("Content-Range"))
                if start != offset:
                    response.close()
                    raise Transient(f"{what}: asked for bytes from {offset}, got from {start}")
                return response, total
            if response.status == 200:
                length = int(response.header("Content-Length") or -1)
                skip = offset
                while skip:  # the registry ignored Range: discard what we already have
                    data = response.read(min(skip, _CHUNK))
                    if not data:
                        raise Transient(f"{what}: connection closed while skipping to {offset}")
                    skip -= len(data)
                return response, length
            raise registry_error(response, what)

        # One attempt per site: BlobReader owns the retry loop for blob reads.
        return self._from_any(what, fetch, attempts=1)

    def blob_size(self, digest: str) -> int | None:
        """HEAD on the origin: the blob's size if the repository has it, None if not."""
        what = f"blob {digest}"

        def head() -> int | None:
            response = self._request(
                self.origin, "HEAD", self.origin.endpoint.url(self._path(f"blobs/{digest}"))
            )
            response.close()
            if response.status == 200:
                return int(response.header("Content-Length") or 0)
            if response.status == 404:
                return None
            raise registry_error(response, what)

        return self._retrying(what, head)

    # -- uploads -----------------------------------------------------------------------------------------
    def start_upload(self, digest: str, mount_from: str | None) -> str | None:
        """POST an upload session; with `mount_from`, try a cross-repository mount first.

        Returns the upload URL, or None when the registry mounted the blob (201) and nothing is to send.
        """
        query = {"mount": digest, "from": mount_from} if mount_from else {}
        scopes = self.scopes
        if mount_from:
            scopes = scopes | {repository_scope(mount_from, "pull")}
        url = self.origin.endpoint.url(self._path("blobs/uploads/"))
        if query:
            url += "?" + urlencode(query)

        def post() -> str | None:
            response = self._request(self.origin, "POST", url, scopes=scopes, headers={"Content-Length": "0"})
            if response.status == 201 and mount_from:
                _drain(response)
                return None
            if response.status != 202:
                raise registry_error(response, f"upload of {digest}")
            location = response.header("Location")
            _drain(response)
            if not location:
                raise Unavailable(f"upload of {digest}: registry gave no Location")
            return urljoin(url, location)

        return self._retrying(f"upload of {digest}", post)

    def upload_chunk(self, location: str, data: bytes, start: int) -> str:
        """PATCH one chunk (chunked upload); returns the next upload URL."""
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
            "Content-Length": str(len(data)),
        }
        response = self._request(self.origin, "PATCH", location, headers=headers, body=data)
        if response.status != 202:
            raise registry_error(response, "chunk upload")
        next_location = response.header("Location")
        _drain(response)
        if not next_location:
            raise Unavailable("chunk upload: registry gave no Location")
        return urljoin(location, next_location)

    def finish_upload(self, location: str, digest: str, body: Body, size: int) -> None:
        """PUT closing the upload (monolithic when `body` carries the whole blob)."""
        separator = "&" if urlsplit(location).query else "?"
        url = f"{location}{separator}digest={quote(digest)}"
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size if body else 0)}
        response = self._request(self.origin, "PUT", url, headers=headers, body=body)
        if response.status != 201:
            error = registry_error(response, f"upload of {digest}")
            if response.status == 400:
                raise Integrity(f"registry rejected the bytes of {digest}: {error}") from error
            raise error
        _drain(response)

    def put_manifest(self, identifier: str, document: Document) -> None:
        what = f"manifest {self.ref.name}:{identifier}"

        def put() -> None:
            url = self.origin.endpoint.url(self._path(f"manifests/{identifier}"))
            headers = {"Content-Type": document.media_type, "Content-Length": str(len(document.data))}
            response = self._request(self.origin, "PUT", url, headers=headers, body=document.data)
            if response.status not in (200, 201):
                raise registry_error(response, what)
            returned = response.header("Docker-Content-Digest")
            _drain(response)
            if returned and returned != document.digest:
                raise Integrity(f"{what}: registry stored {returned}, we sent {document.digest}")

        self._retrying(what, put)


class BlobReader:
    """File-like reader of one blob that hides dropped connections: it resumes with Range from its position.

    Raises Transient when the registry keeps failing without progress for `RetryPolicy.attempts` tries.
    `resumes` counts the reconnections (for logs and tests).
    """

    def __init__(self, repository: Repository, digest: str, size: int | None, offset: int) -> None:
        self._repo = repository
        self.digest = digest
        self.size = size
        self.position = offset
        self.resumes = 0
        self._response: Response | None = None
        self._failures = 0

    def readable(self) -> bool:
        return True

    def read(self, amount: int = _CHUNK) -> bytes:
        if amount is None or amount < 0:
            amount = _CHUNK
        delay = self._repo._retry.first_delay
        while True:
            self._repo._check_cancel()
            if self.size is not None and self.position >= self.size:
                self.close()
                return b""
            try:
                if self._response is None:
                    self._response, total = self._repo._get_blob(self.digest, self.position)
                    if self.size is None and total >= 0:
                        self.size = total
                    elif total >= 0 and self.size is not None and total != self.size:
                        self.close()
                        raise Integrity(
                            f"blob {self.digest}: registry has {total} bytes, expected {self.size}"
                        )
                data = self._response.read(amount)
                if data:
                    self.position += len(data)
                    self._failures = 0
                    return data
                self._response = None
                if self.size is None:
                    return b""
                raise Transient(
                    f"blob {self.digest}: connection closed at byte {self.position} of {self.size}"
                )
            except Transient as exc:
                self.close()
                self._failures += 1
                if self._failures >= self._repo._retry.attempts:
                    raise
                self.resumes += 1
                log.warning("registry.blob_resume", digest=self.digest, offset=self.position, error=str(exc))
                if self._repo.cancel.wait(delay * (1 + random.random() / 4)):
                    raise Cancelled("cancelled") from exc
                delay = min(delay * 2, self._repo._retry.max_delay)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            response.close()


def _drain(response: Response) -> None:
    """Read a small body to its end so the connection can be reused; close it otherwise."""
    try:
        response.body(64 * 1024)
    except AgentError:
        pass
    finally:
        response.close()


def _content_range(value: str | None) -> tuple[int, int]:
    """(start, total or -1) of `Content-Range: bytes START-END/TOTAL`."""
    try:
        unit, _, spec = (value or "").partition(" ")
        span, _, total = spec.partition("/")
        start = int(span.partition("-")[0])
        if unit != "bytes":
            raise ValueError(unit)
        return start, int(total) if total and total != "*" else -1
    except ValueError as exc:
        raise Transient(f"registry sent an invalid Content-Range {value!r}") from exc
