"""Attached, non-terminal exec sessions: `runc exec` run by the agent itself, without a conmon.

conmon is there so that a process outlives the agent (container runs, detached execs) and to hold a
terminal. An attached exec without a terminal ends with its client anyway, so the agent runs the OCI
runtime's `exec` in the foreground: the process's stdout and stderr are pipes to the agent (no CRI log
file to write and follow), its stdin a pipe or /dev/null, and the runtime's exit status is the process's
(128+N for signal N). Isolation is the runtime's, exactly as with conmon (same process spec, same
`exec --process`). Measured on the fleet benchmark's hosts: conmon, its log file and the follower cost
about as much CPU per `exec true` as the agent's own handling of it.

When the runtime cannot start the process (no such executable, …) it writes no pid file and exits
non-zero; its reason is then read from its JSON `--log`, and whatever it printed on stderr (its own
error, not the process's) is dropped: stderr is held back until the pid file shows the process started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from agent.containers.io import CloseStdin, Input, Output, Stdin
from agent.runtime.monitor import read_pidfile
from agent.runtime.oci import RUNTIME_UMASK
from agent.runtime.protocols import Runtime

CHUNK = 64 * 1024
STREAMS = ("stdout", "stderr")
Pipe = tuple[asyncio.StreamReader, asyncio.ReadTransport]
HOLD_MAX = 4 * CHUNK  # the runtime's own error is a line or two; past this it is the process's output


class ForegroundExec:
    """One `runc exec` child of the agent; iterate `outputs()`, then `await finish()`.

    The process's stdout and stderr are pipes whose read ends the agent owns (not asyncio's subprocess
    pipes), so that `kill()` can close them: the client is gone, output has nowhere to go, and a child
    the process left behind gets EPIPE instead of blocking on a pipe nobody reads.
    """

    def __init__(self, proc: asyncio.subprocess.Process, d: Path, pipes: dict[str, Pipe]) -> None:
        self.proc = proc
        self.pidfile = d / "pid"
        self.runtime_log = d / "runtime.log"
        self._pipes = pipes
        self._held: list[Output] = []
        self._held_bytes = 0
        self._started = False

    @classmethod
    async def start(
        cls, runtime: Runtime, container_id: str, d: Path, *, interactive: bool
    ) -> ForegroundExec:
        """Start `<runtime> exec --process d/process.json` with pipes for the process's stdio."""
        argv = runtime.exec_argv(container_id, d / "process.json", d / "pid", d / "runtime.log")
        fds = {stream: os.pipe2(os.O_CLOEXEC) for stream in STREAMS}
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if interactive else asyncio.subprocess.DEVNULL,
                stdout=fds["stdout"][1],
                stderr=fds["stderr"][1],
                cwd=str(d),
                umask=RUNTIME_UMASK,
            )
        except BaseException:
            for r, _ in fds.values():
                os.close(r)
            raise
        finally:
            for _, w in fds.values():
                os.close(w)
        pipes: dict[str, Pipe] = {}
        try:
            for stream, (r, _) in fds.items():
                pipes[stream] = await _read_pipe(r)
        except BaseException:
            for stream, (r, _) in fds.items():
                if stream in pipes:
                    pipes[stream][1].close()
                else:
                    os.close(r)
            with contextlib.suppress(ProcessLookupError):  # silent: it already ended, which is the goal
                proc.kill()
            raise
        return cls(proc, d, pipes)

    def started(self) -> bool:
        """Whether the process itself runs (the runtime wrote its pid file)."""
        if not self._started:
            self._started = self.pidfile.exists()
        return self._started

    async def outputs(self) -> AsyncIterator[Output]:
        """stdout and stderr chunks in arrival order, until both pipes close.

        Flow control: at most one read per pipe is outstanding, and the next starts only once the
        caller took the chunk, so a slow or absent reader leaves the bytes in the pipe (plus one
        StreamReader buffer, at most 2 x CHUNK) and the process blocks on its write.
        """
        reads: dict[asyncio.Future[bytes], str] = {}

        def read(stream: str) -> None:
            reads[asyncio.ensure_future(self._pipes[stream][0].read(CHUNK))] = stream

        for stream in STREAMS:
            read(stream)
        try:
            while reads:
                done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    stream = reads.pop(task)
                    data = task.result()
                    if not data:
                        continue  # this pipe is at its end
                    item = Output(stream, data)
                    if stream == "stderr" and not self.started() and self._held_bytes < HOLD_MAX:
                        self._held.append(item)  # the runtime's own error, unless the process did start
                        self._held_bytes += len(data)
                    else:
                        for held in self._held:
                            yield held
                        self._held.clear()
                        self._held_bytes = 0
                        yield item
                    read(stream)
        finally:
            for task in reads:
                task.cancel()

    async def pump_input(self, inputs: AsyncIterator[Input]) -> None:
        """Forward stdin bytes until the client ends its input (resizes mean nothing without a tty)."""
        stdin = self.proc.stdin
        if stdin is None:
            return
        try:
            async for item in inputs:
                if isinstance(item, Stdin) and item.data:
                    stdin.write(item.data)
                    await stdin.drain()
                elif isinstance(item, CloseStdin):
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass  # the process closed its stdin or ended
        finally:
            stdin.close()

    async def finish(self) -> tuple[int, str, list[Output]]:
        """(exit code, the runtime's error if the process never started, stderr held back until now)."""
        code = await self.proc.wait()
        self.close()
        if self.started():
            held, self._held = self._held, []
            return code, "", held
        self._held.clear()
        return code, self._runtime_error(code), []

    def _runtime_error(self, code: int) -> str:
        try:
            lines = self.runtime_log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        for line in reversed(lines):
            with contextlib.suppress(ValueError, AttributeError):  # silent: a line that is not JSON is
                entry = json.loads(line)  # not the runtime's error; the next line may be
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    return str(entry["msg"])
        return f"the runtime could not start the process (exit {code})"

    def kill(self) -> None:
        """SIGKILL the exec'd process (the runtime then exits with 137), or the runtime if it has no
        process yet, and close our ends of its output pipes (nobody will read them any more)."""
        pid = read_pidfile(self.pidfile)
        target = pid if pid > 0 else (self.proc.pid if self.proc.returncode is None else 0)
        if target > 0:
            with contextlib.suppress(ProcessLookupError):  # silent: it ended on its own meanwhile
                os.kill(target, signal.SIGKILL)
        self.close()

    def close(self) -> None:
        """Close the read ends of the output pipes (idempotent)."""
        for _, transport in self._pipes.values():
            transport.close()


async def _read_pipe(fd: int) -> Pipe:
    """A StreamReader over the read end `fd` of a pipe, and the transport that closes it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", buffering=0)
    )
    return reader, transport
