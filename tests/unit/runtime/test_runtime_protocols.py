"""The real runtime and monitor satisfy the seams the container core is written against (checked by mypy
through the annotated assignments), and start errors are classified from the runtime's own fields."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import DeadlineExceeded, FailedPrecondition, RuntimeCommand
from agent.runtime.monitor import Conmon
from agent.runtime.oci import OciRuntime, exit_code_for_runtime_error, start_error_exit_code
from agent.runtime.protocols import Monitor, Runtime


def test_the_real_classes_are_a_runtime_and_a_monitor(tmp_path: Path) -> None:
    oci = OciRuntime("runc", tmp_path / "runc", binary="/bin/true")
    runtime: Runtime = oci
    monitor: Monitor = Conmon(oci, tmp_path / "s", binary="/bin/true")
    assert runtime.name == "runc" and runtime.list_ids() == []
    assert monitor.socket_dir == tmp_path / "s" and monitor.read_exit(tmp_path) is None
    (tmp_path / "exit").write_text("137")
    info = monitor.read_exit(tmp_path)
    assert info is not None and info.code == 137 and not info.oom
    assert monitor.read_pid(tmp_path / "missing.pid") == 0


RUNC = "exec failed: unable to start container process: "


# the stderr texts are runc's and crun's own (see the contract suite for the ones checked against runc)
@pytest.mark.parametrize(
    ("stderr", "code"),
    [
        (f'{RUNC}exec: "nosuch": executable file not found in $PATH', 127),
        (f'{RUNC}exec: "/bin/x": stat /bin/x: no such file or directory', 127),
        (f'{RUNC}exec: "/etc/passwd": permission denied', 126),
        ("executable file `nosuch` not found in $PATH: No such file or directory", 127),  # crun
        ("open `/etc/passwd`: Permission denied", 126),  # crun
        ("container_linux.go:380: starting container process caused: process_linux.go: cgroup: oom", 128),
        ("", 128),
    ],
)
def test_a_start_error_is_classified_from_the_runtimes_stderr(stderr: str, code: int) -> None:
    assert exit_code_for_runtime_error(stderr) == code
    assert start_error_exit_code(RuntimeCommand("runc create", 1, stderr)) == code


def test_only_the_stderr_counts_not_the_command_or_returncode() -> None:
    # a command name or a message that is not the runtime's says nothing about the process
    assert start_error_exit_code(RuntimeCommand("conmon", 127, "conmon: bad option")) == 128
    err = RuntimeCommand("runc start", 1, "line\n" * 10 + "exec: \"x\": executable file not found in $PATH")
    assert start_error_exit_code(err) == 127


def test_a_failure_that_is_not_the_runtimes_is_128() -> None:
    assert start_error_exit_code(DeadlineExceeded("creating abc took longer than 60s")) == 128
    assert start_error_exit_code(FailedPrecondition("runc is not installed on this host")) == 128
