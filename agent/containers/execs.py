"""`exec`: a process in a running container, under its own monitor (terminal or detached) or run in the
foreground by the agent (attached without a terminal, `foreground_exec.py`); health checks use it too.

Both paths produce the same events: `Started` once the process runs, output, then one `Exited`; a
process the runtime cannot start ends in an `Exited` with the runtime's reason and Docker's code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agent.log
from agent.containers.context import UNKNOWN_EXIT, Context
from agent.containers.foreground_exec import ForegroundExec
from agent.containers.io import Event, Exited, Input, Output, Started, output_events, relay
from agent.errors import FailedPrecondition, RuntimeCommand
from agent.runtime import attach as attach_fifo
from agent.runtime import bundle
from agent.runtime.attach import AttachSession
from agent.runtime.monitor import ConmonJob
from agent.runtime.oci import exit_code_for_runtime_error, start_error_exit_code
from agent.runtime.spec import exec_process
from agent.runtime.users import resolve_in_root
from agent.state.containers import ContainerRecord, Status

log = agent.log.get(__name__)

HEALTH_LOG_KEEP = 5
CAPTURE_KEEP = 16 * 1024


@dataclass(frozen=True)
class ExecRequest:
    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    user: str = ""
    workdir: str = ""
    tty: bool = False
    interactive: bool = False
    detach: bool = False
    size: tuple[int, int] = (0, 0)


async def exec_(
    ctx: Context, rec: ContainerRecord, req: ExecRequest, inputs: AsyncIterator[Input] | None
) -> AsyncGenerator[Event, None]:
    """Run a process in the running container `rec`; ends with its exit code (unless detached)."""
    if rec.status is Status.PAUSED:
        raise FailedPrecondition(f"container {rec.name} is paused; unpause it first")
    if rec.status is not Status.RUNNING:
        raise FailedPrecondition(f"container {rec.name} is not running")
    cid = rec.id
    paths = ctx.paths(cid)
    exec_id = ctx.new_id()
    d = paths.exec_root / exec_id
    base = (await asyncio.to_thread(bundle.read_config, paths))["process"]
    user = await asyncio.to_thread(resolve_in_root, req.user, paths.rootfs) if req.user else None
    proc = exec_process(base, req.args, env=req.env, user=user, cwd=req.workdir, tty=req.tty)
    d.mkdir(parents=True)
    (d / "process.json").write_text(json.dumps(proc))
    stdin = inputs if req.interactive else None
    if not req.tty and not req.detach:  # ends with its client: no monitor needed
        events = _foreground(ctx, rec, d, exec_id, req.args, stdin)
    else:
        events = _monitored(ctx, rec, d, exec_id, req, stdin)
    async with contextlib.aclosing(events):  # a client gone closes the session now, not at GC
        async for ev in events:
            yield ev


async def _monitored(
    ctx: Context,
    rec: ContainerRecord,
    d: Path,
    exec_id: str,
    req: ExecRequest,
    inputs: AsyncIterator[Input] | None,
) -> AsyncGenerator[Event, None]:
    """A terminal or detached exec under its own monitor, so it can outlive the client (and the agent)."""
    session: AttachSession | None = None

    async def connect() -> None:
        nonlocal session
        session = await AttachSession.connect(ctx.monitor.socket_dir, exec_id)
        attach_fifo.resize(d, *req.size)

    job = ConmonJob(
        container_id=rec.id,
        cuuid=exec_id,
        name=rec.name,
        bundle=d,
        persist_dir=d,
        log_path=d / "exec.log",
        pidfile=d / "pid",
        conmon_pidfile=d / "conmon.pid",
        log_size_max=ctx.settings.log_max_size,
        terminal=req.tty,
        stdin=req.interactive,
        exec_spec=d / "process.json",
        exec_attach=req.tty and not req.detach,
    )
    try:
        launched = await ctx.monitor.launch(job, connect if job.exec_attach else None)
    except RuntimeCommand as exc:
        _cleanup(ctx, d, exec_id)
        yield Exited(start_error_exit_code(exc), False, str(exc))
        return
    except BaseException:
        _cleanup(ctx, d, exec_id)
        raise
    ctx.event("exec_start", rec, execID=exec_id, command=" ".join(req.args))
    exited = asyncio.Event()

    async def watch() -> None:
        try:
            await ctx.monitor.wait(launched.conmon_pid)
        finally:
            exited.set()

    watcher = ctx.spawn(watch(), f"containers.exec.{exec_id[:12]}")
    yield Started(exec_id)
    if req.detach:
        ctx.spawn(_finish(ctx, rec, d, exec_id, exited), f"containers.exec-done.{exec_id[:12]}")
        return
    try:
        if req.interactive and not req.tty:
            await connect()
        outputs = output_events(
            session=session if req.tty else None, log_path=d / "exec.log", done=exited, since_ns=None
        )
        async for out in relay(outputs, inputs, session, d):
            yield out
        await exited.wait()
    except BaseException:
        # the client went away: the exec'd process goes too
        try:
            os.kill(launched.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it ended on its own meanwhile
        ctx.spawn(_finish(ctx, rec, d, exec_id, exited), f"containers.exec-done.{exec_id[:12]}")
        raise
    del watcher
    yield await _finish(ctx, rec, d, exec_id, exited)


async def _foreground(
    ctx: Context,
    rec: ContainerRecord,
    d: Path,
    exec_id: str,
    args: tuple[str, ...],
    inputs: AsyncIterator[Input] | None,
) -> AsyncGenerator[Event, None]:
    """An attached exec without a terminal, the runtime run by us; events as for a monitored exec.

    `Started` (and the exec_start event) come once the process is known to run, so a process the
    runtime cannot start ends in an `Exited` with the reason only, as with the monitor.
    """
    try:
        session = await ForegroundExec.start(ctx.runtime, rec.id, d, interactive=inputs is not None)
    except BaseException:
        _cleanup(ctx, d, exec_id)
        raise
    pump = asyncio.ensure_future(session.pump_input(inputs)) if inputs is not None else None
    announced = False

    def announce() -> Started:
        nonlocal announced
        announced = True
        ctx.event("exec_start", rec, execID=exec_id, command=" ".join(args))
        return Started(exec_id)

    try:
        async for out in session.outputs():
            if not announced:
                yield announce()
            yield out
        code, error, held = await session.finish()
    except BaseException:  # the client went away: the exec'd process goes too
        session.kill()
        ctx.spawn(_reap_foreground(ctx, rec, session, d, exec_id), f"containers.exec-done.{exec_id[:12]}")
        raise
    finally:
        if pump is not None:
            pump.cancel()
    _cleanup(ctx, d, exec_id)
    if error:
        if announced:
            ctx.event("exec_die", rec, execID=exec_id, exitCode=code)
        yield Exited(exit_code_for_runtime_error(error), False, error)
        return
    if not announced:
        yield announce()
    for out in held:
        yield out
    ctx.event("exec_die", rec, execID=exec_id, exitCode=code)
    yield Exited(code if code >= 0 else UNKNOWN_EXIT)


async def _reap_foreground(
    ctx: Context, rec: ContainerRecord, session: ForegroundExec, d: Path, exec_id: str
) -> None:
    code = await session.proc.wait()
    _cleanup(ctx, d, exec_id)
    ctx.event("exec_die", rec, execID=exec_id, exitCode=code if code >= 0 else UNKNOWN_EXIT)


async def _finish(ctx: Context, rec: ContainerRecord, d: Path, exec_id: str, exited: asyncio.Event) -> Exited:
    await exited.wait()
    info = ctx.monitor.read_exit(d)
    code = UNKNOWN_EXIT if info is None or info.code < 0 else info.code
    _cleanup(ctx, d, exec_id)
    ctx.event("exec_die", rec, execID=exec_id, exitCode=code)
    return Exited(code, bool(info and info.oom))


def _cleanup(ctx: Context, d: Path, exec_id: str) -> None:
    shutil.rmtree(d, ignore_errors=True)  # best effort: a leftover exec dir goes with the container
    ctx.clean_socket_link(exec_id)


class HealthProbe:
    """The health checker's host (`health.HealthHost`): runs checks as execs, records their results."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def exec_capture(self, container_id: str, args: tuple[str, ...], timeout: float) -> tuple[int, str]:
        """Run a command to completion; output is stdout+stderr, the code -1 on timeout.

        Only the output's last 16 KiB are kept (health records keep 4096 characters of it)."""
        output = bytearray()
        code = UNKNOWN_EXIT
        try:
            async with asyncio.timeout(timeout):
                rec = self.ctx.store.get(container_id)
                async for ev in exec_(self.ctx, rec, ExecRequest(args), None):
                    if isinstance(ev, Output):
                        output += ev.data
                    elif isinstance(ev, Exited):
                        code = ev.code
                        if ev.error:
                            output += ev.error.encode()
                    del output[:-CAPTURE_KEEP]
        except TimeoutError:
            return -1, f"health check timed out after {timeout:g}s"
        return code, output.decode(errors="replace")

    def record_health(self, container_id: str, status: str, streak: int, entry: dict[str, Any]) -> str:
        rec = self.ctx.store.get(container_id)
        history = [*rec.health_log, entry][-HEALTH_LOG_KEEP:]
        self.ctx.store.update(
            container_id, health_status=status, health_failing_streak=streak, health_log=history
        )
        if status != rec.health_status and status in ("healthy", "unhealthy"):
            self.ctx.event(f"health_status: {status}", rec)
        return status
