"""Manifest and index documents (OCI and Docker v2 schema 2): media types, descriptors, strict parsing.

Pure. Everything read from a registry is hostile until parsed here: digests are validated, sizes must be
non-negative integers, and a document whose kind cannot be told is rejected rather than guessed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from agent.errors import FailedPrecondition, Integrity, InvalidArgument
from agent.oci.platform import Platform
from agent.oci.reference import validate_digest

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"  # + "+gzip" / "+zstd" when compressed
CONTAINERD_NAME = "io.containerd.image.name"  # image name annotations in an OCI layout's index.json
OCI_REF_NAME = "org.opencontainers.image.ref.name"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_SCHEMA1 = (
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
)
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
# What we send as Accept, best first.
ACCEPT = (OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    urls: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        return out


@dataclass(frozen=True)
class Document:
    """Raw bytes of a manifest or index with its media type and digest (the digest of exactly these bytes)."""

    data: bytes
    media_type: str
    digest: str

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


@dataclass(frozen=True)
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@dataclass(frozen=True)
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...] = field(default_factory=tuple)


def _descriptor(raw: object, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise FailedPrecondition(f"{where}: descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise FailedPrecondition(f"{where}: descriptor lacks mediaType or digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FailedPrecondition(f"{where}: descriptor {digest} has an invalid size")
    try:
        validate_digest(digest)
    except InvalidArgument as exc:
        raise FailedPrecondition(f"{where}: {exc}") from exc
    urls = raw.get("urls") or ()
    if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
        raise FailedPrecondition(f"{where}: descriptor {digest} has invalid urls")
    return Descriptor(media_type, digest, size, Platform.from_oci(raw.get("platform")), tuple(urls))


def _load(data: bytes, where: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FailedPrecondition(f"{where}: not valid JSON") from exc
    if not isinstance(doc, dict):
        raise FailedPrecondition(f"{where}: not a JSON object")
    return doc


def media_type_of(data: bytes, content_type: str | None, where: str) -> str:
    """The document's kind: its own `mediaType`, else the HTTP Content-Type, else its shape."""
    doc = _load(data, where)
    declared = doc.get("mediaType")
    if doc.get("schemaVersion") == 1 or declared in DOCKER_SCHEMA1 or content_type in DOCKER_SCHEMA1:
        raise FailedPrecondition(f"{where}: Docker schema 1 manifests are not supported")
    for candidate in (declared, (content_type or "").split(";")[0].strip()):
        if isinstance(candidate, str) and candidate in INDEX_TYPES | MANIFEST_TYPES:
            return candidate
    if "manifests" in doc:
        return OCI_INDEX
    if "layers" in doc and "config" in doc:
        return OCI_MANIFEST
    raise FailedPrecondition(f"{where}: unknown manifest type {declared or content_type!r}")


def parse_manifest(data: bytes, where: str) -> Manifest:
    doc = _load(data, where)
    media_type = doc.get("mediaType") or OCI_MANIFEST
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise FailedPrecondition(f"{where}: manifest has no layers list")
    return Manifest(
        str(media_type),
        _descriptor(doc.get("config"), where),
        tuple(_descriptor(layer, where) for layer in layers),
    )


def parse_index(data: bytes, where: str) -> Index:
    doc = _load(data, where)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise FailedPrecondition(f"{where}: index has no manifests list")
    return Index(str(doc.get("mediaType") or OCI_INDEX), tuple(_descriptor(m, where) for m in manifests))


def verify(data: bytes, expected: str, where: str) -> None:
    """Integrity error unless `data` hashes to `expected` (sha256 or sha512)."""
    algorithm = expected.partition(":")[0]
    actual = f"{algorithm}:" + hashlib.new(algorithm, data).hexdigest()
    if actual != expected:
        raise Integrity(f"{where}: content has digest {actual}, expected {expected}")


def config_platform(config: bytes) -> Platform | None:
    """The platform an image config declares (os/architecture/variant), if any."""
    try:
        doc = json.loads(config)
    except (ValueError, UnicodeDecodeError):
        return None
    return Platform.from_oci(doc) if isinstance(doc, dict) else None


def config_diff_ids(config: bytes, where: str) -> list[str]:
    """`rootfs.diff_ids` of an image config: the uncompressed digest of each layer, in order."""
    doc = _load(config, where)
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise FailedPrecondition(f"{where}: image config has no rootfs.diff_ids")
    for diff_id in diff_ids:
        try:
            validate_digest(diff_id)
        except InvalidArgument as exc:
            raise FailedPrecondition(f"{where}: {exc}") from exc
    return list(diff_ids)
