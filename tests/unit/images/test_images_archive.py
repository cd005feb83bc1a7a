"""Archives in-process: docker-archive and OCI save/load round trips, foreign layouts, tampering, import."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.errors import Integrity, InvalidArgument, NotFound
from agent.images.manager import ImageManager
from agent.oci.platform import host
from agent.state.db import Database
from tests.support.images import layer_tar, store_image, tree_summary

pytestmark = pytest.mark.root  # mknod, chown, overlay mounts

BASE = layer_tar({"bin/tool": b"tool", "etc/conf": b"a=1"})
TOP = layer_tar({"srv/data": os.urandom(64)}, whiteouts=("etc/conf",))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def chunks(data: bytes, size: int = 100_000) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


async def collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in stream])


def members(archive: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        for m in tf.getmembers():
            if m.isreg():
                f = tf.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


def tar_of(files: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return buf.getvalue()


@pytest.fixture
def managers(tmp_path: Path) -> Iterator[tuple[ImageManager, ImageManager]]:
    """Two independent agents' image managers: save on one, load on the other."""
    dbs = [Database(tmp_path / n / "db.sqlite") for n in ("a", "b")]
    yield (
        ImageManager(tmp_path / "a", dbs[0], durable=False),
        ImageManager(tmp_path / "b", dbs[1], durable=False),
    )
    for db in dbs:
        db.close()


async def test_docker_archive_round_trip(managers: tuple[ImageManager, ImageManager]) -> None:
    src, dst = managers
    digest, diffs = store_image(src.content, [BASE, TOP], compress="gzip")
    record = await src.register("example.com/team/app:1.0", digest)
    src.tag("example.com/team/app:1.0", "app:latest")
    archive = await collect(await src.save(["example.com/team/app:1.0", "app:latest"]))

    files = members(archive)
    manifest = json.loads(files["manifest.json"])
    assert len(manifest) == 1
    assert manifest[0]["Config"] == record.config_digest.split(":")[1] + ".json"
    assert sorted(manifest[0]["RepoTags"]) == ["docker.io/library/app:latest", "example.com/team/app:1.0"]
    for layer_path, diff_id in zip(manifest[0]["Layers"], diffs, strict=True):
        assert sha(files[layer_path]) == diff_id  # uncompressed, as docker load expects
    assert json.loads(files["repositories"]) == {
        "app": {"latest": diffs[-1].split(":")[1]},
        "example.com/team/app": {"1.0": diffs[-1].split(":")[1]},
    }
    assert sha(files[manifest[0]["Config"]]) == record.config_digest

    loaded = await dst.load(chunks(archive))
    assert [r.config_digest for r in loaded] == [record.config_digest]
    assert sorted(dst.names_of(loaded[0].digest)) == [
        "docker.io/library/app:latest",
        "example.com/team/app:1.0",
    ]
    lower_src = list((await src.resolve_for_run("app:latest")).lowerdirs)
    lower_dst = list((await dst.resolve_for_run("app:latest")).lowerdirs)
    assert [tree_summary(p) for p in lower_src] == [tree_summary(p) for p in lower_dst]


async def test_oci_archive_round_trip_preserves_digests(managers: tuple[ImageManager, ImageManager]) -> None:
    src, dst = managers
    digest, _ = store_image(src.content, [BASE, TOP], compress="zstd")
    await src.register("busybox:oci", digest)
    archive = await collect(await src.save(["busybox:oci"], "oci"))
    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    entry = index["manifests"][0]
    assert entry["digest"] == digest
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "docker.io/library/busybox:oci"
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert sha(data) == "sha256:" + name.rsplit("/", 1)[1]
    loaded = await dst.load(chunks(archive))
    assert [r.digest for r in loaded] == [digest]
    assert dst.get("busybox:oci").layers == src.get("busybox:oci").layers


