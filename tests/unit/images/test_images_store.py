"""Chain IDs, snapshots, image metadata, and the manager's register/rmi/prune/GC/df/resolve_for_run."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import FailedPrecondition, Integrity, InvalidArgument, NotFound
from agent.images.manager import ImageManager
from agent.images.snapshots import SnapshotStore, chain_ids
from agent.state.db import Database
from tests.support.images import layer_tar, store_image

pytestmark = pytest.mark.root  # mknod, chown, overlay mounts


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- chain IDs ------------------------------------------------------------------------------------------

D1, D2, D3 = sha(b"layer1"), sha(b"layer2"), sha(b"layer3")


def test_chain_ids_known_vectors() -> None:
    # Computed independently with: printf '%s %s' "$parent" "$diff" | sha256sum
    assert chain_ids([D1, D2, D3]) == [
        "sha256:77ea7eee3d80b1a38f83906dd3048e2689457eb90e18a7d12f839c5ae37106a2",
        "sha256:9c7a0b8937394482a0afcc4bef0ca0aba0d74084bd9f60198ec7fac434e5436d",
        "sha256:1512378f2edc09c9e21c7511cc1aaf7c6d42d3b6ff301027b8527b8b23c3ce70",
    ]
    assert chain_ids([]) == []
    assert chain_ids([D2, D1])[1] != chain_ids([D1, D2])[1]  # order matters
    with pytest.raises(InvalidArgument):
        chain_ids(["not-a-digest"])


# ---- snapshots ------------------------------------------------------------------------------------------


def test_snapshot_commit_is_atomic_idempotent_and_reconciled(tmp_path: Path) -> None:
    db = Database(tmp_path / "db.sqlite")
    snaps = SnapshotStore(tmp_path / "snapshots", db, durable=False)
    chain = chain_ids([D1])[0]
    assert not snaps.has(chain)
    tmp = snaps.prepare(chain)
    (tmp / "file").write_text("x")
    assert not snaps.has(chain)  # invisible until committed
    snaps.commit(chain, tmp, D1, 1)
    assert snaps.path(chain).joinpath("file").read_text() == "x"
    second = snaps.prepare(chain)
    snaps.commit(chain, second, D1, 1)  # a racing identical unpack is simply dropped
    assert not second.exists()
    assert [s.chain_id for s in snaps.list()] == [chain]

    abandoned = snaps.prepare(chain_ids([D2])[0])  # a crash mid-unpack
    db.execute("DELETE FROM images_snapshots")  # and a lost row
    restarted = SnapshotStore(tmp_path / "snapshots", db, durable=False)
    restarted.reconcile()
    assert not abandoned.exists()
    assert [s.chain_id for s in restarted.list()] == [chain]
    restarted.remove(chain)
    assert not restarted.has(chain) and restarted.list() == []
    with pytest.raises(NotFound):
        restarted.path(chain)


def test_lowerdirs_are_top_first(tmp_path: Path) -> None:
    snaps = SnapshotStore(tmp_path / "s", Database(tmp_path / "db.sqlite"), durable=False)
    chains = chain_ids([D1, D2])
    for chain, diff in zip(chains, [D1, D2], strict=True):
        snaps.commit(chain, snaps.prepare(chain), diff, 0)
    assert snaps.lowerdirs(chains) == [snaps.path(chains[1]), snaps.path(chains[0])]


# ---- manager ----------------------------------------------------------------------------------------------


class InUse:
    def __init__(self) -> None:
        self.digests: set[str] = set()

    def __call__(self) -> set[str]:
        return set(self.digests)


@pytest.fixture
def in_use() -> InUse:
    return InUse()


@pytest.fixture
def manager(tmp_path: Path, in_use: InUse) -> Iterator[ImageManager]:
    db = Database(tmp_path / "data" / "dockyard.db")
    m = ImageManager(tmp_path / "data", db, in_use=in_use, durable=False)
    yield m
    db.close()


BASE = layer_tar({"bin/sh": b"shell", "etc/motd": b"hello", "etc/keep": b"keep"})
TOP = layer_tar({"app/run": b"run"}, whiteouts=("etc/motd",))


async def test_register_unpacks_and_records(manager: ImageManager) -> None:
    await manager.start()
    digest, diffs = store_image(manager.content, [BASE, TOP], compress="zstd")
    record = await manager.register("busybox:1", digest)
    assert record.name == "docker.io/library/busybox:1"
    assert record.digest == digest and record.diff_ids == tuple(diffs)
    assert record.chain_ids == tuple(chain_ids(diffs))
    assert record.platform == "linux/amd64" and record.created is not None
    assert record.size == len(b"shell") + len(b"hello") + len(b"keep") + len(b"run")
    assert manager.get("busybox:1") == manager.get(record.short_id)
    assert manager.get(record.config_digest).digest == digest
    assert manager.get(f"busybox@{digest}").digest == digest
    with pytest.raises(NotFound):
        manager.get("busybox:2")
    runnable = await manager.resolve_for_run("busybox:1")
    config, lowerdirs = runnable.config, list(runnable.lowerdirs)
    assert config["config"]["Cmd"] == ["/bin/sh"]
    assert lowerdirs[0].joinpath("app/run").read_bytes() == b"run"
    assert stat.S_ISCHR(lowerdirs[0].joinpath("etc/motd").lstat().st_mode)
    assert lowerdirs[1].joinpath("bin/sh").read_bytes() == b"shell"


async def test_overlay_of_snapshots_applies_whiteouts(manager: ImageManager, tmp_path: Path) -> None:
    """The snapshots really are overlayfs lower dirs: the whiteout hides the base layer's file."""
    digest, _ = store_image(manager.content, [BASE, TOP, layer_tar({"etc/new": b"n"})])
    await manager.register("ovl:1", digest)
    opaque_base = layer_tar({"var/cache/old": b"o"})
    opaque_top = layer_tar({"var/cache/.wh..wh..opq": b"", "var/cache/fresh": b"f"})
    digest2, _ = store_image(manager.content, [opaque_base, opaque_top])
    await manager.register("ovl:2", digest2)
    for ref, expect_absent, expect_present in [
        ("ovl:1", "etc/motd", ["etc/keep", "etc/new", "app/run", "bin/sh"]),
        ("ovl:2", "var/cache/old", ["var/cache/fresh"]),
    ]:
        lowerdirs = list((await manager.resolve_for_run(ref)).lowerdirs)
        merged = tmp_path / f"merged-{ref.replace(':', '-')}"
        merged.mkdir()
        opts = "lowerdir=" + ":".join(str(p) for p in lowerdirs)
        mount = ["mount", "-t", "overlay", "overlay", "-o", opts, str(merged)]
        await asyncio.to_thread(subprocess.run, mount, check=True)
        try:
            assert not (merged / expect_absent).exists()
            for path in expect_present:
                assert (merged / path).is_file(), path
        finally:
            await asyncio.to_thread(subprocess.run, ["umount", str(merged)], check=True)


