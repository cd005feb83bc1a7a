"""Test images built locally from busybox-static: a rootfs tarball and a tree comparison helper.

`busybox_rootfs_tar(path)` writes a root filesystem tarball (`/bin/busybox` plus one symlink per applet,
a minimal /etc) that `dockyard import busybox.tar busybox:test` turns into a runnable image, and that
`podman import` / `docker import` accept too. `tree_summary(dir)` describes an unpacked tree (types,
modes, owners, sizes, hashes, link targets) so two unpacks can be compared with `==`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
MTIME = 1_700_000_000
_DIRS = {
    "bin": 0o755,
    "dev": 0o755,
    "etc": 0o755,
    "home": 0o755,
    "proc": 0o555,
    "root": 0o700,
    "sbin": 0o755,
    "sys": 0o555,
    "tmp": 0o1777,
    "usr": 0o755,
    "usr/bin": 0o755,
    "usr/sbin": 0o755,
    "var": 0o755,
}
_ETC = {
    "etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
    "etc/group": b"root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": b"busybox\n",
}


def busybox_applets() -> list[str]:
    """Install paths of every applet (`usr/bin/env`, `sbin/ip`, ...), as busybox itself lists them."""
    out = subprocess.run([str(BUSYBOX), "--list-full"], check=True, capture_output=True, text=True).stdout
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()} - {"bin/busybox"})


def _add(tf: tarfile.TarFile, name: str, *, data: bytes | None = None, **attrs: object) -> None:
    info = tarfile.TarInfo(name)
    info.mtime = MTIME
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    for key, value in attrs.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    else:
        tf.addfile(info)


def busybox_rootfs_bytes(extra: dict[str, bytes] | None = None) -> bytes:
    """The uncompressed rootfs tarball; `extra` adds regular files (path → content, mode 0644)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, mode in _DIRS.items():
            _add(tf, name + "/", type=tarfile.DIRTYPE, mode=mode)
        _add(tf, "bin/busybox", data=BUSYBOX.read_bytes(), mode=0o755)
        for applet in busybox_applets():  # absolute links, as `busybox --install -s` makes them
            _add(tf, applet, type=tarfile.SYMTYPE, linkname="/bin/busybox", mode=0o777)
        for name, content in {**_ETC, **(extra or {})}.items():
            _add(tf, name, data=content, mode=0o644)
    return buf.getvalue()


def busybox_rootfs_tar(path: Path, *, compress: bool = False, extra: dict[str, bytes] | None = None) -> Path:
    """Write the busybox rootfs tarball to `path` (gzip-compressed if asked); returns `path`."""
    data = busybox_rootfs_bytes(extra)
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def tree_summary(root: Path) -> dict[str, tuple[object, ...]]:
    """Relative path → (kind, mode, uid, gid, size or device, sha256 or link target) for every entry."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            perm = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", st.st_uid, st.st_gid, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", perm, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("file", perm, st.st_uid, st.st_gid, st.st_size, digest)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "chr" if stat.S_ISCHR(st.st_mode) else "blk"
                out[rel] = (kind, perm, st.st_uid, st.st_gid, os.major(st.st_rdev), os.minor(st.st_rdev))
            else:
                out[rel] = ("other", perm, st.st_uid, st.st_gid)
    return out


def layer_tar(files: dict[str, bytes], *, whiteouts: tuple[str, ...] = ()) -> bytes:
    """A small layer tarball: regular files (path → content, parents implied) plus `.wh.` whiteouts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, content in sorted(files.items()):
            _add(tf, name, data=content, mode=0o644)
        for name in whiteouts:
            parent, _, base = name.rpartition("/")
            _add(tf, f"{parent}/.wh.{base}" if parent else f".wh.{base}", data=b"", mode=0o644)
    return buf.getvalue()


def store_image(
    content: Any,
    layers: list[bytes],
    *,
    compress: str = "gzip",
    architecture: str = "amd64",
    created: str = "2024-05-06T07:08:09Z",
    config_extra: dict[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """Put an OCI image (config, layers, manifest) into a ContentStore; returns (manifest digest, diff IDs).

    `compress`: "gzip", "zstd" or "" for every layer.
    """
    import zstandard

    descriptors = []
    diff_ids = []
    for tar in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        if compress == "gzip":
            blob, suffix = gzip.compress(tar, mtime=0), "+gzip"
        elif compress == "zstd":
            blob, suffix = zstandard.ZstdCompressor().compress(tar), "+zstd"
        else:
            blob, suffix = tar, ""
        digest = content.put_bytes(blob)
        descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar" + suffix,
                "digest": digest,
                "size": len(blob),
            }
        )
    config = {
        "architecture": architecture,
        "os": "linux",
        "created": created,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        **(config_extra or {}),
    }
    config_bytes = json.dumps(config).encode()
    config_digest = content.put_bytes(config_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": len(config_bytes),
        },
        "layers": descriptors,
    }
    return content.put_bytes(json.dumps(manifest).encode()), diff_ids
