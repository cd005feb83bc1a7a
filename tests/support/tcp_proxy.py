"""A TCP proxy for fault tests: counts the bytes each way, can cut connections and throttle one direction.

The metered direction is server→client (`"download"`, the default: registry pulls) or client→server
(`"upload"`: image sends to an agent). `cut_after(n)` arms a one-shot cut: the connection carrying byte
number `n` of the metered direction (counted over all connections since arming) is reset (SO_LINGER 0 →
RST to both ends) right after that byte was forwarded. `rate` (bytes/s) slows the metered direction, to
catch a transfer in the middle.

Each connection is served by one thread that alone owns both sockets (select over them plus a wake-up
pipe), so closing a socket really resets it — a close from another thread while one is blocked in recv()
would not.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import struct
import threading
import time
from typing import Literal

Direction = Literal["download", "upload"]
_BUF = 64 * 1024


class TcpProxy:
    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", *, direction: Direction = "download"
    ) -> None:
        self.target = (target_host, target_port)
        self.direction = direction
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.downstream_bytes = 0  # server→client
        self.upstream_bytes = 0  # client→server
        self.connections = 0
        self.cuts = 0
        self.rate: float | None = None
        self._cut_at: int | None = None
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset_counters(self) -> None:
        with self._lock:
            self.downstream_bytes = 0
            self.upstream_bytes = 0
            self.cuts = 0

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._cut_at = self._metered() + n

    def _metered(self) -> int:
        return self.upstream_bytes if self.direction == "upload" else self.downstream_bytes

    def _accept(self) -> None:
        while True:
            ready, _, _ = select.select([self._listener, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _take(self, data: bytes) -> tuple[bytes, bool]:
        """Count metered bytes; trim at an armed cut. Returns (bytes to forward, cut now)."""
        with self._lock:
            counted = self._metered()
            cut = self._cut_at is not None and counted + len(data) >= self._cut_at
            if cut:
                assert self._cut_at is not None
                data = data[: max(0, self._cut_at - counted)]
                self._cut_at = None
                self.cuts += 1
            self._count(len(data), upward=self.direction == "upload")
            return data, cut

    def _count(self, n: int, *, upward: bool) -> None:
        """Under the lock: count `n` bytes sent client→server (`upward`) or server→client."""
        if upward:
            self.upstream_bytes += n
        else:
            self.downstream_bytes += n

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        with self._lock:
            self.connections += 1
        started = time.monotonic()
        sent = 0
        open_ends = {client, upstream}
        metered_source = client if self.direction == "upload" else upstream
        reset = False
        try:
            while open_ends:
                ready, _, _ = select.select([*open_ends, self._wake_r], [], [])
                if self._wake_r in ready:
                    return
                for sock in ready:
                    peer = upstream if sock is client else client
                    data = sock.recv(_BUF if self.rate is None else 8 * 1024)
                    if not data:
                        open_ends.discard(sock)
                        with contextlib.suppress(OSError):
                            peer.shutdown(socket.SHUT_WR)
                        continue
                    if sock is not metered_source:
                        with self._lock:
                            self._count(len(data), upward=sock is client)
                        peer.sendall(data)
                        continue
                    data, cut = self._take(data)
                    if data:
                        peer.sendall(data)
                    if cut:
                        reset = True
                        return
                    rate = self.rate
                    if rate:
                        sent += len(data)
                        ahead = sent / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)  # throttling, not synchronisation
        except OSError:
            pass
        finally:
            for sock in (client, upstream):
                if reset:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        os.write(self._wake_w, b"x")
        for thread in [self._accept_thread, *self._threads]:
            thread.join(timeout=10)
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
