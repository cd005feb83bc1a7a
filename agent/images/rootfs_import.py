"""Importing a root filesystem tarball as a one-layer image (`dockyard import`, with `--change`).

`stage_rootfs` stores the tarball as a layer blob (gzip/zstd kept as is, xz/bzip2 stored uncompressed),
`parse_changes` reads the Dockerfile-style `--change` lines into image config fields, and `import_config`
/ `single_layer_manifest` make the config and manifest to register. Blocking: call it from a thread.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from agent.bytestreams import Prefixed, Tee
from agent.errors import InvalidArgument
from agent.images.content import ContentStore
from agent.images.unpack import LayerStream, sniff_compression
from agent.oci import manifests, platform
from agent.oci.manifests import OCI_LAYER

_CHUNK = 1 << 20


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
    replay = Prefixed(head, src)
    if kind in ("", "gzip", "zstd"):
        with open(path, "wb") as out:  # closed on every path: after a full disk no descriptor stays open

            def store(data: bytes) -> None:
                blob_hash.update(data)
                out.write(data)

            tee = Tee(replay, store)
            stream = LayerStream(tee, kind)
            stream.drain()
            tee.drain()  # whatever the decompressor left unread (trailing padding) is part of the blob
            out.flush()
            os.fsync(out.fileno())
        size = path.stat().st_size
        diff_id = stream.diff_id
        digest = f"sha256:{blob_hash.hexdigest()}"
        media_type = OCI_LAYER + (f"+{kind}" if kind else "")
    else:
        stream = LayerStream(replay, kind)
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