async def test_load_legacy_docker_save_layout_compressed_file(
    managers: tuple[ImageManager, ImageManager],
) -> None:
    """`<id>/layer.tar` dirs, a duplicated layer as a symlink, a gzip layer, and the whole file gzipped."""
    _, dst = managers
    diff_base, diff_top = sha(BASE), sha(TOP)
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_base, diff_top, diff_base]},
        }
    ).encode()
    archive = tar_of(
        {
            "aaaa/layer.tar": BASE,
            "bbbb/layer.tar": gzip.compress(TOP),
            "cfg.json": config,
            "manifest.json": json.dumps(
                [
                    {
                        "Config": "cfg.json",
                        "RepoTags": ["legacy:1"],
                        "Layers": ["aaaa/layer.tar", "bbbb/layer.tar", "cccc/layer.tar"],
                    }
                ]
            ).encode(),
        },
        symlinks={"cccc/layer.tar": "../aaaa/layer.tar"},
    )
    loaded = await dst.load(chunks(gzip.compress(archive)))
    assert loaded[0].name == "docker.io/library/legacy:1"
    assert loaded[0].diff_ids == (diff_base, diff_top, diff_base)
    assert [layer.media_type for layer in loaded[0].layers] == [
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar",
    ]
    lowerdirs = list((await dst.resolve_for_run("legacy:1")).lowerdirs)
    assert lowerdirs[-1].joinpath("bin/tool").read_bytes() == b"tool"


async def test_tampered_docker_archive_is_integrity_and_registers_nothing(
    managers: tuple[ImageManager, ImageManager],
) -> None:
    _, dst = managers
    config = json.dumps(
        {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": [sha(BASE)]}}
    )
    tampered = BASE.replace(b"tool", b"evil")
    archive = tar_of(
        {
            "l/layer.tar": tampered,
            "c.json": config.encode(),
            "manifest.json": json.dumps(
                [{"Config": "c.json", "RepoTags": ["t:1"], "Layers": ["l/layer.tar"]}]
            ).encode(),
        }
    )
    with pytest.raises(Integrity):
        await dst.load(chunks(archive))
    assert dst.list() == []
    await dst.prune()
    assert list(dst.content.digests()) == []
    assert os.listdir(dst.tmp_dir) == []


async def test_oci_archive_blob_not_matching_its_name_is_integrity(
    managers: tuple[ImageManager, ImageManager],
) -> None:
    src, dst = managers
    digest, _ = store_image(src.content, [BASE], compress="")
    await src.register("x:1", digest)
    files = members(await collect(await src.save(["x:1"], "oci")))
    layer_name = next(n for n, d in files.items() if n.startswith("blobs/") and d == BASE)
    files[layer_name] = BASE.replace(b"tool", b"evil")
    with pytest.raises(Integrity):
        await dst.load(chunks(tar_of(files)))
    assert dst.list() == []


async def test_oci_archive_with_multi_arch_index_selects_the_host(
    managers: tuple[ImageManager, ImageManager],
) -> None:
    src, dst = managers
    me = host()
    other = "arm64" if me.architecture != "arm64" else "amd64"
    mine, _ = store_image(
        src.content, [layer_tar({"arch": me.architecture.encode()})], architecture=me.architecture
    )
    theirs, _ = store_image(src.content, [layer_tar({"arch": other.encode()})], architecture=other)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": d,
                "size": src.content.size(d),
                "platform": {"os": "linux", "architecture": a},
            }
            for d, a in ((theirs, other), (mine, me.architecture))
        ],
    }
    index_bytes = json.dumps(index).encode()
    files = {f"blobs/sha256/{d.split(':')[1]}": src.content.read_bytes(d) for d in src.content.digests()}
    files[f"blobs/sha256/{sha(index_bytes).split(':')[1]}"] = index_bytes
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    files["index.json"] = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": index["mediaType"],
                    "digest": sha(index_bytes),
                    "size": len(index_bytes),
                    "annotations": {"org.opencontainers.image.ref.name": "multi:1"},
                }
            ],
        }
    ).encode()
    loaded = await dst.load(chunks(tar_of(files)))
    assert loaded[0].digest == mine
    assert loaded[0].index_digest == sha(index_bytes)
    assert loaded[0].name == "docker.io/library/multi:1"
    assert dst.get(f"multi@{sha(index_bytes)}").digest == mine


@pytest.mark.parametrize(
    "garbage", [b"", b"this is not a tar archive at all" * 100, gzip.compress(b"nope" * 500)]
)
async def test_load_rejects_non_archives(managers: tuple[ImageManager, ImageManager], garbage: bytes) -> None:
    _, dst = managers
    with pytest.raises(InvalidArgument):
        await dst.load(chunks(garbage))
    assert dst.list() == []


