"""The OCI runtime adapter: runc (default) or crun driven through their CLI with a private `--root`.

The one place that runs runtime commands directly; conmon runs `create`/`exec` (see `monitor.py`).
Failures become `RuntimeCommand` with the stderr tail; a runtime unusable on this host (missing binary,
crun on the cgroup v1/v2 hybrid layout) becomes `FailedPrecondition` with the reason, before any work.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import agent.log
from agent.errors import AgentError, DeadlineExceeded, FailedPrecondition, RuntimeCommand
from agent.hostinfo import cgroup_layout

log = agent.log.get(__name__)

COMMAND_TIMEOUT = 30.0
SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class RuntimeState:
    """`runc state` output: status is creating|created|running|paused|stopped."""

    id: str
    status: str
    pid: int
    bundle: str


def find_binary(name: str) -> str:
    path = shutil.which(name, path=os.environ.get("PATH", "") + ":" + SEARCH_PATH)
    if path is None:
        raise FailedPrecondition(f"{name} is not installed on this host (looked in PATH and {SEARCH_PATH})")
    return path


def check_usable(name: str, layout: str | None = None) -> None:
    """Refuse a runtime that cannot work here, with the reason and the fix in the message."""
    if name not in ("runc", "crun"):
        raise FailedPrecondition(f"unknown OCI runtime {name!r}: use runc or crun")
    layout = layout or cgroup_layout()
    if name == "crun" and layout == "hybrid":
        raise FailedPrecondition(
            "crun cannot run containers on this host: it refuses the cgroup v1/v2 hybrid layout "
            '(cgroup2 mounted at /sys/fs/cgroup/unified); set runtime = "runc" in the agent config'
        )


def exit_code_for_runtime_error(text: str) -> int:
    """Docker's exit code for a process the runtime could not start, from the runtime's own error text:
    127 when the executable was not found, 126 when it may not be executed, 128 for any other failure."""
    lowered = text.lower()
    if "executable file not found" in lowered or "no such file or directory" in lowered:
        return 127
    if "permission denied" in lowered:
        return 126
    return 128


def start_error_exit_code(err: AgentError) -> int:
    """The exit code a failed start (create, start, exec) reports: classified from a `RuntimeCommand`'s
    stderr, 128 for a failure that is not the runtime's (unusable runtime, a create that hung, ...)."""
    if isinstance(err, RuntimeCommand):
        return exit_code_for_runtime_error(err.stderr)
    return 128


# The agent runs with umask 0077 (its data root is root's alone); the runtime and everything it starts —
# the mount points it makes in a rootfs, the container's processes — get the umask containers expect, as
# under Docker. Every spawn of runc/crun/conmon passes it (subprocess `umask=`).
RUNTIME_UMASK = 0o022


class OciRuntime:
    """runc/crun with state kept under `root` (one root per agent, so agents never see each other)."""

    def __init__(self, name: str, root: Path, binary: str | None = None) -> None:
        self.name = name
        self.root = root
        self.binary = binary or ""
        self.problem: FailedPrecondition | None = None
        try:
            check_usable(name)
            self.binary = binary or find_binary(name)
        except FailedPrecondition as exc:
            # the agent still serves (images, inspect of existing containers); runs fail with the reason
            self.problem = exc
            log.error("runtime.unusable", runtime=name, problem=str(exc))
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def ensure_usable(self) -> None:
        if self.problem is not None:
            raise FailedPrecondition(str(self.problem))

    @property
    def global_args(self) -> list[str]:
        return ["--root", str(self.root)]

    async def _run(self, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        self.ensure_usable()
        argv = [self.binary, *self.global_args, *args]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            umask=RUNTIME_UMASK,
        )
        try:
            async with asyncio.timeout(timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise DeadlineExceeded(f"{self.name} {args[0]} did not finish within {timeout:g}s") from None
        except BaseException:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeCommand(f"{self.name} {args[0]}", proc.returncode or 0, err.decode(errors="replace"))
        return out.decode(errors="replace")

    def exists(self, container_id: str) -> bool:
        if self.problem is not None:
            return False
        return (self.root / container_id / "state.json").exists()

    async def state(self, container_id: str) -> RuntimeState | None:
        """None when the runtime does not know the container."""
        if not self.exists(container_id):
            return None
        try:
            out = await self._run("state", container_id)
        except RuntimeCommand:
            if not self.exists(container_id):
                return None
            raise
        data = json.loads(out)
        return RuntimeState(data["id"], data["status"], int(data.get("pid") or 0), data.get("bundle", ""))

    async def start(self, container_id: str) -> None:
        await self._run("start", container_id)

    async def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> None:
        args = ["kill", *(["--all"] if all_processes else []), container_id, str(signal)]
        await self._run(*args)

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove the runtime's state and cgroups; a container it does not know is already deleted.

        A `create` killed before it wrote `state.json` leaves its state directory behind, which the
        runtime neither deletes ("container does not exist") nor lets a new create of that ID use
        ("container with given ID already exists"): with `force` that directory is removed too.
        """
        directory = self.root / container_id
        if not directory.exists():
            return
        try:
            await self._run("delete", *(["--force"] if force else []), container_id)
        except RuntimeCommand:
            if self.exists(container_id):
                raise
            if force and directory.exists():
                log.warning("runtime.partial_state_removed", id=container_id)
                await asyncio.to_thread(shutil.rmtree, directory, True)

    def exec_argv(self, container_id: str, process: Path, pidfile: Path, log: Path) -> list[str]:
        """`exec` of a process spec, for a caller that runs it itself with the process's stdio as pipes
        (agent/containers/foreground_exec.py); the runtime's own errors go to `log` as JSON."""
        self.ensure_usable()
        argv = [self.binary, *self.global_args, "--log", str(log), "--log-format", "json", "exec"]
        return [*argv, "--pid-file", str(pidfile), "--process", str(process), container_id]

    async def pause(self, container_id: str) -> None:
        await self._run("pause", container_id)

    async def resume(self, container_id: str) -> None:
        await self._run("resume", container_id)

    async def pids(self, container_id: str) -> list[int]:
        out = await self._run("ps", "--format", "json", container_id)
        return [int(p) for p in json.loads(out or "[]") or []]

    def list_ids(self) -> list[str]:
        """Containers the runtime has state for, complete or left by a killed create (for reconcile)."""
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []
