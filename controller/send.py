"""`dockyard image send`: copy an image from one source to many agents, reading each blob only once.

The plan (`ImagePlan`) lists the image's blobs, layers first and the manifest last. Every target is
asked which blobs it already holds and how much of a partial one it kept (`CheckBlobs`). Then, for each
blob, the source is read once — from the smallest offset any target needs — and every chunk goes to
every target that needs it at the same time (`WriteBlob`, one stream per target); the slowest target
sets the pace (a bounded window of chunks), and a target that fails drops out of that pass without
slowing or stopping the others. Up to `PARALLEL_BLOBS` blobs are on their way at once, as a pull fetches
layers in parallel: a target unpacks a layer as it arrives, and one layer at a time would leave the
transfer waiting on one unpacking thread. The manifest goes last, once every other blob is through.
A target that failed a blob (connection cut, DATA_LOSS because a byte changed on the way, another write
still finishing) is retried on its own: it is asked again what it kept and gets the rest from there,
re-read from the source for it alone. Only errors that another attempt cannot fix (bad input, no space)
end a target early. Finally each target registers the image.

The source is a `BlobSource`: an agent (`AgentSource`) or a local archive (`controller.archive_source`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from controller.api.transfer import Blob as Blob  # the plan's types, part of this module's interface
from controller.api.transfer import ImagePlan as ImagePlan
from controller.api.transfer import TransferApi
from controller.api.trust import Signature, TrustApi
from controller.client import AgentClient
from controller.errors import AgentCallError, ControllerError

WINDOW = 8  # chunks (of up to 1 MiB) the fastest target may run ahead of the slowest
PARALLEL_BLOBS = 3  # blobs sent at the same time (each its own read from the source and window)
ATTEMPTS = 4  # per blob and target, the first one included
RETRY_DELAYS = (0.2, 0.5, 1.0)
# Codes another attempt cannot fix: the target fails at once.
FATAL_CODES = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "RESOURCE_EXHAUSTED",
        "PERMISSION_DENIED",
        "UNIMPLEMENTED",
        "UNAUTHENTICATED",
    }
)


class BlobSource(Protocol):
    """Where an image's blobs come from."""

    name: str
    bytes_read: int  # everything read from the source so far

    async def plan(self) -> ImagePlan: ...

    def read(self, blob: Blob, offset: int) -> AsyncIterator[bytes]: ...


class AgentSource:
    """An agent's image store as a source (DescribeImage, ReadBlob)."""

    def __init__(self, client: AgentClient, reference: str) -> None:
        self.client = client
        self.name = client.name
        self.reference = reference
        self.bytes_read = 0

    async def plan(self) -> ImagePlan:
        plan = await TransferApi(self.client).describe_image(self.reference)
        return dataclasses.replace(plan, signatures=await _signatures(self.client, plan.manifest_digest))

    async def read(self, blob: Blob, offset: int) -> AsyncIterator[bytes]:
        async for data in TransferApi(self.client).read_blob(blob.digest, offset):
            self.bytes_read += len(data)
            yield data


@dataclass
class TargetReport:
    """What one target got: bytes sent to it, blobs sent and skipped, retries, the image it registered."""

    host: str
    sent_bytes: int = 0
    blobs_sent: int = 0
    blobs_present: int = 0
    resumed_bytes: int = 0  # bytes a target already kept from an earlier, interrupted send
    retries: int = 0
    image_id: str = ""
    names: list[str] = field(default_factory=list)
    signatures: int = 0  # of the image's signatures, new on the target
    error: ControllerError | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "image_id": self.image_id,
            "names": self.names,
            "sent_bytes": self.sent_bytes,
            "blobs_sent": self.blobs_sent,
            "blobs_present": self.blobs_present,
            "resumed_bytes": self.resumed_bytes,
            "retries": self.retries,
            "signatures": self.signatures,
        }


# progress(host, blob, state, bytes done, bytes total); states: exists, sending, sent, retrying, failed
Progress = Callable[[str, Blob, str, int, int], None]


def no_progress(host: str, blob: Blob, state: str, done: int, total: int) -> None:
    return None


class _SourceFailed(ControllerError):
    """The source stopped in the middle of a blob; the targets are not to blame."""


