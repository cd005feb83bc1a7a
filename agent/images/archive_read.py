"""Reading image archives: docker-archive and OCI image-layout tarballs, as `docker load` takes them.

`stage_archive` then `plan_archive`: the archive streams once into numbered temp files under a work
directory (names in the tar are only dictionary keys, never paths, so a hostile archive cannot write
anywhere), hashing each file on the way. Then the archive's own index says what is what:

* docker-archive (`docker save`, `podman save`, skopeo): `manifest.json` = [{Config, RepoTags, Layers}],
  layer files are tars (uncompressed, or gzip/zstd), named `<id>/layer.tar`, `<hex>.tar` or
  `blobs/sha256/<hex>`, sometimes symlinks to each other. An OCI manifest is synthesised over the stored
  layer files; uncompressed layers must hash to the config's `rootfs.diff_ids`.
* OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`): descriptors are followed from
  index.json (nested indexes pick the host platform); names come from the `io.containerd.image.name` or
  `org.opencontainers.image.ref.name` annotation. Every blob must hash to its name.

The whole archive may itself be gzip/zstd/xz/bzip2 compressed. Everything here blocks: call it from a
thread.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import agent.log
from agent.errors import FailedPrecondition, Integrity, InvalidArgument
from agent.images.content import ContentStore
from agent.images.unpack import LayerStream, compression_of, sniff_compression
from agent.oci import manifests, platform
from agent.oci.manifests import CONTAINERD_NAME, OCI_LAYER, OCI_REF_NAME
from agent.oci.reference import Reference

log = agent.log.get(__name__)

_CHUNK = 1 << 20
MAX_JSON_BYTES = 16 * 1024 * 1024


@dataclass
class StagedFile:
    path: Path
    digest: str
    size: int


@dataclass
class StagedArchive:
    """Files of an archive, by normalized member name, staged under `work`."""

    work: Path
    files: dict[str, StagedFile] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)

    def resolve(self, name: str) -> StagedFile:
        key = _norm(name)
        for _ in range(16):
            if key in self.files:
                return self.files[key]
            if key not in self.links:
                break
            key = self.links[key]
        raise InvalidArgument(f"archive references {name!r}, which it does not contain")

    def has(self, name: str) -> bool:
        try:
            self.resolve(name)
        except InvalidArgument:
            return False
        return True

    def read_small(self, name: str) -> bytes:
        """A metadata member's bytes (manifest.json, index.json, configs), size-capped."""
        f = self.resolve(name)
        if f.size > MAX_JSON_BYTES:
            raise InvalidArgument(f"archive member {name!r} is too large for a JSON document")
        return f.path.read_bytes()

    def read_json(self, name: str) -> Any:
        data = self.read_small(name)
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"archive member {name!r} is not valid JSON") from exc


def _norm(name: str) -> str:
    return posixpath.normpath("/" + name).lstrip("/")


def stage_archive(src: BinaryIO, work: Path) -> StagedArchive:
    """Read an (optionally compressed) tar stream into `work`; every regular file hashed (sha256)."""
    work.mkdir(parents=True, exist_ok=True)
    staged = StagedArchive(work)
    outer = LayerStream(src, None)
    try:
        tf = tarfile.open(fileobj=outer, mode="r|", encoding="utf-8", errors="surrogateescape")
    except tarfile.ReadError as exc:
        raise InvalidArgument(f"not an image archive (tar): {exc}") from exc
    n = 0
    with tf:
        while True:
            try:
                member = tf.next()
            except tarfile.TarError as exc:
                raise InvalidArgument(f"corrupt image archive: {exc}") from exc
            if member is None:
                break
            tf.members = []  # type: ignore[attr-defined]
            name = _norm(member.name)
            if member.issym():
                staged.links[name] = _norm(posixpath.join(posixpath.dirname(name), member.linkname))
                continue
            if member.islnk():
                staged.links[name] = _norm(member.linkname)
                continue
            if not member.isreg():
                continue
            n += 1
            path = work / f"{n:06d}"
            h = hashlib.sha256()
            reader = tf.extractfile(member)
            assert reader is not None
            with open(path, "wb") as out:
                remaining = member.size
                while remaining:
                    chunk = reader.read(min(_CHUNK, remaining))
                    if not chunk:
                        raise InvalidArgument(f"image archive truncated in {member.name!r}")
                    h.update(chunk)
                    out.write(chunk)
                    remaining -= len(chunk)
            staged.files[name] = StagedFile(path, f"sha256:{h.hexdigest()}", member.size)
    outer.drain()
    return staged


