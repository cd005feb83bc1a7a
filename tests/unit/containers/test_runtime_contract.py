"""The runtime contract: what the container core may rely on from a `Runtime` and a `Monitor`.

Every `test_*` here takes a `world` and runs against the fake (tests/support/fake_runtime.py) in this file,
no root needed, and against runc + conmon in tests/integration/containers/test_runtime_contract_real.py,
which imports these same functions: the fake cannot drift from the real thing unnoticed.

A container's main process is `sh` as pid 1 blocked on a control FIFO (`World.end` makes it exit with a
code); an exec'd process is `sleep`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.errors import RuntimeCommand
from agent.runtime.monitor import ConmonJob, Launched
from agent.runtime.oci import start_error_exit_code
from agent.runtime.protocols import Monitor, Runtime
from tests.support.agent import wait_for
from tests.support.fake_runtime import FakeMonitor, FakeRuntime, fake_bundle

# the main process of every container: pid 1 waiting for its exit code on a FIFO in the rootfs
MAIN = ["sh", "-c", 'read code < "/ctl-$ID"; exit "$code"']
CANNOT = "exec failed: unable to start container process:"  # runc's words when exec cannot run the command
CREATE = "runc create failed: unable to start container process:"


@dataclass
class World:
    """A runtime and monitor under test, and how to make containers for them."""

    runtime: Runtime
    monitor: Monitor
    base: Path
    make_bundle: Callable[[str, list[str]], Path]  # (container id, args) → bundle directory
    end: Callable[[str, int], Awaitable[None]]  # make a running container's main process exit with a code
    created: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        return secrets.token_hex(8)

    def job(self, cid: str, bundle: Path) -> ConmonJob:
        run = self.base / "run" / cid
        return ConmonJob(cid, cid, cid, bundle, run, run / "ctr.log", run / "pid", run / "conmon.pid")

    async def create(self, cid: str | None = None, args: list[str] | None = None) -> tuple[str, Launched]:
        cid = cid or self.new_id()
        bundle = self.make_bundle(cid, args or MAIN)
        self.created.append(cid)
        return cid, await self.monitor.launch(self.job(cid, bundle))

    async def running(self) -> tuple[str, Launched]:
        cid, launched = await self.create()
        await self.runtime.start(cid)
        return cid, launched

    async def exec_dir(self, cid: str, args: list[str]) -> Path:
        """A directory named by a new exec ID holding `process.json`: the container's process with `args`."""
        d = self.base / "exec" / self.new_id()
        d.mkdir(parents=True)
        state = await self.runtime.state(cid)
        assert state is not None
        process = json.loads((Path(state.bundle) / "config.json").read_text())["process"]
        (d / "process.json").write_text(json.dumps({**process, "args": args}))
        return d

    async def exec(self, cid: str, args: list[str]) -> tuple[ConmonJob, Launched]:
        d = await self.exec_dir(cid, args)
        exec_id = d.name
        job = ConmonJob(
            cid, exec_id, cid, d, d, d / "exec.log", d / "pid", d / "conmon.pid", exec_spec=d / "process.json"
        )
        return job, await self.monitor.launch(job)

    def run_dir(self, cid: str) -> Path:
        return self.base / "run" / cid

    async def cleanup(self) -> None:
        for cid in self.created:
            try:
                await self.runtime.delete(cid, force=True)
            except RuntimeCommand as exc:
                print(f"cleanup of {cid}: {exc}")


def refused(exc: pytest.ExceptionInfo[RuntimeCommand], command: str, message: str) -> None:
    """The error is the runtime's own refusal: command, returncode 1 and runc's message in its stderr."""
    assert exc.value.command == f"runc {command}"
    assert exc.value.returncode == 1
    escaped = message.replace('"', '\\"')
    assert re.search(r'level=error msg="' + re.escape(escaped) + '"', exc.value.stderr), exc.value.stderr


