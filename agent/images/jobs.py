"""Blocking image jobs (pull, push) whose work runs in worker threads while progress streams to the caller.

`ThreadedJob` owns what such a job's threads and its coroutine share: the `cancel` flag the threads poll,
the queue events travel through (`emit` from any thread), a byte counter, and the launchers that stop the
threads' work when the coroutine is cancelled. `stream(job)` runs a job and yields its events; closing the
iterator early (the caller went away) sets `cancel` and waits for the job, so no thread outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any, Generic, TypeVar

from agent.registry.client import Cancelled

T = TypeVar("T")
E = TypeVar("E")


class ThreadedJob(Generic[E]):
    """Base of a job yielding events of type `E`; subclasses implement `run` and put their last event."""

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self.queue: asyncio.Queue[E | None] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self._transferred = 0
        self._lock = threading.Lock()

    async def run(self) -> None:
        raise NotImplementedError

    def emit(self, event: E) -> None:
        """From any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    @property
    def transferred(self) -> int:
        """Bytes counted by `_count` so far (sent or received, as the job defines)."""
        return self._transferred

    def _count(self, n: int) -> None:
        """From any thread."""
        with self._lock:
            self._transferred += n

    async def _thread(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking work in a thread; if we are cancelled meanwhile, tell it to stop and wait for it."""
        future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            self.cancel.set()
            with contextlib.suppress(BaseException):
                await future
            raise

    async def _parallel(self, calls: Iterable[Callable[[], None]], concurrency: int, item: str) -> None:
        """Run blocking `calls` in threads, at most `concurrency` at a time; the first failure sets `cancel`
        so that the others stop, and is raised (rather than the `Cancelled` it caused elsewhere)."""
        slots = asyncio.Semaphore(max(1, concurrency))

        async def one(call: Callable[[], None]) -> None:
            async with slots:
                if self.cancel.is_set():
                    raise Cancelled(f"another {item} failed")
                await self._thread(self._stopping_others, call)

        results = await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise next((e for e in errors if not isinstance(e, Cancelled)), errors[0])

    def _stopping_others(self, call: Callable[[], None]) -> None:
        """In a worker thread: `call`, setting `cancel` if it fails so that the other threads stop too."""
        try:
            call()
        except BaseException:
            self.cancel.set()
            raise


async def stream(job: ThreadedJob[E]) -> AsyncGenerator[E, None]:
    """Run `job` and yield its events until it ends; its error, if any, is raised after the last event."""
    task = asyncio.create_task(job.run())
    task.add_done_callback(lambda _: job.queue.put_nowait(None))
    try:
        while (event := await job.queue.get()) is not None:
            yield event
        await task
    finally:
        if not task.done():
            job.cancel.set()
            with contextlib.suppress(BaseException):
                await task
