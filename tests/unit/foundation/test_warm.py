"""The warm server's pieces that need no processes: staleness and where sockets live."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from controller import launcher, warm


def test_a_changed_or_removed_source_file_makes_the_server_stale(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("x = 1\n")
    files = {str(module): module.stat().st_mtime_ns}
    assert not warm.is_stale(files)
    os.utime(module, ns=(0, module.stat().st_mtime_ns + 1_000_000))
    assert warm.is_stale(files)
    module.unlink()
    assert warm.is_stale({str(module): 0})


def test_loaded_sources_cover_the_controller_and_the_api_stubs() -> None:
    import agent.api.v1.system_pb2  # noqa: F401

    files = warm.source_files()
    assert any(path.endswith(os.path.join("controller", "launcher.py")) for path in files)
    assert any(path.endswith("system_pb2.py") for path in files)


def test_socket_path_is_private_and_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private = tmp_path / "rt"
    monkeypatch.setenv(launcher.ENV_RUNTIME_DIR, str(private))
    path = launcher.socket_path()
    assert path is not None and path.startswith(str(private)) and len(path) <= launcher.MAX_SOCKET_PATH
    assert private.stat().st_mode & 0o777 == 0o700
    private.chmod(0o755)
    assert launcher.socket_path() is None  # readable by others: not trusted
    monkeypatch.setenv(launcher.ENV_RUNTIME_DIR, str(tmp_path / ("x" * 120)))
    assert launcher.socket_path() is None  # too long for a unix socket


def test_a_server_started_for_another_copy_of_the_code_steps_back(tmp_path: Path) -> None:
    sock = tmp_path / "warm-test.sock"
    argv = [sys.executable, "-m", "controller.warm", str(sock), "/elsewhere/controller"]
    proc = subprocess.run(argv, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not sock.exists()


STREAM_PROBE = """
import io, json, sys
from controller import launcher, warm
specs = json.loads(json.dumps(launcher.stdio()))
streams = [warm.text_stream(fd, specs[fd]) for fd in (0, 1, 2)]
attrs = ("encoding", "errors", "line_buffering", "write_through")
for ours, cold in zip(streams, (sys.stdin, sys.stdout, sys.stderr)):
    assert [getattr(ours, a) for a in attrs] == [getattr(cold, a) for a in attrs], (ours, cold)
    assert type(ours.buffer) is type(cold.buffer), (ours.buffer, cold.buffer)
print(ascii(streams[0].read()))
"""


@pytest.mark.parametrize(
    "env",
    [
        {"PYTHONIOENCODING": "latin-1:backslashreplace", "PYTHONUNBUFFERED": "1"},
        {"LC_ALL": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0", "PYTHONUNBUFFERED": ""},
    ],
)
def test_a_workers_std_streams_are_the_ones_a_cold_run_gets(env: dict[str, str]) -> None:
    """Encoding, errors and buffering follow the caller's environment, and stdin keeps its \\r bytes."""
    root = str(Path(__file__).resolve().parents[3])
    full_env = {**os.environ, "PYTHONPATH": root, **env}
    full_env = {k: v for k, v in full_env.items() if v}
    proc = subprocess.run(
        [sys.executable, "-c", STREAM_PROBE],
        input=b"a\r\nb\rc\n",
        capture_output=True,
        timeout=60,
        env=full_env,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == b"'a\\r\\nb\\rc\\n'\n"


def test_a_refused_call_gives_the_signals_back_for_the_cold_run(tmp_path: Path) -> None:
    """A stale server refuses the call; the command then runs here and Ctrl-C or SIGTERM must stop it."""
    path = str(tmp_path / "warm-test.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def refuse() -> None:
        conn, _ = listener.accept()
        with conn:
            header, fds, _, _ = socket.recv_fds(conn, launcher.HEADER.size, 3)
            for fd in fds:
                os.close(fd)
            warm._recv_exact(conn, launcher.HEADER.unpack(header)[0])  # the whole request, as a server
            conn.sendall(json.dumps({"stale": True}).encode() + b"\n")

    server = threading.Thread(target=refuse, daemon=True)
    server.start()
    before = {sig: signal.getsignal(sig) for sig in (*launcher.FORWARDED, signal.SIGTSTP, signal.SIGCONT)}
    try:
        assert launcher.delegate(path, ["--version"]) is None
        assert {sig: signal.getsignal(sig) for sig in before} == before
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        server.join(10)
        listener.close()
