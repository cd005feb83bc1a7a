"""Pull and push against real `docker-registry` processes, with the agent's image components in-process.

skopeo (a peer, never the product) pushes the source images and checks what dockyard pushed. The
end-to-end variants through a real agent and the CLI live in test_pull_push_cli.py.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import Integrity, NotFound, RegistryAuth, Unavailable
from agent.images.manager import ImageManager
from agent.images.pull import LayerProgress, LayerState, PullEvent, PullFinished, PullOptions, pull
from agent.images.push import BlobProgress, BlobState, PushEvent, PushFinished, PushOptions, push
from agent.oci import platform
from agent.oci.platform import Platform
from agent.registry.auth import Credentials
from agent.registry.client import RegistryClient, RetryPolicy
from agent.registry.sources import BlobSources
from agent.registry.transport import Transport
from agent.state.db import Database
from tests.support.flaky_http import FlakyFront
from tests.support.images import busybox_rootfs_bytes, tree_summary
from tests.support.oci_layout import Image, OciLayout, compressible_bytes, tar_of
from tests.support.registry import PASSWORD, USER, RegistryServer, running_registry, skopeo
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.timeout(120)

BIG = 6_000_000  # bytes of the big layer's file (≈ 3.5 MB gzip): big enough to cut in the middle


@dataclass
class Source:
    """An OCI layout with a busybox image, a big-layer image and an amd64+arm64 index."""

    root: Path
    busybox: Image
    big: Image
    amd64: Image
    arm64: Image
    index: dict[str, object]
    layer_tars: dict[str, bytes]  # compressed layer digest → uncompressed tar


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    root = tmp_path_factory.mktemp("oci") / "layout"
    layout = OciLayout(root)
    bb = busybox_rootfs_bytes(extra={"etc/motd": b"dockyard registry test\n"})
    extra = tar_of({"app/data.txt": b"layer two\n"})
    big = tar_of({"big/blob.bin": compressible_bytes(BIG, seed=7)})
    busybox = layout.add_image([bb, extra])
    big_image = layout.add_image([bb, big], compression="zstd")
    amd = layout.add_image([tar_of({"arch": b"amd64\n"})], architecture="amd64")
    arm = layout.add_image([tar_of({"arch": b"arm64\n"})], architecture="arm64", variant="v8")
    index = layout.add_index([amd, arm])
    layout.tag(busybox.manifest, "busybox")
    layout.tag(big_image.manifest, "big")
    layout.tag(index, "multi")
    tars = {}
    for image, layers in ((busybox, [bb, extra]), (big_image, [bb, big]), (amd, [b""]), (arm, [b""])):
        for descriptor, tar in zip(image.layers, layers, strict=True):
            tars[descriptor["digest"]] = tar
    return Source(root, busybox, big_image, amd, arm, index, tars)


def push_source(src: Source, registry: RegistryServer, tag: str, target: str, work: Path) -> None:
    extra = ["--all", "--preserve-digests"] if tag == "multi" else []
    skopeo(
        [
            "copy",
            *extra,
            f"oci:{src.root}:{tag}",
            f"docker://{registry.host}/{target}",
            *registry.skopeo_args(),
        ],
        work,
    )


@dataclass
class Harness:
    images: ImageManager
    client: RegistryClient
    sources: BlobSources
    db: Database

    async def pull(self, ref: str, **options: object) -> tuple[PullFinished, list[PullEvent]]:
        events = [e async for e in pull(self.images, self.client, self.sources, ref, PullOptions(**options))]  # type: ignore[arg-type]
        assert isinstance(events[-1], PullFinished)
        return events[-1], events

    async def push(self, ref: str, **options: object) -> tuple[PushFinished, list[PushEvent]]:
        events = [e async for e in push(self.images, self.client, self.sources, ref, PushOptions(**options))]  # type: ignore[arg-type]
        assert isinstance(events[-1], PushFinished)
        return events[-1], events


@pytest.fixture
async def make_harness(tmp_path: Path) -> AsyncIterator[object]:
    made: list[Harness] = []

    async def make(
        registry: RegistryServer | None = None,
        *,
        insecure: tuple[str, ...] = (),
        mirrors: dict[str, tuple[str, ...]] | None = None,
        name: str = "data",
        client_cert: bool = False,
    ) -> Harness:
        config_dir = tmp_path / f"{name}-config"
        if registry is not None:
            registry.install_certs(config_dir, client_cert=client_cert)
        db = Database(tmp_path / name / "dockyard.db")
        images = ImageManager(tmp_path / name, db, durable=False)
        await images.start()
        transport = Transport(config_dir / "certs.d", insecure, timeout=10)
        client = RegistryClient(transport, mirrors, RetryPolicy(attempts=4, first_delay=0.05, max_delay=0.5))
        harness = Harness(images, client, BlobSources(db), db)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.client.close()
        harness.db.close()


@pytest.fixture
def http_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    with running_registry(tmp_path / "registry-http", "http") as server:
        yield server


def expected_tree(tar: bytes, dest: Path) -> dict[str, tuple[object, ...]]:
    """Unpack a layer tar with Python's tarfile (an independent extractor) and summarize it."""
    dest.mkdir(parents=True)
    with tarfile.open(fileobj=__import__("io").BytesIO(tar)) as tf:
        tf.extractall(dest, filter="fully_trusted")
    return tree_summary(dest)


async def test_pull_of_skopeo_pushed_image_matches_the_source(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "busybox", "test/busybox:1", tmp_path / "skopeo")
    h: Harness = await make_harness(insecure=(http_registry.host,))  # type: ignore[operator]
    ref = f"{http_registry.host}/test/busybox:1"
    finished, events = await h.pull(ref)
    record = finished.record
    assert record.digest == source.busybox.manifest["digest"]
    assert record.name == ref
    assert finished.downloaded >= sum(layer["size"] for layer in source.busybox.layers)
    for i, layer in enumerate(source.busybox.layers):
        unpacked = tree_summary(h.images.snapshots.path(record.chain_ids[i]))
        assert unpacked == expected_tree(source.layer_tars[layer["digest"]], tmp_path / f"expected{i}")
        assert h.images.content.has(layer["digest"])
    assert any(isinstance(e, LayerProgress) and e.state is LayerState.DOWNLOADING for e in events)
    # Pulling again downloads no layer and reports them as present.
    again, events = await h.pull(ref)
    assert again.record.digest == record.digest
    assert again.downloaded == 0
    states = {
        e.digest: e.state for e in events if isinstance(e, LayerProgress) and e.state is LayerState.EXISTS
    }
    assert set(states) == {layer["digest"] for layer in source.busybox.layers}


async def test_multi_arch_index_selects_host_and_requested_platform(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "multi", "test/multi:1", tmp_path / "skopeo")
    h: Harness = await make_harness(insecure=(http_registry.host,))  # type: ignore[operator]
    ref = f"{http_registry.host}/test/multi:1"
    finished, _ = await h.pull(ref, platform=Platform.parse("linux/arm64"))
    assert finished.record.digest == source.arm64.manifest["digest"]
    assert finished.record.index_digest == source.index["digest"]
    assert finished.record.platform == "linux/arm64"
    arch_file = h.images.snapshots.path(finished.record.chain_ids[0]) / "arch"
    assert arch_file.read_text() == "arm64\n"
    host = platform.host()
    if host.architecture in ("amd64", "arm64"):
        finished, _ = await h.pull(ref)
        wanted = source.amd64 if host.architecture == "amd64" else source.arm64
        assert finished.record.digest == wanted.manifest["digest"]
    with pytest.raises(NotFound, match="linux/s390x"):
        await h.pull(ref, platform=Platform.parse("linux/s390x"))
    # By digest: the index's (then a platform is chosen) or a manifest's own; both verified.
    by_index = f"{http_registry.host}/test/multi@{source.index['digest']}"
    finished, _ = await h.pull(by_index, platform=Platform.parse("linux/arm64"))
    assert (finished.record.digest, finished.record.name) == (source.arm64.manifest["digest"], by_index)
    by_manifest = f"{http_registry.host}/test/multi@{source.amd64.manifest['digest']}"
    finished, _ = await h.pull(by_manifest)
    assert finished.record.digest == source.amd64.manifest["digest"]


