"""An HTTP front for a registry that answers 503 to the first GET of every blob, then passes through.

For the "retries with backoff on 5xx" path: a client that does not retry fails at once; one that does
gets every blob on its second try. Streams bodies (Range requests included) without buffering them.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


class FlakyFront:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.failed: list[str] = []
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                front._forward(self, "GET")

            def do_HEAD(self) -> None:
                front._forward(self, "HEAD")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def _forward(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = handler.path
        if method == "GET" and "/blobs/sha256:" in path:
            with self._lock:
                first = path not in self._seen
                self._seen.add(path)
                if first:
                    self.failed.append(path)
            if first:
                body = b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}'
                handler.send_response(503)
                handler.send_header("Content-Type", "application/json")
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                handler.wfile.write(body)
                return
        upstream = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=30)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() not in _HOP_BY_HOP}
            upstream.request(method, path, headers=headers)
            response = upstream.getresponse()
            handler.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_BY_HOP:
                    handler.send_header(key, value)
            handler.end_headers()
            while method != "HEAD" and (chunk := response.read(64 * 1024)):
                handler.wfile.write(chunk)
        finally:
            upstream.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
