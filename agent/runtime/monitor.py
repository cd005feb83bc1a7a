"""conmon: launch one monitor per container run (or exec session) and learn when it ends.

conmon double-forks, runs `runc create` (or `runc exec`), holds the container's stdio, writes the
CRI-format log and, when the process ends, the exit code to `<persist-dir>/exit` (and `oom` after an
OOM kill). It does not depend on the agent, so containers, logs and exit codes outlive agent restarts.

We learn about the end through a pidfd on the conmon process (no polling, works for processes that are
not our children, i.e. after an agent restart), and we read the result from the persist dir. The agent
is a child subreaper (`agent/reaper.py`) so that conmons it started are reparented to it and reaped.

A runtime killed during `create` leaves conmon blocked for good: before reporting the failure it reads the
container's stderr, whose write end the orphaned `runc init` keeps open. `launch` watches for that state
(conmon alive, no runtime process left, no report) and kills what the runtime left, so conmon reports and
exits and the create fails within seconds instead of at CREATE_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import agent.log
from agent.errors import DeadlineExceeded, Internal, RuntimeCommand
from agent.runtime.oci import RUNTIME_UMASK, OciRuntime, find_binary

log = agent.log.get(__name__)

CREATE_TIMEOUT = 60.0
RUNTIME_CHECK = 0.5  # how often a slow create checks that the runtime still runs
RUNTIME_GONE_CHECKS = 3  # consecutive checks without runtime nor report before its leftovers are killed


@dataclass(frozen=True)
class ConmonJob:
    """One conmon invocation. `cuuid` is the container ID, or the exec ID for an exec session."""

    container_id: str
    cuuid: str
    name: str
    bundle: Path
    persist_dir: Path
    log_path: Path
    pidfile: Path
    conmon_pidfile: Path
    log_size_max: int = 0
    terminal: bool = False
    stdin: bool = False
    exec_spec: Path | None = None
    exec_attach: bool = False


@dataclass(frozen=True)
class Launched:
    conmon_pid: int
    pid: int


@dataclass(frozen=True)
class ExitInfo:
    """How a run ended: `code` is the exit code (128+N for signal N), -1 when conmon could not tell."""

    code: int
    oom: bool
    finished_at: datetime
    message: str = ""


class Conmon:
    """The `Monitor` (agent/runtime/protocols.py) of real containers: conmon driving `runtime`."""

    def __init__(self, runtime: OciRuntime, socket_dir: Path, binary: str | None = None) -> None:
        self.runtime = runtime
        self._binary = binary
        self.socket_dir = socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def binary(self) -> str:
        """conmon's path, looked up on first use so a missing conmon fails runs, not the agent."""
        if self._binary is None:
            self._binary = find_binary("conmon")
        return self._binary

    def argv(self, job: ConmonJob) -> list[str]:
        args = [
            self.binary,
            "--api-version", "1",
            "-c", job.container_id,
            "-u", job.cuuid,
            "-n", job.name,
            "-r", self.runtime.binary,
            "-b", str(job.bundle),
            "-p", str(job.pidfile),
            "-P", str(job.conmon_pidfile),
            "--persist-dir", str(job.persist_dir),
            "-l", f"k8s-file:{job.log_path}",
            "--socket-dir-path", str(self.socket_dir),
            "--syslog=false",
            "--log-level", "error",
        ]  # fmt: skip
        for arg in self.runtime.global_args:
            args += ["--runtime-arg", arg]
        if job.log_size_max > 0:
            args += ["--log-size-max", str(job.log_size_max)]
        if job.terminal:
            args.append("-t")
        if job.stdin:
            args.append("-i")
        if job.exec_spec is not None:
            args += ["-e", "--exec-process-spec", str(job.exec_spec)]
            if job.exec_attach:
                args.append("--exec-attach")
        return args

    async def launch(
        self, job: ConmonJob, on_attach_ready: Callable[[], Awaitable[None]] | None = None
    ) -> Launched:
        """Start conmon; return once the runtime created the process (or raise with its error).

        With `exec_attach`, `on_attach_ready` runs once conmon's attach socket exists and before the
        exec'd process starts, so an attached client loses no output.
        """
        self.runtime.ensure_usable()
        argv = self.argv(job)
        job.persist_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("exit", "oom"):
            with contextlib.suppress(FileNotFoundError):
                (job.persist_dir / stale).unlink()
        sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
        start_r, start_w = os.pipe2(os.O_CLOEXEC)
        attach_r, attach_w = os.pipe2(os.O_CLOEXEC) if job.exec_attach else (-1, -1)
        child_fds = [sync_w, start_r] + ([attach_w] if job.exec_attach else [])
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "_OCI_SYNCPIPE": str(sync_w),
            "_OCI_STARTPIPE": str(start_r),
        }
        if job.exec_attach:
            env["_OCI_ATTACHPIPE"] = str(attach_w)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                pass_fds=child_fds,
                env=env,
                cwd=str(job.persist_dir),
                umask=RUNTIME_UMASK,
            )
        except BaseException:
            for fd in (sync_r, sync_w, start_r, start_w, attach_r, attach_w):
                if fd >= 0:
                    os.close(fd)
            raise
        for fd in child_fds:
            os.close(fd)
        try:
            async with asyncio.timeout(CREATE_TIMEOUT):
                # conmon reads the start pipe once before forking (and, with exec-attach, once more
                # before it execs the runtime)
                os.write(start_w, b"0")
                _, err = await proc.communicate()
                if proc.returncode != 0:
                    raise RuntimeCommand("conmon", proc.returncode or 0, err.decode(errors="replace"))
                if job.exec_attach:
                    await _read_message(attach_r)
                    if on_attach_ready is not None:
                        await on_attach_ready()
                    os.write(start_w, b"0")
                message = await self._sync_message(job, sync_r)
        except TimeoutError:
            await self._kill_stray(job)
            raise DeadlineExceeded(
                f"creating {job.cuuid[:12]} took longer than {CREATE_TIMEOUT:g}s"
            ) from None
        except BaseException:
            await self._kill_stray(job)
            raise
        finally:
            for fd in (sync_r, start_w, attach_r):
                if fd >= 0:
                    os.close(fd)
        data = message.get("data", -1)
        pid = data if isinstance(data, int) else -1
        if pid <= 0:
            text = str(message.get("message") or "the runtime did not report a process id")
            await self._kill_stray(job)
            raise RuntimeCommand(f"{self.runtime.name} {'exec' if job.exec_spec else 'create'}", 1, text)
        return Launched(conmon_pid=read_pidfile(job.conmon_pidfile), pid=pid)

    async def _sync_message(self, job: ConmonJob, fd: int) -> dict[str, object]:
        """conmon's report of the create; unblocks a conmon whose runtime died (module docstring)."""
        read = asyncio.ensure_future(_read_message(fd))
        gone = 0
        killed = False
        try:
            while True:
                done, _ = await asyncio.wait([read], timeout=RUNTIME_CHECK)
                if done:
                    message = read.result()
                    if killed and not message.get("message"):
                        message = {**message, "message": self._died_message(job)}
                    return message
                conmon_pid = read_pidfile(job.conmon_pidfile)
                if conmon_pid <= 0 or killed:
                    continue
                children = await asyncio.to_thread(child_cmdlines, conmon_pid)
                if any(job.cuuid.encode() in cmd for cmd in children.values()):
                    gone = 0  # the runtime is still at work
                    continue
                gone += 1
                if gone >= RUNTIME_GONE_CHECKS and children:
                    log.warning("runtime.died_during_create", id=job.cuuid, leftovers=sorted(children))
                    for pid in children:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                    killed = True
        finally:
            read.cancel()

    def _died_message(self, job: ConmonJob) -> str:
        action = "exec" if job.exec_spec else "create"
        return f"{self.runtime.name} {action} ended without reporting a process (it was killed or crashed)"

    async def wait(self, conmon_pid: int) -> None:
        await wait_pid_exit(conmon_pid)

    def read_exit(self, persist_dir: Path) -> ExitInfo | None:
        return read_exit(persist_dir)

    def read_pid(self, pidfile: Path) -> int:
        return read_pidfile(pidfile)

    def is_running(self, conmon_pid: int, cuuid: str) -> bool:
        return process_matches(conmon_pid, cuuid)

    async def _kill_stray(self, job: ConmonJob) -> None:
        pid = read_pidfile(job.conmon_pidfile)
        if pid > 0 and process_matches(pid, job.cuuid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            await wait_pid_exit(pid)


async def _read_message(fd: int) -> dict[str, object]:
    """Read one JSON line from a conmon pipe without blocking the loop; EOF yields {}."""
    buf = b""
    while b"\n" not in buf:
        await wait_readable(fd)
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    line = buf.split(b"\n", 1)[0].strip()
    if not line:
        return {}
    try:
        data: dict[str, object] = json.loads(line)
    except ValueError as exc:
        raise Internal(f"conmon sent an unreadable message: {line[:200]!r}") from exc
    return data


async def wait_readable(fd: int) -> None:
    """Suspend until `fd` is readable (pipe data or EOF, pidfd of an exited process)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def read_pidfile(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def child_cmdlines(parent: int) -> dict[int, bytes]:
    """The live (non-zombie) children of `parent` with their command lines, from /proc."""
    found = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) < 2 or int(fields[1]) != parent or fields[0] in (b"Z", b"X"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as f:
                found[int(name)] = f.read()
        except (OSError, ValueError):
            continue
    return found


def process_matches(pid: int, token: str) -> bool:
    """True when `pid` is alive and is the conmon for `token` (guards against PID reuse)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"conmon" in cmdline and token.encode() in cmdline


async def wait_pid_exit(pid: int) -> None:
    """Wait for any process (child or not) to exit, via a pidfd; reap it if it is our child."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        await wait_readable(pidfd)
    finally:
        os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks


def read_exit(persist_dir: Path) -> ExitInfo | None:
    """The result conmon recorded, or None if it recorded none (still running, or conmon was killed)."""
    exit_file = persist_dir / "exit"
    try:
        text = exit_file.read_text().strip()
        mtime = exit_file.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        code = int(text)
    except ValueError:
        code = -1
    oom = (persist_dir / "oom").exists()
    return ExitInfo(code=code, oom=oom, finished_at=datetime.fromtimestamp(mtime, UTC))