async def test_single_manifest_of_another_platform_is_refused_when_asked_explicitly(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "busybox", "test/busybox:1", tmp_path / "skopeo")
    h: Harness = await make_harness(insecure=(http_registry.host,))  # type: ignore[operator]
    with pytest.raises(NotFound, match="linux/amd64 image, not linux/riscv64"):
        await h.pull(f"{http_registry.host}/test/busybox:1", platform=Platform.parse("linux/riscv64"))


@pytest.mark.parametrize("flavour", ["tls", "token"])
async def test_authenticated_registries(
    flavour: str, source: Source, make_harness: object, tmp_path: Path
) -> None:
    with running_registry(tmp_path / f"registry-{flavour}", flavour) as registry:
        push_source(source, registry, "busybox", "private/busybox:1", tmp_path / "skopeo")
        h: Harness = await make_harness(registry)  # type: ignore[operator]
        ref = f"{registry.host}/private/busybox:1"
        with pytest.raises(RegistryAuth, match="refused the credentials of user 'dockyard'"):
            await h.pull(ref, credentials=Credentials(USER, "wrong-password"))
        with pytest.raises(RegistryAuth, match="requires a login"):
            await h.pull(ref)
        assert h.images.list() == []
        before = len(registry.issuer.requests) if registry.issuer is not None else 0
        finished, _ = await h.pull(ref, credentials=Credentials(USER, PASSWORD))
        assert finished.record.digest == source.busybox.manifest["digest"]
        if registry.issuer is not None:
            # One token for the whole pull: manifest, config and both layers (in parallel) shared it.
            assert [(r.user, r.scopes, r.status) for r in registry.issuer.requests[before:]] == [
                (USER, ["repository:private/busybox:pull"], 200)
            ]
        # Push (with a chunked upload) to another repository, then let skopeo read it back.
        h.images.tag(ref, f"{registry.host}/private/copy:2")
        pushed, events = await h.push(
            f"{registry.host}/private/copy:2",
            credentials=Credentials(USER, PASSWORD),
            monolithic_limit=1024,
            chunk_size=300_000,
        )
        assert pushed.digest == source.busybox.manifest["digest"]
        mounted = {e.digest for e in events if isinstance(e, BlobProgress) and e.state is BlobState.MOUNTED}
        assert mounted == {d["digest"] for d in [source.busybox.config, *source.busybox.layers]}
        out = skopeo(
            ["inspect", "--raw", f"docker://{registry.host}/private/copy:2", *registry.skopeo_args("")],
            tmp_path / "skopeo",
        )
        assert json.loads(out.stdout)["layers"] == source.busybox.layers