async def ended(world: World, launched: Launched, persist: Path) -> int:
    """Wait for the monitor to exit; the exit code it recorded."""
    async with asyncio.timeout(30):
        await world.monitor.wait(launched.conmon_pid)
    info = world.monitor.read_exit(persist)
    assert info is not None, "the monitor recorded no exit"
    return info.code


async def status(world: World, cid: str) -> str:
    state = await world.runtime.state(cid)
    return "" if state is None else state.status


# ---- the fake world -------------------------------------------------------------------------------------


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    runtime = FakeRuntime(tmp_path / "runc")

    def make_bundle(cid: str, args: list[str]) -> Path:
        return fake_bundle(tmp_path / "bundles" / cid, args)

    async def end(cid: str, code: int) -> None:
        runtime.exit(cid, code)

    w = World(runtime, FakeMonitor(runtime, tmp_path / "s"), tmp_path, make_bundle, end)
    yield w
    await w.cleanup()


# ---- create / start / exit ------------------------------------------------------------------------------


async def test_create_leaves_a_created_container_with_its_pid_files(world: World) -> None:
    cid, launched = await world.create()
    state = await world.runtime.state(cid)
    assert state is not None and state.status == "created" and state.pid == launched.pid > 0
    assert world.runtime.exists(cid) and cid in world.runtime.list_ids()
    assert world.monitor.read_pid(world.run_dir(cid) / "pid") == launched.pid
    assert world.monitor.read_pid(world.run_dir(cid) / "conmon.pid") == launched.conmon_pid
    assert world.monitor.is_running(launched.conmon_pid, cid)
    assert not world.monitor.is_running(launched.pid, cid)  # the container's process is not its monitor
    assert world.monitor.read_exit(world.run_dir(cid)) is None
    assert await world.runtime.pids(cid) == [launched.pid]


async def test_start_runs_it_and_its_exit_code_is_recorded(world: World) -> None:
    cid, launched = await world.running()
    assert await status(world, cid) == "running"
    await world.end(cid, 3)
    assert await ended(world, launched, world.run_dir(cid)) == 3
    state = await world.runtime.state(cid)
    assert state is not None and state.status == "stopped" and state.pid == 0
    assert not world.monitor.is_running(launched.conmon_pid, cid)


async def test_kill_ends_it_with_the_signals_exit_code(world: World) -> None:
    cid, launched = await world.running()
    await world.runtime.kill(cid, signal.SIGKILL)
    assert await ended(world, launched, world.run_dir(cid)) == 128 + signal.SIGKILL
    assert await status(world, cid) == "stopped"
    assert await world.runtime.pids(cid) == []


async def test_pid_1_ignores_sigterm_without_a_handler(world: World) -> None:
    cid, launched = await world.running()
    await world.runtime.kill(cid, signal.SIGTERM)
    await world.end(cid, 5)  # it survived the signal to read its exit code (143 had SIGTERM ended it)
    assert await ended(world, launched, world.run_dir(cid)) == 5


async def test_a_created_container_can_be_killed(world: World) -> None:
    cid, launched = await world.create()
    await world.runtime.kill(cid, signal.SIGKILL, all_processes=True)
    assert await ended(world, launched, world.run_dir(cid)) == 137
    assert await status(world, cid) == "stopped"


# ---- exec ------------------------------------------------------------------------------------------------


async def test_exec_runs_a_process_in_a_running_container(world: World) -> None:
    cid, launched = await world.running()
    job, ex = await world.exec(cid, ["sleep", "600"])
    assert ex.pid > 0 and ex.pid != launched.pid
    assert sorted(await world.runtime.pids(cid)) == sorted([launched.pid, ex.pid])
    assert world.monitor.is_running(ex.conmon_pid, job.cuuid)
    os.kill(ex.pid, signal.SIGTERM)  # an exec'd process is not pid 1: the default action ends it
    assert await ended(world, ex, job.persist_dir) == 128 + signal.SIGTERM
    assert await status(world, cid) == "running"
    assert await world.runtime.pids(cid) == [launched.pid]


async def test_the_end_of_a_container_ends_its_exec_processes(world: World) -> None:
    cid, launched = await world.running()
    job, ex = await world.exec(cid, ["sleep", "600"])
    await world.end(cid, 0)
    assert await ended(world, launched, world.run_dir(cid)) == 0
    assert await ended(world, ex, job.persist_dir) == 137


async def test_kill_all_signals_every_process(world: World) -> None:
    cid, launched = await world.running()
    job, ex = await world.exec(cid, ["sleep", "600"])
    await world.runtime.kill(cid, signal.SIGKILL, all_processes=True)
    assert await ended(world, ex, job.persist_dir) == 137
    assert await ended(world, launched, world.run_dir(cid)) == 137


async def test_exec_of_a_missing_or_non_executable_command_is_refused(world: World) -> None:
    cid, _ = await world.running()
    with pytest.raises(RuntimeCommand) as missing:
        await world.exec(cid, ["nosuch"])
    refused(
        missing,
        "exec",
        f'{CANNOT} exec: "nosuch": executable file not found in $PATH',
    )
    assert start_error_exit_code(missing.value) == 127
    with pytest.raises(RuntimeCommand) as denied:
        await world.exec(cid, ["/etc/passwd"])
    refused(
        denied,
        "exec",
        f'{CANNOT} exec: "/etc/passwd": permission denied',
    )
    assert start_error_exit_code(denied.value) == 126
    assert await status(world, cid) == "running"


async def test_exec_into_a_stopped_container_is_refused(world: World) -> None:
    cid, launched = await world.running()
    state = await world.runtime.state(cid)
    assert state is not None
    await world.runtime.kill(cid, signal.SIGKILL)
    await ended(world, launched, world.run_dir(cid))
    with pytest.raises(RuntimeCommand) as exc:
        await world.exec(cid, ["sleep", "1"])
    refused(exc, "exec", "exec failed: cannot exec in a stopped container")


async def test_exec_argv_runs_a_process_with_the_callers_pipes(world: World) -> None:
    cid, launched = await world.running()
    d = await world.exec_dir(cid, ["sleep", "600"])
    argv = world.runtime.exec_argv(cid, d / "process.json", d / "pid", d / "runtime.log")
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, cwd=str(d)
    )
    try:
        await asyncio.to_thread(wait_for, lambda: world.monitor.read_pid(d / "pid") > 0, 30, "the pid file")
        pid = world.monitor.read_pid(d / "pid")
        assert sorted(await world.runtime.pids(cid)) == sorted([launched.pid, pid])
        os.kill(pid, signal.SIGKILL)
        async with asyncio.timeout(30):
            assert await proc.wait() == 128 + signal.SIGKILL
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert await status(world, cid) == "running"


async def test_exec_argv_into_a_stopped_container_fails_with_the_error_in_its_log(world: World) -> None:
    cid, launched = await world.running()
    d = await world.exec_dir(cid, ["sleep", "600"])
    await world.runtime.kill(cid, signal.SIGKILL)
    await ended(world, launched, world.run_dir(cid))
    argv = world.runtime.exec_argv(cid, d / "process.json", d / "pid", d / "runtime.log")
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL, cwd=str(d))
    async with asyncio.timeout(30):
        assert await proc.wait() == 255
    errors = [json.loads(line) for line in (d / "runtime.log").read_text().splitlines()]
    assert [(e["level"], e["msg"]) for e in errors] == [
        ("error", "exec failed: cannot exec in a stopped container")
    ]
    assert world.monitor.read_pid(d / "pid") == 0


# ---- pause / resume ------------------------------------------------------------------------------------


