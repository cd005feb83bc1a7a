"""Pure parts of the transfer area: commit's config rules and stubs, the fan-out window, move's names, and
the sender's retries against an in-memory target."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidArgument
from agent.runtime.options import RunOptions
from agent.transfer.commit import container_config, mount_stubs, parse_changes
from controller.errors import ControllerError
from controller.move import image_name
from controller.send import WINDOW, _Broadcast


def test_changes_accept_what_docker_commit_accepts_and_refuse_the_rest() -> None:
    parsed = parse_changes(('CMD ["sh"]', "ENV A=1 B=2", "EXPOSE 80/udp", "VOLUME /v", "workdir /w"))
    assert [i.keyword for i in parsed] == ["CMD", "ENV", "EXPOSE", "VOLUME", "WORKDIR"]
    for bad in ("RUN true", "COPY a b", "FROM x", "", "STOPSIGNAL 9"):
        with pytest.raises(InvalidArgument, match="is not allowed"):
            parse_changes((bad,))
    with pytest.raises(InvalidArgument, match="--change 'ENV': ENV requires"):
        parse_changes(("ENV",))
    with pytest.raises(InvalidArgument, match="--change line 1: EXPOSE: invalid port"):
        parse_changes(("EXPOSE notaport",))[0].expand({})  # values are checked when applied


def test_container_settings_carry_into_the_committed_config() -> None:
    base = {"Env": ["PATH=/bin", "A=image"], "Cmd": ["sh"], "Entrypoint": None, "Labels": {"x": "1"}}
    opts = RunOptions(
        image="i", env=("A=run", "B=2", "BARE"), labels={"y": "2"}, workdir="/srv", user="nobody"
    )
    got = container_config(base, opts)
    assert got["Env"] == ["PATH=/bin", "A=run", "B=2"]
    assert got["Labels"] == {"x": "1", "y": "2"} and got["WorkingDir"] == "/srv" and got["User"] == "nobody"
    assert got["Cmd"] == ["sh"]
    assert base["Env"] == ["PATH=/bin", "A=image"]  # the image's config is not modified
    reset = container_config(base, RunOptions(image="i", entrypoint=("/init",)))
    assert reset["Entrypoint"] == ["/init"] and reset["Cmd"] is None
    both = container_config(base, RunOptions(image="i", entrypoint=("/init",), command=("x",)))
    assert both["Cmd"] == ["x"]


def test_mount_stubs_are_only_empty_things_no_image_layer_has(tmp_path: Path) -> None:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    for d in (upper / "etc", upper / "data", upper / "full", lower / "etc", lower / "proc"):
        d.mkdir(parents=True)
    (upper / "etc" / "hosts").write_bytes(b"")  # runc's stub
    (upper / "etc" / "hostname").write_bytes(b"")  # exists below: a real change, kept
    (lower / "etc" / "hostname").write_bytes(b"img\n")
    (upper / "full" / "f").write_bytes(b"user data")  # a mount point the container wrote into: kept
    spec = {
        "mounts": [
            {"destination": d}
            for d in ("/etc/hosts", "/etc/hostname", "/data", "/full", "/proc", "/missing", "/", "/../x")
        ]
    }
    assert mount_stubs(upper, spec, [lower]) == frozenset({"etc/hosts", "data"})


def test_broadcast_keeps_producer_within_the_window_of_the_slowest_and_forgets_leavers() -> None:
    async def scenario() -> None:
        bc = _Broadcast(["fast", "slow"])
        produced = 0

        async def produce() -> None:
            nonlocal produced
            for i in range(WINDOW * 3):
                if not await bc.put(i, b"x"):
                    return
                produced += 1
            await bc.finish()

        producer = asyncio.create_task(produce())
        fast = [await bc.get("fast") for _ in range(WINDOW)]
        await asyncio.sleep(0.01)
        assert produced == WINDOW and not producer.done()  # "slow" has taken nothing yet
        assert [item[0] for item in fast if item] == list(range(WINDOW))
        await bc.leave("slow")
        rest = []
        while (item := await bc.get("fast")) is not None:
            rest.append(item[0])
        await producer
        assert rest == list(range(WINDOW, WINDOW * 3))

    asyncio.run(scenario())


def test_broadcast_hands_out_what_arrived_then_the_source_error() -> None:
    async def scenario() -> None:
        bc = _Broadcast(["t"])
        await bc.put(0, b"abc")
        await bc.finish(ControllerError("source went away"))
        assert await bc.get("t") == (0, b"abc")
        with pytest.raises(ControllerError, match="went away"):
            await bc.get("t")

    asyncio.run(scenario())


def test_move_image_names_are_valid_references() -> None:
    from agent.oci.reference import Reference

    for name in ("web", "Web_1", "a..b", "__", "x.y-z"):
        ref = image_name(name)
        Reference.parse(ref)
        assert ref.startswith("dockyard-move/")


def test_a_plan_counts_a_layer_listed_twice_once() -> None:
    from controller.send import Blob, ImagePlan

    empty = Blob("sha256:" + "e" * 64, 32)
    plan = ImagePlan("sha256:" + "m" * 64, (empty, Blob("sha256:" + "a" * 64, 100), empty), ("x:1",))
    assert [b.digest for b in plan.unique_blobs] == [empty.digest, "sha256:" + "a" * 64]
    assert plan.size == 132


class _FakeCall:
    """A stream-unary WriteBlob that stores what it reads, or fails as grpc.aio does on a broken link."""

    def __init__(self, requests: Any, fail: type[BaseException] | None, target: _FakeTarget) -> None:
        self._requests = requests
        self._fail = fail
        self._target = target

    async def _run(self) -> Any:
        from agent.api.v1 import transfer_pb2 as pb

        digest, data = "", b""
        self._target.active += 1
        self._target.peak = max(self._target.peak, self._target.active)
        try:
            async for req in self._requests:
                if req.WhichOneof("msg") == "header":
                    digest = req.header.digest
                    continue
                data += req.data
                if self._fail is not None:
                    raise self._fail()  # grpc.aio cancelled the call itself: the connection broke
        finally:
            self._target.active -= 1
        self._target.blobs[digest] = data
        return pb.WriteBlobResponse(received=len(data))

    def __await__(self) -> Any:
        return self._run().__await__()

    def cancel(self) -> bool:
        return False


class _FakeTarget:
    """Enough of an AgentClient for Sender (through TransferApi): CheckBlobs, WriteBlob and RegisterImage
    in memory."""

    name = "t"

    def __init__(self, fail_first_write: type[BaseException] | None = None) -> None:
        self.blobs: dict[str, bytes] = {}  # in the order they were complete
        self.writes = 0
        self.active = 0  # WriteBlob calls under way
        self.peak = 0
        self._fail = fail_first_write

    async def client_stream(self, rpc: Any, requests: Any, **kwargs: Any) -> Any:
        """WriteBlob: AgentClient.client_stream awaits the call (and cancels it when done)."""
        self.writes += 1
        fail, self._fail = self._fail, None
        return await _FakeCall(requests, fail, self)

    async def unary(self, rpc: Any, request: Any, **kwargs: Any) -> Any:
        from agent.api.v1 import transfer_pb2 as pb

        if isinstance(request, pb.CheckBlobsRequest):
            return pb.CheckBlobsResponse(
                blobs=[pb.BlobStatus(digest=b.digest, present=b.digest in self.blobs) for b in request.blobs]
            )
        return pb.RegisterImageResponse()

    async def close(self) -> None:
        return None


class _FakeSource:
    name = "src"

    def __init__(self, blobs: dict[str, bytes]) -> None:
        self._blobs = blobs
        self.bytes_read = 0

    async def plan(self) -> Any:
        raise NotImplementedError

    async def read(self, blob: Any, offset: int) -> Any:
        data = self._blobs[blob.digest][offset:]
        for i in range(0, len(data), 1000):
            self.bytes_read += len(data[i : i + 1000])
            yield data[i : i + 1000]


def test_a_call_grpc_cancelled_on_its_own_is_retried_not_skipped() -> None:
    """grpc.aio turns a connection that broke under a request stream into a CancelledError of the call;
    that must count as the target's failure (and be retried), not vanish as a cancelled task would."""
    from controller.send import Blob, ImagePlan, Sender

    layer, manifest = "sha256:" + "a" * 64, "sha256:" + "f" * 64
    content = {layer: bytes(range(256)) * 20, manifest: b"{}"}
    plan = ImagePlan(manifest, (Blob(layer, len(content[layer])), Blob(manifest, 2)), ("x:1",))
    target = _FakeTarget(fail_first_write=asyncio.CancelledError)
    sender = Sender(_FakeSource(content), [target], retry_delays=(0.0,))  # type: ignore[list-item]
    reports = asyncio.run(sender.run(plan))
    report = reports["t"]
    assert report.error is None and report.retries == 1 and report.blobs_sent == 2
    assert target.blobs == content and target.writes == 3


def test_layers_travel_in_parallel_and_the_manifest_last() -> None:
    from controller.send import PARALLEL_BLOBS, Blob, ImagePlan, Sender

    layers = {f"sha256:{c * 64}": bytes([i]) * 50_000 for i, c in enumerate("abcd")}
    manifest = "sha256:" + "f" * 64
    content = {**layers, manifest: b"{}"}
    blobs = tuple(Blob(d, len(b)) for d, b in content.items())
    target = _FakeTarget()
    sender = Sender(_FakeSource(content), [target])  # type: ignore[list-item]
    reports = asyncio.run(sender.run(ImagePlan(manifest, blobs, ("x:1",))))
    assert reports["t"].error is None and reports["t"].blobs_sent == len(content)
    assert target.blobs == content and list(target.blobs)[-1] == manifest
    assert target.peak == PARALLEL_BLOBS
