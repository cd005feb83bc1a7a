"""The local end of an attached session: raw terminal mode, stdin as async chunks, window-size changes.

Used by `run -it`, `start -ai`, `exec -it` (and plain `-i` with piped stdin). The terminal is always
restored, whatever ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import select
import signal
import stat
import struct
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

CHUNK = 32 * 1024


@dataclass(frozen=True)
class Size:
    rows: int
    cols: int


def size(fd: int | None = None) -> Size:
    """The terminal's size (0×0 when stdout is not a terminal)."""
    fd = sys.stdout.fileno() if fd is None else fd
    try:
        packed = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return Size(0, 0)
    rows, cols, _, _ = struct.unpack("HHHH", packed)
    return Size(rows, cols)


def is_tty(fd: int) -> bool:
    return os.isatty(fd)


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put the terminal into raw mode (keys go to the container as typed) and always restore it."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def read_secret(prompt: str) -> str:
    """Read a line from the terminal on stdin without echoing it.

    Works on the descriptor itself, not /dev/tty (as getpass does): a warm worker (controller/warm.py)
    has the caller's terminal as stdin but no controlling terminal.
    """
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    quiet = list(saved)
    quiet[3] &= ~termios.ECHO
    try:
        termios.tcsetattr(fd, termios.TCSAFLUSH, quiet)
        sys.stderr.write(prompt)  # only once echo is off: what is typed after the prompt is kept and hidden
        sys.stderr.flush()
        line = sys.stdin.readline()
    finally:
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)
        sys.stderr.write("\n")
        sys.stderr.flush()
    return line.rstrip("\r\n")


def _pollable(fd: int) -> bool:
    """Whether epoll takes `fd` (pipes, sockets, terminals do; regular files and /dev/null do not)."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return False
    probe = select.epoll()
    try:
        probe.register(fd, select.EPOLLIN)
    except PermissionError:
        return False
    finally:
        probe.close()
    return True


async def read_stdin(fd: int | None = None) -> AsyncIterator[bytes]:
    """Chunks of stdin as they arrive, without blocking the loop; ends at EOF."""
    fd = sys.stdin.fileno() if fd is None else fd
    if not _pollable(fd):  # a regular file or /dev/null: epoll refuses it, and a read never waits
        while data := await asyncio.to_thread(os.read, fd, CHUNK):
            yield data
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    blocking = os.get_blocking(fd)
    os.set_blocking(fd, False)

    def ready() -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        queue.put_nowait(data)
        if not data:
            loop.remove_reader(fd)

    loop.add_reader(fd, ready)
    try:
        while data := await queue.get():
            yield data
    finally:
        loop.remove_reader(fd)
        os.set_blocking(fd, blocking)


def on_resize(callback: object) -> contextlib.AbstractContextManager[None]:
    """Call `callback()` on SIGWINCH while the context is active."""

    @contextlib.contextmanager
    def handler() -> Iterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGWINCH, callback)  # type: ignore[arg-type]
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGWINCH)

    return handler()
