"""Read a container's resource usage from its cgroup (v1, hybrid or v2) and its network namespace.

Cheap by design (a handful of small reads per container) so `stats` can sample 50 containers a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
UNLIMITED = 1 << 62


@dataclass(frozen=True)
class Usage:
    cpu_ns: int = 0
    memory: int = 0
    memory_limit: int = 0
    pids: int = 0
    block_read: int = 0
    block_write: int = 0
    net_rx: int = 0
    net_tx: int = 0


def _read_int(path: Path, default: int = 0) -> int:
    try:
        text = path.read_text().strip()
    except OSError:
        return default
    if text == "max":
        return UNLIMITED
    try:
        return int(text.split()[0])
    except (ValueError, IndexError):
        return default


def _kv(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                out[parts[0]] = int(parts[1])
    except OSError:
        pass
    return out


def is_v2(root: Path = ROOT) -> bool:
    return (root / "cgroup.controllers").exists()


def usage(cgroups_path: str, pid: int, root: Path = ROOT) -> Usage:
    rel = cgroups_path.lstrip("/")
    net_rx, net_tx = net_bytes(pid)
    if is_v2(root):
        base = root / rel
        cpu = _kv(base / "cpu.stat").get("usage_usec", 0) * 1000
        stat = _kv(base / "memory.stat")
        mem = max(_read_int(base / "memory.current") - stat.get("inactive_file", 0), 0)
        limit = _read_int(base / "memory.max", UNLIMITED)
        rd = wr = 0
        try:
            for line in (base / "io.stat").read_text().splitlines():
                for field in line.split()[1:]:
                    key, _, value = field.partition("=")
                    if key == "rbytes":
                        rd += int(value)
                    elif key == "wbytes":
                        wr += int(value)
        except OSError:
            pass
        return Usage(cpu, mem, limit, _read_int(base / "pids.current"), rd, wr, net_rx, net_tx)
    cpu = _read_int(root / "cpuacct" / rel / "cpuacct.usage")
    mdir = root / "memory" / rel
    stat = _kv(mdir / "memory.stat")
    mem = max(_read_int(mdir / "memory.usage_in_bytes") - stat.get("total_inactive_file", 0), 0)
    limit = _read_int(mdir / "memory.limit_in_bytes", UNLIMITED)
    rd = wr = 0
    try:
        for line in (root / "blkio" / rel / "blkio.throttle.io_service_bytes").read_text().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] == "Read":
                rd += int(parts[2])
            elif len(parts) == 3 and parts[1] == "Write":
                wr += int(parts[2])
    except OSError:
        pass
    return Usage(cpu, mem, limit, _read_int(root / "pids" / rel / "pids.current"), rd, wr, net_rx, net_tx)


def net_bytes(pid: int) -> tuple[int, int]:
    """Received/sent bytes over the non-loopback interfaces of `pid`'s network namespace."""
    rx = tx = 0
    try:
        lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    except OSError:
        return 0, 0
    for line in lines:
        name, _, rest = line.partition(":")
        if name.strip() == "lo":
            continue
        fields = rest.split()
        if len(fields) >= 9:
            rx += int(fields[0])
            tx += int(fields[8])
    return rx, tx


def leftover(cgroup_parent: str, root: Path = ROOT) -> list[Path]:
    """Child cgroups still present under the agent's parent (used by cleanup checks and tests)."""
    rel = cgroup_parent.strip("/")
    found: list[Path] = []
    bases = (
        [root / rel]
        if is_v2(root)
        else [d / rel for d in root.iterdir() if d.is_dir() and d.name != "unified"]
    )
    for base in bases:
        if base.is_dir():
            found.extend(p for p in base.iterdir() if p.is_dir())
    return found
