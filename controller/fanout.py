"""Fan-out: run one operation on many agents at once, each host with its own deadline and its own result.

`run(targets, op, ...)` never lets one host sink the rest: every failure (unreachable, TLS, an agent
error, a timeout, even a bug in the op) becomes that host's `Outcome`, and a host that hangs costs the
others nothing beyond its own `timeout` (the deadline starts when the host gets one of the `parallel`
slots). Channels are long-lived: a `Pool` keeps one mTLS channel per host for the life of the command,
so several calls to a host share one handshake. Only idempotent operations are retried, and only when
the agent was unreachable (gRPC UNAVAILABLE), within the same deadline.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from controller.client import AgentClient
from controller.errors import ConnectError, ControllerError, UsageError
from controller.target import Target

T = TypeVar("T")

RETRY_DELAYS = (0.1, 0.3)


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What happened on one host: a value or an error, and how long it took."""

    host: str
    value: T | None = None
    error: ControllerError | None = None
    seconds: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


class Pool:
    """One AgentClient (one HTTP/2 channel) per host, reused by every call of this process."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self._clients: dict[str, AgentClient] = {}

    def client(self, target: Target) -> AgentClient:
        key = f"{target.name}\0{target.grpc_target}"
        client = self._clients.get(key)
        if client is None:
            client = AgentClient(target, self.config_dir)
            self._clients[key] = client
        return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        async with asyncio.TaskGroup() as tg:
            for client in clients:
                tg.create_task(client.close())


async def run(
    targets: Sequence[Target],
    op: Callable[[AgentClient], Awaitable[T]],
    *,
    pool: Pool,
    parallel: int = 256,
    deadline_s: float | None = 30.0,
    idempotent: bool = False,
) -> list[Outcome[T]]:
    """Run `op` on every target (at most `parallel` at once); outcomes come back in target order.

    `deadline_s=None` is for streams that run until stopped (logs -f, events): no per-host deadline.
    """
    if parallel < 1:
        raise UsageError("--parallel must be at least 1")
    slots = asyncio.Semaphore(parallel)
    outcomes: list[Outcome[T] | None] = [None] * len(targets)

    async def one(index: int, target: Target) -> None:
        async with slots:
            outcomes[index] = await _attempt(target, op, pool, deadline_s, idempotent)

    async with asyncio.TaskGroup() as tg:
        for index, target in enumerate(targets):
            tg.create_task(one(index, target))
    return [o for o in outcomes if o is not None]


async def each(
    jobs: Sequence[tuple[str, Callable[[], Awaitable[T]]]],
    *,
    parallel: int = 256,
    deadline_s: float = 600.0,
) -> list[Outcome[T]]:
    """Run named jobs that are not agent calls (bootstrap over SSH) with the same per-host isolation."""
    slots = asyncio.Semaphore(max(1, parallel))
    outcomes: list[Outcome[T] | None] = [None] * len(jobs)

    async def one(index: int, name: str, job: Callable[[], Awaitable[T]]) -> None:
        async with slots:
            start = time.monotonic()
            try:
                async with asyncio.timeout(deadline_s):
                    value = await job()
                outcomes[index] = Outcome(name, value, None, time.monotonic() - start)
            except Exception as exc:
                error = _as_error(exc, name, deadline_s)
                outcomes[index] = Outcome(name, None, error, time.monotonic() - start)

    async with asyncio.TaskGroup() as tg:
        for index, (name, job) in enumerate(jobs):
            tg.create_task(one(index, name, job))
    return [o for o in outcomes if o is not None]


def _as_error(exc: Exception, host: str, deadline_s: float | None) -> ControllerError:
    """One host's failure as a ControllerError naming the host (a bug stays that host's failure)."""
    if isinstance(exc, TimeoutError) and deadline_s is not None:
        return ControllerError(f"timed out after {deadline_s:g}s", host)
    if isinstance(exc, ControllerError):
        exc.host = exc.host or host
        return exc
    return ControllerError(f"internal error: {type(exc).__name__}: {exc}", host)


async def _attempt(
    target: Target,
    op: Callable[[AgentClient], Awaitable[T]],
    pool: Pool,
    deadline_s: float | None,
    idempotent: bool,
) -> Outcome[T]:
    start = time.monotonic()
    attempts = 0
    try:
        async with asyncio.timeout(deadline_s):
            while True:
                attempts += 1
                try:
                    value = await op(pool.client(target))
                    return Outcome(target.name, value, None, time.monotonic() - start, attempts)
                except ConnectError:
                    if not idempotent or attempts > len(RETRY_DELAYS):
                        raise
                await asyncio.sleep(RETRY_DELAYS[attempts - 1])
    except Exception as exc:  # a bug in one host's handling must not take the other hosts down
        error = _as_error(exc, target.name, deadline_s)
    return Outcome(target.name, None, error, time.monotonic() - start, attempts)


@dataclass(frozen=True)
class MaxFail:
    """How many failed hosts a command tolerates: an absolute count or a percentage of the hosts."""

    count: int = 0
    percent: float | None = None

    def allowed(self, total: int) -> int:
        if self.percent is not None:
            return math.floor(total * self.percent / 100 + 1e-9)
        return self.count


def parse_max_fail(text: str | None) -> MaxFail:
    """`N` or `P%`; None means no failure is tolerated."""
    if text is None or text == "":
        return MaxFail()
    value = text.strip()
    try:
        if value.endswith("%"):
            percent = float(value[:-1])
            if not 0 <= percent <= 100:
                raise ValueError(value)
            return MaxFail(percent=percent)
        count = int(value)
        if count < 0:
            raise ValueError(value)
        return MaxFail(count=count)
    except ValueError:
        raise UsageError(f"invalid --max-fail {text!r}: expected a count (3) or a percentage (10%)") from None


@dataclass(frozen=True)
class Summary:
    ok: int
    failed: int
    failures: tuple[ControllerError, ...]
    success: bool

    @property
    def line(self) -> str:
        return f"{self.ok} ok, {self.failed} failed"


def summarize(outcomes: Sequence[Outcome[Any]], max_fail: MaxFail | None = None) -> Summary:
    """Count outcomes; success means no more failures than `max_fail` allows."""
    failures = tuple(o.error for o in outcomes if o.error is not None)
    allowed = (max_fail or MaxFail()).allowed(len(outcomes))
    return Summary(len(outcomes) - len(failures), len(failures), failures, len(failures) <= allowed)
