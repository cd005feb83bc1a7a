"""A local image archive as the source of `dockyard image send --from local FILE`.

Reads the tar files `dockyard save` writes (and `docker save`, `podman save`, `skopeo copy … *-archive:`):

* OCI image layout (`index.json`, `blobs/sha256/<hex>`): blobs are sent exactly as stored, so the image
  keeps its manifest digest; a nested index picks this machine's platform.
* docker-archive (`manifest.json` with Config, RepoTags, Layers): each layer file is hashed once here and
  an OCI manifest is made over the files as they are — the same manifest `dockyard load` makes of the
  archive, so both ways give the same image.

Blobs are read straight from their place in the (uncompressed) tar, without unpacking it. The archive is
indexed in a thread; nothing here trusts it: every target verifies every blob on arrival.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import posixpath
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.oci import manifests, platform
from agent.oci.errors import AgentError
from agent.oci.reference import Reference
from controller.errors import UsageError
from controller.send import Blob, ImagePlan

CHUNK = 1 << 20
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
NAME_ANNOTATIONS = ("io.containerd.image.name", "org.opencontainers.image.ref.name")
_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2"}
MAX_JSON = 16 * 1024 * 1024


@dataclass(frozen=True)
class _Place:
    """Where a blob's bytes are: a region of the archive file, or bytes made here (a manifest)."""

    offset: int = 0
    size: int = 0
    data: bytes | None = None


@dataclass(frozen=True)
class _Candidate:
    names: tuple[str, ...]
    manifest: bytes
    manifest_digest: str


def _compression(head: bytes) -> str:
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return ""


def _normalize(text: str) -> str | None:
    try:
        return str(Reference.parse(text))
    except AgentError:
        return None


class ArchiveSource:
    """Blobs of one image of a local archive."""

    def __init__(self, path: Path, reference: str) -> None:
        self.path = path
        self.reference = reference
        self.name = "local"
        self.bytes_read = 0
        self._members: dict[str, tarfile.TarInfo] = {}
        self._places: dict[str, _Place] = {}

    async def plan(self) -> ImagePlan:
        return await asyncio.to_thread(self._plan)

    async def read(self, blob: Blob, offset: int) -> AsyncIterator[bytes]:
        place = self._places[blob.digest]
        if place.data is not None:
            chunk = place.data[offset:]
            self.bytes_read += len(chunk)
            yield chunk
            return
        fh = await asyncio.to_thread(open, self.path, "rb")
        try:
            await asyncio.to_thread(fh.seek, place.offset + offset)
            left = place.size - offset
            while left > 0:
                chunk = await asyncio.to_thread(fh.read, min(CHUNK, left))
                if not chunk:
                    raise UsageError(f"{self.path}: the archive ended inside blob {blob.digest}")
                left -= len(chunk)
                self.bytes_read += len(chunk)
                yield chunk
        finally:
            fh.close()

    # ---- indexing (blocking) -------------------------------------------------------------------------

    def _plan(self) -> ImagePlan:
        with open(self.path, "rb") as fh:
            kind = _compression(fh.read(8))
        if kind:
            raise UsageError(
                f"{self.path} is {kind}-compressed: decompress it first (send reads blobs in place)"
            )
        try:
            with tarfile.open(self.path, "r:") as tf:
                for member in tf:
                    self._members[posixpath.normpath(member.name.lstrip("/"))] = member
        except tarfile.TarError as exc:
            raise UsageError(f"{self.path} is not a tar archive: {exc}") from None
        try:
            if "index.json" in self._members:
                candidates = self._oci_candidates()
            elif "manifest.json" in self._members:
                candidates = self._docker_candidates()
            else:
                raise UsageError(
                    f"{self.path} has neither index.json nor manifest.json: not an image archive"
                )
            chosen, names = self._choose(candidates)
            manifest = manifests.parse_manifest(chosen.manifest, f"manifest {chosen.manifest_digest}")
        except AgentError as exc:
            raise UsageError(f"{self.path}: {exc}") from None
        self._places[chosen.manifest_digest] = _Place(data=chosen.manifest)
        blobs = [Blob(d.digest, d.size, d.media_type) for d in manifest.layers]
        blobs.append(Blob(manifest.config.digest, manifest.config.size, "config"))
        blobs.append(Blob(chosen.manifest_digest, len(chosen.manifest), "manifest"))
        for blob in blobs:
            if blob.digest not in self._places:
                raise UsageError(f"{self.path}: blob {blob.digest} is missing from the archive")
        return ImagePlan(chosen.manifest_digest, tuple(blobs), names, manifest.config.digest)

    def _member(self, name: str) -> tarfile.TarInfo:
        """A regular file of the archive, following the archive's own (sym)links."""
        key = posixpath.normpath(name.lstrip("/"))
        for _ in range(16):
            member = self._members.get(key)
            if member is None:
                raise UsageError(f"{self.path}: {name} is missing from the archive")
            if member.isfile():
                return member
            if member.issym():
                key = posixpath.normpath(posixpath.join(posixpath.dirname(key), member.linkname))
            elif member.islnk():
                key = posixpath.normpath(member.linkname.lstrip("/"))
            else:
                break
        raise UsageError(f"{self.path}: {name} is not a file")

    def _read_member(self, name: str, limit: int = MAX_JSON) -> bytes:
        member = self._member(name)
        if member.size > limit:
            raise UsageError(f"{self.path}: {name} is too large ({member.size} bytes)")
        with open(self.path, "rb") as fh:
            fh.seek(member.offset_data)
            return fh.read(member.size)

    def _json(self, name: str) -> Any:
        try:
            return json.loads(self._read_member(name))
        except ValueError as exc:
            raise UsageError(f"{self.path}: {name} is not valid JSON: {exc}") from None

    def _oci_candidates(self) -> list[_Candidate]:
        index = self._json("index.json")
        for member_name, member in self._members.items():
            if member_name.startswith("blobs/sha256/") and member.isfile():
                digest = "sha256:" + member_name.rsplit("/", 1)[1]
                self._places[digest] = _Place(member.offset_data, member.size)
        descriptors = index.get("manifests") if isinstance(index, dict) else None
        by_digest: dict[str, _Candidate] = {}  # one image may be listed once per name
        for desc in descriptors if isinstance(descriptors, list) else []:
            if not isinstance(desc, dict):
                continue
            annotations = desc.get("annotations") or {}
            found = (_normalize(str(annotations[k])) for k in NAME_ANNOTATIONS if k in annotations)
            names = tuple(n for n in found if n)
            digest = str(desc.get("digest", ""))
            data = self._blob_bytes(digest)
            if desc.get("mediaType") in manifests.INDEX_TYPES:
                digest, data = self._pick_platform(data, digest)
            known = by_digest.get(digest)
            merged = (*(known.names if known else ()), *names)
            by_digest[digest] = _Candidate(tuple(dict.fromkeys(merged)), data, digest)
        return list(by_digest.values())

    def _blob_bytes(self, digest: str) -> bytes:
        algo, _, hexpart = digest.partition(":")
        data = self._read_member(f"blobs/{algo}/{hexpart}")
        if manifests.sha256_digest(data) != digest:
            raise UsageError(f"{self.path}: blob {digest} does not match its digest")
        return data

    def _pick_platform(self, data: bytes, digest: str) -> tuple[str, bytes]:
        index = manifests.parse_index(data, f"index {digest}")
        found = platform.select(platform.host(), [d.platform for d in index.manifests])
        if found is None:
            raise UsageError(f"{self.path}: index {digest} has no manifest for {platform.host()}")
        chosen = index.manifests[found].digest
        return chosen, self._blob_bytes(chosen)

    def _docker_candidates(self) -> list[_Candidate]:
        entries = self._json("manifest.json")
        if not isinstance(entries, list):
            raise UsageError(f"{self.path}: manifest.json is not a list")
        out = []
        for entry in entries:
            if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
                raise UsageError(f"{self.path}: a manifest.json entry has no Config")
            config = self._read_member(entry["Config"])
            config_digest = manifests.sha256_digest(config)
            self._places[config_digest] = _Place(data=config)
            layers = []
            for name in entry.get("Layers") or []:
                member = self._member(str(name))
                digest, kind = self._hash_member(member)
                self._places[digest] = _Place(member.offset_data, member.size)
                media_type = OCI_LAYER if not kind else f"{OCI_LAYER}+{kind}"
                layers.append({"mediaType": media_type, "digest": digest, "size": member.size})
            manifest = {
                "schemaVersion": 2,
                "mediaType": manifests.OCI_MANIFEST,
                "config": {"mediaType": manifests.OCI_CONFIG, "digest": config_digest, "size": len(config)},
                "layers": layers,
            }
            data = json.dumps(manifest, separators=(",", ":")).encode()
            tags = [n for n in (_normalize(str(t)) for t in entry.get("RepoTags") or []) if n]
            out.append(_Candidate(tuple(tags), data, manifests.sha256_digest(data)))
        return out

    def _hash_member(self, member: tarfile.TarInfo) -> tuple[str, str]:
        h = hashlib.sha256()
        with open(self.path, "rb") as fh:
            fh.seek(member.offset_data)
            left = member.size
            head = b""
            while left > 0:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise UsageError(f"{self.path}: the archive ends inside {member.name}")
                if not head:
                    head = chunk[:8]
                h.update(chunk)
                left -= len(chunk)
        kind = _compression(head)
        if kind not in ("", "gzip", "zstd"):
            raise UsageError(f"{self.path}: layer {member.name} is {kind}-compressed, which images cannot be")
        return f"sha256:{h.hexdigest()}", kind

    def _choose(self, candidates: list[_Candidate]) -> tuple[_Candidate, tuple[str, ...]]:
        """The image REF names in the archive, or its only image (then named REF)."""
        wanted = _normalize(self.reference)
        if wanted is None:
            raise UsageError(f"invalid image name {self.reference!r}")
        for c in candidates:
            if wanted in c.names:
                return c, (wanted,)
        if len(candidates) == 1:
            return candidates[0], (wanted,)
        known = sorted({n for c in candidates for n in c.names})
        raise UsageError(
            f"{self.path} holds {len(candidates)} images and none is named {self.reference}"
            + (f" (names: {', '.join(known)})" if known else "")
        )