@dataclass(frozen=True)
class PlannedImage:
    """An image found in an archive, its blobs now in the content store."""

    names: tuple[str, ...]
    manifest_digest: str
    index_digest: str | None = None
    dropped: tuple[str, ...] = ()  # one line per name the archive gave that is not a valid reference


def plan_archive(staged: StagedArchive, content: ContentStore) -> list[PlannedImage]:
    """Move the archive's blobs into the content store and say which images to register."""
    if staged.has("oci-layout") and staged.has("index.json"):
        try:
            return _plan_oci(staged, content)
        except InvalidArgument:
            if not staged.has("manifest.json"):
                raise
            log.info("archive.oci_incomplete_using_manifest_json")
    if staged.has("manifest.json"):
        return _plan_docker(staged, content)
    raise InvalidArgument("not an image archive: neither manifest.json (docker) nor index.json (OCI) found")


def _adopt(content: ContentStore, f: StagedFile) -> None:
    """Move a staged (already hashed) file into the content store unless it is there already."""
    if not content.has(f.digest):
        content.adopt(f.path, f.digest)


def _dropped(what: str, reason: str) -> str:
    """Log a name the archive gave that cannot be used; the line the user is shown."""
    log.warning("archive.name_dropped", where=what, reason=reason[:400])
    return f"{what}: {reason[:400]}; name dropped"


def _shown(value: object) -> str:
    return json.dumps(value)[:200]


def _names_from(tags: object, entry: int) -> tuple[list[str], list[str]]:
    """(valid RepoTags normalized, one message per dropped one): a bad name costs its tag, not the load."""
    out: list[str] = []
    dropped: list[str] = []
    what = f"manifest.json entry {entry} RepoTags"
    if tags is not None and not isinstance(tags, list):
        return out, [_dropped(what, f"{_shown(tags)} is not a list of names")]
    for tag in tags or []:
        if not isinstance(tag, str):
            dropped.append(_dropped(what, f"{_shown(tag)} is not a string"))
            continue
        try:
            out.append(str(Reference.parse(tag)))
        except InvalidArgument as exc:
            dropped.append(_dropped(what, str(exc)))
    return out, dropped


