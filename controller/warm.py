"""The warm command server behind `dockyard` (see controller/launcher.py for why and the protocol).

One process per user, installation and namespaces, started by the first command, gone after
`DOCKYARD_WARM_IDLE` seconds (default 600) without a call or when the installation's source files change
(it then refuses the call, which runs cold and starts a fresh server). It imports every command module
once and, per call, forks a worker that takes over the caller's stdin/stdout/stderr, working directory,
environment and umask, runs the command exactly as `controller.cli` would and reports the exit code.
The server itself never opens a channel or an event loop, so the forked workers start clean.

    python -m controller.warm SOCKET_PATH PACKAGE_DIR
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import json
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from controller.launcher import HEADER

ENV_IDLE = "DOCKYARD_WARM_IDLE"
DEFAULT_IDLE_S = 600.0
CHECK_S = 1.0  # how often an idle server looks whether its socket is still the one callers find
SO_PEERCRED_FORMAT = struct.Struct("3i")  # pid, uid, gid


def preload() -> None:
    """Import what any command needs, so a worker only runs code."""
    from controller import cli

    modules = set(cli.COMMAND_MODULES)
    modules.update(name for pairs in cli.GROUP_EXTENSIONS.values() for name, _ in pairs)
    for name in sorted(modules):
        with contextlib.suppress(Exception):  # a broken module fails its command in the worker, as cold
            importlib.import_module(name)


def source_files() -> dict[str, int]:
    """Our loaded modules' files and their mtimes: any change means this server's code is stale."""
    import agent
    import controller

    roots = tuple(str(Path(str(pkg.__file__)).parent) + os.sep for pkg in (controller, agent))
    found: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and path.startswith(roots):
            with contextlib.suppress(OSError):
                found[path] = os.stat(path).st_mtime_ns
    return found


def is_stale(files: dict[str, int]) -> bool:
    for path, mtime in files.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, SO_PEERCRED_FORMAT.size)
    return int(SO_PEERCRED_FORMAT.unpack(creds)[1])


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the caller went away")
        data += chunk
    return data


def text_stream(fd: int, spec: dict[str, Any]) -> TextIO:
    """A sys.std* stream over the caller's descriptor, encoded and buffered as the caller's own was.

    `spec` comes from the launcher (controller.launcher.stdio), whose Python set its streams up from the
    caller's environment. Like Python's own std streams, no newline translation (a \r on stdin stays).
    """
    reading = fd == 0
    raw = io.FileIO(fd, "r" if reading else "w", closefd=False)
    buffer: io.RawIOBase | io.BufferedIOBase
    if reading:
        buffer = io.BufferedReader(raw)
    elif spec.get("unbuffered"):
        buffer = raw
    else:
        buffer = io.BufferedWriter(raw)
    return io.TextIOWrapper(
        buffer,
        encoding=str(spec.get("encoding") or "utf-8"),
        errors=str(spec.get("errors") or "strict"),
        newline="\n",
        line_buffering=bool(spec.get("line_buffering")),
        write_through=bool(spec.get("write_through")),
    )


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        conn.sendall(json.dumps(message).encode() + b"\n")


def _watch_caller(conn: socket.socket) -> None:
    """The caller (launcher) died: end the command as a terminal hang-up would."""
    with contextlib.suppress(OSError):
        while conn.recv(64):
            pass
    os.kill(os.getpid(), signal.SIGHUP)


def worker(conn: socket.socket) -> int:
    """In the forked child: become the caller's command, run it, report its exit code."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    if len(fds) != 3 or len(header) != HEADER.size:
        return 1
    request = json.loads(_recv_exact(conn, HEADER.unpack(header)[0]))
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin, sys.stdout, sys.stderr = (text_stream(fd, request["stdio"][fd]) for fd in (0, 1, 2))
    os.environ.clear()
    os.environ.update(request["env"])
    os.umask(int(request["umask"]))
    sys.argv = ["dockyard", *request["argv"]]
    _send(conn, {"pid": os.getpid()})
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        print(f"error: cannot enter the working directory {request['cwd']}: {exc.strerror}", file=sys.stderr)
        code = 1
    else:
        threading.Thread(target=_watch_caller, args=(conn,), daemon=True).start()
        from controller import cli

        code = cli.run(request["argv"])
    with contextlib.suppress(BrokenPipeError, OSError):
        sys.stdout.flush()
        sys.stderr.flush()
    _send(conn, {"exit": code})
    return 0


class Server:
    def __init__(self, path: str) -> None:
        self.path = path
        self.pid_path = path.removesuffix(".sock") + ".pid"
        self.idle_s = float(os.environ.get(ENV_IDLE) or DEFAULT_IDLE_S)
        self.listener: socket.socket | None = None
        self.lock_fd = -1
        self.socket_id = (0, 0)

    def lock(self) -> bool:
        """One server per socket: a second one started by a concurrent first call steps back."""
        lock_path = self.path.removesuffix(".sock") + ".lock"
        self.lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        listener.listen(128)
        self.listener = listener
        st = os.stat(self.path)
        self.socket_id = (st.st_dev, st.st_ino)
        Path(self.pid_path).write_text(f"{os.getpid()}\n")

    def close(self) -> None:
        """Remove the socket and pid file if they are still ours (a successor writes both anew)."""
        if not self.reachable():
            return
        for path in (self.path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    def reachable(self) -> bool:
        """Whether callers still find this server: its socket may be gone (the runtime directory was
        removed) or replaced, and a server nobody can reach would only linger until its idle timeout."""
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.socket_id

    def serve(self, files: dict[str, int]) -> None:
        assert self.listener is not None
        idle_until = time.monotonic() + self.idle_s
        while True:
            wait = min(idle_until - time.monotonic(), CHECK_S)
            ready, _, _ = select.select([self.listener], [], [], max(wait, 0))
            if not ready:
                if time.monotonic() >= idle_until or not self.reachable():
                    return
                continue
            idle_until = time.monotonic() + self.idle_s
            conn, _ = self.listener.accept()
            if peer_uid(conn) != os.getuid():
                conn.close()
                continue
            if is_stale(files):
                self.close()  # step aside first, so the server the caller starts next can take over
                os.close(self.lock_fd)
                _send(conn, {"stale": True})
                conn.close()
                return
            if os.fork() == 0:
                self._become_worker(conn)
            conn.close()

    def _become_worker(self, conn: socket.socket) -> None:
        code = 1
        try:
            assert self.listener is not None
            self.listener.close()
            os.close(self.lock_fd)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = worker(conn)
        finally:
            os._exit(code)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        sys.exit("usage: python -m controller.warm SOCKET_PATH PACKAGE_DIR")
    if os.path.dirname(os.path.abspath(__file__)) != args[1]:
        return  # not the copy of the code the caller runs: serving it would run other code
    server = Server(args[0])
    if not server.lock():
        return
    preload()
    files = source_files()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # workers are reaped by the kernel
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.listen()
    try:
        server.serve(files)
    finally:
        server.close()


if __name__ == "__main__":
    main()
