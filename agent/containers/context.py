"""What the container modules share: settings, store, collaborators, and per-agent in-memory state.

One `Context` per agent, built by the facade (`manager.py`). The modules (create, start, exits, control,
streams, exec, reconcile) are functions over it, so each can be read, changed and tested on its own.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agent.log
from agent.containers.lifecycle import Run
from agent.containers.seams import ImageSource, NetworkAttacher, RunGate
from agent.containers.view import ContainerView
from agent.containers.volumes import VolumeManager
from agent.errors import AgentError
from agent.runtime import logs
from agent.runtime.bundle import ContainerPaths
from agent.runtime.oci import RuntimeState
from agent.runtime.options import RunOptions, options_from_dict, parse_signal
from agent.runtime.protocols import Monitor, Runtime
from agent.runtime.spec import HostFacts
from agent.state.containers import ContainerRecord, ContainerStore
from agent.state.events import EventLog

log = agent.log.get(__name__)

KILL_WAIT = 10.0
UNKNOWN_EXIT = 255


@dataclass(frozen=True)
class ContainerSettings:
    data_root: Path
    exec_root: Path
    runtime: str = "runc"
    cgroup_parent: str = "/dockyard"
    log_max_size: int = 10 * 1024 * 1024
    log_max_files: int = 3
    stop_timeout: int = 10


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class Context:
    def __init__(
        self,
        settings: ContainerSettings,
        store: ContainerStore,
        *,
        images: ImageSource,
        events: EventLog,
        volumes: VolumeManager,
        runtime: Runtime,
        monitor: Monitor,
        network: NetworkAttacher | None,
        host: HostFacts,
        boot: str,
    ) -> None:
        self.settings = settings
        self.store = store
        self.view = ContainerView(store.db)
        self.images = images
        self.events = events
        self.volumes = volumes
        self.runtime = runtime
        self.monitor = monitor
        self.network = network
        self.host = host
        self.boot_id = boot
        self.locks: dict[str, asyncio.Lock] = {}
        self.runs: dict[str, Run] = {}
        self.changed = asyncio.Condition()  # notified on every recorded status change users wait for
        self.tasks: set[asyncio.Task[Any]] = set()
        self.releases: dict[str, asyncio.Task[None]] = {}  # pending `runtime delete` after an exit
        self.closing = False  # the agent is stopping: no policy restarts
        self.rotations: logs.Rotations | None = None
        self.gate: RunGate | None = None  # asked before an image runs (the trust policy)

    def paths(self, container_id: str) -> ContainerPaths:
        return ContainerPaths.of(self.settings.data_root, container_id)

    def lock(self, container_id: str) -> asyncio.Lock:
        return self.locks.setdefault(container_id, asyncio.Lock())

    def spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        """A background task the agent's stop cancels; a failure is logged, not lost."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("containers.task_failed", task=task.get_name(), error=repr(task.exception()))

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def event(self, action: str, rec: ContainerRecord, **attrs: Any) -> None:
        base = {"name": rec.name, "image": rec.image, **rec.labels}
        self.events.append("container", action, rec.id, {**base, **{k: str(v) for k, v in attrs.items()}})

    def options(self, rec: ContainerRecord) -> RunOptions:
        return options_from_dict(rec.options)

    def stop_signal(self, rec: ContainerRecord) -> int:
        opts = self.options(rec)
        return parse_signal(opts.stop_signal) if opts.stop_signal else int(signal.SIGTERM)

    def uses_network(self, opts: RunOptions) -> bool:
        """Whether runs of a container with `opts` are attached to (and detached from) a network."""
        return self.network is not None and opts.network not in ("none", "host")

    async def runtime_state(self, cid: str) -> RuntimeState | None:
        """The runtime's view of `cid`; None when it has none or cannot tell (logged)."""
        try:
            return await self.runtime.state(cid)
        except AgentError as exc:
            log.warning("container.runtime_state_unknown", id=cid, error=str(exc))
            return None

    async def kill_all(self, cid: str, why: str) -> None:
        """SIGKILL every process of `cid`; one that is already gone is not an error (logged)."""
        try:
            await self.runtime.kill(cid, signal.SIGKILL, all_processes=True)
        except AgentError as exc:
            log.info("container.kill_skipped", id=cid, why=why, error=str(exc))

    async def delete_runtime_state(self, cid: str, why: str) -> None:
        """`runtime delete --force`, where a failure leaves nothing worse behind than before (logged)."""
        try:
            await self.runtime.delete(cid, force=True)
        except AgentError as exc:
            log.warning("container.runtime_delete_failed", id=cid, why=why, error=str(exc))

    def clean_socket_link(self, cuuid: str) -> None:
        """The monitor's attach-socket link for a container or exec session (absent is fine)."""
        try:
            (self.monitor.socket_dir / cuuid).unlink()
        except FileNotFoundError:
            pass  # never made (no terminal) or already gone

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(32)