async def test_pause_and_resume(world: World) -> None:
    cid, launched = await world.running()
    await world.runtime.pause(cid)
    assert await status(world, cid) == "paused"
    with pytest.raises(RuntimeCommand) as again:
        await world.runtime.pause(cid)
    refused(again, "pause", "container not running")
    with pytest.raises(RuntimeCommand) as start:
        await world.runtime.start(cid)
    refused(start, "start", "cannot start a container in the paused state")
    with pytest.raises(RuntimeCommand) as exec_:
        await world.exec(cid, ["sleep", "1"])
    refused(exec_, "exec", "exec failed: cannot exec in a paused container (use --ignore-paused to override)")
    await world.runtime.resume(cid)
    assert await status(world, cid) == "running"
    with pytest.raises(RuntimeCommand) as resume:
        await world.runtime.resume(cid)
    refused(resume, "resume", "container not paused")
    await world.end(cid, 7)  # it still runs
    assert await ended(world, launched, world.run_dir(cid)) == 7


# ---- delete ----------------------------------------------------------------------------------------------


async def test_delete_refuses_a_running_container_without_force(world: World) -> None:
    cid, launched = await world.running()
    with pytest.raises(RuntimeCommand) as exc:
        await world.runtime.delete(cid)
    refused(exc, "delete", f"cannot delete container {cid} that is not stopped: running")
    assert await status(world, cid) == "running"
    await world.runtime.delete(cid, force=True)
    assert await world.runtime.state(cid) is None
    assert not world.runtime.exists(cid) and cid not in world.runtime.list_ids()
    assert await ended(world, launched, world.run_dir(cid)) == 137


async def test_delete_of_a_stopped_or_created_container_and_of_an_unknown_one(world: World) -> None:
    cid, launched = await world.running()
    await world.end(cid, 0)
    await ended(world, launched, world.run_dir(cid))
    await world.runtime.delete(cid)
    assert await world.runtime.state(cid) is None
    created, created_launched = await world.create()
    await world.runtime.delete(created)  # runc deletes a created container without --force
    assert await world.runtime.state(created) is None
    assert await ended(world, created_launched, world.run_dir(created)) == 137
    await world.runtime.delete("0" * 16)
    await world.runtime.delete("0" * 16, force=True)


@pytest.mark.parametrize("force", [False, True])
async def test_delete_removes_the_state_a_killed_create_left(world: World, force: bool) -> None:
    cid = world.new_id()
    (world.base / "runc" / cid).mkdir(parents=True)  # a state dir without state.json
    (world.base / "runc" / cid / "exec.fifo").touch()
    assert cid in world.runtime.list_ids() and not world.runtime.exists(cid)
    assert await world.runtime.state(cid) is None
    await world.runtime.delete(cid, force=force)
    assert cid not in world.runtime.list_ids()


# ---- refusals --------------------------------------------------------------------------------------------


async def test_commands_on_an_unknown_container_are_refused(world: World) -> None:
    cid = world.new_id()
    assert await world.runtime.state(cid) is None and not world.runtime.exists(cid)
    for command, call in [
        ("start", world.runtime.start(cid)),
        ("kill", world.runtime.kill(cid, signal.SIGKILL)),
        ("pause", world.runtime.pause(cid)),
        ("resume", world.runtime.resume(cid)),
    ]:
        with pytest.raises(RuntimeCommand) as exc:
            await call
        refused(exc, command, "container does not exist")


async def test_create_of_an_existing_id_is_refused_and_leaves_the_first(world: World) -> None:
    cid, launched = await world.create()
    with pytest.raises(RuntimeCommand) as exc:
        await world.create(cid)
    refused(exc, "create", "runc create failed: container with given ID already exists")
    state = await world.runtime.state(cid)
    assert state is not None and state.status == "created" and state.pid == launched.pid