async def test_load_rejects_archive_with_hostile_layer(
    managers: tuple[ImageManager, ImageManager], tmp_path: Path
) -> None:
    _, dst = managers
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("../../escaped")
        info.size = 1
        tf.addfile(info, io.BytesIO(b"x"))
    layer = buf.getvalue()
    config = json.dumps(
        {"os": "linux", "architecture": "amd64", "rootfs": {"type": "layers", "diff_ids": [sha(layer)]}}
    )
    archive = tar_of(
        {
            "l.tar": layer,
            "c.json": config.encode(),
            "manifest.json": json.dumps(
                [{"Config": "c.json", "RepoTags": ["h:1"], "Layers": ["l.tar"]}]
            ).encode(),
        }
    )
    with pytest.raises(InvalidArgument):
        await dst.load(chunks(archive))
    assert dst.list() == []
    assert not any(p.name == "escaped" for p in tmp_path.rglob("escaped"))


async def test_save_unknown_image_fails_before_streaming(managers: tuple[ImageManager, ImageManager]) -> None:
    src, _ = managers
    with pytest.raises(NotFound):
        await src.save(["nothing:here"])
    with pytest.raises(InvalidArgument):
        await src.save([])


async def test_abandoned_save_stream_releases_its_worker(managers: tuple[ImageManager, ImageManager]) -> None:
    src, _ = managers
    big = layer_tar({"blob": os.urandom(6 * 1024 * 1024)})
    digest, _ = store_image(src.content, [big], compress="")
    await src.register("big:1", digest)
    stream = await src.save(["big:1"])
    first = await anext(aiter(stream))
    assert first
    await stream.aclose()  # type: ignore[attr-defined]
    # prune needs the exclusive GC lock, which the save holds until its worker has stopped
    await asyncio.wait_for(src.prune(all_unused=True), timeout=10)
    assert src.list() == []


@pytest.mark.parametrize("compression", ["", "gzip", "xz"])
async def test_import_rootfs(managers: tuple[ImageManager, ImageManager], compression: str) -> None:
    src, _ = managers
    rootfs = layer_tar({"bin/sh": b"#!", "etc/hostname": b"box"})
    data = {"": rootfs, "gzip": gzip.compress(rootfs), "xz": lzma.compress(rootfs)}[compression]
    record = await src.import_rootfs(
        chunks(data, 1000), "imported:1", changes=['CMD ["/bin/sh"]', "ENV A=b", "WORKDIR /srv"], message="hi"
    )
    assert record.name == "docker.io/library/imported:1"
    assert record.diff_ids == (sha(rootfs),)
    expected_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compression == "gzip" else "")
    assert record.layers[0].media_type == expected_type
    runnable = await src.resolve_for_run("imported:1")
    config, lowerdirs = runnable.config, list(runnable.lowerdirs)
    assert config["os"] == "linux" and config["architecture"] == host().architecture
    assert config["config"] == {"Cmd": ["/bin/sh"], "Env": ["A=b"], "WorkingDir": "/srv"}
    assert config["history"][0]["comment"] == "hi"
    assert lowerdirs[0].joinpath("etc/hostname").read_bytes() == b"box"


@pytest.mark.parametrize(
    ("data", "ref", "changes"),
    [
        (b"", "empty:1", []),
        (b"definitely not a tarball, no no no" * 50, "junk:1", []),
        (layer_tar({"a": b"b"}), "bad name!", []),
        (layer_tar({"a": b"b"}), "x@sha256:" + "0" * 64, []),
        (layer_tar({"a": b"b"}), "ok:1", ["FROBNICATE now"]),
    ],
)
async def test_import_rejects_bad_input_cleanly(
    managers: tuple[ImageManager, ImageManager], data: bytes, ref: str, changes: list[str]
) -> None:
    src, _ = managers
    with pytest.raises(InvalidArgument):
        await src.import_rootfs(chunks(data), ref, changes=changes)
    assert src.list() == []
    assert os.listdir(src.tmp_dir) == [] if src.tmp_dir.exists() else True