def _plan_docker(staged: StagedArchive, content: ContentStore) -> list[PlannedImage]:
    entries = staged.read_json("manifest.json")
    if not isinstance(entries, list):
        raise InvalidArgument("manifest.json is not a list")
    planned = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("Config"), str):
            raise InvalidArgument(f"manifest.json entry {i} has no Config")
        layer_names = entry.get("Layers")
        if not isinstance(layer_names, list) or not all(isinstance(x, str) for x in layer_names):
            raise InvalidArgument(f"manifest.json entry {i} has no Layers list")
        config_bytes = staged.read_small(entry["Config"])
        try:
            diff_ids = manifests.config_diff_ids(config_bytes, f"config {entry['Config']}")
        except FailedPrecondition as exc:
            raise InvalidArgument(str(exc)) from exc
        if len(diff_ids) != len(layer_names):
            raise InvalidArgument(
                f"manifest.json entry {i}: {len(layer_names)} layers but the config lists {len(diff_ids)}"
            )
        layers = []
        for layer_name, diff_id in zip(layer_names, diff_ids, strict=True):
            f = staged.resolve(layer_name)
            path = f.path if f.path.exists() else content.path(f.digest)  # moved in for an earlier use
            with open(path, "rb") as fh:
                kind = sniff_compression(fh.read(8))
            if kind == "":
                if f.digest != diff_id:
                    raise Integrity(
                        f"layer {layer_name}: content {f.digest} does not match diff ID {diff_id}"
                    )
                media_type = OCI_LAYER
            elif kind in ("gzip", "zstd"):
                with open(path, "rb") as fh:
                    stream = LayerStream(fh, kind)
                    stream.drain()
                if stream.diff_id != diff_id:
                    raise Integrity(
                        f"layer {layer_name}: uncompressed {stream.diff_id} is not diff ID {diff_id}"
                    )
                media_type = f"{OCI_LAYER}+{kind}"
            else:
                raise InvalidArgument(f"layer {layer_name}: unsupported compression {kind}")
            _adopt(content, f)
            layers.append({"mediaType": media_type, "digest": f.digest, "size": f.size})
        config_digest = content.put_bytes(config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifests.OCI_MANIFEST,
            "config": {"mediaType": manifests.OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
            "layers": layers,
        }
        manifest_digest = content.put_bytes(json.dumps(manifest, separators=(",", ":")).encode())
        names, dropped = _names_from(entry.get("RepoTags"), i)
        planned.append(PlannedImage(tuple(names), manifest_digest, dropped=tuple(dropped)))
    return planned


def _blob(staged: StagedArchive, content: ContentStore, digest: str, size: int | None) -> StagedFile:
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256":
        raise InvalidArgument(f"unsupported digest algorithm in archive: {digest}")
    f = staged.resolve(f"blobs/{algo}/{hexpart}")
    if f.digest != digest:
        raise Integrity(f"archive blob {digest} has content {f.digest}")
    if size is not None and f.size != size:
        raise Integrity(f"archive blob {digest} is {f.size} bytes, descriptor says {size}")
    _adopt(content, f)
    return f


def _oci_name(annotations: object, dropped: list[str]) -> list[str]:
    if not isinstance(annotations, dict):
        return []
    for key in (CONTAINERD_NAME, OCI_REF_NAME):
        value = annotations.get(key)
        if not isinstance(value, str) or not value:
            continue
        if key == OCI_REF_NAME and "/" not in value and ":" not in value:
            continue  # a bare tag ("latest") names no repository
        try:
            return [str(Reference.parse(value))]
        except InvalidArgument as exc:
            dropped.append(_dropped(f"index.json annotation {key}", str(exc)))
    return []


def _plan_oci(staged: StagedArchive, content: ContentStore) -> list[PlannedImage]:
    index_raw = staged.read_small("index.json")
    try:
        index = manifests.parse_index(index_raw, "index.json")
    except FailedPrecondition as exc:
        raise InvalidArgument(str(exc)) from exc
    annotations = [m.get("annotations") for m in json.loads(index_raw).get("manifests", [])]
    by_digest: dict[tuple[str, str | None], list[str]] = {}
    dropped: dict[tuple[str, str | None], list[str]] = {}
    order: list[tuple[str, str | None]] = []
    host = platform.host()
    for desc, ann in zip(index.manifests, annotations, strict=True):
        _blob(staged, content, desc.digest, desc.size)
        data = content.read_bytes(desc.digest)
        try:
            kind = manifests.media_type_of(data, desc.media_type, desc.digest)
        except FailedPrecondition as exc:
            raise InvalidArgument(str(exc)) from exc
        manifest_digest, index_digest = desc.digest, None
        if kind in manifests.INDEX_TYPES:
            nested = manifests.parse_index(data, desc.digest)
            pick = platform.select(host, [m.platform for m in nested.manifests])
            if pick is None:
                raise InvalidArgument(f"index {desc.digest} in the archive has no manifest for {host}")
            index_digest, manifest_digest = desc.digest, nested.manifests[pick].digest
            _blob(staged, content, manifest_digest, nested.manifests[pick].size)
            data = content.read_bytes(manifest_digest)
        try:
            manifest = manifests.parse_manifest(data, manifest_digest)
        except FailedPrecondition as exc:
            raise InvalidArgument(str(exc)) from exc
        _blob(staged, content, manifest.config.digest, manifest.config.size)
        for layer in manifest.layers:
            compression_of(layer.media_type)
            _blob(staged, content, layer.digest, layer.size)
        key = (manifest_digest, index_digest)
        if key not in by_digest:
            by_digest[key] = []
            dropped[key] = []
            order.append(key)
        for name in _oci_name(ann, dropped[key]):
            if name not in by_digest[key]:
                by_digest[key].append(name)
    return [PlannedImage(tuple(by_digest[k]), k[0], k[1], tuple(dropped[k])) for k in order]
