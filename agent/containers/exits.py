"""How a run ends: watch the monitor → decide → record → release → remove (`--rm`) or restart (policy).

`decide_exit` is the whole policy, a pure function of (record, exit, restart policy, shutting down); the
rest carries it out. The watcher records the exit without the container's lock (stop/rm wait for it while
holding theirs); removal and restarts run as separate tasks that take the lock.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

import agent.log
from agent.containers import removal, restart
from agent.containers import start as starting  # a cycle by nature: a restart starts, a start is watched
from agent.containers.context import KILL_WAIT, UNKNOWN_EXIT, Context
from agent.containers.io import Exited
from agent.containers.lifecycle import Phase, Run
from agent.errors import AgentError, Conflict, NotFound
from agent.runtime import bundle, logs
from agent.runtime.monitor import ExitInfo
from agent.runtime.options import RestartPolicy
from agent.state.containers import ACTIVE, ContainerRecord, Status, now

log = agent.log.get(__name__)

NO_EXIT_FILE = "the container's monitor (conmon) ended without recording an exit code"
NO_EXIT_CODE = "conmon could not determine the exit code"


class ExitAction(StrEnum):
    LEAVE = "leave"  # recorded; nothing more to do
    RESTART = "restart"  # recorded as restarting: a policy start after `delay`
    REMOVE = "remove"  # recorded; then removed (`--rm`) once attached clients have the output
    FORGET = "forget"  # the record is gone (removed meanwhile): nothing to record


@dataclass(frozen=True)
class ExitDecision:
    action: ExitAction
    status: Status | None  # the status to record; None: only the exit's fields (not running any more)
    code: int
    oom: bool
    finished_at: datetime
    message: str  # why the code is unknown ("" when it is known)
    delay: float  # the restart back-off to store (and wait, for RESTART)


def decide_exit(
    rec: ContainerRecord | None,
    info: ExitInfo | None,
    policy: RestartPolicy,
    *,
    auto_remove: bool,
    previous_delay: float,
    closing: bool,
    now: datetime,
) -> ExitDecision:
    """What to do about a run's end. `info` None: the monitor left no exit file; `rec` None: the record
    is gone; `previous_delay`: the back-off that led to this run; `closing`: the agent is stopping."""
    if info is None:
        code, oom, finished, message = UNKNOWN_EXIT, False, now, NO_EXIT_FILE
    elif info.code < 0:
        code, oom, finished, message = UNKNOWN_EXIT, info.oom, info.finished_at, NO_EXIT_CODE
    else:
        code, oom, finished, message = info.code, info.oom, info.finished_at, ""
    if rec is None:
        return ExitDecision(ExitAction.FORGET, None, code, oom, finished, message, previous_delay)
    if rec.status not in ACTIVE:  # stopped or removed meanwhile: keep the exit, change nothing else
        action = ExitAction.REMOVE if auto_remove else ExitAction.LEAVE
        return ExitDecision(action, None, code, oom, finished, message, previous_delay)
    again = not closing and restart.should_restart(policy, code, rec.restart_count, rec.stopped_by_user)
    if auto_remove:
        action = ExitAction.REMOVE
    else:
        action = ExitAction.RESTART if again else ExitAction.LEAVE
    if again:
        ran_for = (finished - rec.started_at).total_seconds() if rec.started_at else 0.0
        delay = restart.next_delay(previous_delay, ran_for)
        return ExitDecision(action, Status.RESTARTING, code, oom, finished, message, delay)
    return ExitDecision(action, Status.EXITED, code, oom, finished, message, previous_delay)


async def watch(ctx: Context, cid: str, run: Run) -> None:
    """The task of one run: wait for its monitor to end, then handle the exit."""
    log_path = ctx.paths(cid).log
    if ctx.rotations is not None:
        ctx.rotations.watch(log_path)
    try:
        await ctx.monitor.wait(run.monitor_pid)
        log.debug("container.exit_observed", id=cid)
    finally:
        if ctx.rotations is not None:
            ctx.rotations.unwatch(log_path)
    try:
        logs.collect(log_path, ctx.settings.log_max_files)
    except OSError as exc:
        log.warning("container.log_rotation_failed", id=cid, error=str(exc))
    run.advance(Phase.EXITED)
    await record_exit(ctx, cid, run, ctx.monitor.read_exit(ctx.paths(cid).run))


async def record_exit(ctx: Context, cid: str, run: Run, info: ExitInfo | None) -> None:
    """Record an EXITED run's end and carry out `decide_exit`'s decision."""
    paths = ctx.paths(cid)
    if info is None:  # the monitor is gone without an exit file: nothing of the container may survive it
        state = await ctx.runtime_state(cid)
        if state is not None and state.status in ("running", "paused", "created"):
            await ctx.kill_all(cid, "monitor gone")
    release(ctx, cid, run)
    try:
        bundle.unmount_rootfs(paths)  # one umount2 (~0.5 ms): no thread hop on the exit's path
    except AgentError as exc:
        log.warning("container.exit_cleanup_failed", id=cid, error=str(exc))
    if ctx.network is not None:
        try:
            if ctx.uses_network(ctx.options(ctx.store.get(cid))):
                await ctx.network.detach(cid)
        except AgentError as exc:
            log.warning("container.network_detach_failed", id=cid, error=str(exc))
    rec, decision = _decide(ctx, cid, run, info)
    if rec is None:  # FORGET: removed meanwhile
        run.advance(Phase.RECORDED)
        run.advance(Phase.FINISHED)
        return
    recorded = False
    if decision.status is not None:
        try:
            rec = ctx.store.transition(
                cid,
                decision.status,
                allowed_from=ACTIVE,
                restart_delay=decision.delay,
                exit_code=decision.code,
                oom_killed=decision.oom,
                finished_at=decision.finished_at,
                pid=0,
                error=decision.message or rec.error,
                health_status="",
            )
            recorded = True
        except Conflict:  # stopped or removed since `_decide` read it: keep the exit, no restart
            action = ExitAction.REMOVE if decision.action is ExitAction.REMOVE else ExitAction.LEAVE
            decision = replace(decision, status=None, action=action)
    if not recorded:
        rec = ctx.store.update(
            cid, exit_code=decision.code, oom_killed=decision.oom, finished_at=decision.finished_at, pid=0
        )
    run.exit = Exited(decision.code, decision.oom, decision.message)
    if decision.oom:
        ctx.event("oom", rec)
    ctx.event("die", rec, exitCode=decision.code)
    again = decision.action is ExitAction.RESTART
    log.info("container.exited", id=cid, exit_code=decision.code, oom=decision.oom, restart=again)
    run.advance(Phase.RECORDED)
    await ctx.notify()
    if decision.action is ExitAction.REMOVE:
        ctx.spawn(_auto_remove(ctx, cid, run), f"containers.autoremove.{cid[:12]}")
        return
    if decision.action is ExitAction.RESTART:
        ctx.spawn(restart_later(ctx, cid, decision.delay), f"containers.restart.{cid[:12]}")
    run.advance(Phase.FINISHED)


def _decide(
    ctx: Context, cid: str, run: Run, info: ExitInfo | None
) -> tuple[ContainerRecord | None, ExitDecision]:
    try:
        rec: ContainerRecord | None = ctx.store.get(cid)
    except NotFound:
        rec = None
    opts = ctx.options(rec) if rec is not None else None
    decision = decide_exit(
        rec,
        info,
        opts.restart if opts is not None else RestartPolicy(),
        auto_remove=opts.auto_remove if opts is not None else False,
        previous_delay=run.delay,
        closing=ctx.closing,
        now=now(),
    )
    return rec, decision


def release(ctx: Context, cid: str, run: Run) -> None:
    """`runtime delete` of an exited container, once the exit is fully handled (reply sent, `--rm` done).

    Right after a container's last process is reaped the kernel refuses to remove its cgroups for a
    moment and runc retries with a 10 ms back-off: done inline, the delete took ~15 ms of every
    attached run's (and `--rm`'s) reply, and done alongside it competed with it for the CPU. Only a
    new start of the same container needs it done (`released`); the agent's stop waits for it; an
    agent killed meanwhile deletes the state at its next start (reconcile).
    """

    async def delete() -> None:
        if not await run.wait(Phase.FINISHED, KILL_WAIT):
            log.warning("container.release_without_finish", id=cid)
        try:
            await ctx.runtime.delete(cid, force=True)
        except AgentError as exc:
            log.warning("container.exit_cleanup_failed", id=cid, error=str(exc))

    def forget(task: asyncio.Task[None]) -> None:
        if ctx.releases.get(cid) is task:
            del ctx.releases[cid]

    task = ctx.spawn(delete(), f"containers.release.{cid[:12]}")
    ctx.releases[cid] = task
    task.add_done_callback(forget)


async def released(ctx: Context, cid: str) -> None:
    """Wait for a pending release of `cid`: a new create needs the runtime's old state gone."""
    task = ctx.releases.get(cid)
    if task is not None:
        await asyncio.wait([task])


async def _auto_remove(ctx: Context, cid: str, run: Run) -> None:
    try:
        await run.readers_gone(KILL_WAIT)
        async with ctx.lock(cid):
            try:
                rec = ctx.store.get(cid)
            except NotFound:
                return
            if rec.status is Status.EXITED:
                await removal.remove_locked(ctx, rec, volumes=True)
    finally:
        run.advance(Phase.FINISHED)


async def restart_later(ctx: Context, cid: str, delay: float, *, wait: float | None = None) -> None:
    """A policy restart after the back-off `delay` (or what is left of it: `wait`)."""
    await asyncio.sleep(delay if wait is None else wait)
    async with ctx.lock(cid):
        try:
            rec = ctx.store.get(cid)
        except NotFound:
            return
        if rec.status is not Status.RESTARTING or rec.stopped_by_user:
            return
        ctx.store.update(cid, restart_count=rec.restart_count + 1)
        try:
            await starting.start_locked(ctx, cid, restarting=True, delay=delay)
        except AgentError as exc:
            log.warning("container.restart_failed", id=cid, error=str(exc))
            return
        ctx.event("restart", ctx.store.get(cid))