class _Broadcast:
    """One blob's chunks from the source to several consumers, each at its own pace within a window."""

    def __init__(self, hosts: Sequence[str]) -> None:
        self._cond = asyncio.Condition()
        self._chunks: dict[int, tuple[int, bytes]] = {}  # sequence number → (offset in blob, bytes)
        self._next = 0
        self._pos = dict.fromkeys(hosts, 0)
        self.alive = set(hosts)
        self._finished = False
        self._source_error: ControllerError | None = None

    async def put(self, offset: int, data: bytes) -> bool:
        """Queue a chunk once every live consumer is within the window; False when nobody is left."""
        async with self._cond:
            await self._cond.wait_for(
                lambda: not self.alive or all(self._next - self._pos[h] < WINDOW for h in self.alive)
            )
            if not self.alive:
                return False
            self._chunks[self._next] = (offset, data)
            self._next += 1
            self._cond.notify_all()
            return True

    async def finish(self, error: ControllerError | None = None) -> None:
        async with self._cond:
            self._finished = True
            self._source_error = error
            self._cond.notify_all()

    async def get(self, host: str) -> tuple[int, bytes] | None:
        """The host's next chunk; None at the end. Raises the source's error if it failed."""
        async with self._cond:
            await self._cond.wait_for(lambda: self._pos[host] < self._next or self._finished)
            if self._pos[host] < self._next:
                item = self._chunks[self._pos[host]]
                self._pos[host] += 1
                low = min((self._pos[h] for h in self.alive), default=self._next)
                for seq in [s for s in self._chunks if s < low]:
                    del self._chunks[seq]
                self._cond.notify_all()
                return item
            if self._source_error is not None:
                raise self._source_error
            return None

    async def leave(self, host: str) -> None:
        async with self._cond:
            self.alive.discard(host)
            self._cond.notify_all()


def _retryable(error: ControllerError) -> bool:
    if isinstance(error, _SourceFailed):
        return True
    return not (isinstance(error, AgentCallError) and error.code in FATAL_CODES)


