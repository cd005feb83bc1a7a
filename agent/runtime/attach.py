"""Client side of conmon's attach socket and control fifo: live stdio and terminal resize.

The attach socket is SOCK_SEQPACKET. Each message from conmon starts with one byte naming the stream
(2 = stdout, 3 = stderr); bytes we send go to the process's stdin as is; shutting down our write side
closes its stdin. Window size changes go to the `ctl` fifo in the bundle as `1 <rows> <cols>\\n`.
conmon names the socket `<socket-dir>/<cuuid>/attach` (a symlink to the bundle); we connect through an
O_PATH descriptor so long data roots never hit the 108-byte socket path limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from pathlib import Path

from agent.errors import FailedPrecondition

STREAMS = {2: "stdout", 3: "stderr"}
BUF_SIZE = 32768 + 1


class AttachSession:
    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, socket_dir: Path, cuuid: str) -> AttachSession:
        try:
            dir_fd = os.open(socket_dir / cuuid, os.O_PATH | os.O_CLOEXEC)
        except FileNotFoundError:
            raise FailedPrecondition("the container's attach socket is gone (is it running?)") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, f"/proc/self/fd/{dir_fd}/attach")
        except OSError as exc:
            sock.close()
            raise FailedPrecondition(f"cannot attach to the container: {exc.strerror}") from exc
        finally:
            os.close(dir_fd)
        return cls(sock)

    async def read(self) -> tuple[str, bytes] | None:
        """Next (stream, data) from the process; None once conmon closes the session."""
        while True:
            try:
                msg = await self._loop.sock_recv(self._sock, BUF_SIZE)
            except (ConnectionResetError, BrokenPipeError):
                return None
            if not msg:
                return None
            stream = STREAMS.get(msg[0])
            if stream is not None and len(msg) > 1:
                return stream, msg[1:]

    async def write(self, data: bytes) -> None:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            await self._loop.sock_sendall(self._sock, data)

    def close_stdin(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._sock.close()


def resize(bundle: Path, rows: int, cols: int) -> None:
    """Tell conmon the terminal's new size; ignored when conmon is already gone."""
    if rows <= 0 or cols <= 0:
        return
    try:
        fd = os.open(bundle / "ctl", os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    try:
        os.write(fd, f"1 {rows} {cols}\n".encode())
    except OSError:
        pass
    finally:
        os.close(fd)
