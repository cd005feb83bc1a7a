"""The Images servicer on a real in-process grpc.aio server: streams both ways, status codes, cancellation."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import tarfile
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agent.api.v1 import images_pb2, images_pb2_grpc
from agent.images.manager import ImageManager
from agent.server.images import ImagesServicer
from agent.server.interceptors import AgentInterceptor
from agent.state.db import Database
from tests.support.images import layer_tar

pytestmark = pytest.mark.root  # mknod, chown, overlay mounts


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[tuple[images_pb2_grpc.ImagesStub, ImageManager]]:
    db = Database(tmp_path / "data" / "db.sqlite")
    manager = ImageManager(tmp_path / "data", db, durable=False)
    await manager.start()
    server = grpc.aio.server(interceptors=[AgentInterceptor()])
    images_pb2_grpc.add_ImagesServicer_to_server(ImagesServicer(manager), server)
    sock = tmp_path / "images.sock"
    server.add_insecure_port(f"unix:{sock}")
    await server.start()
    channel = grpc.aio.insecure_channel(f"unix:{sock}")
    try:
        yield images_pb2_grpc.ImagesStub(channel), manager
    finally:
        await channel.close()
        await server.stop(None)
        db.close()


async def import_image(
    stub: images_pb2_grpc.ImagesStub, name: str, rootfs: bytes, chunk: int = 256 * 1024
) -> images_pb2.Image:
    async def requests() -> AsyncIterator[images_pb2.ImportImageRequest]:
        yield images_pb2.ImportImageRequest(reference=name, changes=['CMD ["sh"]'])
        for i in range(0, len(rootfs), chunk):
            yield images_pb2.ImportImageRequest(chunk=rootfs[i : i + chunk])

    response = await stub.Import(requests())
    return response.image


async def test_import_list_inspect_tag_remove(stub: tuple[images_pb2_grpc.ImagesStub, ImageManager]) -> None:
    client, _ = stub
    rootfs = layer_tar({"bin/sh": b"sh", "etc/passwd": b"root:x:0:0::/:/bin/sh\n"})
    image = await import_image(client, "svc:1", rootfs)
    assert list(image.names) == ["docker.io/library/svc:1"]
    assert image.layers[0].diff_id == "sha256:" + hashlib.sha256(rootfs).hexdigest()
    listed = await client.List(images_pb2.ListImagesRequest())
    assert [i.id for i in listed.images] == [image.id]
    inspected = await client.Inspect(images_pb2.InspectImageRequest(reference="svc:1"))
    assert json.loads(inspected.config_json)["config"]["Cmd"] == ["sh"]
    assert json.loads(inspected.manifest_json)["config"]["digest"] == image.id
    tagged = await client.Tag(images_pb2.TagImageRequest(source="svc:1", target="svc:2"))
    assert sorted(tagged.image.names) == ["docker.io/library/svc:1", "docker.io/library/svc:2"]
    removed = await client.Remove(images_pb2.RemoveImageRequest(reference="svc:1"))
    assert list(removed.untagged) == ["docker.io/library/svc:1"] and not removed.deleted


@pytest.mark.parametrize(
    ("call", "code"),
    [
        ("inspect_missing", grpc.StatusCode.NOT_FOUND),
        ("inspect_empty", grpc.StatusCode.INVALID_ARGUMENT),
        ("tag_bad_name", grpc.StatusCode.INVALID_ARGUMENT),
        ("save_missing", grpc.StatusCode.NOT_FOUND),
        ("load_garbage", grpc.StatusCode.INVALID_ARGUMENT),
        ("load_tampered", grpc.StatusCode.DATA_LOSS),
    ],
)
async def test_errors_map_to_status_codes(
    stub: tuple[images_pb2_grpc.ImagesStub, ImageManager], call: str, code: grpc.StatusCode
) -> None:
    client, manager = stub
    await import_image(client, "base:1", layer_tar({"f": b"x"}))

    async def chunks(data: bytes) -> AsyncIterator[images_pb2.LoadImagesRequest]:
        yield images_pb2.LoadImagesRequest(chunk=data)

    def tampered_archive() -> bytes:
        layer = layer_tar({"a": b"honest"})
        config = json.dumps(
            {
                "os": "linux",
                "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
            }
        ).encode()
        files = {
            "l.tar": layer.replace(b"honest", b"forged"),
            "c.json": config,
            "manifest.json": json.dumps(
                [{"Config": "c.json", "RepoTags": ["t:1"], "Layers": ["l.tar"]}]
            ).encode(),
        }
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    with pytest.raises(grpc.aio.AioRpcError) as err:
        if call == "inspect_missing":
            await client.Inspect(images_pb2.InspectImageRequest(reference="nope:1"))
        elif call == "inspect_empty":
            await client.Inspect(images_pb2.InspectImageRequest())
        elif call == "tag_bad_name":
            await client.Tag(images_pb2.TagImageRequest(source="base:1", target="bad name!"))
        elif call == "save_missing":
            async for _ in client.Save(images_pb2.SaveImagesRequest(references=["base:1", "nope:1"])):
                pass
        elif call == "load_garbage":
            await client.Load(chunks(os.urandom(5000)))
        else:
            await client.Load(chunks(tampered_archive()))
    assert err.value.code() == code
    assert "Traceback" not in (err.value.details() or "")
    assert [r.name for r in manager.list()] == ["docker.io/library/base:1"]


async def test_save_streams_chunks_and_cancel_releases_the_agent(
    stub: tuple[images_pb2_grpc.ImagesStub, ImageManager],
) -> None:
    client, manager = stub
    await import_image(client, "big:1", layer_tar({"blob": os.urandom(5 * 1024 * 1024)}))
    archive = b"".join(
        [m.chunk async for m in client.Save(images_pb2.SaveImagesRequest(references=["big:1"]))]
    )
    with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
        assert "manifest.json" in tf.getnames()

    call = client.Save(images_pb2.SaveImagesRequest(references=["big:1"]))
    first = await call.read()
    assert isinstance(first, images_pb2.SaveImagesResponse) and 0 < len(first.chunk) <= 1 << 20
    call.cancel()
    # Prune needs the exclusive GC lock: it only gets it once the cancelled save has let go.
    pruned = await asyncio.wait_for(client.Prune(images_pb2.PruneImagesRequest(all=True)), timeout=10)
    assert list(pruned.deleted) and manager.list() == []
    usage = await client.DiskUsage(images_pb2.ImagesDiskUsageRequest())
    assert (usage.images, usage.snapshots, usage.content_blobs) == (0, 0, 0)
