"""ContainerManager: the container lifecycle as users see it, on top of spec/bundle/conmon/runc.

Owns `<data_root>/containers`, the `containers_*` tables and the per-container runtime state. Every
status change is a checked transition in `agent.state.containers`. Concurrency model:

* user operations on one container (start, stop, restart, kill, rm) hold that container's lock;
* each run has a watcher task waiting on conmon's pidfd; when conmon ends it records the exit without
  taking the lock (stop/rm wait for it while holding theirs), then hands auto-removal or a policy
  restart to a separate task that does take the lock;
* `start()` (agent start-up) reconciles the database with runc and conmon's exit files before serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import agent.log
from agent.containers import names, restart
from agent.containers.foreground_exec import ForegroundExec
from agent.containers.health import run_health_checks
from agent.containers.io import (
    Event,
    Exited,
    Input,
    Output,
    Started,
    output_events,
    relay,
)
from agent.containers.volumes import VolumeManager
from agent.errors import (
    AgentError,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    RuntimeCommand,
)
from agent.reaper import Reaper
from agent.runtime import attach as attach_fifo
from agent.runtime import bundle, host, logs, monitor, procinfo
from agent.runtime.attach import AttachSession
from agent.runtime.bundle import ContainerPaths
from agent.runtime.monitor import Conmon, ConmonJob, ExitInfo
from agent.runtime.oci import OciRuntime
from agent.runtime.options import (
    MountSpec,
    MountType,
    RestartMode,
    RunOptions,
    check_mounts,
    check_name,
    options_from_dict,
    options_to_dict,
    parse_signal,
)
from agent.runtime.spec import HostFacts, ImageConfig, SpecInputs, build_spec, exec_process, resolve_process
from agent.runtime.users import resolve_in_root
from agent.state.containers import ACTIVE, ContainerRecord, ContainerStore, Status, now
from agent.state.db import Database
from agent.state.events import EventLog

log = agent.log.get(__name__)

KILL_WAIT = 10.0
UNKNOWN_EXIT = 255


class ImageSource(Protocol):
    """The images area: `record.digest`, the OCI image config dict, overlay lowerdirs (top first)."""

    async def resolve_for_run(self, ref: str) -> tuple[Any, dict[str, Any], list[Path]]: ...


class NetworkAttacher(Protocol):
    """The seam for bridge networking (agent/network plugs in here).

    `etc_files` is called at create for the /etc files to bind-mount (container path → host file);
    `attach` once per run with the new network namespace (`/proc/<pid>/ns/net`, runc created it, the
    process has not started yet); `detach` when the run ends and at removal (idempotent).
    """

    def etc_files(self, container_id: str, hostname: str) -> dict[str, str]: ...

    async def attach(self, container_id: str, netns_path: str, options: NetworkOptions) -> None: ...

    async def detach(self, container_id: str) -> None: ...

    # >>> network (agent/network): published ports for ps/inspect, as "0.0.0.0:32768->80/tcp"
    def ports(self, container_id: str) -> list[str]: ...

    # the /etc files of another container, for `--network container:OTHER`
    def etc_files_of(self, other_container_id: str) -> dict[str, str] | None: ...

    # <<< network


@dataclass(frozen=True)
class NetworkOptions:
    network: str
    name: str
    hostname: str
    # >>> network (agent/network)
    ip: str = ""
    aliases: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    # <<< network


@dataclass(frozen=True)
class ContainerSettings:
    data_root: Path
    exec_root: Path
    runtime: str = "runc"
    cgroup_parent: str = "/dockyard"
    log_max_size: int = 10 * 1024 * 1024
    log_max_files: int = 3
    stop_timeout: int = 10


@dataclass
class RunState:
    """In-memory state of one run (one conmon): lets waiters, followers and stop/rm synchronise."""

    conmon_pid: int
    started_ns: int
    conmon_exited: asyncio.Event = field(default_factory=asyncio.Event)
    recorded: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    readers: int = 0
    readers_done: asyncio.Event = field(default_factory=asyncio.Event)
    exit: Exited | None = None
    delay: float = 0.0  # the restart back-off that led to this run


def exit_code_for_start_error(message: str) -> int:
    """Docker's codes when the command cannot run: 127 not found, 126 not executable, else 128."""
    lowered = message.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return 127
    if "permission denied" in lowered:
        return 126
    return 128


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


