"""Process listings for `top`: read /proc for the host PIDs the runtime reports (ps -ef style columns)."""

from __future__ import annotations

import os
import pwd
import time
from pathlib import Path

TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
_CLK = os.sysconf("SC_CLK_TCK")


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def row(pid: int, boot: float) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        uid = Path(f"/proc/{pid}").stat().st_uid
    except OSError:
        return None
    comm_end = stat.rindex(")")
    comm = stat[stat.index("(") + 1 : comm_end]
    fields = stat[comm_end + 2 :].split()
    ppid = int(fields[1])
    tty_nr = int(fields[4])
    cpu_ticks = int(fields[11]) + int(fields[12])
    start = boot + int(fields[19]) / _CLK
    elapsed = max(time.time() - start, 1e-6)
    c = int(100 * (cpu_ticks / _CLK) / elapsed)
    total = cpu_ticks // _CLK
    cmd = " ".join(a.decode(errors="replace") for a in cmdline.split(b"\0") if a) or f"[{comm}]"
    return [
        _user(uid),
        str(pid),
        str(ppid),
        str(c),
        time.strftime("%H:%M", time.localtime(start)),
        "?" if tty_nr == 0 else f"pts/{tty_nr & 0xFF}",
        f"{total // 3600:02d}:{total % 3600 // 60:02d}:{total % 60:02d}",
        cmd,
    ]


def table(pids: list[int]) -> tuple[list[str], list[list[str]]]:
    boot = _boot_time()
    rows = [r for r in (row(p, boot) for p in sorted(pids)) if r is not None]
    return list(TITLES), rows
