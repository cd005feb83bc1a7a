"""Writing image archives, as `docker save` makes them, streamed through a tar writer (never on disk).

`write_docker_archive`: config + uncompressed `<diffid>/layer.tar` + manifest.json + repositories, what
`docker load`, `podman load` and skopeo read; every layer is checked against its diff ID on the way.
`write_oci_archive`: an OCI image layout with the blobs exactly as stored, so digests are preserved.

Everything here blocks: call it from a thread.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from agent.bytestreams import ReadStream
from agent.errors import Integrity
from agent.images.content import ContentStore
from agent.images.store import ImageRecord
from agent.images.unpack import LayerStream
from agent.oci import manifests, platform
from agent.oci.manifests import CONTAINERD_NAME, OCI_REF_NAME
from agent.oci.reference import Reference


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


class _VerifyingReader(ReadStream):
    """Reads exactly `size` uncompressed bytes of a layer, then checks its diff ID."""

    def __init__(self, stream: LayerStream, size: int, diff_id: str) -> None:
        self._stream = stream
        self._size = size
        self._left = size
        self._diff_id = diff_id

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
                tf.addfile(info, _VerifyingReader(stream, size, diff_id))


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
