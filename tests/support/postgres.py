"""A real PostgreSQL server for tests: Debian's binaries (initdb + pg_ctl from /usr/lib/postgresql/N/bin)
on a private port on 127.0.0.1, with a private data directory and unix socket directory.

The server runs as user `postgres` when the tests run as root (PostgreSQL refuses to run as root), else
as the current user. Password auth over TCP (scram), so the URL the tests hand the controller carries
credentials as a team's would. `postgres_server()` stops the server (immediate shutdown) and removes
every file it made when the `with` block ends, also on failure; the server's log is printed when it
does not start.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.registry import free_port

DATABASE = "dockyard"
USER = "postgres"


def bin_dir() -> Path | None:
    """The newest installed server's bin directory, None when PostgreSQL is not installed."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name),
        reverse=True,
    )
    return found[0].parent if found else None


@dataclass(frozen=True)
class PostgresServer:
    port: int
    password: str
    data_dir: Path
    socket_dir: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"


def _runas() -> dict[str, Any]:
    """subprocess keywords that drop to the postgres user when we are root."""
    if os.geteuid() != 0:
        return {}
    entry = pwd.getpwnam("postgres")
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=120, **_runas(), **kwargs)


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a private server with a `dockyard` database; stop it and remove its files at exit."""
    binaries = bin_dir()
    if binaries is None:
        raise RuntimeError("PostgreSQL is not installed (scripts/setup.sh installs Debian's postgresql)")
    base = Path(tempfile.mkdtemp(prefix="dy-pg-"))
    data_dir, socket_dir = base / "data", base / "sock"
    password = secrets.token_hex(12)
    port = free_port()
    started = False
    try:
        socket_dir.mkdir(mode=0o700)
        (base / "pwfile").write_text(password + "\n")
        runas = _runas()
        if runas:
            for path in (base, socket_dir, base / "pwfile"):
                os.chown(path, runas["user"], runas["group"])
        _run(
            [
                str(binaries / "initdb"),
                *("-D", str(data_dir), "-U", USER, "--pwfile", str(base / "pwfile")),
                *("--auth-local", "trust", "--auth-host", "scram-sha-256", "-E", "UTF8", "--no-sync"),
            ]
        )
        options = (
            f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        started = True
        try:
            log = str(base / "log")
            _run([str(binaries / "pg_ctl"), "-D", str(data_dir), "-l", log, "-o", options, "-w", "start"])
        except subprocess.CalledProcessError:
            print(Path(log).read_text() if Path(log).exists() else "(no server log)")
            raise
        _run([str(binaries / "createdb"), "-h", str(socket_dir), "-p", str(port), "-U", USER, DATABASE])
        yield PostgresServer(port, password, data_dir, socket_dir)
    finally:
        if started:
            _stop(binaries, data_dir)
        shutil.rmtree(base, ignore_errors=True)


def _stop(binaries: Path, data_dir: Path) -> None:
    """pg_ctl's immediate stop; the postmaster is killed by its pid file if that fails."""
    try:
        _run([str(binaries / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "-t", "30", "stop"])
        return
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
        pass
    with contextlib.suppress(OSError, ValueError, IndexError):
        pid = int((data_dir / "postmaster.pid").read_text().splitlines()[0])
        os.kill(pid, signal.SIGKILL)