class Sender:
    """Sends one image from `source` to `targets`; see the module docstring."""

    def __init__(
        self,
        source: BlobSource,
        targets: Sequence[AgentClient],
        *,
        progress: Progress = no_progress,
        attempts: int = ATTEMPTS,
        retry_delays: Sequence[float] = RETRY_DELAYS,
    ) -> None:
        self.source = source
        self.targets = {t.name: t for t in targets}
        self.progress = progress
        self.attempts = max(1, attempts)
        self.retry_delays = tuple(retry_delays) or (0.0,)
        self.reports = {name: TargetReport(name) for name in self.targets}

    def _api(self, host: str) -> TransferApi:
        return TransferApi(self.targets[host])

    def _alive(self) -> list[str]:
        return [h for h, r in self.reports.items() if r.error is None]

    async def run(self, plan: ImagePlan | None = None) -> dict[str, TargetReport]:
        """Send and register on every target; failures are recorded per target, never raised."""
        plan = plan or await self.source.plan()
        blobs = plan.unique_blobs
        states = await self._check_all(blobs)
        slots = asyncio.Semaphore(PARALLEL_BLOBS)

        async def one(blob: Blob) -> None:
            async with slots:
                offsets: dict[str, int] = {}
                for host in self._alive():
                    present, offset = states[host][blob.digest]
                    if present:
                        self.reports[host].blobs_present += 1
                        self.progress(host, blob, "exists", blob.size, blob.size)
                    else:
                        offsets[host] = offset
                if offsets:
                    await self._send_blob(blob, offsets)

        manifest = [b for b in blobs if b.digest == plan.manifest_digest]
        async with asyncio.TaskGroup() as tg:
            for blob in blobs:
                if blob not in manifest:
                    tg.create_task(one(blob))
        for blob in manifest:
            await one(blob)
        await self._register_all(plan)
        if plan.signatures:
            await self._signatures_all(plan)
        return self.reports

    # ---- checks ------------------------------------------------------------------------------------

    async def _check_all(self, blobs: Sequence[Blob]) -> dict[str, dict[str, tuple[bool, int]]]:
        out: dict[str, dict[str, tuple[bool, int]]] = {}

        async def one(host: str) -> None:
            try:
                out[host] = await self._check(host, blobs)
            except ControllerError as exc:
                self._fail(host, exc)

        async with asyncio.TaskGroup() as tg:
            for host in self.targets:
                tg.create_task(one(host))
        return out

    async def _check(self, host: str, blobs: Sequence[Blob]) -> dict[str, tuple[bool, int]]:
        states = await self._api(host).check_blobs(blobs)
        return {digest: (s.present, s.offset) for digest, s in states.items()}

    def _fail(self, host: str, error: ControllerError) -> None:
        """Record the first error of a target (several blobs are in flight at once)."""
        if self.reports[host].error is not None:
            return
        error.host = error.host or host
        self.reports[host].error = error

    # ---- one blob to many targets ----------------------------------------------------------------------

    async def _send_blob(self, blob: Blob, offsets: dict[str, int]) -> None:
        failed = await self._fan_out(blob, offsets)

        async def retry(host: str, error: ControllerError) -> None:
            force_zero = isinstance(error, AgentCallError) and error.code == "FAILED_PRECONDITION"
            for attempt in range(1, self.attempts):
                if not _retryable(error) or self.reports[host].error is not None:
                    break  # (or it already failed with another blob sent at the same time)
                self.reports[host].retries += 1
                self.progress(host, blob, "retrying", 0, blob.size)
                await asyncio.sleep(self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)])
                try:
                    present, offset = (await self._check(host, [blob]))[blob.digest]
                except ControllerError as exc:
                    error = exc
                    continue
                if present:
                    self.reports[host].blobs_sent += 1
                    self.progress(host, blob, "sent", blob.size, blob.size)
                    return
                again = await self._fan_out(blob, {host: 0 if force_zero else offset})
                if host not in again:
                    return
                error = again[host]
                force_zero = isinstance(error, AgentCallError) and error.code == "FAILED_PRECONDITION"
            self.progress(host, blob, "failed", 0, blob.size)
            self._fail(host, error)

        async with asyncio.TaskGroup() as tg:
            for host, error in failed.items():
                tg.create_task(retry(host, error))

    async def _fan_out(self, blob: Blob, offsets: dict[str, int]) -> dict[str, ControllerError]:
        """One read of the blob from min(offsets) on, written to every host at once; the failures."""
        start = min(offsets.values())
        channel = _Broadcast(list(offsets))
        failures: dict[str, ControllerError] = {}

        async def read() -> None:
            position = start
            error: ControllerError | None = None
            try:
                async for data in self.source.read(blob, start):
                    if not await channel.put(position, data):
                        return
                    position += len(data)
            except ControllerError as exc:
                error = _SourceFailed(f"reading from the source {self.source.name} failed: {exc.message}")
            except OSError as exc:  # a local archive that vanished or cannot be read
                error = _SourceFailed(f"reading from the source {self.source.name} failed: {exc}")
            finally:
                await channel.finish(error)

        async def write(host: str) -> None:
            try:
                received = await self._write(host, blob, offsets[host], channel)
                report = self.reports[host]
                report.sent_bytes += received
                report.resumed_bytes += offsets[host]
                report.blobs_sent += 1
                self.progress(host, blob, "sent", blob.size, blob.size)
            except ControllerError as exc:
                failures[host] = exc
            finally:
                await channel.leave(host)

        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(read())
            for host in offsets:
                tg.create_task(write(host))
        del reader
        return failures

    async def _write(self, host: str, blob: Blob, offset: int, channel: _Broadcast) -> int:
        """Stream the blob from `offset` into one target; returns the bytes it wrote."""
        sent = offset
        self.progress(host, blob, "sending", sent, blob.size)
        source_error: list[ControllerError] = []

        async def data() -> AsyncIterator[bytes]:
            nonlocal sent
            while True:
                try:
                    item = await channel.get(host)
                except ControllerError as exc:  # the source failed: end the stream, the target keeps its part
                    source_error.append(exc)
                    return
                if item is None:
                    return
                position, data = item
                if position + len(data) <= offset:
                    continue
                if position < offset:
                    data = data[offset - position :]
                yield data
                sent += len(data)
                self.progress(host, blob, "sending", sent, blob.size)

        try:
            received = await self._api(host).write_blob(blob, offset, data())
        except ControllerError:
            if source_error:
                raise source_error[0] from None
            raise
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # we are being cancelled
            # grpc.aio cancels the call itself when the connection dies while the request stream is still
            # being written; as a CancelledError it would vanish in the TaskGroup and the blob be skipped.
            broke = f"the connection to {host} broke while it was receiving blob {blob.short}"
            raise AgentCallError(broke, "UNAVAILABLE", host) from None
        if source_error:
            raise source_error[0]
        return received

    # ---- register --------------------------------------------------------------------------------------

    async def _signatures_all(self, plan: ImagePlan) -> None:
        """The image's cosign signatures after it: a trust policy on a target then accepts what it would
        have accepted on the source (each target checks them again at every run)."""

        async def one(host: str) -> None:
            try:
                added = await TrustApi(self.targets[host]).import_signatures(
                    plan.manifest_digest, plan.signatures
                )
            except AgentCallError as exc:
                if exc.code != "UNIMPLEMENTED":  # an agent older than image trust has no policy to satisfy
                    self._fail(host, exc)
                return
            except ControllerError as exc:
                self._fail(host, exc)
                return
            self.reports[host].signatures = added

        async with asyncio.TaskGroup() as tg:
            for host in self._alive():
                tg.create_task(one(host))

    async def _register_all(self, plan: ImagePlan) -> None:
        async def one(host: str) -> None:
            try:
                image = await self._api(host).register_image(plan.manifest_digest, plan.names)
            except ControllerError as exc:
                self._fail(host, exc)
                return
            self.reports[host].image_id = image.id
            self.reports[host].names = list(image.names)

        async with asyncio.TaskGroup() as tg:
            for host in self._alive():
                tg.create_task(one(host))


async def _signatures(client: AgentClient, digest: str) -> tuple[Signature, ...]:
    """The source agent's signatures of the image (none from an agent older than image trust)."""
    try:
        return (await TrustApi(client).export_signatures(digest))[1]
    except AgentCallError as exc:
        if exc.code == "UNIMPLEMENTED":
            return ()
        raise


async def close_quietly(clients: Sequence[AgentClient]) -> None:
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()
