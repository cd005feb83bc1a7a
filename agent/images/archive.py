"""Image archives: docker-archive and OCI image-layout tarballs in both directions, and rootfs import.

Reading (`stage_archive` then `plan_archive`): the archive streams once into numbered temp files under a
work directory (names in the tar are only dictionary keys, never paths, so a hostile archive cannot write
anywhere), hashing each file on the way. Then the archive's own index says what is what:

* docker-archive (`docker save`, `podman save`, skopeo): `manifest.json` = [{Config, RepoTags, Layers}],
  layer files are tars (uncompressed, or gzip/zstd), named `<id>/layer.tar`, `<hex>.tar` or
  `blobs/sha256/<hex>`, sometimes symlinks to each other. An OCI manifest is synthesised over the stored
  layer files; uncompressed layers must hash to the config's `rootfs.diff_ids`.
* OCI image layout (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`): descriptors are followed from
  index.json (nested indexes pick the host platform); names come from the `io.containerd.image.name` or
  `org.opencontainers.image.ref.name` annotation. Every blob must hash to its name.

The whole archive may itself be gzip/zstd/xz/bzip2 compressed.

Writing: `write_docker_archive` (config + uncompressed `<diffid>/layer.tar` + manifest.json +
repositories, what `docker load`, `podman load` and skopeo read) and `write_oci_archive` (blobs exactly as
stored, so digests are preserved). Both stream through a tar writer, never building the archive on disk.

Everything here blocks: call it from a thread.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import agent.log
from agent.errors import FailedPrecondition, Integrity, InvalidArgument
from agent.images.content import ContentStore
from agent.images.store import ImageRecord
from agent.images.unpack import LayerStream, compression_of, sniff_compression
from agent.oci import manifests, platform
from agent.oci.reference import Reference

log = agent.log.get(__name__)

_CHUNK = 1 << 20
MAX_JSON_BYTES = 16 * 1024 * 1024
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
CONTAINERD_NAME = "io.containerd.image.name"
OCI_REF_NAME = "org.opencontainers.image.ref.name"


# ---- reading ---------------------------------------------------------------------------------------


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
        tf = tarfile.open(fileobj=outer, mode="r|", encoding="utf-8", errors="surrogateescape")  # type: ignore[call-overload]
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


# ---- writing ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SaveItem:
    record: ImageRecord
    names: tuple[str, ...]  # normalized names to write (may be empty)


def _tarinfo(name: str, size: int, mode: int = 0o644, mtime: float = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = int(mtime)
    return info


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    tf.addfile(_tarinfo(name, len(data)), io.BytesIO(data))


def _familiar(name: str) -> str:
    return Reference.parse(name).familiar()


class _VerifyingReader(io.RawIOBase):
    """Reads exactly `size` uncompressed bytes of a layer, then checks its diff ID."""

    def __init__(self, stream: LayerStream, size: int, diff_id: str) -> None:
        self._stream = stream
        self._size = size
        self._left = size
        self._diff_id = diff_id

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        want = self._left if n is None or n < 0 else min(n, self._left)
        data = self._stream.read(want) if want else b""
        self._left -= len(data)
        if want and not data:
            raise Integrity(f"stored layer {self._diff_id} is shorter than {self._size} bytes")
        if self._left == 0:
            self._stream.drain()
            if self._stream.size != self._size or self._stream.diff_id != self._diff_id:
                raise Integrity(f"stored layer does not match diff ID {self._diff_id}")
        return data

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def write_docker_archive(
    out: BinaryIO,
    items: Iterable[SaveItem],
    content: ContentStore,
    layer_size: Callable[[str, str, str], int],
) -> None:
    """A docker-archive tar. `layer_size(blob digest, media type, diff_id)` gives uncompressed sizes."""
    items = list(items)
    manifest_json = []
    repositories: dict[str, dict[str, str]] = {}
    layer_files: dict[str, tuple[str, str, str]] = {}  # dir → (blob digest, media type, diff id)
    configs: dict[str, str] = {}
    for item in items:
        rec = item.record
        config_name = f"{rec.config_digest.split(':', 1)[1]}.json"
        configs[config_name] = rec.config_digest
        paths = []
        for layer, diff_id in zip(rec.layers, rec.diff_ids, strict=True):
            layer_dir = diff_id.split(":", 1)[1]
            layer_files.setdefault(layer_dir, (layer.digest, layer.media_type, diff_id))
            paths.append(f"{layer_dir}/layer.tar")
        # Fully qualified: docker normalizes either form, podman would put a short name under localhost/.
        tags = [n for n in item.names if Reference.parse(n).tag is not None]
        manifest_json.append({"Config": config_name, "RepoTags": tags or None, "Layers": paths})
        top = rec.diff_ids[-1].split(":", 1)[1] if rec.diff_ids else ""
        for n in item.names:
            ref = Reference.parse(n)
            if ref.tag is None:
                continue
            repo = ref.familiar().rsplit(":", 1)[0]
            repositories.setdefault(repo, {})[ref.tag] = top
    mtime = time.time()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        _add_bytes(tf, "manifest.json", json.dumps(manifest_json, separators=(",", ":")).encode())
        _add_bytes(tf, "repositories", json.dumps(repositories, separators=(",", ":")).encode())
        for name, digest in configs.items():
            _add_bytes(tf, name, content.read_bytes(digest))
        for layer_dir, (digest, media_type, diff_id) in layer_files.items():
            size = layer_size(digest, media_type, diff_id)
            dir_info = _tarinfo(layer_dir + "/", 0, 0o755, mtime)
            dir_info.type = tarfile.DIRTYPE
            tf.addfile(dir_info)
            _add_bytes(tf, f"{layer_dir}/VERSION", b"1.0")
            with content.open(digest) as blob:
                stream = LayerStream.for_media_type(blob, media_type)
                info = _tarinfo(f"{layer_dir}/layer.tar", size, 0o644, mtime)
                tf.addfile(info, _VerifyingReader(stream, size, diff_id))  # type: ignore[arg-type]


def uncompressed_size(content: ContentStore, digest: str, media_type: str, diff_id: str) -> int:
    """Decompress a stored layer to learn its tar size (and check its diff ID on the way)."""
    with content.open(digest) as blob:
        stream = LayerStream.for_media_type(blob, media_type)
        stream.drain()
    if stream.diff_id != diff_id:
        raise Integrity(f"stored layer {digest} does not match diff ID {diff_id}")
    return stream.size


def write_oci_archive(out: BinaryIO, items: Iterable[SaveItem], content: ContentStore) -> None:
    """An OCI image-layout tar: blobs exactly as stored, one index.json entry per name."""
    items = list(items)
    descriptors = []
    blobs: dict[str, None] = {}
    for item in items:
        rec = item.record
        for digest in (rec.digest, rec.config_digest, *(layer.digest for layer in rec.layers)):
            blobs[digest] = None
        desc: dict[str, Any] = {
            "mediaType": rec.media_type,
            "digest": rec.digest,
            "size": content.size(rec.digest),
        }
        plat = platform.Platform.parse(rec.platform) if rec.platform else None
        if plat is not None:
            desc["platform"] = {"architecture": plat.architecture, "os": plat.os}
            if plat.variant:
                desc["platform"]["variant"] = plat.variant
        if not item.names:
            descriptors.append(desc)
        for name in item.names:
            descriptors.append({**desc, "annotations": {CONTAINERD_NAME: name, OCI_REF_NAME: name}})
    index = {"schemaVersion": 2, "mediaType": manifests.OCI_INDEX, "manifests": descriptors}
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tf:  # type: ignore[call-overload]
        _add_bytes(tf, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_bytes(tf, "index.json", json.dumps(index, separators=(",", ":")).encode())
        for d in ("blobs/", "blobs/sha256/"):
            info = _tarinfo(d, 0, 0o755)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for digest in blobs:
            algo, hexpart = digest.split(":", 1)
            size = content.size(digest)
            with content.open(digest) as fh:
                tf.addfile(_tarinfo(f"blobs/{algo}/{hexpart}", size), fh)


# ---- import ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedLayer:
    digest: str
    media_type: str
    size: int
    diff_id: str


def stage_rootfs(src: BinaryIO, work: Path, content: ContentStore) -> ImportedLayer:
    """Store a rootfs tarball as a layer blob: gzip/zstd kept as is, xz/bzip2 stored uncompressed."""
    work.mkdir(parents=True, exist_ok=True)
    head = src.read(8)
    kind = sniff_compression(head)
    path = work / "layer"
    blob_hash = hashlib.sha256()
    size = 0
    replay = _Replay(head, src)
    if kind in ("", "gzip", "zstd"):
        with _Tee(replay, blob_hash, path) as tee:  # closes the blob file on every path
            stream = LayerStream(tee, kind)  # type: ignore[arg-type]
            stream.drain()
            tee.finish()
        size = path.stat().st_size
        diff_id = stream.diff_id
        digest = f"sha256:{blob_hash.hexdigest()}"
        media_type = OCI_LAYER + (f"+{kind}" if kind else "")
    else:
        stream = LayerStream(replay, kind)  # type: ignore[arg-type]
        with open(path, "wb") as out:
            while chunk := stream.read(_CHUNK):
                out.write(chunk)
        size = stream.size
        diff_id = digest = stream.diff_id
        media_type = OCI_LAYER
    if stream.size == 0:
        raise InvalidArgument("the root filesystem tarball is empty")
    content.adopt(path, digest)
    return ImportedLayer(digest, media_type, size, diff_id)


class _Replay(io.RawIOBase):
    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = head
        self._src = src

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        size = _CHUNK if n is None or n < 0 else n
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._src.read(size)

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _Tee(io.RawIOBase):
    """Reads from `src`, hashing and copying every byte to `path` (the blob as stored)."""

    def __init__(self, src: io.RawIOBase | BinaryIO, h: Any, path: Path) -> None:
        self._src = src
        self._h = h
        self._out = open(path, "wb")  # closed by finish()

    def readable(self) -> bool:
        return True

    def read(self, n: int | None = -1) -> bytes:
        data = self._src.read(_CHUNK if n is None or n < 0 else n)
        if data:
            self._h.update(data)
            self._out.write(data)
        return data

    def finish(self) -> None:
        """Copy whatever the decompressor left unread (trailing padding), then flush to disk."""
        while self.read(_CHUNK):
            pass
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()

    def close(self) -> None:
        """Close the blob file too: after a failure (a full disk) no descriptor of it may stay open."""
        self._out.close()
        super().close()

    def readinto(self, b: bytearray | memoryview) -> int:  # type: ignore[override]
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


def import_config(diff_id: str, *, changes: dict[str, Any] | None = None, message: str = "") -> bytes:
    """The image config of an imported rootfs: host os/arch, one layer, one history entry."""
    host = platform.host()
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    config: dict[str, Any] = {
        "architecture": host.architecture,
        "os": host.os,
        "created": now,
        "config": dict(changes or {}),
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [
            {"created": now, "created_by": "dockyard import", "comment": message or "Imported from -"}
        ],
    }
    if host.variant:
        config["variant"] = host.variant
    return json.dumps(config, separators=(",", ":")).encode()


def single_layer_manifest(config: bytes, config_digest: str, layer: ImportedLayer) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": manifests.OCI_MANIFEST,
        "config": {"mediaType": manifests.OCI_CONFIG, "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def parse_changes(changes: Iterable[str]) -> dict[str, Any]:
    """Dockerfile-style `--change` lines (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL)."""
    config: dict[str, Any] = {}
    for line in changes:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if not rest:
            raise InvalidArgument(f"--change {line!r}: missing value")
        if keyword in ("CMD", "ENTRYPOINT"):
            value: Any
            if rest.startswith("["):
                try:
                    value = json.loads(rest)
                except ValueError as exc:
                    raise InvalidArgument(f"--change {line!r}: invalid JSON array") from exc
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise InvalidArgument(f"--change {line!r}: want a JSON array of strings")
            else:
                value = ["/bin/sh", "-c", rest]
            config["Cmd" if keyword == "CMD" else "Entrypoint"] = value
        elif keyword == "ENV":
            key, sep, val = rest.partition("=")
            if not sep:
                key, _, val = rest.partition(" ")
            config.setdefault("Env", []).append(f"{key.strip()}={val.strip()}")
        elif keyword == "WORKDIR":
            config["WorkingDir"] = rest
        elif keyword == "USER":
            config["User"] = rest
        elif keyword == "STOPSIGNAL":
            config["StopSignal"] = rest
        elif keyword == "LABEL":
            key, _, val = rest.partition("=")
            config.setdefault("Labels", {})[key.strip()] = val.strip().strip('"')
        elif keyword == "EXPOSE":
            for port in rest.split():
                config.setdefault("ExposedPorts", {})[port if "/" in port else f"{port}/tcp"] = {}
        else:
            raise InvalidArgument(f"--change {line!r}: unsupported instruction {keyword}")
    return config
