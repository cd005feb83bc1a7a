"""The runtime contract (tests/unit/containers/test_runtime_contract.py) against runc + conmon.

The same test functions as against the fake, imported from there; only `world` differs: a busybox root
filesystem (tests/support/images.py) shared by bundles whose config.json is runc's default spec with the
process, a cgroup parent of our own and the container's control FIFO.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import cgroups
from agent.runtime.monitor import Conmon
from agent.runtime.oci import OciRuntime
from tests.support.images import busybox_rootfs_bytes
from tests.support.sweep import CGROUP_ROOT, pids_mentioning
from tests.unit.containers.test_runtime_contract import (  # the contract, run here against runc
    World,
    test_a_created_container_can_be_killed,
    test_commands_on_an_unknown_container_are_refused,
    test_create_leaves_a_created_container_with_its_pid_files,
    test_create_of_a_missing_or_non_executable_command_is_refused,
    test_create_of_an_existing_id_is_refused_and_leaves_the_first,
    test_delete_of_a_stopped_or_created_container_and_of_an_unknown_one,
    test_delete_refuses_a_running_container_without_force,
    test_delete_removes_the_state_a_killed_create_left,
    test_exec_argv_into_a_stopped_container_fails_with_the_error_in_its_log,
    test_exec_argv_runs_a_process_with_the_callers_pipes,
    test_exec_into_a_stopped_container_is_refused,
    test_exec_of_a_missing_or_non_executable_command_is_refused,
    test_exec_runs_a_process_in_a_running_container,
    test_kill_all_signals_every_process,
    test_kill_ends_it_with_the_signals_exit_code,
    test_kill_of_a_stopped_container_is_refused_unless_all,
    test_pause_and_resume,
    test_pid_1_ignores_sigterm_without_a_handler,
    test_start_runs_it_and_its_exit_code_is_recorded,
    test_start_twice_and_start_of_a_stopped_container_are_refused,
    test_the_end_of_a_container_ends_its_exec_processes,
)

pytestmark = pytest.mark.root

CONTRACT = [
    test_a_created_container_can_be_killed,
    test_commands_on_an_unknown_container_are_refused,
    test_create_leaves_a_created_container_with_its_pid_files,
    test_create_of_a_missing_or_non_executable_command_is_refused,
    test_create_of_an_existing_id_is_refused_and_leaves_the_first,
    test_delete_removes_the_state_a_killed_create_left,
    test_delete_of_a_stopped_or_created_container_and_of_an_unknown_one,
    test_delete_refuses_a_running_container_without_force,
    test_exec_argv_into_a_stopped_container_fails_with_the_error_in_its_log,
    test_exec_argv_runs_a_process_with_the_callers_pipes,
    test_exec_into_a_stopped_container_is_refused,
    test_exec_of_a_missing_or_non_executable_command_is_refused,
    test_exec_runs_a_process_in_a_running_container,
    test_kill_all_signals_every_process,
    test_kill_ends_it_with_the_signals_exit_code,
    test_kill_of_a_stopped_container_is_refused_unless_all,
    test_pause_and_resume,
    test_pid_1_ignores_sigterm_without_a_handler,
    test_start_runs_it_and_its_exit_code_is_recorded,
    test_start_twice_and_start_of_a_stopped_container_are_refused,
    test_the_end_of_a_container_ends_its_exec_processes,
]


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("busybox") / "rootfs"
    root.mkdir()
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_bytes())) as tf:
        tf.extractall(root, filter="fully_trusted")
    return root


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """runc's own default spec (`runc spec`), without a terminal."""
    d = tmp_path_factory.mktemp("spec")
    subprocess.run(["runc", "spec", "--bundle", str(d)], check=True)
    spec: dict[str, Any] = json.loads((d / "config.json").read_text())
    spec["process"]["terminal"] = False
    spec["root"]["readonly"] = False
    return spec


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    parent = f"/dytest-{secrets.token_hex(4)}"
    yield parent
    for group in cgroups.leftover(parent):
        with contextlib.suppress(OSError):
            group.rmdir()
    for controller in CGROUP_ROOT.iterdir():
        with contextlib.suppress(OSError):
            (controller / parent.strip("/")).rmdir()


@pytest.fixture
async def world(
    tmp_path: Path, rootfs: Path, template: dict[str, Any], cgroup_parent: str
) -> AsyncIterator[World]:
    runtime = OciRuntime("runc", tmp_path / "runc")
    socket_dir = Path(tempfile.mkdtemp(prefix="dyc-"))  # short: attach socket paths have a length limit

    def make_bundle(cid: str, args: list[str]) -> Path:
        bundle = tmp_path / "bundles" / cid
        bundle.mkdir(parents=True, exist_ok=True)
        if not (rootfs / f"ctl-{cid}").exists():
            os.mkfifo(rootfs / f"ctl-{cid}")
        spec = json.loads(json.dumps(template))
        spec["root"]["path"] = str(rootfs)
        spec["process"]["args"] = args
        spec["process"]["env"] = [*spec["process"]["env"], f"ID={cid}"]
        spec["hostname"] = cid
        spec["linux"]["cgroupsPath"] = f"{cgroup_parent}/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        return bundle

    async def end(cid: str, code: int) -> None:
        fifo = rootfs / f"ctl-{cid}"

        def write() -> None:
            with open(fifo, "w") as f:  # blocks until the container's shell opens it to read
                f.write(f"{code}\n")

        try:
            async with asyncio.timeout(30):
                await asyncio.to_thread(write)
        except TimeoutError:
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # let the blocked thread go
            raise

    w = World(runtime, Conmon(runtime, socket_dir), tmp_path, make_bundle, end)
    try:
        yield w
    finally:
        await w.cleanup()
        for pid in pids_mentioning(str(tmp_path)):  # conmons the cleanup could not end
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for cid in w.created:
            with contextlib.suppress(FileNotFoundError):
                (rootfs / f"ctl-{cid}").unlink()
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_the_whole_contract_runs_here() -> None:
    """A contract test added to the unit file but not imported here would run against the fake only."""
    import tests.unit.containers.test_runtime_contract as contract

    defined = {name for name in vars(contract) if name.startswith("test_") and "fake" not in name}
    assert defined == {f.__name__ for f in CONTRACT}
