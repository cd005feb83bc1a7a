"""Build OCI image-layout directories for tests, for `skopeo copy oci:DIR:TAG docker://…` to push.

Images are made of uncompressed layer tars (e.g. `tests.support.images.busybox_rootfs_bytes()`), compressed
here (gzip, zstd or none), with a config that carries the right diff IDs and platform. `add_index` makes a
multi-platform image index. Everything is deterministic for a given input.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zstandard

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
    "": "application/vnd.oci.image.layer.v1.tar",
}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_of(files: dict[str, bytes], mtime: int = 1_700_000_000) -> bytes:
    """An uncompressed tar of regular files (0644, root-owned), parent directories added."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = sorted({str(Path(name).parent) for name in files} - {"."})
        for directory in dirs:
            info = tarfile.TarInfo(directory + "/")
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, mtime
            tf.addfile(info)
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, mtime
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def compressible_bytes(size: int, seed: int) -> bytes:
    """Random-ish data that gzip shrinks to roughly 40-60%: random words from a small vocabulary."""
    rng = random.Random(seed)
    vocabulary = [
        bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz0123456789", k=rng.randint(2, 9))) for _ in range(4096)
    ]
    noise = rng.randbytes(size // 4)
    parts: list[bytes] = []
    total = 0
    position = 0
    while total < size:
        word = rng.choice(vocabulary)
        chunk = word + b" " if rng.random() < 0.8 else noise[position : position + 16]
        position = (position + 16) % max(1, len(noise) - 16)
        parts.append(chunk)
        total += len(chunk)
    return b"".join(parts)[:size]


def compress(data: bytes, compression: str) -> bytes:
    if compression == "gzip":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data)
    return data


@dataclass
class Image:
    manifest: dict[str, Any]  # descriptor of the manifest
    config: dict[str, Any]  # descriptor of the config
    layers: list[dict[str, Any]]  # descriptors of the (compressed) layers
    diff_ids: list[str]


class OciLayout:
    """An OCI image-layout directory under construction."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self._refs: list[dict[str, Any]] = []

    def add_blob(self, data: bytes, media_type: str) -> dict[str, Any]:
        digest = sha256(data)
        (self.root / "blobs" / "sha256" / digest.split(":", 1)[1]).write_bytes(data)
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def add_image(
        self,
        layers: list[bytes],
        *,
        architecture: str = "amd64",
        os: str = "linux",
        variant: str = "",
        compression: str = "gzip",
        cmd: list[str] | None = None,
    ) -> Image:
        layer_descriptors = [
            self.add_blob(compress(layer, compression), LAYER_TYPES[compression]) for layer in layers
        ]
        diff_ids = [sha256(layer) for layer in layers]
        config: dict[str, Any] = {
            "architecture": architecture,
            "os": os,
            "config": {"Cmd": cmd or ["/bin/sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "created": "2024-01-01T00:00:00Z",
        }
        if variant:
            config["variant"] = variant
        config_descriptor = self.add_blob(json.dumps(config, sort_keys=True).encode(), OCI_CONFIG)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config_descriptor,
            "layers": layer_descriptors,
        }
        descriptor = self.add_blob(json.dumps(manifest, sort_keys=True).encode(), OCI_MANIFEST)
        platform = {"architecture": architecture, "os": os}
        if variant:
            platform["variant"] = variant
        descriptor["platform"] = platform
        return Image(descriptor, config_descriptor, layer_descriptors, diff_ids)

    def add_index(self, images: list[Image]) -> dict[str, Any]:
        index = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [image.manifest for image in images],
        }
        return self.add_blob(json.dumps(index, sort_keys=True).encode(), OCI_INDEX)

    def tag(self, descriptor: dict[str, Any], name: str) -> None:
        """Name a manifest or index in index.json (`oci:DIR:name` in skopeo terms) and rewrite index.json."""
        entry = {k: v for k, v in descriptor.items() if k != "platform"}
        entry["annotations"] = {"org.opencontainers.image.ref.name": name}
        self._refs = [r for r in self._refs if r["annotations"]["org.opencontainers.image.ref.name"] != name]
        self._refs.append(entry)
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self._refs}
        (self.root / "index.json").write_text(json.dumps(index))
