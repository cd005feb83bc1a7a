"""The local end of an attached session (`run`, `start -a`, `attach`, `exec`): stdin and window sizes in,
output out, the exit code back.

The terminal mechanics (raw mode, reading stdin, SIGWINCH) are controller/terminal.py; the wire is a
`controller.api.containers.Session`. Output goes to this process's stdout/stderr byte for byte, or, in a
fan-out to several hosts, as whole lines prefixed by the host so lines of different hosts never
interleave mid-line.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable

from controller import terminal
from controller.api.containers import Exited, Output, Session, Started
from controller.app import HostOutput
from controller.errors import UsageError


def window(tty: bool) -> terminal.Size:
    """The size a session starts with: the terminal's with a TTY, none without."""
    return terminal.size() if tty else terminal.Size(0, 0)


def require_terminal(tty: bool, interactive: bool, hint: str = "drop -t, or run from a terminal") -> None:
    """`-it` needs a terminal on stdin: refuse it before anything is created."""
    if tty and interactive and not terminal.is_tty(sys.stdin.fileno()):
        raise UsageError(f"the input device is not a TTY ({hint})")


class _LineSink:
    """Output of a fan-out session as whole lines per stream, the partial rest kept until the end."""

    def __init__(self, out: HostOutput) -> None:
        self.out = out
        self.pending = {False: b"", True: b""}  # by stderr?

    def write(self, data: bytes, stderr: bool) -> None:
        *lines, self.pending[stderr] = (self.pending[stderr] + data).split(b"\n")
        for line in lines:
            self.out.line(line.decode(errors="replace"), err=stderr)

    def flush(self) -> None:
        for stderr, rest in self.pending.items():
            if rest:
                self.out.line(rest.decode(errors="replace"), err=stderr)


async def drive(
    session: Session,
    *,
    interactive: bool,
    tty: bool,
    on_id: Callable[[str], None] | None = None,
    sink: HostOutput | None = None,
) -> int | None:
    """Run one attached session: send stdin (`interactive`) and resizes (`tty` on a terminal), write the
    output, return the exit code (None if the stream ended without one, e.g. detached)."""

    async def feed() -> None:
        try:
            async for chunk in terminal.read_stdin():
                session.send_stdin(chunk)
        finally:  # end of input also when stdin cannot be read: the process must not wait forever
            session.close_stdin()

    def resized() -> None:
        session.resize(terminal.size())

    lines = _LineSink(sink) if sink is not None else None
    out, err = sys.stdout.buffer, sys.stderr.buffer
    code: int | None = None
    raw = terminal.raw_mode(sys.stdin.fileno()) if tty and interactive else contextlib.nullcontext()
    resizes = (
        terminal.on_resize(resized)
        if tty and terminal.is_tty(sys.stdout.fileno())
        else contextlib.nullcontext()
    )
    feeder: asyncio.Task[None] | None = None
    try:
        with raw, resizes:
            async with contextlib.aclosing(session.events()) as events:
                feeder = asyncio.create_task(feed()) if interactive else None
                async for event in events:
                    if isinstance(event, Started):
                        if on_id is not None:
                            on_id(event.id)
                    elif isinstance(event, Output):
                        if lines is not None:
                            lines.write(event.data, event.stderr)
                        else:
                            target = err if event.stderr else out
                            target.write(event.data)
                            target.flush()
                    elif isinstance(event, Exited):
                        code = event.code
                        if event.error:
                            sys.stderr.write(f"error: {event.error}\n")
                            sys.stderr.flush()
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
        if lines is not None:
            lines.flush()
    return code
