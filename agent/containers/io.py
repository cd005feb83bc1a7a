"""Live stdio of a container run or exec session, as one stream of events for the API edge.

Output comes from the CRI log file (lossless: conmon writes it whatever the reader's speed) for plain
runs, or from conmon's attach socket for terminals (interactive, where the socket is the only path for
a timely echo). Input (stdin bytes, window resizes, end of input) goes to the attach socket / ctl fifo.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import agent.log
from agent.runtime import attach, logs
from agent.runtime.attach import AttachSession

log = agent.log.get(__name__)


@dataclass(frozen=True)
class Output:
    stream: str  # stdout | stderr
    data: bytes


@dataclass(frozen=True)
class Exited:
    code: int
    oom: bool = False
    error: str = ""


@dataclass(frozen=True)
class Started:
    id: str


@dataclass(frozen=True)
class Stdin:
    data: bytes


@dataclass(frozen=True)
class Resize:
    rows: int
    cols: int


@dataclass(frozen=True)
class CloseStdin:
    pass


Input = Stdin | Resize | CloseStdin
Event = Output | Exited | Started


async def pump_input(inputs: AsyncIterator[Input], session: AttachSession | None, bundle: Path) -> None:
    """Forward client input until it ends; end of input closes the process's stdin."""
    try:
        async for item in inputs:
            if isinstance(item, Stdin):
                if session is not None and item.data:
                    await session.write(item.data)
            elif isinstance(item, Resize):
                attach.resize(bundle, item.rows, item.cols)
            else:
                break
    finally:
        if session is not None:
            session.close_stdin()


async def output_events(
    *,
    session: AttachSession | None,
    log_path: Path,
    done: asyncio.Event,
    since_ns: int | None,
) -> AsyncIterator[Output]:
    """Output of one run: from the attach socket when given (terminals), else by following the log."""
    if session is not None:
        while (item := await session.read()) is not None:
            yield Output(item[0], item[1])
        return
    async for entry in logs.follow(log_path, done=done, since_ns=since_ns):
        yield Output(entry.stream, entry.data)


async def relay(
    outputs: AsyncIterator[Output],
    inputs: AsyncIterator[Input] | None,
    session: AttachSession | None,
    bundle: Path,
) -> AsyncIterator[Output]:
    """Yield outputs while a child task forwards inputs; the child is cancelled when output ends."""
    pump: asyncio.Task[None] | None = None
    if inputs is not None:
        pump = asyncio.create_task(pump_input(inputs, session, bundle))
    try:
        async for out in outputs:
            yield out
    finally:
        if pump is not None:
            pump.cancel()
            try:
                await pump
            except asyncio.CancelledError:
                pass  # what we asked for
            except Exception as exc:  # the client's input broke off; the output was complete
                log.info("container.input_ended_with_error", id=bundle.name, error=repr(exc))
        if session is not None:
            session.close()
