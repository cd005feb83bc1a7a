"""Byte-stream adapters: every hand-made file object of the agent lives here.

Blocking readers that wrap another (`ReadStream` is the base: a subclass only defines `read`):
`Prefixed` replays sniffed head bytes before the rest of a stream; `Tee` hands every byte read through it
to a callback (hash, copy, count, progress).

Bridges between chunk streams on the event loop (gRPC) and blocking file objects used in threads:
`ChunkReader`: the loop `feed`s chunks (client-streaming upload), a worker thread `read`s them as a file.
`ChunkWriter`: a worker thread `write`s a file (e.g. a tar stream), the loop iterates over `chunks()`.
Both are bounded (backpressure both ways) and can be failed from either side so that neither a thread nor
a coroutine waits forever when the other side is gone (client cancelled, archive rejected).
`read_in_thread` and `written_in_thread` run the blocking side in a worker thread and drive the loop side.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from agent.errors import Conflict

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

T = TypeVar("T")
CHUNK_SIZE = 1 << 20  # well under gRPC's default 4 MiB message limit
_EOF = b""


class Source(Protocol):
    """Anything with a blocking `read(size)`: files, sockets' makefile, decompressors, the adapters here."""

    def read(self, size: int = -1, /) -> bytes: ...


class ReadStream(io.RawIOBase):
    """A readable raw stream defined by `read(size)`; `readinto` (what io.BufferedReader and tarfile's
    stream mode use) is written once here in terms of it."""

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        raise NotImplementedError

    def readinto(self, buffer: WriteableBuffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)


class Prefixed(ReadStream):
    """`head` (bytes already read to sniff the format), then the rest of `src`."""

    def __init__(self, head: bytes, src: Source) -> None:
        self._head = head
        self._src = src

    def read(self, size: int | None = -1) -> bytes:
        size = CHUNK_SIZE if size is None or size < 0 else size
        if self._head:
            data, self._head = self._head[:size], self._head[size:]
            return data
        return self._src.read(size)


class Tee(ReadStream):
    """Reads from `src`, handing every chunk read to `sink` on the way (hashing, copying, progress)."""

    def __init__(self, src: Source, sink: Callable[[bytes], object]) -> None:
        self._src = src
        self._sink = sink
        self.total = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self._src.read(CHUNK_SIZE if size is None or size < 0 else size)
        if data:
            self.total += len(data)
            self._sink(data)
        return data

    def drain(self) -> None:
        """Read `src` to its end (so the sink saw every byte, trailing padding included)."""
        while self.read(CHUNK_SIZE):
            pass


class StreamAborted(Conflict):
    """The other side of a stream went away (cancelled RPC or failed worker)."""


class ChunkReader(io.RawIOBase):
    """A readable file fed from the event loop."""

    def __init__(self, max_chunks: int = 8) -> None:
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(max_chunks)
        self._buf = memoryview(b"")
        self._eof = False
        self.consumer_done = False

    # -- loop side --
    async def feed(self, chunk: bytes) -> None:
        """Queue a chunk (waits while the reader is behind); empty chunks are ignored."""
        if not chunk or self.consumer_done:
            return
        try:
            self._q.put_nowait(bytes(chunk))
        except queue.Full:
            while not self.consumer_done:
                try:
                    await asyncio.to_thread(self._q.put, bytes(chunk), True, 0.2)
                    return
                except queue.Full:
                    continue

    def _put_control(self, item: bytes | BaseException) -> None:
        while True:
            try:
                self._q.put_nowait(item)
                return
            except queue.Full:
                try:
                    self._q.get_nowait()  # consumer is behind or gone: make room, data no longer matters
                except queue.Empty:
                    pass

    async def finish(self) -> None:
        """Signal end of input."""
        if self.consumer_done:
            return
        try:
            self._q.put_nowait(_EOF)
        except queue.Full:
            while not self.consumer_done:
                try:
                    await asyncio.to_thread(self._q.put, _EOF, True, 0.2)
                    return
                except queue.Full:
                    continue

    def fail(self, exc: BaseException) -> None:
        """Make the reading thread raise `exc` at its next read."""
        self._put_control(exc)

    # -- thread side --
    def readable(self) -> bool:
        return True

    def _fill(self) -> bool:
        """Wait for the next chunk if the current one is used up; False at the end of the stream."""
        while not self._buf:
            if self._eof:
                return False
            item = self._q.get()
            if isinstance(item, BaseException):
                self.consumer_done = True
                raise item
            if item == _EOF:
                self._eof = True
                return False
            self._buf = memoryview(item)
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        b = memoryview(buffer).cast("B")
        if not self._fill():
            return 0
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        if not size or not self._fill():
            return b""
        data = bytes(self._buf[:size])
        self._buf = self._buf[len(data) :]
        return data

    def close(self) -> None:
        self.consumer_done = True
        super().close()