async def test_layers_shared_between_images_are_unpacked_once(manager: ImageManager) -> None:
    d1, _ = store_image(manager.content, [BASE], compress="gzip")
    d2, _ = store_image(manager.content, [BASE, TOP], compress="")
    r1 = await manager.register("a:1", d1)
    r2 = await manager.register("b:1", d2)
    assert r1.chain_ids[0] == r2.chain_ids[0]
    assert len(manager.snapshots.list()) == 2


async def test_layer_not_matching_its_diff_id_is_integrity_and_leaves_no_image(manager: ImageManager) -> None:
    digest, _ = store_image(
        manager.content, [BASE], config_extra={"rootfs": {"type": "layers", "diff_ids": [D1]}}
    )
    with pytest.raises(Integrity):
        await manager.register("bad:1", digest)
    assert manager.list() == []
    assert manager.snapshots.list() == []
    assert os.listdir(manager.snapshots.root / ".tmp") == []


async def test_missing_layer_blob_is_not_found(manager: ImageManager) -> None:
    digest, _ = store_image(manager.content, [BASE])
    manifest = json.loads(manager.content.read_bytes(digest))
    manager.content.delete(manifest["layers"][0]["digest"])
    with pytest.raises(NotFound):
        await manager.register("gone:1", digest)
    assert manager.list() == []


