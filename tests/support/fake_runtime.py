"""A fake OCI runtime and monitor for testing the container core without root, runc or conmon.

They are honest state machines, held to the real ones by the contract suite (run against the fake always by
tests/unit/containers/test_runtime_contract.py, against runc + conmon as root by
tests/integration/containers/test_runtime_contract_real.py): the same states (created → running ⇄
paused → stopped), the same `RuntimeCommand`s (command, returncode and runc's logrus-formatted stderr),
the same files (state under `<root>/<id>/state.json`, the pid file, the conmon pid file, and
`<persist_dir>/exit` written before the monitor exits), and real processes, so signals, pids and exit
codes are real:

- each run or exec session gets a "monitor", a shell (`fake-conmon <cuuid>` in its command line, in a session
  of its own, not a child of the caller) that starts the "process", waits for it and writes its exit code
  (128+N for signal N) to the exit file;
- the process is a shell blocked on a control FIFO. It does not run the image's command: it ends when a
  test calls `FakeRuntime.exit(cuuid, code)`, or by a signal. Like a container's pid 1 without handlers,
  a container's init ignores every signal but SIGKILL (and SIGSTOP, used for pause) unless the fake is
  made with `terminate_on`; an exec'd process dies of the default ones. The init's end kills the
  container's other processes, as the end of a pid namespace does.
- the command is looked up in the bundle's rootfs as runc does (PATH from the process env, symlinks
  followed inside the rootfs), so a missing or non-executable command fails create/exec with runc's text.

Not modelled: attach sockets (`socket_dir` stays empty), terminals, logs (the log file is created empty),
cgroups and OOM.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path

from agent.errors import FailedPrecondition, RuntimeCommand
from agent.runtime import monitor as real_monitor
from agent.runtime.monitor import ConmonJob, ExitInfo, Launched
from agent.runtime.oci import RuntimeState

# every catchable signal whose default action ends or stops a process; SIGCHLD stays default (the monitor
# waits for its child) and SIGCONT too (resume)
PID1_IGNORED = frozenset(set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGCONT})
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
START_TIMEOUT = 10.0

# $1 container id, $2 cuuid, $3 persist dir, $4 pid file, $5 conmon pid file, $6 control fifo, $7 pids file,
# $8 init|exec, $9 signals the process ignores, ${10} log file
MONITOR_SCRIPT = r"""
: > "${10}"
(
  [ -n "$9" ] && trap '' $9
  sh -c 'read code; exit "${code:-0}"' fake-container "$1" "$2" <>"$6" >/dev/null 2>&1 3>&- &
  child=$!
  echo "$child" >> "$7"
  echo "$child" > "$4"
  echo "$child" >&3
  exec 3>&-
  wait "$child"
  code=$?
  echo "$code" > "$3/exit.tmp" && mv -f "$3/exit.tmp" "$3/exit"
  if [ "$8" = init ]; then
    while read -r p; do
      [ "$p" != "$child" ] && grep -q "$1" "/proc/$p/cmdline" 2>/dev/null && kill -9 "$p" 2>/dev/null
    done < "$7"
  fi
) 3>&1 >/dev/null 2>&1 </dev/null &
echo "$!" > "$5"
"""

# `<runtime> exec` run by the caller with pipes (exec_argv): $1 container id, $2 cuuid, $3 pid file,
# $4 control fifo, $5 pids file. Exits with the process's code, 128+N for signal N, as runc exec does.
EXEC_SCRIPT = r"""
sh -c 'read code; exit "${code:-0}"' fake-container "$1" "$2" <>"$4" &
child=$!
echo "$child" >> "$5"
echo "$child" > "$3.tmp" && mv -f "$3.tmp" "$3"
wait "$child"
"""

EXEC_FAILED_SCRIPT = r"""printf '%s\n' "$1" >> "$2"; exit 255"""


def logrus(message: str) -> str:
    """A line of runc's stderr: `time="…" level=error msg="…"`."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    return f'time="{stamp}" level=error msg="{escaped}"\n'


