"""Removing a container's every trace: runtime state, rootfs mount, files, record, anonymous volumes.

Shared by `rm`, `--rm` after an exit, prune and start-up reconcile; the caller holds the container's lock.
"""

from __future__ import annotations

import asyncio

import agent.log
from agent.containers.context import Context
from agent.errors import AgentError, NotFound
from agent.runtime import bundle
from agent.runtime.options import MountType
from agent.state.containers import ContainerRecord, Status

log = agent.log.get(__name__)


async def remove_locked(ctx: Context, rec: ContainerRecord, *, volumes: bool) -> None:
    """Remove a container that does not run; a failure leaves it DEAD (`rm -f` retries) and raises."""
    cid = rec.id
    rec = ctx.store.transition(cid, Status.REMOVING)
    try:
        if cid not in ctx.releases:  # else the pending release deletes the runtime's state
            await ctx.runtime.delete(cid, force=True)
        await asyncio.to_thread(bundle.remove, ctx.paths(cid))
        ctx.clean_socket_link(cid)
    except (AgentError, OSError) as exc:
        ctx.store.transition(cid, Status.DEAD, error=f"removal failed: {exc}")
        raise
    ctx.store.delete(cid)
    ctx.runs.pop(cid, None)
    if volumes:
        for m in ctx.options(rec).mounts:
            if m.type is MountType.VOLUME:
                try:
                    vol = ctx.volumes.get(m.source)
                except NotFound:
                    continue
                if vol.anonymous and not ctx.view.volume_users(vol.name):
                    ctx.volumes.remove(vol.name, force=True)
    ctx.event("destroy", rec)
    log.info("container.removed", id=cid)
    await ctx.notify()


async def discard(ctx: Context, cid: str, anonymous: list[str]) -> None:
    """Undo a create completely (failed, or interrupted by the agent's death): runtime state, mount,
    files, record, and the anonymous volumes it made. Each step runs whatever the others did."""
    await ctx.delete_runtime_state(cid, "discard")
    await asyncio.to_thread(bundle.remove, ctx.paths(cid))
    ctx.store.delete(cid)
    for v in anonymous:
        try:
            ctx.volumes.remove(v, force=True)
        except AgentError as exc:
            log.warning("container.volume_cleanup_failed", id=cid, volume=v, error=str(exc))
    ctx.locks.pop(cid, None)
