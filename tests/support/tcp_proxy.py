"""A TCP proxy for fault tests: counts the bytes the server sends, can cut connections and throttle.

`cut_after(n)` arms a one-shot cut: the connection carrying the server→client byte number `n` (counted
over all connections since arming) is reset (SO_LINGER 0 → RST) right after that byte was forwarded.
`rate` (bytes/s) slows the server→client direction, to catch a pull in the middle.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time


class TcpProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.downstream_bytes = 0
        self.connections = 0
        self.cuts = 0
        self.rate: float | None = None
        self._cut_at: int | None = None
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)
        self._accept_thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset_counters(self) -> None:
        with self._lock:
            self.downstream_bytes = 0
            self.cuts = 0

    def cut_after(self, n: int) -> None:
        with self._lock:
            self._cut_at = self.downstream_bytes + n

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets.update((client, upstream))
            for args in ((client, upstream, False), (upstream, client, True)):
                thread = threading.Thread(target=self._pump, args=args, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, src: socket.socket, dst: socket.socket, downstream: bool) -> None:
        started = time.monotonic()
        sent = 0
        try:
            while True:
                data = src.recv(64 * 1024 if self.rate is None else 8 * 1024)
                if not data:
                    with contextlib.suppress(OSError):
                        dst.shutdown(socket.SHUT_WR)
                    return
                if downstream:
                    cut = False
                    with self._lock:
                        if self._cut_at is not None and self.downstream_bytes + len(data) >= self._cut_at:
                            data = data[: max(0, self._cut_at - self.downstream_bytes)]
                            self._cut_at = None
                            self.cuts += 1
                            cut = True
                        self.downstream_bytes += len(data)
                    if data:
                        dst.sendall(data)
                    if cut:
                        self._reset(src, dst)
                        return
                    rate = self.rate
                    if rate:
                        sent += len(data)
                        ahead = sent / rate - (time.monotonic() - started)
                        if ahead > 0:
                            time.sleep(ahead)
                else:
                    dst.sendall(data)
        except OSError:
            self._reset(src, dst)

    def _reset(self, *socks: socket.socket) -> None:
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(OSError):
                sock.close()

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        self._reset(*sockets)
        for thread in [self._accept_thread, *self._threads]:
            thread.join(timeout=5)
