"""Cosign signatures of images: kept in the agent's database, fetched at pull, pushed by `image sign`.

One table, owned here:

    trust_signatures   one row per (image manifest digest, signed digest, signature): the payload, the
                       base64 signature, and — when the payload signs an index rather than the manifest
                       itself (cosign signs what a tag points at, often a multi-platform index) — that
                       index's bytes, which link the signed digest to the manifest.

A row holds everything its verification needs, so a check at run time works offline, and `image send`
copies rows as they are (`export` / `add`). Rows are not trusted: whoever wrote them, the verdict
(verify.py) checks the payload's digest, the index link and the signature against the policy's keys each
time. Blocking; async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass

import agent.log
from agent.errors import AgentError, InvalidArgument, NotFound
from agent.oci import cosign, manifests
from agent.oci.manifests import Descriptor, Document
from agent.registry.client import Cancelled, Repository
from agent.state.db import Database

log = agent.log.get(__name__)

MAX_SIGNATURES_PER_IMAGE = 64  # more than this in one `.sig` manifest are ignored (and in one import)

_DDL = """
CREATE TABLE IF NOT EXISTS trust_signatures (
    image_digest  TEXT NOT NULL,
    signed_digest TEXT NOT NULL,
    signature     TEXT NOT NULL,
    payload       BLOB NOT NULL,
    via_index     BLOB NOT NULL,
    source        TEXT NOT NULL,
    stored_at     REAL NOT NULL,
    PRIMARY KEY (image_digest, signed_digest, signature)
)
"""


@dataclass(frozen=True)
class StoredSignature:
    """One signature that may vouch for the image `image_digest`."""

    image_digest: str
    signed_digest: str  # what the payload signs: `image_digest`, or an index that lists it
    payload: bytes
    signature: str  # base64 (DER ECDSA)
    via_index: bytes = b""  # the index's bytes when `signed_digest` is an index
    source: str = ""  # where it came from ("host:5000/app:sha256-….sig", "image sign", "image send")


def check_link(sig: StoredSignature) -> None:
    """InvalidArgument unless the signed digest is the image's or an index (given) that lists it."""
    if sig.signed_digest == sig.image_digest:
        return
    if not sig.via_index or manifests.sha256_digest(sig.via_index) != sig.signed_digest:
        raise InvalidArgument(
            f"signature for {sig.signed_digest} does not come with that index (image {sig.image_digest})"
        )
    if sig.image_digest not in index_entries(sig.via_index):
        raise InvalidArgument(f"index {sig.signed_digest} does not list image {sig.image_digest}")


def index_entries(data: bytes) -> set[str]:
    """The manifest digests an index lists (empty if it is not a readable index)."""
    try:
        return {d.digest for d in manifests.parse_index(data, "index").manifests}
    except AgentError:
        return set()


class SignatureStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(_DDL)

    def add(self, signatures: Iterable[StoredSignature]) -> int:
        """Keep signatures (each checked for its index link first); returns how many were new."""
        items = list(signatures)
        for sig in items:
            check_link(sig)
        added = 0
        with self.db.transaction() as conn:
            for sig in items:
                added += conn.execute(
                    """INSERT OR IGNORE INTO trust_signatures (image_digest, signed_digest, signature,
                           payload, via_index, source, stored_at) VALUES (?, ?, ?, ?, ?, ?, ?)""",
                    (
                        sig.image_digest,
                        sig.signed_digest,
                        sig.signature,
                        sig.payload,
                        sig.via_index,
                        sig.source,
                        time.time(),
                    ),
                ).rowcount
        return added

    def for_image(self, image_digest: str) -> list[StoredSignature]:
        rows = self.db.query(
            "SELECT * FROM trust_signatures WHERE image_digest = ? ORDER BY stored_at LIMIT ?",
            (image_digest, MAX_SIGNATURES_PER_IMAGE),
        )
        return [
            StoredSignature(
                r["image_digest"],
                r["signed_digest"],
                bytes(r["payload"]),
                r["signature"],
                bytes(r["via_index"]),
                r["source"],
            )
            for r in rows
        ]


# ---- the registry side (blocking, in the caller's worker thread) ------------------------------------


def fetch(repo: Repository, manifest_digest: str, index: Document | None) -> list[StoredSignature]:
    """The cosign signatures the registry holds for a manifest and for the index it was chosen from.

    A missing `.sig` tag is the normal case (nothing returned); other registry errors propagate."""
    found: list[StoredSignature] = []
    subjects = [(manifest_digest, b"")] + ([(index.digest, index.data)] if index is not None else [])
    for signed, via in subjects:
        tag = cosign.signature_tag(signed)
        try:
            document = repo.get_document(tag)
        except NotFound:
            continue
        where = f"{repo.ref.name}:{tag}"
        for layer in cosign.signature_layers(document.data, where)[:MAX_SIGNATURES_PER_IMAGE]:
            payload = repo.get_blob_bytes(Descriptor(cosign.PAYLOAD_MEDIA_TYPE, layer.digest, layer.size))
            found.append(StoredSignature(manifest_digest, signed, payload, layer.signature, via, where))
    return found


def keep_fetched(
    store: SignatureStore, repo: Repository, manifest_digest: str, index: Document | None
) -> int:
    """At the end of a pull: fetch the image's signatures and keep them; returns how many were new.

    A registry that fails to hand them out does not fail the pull: the image then has none here, and a
    `signed` rule refuses it with that reason (pulling again fetches them again)."""
    try:
        found = fetch(repo, manifest_digest, index)
        added = store.add(found)
    except Cancelled:
        raise
    except AgentError as exc:
        log.warning("trust.signatures_unavailable", image_ref=str(repo.ref), error=exc.message)
        return 0
    if found:
        log.info(
            "trust.signatures_fetched",
            image_ref=str(repo.ref),
            digest=manifest_digest,
            found=len(found),
            added=added,
        )
    return added


@dataclass(frozen=True)
class PushedSignature:
    tag: str  # `registry/repository:sha256-….sig`
    manifest_digest: str
    signatures: int  # in that manifest now
    already_present: bool


def push(repo: Repository, signed_digest: str, payload: bytes, signature: str) -> PushedSignature:
    """Add one signature to the `.sig` manifest of `signed_digest` in `repo` (made if missing), as cosign
    does: the payload is uploaded as a blob, the manifest gains a layer with the signature annotation."""
    tag = cosign.signature_tag(signed_digest)
    try:
        layers = cosign.raw_layers(repo.get_document(tag).data)
    except NotFound:
        layers = []
    new = cosign.payload_layer(payload, signature)
    full_tag = f"{repo.ref.name}:{tag}"
    for layer in layers:
        annotations = layer.get("annotations")
        if layer.get("digest") == new["digest"] and isinstance(annotations, dict):
            if annotations.get(cosign.SIGNATURE_ANNOTATION) == signature:
                current = cosign.signature_manifest(layers, cosign.signature_config(layers))
                return PushedSignature(full_tag, manifests.sha256_digest(current), len(layers), True)
    layers.append(new)
    config = cosign.signature_config(layers)
    manifest = cosign.signature_manifest(layers, config)
    for blob in (payload, config):
        _ensure_blob(repo, blob)
    digest = manifests.sha256_digest(manifest)
    repo.put_manifest(tag, Document(manifest, cosign.OCI_MANIFEST, digest))
    log.info("trust.signature_pushed", tag=full_tag, signed_digest=signed_digest, signatures=len(layers))
    return PushedSignature(full_tag, digest, len(layers), False)


def _ensure_blob(repo: Repository, data: bytes) -> None:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    if repo.blob_size(digest) is not None:
        return
    location = repo.start_upload(digest, None)
    if location is not None:
        repo.finish_upload(location, digest, data, len(data))