class ContainerManager:
    def __init__(
        self,
        settings: ContainerSettings,
        db: Database,
        images: ImageSource,
        events: EventLog,
        volumes: VolumeManager,
        *,
        network: NetworkAttacher | None = None,
        host_facts: HostFacts | None = None,
    ) -> None:
        self.settings = settings
        self.store = ContainerStore(db)
        self.images = images
        self.events = events
        self.volumes = volumes
        self.network = network
        self.host = host_facts or host.probe()
        self.runtime = OciRuntime(settings.runtime, settings.exec_root / settings.runtime)
        self.conmon = Conmon(self.runtime, settings.exec_root / "s")
        self.boot_id = boot_id()
        self._locks: dict[str, asyncio.Lock] = {}
        self._runs: dict[str, RunState] = {}
        self._changed = asyncio.Condition()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._releases: dict[str, asyncio.Task[None]] = {}  # pending `runc delete` after an exit
        self._closing = False
        self._rotations: logs.Rotations | None = None
        self._reaper = Reaper()
        volumes.users_of = self.volume_users

    # ---- helpers ---------------------------------------------------------------------------------

    def paths(self, container_id: str) -> ContainerPaths:
        return ContainerPaths.of(self.settings.data_root, container_id)

    def _lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def _spawn(self, coro: Awaitable[Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("containers.task_failed", task=task.get_name(), error=repr(task.exception()))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _event(self, action: str, rec: ContainerRecord, **attrs: Any) -> None:
        base = {"name": rec.name, "image": rec.image, **rec.labels}
        self.events.append("container", action, rec.id, {**base, **{k: str(v) for k, v in attrs.items()}})

    def options(self, rec: ContainerRecord) -> RunOptions:
        return options_from_dict(rec.options)

    def find(self, ref: str) -> ContainerRecord:
        return self.store.find(ref)

    def list_containers(self, *, all_: bool = True) -> list[ContainerRecord]:
        records = self.store.all()
        return records if all_ else [r for r in records if r.status in ACTIVE | {Status.RESTARTING}]

    def counts(self) -> tuple[int, int]:
        records = self.store.all()
        return len(records), sum(1 for r in records if r.status in ACTIVE)

    def image_digests_in_use(self) -> set[str]:
        return self.store.image_digests()

    def volume_users(self, volume: str) -> list[str]:
        users = []
        for rec in self.store.all():
            for m in rec.options.get("mounts", ()):
                if m.get("type") == "volume" and m.get("source") == volume:
                    users.append(rec.id)
        return users

    # ---- agent lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt running containers, record exits that happened while down, clean half-done work."""
        self._reaper.start()
        self._rotations = logs.Rotations(self.settings.log_max_files)
        await self._reconcile()

    async def stop(self) -> None:
        """Stop watching; containers keep running under conmon and are re-adopted at the next start."""
        self._closing = True
        if self._releases:
            await asyncio.wait(list(self._releases.values()), timeout=KILL_WAIT)
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._rotations is not None:
            self._rotations.close()
            self._rotations = None
        self._reaper.stop()

    # ---- create ------------------------------------------------------------------------------------

    def _validate(self, opts: RunOptions) -> RunOptions:
        name = check_name(opts.name)
        check_mounts(opts.mounts)
        if opts.auto_remove and opts.restart.mode is not RestartMode.NO:
            raise InvalidArgument("--rm and --restart cannot be combined")
        network = opts.network or ("bridge" if self.network is not None else "none")
        if network not in ("none", "host") and self.network is None:
            raise InvalidArgument(
                f"network mode {network!r} is not available on this agent (use none or host)"
            )
        for m in opts.mounts:
            if m.type is MountType.BIND and not os.path.exists(m.source):
                raise InvalidArgument(f"invalid mount: bind source path does not exist: {m.source}")
        if opts.stop_signal:
            parse_signal(opts.stop_signal)
        return replace(opts, name=name, network=network)

    async def create(self, opts: RunOptions) -> ContainerRecord:
        self.runtime.ensure_usable()
        opts = self._validate(opts)
        record_, image_config, lowerdirs = await self.images.resolve_for_run(opts.image)
        image = ImageConfig.from_oci(image_config)
        if opts.health is None and image.healthcheck is not None:
            opts = replace(opts, health=image.healthcheck)
        opts = replace(opts, stop_signal=opts.stop_signal or image.stop_signal)
        cid = secrets.token_hex(32)
        name = opts.name or names.generate(self.store.names())
        hostname = opts.hostname or (self.host.hostname if opts.network == "host" else cid[:12])
        anonymous: list[str] = []
        mounts: list[MountSpec] = []
        for m in opts.mounts:
            if m.type is MountType.VOLUME:
                vol = self.volumes.create(m.source)
                if vol.anonymous and not m.source:
                    anonymous.append(vol.name)
                m = replace(m, source=vol.name)
            mounts.append(m)
        opts = replace(opts, name=name, mounts=tuple(mounts))
        command = list(resolve_process(opts, image, hostname).args)
        rec = ContainerRecord(
            id=cid,
            name=name,
            image=opts.image,
            image_digest=str(getattr(record_, "digest", "")),
            options=options_to_dict(opts),
            created_at=now(),
            status=Status.CREATING,
            hostname=hostname,
            labels=dict(opts.labels),
            lowerdirs=[str(p) for p in lowerdirs],
            command=command,
        )
        try:
            self.store.insert(rec)
        except AgentError:
            for v in anonymous:
                self.volumes.remove(v, force=True)
            raise
        try:
            await asyncio.to_thread(self._build_bundle, rec, opts, image, lowerdirs)
            rec = self.store.transition(cid, Status.CREATED)
        except BaseException:
            await asyncio.shield(self._discard(cid, anonymous))
            raise
        self._event("create", rec)
        log.info("container.created", id=cid, name=name, image=opts.image)
        return rec

    def _build_bundle(
        self, rec: ContainerRecord, opts: RunOptions, image: ImageConfig, lowerdirs: list[Path]
    ) -> None:
        paths = self.paths(rec.id)
        bundle.prepare(paths)
        bundle.mount_rootfs(paths, lowerdirs)
        user = resolve_in_root(opts.user or image.user, paths.rootfs)
        # >>> network (agent/network): --network container:OTHER joins OTHER's namespace, shares its files
        netns_path: str | None = None
        if opts.network.startswith("container:"):
            other = self.find(opts.network.split(":", 1)[1])
            if other.status not in ACTIVE or not other.pid:
                raise FailedPrecondition(f"cannot join the network of {other.name}: it is not running")
            netns_path = f"/proc/{other.pid}/ns/net"
            shared = self.network.etc_files_of(other.id) if self.network is not None else None
            etc = shared or bundle.write_etc_files(paths, rec.hostname, host_network=False)
        # <<< network
        elif self.network is not None and opts.network not in ("none", "host"):
            etc = self.network.etc_files(rec.id, rec.hostname)
        else:
            etc = bundle.write_etc_files(paths, rec.hostname, host_network=opts.network == "host")
        volume_sources = {
            m.target: str(self.volumes.get(m.source).mountpoint)
            for m in opts.mounts
            if m.type is MountType.VOLUME
        }
        spec = build_spec(
            opts,
            image,
            self.host,
            SpecInputs(
                container_id=rec.id,
                rootfs=str(paths.rootfs),
                hostname=rec.hostname,
                user=user,
                cgroups_path=f"{self.settings.cgroup_parent.rstrip('/')}/{rec.id}",
                etc_files=etc,
                netns_path=netns_path,  # network (agent/network)
                volume_sources=volume_sources,
            ),
        )
        bundle.write_config(paths, spec)

    async def _discard(self, cid: str, anonymous: list[str]) -> None:
        """Undo a failed create completely: runtime state, mount, files, row, anonymous volumes."""
        with contextlib.suppress(AgentError):
            await self.runtime.delete(cid, force=True)
        await asyncio.to_thread(bundle.remove, self.paths(cid))
        self.store.delete(cid)
        for v in anonymous:
            with contextlib.suppress(AgentError):
                self.volumes.remove(v, force=True)
        self._locks.pop(cid, None)

    # ---- start ---------------------------------------------------------------------------------------

    async def start_container(
        self, ref: str, *, pre_start: Callable[[], Awaitable[None]] | None = None
    ) -> ContainerRecord:
        rec = self.find(ref)
        async with self._lock(rec.id):
            return await self._start_locked(rec.id, pre_start=pre_start)

    async def _start_locked(
        self,
        cid: str,
        *,
        pre_start: Callable[[], Awaitable[None]] | None = None,
        restarting: bool = False,
        delay: float = 0.0,
    ) -> ContainerRecord:
        """Start a created or exited container; `delay` is the restart back-off that led to this run
        (0 for a start the user asked for, which resets the back-off)."""
        rec = self.store.get(cid)
        if rec.status in ACTIVE:
            return rec
        if rec.status not in (Status.CREATED, Status.EXITED, Status.RESTARTING):
            raise Conflict(f"container {rec.name} is {rec.status} and cannot be started")
        opts = self.options(rec)
        paths = self.paths(cid)
        await self._released(cid)
        await self.runtime.delete(cid, force=True)
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
            log_size_max=self.settings.log_max_size,
            terminal=opts.tty,
            stdin=opts.stdin_open,
        )
        started_ns = time.time_ns()
        try:
            launched = await self.conmon.launch(job)
        except AgentError as exc:
            await self._after_failed_start(rec, exc)
            raise
        run = RunState(conmon_pid=launched.conmon_pid, started_ns=started_ns, delay=delay)
        self._runs[cid] = run
        rec = self.store.transition(
            cid,
            Status.RUNNING,
            pid=launched.pid,
            conmon_pid=launched.conmon_pid,
            started_at=datetime.fromtimestamp(started_ns / 1e9, UTC),
            boot_id=self.boot_id,
            error="",
            oom_killed=False,
            stopped_by_user=False if not restarting else rec.stopped_by_user,
            paused_by="",
            restart_delay=delay,
            health_status="starting" if opts.health is not None and not opts.health.disabled else "",
            health_failing_streak=0,
        )
        self._spawn(self._watch(cid, run), f"containers.watch.{cid[:12]}")
        try:
            if self.network is not None and opts.network not in ("none", "host"):
                await self.network.attach(
                    cid,
                    f"/proc/{launched.pid}/ns/net",
                    NetworkOptions(
                        opts.network, rec.name, rec.hostname, opts.ip, opts.network_aliases, opts.publish
                    ),
                )
            if pre_start is not None:
                await pre_start()
            await self.runtime.start(cid)
        except BaseException as exc:
            with contextlib.suppress(AgentError):
                await self.runtime.kill(cid, signal.SIGKILL, all_processes=True)
            if isinstance(exc, AgentError):
                with contextlib.suppress(AgentError):
                    self.store.update(cid, error=str(exc))
            raise
        self._event("start", rec)
        await self._notify()
        if opts.health is not None and not opts.health.disabled:
            self._spawn(run_health_checks(self, cid, run, opts.health), f"containers.health.{cid[:12]}")
        log.info("container.started", id=cid, pid=launched.pid)
        return rec

    async def _after_failed_start(self, rec: ContainerRecord, exc: AgentError) -> None:
        """conmon/runc create failed: nothing runs; leave no runtime state or mount, keep the reason."""
        with contextlib.suppress(AgentError):
            await self.runtime.delete(rec.id, force=True)
        await asyncio.to_thread(bundle.unmount_rootfs, self.paths(rec.id))
        code = exit_code_for_start_error(str(exc))
        self.store.update(rec.id, error=str(exc), exit_code=code, finished_at=now())
        if rec.status is Status.RESTARTING:
            self.store.transition(rec.id, Status.EXITED)
        await self._notify()

    # ---- exits ---------------------------------------------------------------------------------------

    async def _watch(self, cid: str, run: RunState) -> None:
        log_path = self.paths(cid).log
        if self._rotations is not None:
            self._rotations.watch(log_path)
        try:
            await monitor.wait_pid_exit(run.conmon_pid)
            log.debug("container.exit_observed", id=cid)
        finally:
            if self._rotations is not None:
                self._rotations.unwatch(log_path)
        with contextlib.suppress(OSError):
            logs.collect(log_path, self.settings.log_max_files)
        run.conmon_exited.set()
        await self._record_exit(cid, run, monitor.read_exit(self.paths(cid).run))

    async def _record_exit(self, cid: str, run: RunState, info: ExitInfo | None) -> None:
        paths = self.paths(cid)
        message = ""
        if info is None:
            # conmon is gone without an exit file: make sure nothing of the container survives it
            state = await self._safe_state(cid)
            if state is not None and state.status in ("running", "paused", "created"):
                with contextlib.suppress(AgentError):
                    await self.runtime.kill(cid, signal.SIGKILL, all_processes=True)
            code, oom, finished = UNKNOWN_EXIT, False, now()
            message = "the container's monitor (conmon) ended without recording an exit code"
        else:
            code, oom, finished = info.code, info.oom, info.finished_at
            if code < 0:
                code, message = UNKNOWN_EXIT, "conmon could not determine the exit code"
        self._release(cid, run)
        try:
            bundle.unmount_rootfs(paths)  # one umount2 (~0.5 ms): no thread hop on the exit's path
        except AgentError as exc:
            log.warning("container.exit_cleanup_failed", id=cid, error=str(exc))
        if self.network is not None:
            try:
                rec0 = self.store.get(cid)
                if self.options(rec0).network not in ("none", "host"):
                    await self.network.detach(cid)
            except AgentError as exc:
                log.warning("container.network_detach_failed", id=cid, error=str(exc))
        try:
            rec = self.store.get(cid)
        except NotFound:
            run.recorded.set()
            run.finished.set()
            return
        opts = self.options(rec)
        ran_for = (finished - rec.started_at).total_seconds() if rec.started_at else 0.0
        again = restart.should_restart(opts.restart, code, rec.restart_count, rec.stopped_by_user)
        if self._closing:
            again = False
        target = Status.RESTARTING if again else Status.EXITED
        delay = restart.next_delay(run.delay, ran_for) if again else run.delay
        try:
            rec = self.store.transition(
                cid,
                target,
                restart_delay=delay,
                allowed_from=ACTIVE,
                exit_code=code,
                oom_killed=oom,
                finished_at=finished,
                pid=0,
                error=message or rec.error,
                health_status="" if rec.health_status else rec.health_status,
            )
        except Conflict:
            rec = self.store.update(cid, exit_code=code, oom_killed=oom, finished_at=finished, pid=0)
            again = False
        run.exit = Exited(code, oom, message)
        if oom:
            self._event("oom", rec)
        self._event("die", rec, exitCode=code)
        log.info("container.exited", id=cid, exit_code=code, oom=oom, restart=again)
        run.recorded.set()
        await self._notify()
        if opts.auto_remove:
            self._spawn(self._auto_remove(cid, run), f"containers.autoremove.{cid[:12]}")
        elif again:
            self._spawn(self._restart_later(cid, delay), f"containers.restart.{cid[:12]}")
            run.finished.set()
        else:
            run.finished.set()

    def _release(self, cid: str, run: RunState) -> None:
        """`runc delete` of an exited container, once the exit is fully handled (reply sent, `--rm` done).

        Right after a container's last process is reaped the kernel refuses to remove its cgroups for a
        moment and runc retries with a 10 ms back-off: done inline, the delete took ~15 ms of every
        attached run's (and `--rm`'s) reply, and done alongside it competed with it for the CPU. Only a
        new start of the same container needs it done (`_released`); the agent's stop waits for it; an
        agent killed meanwhile deletes the state at its next start (reconcile).
        """

        async def delete() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(KILL_WAIT):
                    await run.finished.wait()
            try:
                await self.runtime.delete(cid, force=True)
            except AgentError as exc:
                log.warning("container.exit_cleanup_failed", id=cid, error=str(exc))

        def forget(task: asyncio.Task[None]) -> None:
            if self._releases.get(cid) is task:
                del self._releases[cid]

        task = self._spawn(delete(), f"containers.release.{cid[:12]}")
        self._releases[cid] = task
        task.add_done_callback(forget)

    async def _released(self, cid: str) -> None:
        """Wait for a pending release of `cid`: a new create needs the runtime's old state gone."""
        task = self._releases.get(cid)
        if task is not None:
            await asyncio.wait([task])

    async def _safe_state(self, cid: str) -> Any:
        try:
            return await self.runtime.state(cid)
        except AgentError:
            return None

    async def _auto_remove(self, cid: str, run: RunState) -> None:
        try:
            if run.readers > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KILL_WAIT):
                        await run.readers_done.wait()
            async with self._lock(cid):
                try:
                    rec = self.store.get(cid)
                except NotFound:
                    return
                if rec.status is Status.EXITED:
                    await self._remove_locked(rec, volumes=True)
        finally:
            run.finished.set()

    async def _restart_later(self, cid: str, delay: float, *, wait: float | None = None) -> None:
        """A policy restart after the back-off `delay` (or what is left of it: `wait`)."""
        await asyncio.sleep(delay if wait is None else wait)
        async with self._lock(cid):
            try:
                rec = self.store.get(cid)
            except NotFound:
                return
            if rec.status is not Status.RESTARTING or rec.stopped_by_user:
                return
            self.store.update(cid, restart_count=rec.restart_count + 1)
            try:
                await self._start_locked(cid, restarting=True, delay=delay)
            except AgentError as exc:
                log.warning("container.restart_failed", id=cid, error=str(exc))
                return
            self._event("restart", self.store.get(cid))

    # ---- stop / kill / restart / rm -------------------------------------------------------------------

    def _stop_signal(self, rec: ContainerRecord) -> int:
        opts = self.options(rec)
        return parse_signal(opts.stop_signal) if opts.stop_signal else int(signal.SIGTERM)

    async def stop_container(self, ref: str, timeout: int | None = None) -> ContainerRecord:
        rec = self.find(ref)
        async with self._lock(rec.id):
            return await self._stop_locked(rec.id, timeout)

    async def _stop_locked(self, cid: str, timeout: int | None) -> ContainerRecord:
        rec = self.store.update(cid, stopped_by_user=True)
        if rec.status is Status.RESTARTING:
            rec = self.store.transition(cid, Status.EXITED)
            await self._notify()
            return rec
        if rec.status not in ACTIVE:
            return rec
        opts = self.options(rec)
        grace = timeout if timeout is not None else (opts.stop_timeout or self.settings.stop_timeout)
        run = self._runs.get(cid)
        if rec.status is Status.PAUSED:
            with contextlib.suppress(AgentError):
                await self.runtime.resume(cid)
        if grace > 0:
            with contextlib.suppress(AgentError):
                await self.runtime.kill(cid, self._stop_signal(rec))
            if run is not None and await _wait_event(run.recorded, grace):
                self._event("stop", rec)
                return self.store.get(cid)
        with contextlib.suppress(AgentError):
            await self.runtime.kill(cid, signal.SIGKILL, all_processes=True)
        if run is not None and not await _wait_event(run.recorded, KILL_WAIT):
            raise FailedPrecondition(f"container {rec.name} did not exit after SIGKILL")
        self._event("stop", rec)
        return self.store.get(cid)

    async def restart_container(self, ref: str, timeout: int | None = None) -> ContainerRecord:
        rec = self.find(ref)
        async with self._lock(rec.id):
            await self._stop_locked(rec.id, timeout)
            self.store.update(rec.id, stopped_by_user=False)
            rec = await self._start_locked(rec.id)
        self._event("restart", rec)
        return rec

    async def kill(self, ref: str, sig: str = "SIGKILL") -> ContainerRecord:
        number = parse_signal(sig or "SIGKILL")
        rec = self.find(ref)
        async with self._lock(rec.id):
            rec = self.store.get(rec.id)
            if rec.status not in ACTIVE:
                raise FailedPrecondition(f"container {rec.name} is not running")
            if number in (signal.SIGKILL, self._stop_signal(rec)):
                self.store.update(rec.id, stopped_by_user=True)
            await self.runtime.kill(rec.id, number, all_processes=number == signal.SIGKILL)
            self._event("kill", rec, signal=number)
            return rec

    async def pause(self, ref: str, *, by: str = "user") -> ContainerRecord:
        """Freeze a running container. `by` ("user" or "commit") is recorded before the freeze, so that
        a pause whose owner died with the agent (a commit) is undone at the next start (`_reconcile`)."""
        rec = self.find(ref)
        async with self._lock(rec.id):
            if self.store.get(rec.id).status is not Status.RUNNING:
                raise FailedPrecondition(f"container {rec.name} is not running")
            self.store.update(rec.id, paused_by=by)
            try:
                await self.runtime.pause(rec.id)
            except BaseException:
                with contextlib.suppress(AgentError):
                    await self.runtime.resume(rec.id)  # a half-done freeze must not stay
                self.store.update(rec.id, paused_by="")
                raise
            rec = self.store.transition(rec.id, Status.PAUSED)
            self._event("pause", rec)
            return rec

    async def unpause(self, ref: str) -> ContainerRecord:
        rec = self.find(ref)
        async with self._lock(rec.id):
            if self.store.get(rec.id).status is not Status.PAUSED:
                raise FailedPrecondition(f"container {rec.name} is not paused")
            await self.runtime.resume(rec.id)
            rec = self.store.transition(rec.id, Status.RUNNING, paused_by="")
            self._event("unpause", rec)
            return rec

    async def _thaw_commit_pause(self, rec: ContainerRecord) -> None:
        """At start-up: a commit froze this container and the agent died before it thawed it."""
        state = await self._safe_state(rec.id)
        if state is not None and state.status == "paused":
            await self.runtime.resume(rec.id)
        if rec.status is Status.PAUSED:
            rec = self.store.transition(rec.id, Status.RUNNING, paused_by="")
            self._event("unpause", rec)
        else:
            self.store.update(rec.id, paused_by="")
        log.info("container.commit_pause_undone", id=rec.id)

    async def remove(self, ref: str, *, force: bool = False, volumes: bool = False) -> str:
        rec = self.find(ref)
        async with self._lock(rec.id):
            rec = self.store.get(rec.id)
            if rec.status in ACTIVE:
                if not force:
                    raise FailedPrecondition(
                        f"container {rec.name} is {rec.status}: stop it first or remove it with -f"
                    )
                self.store.update(rec.id, stopped_by_user=True)
                with contextlib.suppress(AgentError):
                    await self.runtime.kill(rec.id, signal.SIGKILL, all_processes=True)
                run = self._runs.get(rec.id)
                if run is not None and not await _wait_event(run.recorded, KILL_WAIT):
                    raise FailedPrecondition(f"container {rec.name} did not exit after SIGKILL")
                rec = self.store.get(rec.id)
            await self._remove_locked(rec, volumes=volumes)
        self._locks.pop(rec.id, None)
        return rec.id

    async def _remove_locked(self, rec: ContainerRecord, *, volumes: bool) -> None:
        cid = rec.id
        rec = self.store.transition(cid, Status.REMOVING)
        try:
            if cid not in self._releases:  # else the pending release deletes the runtime's state
                await self.runtime.delete(cid, force=True)
            await asyncio.to_thread(bundle.remove, self.paths(cid))
            self._clean_socket_link(cid)
        except (AgentError, OSError) as exc:
            self.store.transition(cid, Status.DEAD, error=f"removal failed: {exc}")
            raise
        self.store.delete(cid)
        self._runs.pop(cid, None)
        if volumes:
            for m in self.options(rec).mounts:
                if m.type is MountType.VOLUME:
                    try:
                        vol = self.volumes.get(m.source)
                    except NotFound:
                        continue
                    if vol.anonymous and not self.volume_users(vol.name):
                        self.volumes.remove(vol.name, force=True)
        self._event("destroy", rec)
        log.info("container.removed", id=cid)
        await self._notify()

    def _clean_socket_link(self, cuuid: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.conmon.socket_dir / cuuid).unlink()

    async def prune(self) -> list[str]:
        removed = []
        for rec in self.store.all():
            if rec.status in (Status.EXITED, Status.CREATED, Status.DEAD):
                with contextlib.suppress(NotFound, Conflict):
                    removed.append(await self.remove(rec.id, force=rec.status is Status.DEAD))
        return removed

    # ---- wait ----------------------------------------------------------------------------------------

    async def wait(self, ref: str, condition: str = "not-running") -> tuple[int, str]:
        """Block until the container is not running (or `next-exit`, `removed`); return (code, error)."""
        rec = self.find(ref)
        cid = rec.id
        if condition not in ("not-running", "next-exit", "removed"):
            raise InvalidArgument(f"invalid wait condition {condition!r}: not-running, next-exit or removed")
        first_run = self._runs.get(cid)
        async with self._changed:
            while True:
                try:
                    cur = self.store.get(cid)
                except NotFound:
                    if condition == "removed":
                        last = rec
                        return (last.exit_code or 0), last.error
                    raise
                rec = cur
                if condition == "not-running" and cur.status not in ACTIVE | {Status.RESTARTING}:
                    return (cur.exit_code or 0), cur.error
                if condition == "next-exit":
                    run = self._runs.get(cid)
                    if (first_run is not None and first_run.recorded.is_set()) or (
                        run is not first_run and cur.status not in ACTIVE
                    ):
                        return (cur.exit_code or 0), cur.error
                await self._changed.wait()

    # ---- attached runs -------------------------------------------------------------------------------

    async def run(
        self,
        opts: RunOptions,
        inputs: AsyncIterator[Input] | None,
        *,
        detach: bool,
        size: tuple[int, int] = (0, 0),
    ) -> AsyncIterator[Event]:
        """`docker run`: create, start and (unless detached) stream output until the exit code."""
        rec = await self.create(opts)
        yield Started(rec.id)
        if detach:
            try:
                await self.start_container(rec.id)
            except AgentError:
                if opts.auto_remove:
                    with contextlib.suppress(AgentError):
                        await self.remove(rec.id, force=True)
                raise
            return
        async for ev in self.attach(rec.id, inputs, start=True, size=size):
            yield ev

    async def attach(
        self, ref: str, inputs: AsyncIterator[Input] | None, *, start: bool, size: tuple[int, int] = (0, 0)
    ) -> AsyncIterator[Event]:
        """Stream a run's output (and feed its stdin) until it exits; with `start`, start it first."""
        rec = self.find(ref)
        opts = self.options(rec)
        cid = rec.id
        paths = self.paths(cid)
        want_socket = opts.tty or (opts.stdin_open and inputs is not None)
        session: AttachSession | None = None

        async def connect() -> None:
            nonlocal session
            session = await AttachSession.connect(self.conmon.socket_dir, cid)
            attach_fifo.resize(paths.root, *size)

        since = time.time_ns()
        if start:
            try:
                await self.start_container(cid, pre_start=connect if want_socket else None)
            except RuntimeCommand as exc:
                current = self.store.get(cid)
                if current.status in ACTIVE:
                    raise
                if opts.auto_remove:
                    with contextlib.suppress(AgentError):
                        await self.remove(cid, force=True)
                yield Exited(exit_code_for_start_error(str(exc)), False, str(exc))
                return
        else:
            rec = self.store.get(cid)
            if rec.status not in ACTIVE:
                raise FailedPrecondition(f"container {rec.name} is not running; start it with -a to attach")
            if want_socket:
                await connect()
        run = self._runs.get(cid)
        if run is None:
            raise FailedPrecondition(f"container {rec.name} is not running")
        if start:  # output from the run's beginning; a plain attach shows only what comes next
            since = min(since, run.started_ns)
        run.readers += 1
        try:
            outputs = output_events(
                session=session if opts.tty else None,
                log_path=paths.log,
                done=run.conmon_exited,
                since_ns=since,
            )
            async for out in relay(outputs, inputs, session, paths.root):
                yield out
        finally:
            run.readers -= 1
            if run.readers == 0:
                run.readers_done.set()
        await run.recorded.wait()
        if opts.auto_remove:
            await run.finished.wait()
        yield run.exit or Exited(UNKNOWN_EXIT)

    # ---- exec ----------------------------------------------------------------------------------------

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
        """Run a process in a running container under its own conmon; ends with its exit code."""
        rec = self.find(ref)
        if rec.status is Status.PAUSED:
            raise FailedPrecondition(f"container {rec.name} is paused; unpause it first")
        if rec.status is not Status.RUNNING:
            raise FailedPrecondition(f"container {rec.name} is not running")
        cid = rec.id
        paths = self.paths(cid)
        exec_id = secrets.token_hex(32)
        d = paths.exec_root / exec_id
        base = (await asyncio.to_thread(bundle.read_config, paths))["process"]
        resolved = await asyncio.to_thread(resolve_in_root, user, paths.rootfs) if user else None
        proc = exec_process(base, args, env=env, user=resolved, cwd=workdir, tty=tty)
        d.mkdir(parents=True)
        (d / "process.json").write_text(json.dumps(proc))
        if not tty and not detach:  # ends with its client: no conmon needed (containers/foreground_exec.py)
            async for ev in self._exec_foreground(rec, d, exec_id, args, inputs if interactive else None):
                yield ev
            return
        session: AttachSession | None = None

        async def connect() -> None:
            nonlocal session
            session = await AttachSession.connect(self.conmon.socket_dir, exec_id)
            attach_fifo.resize(d, *size)

        job = ConmonJob(
            container_id=cid,
            cuuid=exec_id,
            name=rec.name,
            bundle=d,
            persist_dir=d,
            log_path=d / "exec.log",
            pidfile=d / "pid",
            conmon_pidfile=d / "conmon.pid",
            log_size_max=self.settings.log_max_size,
            terminal=tty,
            stdin=interactive,
            exec_spec=d / "process.json",
            exec_attach=tty and not detach,
        )
        try:
            launched = await self.conmon.launch(job, connect if job.exec_attach else None)
        except RuntimeCommand as exc:
            self._cleanup_exec(d, exec_id)
            yield Exited(exit_code_for_start_error(str(exc)), False, str(exc))
            return
        except BaseException:
            self._cleanup_exec(d, exec_id)
            raise
        self._event("exec_start", rec, execID=exec_id, command=" ".join(args))
        exited = asyncio.Event()

        async def watch() -> None:
            try:
                await monitor.wait_pid_exit(launched.conmon_pid)
            finally:
                exited.set()

        watcher = self._spawn(watch(), f"containers.exec.{exec_id[:12]}")
        yield Started(exec_id)
        if detach:
            self._spawn(self._finish_exec(rec, d, exec_id, exited), f"containers.exec-done.{exec_id[:12]}")
            return
        try:
            if interactive and not tty:
                await connect()
            outputs = output_events(
                session=session if tty else None, log_path=d / "exec.log", done=exited, since_ns=None
            )
            async for out in relay(outputs, inputs if interactive else None, session, d):
                yield out
            await exited.wait()
        except BaseException:
            # the client went away: the exec'd process goes too
            with contextlib.suppress(ProcessLookupError):
                os.kill(launched.pid, signal.SIGKILL)
            self._spawn(self._finish_exec(rec, d, exec_id, exited), f"containers.exec-done.{exec_id[:12]}")
            raise
        del watcher
        yield await self._finish_exec(rec, d, exec_id, exited)

    async def _exec_foreground(
        self,
        rec: ContainerRecord,
        d: Path,
        exec_id: str,
        args: tuple[str, ...],
        inputs: AsyncIterator[Input] | None,
    ) -> AsyncIterator[Event]:
        """An attached exec without a terminal, the runtime run by us; events as for a conmon exec.

        `Started` (and the exec_start event) come once the process is known to run, so a process the
        runtime cannot start ends in an `Exited` with the reason only, as with conmon.
        """
        try:
            session = await ForegroundExec.start(self.runtime, rec.id, d, interactive=inputs is not None)
        except BaseException:
            self._cleanup_exec(d, exec_id)
            raise
        pump = asyncio.ensure_future(session.pump_input(inputs)) if inputs is not None else None
        announced = False

        def announce() -> Started:
            nonlocal announced
            announced = True
            self._event("exec_start", rec, execID=exec_id, command=" ".join(args))
            return Started(exec_id)

        try:
            async for out in session.outputs():
                if not announced:
                    yield announce()
                yield out
            code, error, held = await session.finish()
        except BaseException:  # the client went away: the exec'd process goes too
            session.kill()
            reap = self._reap_foreground(rec, session, d, exec_id)
            self._spawn(reap, f"containers.exec-done.{exec_id[:12]}")
            raise
        finally:
            if pump is not None:
                pump.cancel()
        self._cleanup_exec(d, exec_id)
        if error:
            if announced:
                self._event("exec_die", rec, execID=exec_id, exitCode=code)
            yield Exited(exit_code_for_start_error(error), False, error)
            return
        if not announced:
            yield announce()
        for out in held:
            yield out
        self._event("exec_die", rec, execID=exec_id, exitCode=code)
        yield Exited(code if code >= 0 else UNKNOWN_EXIT)

    async def _reap_foreground(
        self, rec: ContainerRecord, session: ForegroundExec, d: Path, exec_id: str
    ) -> None:
        code = await session.proc.wait()
        self._cleanup_exec(d, exec_id)
        self._event("exec_die", rec, execID=exec_id, exitCode=code if code >= 0 else UNKNOWN_EXIT)

    async def _finish_exec(
        self, rec: ContainerRecord, d: Path, exec_id: str, exited: asyncio.Event
    ) -> Exited:
        await exited.wait()
        info = monitor.read_exit(d)
        code = UNKNOWN_EXIT if info is None or info.code < 0 else info.code
        self._cleanup_exec(d, exec_id)
        self._event("exec_die", rec, execID=exec_id, exitCode=code)
        return Exited(code, bool(info and info.oom))

    def _cleanup_exec(self, d: Path, exec_id: str) -> None:
        shutil.rmtree(d, ignore_errors=True)
        self._clean_socket_link(exec_id)

    async def exec_capture(self, container_id: str, args: tuple[str, ...], timeout: float) -> tuple[int, str]:
        """Run a command to completion (health checks); output is stdout+stderr, the code -1 on timeout.

        Only the output's last 16 KiB are kept (health records keep 4096 characters of it)."""
        output = bytearray()
        code = UNKNOWN_EXIT
        try:
            async with asyncio.timeout(timeout):
                async for ev in self.exec(container_id, args):
                    if isinstance(ev, Output):
                        output += ev.data
                    elif isinstance(ev, Exited):
                        code = ev.code
                        if ev.error:
                            output += ev.error.encode()
                    del output[: -16 * 1024]
        except TimeoutError:
            return -1, f"health check timed out after {timeout:g}s"
        return code, output.decode(errors="replace")

    def record_health(self, container_id: str, status: str, streak: int, entry: dict[str, Any]) -> str:
        rec = self.store.get(container_id)
        history = [*rec.health_log, entry][-5:]
        self.store.update(
            container_id, health_status=status, health_failing_streak=streak, health_log=history
        )
        if status != rec.health_status and status in ("healthy", "unhealthy"):
            self._event(f"health_status: {status}", rec)
        return status

    # ---- top -----------------------------------------------------------------------------------------

    async def top(self, ref: str) -> tuple[list[str], list[list[str]]]:
        rec = self.find(ref)
        if rec.status not in ACTIVE:
            raise FailedPrecondition(f"container {rec.name} is not running")
        pids = await self.runtime.pids(rec.id)
        return await asyncio.to_thread(procinfo.table, pids)

    # ---- logs ----------------------------------------------------------------------------------------

    async def logs(
        self,
        ref: str,
        *,
        follow: bool = False,
        tail: int | None = None,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> AsyncIterator[logs.LogEntry]:
        rec = self.find(ref)
        path = self.paths(rec.id).log
        entries = await asyncio.to_thread(
            logs.read_entries, path, since_ns=since_ns, until_ns=until_ns, tail=tail
        )
        for e in entries:
            yield e
        if not follow:
            return
        run = self._runs.get(rec.id)
        if run is None or run.conmon_exited.is_set():
            return
        last = entries[-1].time_ns if entries else since_ns
        async for e in logs.follow(path, done=run.conmon_exited, from_start=False):
            if last is None or e.time_ns >= last:
                yield e

    # ---- reconcile -----------------------------------------------------------------------------------

    async def _reconcile(self) -> None:
        known: set[str] = set()
        for rec in self.store.all():
            known.add(rec.id)
            try:
                await self._reconcile_one(rec)
            except AgentError as exc:
                log.error("container.reconcile_failed", id=rec.id, error=str(exc))
                with contextlib.suppress(AgentError):
                    self.store.transition(rec.id, Status.DEAD, error=f"reconcile failed: {exc}")
        # strays: runtime state or directories with no record (e.g. killed between mkdir and insert)
        for cid in self.runtime.list_ids():
            if cid not in known and "-" not in cid:
                log.warning("container.stray_runtime_state", id=cid)
                with contextlib.suppress(AgentError):
                    await self.runtime.kill(cid, signal.SIGKILL, all_processes=True)
                with contextlib.suppress(AgentError):
                    await self.runtime.delete(cid, force=True)
        root = self.settings.data_root / "containers"
        if root.exists():
            for d in root.iterdir():
                if d.name not in known:
                    log.warning("container.stray_directory", path=str(d))
                    await asyncio.to_thread(bundle.remove, ContainerPaths(d))
        if self.conmon.socket_dir.exists():
            for link in self.conmon.socket_dir.iterdir():
                if link.is_symlink() and not link.exists():
                    link.unlink()

    async def _reconcile_one(self, rec: ContainerRecord) -> None:
        cid = rec.id
        paths = self.paths(cid)
        if rec.status is Status.CREATING:
            log.info("container.half_created_removed", id=cid)
            await self._discard(cid, [])
            return
        if rec.status is Status.REMOVING:
            with contextlib.suppress(AgentError):
                await self.runtime.delete(cid, force=True)
            await asyncio.to_thread(bundle.remove, paths)
            self.store.delete(cid)
            self._event("destroy", rec)
            return
        if rec.status in ACTIVE:
            alive = rec.boot_id == self.boot_id and monitor.process_matches(rec.conmon_pid, cid)
            run = RunState(conmon_pid=rec.conmon_pid, started_ns=_ns(rec.started_at), delay=rec.restart_delay)
            self._runs[cid] = run
            if alive:
                log.info("container.adopted", id=cid, pid=rec.pid)
                if rec.paused_by == "commit":
                    try:
                        await self._thaw_commit_pause(rec)
                    except AgentError as exc:  # it still runs; a user can unpause it
                        log.warning("container.commit_pause_not_undone", id=cid, error=str(exc))
                self._spawn(self._watch(cid, run), f"containers.watch.{cid[:12]}")
                opts = self.options(rec)
                if opts.health is not None and not opts.health.disabled:
                    self._spawn(
                        run_health_checks(self, cid, run, opts.health), f"containers.health.{cid[:12]}"
                    )
                return
            run.conmon_exited.set()
            info = monitor.read_exit(paths.run) if rec.boot_id == self.boot_id else None
            if info is None and rec.boot_id != self.boot_id:
                info = ExitInfo(UNKNOWN_EXIT, False, now(), "the host restarted")
            await self._record_exit(cid, run, info)  # applies the restart policy like any exit
            return
        # not running: make sure no runtime state or interrupted start is left behind
        state = await self._safe_state(cid)
        if state is not None:
            log.info("container.interrupted_start_cleaned", id=cid, runtime_status=state.status)
            conmon_pid = monitor.read_pidfile(paths.conmon_pidfile)
            with contextlib.suppress(AgentError):
                await self.runtime.kill(cid, signal.SIGKILL, all_processes=True)
            if conmon_pid and monitor.process_matches(conmon_pid, cid):
                with contextlib.suppress(AgentError, asyncio.TimeoutError):
                    async with asyncio.timeout(KILL_WAIT):
                        await monitor.wait_pid_exit(conmon_pid)
            with contextlib.suppress(AgentError):
                await self.runtime.delete(cid, force=True)
        if rec.status is Status.EXITED:
            await asyncio.to_thread(bundle.unmount_rootfs, paths)
            if self.options(rec).auto_remove:  # its --rm was interrupted by the agent going down
                await self._remove_locked(rec, volumes=True)
                return
        if rec.status is Status.RESTARTING or (
            rec.status is Status.EXITED
            and rec.boot_id
            and rec.boot_id != self.boot_id
            and restart.restart_at_agent_start(self.options(rec).restart, rec.stopped_by_user, False)
        ):
            if rec.status is Status.RESTARTING:  # the back-off goes on where the last agent left it
                delay = rec.restart_delay or restart.INITIAL_DELAY
                since = (now() - rec.finished_at).total_seconds() if rec.finished_at else 0.0
                wait = restart.remaining(delay, since)
            else:  # the host restarted: an `always` container comes back at once
                self.store.transition(cid, Status.RESTARTING)
                delay = wait = restart.INITIAL_DELAY
            self._spawn(self._restart_later(cid, delay, wait=wait), f"containers.restart.{cid[:12]}")


def _ns(dt: datetime | None) -> int:
    return int(dt.timestamp() * 1e9) if dt else time.time_ns()


async def _wait_event(event: asyncio.Event, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
