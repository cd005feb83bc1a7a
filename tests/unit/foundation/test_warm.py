"""The warm server's pieces that need no processes: staleness and where sockets live."""

from __future__ import annotations

import os
import subprocess
import sys
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
