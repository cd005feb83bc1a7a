"""The verbs on an existing container: stop, restart, kill, pause, unpause, rm, prune.

Each takes the container's lock (the facade resolves the reference); stop and rm wait for the run's
exit to be RECORDED by its watcher, which does not take the lock.
"""

from __future__ import annotations

import signal

import agent.log
from agent.containers import removal
from agent.containers import start as starting
from agent.containers.context import KILL_WAIT, Context
from agent.containers.lifecycle import Phase
from agent.errors import AgentError, Conflict, FailedPrecondition, NotFound
from agent.state.containers import ACTIVE, ContainerRecord, Status

log = agent.log.get(__name__)


async def stop_locked(ctx: Context, cid: str, timeout: int | None) -> ContainerRecord:
    """The stop signal, then SIGKILL after the grace period; returns once the exit is recorded."""
    rec = ctx.store.update(cid, stopped_by_user=True)
    if rec.status is Status.RESTARTING:
        rec = ctx.store.transition(cid, Status.EXITED)
        await ctx.notify()
        return rec
    if rec.status not in ACTIVE:
        return rec
    opts = ctx.options(rec)
    grace = timeout if timeout is not None else (opts.stop_timeout or ctx.settings.stop_timeout)
    run = ctx.runs.get(cid)
    if rec.status is Status.PAUSED:
        try:
            await ctx.runtime.resume(cid)
        except AgentError as exc:  # the kill below ends it anyway
            log.warning("container.resume_before_stop_failed", id=cid, error=str(exc))
    if grace > 0:
        try:
            await ctx.runtime.kill(cid, ctx.stop_signal(rec))
        except AgentError as exc:  # gone already, or it ignores us: SIGKILL follows
            log.info("container.stop_signal_failed", id=cid, error=str(exc))
        if run is not None and await run.wait(Phase.RECORDED, grace):
            ctx.event("stop", rec)
            return ctx.store.get(cid)
    await ctx.kill_all(cid, "stop")
    if run is not None and not await run.wait(Phase.RECORDED, KILL_WAIT):
        raise FailedPrecondition(f"container {rec.name} did not exit after SIGKILL")
    ctx.event("stop", rec)
    return ctx.store.get(cid)


async def restart_locked(ctx: Context, cid: str, timeout: int | None) -> ContainerRecord:
    await stop_locked(ctx, cid, timeout)
    ctx.store.update(cid, stopped_by_user=False)
    return await starting.start_locked(ctx, cid)


async def kill_locked(ctx: Context, cid: str, number: int) -> ContainerRecord:
    rec = ctx.store.get(cid)
    if rec.status not in ACTIVE:
        raise FailedPrecondition(f"container {rec.name} is not running")
    if number in (signal.SIGKILL, ctx.stop_signal(rec)):
        ctx.store.update(cid, stopped_by_user=True)
    await ctx.runtime.kill(cid, number, all_processes=number == signal.SIGKILL)
    ctx.event("kill", rec, signal=number)
    return rec


async def pause_locked(ctx: Context, cid: str, by: str) -> ContainerRecord:
    """Freeze a running container. `by` ("user" or "commit") is recorded before the freeze, so that a
    pause whose owner died with the agent (a commit) is undone at the next start (reconcile)."""
    rec = ctx.store.get(cid)
    if rec.status is not Status.RUNNING:
        raise FailedPrecondition(f"container {rec.name} is not running")
    ctx.store.update(cid, paused_by=by)
    try:
        await ctx.runtime.pause(cid)
    except BaseException:
        try:
            await ctx.runtime.resume(cid)  # a half-done freeze must not stay
        except AgentError as exc:
            log.warning("container.pause_undo_failed", id=cid, error=str(exc))
        ctx.store.update(cid, paused_by="")
        raise
    rec = ctx.store.transition(cid, Status.PAUSED)
    ctx.event("pause", rec)
    return rec


async def unpause_locked(ctx: Context, cid: str) -> ContainerRecord:
    rec = ctx.store.get(cid)
    if rec.status is not Status.PAUSED:
        raise FailedPrecondition(f"container {rec.name} is not paused")
    await ctx.runtime.resume(cid)
    rec = ctx.store.transition(cid, Status.RUNNING, paused_by="")
    ctx.event("unpause", rec)
    return rec


async def thaw_commit_pause(ctx: Context, rec: ContainerRecord) -> None:
    """At start-up: a commit froze this container and the agent died before it thawed it."""
    state = await ctx.runtime_state(rec.id)
    if state is not None and state.status == "paused":
        await ctx.runtime.resume(rec.id)
    if rec.status is Status.PAUSED:
        rec = ctx.store.transition(rec.id, Status.RUNNING, paused_by="")
        ctx.event("unpause", rec)
    else:
        ctx.store.update(rec.id, paused_by="")
    log.info("container.commit_pause_undone", id=rec.id)


async def remove_locked(ctx: Context, cid: str, *, force: bool, volumes: bool) -> ContainerRecord:
    """`rm`: a running container only with `force` (SIGKILL, then wait for its exit to be recorded)."""
    rec = ctx.store.get(cid)
    if rec.status in ACTIVE:
        if not force:
            raise FailedPrecondition(
                f"container {rec.name} is {rec.status}: stop it first or remove it with -f"
            )
        ctx.store.update(cid, stopped_by_user=True)
        await ctx.kill_all(cid, "rm -f")
        run = ctx.runs.get(cid)
        if run is not None and not await run.wait(Phase.RECORDED, KILL_WAIT):
            raise FailedPrecondition(f"container {rec.name} did not exit after SIGKILL")
        rec = ctx.store.get(cid)
    await removal.remove_locked(ctx, rec, volumes=volumes)
    return rec


PRUNABLE = frozenset({Status.EXITED, Status.CREATED, Status.DEAD})


def prunable(ctx: Context) -> list[ContainerRecord]:
    return [rec for rec in ctx.store.all() if rec.status in PRUNABLE]


def prune_skipped(cid: str, exc: NotFound | Conflict) -> None:
    """A container prune could not remove: gone meanwhile, or started again (not an error)."""
    log.info("container.prune_skipped", id=cid, reason=str(exc))
