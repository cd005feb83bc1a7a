"""What a build may reach beyond its sandbox, and archives that try to: a real agent building with runc.

* `RUN --network=host` shares the agent host's network namespace, loopback services included (BuildKit's
  `network.host` entitlement): refused with the Dockerfile line unless `dockyard build --allow network.host`.
* ADD of a tar whose hard link points outside the archive's destination is refused, saying so.
"""

from __future__ import annotations

import io
import secrets
import tarfile
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.integration.build.conftest import Cli, failed, leftovers, ok
from tests.support.agent import AgentProcess

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

Ctx = Callable[..., Path]


class LoopbackService:
    """An HTTP service on the host's 127.0.0.1 that only the host's own network namespace can reach."""

    def __init__(self) -> None:
        self.secret = secrets.token_hex(8)
        self.hits: list[str] = []
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                service.hits.append(self.path)
                body = f"secret={service.secret}\n".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/catalog"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def loopback() -> Iterator[LoopbackService]:
    service = LoopbackService()
    try:
        yield service
    finally:
        service.close()


def test_run_network_host_needs_allow_network_host(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess, loopback: LoopbackService
) -> None:
    dockerfile = (
        "FROM busybox:test\n"
        "RUN echo before > /before.txt\n"
        f"RUN --network=host wget -q -O /fetched.txt {loopback.url} && cat /fetched.txt\n"
    )
    ctx = context_dir("hostnet", dockerfile)

    refused = failed(bcli("build", "-t", "hostnet:1", str(ctx)))
    assert refused.stderr.count("error: ") == 1, refused.stderr
    assert (
        "Dockerfile line 3: RUN --network=host needs `dockyard build --allow network.host`" in refused.stderr
    ), refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
    assert loopback.hits == []  # the host's loopback service was never reached
    assert "Step 2/3" not in refused.stdout  # refused before any step ran
    assert leftovers(build_agent) == []
    assert "hostnet" not in ok(bcli("images")).stdout
    assert len(ok(bcli("ps", "-a")).stdout.splitlines()) <= 1

    # an unknown entitlement is refused too, naming the one there is
    unknown = failed(bcli("build", "--allow", "security.insecure", str(ctx)))
    assert "--allow security.insecure: unknown entitlement" in unknown.stderr
    assert "network.host" in unknown.stderr
    assert loopback.hits == []

    granted = ok(bcli("build", "--allow", "network.host", "-t", "hostnet:1", str(ctx)))
    assert f"secret={loopback.secret}" in granted.stdout.splitlines()
    assert loopback.hits == ["/catalog"]
    assert "Successfully tagged docker.io/library/hostnet:1" in granted.stdout
    assert leftovers(build_agent) == []


def test_onbuild_run_network_host_needs_allow_in_the_child_build(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess, loopback: LoopbackService
) -> None:
    parent = context_dir(
        "parent", f"FROM busybox:test\nONBUILD RUN --network=host wget -q -O - {loopback.url}\n"
    )
    ok(bcli("build", "-t", "hostnet-parent:1", str(parent)))  # ONBUILD only records the trigger
    child = context_dir("child", "FROM hostnet-parent:1\nRUN true\n")
    refused = failed(bcli("build", "-t", "hostnet-child:1", str(child)))
    assert "RUN --network=host needs `dockyard build --allow network.host`" in refused.stderr
    assert loopback.hits == []
    assert leftovers(build_agent) == []
    granted = ok(bcli("build", "--allow", "network.host", "-t", "hostnet-child:1", str(child)))
    assert f"secret={loopback.secret}" in granted.stdout.splitlines()


def _tar_with_hardlink(linkname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        data = b"inside\n"
        info = tarfile.TarInfo("inside.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("a")
        link.type = tarfile.LNKTYPE
        link.linkname = linkname
        tf.addfile(link)
    return buf.getvalue()


def test_add_tar_with_hard_link_outside_is_refused_saying_why(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess
) -> None:
    ctx = context_dir(
        "hardlink",
        "FROM busybox:test\nADD x.tar /opt/x/\n",
        {"x.tar": _tar_with_hardlink("../../etc/passwd")},
    )
    refused = failed(bcli("build", "-t", "hardlink:1", str(ctx)))
    assert (
        "Dockerfile line 2: ADD: x.tar: hard link a -> ../../etc/passwd points outside the archive's "
        "destination; refused"
    ) in refused.stderr, refused.stderr
    assert "No such file or directory" not in refused.stderr
    assert leftovers(build_agent) == []

    missing = context_dir(
        "hardlink-missing", "FROM busybox:test\nADD x.tar /opt/x/\n", {"x.tar": _tar_with_hardlink("nowhere")}
    )
    refused = failed(bcli("build", str(missing)))
    assert "ADD: x.tar: hard link a -> nowhere: the target is not in the archive" in refused.stderr

    # a hard link inside the archive still works
    good = context_dir(
        "hardlink-ok",
        "FROM busybox:test\nADD x.tar /opt/x/\nRUN cat /opt/x/a && test /opt/x/a -ef /opt/x/inside.txt\n",
        {"x.tar": _tar_with_hardlink("inside.txt")},
    )
    out = ok(bcli("build", str(good))).stdout
    assert "inside" in out.splitlines()
