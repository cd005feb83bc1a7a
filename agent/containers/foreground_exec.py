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
from agent.runtime.oci import OciRuntime

CHUNK = 64 * 1024


class ForegroundExec:
    """One `runc exec` child of the agent; iterate `outputs()`, then `await finish()`."""

    def __init__(self, proc: asyncio.subprocess.Process, d: Path) -> None:
        self.proc = proc
        self.pidfile = d / "pid"
        self.runtime_log = d / "runtime.log"
        self._held: list[Output] = []
        self._started = False

    @classmethod
    async def start(
        cls, runtime: OciRuntime, container_id: str, d: Path, *, interactive: bool
    ) -> ForegroundExec:
        """Start `<runtime> exec --process d/process.json` with pipes for the process's stdio."""
        argv = runtime.exec_argv(container_id, d / "process.json", d / "pid", d / "runtime.log")
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if interactive else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=str(d),
        )
        return cls(proc, d)

    def started(self) -> bool:
        """Whether the process itself runs (the runtime wrote its pid file)."""
        if not self._started:
            self._started = self.pidfile.exists()
        return self._started

    async def outputs(self) -> AsyncIterator[Output]:
        """stdout and stderr chunks in arrival order, until both pipes close."""
        queue: asyncio.Queue[Output | None] = asyncio.Queue()

        async def pump(reader: asyncio.StreamReader | None, stream: str) -> None:
            try:
                while reader is not None and (data := await reader.read(CHUNK)):
                    queue.put_nowait(Output(stream, data))
            finally:
                queue.put_nowait(None)

        pumps = [
            asyncio.ensure_future(pump(self.proc.stdout, "stdout")),
            asyncio.ensure_future(pump(self.proc.stderr, "stderr")),
        ]
        try:
            open_pipes = len(pumps)
            while open_pipes:
                item = await queue.get()
                if item is None:
                    open_pipes -= 1
                elif item.stream == "stderr" and not self.started():
                    self._held.append(item)  # the runtime's own error, unless the process did start
                else:
                    for held in self._held:
                        yield held
                    self._held.clear()
                    yield item
        finally:
            for task in pumps:
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
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("level") in ("error", "fatal") and entry.get("msg"):
                    return str(entry["msg"])
        return f"the runtime could not start the process (exit {code})"

    def kill(self) -> None:
        """SIGKILL the exec'd process (the runtime then exits with 137); the runtime if it has no process."""
        pid = read_pidfile(self.pidfile)
        target = pid if pid > 0 else (self.proc.pid if self.proc.returncode is None else 0)
        if target > 0:
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGKILL)