def process_alive(pid: int, container_id: str) -> bool:
    """`pid` runs (not a zombie) and is one of the fake's processes of `container_id` (not a reused pid)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, IndexError):
        return False
    return fields[0] not in (b"Z", b"X") and b"fake-container" in cmdline and container_id.encode() in cmdline


def _resolve_in_rootfs(rootfs: Path, path: str) -> Path | None:
    """`path` inside `rootfs` with symlinks followed (absolute ones from the rootfs); None when missing."""
    current = rootfs / path.lstrip("/")
    for _ in range(40):
        try:
            if not current.is_symlink():
                return current if current.exists() else None
            target = os.readlink(current)
        except OSError:
            return None
        current = rootfs / target.lstrip("/") if target.startswith("/") else current.parent / target
    return None


def lookup_problem(rootfs: Path, process: dict[str, object]) -> str:
    """runc's text when the process's command cannot be executed in `rootfs`; "" when it can."""
    args = process.get("args")
    command = str(args[0]) if isinstance(args, list) and args else ""
    env = process.get("env")
    path_var = DEFAULT_PATH
    for item in env if isinstance(env, list) else []:
        if str(item).startswith("PATH="):
            path_var = str(item)[5:]
    if "/" not in command:
        for directory in path_var.split(":"):
            found = _resolve_in_rootfs(rootfs, f"{directory}/{command}") if command else None
            if found is not None and found.is_file() and os.access(found, os.X_OK):
                return ""
        return f'exec: "{command}": executable file not found in $PATH'
    found = _resolve_in_rootfs(rootfs, command)
    if found is None:
        return f'exec: "{command}": stat {command}: no such file or directory'
    if not found.is_file() or not os.access(found, os.X_OK):
        return f'exec: "{command}": permission denied'
    return ""


def _send(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


class FakeRuntime:
    """A `Runtime` (agent/runtime/protocols.py) whose containers are the fake's processes (see above)."""

    def __init__(
        self,
        root: Path,
        name: str = "runc",
        *,
        terminate_on: frozenset[int] = frozenset(),
        problem: str = "",
    ) -> None:
        self.root = root
        self._name = name
        self.ignored = PID1_IGNORED - terminate_on
        self.problem = FailedPrecondition(problem) if problem else None
        root.mkdir(parents=True, exist_ok=True, mode=0o700)

    # ---- the Runtime protocol --------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._name

    def ensure_usable(self) -> None:
        if self.problem is not None:
            raise FailedPrecondition(str(self.problem))

    def exists(self, container_id: str) -> bool:
        return self.problem is None and (self.root / container_id / "state.json").exists()

    def list_ids(self) -> list[str]:
        try:
            return sorted(p.name for p in self.root.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    async def state(self, container_id: str) -> RuntimeState | None:
        self.ensure_usable()
        return self._state(container_id)

    async def start(self, container_id: str) -> None:
        current = self._known("start", container_id)
        refusals = {
            "running": "cannot start an already running container",
            "paused": "cannot start a container in the paused state",
            "stopped": "cannot start a container that has stopped",
        }
        if current.status in refusals:
            raise self._error("start", refusals[current.status])
        self._store(container_id, status="running")

    async def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> None:
        current = self._known("kill", container_id)
        if current.status == "stopped":
            if all_processes:
                return  # runc: nothing left to signal is no error with --all
            raise self._error("kill", "container not running")
        _send(self._live_pids(container_id) if all_processes else [current.pid], signal)

    async def pause(self, container_id: str) -> None:
        current = self._known("pause", container_id)
        if current.status not in ("created", "running"):
            raise self._error("pause", "container not running")
        _send(self._live_pids(container_id), signal.SIGSTOP)
        self._store(container_id, status="paused", paused_from=current.status)

    async def resume(self, container_id: str) -> None:
        current = self._known("resume", container_id)
        if current.status != "paused":
            raise self._error("resume", "container not paused")
        _send(self._live_pids(container_id), signal.SIGCONT)
        self._store(container_id, status=str(self._load(container_id).get("paused_from", "running")))

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """As `OciRuntime.delete`: unknown is deleted; a state dir without state.json is removed (runc
        removes it, then says "container does not exist" unless forced; the adapter ignores that)."""
        directory = self.root / container_id
        if not directory.exists():
            return
        self.ensure_usable()
        current = self._state(container_id)
        if current is None:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            return
        if current.status in ("running", "paused") and not force:
            refusal = f"cannot delete container {container_id} that is not stopped: {current.status}"
            raise self._error("delete", refusal)
        pids = self._live_pids(container_id)
        _send(pids, signal.SIGKILL)
        async with asyncio.timeout(START_TIMEOUT):  # runc waits for the processes it killed
            await asyncio.gather(*(real_monitor.wait_pid_exit(p) for p in pids))
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def pids(self, container_id: str) -> list[int]:
        current = self._known("ps", container_id)
        return [] if current.status == "stopped" else self._live_pids(container_id)

    def exec_argv(self, container_id: str, process: Path, pidfile: Path, log: Path) -> list[str]:
        self.ensure_usable()
        cuuid = process.parent.name
        problem = self._exec_problem(container_id, process)
        if problem:
            line = json.dumps({"level": "error", "msg": problem, "time": datetime.now(UTC).isoformat()})
            return ["/bin/sh", "-c", EXEC_FAILED_SCRIPT, "fake-runc-exec", line, str(log)]
        fifo = self._fifo(container_id, cuuid)
        pids_file = str(self.root / container_id / "pids")
        return [
            "/bin/sh", "-c", EXEC_SCRIPT, "fake-runc-exec", container_id, cuuid, str(pidfile), fifo, pids_file
        ]  # fmt: skip

    # ---- test controls ---------------------------------------------------------------------------------

    def exit(self, cuuid: str, code: int) -> None:
        """Make the process of `cuuid` (a running container's init, or an exec session) end with `code`."""
        for fifo in self.root.glob(f"*/ctl-{cuuid}"):
            container_id = fifo.parent.name
            current = self._state(container_id)
            if current is None or current.status not in ("running", "paused"):
                raise RuntimeError(f"{container_id} is not running: its process cannot exit")
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody holds it for reading, the process is gone
                raise RuntimeError(f"the process of {cuuid} has ended") from exc
            try:
                os.write(fd, f"{code}\n".encode())
            finally:
                os.close(fd)
            return
        raise RuntimeError(f"the fake runtime has no process {cuuid}")

    # ---- the monitor's side ----------------------------------------------------------------------------

    def _exec_problem(self, container_id: str, process: Path) -> str:
        """runc's error for an exec of `process` into `container_id`, "" when it can run."""
        current = self._state(container_id)
        if current is None:
            return "container does not exist"
        if current.status == "stopped":
            return "exec failed: cannot exec in a stopped container"
        if current.status == "paused":
            return "exec failed: cannot exec in a paused container (use --ignore-paused to override)"
        spec = json.loads(process.read_text())
        problem = lookup_problem(self._rootfs(Path(current.bundle)), spec)
        return f"exec failed: unable to start container process: {problem}" if problem else ""

    def _rootfs(self, bundle: Path) -> Path:
        config = json.loads((bundle / "config.json").read_text())
        return bundle / str(config.get("root", {}).get("path", "rootfs"))

    def _fifo(self, container_id: str, cuuid: str) -> str:
        fifo = self.root / container_id / f"ctl-{cuuid}"
        with contextlib.suppress(FileNotFoundError):
            fifo.unlink()
        os.mkfifo(fifo, 0o600)
        return str(fifo)

    async def spawn(self, job: ConmonJob) -> Launched:
        """What conmon + `runc create`/`runc exec` do for `job`; a RuntimeCommand with runc's text if not."""
        self.ensure_usable()
        cid = job.container_id
        directory = self.root / cid
        if job.exec_spec is None:
            action = "create"
            if directory.exists():
                taken = "container with given ID already exists"
                raise self._error(action, f"{self.name} create failed: {taken}")
            config = json.loads((job.bundle / "config.json").read_text())
            problem = lookup_problem(self._rootfs(job.bundle), config.get("process", {}))
            if problem:
                failed = f"{self.name} create failed: unable to start container process"
                raise self._error(action, f"{failed}: {problem}")
            directory.mkdir(mode=0o700)
            ignored = " ".join(str(int(s)) for s in sorted(self.ignored))
        else:
            action = "exec"
            problem = self._exec_problem(cid, job.exec_spec)
            if problem:
                raise self._error(action, problem)
            ignored = ""
        fifo = self._fifo(cid, job.cuuid)
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", MONITOR_SCRIPT, "fake-conmon",
            cid, job.cuuid, str(job.persist_dir), str(job.pidfile), str(job.conmon_pidfile), fifo,
            str(directory / "pids"), "init" if job.exec_spec is None else "exec", ignored, str(job.log_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        async with asyncio.timeout(START_TIMEOUT):
            out, _ = await proc.communicate()
        pid = int(out.decode().strip() or 0)
        if proc.returncode != 0 or pid <= 0:
            if job.exec_spec is None:
                shutil.rmtree(directory, ignore_errors=True)
            raise self._error(action, "the fake monitor did not start")
        if job.exec_spec is None:
            self._store(cid, id=cid, status="created", pid=pid, bundle=str(job.bundle))
        return Launched(conmon_pid=real_monitor.read_pidfile(job.conmon_pidfile), pid=pid)

    # ---- state -----------------------------------------------------------------------------------------

    def _load(self, container_id: str) -> dict[str, object]:
        try:
            data: dict[str, object] = json.loads((self.root / container_id / "state.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def _store(self, container_id: str, **changes: object) -> None:
        path = self.root / container_id / "state.json"
        tmp = path.with_name("state.json.tmp")
        tmp.write_text(json.dumps({**self._load(container_id), **changes}))
        tmp.replace(path)

    def _state(self, container_id: str) -> RuntimeState | None:
        data = self._load(container_id)
        if not data:
            return None
        status, pid = str(data["status"]), int(str(data["pid"]))
        if not process_alive(pid, container_id):
            status, pid = "stopped", 0
        return RuntimeState(container_id, status, pid, str(data["bundle"]))

    def _known(self, verb: str, container_id: str) -> RuntimeState:
        self.ensure_usable()
        current = self._state(container_id)
        if current is None:
            raise self._error(verb, "container does not exist")
        return current

    def _live_pids(self, container_id: str) -> list[int]:
        try:
            lines = (self.root / container_id / "pids").read_text().split()
        except FileNotFoundError:
            return []
        return [int(p) for p in dict.fromkeys(lines) if process_alive(int(p), container_id)]

    def _error(self, verb: str, message: str) -> RuntimeCommand:
        """A refused runtime command as `OciRuntime._run` raises it, or a refused create/exec as
        `Conmon.launch` does (runc's stderr line, relayed by conmon)."""
        return RuntimeCommand(f"{self.name} {verb}", 1, logrus(message))


class FakeMonitor:
    """A `Monitor` (agent/runtime/protocols.py) for `FakeRuntime`: exit and pid files as conmon's."""

    def __init__(self, runtime: FakeRuntime, socket_dir: Path) -> None:
        self.runtime = runtime
        self._socket_dir = socket_dir
        socket_dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    @property
    def socket_dir(self) -> Path:
        return self._socket_dir

    async def launch(
        self, job: ConmonJob, on_attach_ready: Callable[[], Awaitable[None]] | None = None
    ) -> Launched:
        """As `Conmon.launch`; `on_attach_ready` is not called (the fake has no attach sockets)."""
        self.runtime.ensure_usable()
        job.persist_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("exit", "oom"):
            with contextlib.suppress(FileNotFoundError):
                (job.persist_dir / stale).unlink()
        return await self.runtime.spawn(job)

    async def wait(self, conmon_pid: int) -> None:
        await real_monitor.wait_pid_exit(conmon_pid)

    def read_exit(self, persist_dir: Path) -> ExitInfo | None:
        return real_monitor.read_exit(persist_dir)

    def read_pid(self, pidfile: Path) -> int:
        return real_monitor.read_pidfile(pidfile)

    def is_running(self, conmon_pid: int, cuuid: str) -> bool:
        return real_monitor.process_matches(conmon_pid, cuuid)


def fake_bundle(
    directory: Path, args: list[str], *, executables: Iterable[str] = ("bin/sh", "bin/sleep")
) -> Path:
    """A bundle for the fake: config.json running `args` and a rootfs holding empty `executables` (and an
    /etc/passwd that is not executable, to have one)."""
    rootfs = directory / "rootfs"
    for path in executables:
        target = rootfs / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"")
        target.chmod(0o755)
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": args, "env": [f"PATH={DEFAULT_PATH}"], "cwd": "/", "terminal": False},
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory
