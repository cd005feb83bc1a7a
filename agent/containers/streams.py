"""Streams of a run: `run` (create, start, attach), `attach`, `wait` and `logs`.

Output comes from the run's CRI log (or the monitor's socket for a terminal) until the run's monitor
ended (phase EXITED); the exit code once the exit is RECORDED, and for `--rm` once it is FINISHED.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator

import agent.log
from agent.containers import control, create
from agent.containers import start as starting
from agent.containers.context import UNKNOWN_EXIT, Context
from agent.containers.io import Event, Exited, Input, Started, output_events, relay
from agent.containers.lifecycle import Phase
from agent.errors import AgentError, FailedPrecondition, InvalidArgument, NotFound, RuntimeCommand
from agent.runtime import attach as attach_fifo
from agent.runtime import logs as logfiles
from agent.runtime.attach import AttachSession
from agent.runtime.oci import start_error_exit_code
from agent.runtime.options import RunOptions
from agent.state.containers import ACTIVE, ContainerRecord, Status

log = agent.log.get(__name__)

WAIT_CONDITIONS = ("not-running", "next-exit", "removed")


async def start(ctx: Context, cid: str, pre_start: starting.PreStart | None = None) -> ContainerRecord:
    async with ctx.lock(cid):
        return await starting.start_locked(ctx, cid, pre_start=pre_start)


async def remove_after_failed_start(ctx: Context, cid: str) -> None:
    """`--rm` of a container whose start failed: it never ran, so it goes (a failure is logged)."""
    try:
        async with ctx.lock(cid):
            await control.remove_locked(ctx, cid, force=True, volumes=False)
        ctx.locks.pop(cid, None)
    except AgentError as exc:
        log.warning("container.autoremove_failed", id=cid, error=str(exc))


async def run(
    ctx: Context,
    opts: RunOptions,
    inputs: AsyncIterator[Input] | None,
    *,
    detach: bool,
    size: tuple[int, int],
) -> AsyncGenerator[Event, None]:
    """`docker run`: create, start and (unless detached) stream output until the exit code."""
    rec = await create.create(ctx, opts)
    yield Started(rec.id)
    if detach:
        try:
            await start(ctx, rec.id)
        except AgentError:
            if opts.auto_remove:
                await remove_after_failed_start(ctx, rec.id)
            raise
        return
    events = attach(ctx, rec, inputs, start_it=True, size=size)
    async with contextlib.aclosing(events):
        async for ev in events:
            yield ev


async def attach(
    ctx: Context,
    rec: ContainerRecord,
    inputs: AsyncIterator[Input] | None,
    *,
    start_it: bool,
    size: tuple[int, int],
) -> AsyncGenerator[Event, None]:
    """Stream a run's output (and feed its stdin) until it exits; with `start_it`, start it first."""
    opts = ctx.options(rec)
    cid = rec.id
    paths = ctx.paths(cid)
    want_socket = opts.tty or (opts.stdin_open and inputs is not None)
    session: AttachSession | None = None

    async def connect() -> None:
        nonlocal session
        session = await AttachSession.connect(ctx.monitor.socket_dir, cid)
        attach_fifo.resize(paths.root, *size)

    since = time.time_ns()
    if start_it:
        try:
            await start(ctx, cid, pre_start=connect if want_socket else None)
        except RuntimeCommand as exc:
            if ctx.store.get(cid).status in ACTIVE:
                raise
            if opts.auto_remove:
                await remove_after_failed_start(ctx, cid)
            yield Exited(start_error_exit_code(exc), False, str(exc))
            return
    else:
        rec = ctx.store.get(cid)
        if rec.status not in ACTIVE:
            raise FailedPrecondition(f"container {rec.name} is not running; start it with -a to attach")
        if want_socket:
            await connect()
    the_run = ctx.runs.get(cid)
    if the_run is None:
        raise FailedPrecondition(f"container {rec.name} is not running")
    if start_it:  # output from the run's beginning; a plain attach shows only what comes next
        since = min(since, the_run.started_ns)
    with the_run.reader():
        outputs = output_events(
            session=session if opts.tty else None,
            log_path=paths.log,
            done=the_run.event(Phase.EXITED),
            since_ns=since,
        )
        async for out in relay(outputs, inputs, session, paths.root):
            yield out
    await the_run.wait(Phase.RECORDED)
    if opts.auto_remove:
        await the_run.wait(Phase.FINISHED)
    yield the_run.exit or Exited(UNKNOWN_EXIT)


async def wait(ctx: Context, rec: ContainerRecord, condition: str) -> tuple[int, str]:
    """Block until the container is not running (or `next-exit`, `removed`); return (code, error)."""
    cid = rec.id
    if condition not in WAIT_CONDITIONS:
        raise InvalidArgument(f"invalid wait condition {condition!r}: not-running, next-exit or removed")
    first_run = ctx.runs.get(cid)
    async with ctx.changed:
        while True:
            try:
                cur = ctx.store.get(cid)
            except NotFound:
                if condition == "removed":
                    return (rec.exit_code or 0), rec.error
                raise
            rec = cur
            if condition == "not-running" and cur.status not in ACTIVE | {Status.RESTARTING}:
                return (cur.exit_code or 0), cur.error
            if condition == "next-exit":
                latest = ctx.runs.get(cid)
                if (first_run is not None and first_run.reached(Phase.RECORDED)) or (
                    latest is not first_run and cur.status not in ACTIVE
                ):
                    return (cur.exit_code or 0), cur.error
            await ctx.changed.wait()


async def logs(
    ctx: Context,
    rec: ContainerRecord,
    *,
    follow: bool,
    tail: int | None,
    since_ns: int | None,
    until_ns: int | None,
) -> AsyncIterator[logfiles.LogEntry]:
    path = ctx.paths(rec.id).log
    entries = await asyncio.to_thread(
        logfiles.read_entries, path, since_ns=since_ns, until_ns=until_ns, tail=tail
    )
    for e in entries:
        yield e
    if not follow:
        return
    the_run = ctx.runs.get(rec.id)
    if the_run is None or the_run.reached(Phase.EXITED):
        return
    last = entries[-1].time_ns if entries else since_ns
    async for e in logfiles.follow(path, done=the_run.event(Phase.EXITED), from_start=False):
        if last is None or e.time_ns >= last:
            yield e
