"""ContainerManager: the container lifecycle as users see it — a facade over one module per job.

    create.py     validate → image → volumes → record → bundle (rollback in one place)
    start.py      monitor launch → RUNNING → network attach → runtime start
    exits.py      watch → decide (pure `decide_exit`) → record → release → `--rm` / policy restart
    control.py    stop, restart, kill, pause, unpause, rm, prune (removal.py: every trace of one)
    streams.py    run, attach, wait, logs
    execs.py      exec (under a monitor, or in the foreground) and health-check execs
    reconcile.py  agent start-up: (stored status × what runs × exit file) → steps (pure `plan`)

This class resolves references, holds each container's lock around the verbs that change it, and
owns the agent-level start and stop. Stored statuses obey `agent.state.containers`; a run's in-memory
phases obey `lifecycle.py`. The runtime and the monitor are passed in (`agent/daemon.py`; fakes in
tests), so every module can be exercised without root.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import agent.log
from agent.containers import control, create, execs, reconcile, streams
from agent.containers import start as starting
from agent.containers.context import KILL_WAIT, ContainerSettings, Context, boot_id
from agent.containers.io import Event, Input
from agent.containers.seams import ImageSource, NetworkAttacher, NetworkOptions, RunGate
from agent.containers.volumes import VolumeManager
from agent.errors import Conflict, FailedPrecondition, NotFound
from agent.reaper import Reaper
from agent.runtime import host, logs
from agent.runtime.bundle import ContainerPaths
from agent.runtime.options import RunOptions, parse_signal
from agent.runtime.procinfo import table
from agent.runtime.protocols import Monitor, Runtime
from agent.runtime.spec import HostFacts
from agent.state.containers import ACTIVE, ContainerRecord, ContainerStore, Status
from agent.state.db import Database
from agent.state.events import EventLog

__all__ = ["ContainerManager", "ContainerSettings", "NetworkOptions"]

log = agent.log.get(__name__)


class ContainerManager:
    def __init__(
        self,
        settings: ContainerSettings,
        db: Database,
        images: ImageSource,
        events: EventLog,
        volumes: VolumeManager,
        *,
        runtime: Runtime,
        monitor: Monitor,
        network: NetworkAttacher | None = None,
        host_facts: HostFacts | None = None,
        gate: RunGate | None = None,
    ) -> None:
        self.ctx = Context(
            settings,
            ContainerStore(db),
            images=images,
            events=events,
            volumes=volumes,
            runtime=runtime,
            monitor=monitor,
            network=network,
            host=host_facts or host.probe(),
            boot=boot_id(),
        )
        self.ctx.gate = gate
        self._reaper = Reaper()

    # ---- lookups (also used by the API edge, commit, cp, stats) --------------------------------------

    @property
    def settings(self) -> ContainerSettings:
        return self.ctx.settings

    @property
    def network(self) -> NetworkAttacher | None:
        return self.ctx.network

    def paths(self, container_id: str) -> ContainerPaths:
        return self.ctx.paths(container_id)

    def options(self, rec: ContainerRecord) -> RunOptions:
        return self.ctx.options(rec)

    def find(self, ref: str) -> ContainerRecord:
        return self.ctx.store.find(ref)

    def list_containers(self, *, all_: bool = True) -> list[ContainerRecord]:
        return self.ctx.view.list_containers(all_=all_)

    def counts(self) -> tuple[int, int]:
        return self.ctx.view.counts()

    # ---- agent lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt running containers, record exits that happened while down, clean half-done work."""
        self._reaper.start()
        self.ctx.rotations = logs.Rotations(self.ctx.settings.log_max_files)
        await reconcile.reconcile(self.ctx)

    async def stop(self) -> None:
        """Stop watching; containers keep running under their monitors and are re-adopted at the next
        start. Pending releases get a moment to finish; every other task is cancelled."""
        ctx = self.ctx
        ctx.closing = True
        if ctx.releases:
            await asyncio.wait(list(ctx.releases.values()), timeout=KILL_WAIT)
        tasks = list(ctx.tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass  # what we asked for
            except Exception as exc:
                log.warning("containers.task_failed_at_stop", task=t.get_name(), error=repr(exc))
        if ctx.rotations is not None:
            ctx.rotations.close()
            ctx.rotations = None
        self._reaper.stop()

    # ---- verbs -----------------------------------------------------------------------------------

    async def create(self, opts: RunOptions) -> ContainerRecord:
        return await create.create(self.ctx, opts)

    async def start_container(
        self, ref: str, *, pre_start: starting.PreStart | None = None
    ) -> ContainerRecord:
        rec = self.find(ref)
        await self._admit(rec)
        return await streams.start(self.ctx, rec.id, pre_start)

    async def _admit(self, rec: ContainerRecord) -> None:
        """Ask the run gate (the trust policy) before a stopped container's image runs again."""
        if self.ctx.gate is not None and rec.status not in ACTIVE:
            await self.ctx.gate.check(rec.image, rec.image_digest)

    async def stop_container(self, ref: str, timeout: int | None = None) -> ContainerRecord:
        cid = self.find(ref).id
        async with self.ctx.lock(cid):
            return await control.stop_locked(self.ctx, cid, timeout)

    async def restart_container(self, ref: str, timeout: int | None = None) -> ContainerRecord:
        rec = self.find(ref)
        cid = rec.id
        if self.ctx.gate is not None:  # refused before anything stops
            await self.ctx.gate.check(rec.image, rec.image_digest)
        async with self.ctx.lock(cid):
            rec = await control.restart_locked(self.ctx, cid, timeout)
        self.ctx.event("restart", rec)
        return rec

    async def kill(self, ref: str, sig: str = "SIGKILL") -> ContainerRecord:
        number = parse_signal(sig or "SIGKILL")
        cid = self.find(ref).id
        async with self.ctx.lock(cid):
            return await control.kill_locked(self.ctx, cid, number)

    async def pause(self, ref: str, *, by: str = "user") -> ContainerRecord:
        """Freeze a running container; `by` is "user" or "commit" (thawed at start-up if the agent dies)."""
        cid = self.find(ref).id
        async with self.ctx.lock(cid):
            return await control.pause_locked(self.ctx, cid, by)

    async def unpause(self, ref: str) -> ContainerRecord:
        cid = self.find(ref).id
        async with self.ctx.lock(cid):
            return await control.unpause_locked(self.ctx, cid)

    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> str:
        cid = self.find(ref).id
        async with self.ctx.lock(cid):
            await control.remove_locked(self.ctx, cid, force=force, volumes=volumes)
        self.ctx.locks.pop(cid, None)
        return cid

    async def prune(self) -> list[str]:
        removed = []
        for rec in control.prunable(self.ctx):
            try:
                removed.append(await self.remove(rec.id, force=rec.status is Status.DEAD))
            except (NotFound, Conflict) as exc:
                control.prune_skipped(rec.id, exc)
        return removed

    async def wait(self, ref: str, condition: str = "not-running") -> tuple[int, str]:
        return await streams.wait(self.ctx, self.find(ref), condition)

    # ---- streams ---------------------------------------------------------------------------------

    async def run(
        self,
        opts: RunOptions,
        inputs: AsyncIterator[Input] | None,
        *,
        detach: bool,
        size: tuple[int, int] = (0, 0),
    ) -> AsyncIterator[Event]:
        """`docker run`: create, start and (unless detached) stream output until the exit code."""
        events = streams.run(self.ctx, opts, inputs, detach=detach, size=size)
        async with contextlib.aclosing(events):
            async for ev in events:
                yield ev

    async def attach(
        self, ref: str, inputs: AsyncIterator[Input] | None, *, start: bool, size: tuple[int, int] = (0, 0)
    ) -> AsyncIterator[Event]:
        """Stream a run's output (and feed its stdin) until it exits; with `start`, start it first."""
        rec = self.find(ref)
        if start:
            await self._admit(rec)
        events = streams.attach(self.ctx, rec, inputs, start_it=start, size=size)
        async with contextlib.aclosing(events):
            async for ev in events:
                yield ev

    async def exec(
        self,
        ref: str,
        args: tuple[str, ...],
        *,
        env: tuple[str, ...] = (),
        user: str = "",
        workdir: str = "",
        tty: bool = False,
        interactive: bool = False,
        inputs: AsyncIterator[Input] | None = None,
        detach: bool = False,
        size: tuple[int, int] = (0, 0),
    ) -> AsyncGenerator[Event, None]:
        """Run a process in a running container; ends with its exit code."""
        req = execs.ExecRequest(args, env, user, workdir, tty, interactive, detach, size)
        events = execs.exec_(self.ctx, self.find(ref), req, inputs)
        async with contextlib.aclosing(events):
            async for ev in events:
                yield ev

    async def top(self, ref: str) -> tuple[list[str], list[list[str]]]:
        rec = self.find(ref)
        if rec.status not in ACTIVE:
            raise FailedPrecondition(f"container {rec.name} is not running")
        pids = await self.ctx.runtime.pids(rec.id)
        return await asyncio.to_thread(table, pids)

    async def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> AsyncIterator[logs.LogEntry]:
        entries = streams.logs(
            self.ctx, self.find(ref), follow=follow, tail=tail, since_ns=since_ns, until_ns=until_ns
        )
        async for e in entries:
            yield e
