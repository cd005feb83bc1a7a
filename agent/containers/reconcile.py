"""Start-up reconcile: make the records, the runtime's state and the monitors' exit files agree again.

What happens to each container is a table, `plan(Facts)`: (stored status × what runs × exit file) →
the steps to take, a pure function; `reconcile` gathers the facts and carries the steps out. Then the
strays go: runtime state and directories without a record, dangling attach-socket links.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from enum import StrEnum

import agent.log
from agent.containers import control, exits, removal, restart
from agent.containers.context import KILL_WAIT, UNKNOWN_EXIT, Context
from agent.containers.execs import HealthProbe
from agent.containers.health import run_health_checks
from agent.containers.lifecycle import Phase, Run
from agent.errors import AgentError
from agent.runtime import bundle
from agent.runtime.bundle import ContainerPaths
from agent.runtime.monitor import ExitInfo
from agent.state.containers import ACTIVE, ContainerRecord, Status, now

log = agent.log.get(__name__)

HOST_RESTARTED = "the host restarted"


class Running(StrEnum):
    """What the host has of the container's run."""

    MONITOR = "monitor"  # its monitor (conmon) runs, in this boot
    STATE = "state"  # no monitor, but the runtime has state for it (an interrupted start or stop)
    NOTHING = "nothing"


class Step(StrEnum):
    DISCARD = "discard"  # a half-done create: remove every trace
    FINISH_REMOVAL = "finish-removal"  # an interrupted rm
    ADOPT = "adopt"  # watch the run again (and its health)
    THAW = "thaw"  # undo the freeze of a commit that died with the agent
    RECORD_EXIT = "record-exit"  # the run ended while the agent was down: record its exit file
    RECORD_NO_EXIT = "record-no-exit"  # its monitor ended without an exit file: code unknown, kill leftovers
    RECORD_HOST_RESTART = "record-host-restart"  # the host restarted under it: exit code unknown
    CLEAN_RUNTIME = "clean-runtime"  # kill and delete what an interrupted start left in the runtime
    UNMOUNT = "unmount"  # its rootfs may still be mounted
    REMOVE = "remove"  # its `--rm` was interrupted by the agent going down
    RESUME_BACKOFF = "resume-backoff"  # restart when what is left of the back-off has passed
    RESTART_NOW = "restart-now"  # the host restarted: an `always` container comes back at once


@dataclass(frozen=True)
class Facts:
    status: Status
    running: Running
    exit_file: bool  # the monitor recorded an exit (in this boot)
    host_restarted: bool  # the host booted again since the record's last run started
    paused_by_commit: bool = False
    auto_remove: bool = False
    restart_at_agent_start: bool = False  # its restart policy brings it back after a host restart


def plan(f: Facts) -> tuple[Step, ...]:
    """The steps for one container, in order."""
    if f.status is Status.CREATING:
        return (Step.DISCARD,)
    if f.status is Status.REMOVING:
        return (Step.FINISH_REMOVAL,)
    if f.status in ACTIVE:
        if f.running is Running.MONITOR:
            return (Step.THAW, Step.ADOPT) if f.paused_by_commit else (Step.ADOPT,)
        if f.host_restarted:
            return (Step.RECORD_HOST_RESTART,)
        return (Step.RECORD_EXIT,) if f.exit_file else (Step.RECORD_NO_EXIT,)
    steps: list[Step] = []
    if f.running is not Running.NOTHING:
        steps.append(Step.CLEAN_RUNTIME)
    if f.status is Status.EXITED:
        steps.append(Step.UNMOUNT)
        if f.auto_remove:
            return (*steps, Step.REMOVE)
    if f.status is Status.RESTARTING:
        steps.append(Step.RESUME_BACKOFF)
    elif f.status is Status.EXITED and f.host_restarted and f.restart_at_agent_start:
        steps.append(Step.RESTART_NOW)
    return tuple(steps)


async def facts(ctx: Context, rec: ContainerRecord) -> Facts:
    """What the host has of `rec` (only what `plan` looks at for its status)."""
    opts = ctx.options(rec)
    running, exit_file = Running.NOTHING, False
    if rec.status in ACTIVE:  # a record of a run has the boot it ran in
        host_restarted = rec.boot_id != ctx.boot_id
        if not host_restarted and ctx.monitor.is_running(rec.conmon_pid, rec.id):
            running = Running.MONITOR
        elif not host_restarted:
            exit_file = ctx.monitor.read_exit(ctx.paths(rec.id).run) is not None
    else:  # one that never ran has none
        host_restarted = bool(rec.boot_id) and rec.boot_id != ctx.boot_id
    if rec.status not in ACTIVE | {Status.CREATING, Status.REMOVING}:
        state = await ctx.runtime_state(rec.id)
        running = Running.STATE if state is not None else Running.NOTHING
    return Facts(
        status=rec.status,
        running=running,
        exit_file=exit_file,
        host_restarted=host_restarted,
        paused_by_commit=rec.paused_by == "commit",
        auto_remove=opts.auto_remove,
        restart_at_agent_start=restart.restart_at_agent_start(opts.restart, rec.stopped_by_user, False),
    )


async def reconcile(ctx: Context) -> None:
    known: set[str] = set()
    for rec in ctx.store.all():
        known.add(rec.id)
        try:
            f = await facts(ctx, rec)
            steps = plan(f)
            log.debug("container.reconcile", id=rec.id, steps=[str(s) for s in steps])
            for step in steps:
                await _carry_out(ctx, rec, step)
        except AgentError as exc:
            log.error("container.reconcile_failed", id=rec.id, error=str(exc))
            try:
                ctx.store.transition(rec.id, Status.DEAD, error=f"reconcile failed: {exc}")
            except AgentError as mark_exc:
                log.error("container.reconcile_not_marked_dead", id=rec.id, error=str(mark_exc))
    await _remove_strays(ctx, known)


async def _carry_out(ctx: Context, rec: ContainerRecord, step: Step) -> None:
    cid = rec.id
    paths = ctx.paths(cid)
    if step is Step.DISCARD:
        log.info("container.half_created_removed", id=cid)
        await removal.discard(ctx, cid, [])
    elif step is Step.FINISH_REMOVAL:
        await ctx.delete_runtime_state(cid, "interrupted removal")
        await asyncio.to_thread(bundle.remove, paths)
        ctx.store.delete(cid)
        ctx.event("destroy", rec)
    elif step is Step.ADOPT:
        log.info("container.adopted", id=cid, pid=rec.pid)
        run = _run_of(ctx, rec)
        ctx.spawn(exits.watch(ctx, cid, run), f"containers.watch.{cid[:12]}")
        opts = ctx.options(rec)
        if opts.health is not None and not opts.health.disabled:
            checks = run_health_checks(HealthProbe(ctx), cid, run.event(Phase.EXITED), opts.health)
            ctx.spawn(checks, f"containers.health.{cid[:12]}")
    elif step is Step.THAW:
        try:
            await control.thaw_commit_pause(ctx, ctx.store.get(cid))
        except AgentError as exc:  # it still runs; a user can unpause it
            log.warning("container.commit_pause_not_undone", id=cid, error=str(exc))
    elif step in (Step.RECORD_EXIT, Step.RECORD_NO_EXIT, Step.RECORD_HOST_RESTART):
        run = _run_of(ctx, rec)
        run.advance(Phase.EXITED)
        info: ExitInfo | None = None
        if step is Step.RECORD_EXIT:
            info = ctx.monitor.read_exit(paths.run)
        elif step is Step.RECORD_HOST_RESTART:
            info = ExitInfo(UNKNOWN_EXIT, False, now(), HOST_RESTARTED)
        await exits.record_exit(ctx, cid, run, info)  # applies the restart policy like any exit
    elif step is Step.CLEAN_RUNTIME:
        await _clean_runtime(ctx, cid, paths)
    elif step is Step.UNMOUNT:
        await asyncio.to_thread(bundle.unmount_rootfs, paths)
    elif step is Step.REMOVE:
        await removal.remove_locked(ctx, ctx.store.get(cid), volumes=True)
    elif step is Step.RESUME_BACKOFF:  # the back-off goes on where the last agent left it
        delay = rec.restart_delay or restart.INITIAL_DELAY
        since = (now() - rec.finished_at).total_seconds() if rec.finished_at else 0.0
        wait = restart.remaining(delay, since)
        ctx.spawn(exits.restart_later(ctx, cid, delay, wait=wait), f"containers.restart.{cid[:12]}")
    elif step is Step.RESTART_NOW:
        ctx.store.transition(cid, Status.RESTARTING)
        delay = restart.INITIAL_DELAY
        ctx.spawn(exits.restart_later(ctx, cid, delay, wait=delay), f"containers.restart.{cid[:12]}")


def _run_of(ctx: Context, rec: ContainerRecord) -> Run:
    started_ns = int(rec.started_at.timestamp() * 1e9) if rec.started_at else time.time_ns()
    run = Run(rec.conmon_pid, started_ns, rec.restart_delay)
    ctx.runs[rec.id] = run
    return run


async def _clean_runtime(ctx: Context, cid: str, paths: ContainerPaths) -> None:
    """What an interrupted start left: the runtime's container, its monitor, its state."""
    state = await ctx.runtime_state(cid)
    log.info("container.interrupted_start_cleaned", id=cid, runtime_status=state.status if state else "")
    monitor_pid = ctx.monitor.read_pid(paths.conmon_pidfile)
    await ctx.kill_all(cid, "interrupted start")
    if monitor_pid and ctx.monitor.is_running(monitor_pid, cid):
        try:
            async with asyncio.timeout(KILL_WAIT):
                await ctx.monitor.wait(monitor_pid)
        except TimeoutError:
            log.warning("container.monitor_did_not_exit", id=cid, pid=monitor_pid)
    await ctx.delete_runtime_state(cid, "interrupted start")


async def _remove_strays(ctx: Context, known: set[str]) -> None:
    """Runtime state or directories with no record (e.g. killed between mkdir and insert)."""
    for cid in ctx.runtime.list_ids():
        if cid not in known and "-" not in cid:
            log.warning("container.stray_runtime_state", id=cid)
            await ctx.kill_all(cid, "stray")
            await ctx.delete_runtime_state(cid, "stray")
    root = ctx.settings.data_root / "containers"
    if root.exists():
        for d in root.iterdir():
            if d.name not in known:
                log.warning("container.stray_directory", path=str(d))
                await asyncio.to_thread(bundle.remove, ContainerPaths(d))
    if ctx.monitor.socket_dir.exists():
        for link in ctx.monitor.socket_dir.iterdir():
            if link.is_symlink() and not link.exists():
                link.unlink()
