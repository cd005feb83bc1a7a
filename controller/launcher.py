"""The `dockyard` entry point: hand the command to a warm worker, or run it here.

Importing grpc, protobuf, click and the command modules costs a Python CLI 50–70 ms before it sends a
byte, as much again as the agent needs to run a container. So the first call starts a per-user command
server (`controller.warm`) that has imported everything once; later calls send it their argv,
environment, working directory, umask and stdin/stdout/stderr, and it forks a worker that runs the
command on those very file descriptors (the technique of Mercurial's chg). This module imports only the
standard library's lightest parts: it is on every command's path.

The worker is not in this process's terminal session, so this process stays in front: it forwards the
signals a terminal or a supervisor sends (Ctrl-C, SIGTERM, window resizes, Ctrl-Z) and exits with the
worker's exit code. `DOCKYARD_WARM=0` turns the server off; any trouble reaching it falls back to running
the command in this process, so the server can only make a command faster, never make it fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import struct
import sys
import zlib

ENV_WARM = "DOCKYARD_WARM"
ENV_RUNTIME_DIR = "DOCKYARD_RUNTIME_DIR"
HEADER = struct.Struct("!I")
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH, signal.SIGUSR1)


def runtime_dir() -> str:
    """Where the per-user sockets live: private to the user, like $XDG_RUNTIME_DIR."""
    explicit = os.environ.get(ENV_RUNTIME_DIR)
    if explicit:
        return explicit
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "dockyard")
    return f"/tmp/dockyard-{os.getuid()}"


def socket_path() -> str | None:
    """The socket of the server for this installation in these namespaces, or None if unusable here.

    A server serves only callers in its own network and mount namespaces (a worker connects from the
    server's namespaces and resolves paths in its mounts) and of its own installation.
    """
    base = runtime_dir()
    try:
        os.mkdir(base, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        st = os.lstat(base)
        namespaces = os.readlink("/proc/self/ns/net") + os.readlink("/proc/self/ns/mnt")
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None  # someone else's directory: never talk to a server we cannot trust
    # the installation is the environment (venv) plus where this package lives, however python was named
    install = f"{sys.prefix}\0{os.path.dirname(os.path.abspath(__file__))}\0{namespaces}"
    path = os.path.join(base, f"warm-{zlib.adler32(install.encode()):08x}.sock")
    return path if len(path) <= MAX_SOCKET_PATH else None


def start_server(path: str) -> None:
    """Start the server in the background (its own session; it exits after a while without calls)."""
    import subprocess

    package_dir = os.path.dirname(os.path.abspath(__file__))
    # the server must import this very copy of the package (a checkout may shadow the installed one)
    pythonpath = os.pathsep.join(p for p in (os.path.dirname(package_dir), os.environ.get("PYTHONPATH")) if p)
    try:
        subprocess.Popen(
            [sys.executable, "-m", "controller.warm", path, package_dir],
            env={**os.environ, "PYTHONPATH": pythonpath},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
    except OSError:
        pass


def run_here() -> None:
    from controller.cli import main as cli_main

    cli_main()


def _std_fds_open() -> bool:
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)
    except OSError:
        return False
    return True


def stdio() -> list[dict[str, object]]:
    """How this process's sys.stdin/stdout/stderr encode and buffer, for the worker to copy.

    Python derived them from this caller's environment (PYTHONIOENCODING, the locale, PYTHONUNBUFFERED);
    the server's own streams reflect whoever started it, so a cold run's are only known here.
    """
    specs: list[dict[str, object]] = []
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        specs.append(
            {
                "encoding": getattr(stream, "encoding", None) or "utf-8",
                "errors": getattr(stream, "errors", None) or "strict",
                "line_buffering": bool(getattr(stream, "line_buffering", False)),
                "write_through": bool(getattr(stream, "write_through", False)),
                # -u / PYTHONUNBUFFERED: the binary layer is the raw file, every write goes out at once
                "unbuffered": type(getattr(stream, "buffer", None)).__name__ == "FileIO",
            }
        )
    return specs


def request(argv: list[str]) -> bytes:
    umask = os.umask(0o022)
    os.umask(umask)
    body = {"argv": argv, "env": dict(os.environ), "cwd": os.getcwd(), "umask": umask, "stdio": stdio()}
    return json.dumps(body).encode()


class Forwarder:
    """Signals that reach this process go to the worker; a stop (Ctrl-Z) stops both."""

    def __init__(self) -> None:
        self.pid = 0
        self.pending: list[int] = []
        self.last = 0
        self.saved: dict[int, object] = {}

    def install(self) -> None:
        for sig in (*FORWARDED, signal.SIGTSTP, signal.SIGCONT):
            self.saved[sig] = signal.getsignal(sig)
        for sig in FORWARDED:
            signal.signal(sig, self._forward)
        signal.signal(signal.SIGTSTP, self._stop)
        signal.signal(signal.SIGCONT, self._continue)

    def uninstall(self) -> None:
        """Give the signals back to this process (it runs the command itself after all).

        Signals that came while no worker existed are raised again here, so a Ctrl-C or SIGTERM sent
        just then still stops the command, as in a cold run.
        """
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        pending, self.pending = self.pending, []
        for sig in dict.fromkeys(pending):
            os.kill(os.getpid(), sig)

    def die_like_the_worker(self) -> int:
        """The worker ended on the signal we passed on: end on it too, so the caller sees what a cold run
        shows (killed by SIGTERM, not exit code 143); the shell's 128+N if the signal does not kill."""
        sig = self.last
        sys.stderr.flush()
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig

    def attach(self, pid: int) -> None:
        self.pid = pid
        for sig in self.pending:
            self._send(sig)
        self.pending.clear()

    def _send(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def _forward(self, sig: int, _frame: object) -> None:
        self.last = sig
        if self.pid:
            self._send(sig)
        else:
            self.pending.append(sig)

    def _stop(self, _sig: int, _frame: object) -> None:
        if self.pid:
            self._send(signal.SIGSTOP)
        os.kill(os.getpid(), signal.SIGSTOP)

    def _continue(self, _sig: int, _frame: object) -> None:
        if self.pid:
            self._send(signal.SIGCONT)


def delegate(path: str, argv: list[str]) -> int | None:
    """Run the command in a warm worker; its exit code, or None when the server could not take it."""
    forwarder = Forwarder()
    forwarder.install()  # before the worker can exist, so no signal between the two is lost
    try:
        code = _delegate(path, argv, forwarder)
    except BaseException:
        forwarder.uninstall()
        raise
    if code is None:
        forwarder.uninstall()
    return code


def _delegate(path: str, argv: list[str], forwarder: Forwarder) -> int | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        body = request(argv)
        socket.send_fds(conn, [HEADER.pack(len(body))], [0, 1, 2])
        conn.sendall(body)
    except OSError:
        conn.close()
        return None
    buffer = b""
    while True:
        try:
            chunk = conn.recv(4096)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        except OSError:
            chunk = b""
        if not chunk:
            if forwarder.pid == 0:
                return None  # refused before a worker started (stale server): run it here
            if forwarder.last and forwarder.last != signal.SIGWINCH:
                return forwarder.die_like_the_worker()
            sys.stderr.write("error: the command's worker ended without an exit code\n")
            return 1
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            message = json.loads(line)
            if "pid" in message:
                forwarder.attach(int(message["pid"]))
            elif "exit" in message:
                return int(message["exit"])
            elif message.get("stale"):
                return None


def main() -> None:
    argv = sys.argv[1:]
    if os.environ.get(ENV_WARM, "1") == "0" or not _std_fds_open():
        run_here()
        return
    path = socket_path()
    if path is None:
        run_here()
        return
    code = delegate(path, argv)
    if code is None:
        start_server(path)  # for the next call; this one runs here meanwhile
        run_here()
        return
    os._exit(code)
