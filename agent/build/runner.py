"""RUN steps: one short-lived, isolated container per step on the agent's own runtime (runc), output streamed.

The builder mounts the step's rootfs (overlay of the stage's layers and a fresh upper dir, via
`agent.runtime.bundle`) and hands it here. The container's config.json comes from the pure spec builder
(`agent.runtime.spec`: Docker's default capabilities, seccomp profile, masked paths, namespaces), with the
step's argv, environment, user and working directory. It runs in the foreground (`runc run`), so runc
reaps it and reports its exit status; stdout and stderr arrive merged, line by line.

Networking: `none` and `host` are what they say; the default joins the default bridge through the network
attacher when the agent has one: one named network namespace per build (`BuildNetwork`), plugged
into the bridge before the first RUN and shared by the build's RUN steps; `none` when there is no bridge.
The mount points runc had to create in the rootfs for its own mounts (`/etc/hosts`, `/proc`, ...) are
removed from the upper dir afterwards so they never reach a layer. Cancellation kills the container;
nothing (container state, namespace, endpoint) outlives the step or, for the namespace, the build.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import agent.log
from agent.build.fileops import read_etc
from agent.errors import AgentError, FailedPrecondition, InvalidArgument, NetworkSetup
from agent.runtime import bundle
from agent.runtime.bundle import ContainerPaths
from agent.runtime.oci import RUNTIME_UMASK, OciRuntime
from agent.runtime.options import RunOptions
from agent.runtime.spec import HostFacts, ImageConfig, SpecInputs, build_spec
from agent.runtime.users import resolve_user

log = agent.log.get(__name__)

# Mount destinations of the default spec: runc creates them in the rootfs when missing.
_MOUNT_POINTS = (
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/shm",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
)
_NETNS_DIR = Path("/run/netns")
STOP_TIMEOUT = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class StepNetworkOptions:
    """What the network attacher reads (the container manager's `NetworkOptions` shape)."""

    network: str
    name: str
    hostname: str
    etc_files: Mapping[str, str] = field(default_factory=dict)


class NetworkAttacher(Protocol):
    async def attach(self, container_id: str, netns_path: str, options: StepNetworkOptions) -> None: ...

    async def detach(self, container_id: str) -> None: ...


class BuildNetwork:
    """One network namespace on the default bridge, shared by the RUN steps of one build.

    Made on first use (a namespace, an endpoint from the network manager, /etc/hosts, /etc/hostname and
    /etc/resolv.conf under `directory`), removed by `close` when the build ends, however it ends; the
    steps' processes never outlive their step, so sharing it leaks nothing from one step to the next.
    """

    def __init__(self, runner: StepRunner, build_id: str, directory: Path) -> None:
        self.runner = runner
        self.build_id = build_id
        self.directory = directory
        self.name = f"dy-build-{build_id[:12]}"
        self._opened: tuple[str, dict[str, str]] | None = None
        self._attach_tried = False
        self._lock = asyncio.Lock()

    async def open(self) -> tuple[str, dict[str, str]]:
        async with self._lock:
            if self._opened is None:
                self._opened = await settled(self._open())
            return self._opened

    async def _open(self) -> tuple[str, dict[str, str]]:
        paths = ContainerPaths(self.directory)
        await asyncio.to_thread(self.directory.mkdir, parents=True, exist_ok=True)
        hostname = self.build_id[:12]
        etc_files = await asyncio.to_thread(bundle.write_etc_files, paths, hostname, host_network=False)
        netns_path = await self.runner.create_netns(self.name)
        attacher = self.runner.network
        assert attacher is not None
        self._attach_tried = True
        await attacher.attach(
            self.build_id, netns_path, StepNetworkOptions("", f"build-{hostname}", hostname, etc_files)
        )
        return netns_path, etc_files

    async def close(self) -> None:
        """Detach and delete the namespace (idempotent; never half-done, even when cancelled)."""
        attacher = self.runner.network
        if self._attach_tried and attacher is not None:
            with contextlib.suppress(AgentError):
                await settled(attacher.detach(self.build_id))
            self._attach_tried = False
        if os.path.lexists(_NETNS_DIR / self.name):
            await settled(_command("ip", "netns", "delete", self.name))
        self._opened = None


@dataclass(frozen=True)
class RunStep:
    step_id: str
    argv: list[str]
    env: list[str]  # the image's Env (K=V), ENV wins over ARG
    extra_env: list[str]  # ARG values in force and proxy args, for this step only
    user: str
    workdir: str
    network: str | None  # None = default (bridge when available), "none", "host"
    shared_network: BuildNetwork | None = None  # the build's bridge namespace (None: no bridge here)


def _opaque(path: Path) -> bool:
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stubs: list[str]  # mount points runc created in the rootfs (see `StepRunner.drop_stubs`)


async def _command(*argv: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        umask=RUNTIME_UMASK,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace")


class StepRunner:
    """Owner of the build runtime root (`<exec_root>/build-runc`) and of build network namespaces."""

    def __init__(
        self,
        runtime: str,
        state_root: Path,
        host: HostFacts,
        *,
        cgroup_parent: str = "/dockyard",
        network: NetworkAttacher | None = None,
    ) -> None:
        self._runtime_name = runtime
        self._state_root = state_root
        self._runtime: OciRuntime | None = None
        self.host = host
        self.cgroup_parent = cgroup_parent.rstrip("/") + "/build"
        self.network = network

    @property
    def runtime(self) -> OciRuntime:
        """The OCI runtime, checked on first use (an agent without a usable runc still serves the rest)."""
        if self._runtime is None:
            self._runtime = OciRuntime(self._runtime_name, self._state_root)
        return self._runtime

    async def reconcile(self) -> None:
        """At start: remove build containers and namespaces a previous agent left behind."""
        if not self._state_root.is_dir():
            return
        try:
            stale = self.runtime.list_ids()
        except FailedPrecondition:
            return
        for cid in stale:
            with contextlib.suppress(AgentError):
                await self.runtime.delete(cid, force=True)
            log.info("build.stale_container_removed", container_id=cid)
        if _NETNS_DIR.is_dir():
            for entry in _NETNS_DIR.iterdir():
                if entry.name.startswith("dy-build-"):
                    await _command("ip", "netns", "delete", entry.name)

    @staticmethod
    def _missing_mount_points(rootfs: Path) -> list[str]:
        """Mount points (and their parents) that do not exist yet: runc will create them."""
        missing: set[str] = set()
        for mount_point in _MOUNT_POINTS:
            parts = mount_point.strip("/").split("/")
            for i in range(1, len(parts) + 1):
                rel = "/".join(parts[:i])
                if not os.path.lexists(rootfs / rel):
                    missing.add(rel)
        return sorted(missing)

    @staticmethod
    def drop_stubs(upper: Path, missing: list[str], lowerdirs: list[Path]) -> None:
        """After unmounting: remove what runc created for its mounts (empty files and dirs, deepest first)
        and the copy-up of a directory that only held such a stub (empty in the upper dir, same mode and
        owner as below), so a step that changed nothing there leaves nothing there."""
        for rel in sorted(missing, key=lambda m: m.count("/"), reverse=True):
            path = upper / rel
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(st.st_mode):
                with contextlib.suppress(OSError):
                    os.rmdir(path)  # only when empty: the step may have put files there
            elif stat.S_ISREG(st.st_mode) and st.st_size == 0:
                path.unlink()
        parents = {m.rsplit("/", 1)[0] for m in missing if "/" in m} - set(missing)
        for rel in sorted(parents, key=lambda m: m.count("/"), reverse=True):
            path = upper / rel
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(st.st_mode) or any(os.scandir(path)) or _opaque(path):
                continue
            below = next((d / rel for d in lowerdirs if os.path.lexists(d / rel)), None)
            if below is None:
                continue
            lst = os.lstat(below)
            if (lst.st_mode, lst.st_uid, lst.st_gid) == (st.st_mode, st.st_uid, st.st_gid):
                with contextlib.suppress(OSError):
                    os.rmdir(path)

    async def run(self, paths: ContainerPaths, step: RunStep, on_output: Callable[[str], None]) -> RunResult:
        """Run the step in the mounted `paths.rootfs`; output goes to `on_output`.

        The caller unmounts the rootfs and then passes `RunResult.stubs` to `drop_stubs` (the upper dir must
        not be changed behind a mounted overlay's back).
        """
        rootfs = paths.rootfs
        hostname = step.step_id[:12]
        try:
            user = resolve_user(step.user, read_etc(rootfs, "passwd"), read_etc(rootfs, "group"))
        except InvalidArgument as exc:
            raise InvalidArgument(f"USER {step.user}: {exc}") from None
        network = step.network or ("bridge" if step.shared_network is not None else "none")
        missing = self._missing_mount_points(rootfs)
        netns_path: str | None = None
        if network == "bridge":
            assert step.shared_network is not None
            netns_path, etc_files = await step.shared_network.open()
        else:
            etc_files = await asyncio.to_thread(
                bundle.write_etc_files, paths, hostname, host_network=network == "host"
            )
        opts = RunOptions(
            image="",
            command=tuple(step.argv),
            entrypoint=(),
            env=tuple(step.extra_env),
            workdir=step.workdir,
            hostname=hostname,
            network="host" if network == "host" else "none" if network == "none" else "bridge",
        )
        spec = build_spec(
            opts,
            ImageConfig(env=tuple(step.env)),
            self.host,
            SpecInputs(
                container_id=step.step_id,
                rootfs=str(rootfs),
                hostname=hostname,
                user=user,
                cgroups_path=f"{self.cgroup_parent}/{step.step_id}",
                etc_files=etc_files,
                netns_path=netns_path,
            ),
        )
        await asyncio.to_thread(bundle.write_config, paths, spec)
        code = await self._run_runc(paths, step.step_id, on_output)
        return RunResult(code, missing)

    def shared_network(self, build_id: str, directory: Path) -> BuildNetwork | None:
        """The default-bridge namespace for one build's RUN steps; None when the agent has no bridge."""
        return BuildNetwork(self, build_id, directory) if self.network is not None else None

    async def create_netns(self, name: str) -> str:
        code, out = await _command("ip", "netns", "add", name)
        if code != 0:
            raise NetworkSetup(f"cannot create the network namespace for a RUN step: {out.strip()}")
        return str(_NETNS_DIR / name)

    async def _run_runc(self, paths: ContainerPaths, cid: str, on_output: Callable[[str], None]) -> int:
        """`runc run` in the foreground; on cancellation the container is killed and runc waited for."""
        argv = [self.runtime.binary, *self.runtime.global_args, "run", "--bundle", str(paths.root), cid]
        procs: list[asyncio.subprocess.Process] = []
        task = asyncio.ensure_future(_run_streaming(argv, on_output, procs))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await self._stop(cid, task, procs)
            raise
        finally:
            with contextlib.suppress(AgentError):
                await settled(self.runtime.delete(cid, force=True))

    async def _stop(
        self, cid: str, task: asyncio.Future[int], procs: list[asyncio.subprocess.Process]
    ) -> None:
        """Kill the container until runc reports it gone (it may still be starting); runc itself last."""
        deadline = asyncio.get_running_loop().time() + STOP_TIMEOUT
        while not task.done():
            with contextlib.suppress(AgentError):
                if self.runtime.exists(cid):
                    await self.runtime.kill(cid, 9, all_processes=True)
            if asyncio.get_running_loop().time() > deadline:
                for proc in procs:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
            await asyncio.wait([task], timeout=0.2)
        with contextlib.suppress(BaseException):
            task.result()


async def _run_streaming(
    argv: list[str], on_output: Callable[[str], None], procs: list[asyncio.subprocess.Process]
) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
        umask=RUNTIME_UMASK,
    )
    procs.append(proc)
    assert proc.stdout is not None
    while line := await proc.stdout.readline():
        on_output(line.decode(errors="replace").rstrip("\n"))
    return await proc.wait()


async def settled(aw: Awaitable[T]) -> T:
    """Await `aw` to its end even if the caller is cancelled meanwhile (then re-raise the cancellation):
    set-up and tear-down steps (namespaces, endpoints, mounts, runtime state) must never stop half-way."""
    task = asyncio.ensure_future(aw)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # retrieved: the cancellation is what propagates
        raise