class ChunkWriter(io.RawIOBase):
    """A writable file drained by the event loop in chunks of about CHUNK_SIZE bytes."""

    def __init__(self, loop: asyncio.AbstractEventLoop, max_chunks: int = 4) -> None:
        self._loop = loop
        self._q: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue(max_chunks)
        self._pending = bytearray()
        self._aborted = False

    # -- thread side --
    def writable(self) -> bool:
        return True

    def write(self, buffer: ReadableBuffer) -> int:
        if self._aborted:
            raise StreamAborted("the receiving side of the stream went away")
        b = memoryview(buffer).cast("B")
        self._pending += b
        while len(self._pending) >= CHUNK_SIZE:
            chunk = bytes(self._pending[:CHUNK_SIZE])
            del self._pending[:CHUNK_SIZE]
            self._send(chunk)
        return len(b)

    def _send(self, item: bytes | BaseException | None) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._q.put(item), self._loop)
        while True:
            try:
                fut.result(timeout=0.5)
                return
            except TimeoutError:
                if self._aborted:
                    fut.cancel()
                    raise StreamAborted("the receiving side of the stream went away") from None

    def finish(self, error: BaseException | None = None) -> None:
        """Flush and end the stream; with `error`, the loop side raises it instead."""
        if self._aborted:
            return
        if error is None and self._pending:
            self._send(bytes(self._pending))
            self._pending.clear()
        self._send(error)

    # -- loop side --
    async def chunks(self) -> AsyncIterator[bytes]:
        """Yield chunks until the writer finishes; re-raises the writer's error."""
        try:
            while True:
                item = await self._q.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.abort()

    def abort(self) -> None:
        """The loop side stops listening: the writing thread raises StreamAborted at its next write."""
        self._aborted = True
        while not self._q.empty():
            self._q.get_nowait()


async def read_in_thread(chunks: AsyncIterable[bytes], read: Callable[[ChunkReader], T]) -> T:
    """Feed an uploaded stream to blocking `read(reader)` running in a thread; returns its result.

    If `read` stops early, the rest of the upload is not consumed; if the upload fails or is cancelled,
    `read` is made to fail at its next read and waited for before the error propagates.
    """
    reader = ChunkReader()

    def run() -> T:
        try:
            return read(reader)
        finally:
            reader.close()

    task = asyncio.create_task(asyncio.to_thread(run))
    try:
        async for chunk in chunks:
            if task.done():
                break
            await reader.feed(chunk)
        await reader.finish()
    except BaseException:
        reader.fail(StreamAborted("the upload was interrupted"))
        with contextlib.suppress(BaseException):
            await task
        raise
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        # cancelled while `read` finishes the last bytes (a connection cut after the upload's end): it
        # may still publish what it wrote, so the caller sees the end of it, not a thread still running
        with contextlib.suppress(BaseException):
            await task
        raise


async def written_in_thread(write: Callable[[ChunkWriter], None]) -> AsyncGenerator[bytes, None]:
    """Yield the chunks blocking `write(writer)` writes in a thread; its error is raised from the iterator.

    Closing the iterator early makes `write` fail at its next write and waits for the thread to end.
    """
    writer = ChunkWriter(asyncio.get_running_loop())

    def work() -> None:
        try:
            write(writer)
        except StreamAborted:
            return
        except BaseException as exc:  # handed to the loop side, which raises it
            with contextlib.suppress(StreamAborted):
                writer.finish(exc)
            return
        with contextlib.suppress(StreamAborted):
            writer.finish()

    task = asyncio.create_task(asyncio.to_thread(work))
    try:
        async for chunk in writer.chunks():
            yield chunk
    finally:
        writer.abort()
        with contextlib.suppress(BaseException):
            await task
