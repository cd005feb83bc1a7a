"""Cosign's key-pair signature format: the simple-signing payload and the `sha256-<hex>.sig` artifact.

Pure (standard library only), shared by the agent (fetches, stores, pushes and verifies signatures) and
the controller (`dockyard image sign` builds the payload it signs). The facts follow cosign's signature
spec, so images signed by cosign in a CI verify on an agent and the other way round:

* payload (media type `application/vnd.dev.cosign.simplesigning.v1+json`): JSON
  `{"critical": {"identity": {"docker-reference": REPO}, "image": {"docker-manifest-digest": DIGEST},
  "type": "cosign container image signature"}, "optional": …}`; the signature is ECDSA P-256 over the
  SHA-256 of exactly these bytes, DER-encoded, base64 (standard alphabet).
* storage: an OCI image manifest under the tag `sha256-<hex>.sig` of the image's repository, one layer per
  signature: the layer is the payload blob, the base64 signature is its annotation
  `dev.cosignproject.cosign/signature`. Signing again appends a layer.
* `critical.identity.docker-reference` is informational (cosign ignores it at verification, so do we).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from typing import Any

from agent.errors import FailedPrecondition, InvalidArgument
from agent.oci.reference import validate_digest

PAYLOAD_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MAX_PAYLOAD_BYTES = 64 * 1024  # a real payload is ~250 bytes; a bigger "payload" is not read
MAX_SIGNATURE_CHARS = 1024  # base64 of a DER ECDSA signature is under 100


def signature_tag(digest: str) -> str:
    """The tag cosign stores an object's signatures under: `sha256:abc…` → `sha256-abc….sig`."""
    validate_digest(digest)
    return digest.replace(":", "-", 1) + ".sig"


def make_payload(repository: str, digest: str, optional: dict[str, Any] | None = None) -> bytes:
    """The simple-signing payload for the manifest (or index) `digest` of `repository` (compact JSON)."""
    validate_digest(digest)
    doc = {
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": PAYLOAD_TYPE,
        },
        "optional": optional,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Payload:
    """What a payload claims: the digest it signs and the repository it names."""

    digest: str
    docker_reference: str


def parse_payload(data: bytes) -> Payload:
    """Read a simple-signing payload strictly; FailedPrecondition saying what is wrong otherwise."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise FailedPrecondition(f"signature payload is {len(data)} bytes (at most {MAX_PAYLOAD_BYTES})")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FailedPrecondition("signature payload is not JSON") from exc
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        raise FailedPrecondition("signature payload has no critical section")
    if critical.get("type") != PAYLOAD_TYPE:
        raise FailedPrecondition(f"signature payload type is {critical.get('type')!r}, not {PAYLOAD_TYPE!r}")
    image = critical.get("image")
    digest = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(digest, str):
        raise FailedPrecondition("signature payload names no critical.image.docker-manifest-digest")
    try:
        validate_digest(digest)
    except InvalidArgument as exc:
        raise FailedPrecondition(f"signature payload: {exc}") from exc
    identity = critical.get("identity")
    reference = identity.get("docker-reference") if isinstance(identity, dict) else None
    return Payload(digest, reference if isinstance(reference, str) else "")


def decode_signature(text: str) -> bytes:
    """The DER bytes of a base64 signature annotation; FailedPrecondition if it is not base64."""
    if not text or len(text) > MAX_SIGNATURE_CHARS:
        raise FailedPrecondition("signature is empty or too long")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise FailedPrecondition("signature is not valid base64") from exc


@dataclass(frozen=True)
class SignatureLayer:
    """One signature of a `.sig` manifest: its payload blob's descriptor and the base64 signature."""

    digest: str
    size: int
    signature: str


def signature_layers(manifest: bytes, where: str) -> list[SignatureLayer]:
    """The simple-signing layers of a `.sig` manifest that carry a signature annotation (others skipped)."""
    try:
        doc = json.loads(manifest)
    except (ValueError, UnicodeDecodeError) as exc:
        raise FailedPrecondition(f"{where}: not valid JSON") from exc
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise FailedPrecondition(f"{where}: not an image manifest")
    out = []
    for layer in layers:
        if not isinstance(layer, dict) or layer.get("mediaType") != PAYLOAD_MEDIA_TYPE:
            continue
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        digest, size = layer.get("digest"), layer.get("size")
        if not isinstance(signature, str) or not isinstance(digest, str):
            continue
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_PAYLOAD_BYTES:
            continue
        try:
            validate_digest(digest)
        except InvalidArgument:
            continue
        out.append(SignatureLayer(digest, size, signature))
    return out


def payload_layer(payload: bytes, signature: str) -> dict[str, Any]:
    """The layer descriptor (as JSON) that carries `payload` and its base64 `signature`."""
    return {
        "mediaType": PAYLOAD_MEDIA_TYPE,
        "size": len(payload),
        "digest": "sha256:" + hashlib.sha256(payload).hexdigest(),
        "annotations": {SIGNATURE_ANNOTATION: signature},
    }


def signature_config(layers: list[dict[str, Any]]) -> bytes:
    """A minimal OCI image config whose rootfs lists the payload layers (as cosign writes one)."""
    doc = {
        "architecture": "",
        "os": "",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [str(layer["digest"]) for layer in layers]},
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def signature_manifest(layers: list[dict[str, Any]], config: bytes) -> bytes:
    """The `.sig` OCI image manifest over `layers` (existing ones kept as they were) and `config`."""
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "size": len(config),
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        },
        "layers": layers,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def raw_layers(manifest: bytes) -> list[dict[str, Any]]:
    """The layer descriptors of an existing `.sig` manifest exactly as written (annotations kept)."""
    try:
        doc = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        return []
    layers = doc.get("layers") if isinstance(doc, dict) else None
    return [layer for layer in layers if isinstance(layer, dict)] if isinstance(layers, list) else []
