"""Starting a created or exited container: monitor launch → RUNNING → network attach → runtime start.

A failed launch leaves no runtime state or mount and keeps the reason and Docker's exit code on the
record; a failure after the launch kills what was created (the watcher then records the exit).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import agent.log
from agent.containers import execs, exits
from agent.containers.context import Context
from agent.containers.health import run_health_checks
from agent.containers.lifecycle import Phase, Run
from agent.containers.seams import NetworkOptions
from agent.errors import AgentError, Conflict
from agent.runtime import bundle
from agent.runtime.monitor import ConmonJob
from agent.runtime.oci import start_error_exit_code
from agent.state.containers import ACTIVE, ContainerRecord, Status, now

log = agent.log.get(__name__)

PreStart = Callable[[], Awaitable[None]]


async def start_locked(
    ctx: Context,
    cid: str,
    *,
    pre_start: PreStart | None = None,
    restarting: bool = False,
    delay: float = 0.0,
) -> ContainerRecord:
    """Start a created or exited container; `delay` is the restart back-off that led to this run
    (0 for a start the user asked for, which resets the back-off). The caller holds the lock."""
    rec = ctx.store.get(cid)
    if rec.status in ACTIVE:
        return rec
    if rec.status not in (Status.CREATED, Status.EXITED, Status.RESTARTING):
        raise Conflict(f"container {rec.name} is {rec.status} and cannot be started")
    opts = ctx.options(rec)
    paths = ctx.paths(cid)
    await exits.released(ctx, cid)
    await ctx.runtime.delete(cid, force=True)
    await asyncio.to_thread(bundle.mount_rootfs, paths, [Path(p) for p in rec.lowerdirs])
    job = ConmonJob(
        container_id=cid,
        cuuid=cid,
        name=rec.name,
        bundle=paths.root,
        persist_dir=paths.run,
        log_path=paths.log,
        pidfile=paths.pidfile,
        conmon_pidfile=paths.conmon_pidfile,
        log_size_max=ctx.settings.log_max_size,
        terminal=opts.tty,
        stdin=opts.stdin_open,
    )
    started_ns = time.time_ns()
    try:
        launched = await ctx.monitor.launch(job)
    except AgentError as exc:
        await _after_failed_launch(ctx, rec, exc)
        raise
    run = Run(launched.conmon_pid, started_ns, delay)
    ctx.runs[cid] = run
    health = opts.health is not None and not opts.health.disabled
    rec = ctx.store.transition(
        cid,
        Status.RUNNING,
        pid=launched.pid,
        conmon_pid=launched.conmon_pid,
        started_at=datetime.fromtimestamp(started_ns / 1e9, UTC),
        boot_id=ctx.boot_id,
        error="",
        oom_killed=False,
        stopped_by_user=False if not restarting else rec.stopped_by_user,
        paused_by="",
        restart_delay=delay,
        health_status="starting" if health else "",
        health_failing_streak=0,
    )
    ctx.spawn(exits.watch(ctx, cid, run), f"containers.watch.{cid[:12]}")
    try:
        if ctx.network is not None and ctx.uses_network(opts):
            await ctx.network.attach(
                cid,
                f"/proc/{launched.pid}/ns/net",
                NetworkOptions(
                    opts.network, rec.name, rec.hostname, opts.ip, opts.network_aliases, opts.publish
                ),
            )
        if pre_start is not None:
            await pre_start()
        await ctx.runtime.start(cid)
    except BaseException as exc:
        await ctx.kill_all(cid, "start failed")  # the watcher records the exit
        if isinstance(exc, AgentError):
            try:
                ctx.store.update(cid, error=str(exc))
            except AgentError as update_exc:
                log.warning("container.start_error_not_recorded", id=cid, error=str(update_exc))
        raise
    ctx.event("start", rec)
    await ctx.notify()
    if opts.health is not None and health:
        checks = run_health_checks(execs.HealthProbe(ctx), cid, run.event(Phase.EXITED), opts.health)
        ctx.spawn(checks, f"containers.health.{cid[:12]}")
    log.info("container.started", id=cid, pid=launched.pid)
    return rec


async def _after_failed_launch(ctx: Context, rec: ContainerRecord, exc: AgentError) -> None:
    """The monitor/runtime create failed: nothing runs; leave no runtime state or mount, keep the reason."""
    await ctx.delete_runtime_state(rec.id, "failed start")
    await asyncio.to_thread(bundle.unmount_rootfs, ctx.paths(rec.id))
    ctx.store.update(rec.id, error=str(exc), exit_code=start_error_exit_code(exc), finished_at=now())
    if rec.status is Status.RESTARTING:
        ctx.store.transition(rec.id, Status.EXITED)
    await ctx.notify()