async def test_push_to_new_registry_is_readable_by_skopeo(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "busybox", "test/busybox:1", tmp_path / "skopeo")
    with running_registry(tmp_path / "registry-b", "tls") as other:
        h: Harness = await make_harness(other, insecure=(http_registry.host,))  # type: ignore[operator]
        await h.pull(f"{http_registry.host}/test/busybox:1")
        target = f"{other.host}/dst/busybox:latest"
        h.images.tag(f"{http_registry.host}/test/busybox:1", target)
        creds = Credentials(USER, PASSWORD)
        pushed, events = await h.push(
            target, credentials=creds, monolithic_limit=500_000, chunk_size=256 * 1024
        )
        states = {e.state for e in events if isinstance(e, BlobProgress)}
        assert BlobState.UPLOADING in states and BlobState.MOUNTED not in states
        assert pushed.uploaded == sum(d["size"] for d in [source.busybox.config, *source.busybox.layers])
        copy = tmp_path / "copy"
        skopeo(
            ["copy", f"docker://{target}", f"oci:{copy}:x", *other.skopeo_args("src")], tmp_path / "skopeo"
        )
        index = json.loads((copy / "index.json").read_text())
        assert index["manifests"][0]["digest"] == source.busybox.manifest["digest"]
        # A second push finds every blob present and uploads nothing.
        again, events = await h.push(target, credentials=creds)
        assert again.uploaded == 0
        assert {e.state for e in events if isinstance(e, BlobProgress)} <= {
            BlobState.WAITING,
            BlobState.EXISTS,
        }


async def test_push_keeps_a_complete_index(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "multi", "test/multi:1", tmp_path / "skopeo")
    h: Harness = await make_harness(insecure=(http_registry.host,))  # type: ignore[operator]
    ref = f"{http_registry.host}/test/multi:1"
    await h.pull(ref, platform=Platform.parse("linux/arm64"))
    await h.pull(ref, platform=Platform.parse("linux/amd64"))
    h.images.tag(ref, f"{http_registry.host}/other/multi:1")
    pushed, _ = await h.push(f"{http_registry.host}/other/multi:1")
    assert pushed.digest == source.index["digest"]


