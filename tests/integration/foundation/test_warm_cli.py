"""The warm CLI (controller/launcher.py + controller/warm.py) against a real agent.

A command served by a forked worker of the warm server must be indistinguishable from a cold run: same
output streams, exit code, stdin, working directory, environment and umask; signals reach it; any trouble
with the server falls back to a cold run.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import controller
from tests.support.agent import CLI_BIN, AgentProcess, FleetPki, wait_for
from tests.support.images import busybox_rootfs_tar
from tests.support.warm import children_of, server_pids, stop_servers

IMAGE = "warm-test:latest"


@pytest.fixture
def runtime_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "rt"
    path.mkdir(mode=0o700)
    yield path
    stop_servers(path)


def cli_env(pki: FleetPki, runtime_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "DOCKYARD_CONFIG_DIR": str(pki.config_dir),
        "DOCKYARD_RUNTIME_DIR": str(runtime_dir),
        **extra,
    }


def dockyard(
    pki: FleetPki,
    runtime_dir: Path,
    *args: str,
    cwd: Path | None = None,
    input: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI_BIN, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        input=input,
        env=cli_env(pki, runtime_dir, **env),
    )


def started_server(runtime_dir: Path) -> int:
    pids = wait_for(lambda: server_pids(runtime_dir), 30, "the warm server to listen")
    assert len(pids) == 1
    return int(pids[0])


def test_warm_runs_match_cold_runs(
    fleet_pki: FleetPki, agent: AgentProcess, runtime_dir: Path, tmp_path: Path
) -> None:
    busybox_rootfs_tar(tmp_path / "busybox.tar")
    host = agent.unix_target
    # the first call runs cold and starts the server; a relative path resolves in the caller's directory
    first = dockyard(fleet_pki, runtime_dir, "-H", host, "import", "busybox.tar", IMAGE, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    server = started_server(runtime_dir)
    script = 'echo "out $GREETING"; echo err >&2; cat; exit 3'
    args = ["-H", host, "run", "--rm", "-i", "--network", "none", "-e", "GREETING", IMAGE, "sh", "-c", script]
    runs = {
        warm: dockyard(
            fleet_pki,
            runtime_dir,
            *args,
            input="from stdin\n",
            GREETING=f"warm={warm}",
            DOCKYARD_WARM="1" if warm else "0",
        )
        for warm in (True, False)
    }
    for warm, proc in runs.items():
        assert proc.returncode == 3, proc.stderr
        assert proc.stdout == f"out warm={warm}\nfrom stdin\n"
        assert proc.stderr == "err\n"
    assert server_pids(runtime_dir) == [server]  # the warm call was served, not started anew
    bad = dockyard(fleet_pki, runtime_dir, "nosuch")
    assert bad.returncode == 2 and bad.stderr.startswith("error: No such command")
    # a file the command writes gets the caller's umask, in the caller's directory
    (tmp_path / "out").mkdir()
    saved = dockyard(fleet_pki, runtime_dir, "-H", host, "save", "-o", "img.tar", IMAGE, cwd=tmp_path / "out")
    assert saved.returncode == 0, saved.stderr
    assert (tmp_path / "out" / "img.tar").stat().st_size > 0


def test_signals_reach_the_worker_and_its_exit_code_comes_back(
    fleet_pki: FleetPki, agent: AgentProcess, runtime_dir: Path
) -> None:
    assert dockyard(fleet_pki, runtime_dir, "--version").returncode == 0
    server = started_server(runtime_dir)
    follow = subprocess.Popen(
        [CLI_BIN, "-H", agent.unix_target, "events"],
        env=cli_env(fleet_pki, runtime_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        workers = wait_for(lambda: children_of(server), 20, "a worker to run `events`")
        # the worker streams once an event comes through (a Ctrl-C before that lands in Python's start-up
        # code, where a cold run also dies of the signal rather than exiting 130)
        assert follow.stdout is not None
        seen = b""

        def streamed() -> bool:
            nonlocal seen
            assert follow.stdout is not None
            if dockyard(fleet_pki, runtime_dir, "-H", agent.unix_target, "volume", "create").returncode:
                return False
            if select.select([follow.stdout], [], [], 0.5)[0]:
                seen += os.read(follow.stdout.fileno(), 4096)
            return b"volume" in seen

        wait_for(streamed, 30, "`events` to stream a volume event")
        follow.send_signal(signal.SIGINT)
        assert follow.wait(timeout=20) == 130
        wait_for(lambda: not any(Path(f"/proc/{w}").exists() for w in workers), 10, "the worker to end")
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()


def test_a_dead_server_falls_back_to_a_cold_run_and_is_replaced(
    fleet_pki: FleetPki, runtime_dir: Path
) -> None:
    assert dockyard(fleet_pki, runtime_dir, "--version").returncode == 0
    first = started_server(runtime_dir)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{first}").exists(), 10, "the server to die")
    assert list(runtime_dir.glob("warm-*.sock"))  # its socket is left behind, refusing connections
    again = dockyard(fleet_pki, runtime_dir, "--version")
    assert again.returncode == 0 and again.stdout.startswith("dockyard")
    second = wait_for(lambda: [p for p in server_pids(runtime_dir) if p != first], 30, "a new server")
    assert second and first not in second


def test_an_idle_server_exits_and_removes_its_socket(fleet_pki: FleetPki, runtime_dir: Path) -> None:
    assert dockyard(fleet_pki, runtime_dir, "--version", DOCKYARD_WARM_IDLE="0.5").returncode == 0
    server = started_server(runtime_dir)
    wait_for(lambda: not Path(f"/proc/{server}").exists(), 20, "the idle server to exit")
    assert not list(runtime_dir.glob("warm-*.sock"))


def test_a_runtime_dir_open_to_others_is_not_used(fleet_pki: FleetPki, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    proc = dockyard(fleet_pki, shared, "--version")
    assert proc.returncode == 0 and proc.stdout.startswith("dockyard")
    assert list(shared.iterdir()) == []  # ran cold; no server trusted or started there


def test_a_password_prompt_on_a_terminal_hides_what_is_typed(
    fleet_pki: FleetPki, agent: AgentProcess, runtime_dir: Path
) -> None:
    assert dockyard(fleet_pki, runtime_dir, "--version").returncode == 0
    started_server(runtime_dir)  # the login below runs in a worker, which has no controlling terminal
    argv = [CLI_BIN, "-H", agent.unix_target, "login", "-u", "bob", "--no-verify", "127.0.0.1:5999"]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(CLI_BIN, argv, cli_env(fleet_pki, runtime_dir))
    seen = b""
    try:

        def read_until(marker: bytes) -> bool:
            nonlocal seen
            if select.select([fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):
                    seen += os.read(fd, 1024)
            return marker in seen

        wait_for(lambda: read_until(b"Password: "), 30, "the password prompt")
        os.write(fd, b"s3cret\n")
        wait_for(lambda: read_until(b"Login Succeeded"), 30, "the login to finish")
    finally:
        statuses: list[int] = []

        def reaped() -> bool:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                statuses.append(status)
            return bool(done)

        try:
            wait_for(reaped, 20, "the login to exit")
        except TimeoutError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise
        finally:
            os.close(fd)
    assert os.waitstatus_to_exitcode(statuses[0]) == 0
    assert b"s3cret" not in seen


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_signal_ends_a_warm_run_as_it_ends_a_cold_one(
    fleet_pki: FleetPki, agent: AgentProcess, runtime_dir: Path
) -> None:
    """SIGTERM or SIGHUP kill a cold `dockyard` (no handler): the caller must see that, not exit code 143."""
    assert dockyard(fleet_pki, runtime_dir, "--version").returncode == 0
    server = started_server(runtime_dir)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        for warm in ("1", "0"):
            before = frozenset(children_of(server))

            def new_worker(before: frozenset[int] = before) -> set[int]:
                return set(children_of(server)) - before

            follow = subprocess.Popen(
                [CLI_BIN, "-H", agent.unix_target, "events"],
                env=cli_env(fleet_pki, runtime_dir, DOCKYARD_WARM=warm),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                if warm == "1":
                    wait_for(new_worker, 20, "a worker to run `events`")
                follow.send_signal(sig)
                _, err = follow.communicate(timeout=20)
                assert follow.returncode == -sig, (sig, warm, follow.returncode, err)
            finally:
                if follow.poll() is None:
                    follow.kill()
                    follow.wait()


def test_output_is_encoded_as_in_a_cold_run(fleet_pki: FleetPki, runtime_dir: Path) -> None:
    """The streams' encoding comes from the caller's environment (PYTHONIOENCODING, locale), not the
    server's."""
    assert dockyard(fleet_pki, runtime_dir, "--version").returncode == 0
    server = started_server(runtime_dir)
    runs = [
        subprocess.run(
            [CLI_BIN, "nosuch-\u00e9"],
            capture_output=True,
            timeout=60,
            env=cli_env(fleet_pki, runtime_dir, PYTHONIOENCODING="latin-1", DOCKYARD_WARM=warm),
        )
        for warm in ("1", "0")
    ]
    assert runs[1].stderr == b"error: No such command 'nosuch-\xe9'.\n"
    assert runs[0].stderr == runs[1].stderr and runs[0].returncode == runs[1].returncode == 2
    assert server_pids(runtime_dir) == [server]


def copy_of_the_code(dest: Path) -> Path:
    """The controller and agent packages copied, as another installation whose files we may touch."""
    root = Path(controller.__file__).resolve().parent.parent
    for package in ("controller", "agent"):
        shutil.copytree(root / package, dest / package, ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_a_server_whose_code_changed_hands_over_and_the_cold_run_still_obeys_signals(
    fleet_pki: FleetPki, agent: AgentProcess, runtime_dir: Path, tmp_path: Path
) -> None:
    copy = copy_of_the_code(tmp_path / "copy")
    launcher = [sys.executable, "-c", "from controller.launcher import main; main()"]
    env = cli_env(fleet_pki, runtime_dir, PYTHONPATH=str(copy))

    def version() -> subprocess.CompletedProcess[str]:
        # outside the checkout: `python -c` puts the working directory first on sys.path
        return subprocess.run(
            [*launcher, "--version"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    first = version()
    assert first.returncode == 0 and first.stdout.startswith("dockyard"), first.stderr
    old = started_server(runtime_dir)
    assert f"{copy}/controller".encode() in Path(f"/proc/{old}/cmdline").read_bytes()
    cli_py = copy / "controller" / "cli.py"
    mtime = cli_py.stat().st_mtime_ns + 1_000_000_000
    os.utime(cli_py, ns=(mtime, mtime))
    # the stale server refuses the call: it runs cold here and starts a server on the changed code
    follow = subprocess.Popen(
        [*launcher, "-H", agent.unix_target, "events"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        new = wait_for(lambda: [p for p in server_pids(runtime_dir) if p != old], 30, "a fresh server")
        wait_for(lambda: not alive(old), 10, "the stale server to exit")
        assert children_of(new) == []  # `events` is not its worker: it runs cold
        follow.send_signal(signal.SIGTERM)
        _, err = follow.communicate(timeout=20)
        assert follow.returncode == -signal.SIGTERM, err
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    again = version()
    assert again.returncode == 0 and again.stdout.startswith("dockyard")
    assert server_pids(runtime_dir) == new


def test_a_server_whose_runtime_dir_was_removed_exits(fleet_pki: FleetPki, runtime_dir: Path) -> None:
    """Nobody can reach it any more, and nothing records it: it must not linger for its idle timeout."""
    assert dockyard(fleet_pki, runtime_dir, "--version").returncode == 0
    orphan = started_server(runtime_dir)
    shutil.rmtree(runtime_dir)
    try:
        again = dockyard(fleet_pki, runtime_dir, "--version")
        assert again.returncode == 0 and again.stdout.startswith("dockyard")
        wait_for(lambda: not alive(orphan), 10, "the unreachable server to exit")
        wait_for(lambda: [p for p in server_pids(runtime_dir) if p != orphan], 30, "a new server")
    finally:
        if alive(orphan):
            os.kill(orphan, signal.SIGTERM)


def test_concurrent_first_calls_all_succeed_and_leave_one_server(
    fleet_pki: FleetPki, runtime_dir: Path
) -> None:
    calls = [
        subprocess.Popen(
            [CLI_BIN, "--version"],
            env=cli_env(fleet_pki, runtime_dir),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(10)
    ]
    for call in calls:
        out, err = call.communicate(timeout=60)
        assert call.returncode == 0 and out.startswith(b"dockyard"), err
    server = started_server(runtime_dir)
    starters = [
        int(d.name)
        for d in Path("/proc").iterdir()
        if d.name.isdigit() and alive(int(d.name)) and str(runtime_dir).encode() in _cmdline(d)
    ]
    wait_for(lambda: [p for p in starters if alive(p)] == [server], 30, "the other servers to step back")
    # 20 calls at once through that one server
    runs = [
        subprocess.Popen(
            [CLI_BIN, "nosuch", f"call-{i}"], env=cli_env(fleet_pki, runtime_dir), stderr=subprocess.PIPE
        )
        for i in range(20)
    ]
    for run in runs:
        _, err = run.communicate(timeout=60)
        assert run.returncode == 2 and err.startswith(b"error: No such command 'nosuch'"), err
    assert server_pids(runtime_dir) == [server]


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""
