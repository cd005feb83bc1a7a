"""Verification of an activated revision, on the agent: a pure verdict and the task that waits for it.

Healthy means every container of the revision running, and healthy by its health check where it has one,
continuously for `min_healthy`, within `deadline` of the activation (counted from the stored start time,
so an agent restarted mid-way goes on with the same deadline). A container that restarts (a new run) or
stops being healthy resets the window. A container that exited for good (not restarting) or is gone fails
at once; anything else fails only when it can no longer be healthy for `min_healthy` before the deadline.

`assess` is the pure decision; `watch` re-assesses on every event of the release's containers in the
event log (start, die, health status, …), and at the time the decision says something becomes due, with
a safety re-check at most once a second — no busy polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from agent.releases.spec import LABEL_RELEASE
from agent.releases.store import Policy
from agent.state.events import Event, EventLog

RECHECK = 1.0


@dataclass(frozen=True)
class Observed:
    """What one container of the revision looks like now."""

    container: str  # the release's name for it ("app")
    status: str  # the stored status ("running", "exited", …); "" when the container is gone
    health: str = ""  # "" (no health check), "starting", "healthy", "unhealthy"
    run: str = ""  # identifies the current run (start time, restart count): a new run resets the window
    detail: str = ""  # for reasons: the exit code or the last health check's output


class Kind(StrEnum):
    WAIT = "wait"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True)
class Verdict:
    kind: Kind
    reason: str = ""
    due: float = 0.0  # WAIT: when the verdict may change without any event (wall-clock seconds)


@dataclass(frozen=True)
class Window:
    since: float | None = None  # when every container was last seen fine, continuously since
    runs: tuple[str, ...] = ()


def problem(o: Observed) -> tuple[str, bool] | None:
    """None when the container is fine now; else (reason, final: it cannot come back by itself)."""
    if not o.status:
        return f"{o.container}: container is gone", True
    if o.status in ("exited", "dead"):
        return f"{o.container}: exited{': ' + o.detail if o.detail else ''}", True
    if o.status == "restarting":
        return f"{o.container}: restarting{' after ' + o.detail if o.detail else ''}", False
    if o.status != "running":
        return f"{o.container}: {o.status}", False
    if o.health == "unhealthy":
        return f"{o.container}: health check failing{': ' + o.detail if o.detail else ''}", False
    if o.health == "starting":
        return f"{o.container}: health check not passed yet{': ' + o.detail if o.detail else ''}", False
    return None


def assess(
    observed: Sequence[Observed], window: Window, now: float, started: float, policy: Policy
) -> tuple[Verdict, Window]:
    """The verdict now, and the window to pass to the next call (pure)."""
    deadline = started + policy.deadline_s
    runs = tuple(o.run for o in observed)
    problems = [p for p in (problem(o) for o in observed) if p is not None]
    for reason, final in problems:
        if final:
            return Verdict(Kind.UNHEALTHY, reason), Window(None, runs)
    if problems:
        reason = problems[0][0]
        if now + policy.min_healthy_s > deadline:
            return Verdict(Kind.UNHEALTHY, f"{reason} ({_deadline(policy)})"), Window(None, runs)
        return Verdict(Kind.WAIT, reason, deadline - policy.min_healthy_s), Window(None, runs)
    if window.since is None or window.runs != runs:
        window = Window(now, runs)
    assert window.since is not None
    healthy_until = window.since + policy.min_healthy_s
    if now >= healthy_until:
        return Verdict(Kind.HEALTHY), window
    if healthy_until > deadline:
        lasted = now - window.since
        return Verdict(
            Kind.UNHEALTHY,
            f"healthy for {lasted:.0f}s only, {policy.min_healthy_s:g}s needed ({_deadline(policy)})",
        ), window
    return Verdict(Kind.WAIT, "", healthy_until), window


def _deadline(policy: Policy) -> str:
    return f"not healthy for {policy.min_healthy_s:g}s within the {policy.deadline_s:g}s deadline"


def of_release(release: str) -> Callable[[Event], bool]:
    def accept(e: Event) -> bool:
        return e.type == "container" and e.attributes.get(LABEL_RELEASE) == release

    return accept


class Wakeup:
    """`async with Wakeup(events, accept) as w: … await w.wait(timeout)`: returns when an accepted event was
    appended since the last wait (or the timeout passed). A listener task feeds it, so waiting with a
    timeout never closes the event stream."""

    def __init__(self, events: EventLog, accept: Callable[[Event], bool]) -> None:
        self._events = events
        self._accept = accept
        self._changed = asyncio.Event()
        self._listener: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Wakeup:
        self._listener = asyncio.ensure_future(self._pump())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _pump(self) -> None:
        async for _ in self._events.stream(None, accept=self._accept):
            self._changed.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await self._changed.wait()
        self._changed.clear()


async def watch(
    events: EventLog, release: str, observe: Callable[[], list[Observed]], started: float, policy: Policy
) -> Verdict:
    """Assess until healthy or unhealthy; woken by the release's container events or when something is due."""
    async with Wakeup(events, of_release(release)) as wakeup:
        window = Window()
        while True:
            verdict, window = assess(observe(), window, time.time(), started, policy)
            if verdict.kind is not Kind.WAIT:
                return verdict
            await wakeup.wait(min(RECHECK, verdict.due - time.time()))