async def test_cut_connection_resumes_with_range(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "big", "test/big:1", tmp_path / "skopeo")
    proxy = TcpProxy(http_registry.port)
    try:
        h: Harness = await make_harness(insecure=(proxy.host,))  # type: ignore[operator]
        big_layer = source.big.layers[1]
        # A link slower than unpacking (like any real one) keeps the client's receive buffer near empty;
        # an RST discards whatever is still queued there, which no client can avoid re-fetching.
        proxy.rate = 25_000_000
        proxy.cut_after(big_layer["size"] // 2)
        finished, _ = await h.pull(f"{proxy.host}/test/big:1")
        assert proxy.cuts == 1
        total = sum(layer["size"] for layer in source.big.layers) + source.big.config["size"]
        assert finished.record.digest == source.big.manifest["digest"]
        # Resumed from where it broke: at most 10% more than the image over the wire (headers included).
        assert proxy.downstream_bytes <= total * 1.10, (proxy.downstream_bytes, total)
        blob = h.images.snapshots.path(finished.record.chain_ids[1]) / "big/blob.bin"
        assert blob.read_bytes() == compressible_bytes(BIG, seed=7)
    finally:
        proxy.close()


async def test_interrupted_pull_resumes_from_the_partial_ingest(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "big", "test/big:1", tmp_path / "skopeo")
    proxy = TcpProxy(http_registry.port)
    try:
        h: Harness = await make_harness(insecure=(proxy.host,))  # type: ignore[operator]
        big_layer = source.big.layers[1]
        proxy.rate = 2_000_000  # bytes/s: slow enough to stop it half-way
        iterator = pull(h.images, h.client, h.sources, f"{proxy.host}/test/big:1", PullOptions())
        async for event in iterator:
            if (
                isinstance(event, LayerProgress)
                and event.digest == big_layer["digest"]
                and event.current > big_layer["size"] // 3
            ):
                break
        await iterator.aclose()  # type: ignore[attr-defined]
        partial = dict((d, n) for d, n, _ in h.images.content.ingests())
        assert 0 < partial[big_layer["digest"]] < big_layer["size"]
        assert h.images.list() == []
        proxy.rate = None
        proxy.reset_counters()
        finished, _ = await h.pull(f"{proxy.host}/test/big:1")
        assert finished.record.digest == source.big.manifest["digest"]
        remaining = big_layer["size"] - partial[big_layer["digest"]]
        assert finished.downloaded <= remaining + source.big.layers[0]["size"] + source.big.config["size"]
        assert h.images.content.ingests() == []
    finally:
        proxy.close()


async def test_blob_not_matching_its_digest_is_data_loss_and_leaves_nothing(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "busybox", "test/busybox:1", tmp_path / "skopeo")
    layer = source.busybox.layers[0]
    data_file = http_registry.blob_data(layer["digest"])
    data = bytearray(data_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, wrong bytes
    data_file.write_bytes(bytes(data))
    h: Harness = await make_harness(insecure=(http_registry.host,))  # type: ignore[operator]
    with pytest.raises(Integrity, match=layer["digest"]):
        await h.pull(f"{http_registry.host}/test/busybox:1")
    assert h.images.list() == []
    assert not h.images.content.has(layer["digest"])
    assert h.images.content.ingests() == []
    assert not h.images.snapshots.has(source.busybox.diff_ids[0])  # the chain ID of a first layer
    assert list((h.images.data_root / "snapshots" / ".tmp").iterdir()) == []


async def test_mirror_first_then_origin(source: Source, make_harness: object, tmp_path: Path) -> None:
    with (
        running_registry(tmp_path / "origin", "http") as origin,
        running_registry(tmp_path / "mirror", "http") as mirror,
    ):
        push_source(source, mirror, "busybox", "test/busybox:1", tmp_path / "skopeo")
        push_source(source, origin, "multi", "test/multi:1", tmp_path / "skopeo")
        h: Harness = await make_harness(
            insecure=(origin.host, mirror.host), mirrors={origin.host: (mirror.host,)}
        )
        # Only the mirror has it: served from the mirror, recorded under the origin's name.
        finished, _ = await h.pull(f"{origin.host}/test/busybox:1")
        assert finished.record.name == f"{origin.host}/test/busybox:1"
        # Only the origin has it: the mirror's 404 falls back to the origin.
        finished, _ = await h.pull(f"{origin.host}/test/multi:1", platform=Platform.parse("linux/arm64"))
        assert finished.record.digest == source.arm64.manifest["digest"]
    # Both gone: a clear Unavailable-type failure, not a hang.
    with pytest.raises(Exception, match="cannot reach"):
        await asyncio.wait_for(h.pull(f"{origin.host}/test/gone:1"), 30)


async def test_server_errors_are_retried_with_backoff(
    source: Source, http_registry: RegistryServer, make_harness: object, tmp_path: Path
) -> None:
    push_source(source, http_registry, "busybox", "test/busybox:1", tmp_path / "skopeo")
    front = FlakyFront(http_registry.port)
    try:
        h: Harness = await make_harness(insecure=(front.host,))  # type: ignore[operator]
        finished, _ = await h.pull(f"{front.host}/test/busybox:1")
        assert finished.record.digest == source.busybox.manifest["digest"]
        # Config and both layers each got a 503 first, and were fetched on a later try.
        expected = {d["digest"] for d in [source.busybox.config, *source.busybox.layers]}
        assert {path.rsplit("/", 1)[1] for path in front.failed} == expected
    finally:
        front.close()


async def test_client_certificate_from_certs_d(source: Source, make_harness: object, tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry-mtls", "tls", client_certs=True) as registry:
        push_source(source, registry, "busybox", "mtls/busybox:1", tmp_path / "skopeo")
        ref = f"{registry.host}/mtls/busybox:1"
        creds = Credentials(USER, PASSWORD)
        without: Harness = await make_harness(registry, name="no-client-cert")  # type: ignore[operator]
        with pytest.raises(Unavailable, match=f"TLS with {registry.host} failed"):
            await without.pull(ref, credentials=creds)
        with_cert: Harness = await make_harness(registry, name="with-client-cert", client_cert=True)  # type: ignore[operator]
        finished, _ = await with_cert.pull(ref, credentials=creds)
        assert finished.record.digest == source.busybox.manifest["digest"]
