"""The CLI's warm command servers (controller/warm.py) started by tests: found and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

from tests.support.agent import wait_for


def server_pids(runtime_dir: Path) -> list[int]:
    """Live servers recorded in `runtime_dir` (one per installation and namespaces)."""
    pids = []
    for pid_file in runtime_dir.glob("warm-*.pid"):
        with contextlib.suppress(OSError, ValueError):
            pid = int(pid_file.read_text())
            if b"controller.warm" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
    return pids


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def stop_servers(runtime_dir: Path) -> None:
    """SIGTERM every server of `runtime_dir` and wait until each is gone."""
    for pid in server_pids(runtime_dir):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        wait_for(lambda p=pid: not Path(f"/proc/{p}").exists(), 10, f"warm CLI server {pid} to exit")