async def test_tag_untag_and_rmi_semantics(manager: ImageManager, in_use: InUse) -> None:
    digest, _ = store_image(manager.content, [BASE])
    record = await manager.register("app:1", digest)
    manager.tag("app:1", "registry.example:5000/team/app:prod")
    assert {r.name for r in manager.list()} == {
        "docker.io/library/app:1",
        "registry.example:5000/team/app:prod",
    }
    with pytest.raises(InvalidArgument):
        manager.tag("app:1", "app@" + digest)
    with pytest.raises(FailedPrecondition):  # an ID with two names needs -f
        await manager.remove(record.short_id)
    result = await manager.remove("app:1")  # one of two names: untag only
    assert result.untagged == ("docker.io/library/app:1",) and result.deleted == ()
    assert manager.content.has(digest)

    in_use.digests.add(digest)
    with pytest.raises(FailedPrecondition):
        await manager.remove("registry.example:5000/team/app:prod")
    forced = await manager.remove("registry.example:5000/team/app:prod", force=True)
    assert forced.deleted == ()  # still used: only the name goes, the image stays (dangling)
    assert [r.name for r in manager.list()] == [""]
    assert manager.content.has(digest)
    lowerdirs = list((await manager.resolve_for_run(digest)).lowerdirs)
    assert all(p.is_dir() for p in lowerdirs)

    in_use.digests.clear()
    done = await manager.remove(digest)
    assert done.deleted == (digest,) and done.reclaimed > 0
    assert manager.list() == []
    assert list(manager.content.digests()) == []
    assert manager.snapshots.list() == []


async def test_renamed_image_becomes_dangling_and_prune_removes_only_unused(
    manager: ImageManager, in_use: InUse
) -> None:
    old, _ = store_image(manager.content, [BASE], created="2020-01-01T00:00:00Z")
    new, _ = store_image(manager.content, [BASE, TOP])
    used, _ = store_image(manager.content, [layer_tar({"used": b"u"})])
    kept, _ = store_image(manager.content, [layer_tar({"kept": b"k"})])
    await manager.register("svc:latest", old)
    await manager.register("svc:latest", new)  # the name moves: the old image is dangling now
    await manager.register("", used)
    await manager.register("kept:1", kept)
    in_use.digests.add(used)
    assert sorted(r.name for r in manager.list()) == [
        "",
        "",
        "docker.io/library/kept:1",
        "docker.io/library/svc:latest",
    ]

    pruned = await manager.prune()
    assert pruned.deleted == (old,)  # dangling and unused
    assert manager.store.by_digest(used) is not None
    assert manager.content.has(new) and manager.snapshots.has(chain_ids([sha(BASE)])[0])  # shared layer stays

    pruned_all = await manager.prune(all_unused=True)
    assert set(pruned_all.deleted) == {new, kept}
    assert [r.digest for r in manager.store.records()] == [used]
    referenced = manager.store.referenced_blobs()
    assert set(manager.content.digests()) == referenced


async def test_disk_usage_counts_everything(manager: ImageManager, in_use: InUse) -> None:
    d1, _ = store_image(manager.content, [BASE])
    d2, _ = store_image(manager.content, [BASE, TOP])
    await manager.register("a:1", d1)
    await manager.register("b:1", d2)
    in_use.digests.add(d1)
    du = manager.disk_usage()
    assert (du.images, du.images_active, du.snapshots) == (2, 1, 2)
    assert du.images_size == du.snapshots_size == 14 + 3
    assert du.images_reclaimable == 3  # only TOP's snapshot is not needed by a used image
    assert du.content_blobs == 6  # 2 manifests, 2 configs, 2 distinct layers
    assert du.content_size == sum(manager.content.size(d) for d in manager.content.digests())


async def test_resolve_for_run_reunpacks_a_lost_snapshot(manager: ImageManager) -> None:
    digest, _ = store_image(manager.content, [BASE])
    record = await manager.register("r:1", digest)
    manager.snapshots.remove(record.chain_ids[0])
    lowerdirs = list((await manager.resolve_for_run("r:1")).lowerdirs)
    assert lowerdirs[0].joinpath("etc/keep").read_bytes() == b"keep"
