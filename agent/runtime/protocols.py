"""The seams between the container core and the processes that run containers.

`Runtime` is what the core asks of the OCI runtime (`agent.runtime.oci.OciRuntime`: runc or crun), `Monitor`
what it asks of the per-run monitor (`agent.runtime.monitor.Conmon`). The composition root passes the real
ones in; the unit tier passes `tests/support/fake_runtime.py`, which the contract suite holds to the same
observable behaviour (the same states, exit files and errors): tests/unit/containers/test_runtime_contract.py
against the fake, tests/integration/containers/test_runtime_contract_real.py against runc and conmon.

Errors, for both: a command the runtime refused is `RuntimeCommand` (with `returncode` and `stderr`), a
runtime unusable on this host `FailedPrecondition`, a command that hung `DeadlineExceeded`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from agent.runtime.monitor import Conmon, ConmonJob, ExitInfo, Launched
from agent.runtime.oci import OciRuntime, RuntimeState


class Runtime(Protocol):
    """An OCI runtime keeping its containers' state under its own root."""

    @property
    def name(self) -> str:
        """"runc" or "crun": the start of every `RuntimeCommand.command` it raises."""
        ...

    def ensure_usable(self) -> None:
        """Raise FailedPrecondition (with the reason) when runs cannot work on this host."""
        ...

    def exists(self, container_id: str) -> bool:
        """Whether the runtime has complete state (state.json) for the container."""
        ...

    def list_ids(self) -> list[str]:
        """Every container the runtime has state for, complete or left by a killed create."""
        ...

    async def state(self, container_id: str) -> RuntimeState | None:
        """creating|created|running|paused|stopped and the init pid; None for an unknown container."""
        ...

    async def start(self, container_id: str) -> None:
        """Run the user process of a created container."""
        ...

    async def kill(self, container_id: str, signal: int, *, all_processes: bool = False) -> None:
        """Send `signal` to the init process (every process of the container with `all_processes`)."""
        ...

    async def pause(self, container_id: str) -> None: ...

    async def resume(self, container_id: str) -> None: ...

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove the runtime's state; an unknown container is already deleted. `force` kills first."""
        ...

    async def pids(self, container_id: str) -> list[int]:
        """Host pids of every process of the container."""
        ...

    def exec_argv(self, container_id: str, process: Path, pidfile: Path, log: Path) -> list[str]:
        """The command line of an exec the caller runs itself with the process's stdio as pipes; the
        runtime writes the process's pid to `pidfile` once it runs and its own errors to `log` as JSON
        lines (`{"level": "error", "msg": ...}`)."""
        ...


class Monitor(Protocol):
    """Starts one monitor process per container run or exec session and reads how it ended.

    A monitor outlives the agent; it writes the process's exit code to `<persist_dir>/exit` (and `oom` after
    an OOM kill) before it exits, so `wait` returning means `read_exit` has the answer if there is one.
    """

    @property
    def socket_dir(self) -> Path:
        """Where the attach sockets live (`<socket_dir>/<cuuid>/attach`)."""
        ...

    async def launch(
        self, job: ConmonJob, on_attach_ready: Callable[[], Awaitable[None]] | None = None
    ) -> Launched:
        """Create the container (or exec process) under a new monitor; raise RuntimeCommand with the
        runtime's error when it could not (the process then does not exist)."""
        ...

    async def wait(self, conmon_pid: int) -> None:
        """Return once the monitor `conmon_pid` has exited (also one the agent did not start)."""
        ...

    def read_exit(self, persist_dir: Path) -> ExitInfo | None:
        """The recorded end of the run, None when the monitor recorded none."""
        ...

    def read_pid(self, pidfile: Path) -> int:
        """A pid file's pid, 0 when it is missing or empty."""
        ...

    def is_running(self, conmon_pid: int, cuuid: str) -> bool:
        """Whether `conmon_pid` is alive and is the monitor of `cuuid` (not a reused pid)."""
        ...


def _real_ones_conform(runtime: OciRuntime, conmon: Conmon) -> tuple[Runtime, Monitor]:
    """Never called: mypy checks here that the real classes satisfy the protocols."""
    return runtime, conmon
