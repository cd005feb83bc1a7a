"""Switching a release's containers between revisions, through ContainerManager's public verbs only.

One function serves Activate, the agent's own revert and Rollback: `switch` brings the target revision's
containers up (creating any that are missing from the stored spec, starting them in depends_on order) and
stops every other running container of the release — stop-first (others stopped first, the default) or
start-first. Stopped containers are kept, so going back is a start, not a pull. Everything here is
idempotent: an agent killed mid-switch simply switches again at its next start.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import agent.log
from agent.containers.manager import ContainerManager
from agent.errors import AgentError, AlreadyExists, FailedPrecondition, NotFound
from agent.releases import spec as specs
from agent.releases.spec import LABEL_CONTAINER, LABEL_RELEASE, LABEL_REVISION
from agent.releases.store import Revision
from agent.releases.verify import RECHECK, Observed, Wakeup
from agent.runtime.options import MountSpec
from agent.state.containers import ACTIVE, ContainerRecord, Status
from agent.state.events import EventLog

log = agent.log.get(__name__)

UP = ACTIVE | {Status.RESTARTING}


def release_containers(containers: ContainerManager, release: str) -> list[ContainerRecord]:
    return [r for r in containers.list_containers(all_=True) if r.labels.get(LABEL_RELEASE) == release]


def revision_of(rec: ContainerRecord) -> int:
    try:
        return int(rec.labels.get(LABEL_REVISION, "0"))
    except ValueError:
        return 0


def _find(containers: ContainerManager, name: str) -> ContainerRecord | None:
    try:
        return containers.find(name)
    except NotFound:
        return None


def observe(containers: ContainerManager, revision: Revision) -> list[Observed]:
    """What verification looks at: each container of the revision, by the name the agent gave it."""
    out = []
    for c in revision.containers:
        rec = _find(containers, specs.container_name(revision.release, c.name, revision.number))
        if rec is None or rec.labels.get(LABEL_RELEASE) != revision.release:
            out.append(Observed(c.name, ""))
            continue
        out.append(
            Observed(
                c.name,
                str(rec.status),
                rec.health_status,
                f"{rec.started_at.isoformat() if rec.started_at else ''}#{rec.restart_count}",
                _detail(rec),
            )
        )
    return out


def _detail(rec: ContainerRecord) -> str:
    if rec.status in (Status.EXITED, Status.DEAD, Status.RESTARTING):
        text = f"exit code {rec.exit_code}" if rec.exit_code is not None else ""
        if rec.oom_killed:
            text += " (out of memory)"
        if rec.error:
            text += f" ({rec.error[-200:]})"
        return text.strip()
    if rec.health_status in ("unhealthy", "starting") and rec.health_log:
        last = rec.health_log[-1]
        output = " ".join(str(last.get("output", "")).split())[-200:]
        streak = f"failed {rec.health_failing_streak} times, " if rec.health_failing_streak else ""
        return f"{streak}last exit code {last.get('exit_code')}{': ' + output if output else ''}"
    return ""


async def _ready(
    containers: ContainerManager, events: EventLog, rec: ContainerRecord, name: str, timeout: float
) -> None:
    """Wait until a dependency runs and, with a health check, is healthy (depends_on)."""
    deadline = time.monotonic() + timeout
    async with Wakeup(events, lambda e: e.type == "container" and e.actor_id == rec.id) as wakeup:
        while True:
            now = containers.find(rec.id)
            if now.status is Status.RUNNING and now.health_status in ("", "healthy"):
                return
            if now.status in (Status.EXITED, Status.DEAD):
                raise FailedPrecondition(f"{name} (a dependency) exited: {_detail(now)}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise FailedPrecondition(f"{name} (a dependency) was not healthy within {timeout:g}s")
            await wakeup.wait(min(RECHECK, left))


# called before a container of a revision is created or started: writes its secret files (again) and
# returns the mounts the agent adds to it (secrets, the update-lock directory)
Prepare = Callable[[Revision, specs.ContainerSpec, str], tuple[MountSpec, ...]]


async def bring_up(
    containers: ContainerManager,
    events: EventLog,
    revision: Revision,
    ready_timeout: float,
    prepare: Prepare | None = None,
) -> None:
    """Create what is missing and start what is not running, dependencies first (ready before dependents)."""
    needed = {d for c in revision.containers for d in c.depends_on}
    for c in specs.start_order(revision.containers):
        opts = specs.run_options(revision.release, revision.number, c)
        if prepare is not None:
            extra = await asyncio.to_thread(prepare, revision, c, opts.name)
            opts = replace(opts, mounts=(*opts.mounts, *extra))
        rec = _find(containers, opts.name)
        if rec is not None and rec.labels.get(LABEL_RELEASE) != revision.release:
            raise AlreadyExists(
                f"container name {opts.name} is taken by a container that is not part of release"
                f" {revision.release}; rename or remove it"
            )
        if rec is not None and rec.status in (Status.DEAD, Status.REMOVING, Status.CREATING):
            await containers.remove(rec.id, force=True)
            rec = None
        if rec is None:
            rec = await containers.create(opts)
            log.info("release.container_created", release=revision.release, revision=revision.number,
                     container=c.name, id=rec.id)  # fmt: skip
        if rec.status not in UP:
            rec = await containers.start_container(rec.id)
        if c.name in needed:
            await _ready(containers, events, rec, c.name, ready_timeout)


async def stop_others(containers: ContainerManager, release: str, keep: int) -> None:
    """Stop (keep) every running container of the release that is not of revision `keep`, in parallel."""
    doomed = [r for r in release_containers(containers, release) if revision_of(r) != keep and r.status in UP]
    results = await asyncio.gather(*(containers.stop_container(r.id) for r in doomed), return_exceptions=True)
    for result in results:
        if isinstance(result, NotFound):
            continue  # removed meanwhile: stopped enough
        if isinstance(result, BaseException):
            raise result


async def switch(
    containers: ContainerManager,
    events: EventLog,
    target: Revision,
    *,
    start_first: bool,
    ready_timeout: float,
    prepare: Prepare | None = None,
) -> None:
    """Run exactly `target`'s containers of the release (others stopped and kept)."""
    if start_first:
        await bring_up(containers, events, target, ready_timeout, prepare)
        await stop_others(containers, target.release, target.number)
    else:
        await stop_others(containers, target.release, target.number)
        await bring_up(containers, events, target, ready_timeout, prepare)


async def stop_revision(containers: ContainerManager, release: str, number: int) -> None:
    """Stop (keep) the containers of one revision (a failed one with nothing to go back to)."""
    doomed = [
        r for r in release_containers(containers, release) if revision_of(r) == number and r.status in UP
    ]
    await asyncio.gather(*(containers.stop_container(r.id) for r in doomed))


async def remove_except(containers: ContainerManager, release: str, keep: Iterable[int]) -> list[str]:
    """Remove the release's containers of every revision not in `keep` (after a Commit); failures are
    logged and left for the next Commit."""
    kept = set(keep)
    removed = []
    for rec in release_containers(containers, release):
        if revision_of(rec) in kept:
            continue
        try:
            await containers.remove(rec.id, force=True)
            removed.append(rec.name)
        except AgentError as exc:
            log.warning(
                "release.container_remove_failed", release=release, container=rec.name, error=str(exc)
            )
    return removed


def container_label(rec: ContainerRecord) -> str:
    return rec.labels.get(LABEL_CONTAINER, rec.name)