async def test_create_of_a_missing_or_non_executable_command_is_refused(world: World) -> None:
    with pytest.raises(RuntimeCommand) as missing:
        await world.create(args=["nosuch"])
    refused(
        missing,
        "create",
        f'{CREATE} exec: "nosuch": executable file not found in $PATH',
    )
    assert start_error_exit_code(missing.value) == 127
    with pytest.raises(RuntimeCommand) as absent:
        await world.create(args=["/bin/nosuch"])
    refused(
        absent,
        "create",
        f'{CREATE} exec: "/bin/nosuch": stat /bin/nosuch: no such file or directory',
    )
    assert start_error_exit_code(absent.value) == 127
    with pytest.raises(RuntimeCommand) as denied:
        await world.create(args=["/etc/passwd"])
    refused(
        denied,
        "create",
        f'{CREATE} exec: "/etc/passwd": permission denied',
    )
    assert start_error_exit_code(denied.value) == 126
    assert [c for c in world.runtime.list_ids() if c in world.created] == []


async def test_start_twice_and_start_of_a_stopped_container_are_refused(world: World) -> None:
    cid, launched = await world.running()
    with pytest.raises(RuntimeCommand) as twice:
        await world.runtime.start(cid)
    refused(twice, "start", "cannot start an already running container")
    await world.runtime.kill(cid, signal.SIGKILL)
    await ended(world, launched, world.run_dir(cid))
    with pytest.raises(RuntimeCommand) as stopped:
        await world.runtime.start(cid)
    refused(stopped, "start", "cannot start a container that has stopped")


async def test_kill_of_a_stopped_container_is_refused_unless_all(world: World) -> None:
    cid, launched = await world.running()
    await world.runtime.kill(cid, signal.SIGKILL)
    await ended(world, launched, world.run_dir(cid))
    with pytest.raises(RuntimeCommand) as exc:
        await world.runtime.kill(cid, signal.SIGKILL)
    refused(exc, "kill", "container not running")
    await world.runtime.kill(cid, signal.SIGKILL, all_processes=True)  # nothing to signal: no error
    for command, call in [("pause", world.runtime.pause(cid)), ("resume", world.runtime.resume(cid))]:
        with pytest.raises(RuntimeCommand) as refusal:
            await call
        refused(refusal, command, "container not running" if command == "pause" else "container not paused")
    assert await world.runtime.pids(cid) == []


# ---- fake only -------------------------------------------------------------------------------------------


async def test_the_fake_is_a_runtime_and_a_monitor(tmp_path: Path) -> None:
    fake = FakeRuntime(tmp_path / "r", problem="runc is not installed on this host")
    runtime: Runtime = fake
    monitor: Monitor = FakeMonitor(fake, tmp_path / "s")
    assert monitor.socket_dir == tmp_path / "s"
    assert not runtime.exists("x")
    with pytest.raises(Exception, match="not installed"):
        runtime.ensure_usable()


async def test_a_new_fake_over_the_same_root_sees_the_same_containers(world: World, tmp_path: Path) -> None:
    """As runc's state and conmon outlive the agent, the fake's outlive the objects (agent restarts)."""
    cid, launched = await world.running()
    again = FakeRuntime(tmp_path / "runc")
    monitor = FakeMonitor(again, tmp_path / "s")
    state = await again.state(cid)
    assert state is not None and state.status == "running" and state.pid == launched.pid
    assert monitor.is_running(launched.conmon_pid, cid)
    await again.kill(cid, signal.SIGKILL)
    await monitor.wait(launched.conmon_pid)
    info = monitor.read_exit(world.run_dir(cid))
    assert info is not None and info.code == 137


async def test_terminate_on_makes_the_fake_init_die_of_that_signal(tmp_path: Path) -> None:
    runtime = FakeRuntime(tmp_path / "runc", terminate_on=frozenset({signal.SIGTERM}))
    monitor = FakeMonitor(runtime, tmp_path / "s")
    run = tmp_path / "run"
    bundle = fake_bundle(tmp_path / "b", ["sleep", "600"])
    launched = await monitor.launch(
        ConmonJob("c1", "c1", "c1", bundle, run, run / "log", run / "pid", run / "cp")
    )
    await runtime.start("c1")
    await runtime.kill("c1", signal.SIGTERM)
    await monitor.wait(launched.conmon_pid)
    info = monitor.read_exit(run)
    assert info is not None and info.code == 128 + signal.SIGTERM
    await runtime.delete("c1")
