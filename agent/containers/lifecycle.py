"""The in-memory lifecycle of one run (one monitor process), as data: phases and the moves between them.

The stored status (`agent.state.containers`) says what users see; a `Run` says how far the agent got
with ending the run, so that waiters, log followers, attach, stop/rm and `--rm` synchronise on it:

    RUNNING ─► EXITED ─► RECORDED ─► FINISHED

* EXITED: the monitor ended (output is complete; followers and health checks stop);
* RECORDED: the exit is in the store (stop/rm/wait/attach may return its code);
* FINISHED: the exit is fully handled (`--rm` done, or a restart scheduled): the runtime's state may go.

Every move goes through `Run.advance`, checked against `TRANSITIONS`; reaching a phase also reaches the
ones before it (a run found dead at start-up goes straight to EXITED).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum

from agent.containers.io import Exited


class Phase(IntEnum):
    RUNNING = 0
    EXITED = 1
    RECORDED = 2
    FINISHED = 3


TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.RUNNING: frozenset({Phase.EXITED}),
    Phase.EXITED: frozenset({Phase.RECORDED}),
    Phase.RECORDED: frozenset({Phase.FINISHED}),
    Phase.FINISHED: frozenset(),
}


class InvalidMove(RuntimeError):
    """A move the table does not allow: a bug in the agent, not a user error."""


class Run:
    """One run of a container: its monitor's pid, when it started, its phase, its attached readers."""

    def __init__(self, monitor_pid: int, started_ns: int, delay: float = 0.0) -> None:
        self.monitor_pid = monitor_pid
        self.started_ns = started_ns
        self.delay = delay  # the restart back-off that led to this run
        self.exit: Exited | None = None  # set when RECORDED
        self._phase = Phase.RUNNING
        self._reached = {p: asyncio.Event() for p in Phase}
        self._reached[Phase.RUNNING].set()
        self._readers = 0
        self._no_readers = asyncio.Event()
        self._no_readers.set()

    @property
    def phase(self) -> Phase:
        return self._phase

    def advance(self, to: Phase) -> None:
        """Move to `to` (checked against TRANSITIONS); every phase up to `to` counts as reached."""
        if to not in TRANSITIONS[self._phase]:
            raise InvalidMove(f"run cannot go from {self._phase.name} to {to.name}")
        self._phase = to
        for p in Phase:
            if p <= to:
                self._reached[p].set()

    def reached(self, phase: Phase) -> bool:
        return self._reached[phase].is_set()

    def event(self, phase: Phase) -> asyncio.Event:
        """The event set once `phase` is reached (for code that takes a `done` event, e.g. log follow)."""
        return self._reached[phase]

    async def wait(self, phase: Phase, timeout: float | None = None) -> bool:
        """Wait until `phase` is reached; False if `timeout` passed first."""
        try:
            async with asyncio.timeout(timeout):
                await self._reached[phase].wait()
        except TimeoutError:
            return False
        return True

    @contextmanager
    def reader(self) -> Iterator[None]:
        """Count an attached client for as long as it streams (`--rm` waits for them to finish)."""
        self._readers += 1
        self._no_readers.clear()
        try:
            yield
        finally:
            self._readers -= 1
            if self._readers == 0:
                self._no_readers.set()

    async def readers_gone(self, timeout: float) -> None:
        """Wait (at most `timeout`) until no attached client streams this run's output."""
        try:
            async with asyncio.timeout(timeout):
                await self._no_readers.wait()
        except TimeoutError:
            pass  # a stuck client does not keep the container forever
