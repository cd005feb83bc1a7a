"""`exec -u NAME` reads the container's /etc/passwd and /etc/group as bounded data, off the event loop.

A container can make those files anything; a 1 GiB sparse one used to be read whole (the agent grew by
gigabytes, and every other call waited). Now a file over 1 MiB is refused with a clear error when a name
has to be looked up in it, numeric ids work without it, and the agent's peak memory does not move.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.runtime.bundle import ContainerPaths
from tests.integration.containers.conftest import IMAGE, Yard

pytestmark = pytest.mark.root

PEAK_GROWTH_LIMIT = 20 * 1024 * 1024
SOMEUSER = "someuser:x:1234:1234::/:/bin/sh"
PASSWD = ["root:x:0:0:root:/root:/bin/sh", "nobody:x:65534:65534:nobody:/home:/bin/false"]
GROUP = ["root:x:0:", "nogroup:x:65534:"]


def peak_rss(pid: int) -> int:
    """The highest resident set size the process ever had, in bytes (VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for {pid}")


BIG_LINES = 80_000  # ordinary passwd/group lines: about 2 MiB, over the bound


def write_etc(
    yard: Yard, cid: str, name: str, lines: list[str], *, big: bool = False, sparse: bool = False
) -> None:
    """Set the container's /etc/<name> from the host side (the runtime, too, reads these files when it
    starts a process, and fails on a sparse one's single endless line: no exec could write them back)."""
    path = ContainerPaths.of(yard.data_root, cid).rootfs / "etc" / name
    text = "".join(f"{line}\n" for line in lines)
    if big:
        text += "".join(f"u{i}:x:{i}:{i}::/:/bin/sh\n" for i in range(10_000, 10_000 + BIG_LINES))
    path.write_text(text)
    if sparse:
        os.truncate(path, 1 << 30)


def test_exec_user_names_against_huge_passwd_and_group_files(yard: Yard) -> None:
    cid = yard.ok("run", "-d", "--name", "huge-etc", IMAGE, "sleep", "600").strip()
    try:
        assert yard.ok("exec", "-u", "nobody", cid, "id", "-u") == "65534\n"  # names work as before
        agent_pid = yard.agent.proc.pid  # type: ignore[union-attr]
        peak_before = peak_rss(agent_pid)

        write_etc(yard, cid, "passwd", [*PASSWD, SOMEUSER], sparse=True)
        refused = yard.cli("exec", "-u", "someuser", cid, "id", "-u")
        assert refused.returncode != 0
        assert "/etc/passwd in the container is larger than 1 MiB; use a numeric uid" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert peak_rss(agent_pid) - peak_before < PEAK_GROWTH_LIMIT
        yard.ok("ping")

        write_etc(yard, cid, "passwd", [*PASSWD, SOMEUSER], big=True)
        refused = yard.cli("exec", "-u", "someuser", cid, "id", "-u")
        assert "/etc/passwd in the container is larger than 1 MiB; use a numeric uid" in refused.stderr
        assert yard.ok("exec", "-u", "1234", cid, "id", "-u") == "1234\n"  # numeric ids need no lookup
        assert yard.ok("exec", "-u", "1234:77", cid, "id", "-g") == "77\n"

        write_etc(yard, cid, "passwd", PASSWD)
        write_etc(yard, cid, "group", [*GROUP, "staff:x:50:nobody"], sparse=True)
        for spec in ("nobody", "0:staff"):
            refused = yard.cli("exec", "-u", spec, cid, "id")
            assert refused.returncode != 0
            assert "/etc/group in the container is larger than 1 MiB" in refused.stderr, refused.stderr
        assert peak_rss(agent_pid) - peak_before < PEAK_GROWTH_LIMIT

        write_etc(yard, cid, "group", [*GROUP, "staff:x:50:nobody"], big=True)
        refused = yard.cli("exec", "-u", "0:staff", cid, "id")
        assert "/etc/group in the container is larger than 1 MiB" in refused.stderr
        assert yard.ok("exec", "-u", "65534:50", cid, "id", "-g") == "50\n"
    finally:
        yard.ok("rm", "-f", cid)
