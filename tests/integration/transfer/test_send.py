"""`dockyard image send` between real agents: only missing blobs, one read for many targets, resume after
a cut (in the same run and after the controller was killed), corruption rejected and retried, a dead
target does not stop the others, and local archives as the source."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from controller.client import AgentClient
from controller.send import AgentSource, Blob, ImagePlan, Sender
from controller.target import parse as parse_target
from tests.integration.transfer.conftest import IMAGE, Host, HostFactory, cli_for
from tests.support.agent import CLI_BIN, wait_for
from tests.support.tcp_proxy import TcpProxy

pytestmark = pytest.mark.root

BIG = 8_000_000  # random bytes in the top layer: it does not compress


def make_app_image(host: Host, ref: str = "app:1") -> dict[str, Any]:
    """busybox:test plus one layer with BIG random bytes in /big, as `ref`; returns its inspect JSON."""
    host.ok(
        "run", "--name", "mk", "--network", "none", IMAGE, "sh", "-c", f"head -c {BIG} /dev/urandom > /big"
    )
    host.ok("commit", "mk", ref)
    host.ok("rm", "mk")
    info: dict[str, Any] = json.loads(host.ok("image", "inspect", ref))[0]
    return info


def written(host: Host) -> list[dict[str, Any]]:
    return host.events("transfer.blob_written")


def read_bytes(host: Host) -> int:
    return sum(int(e["bytes"]) for e in host.events("transfer.blob_read"))


def unpacked_on_arrival(host: Host) -> int:
    """Layers of the last registered image that were unpacked as they arrived (not read back)."""
    return int(host.events("transfer.image_registered")[-1]["unpacked_on_arrival"])


def leftover_unpacks(host: Host) -> list[Path]:
    """Prepared snapshot directories nobody committed or threw away."""
    return list((host.data_root / "snapshots" / ".tmp").iterdir())


def assert_runs(host: Host, ref: str = "app:1") -> None:
    out = host.ok("run", "--rm", "--network", "none", ref, "sh", "-c", "wc -c < /big")
    assert out.split() == [str(BIG)]


def test_send_to_three_hosts_reads_once_and_skips_what_a_host_has(hosts: HostFactory) -> None:
    a, b = hosts("a", "b")
    c, d = hosts("c", "d", image=False)
    info = make_app_image(a)
    base = json.loads(b.ok("image", "inspect", IMAGE))[0]
    assert base["layers"][0]["digest"] == info["layers"][0]["digest"]  # b already has the base layer
    top = info["layers"][-1]
    total = sum(layer["size"] for layer in info["layers"])
    cli = cli_for([a])

    done = cli(
        "--format", "json", "image", "send", "app:1", "--from", a.target,
        "-H", b.target, "-H", c.target, "-H", d.target, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    image_size = result["image_size"]
    # one read from the source for three targets
    assert result["bytes_read"] == image_size
    assert read_bytes(a) == image_size
    assert image_size > total
    hb, hc, hd = (result["hosts"][h] for h in ("b", "c", "d"))
    # b already had the base layer: it got the top layer, the config and the manifest only
    assert hb["blobs_present"] == 1 and hb["blobs_sent"] == len(info["layers"]) + 1
    assert hb["sent_bytes"] == image_size - info["layers"][0]["size"]
    got_b = {e["digest"]: e["received"] for e in written(b)}
    assert info["layers"][0]["digest"] not in got_b
    assert got_b[top["digest"]] == top["size"]
    assert sum(got_b.values()) == hb["sent_bytes"]
    for h, report in (("c", hc), ("d", hd)):
        assert report["blobs_present"] == 0 and report["sent_bytes"] == image_size, h
    for host in (b, c, d):
        assert_runs(host)
        assert json.loads(host.ok("image", "inspect", "app:1"))[0]["id"] == info["id"]
        assert leftover_unpacks(host) == []
    # every layer that arrived whole was unpacked on the way in; b only got the top one
    assert [unpacked_on_arrival(h) for h in (b, c, d)] == [1, len(info["layers"]), len(info["layers"])]

    again = cli(
        "--format", "json", "image", "send", "app:1", "--from", a.target, "-H", b.target, "-H", c.target
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["bytes_read"] == 0


def test_send_resumes_after_a_connection_cut_mid_blob(hosts: HostFactory) -> None:
    (a,) = hosts("a")
    (b,) = hosts("b", image=False)
    info = make_app_image(a)
    top = info["layers"][-1]
    partial = b.data_root / "content" / "ingest" / top["digest"].split(":", 1)[1] / "data"
    proxy = TcpProxy(b.agent.port, direction="upload")
    proxy.rate = 4_000_000  # slow enough to cut the connection in the middle of the top layer
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(a.config_dir)}
    try:
        proc = subprocess.Popen(
            [
                CLI_BIN,
                "--format",
                "json",
                "image",
                "send",
                "app:1",
                "--from",
                a.target,
                "-H",
                f"b={proxy.host}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # Cut only once part of the layer is durable on the target: bytes still in the agent's socket
            # buffer when the connection is reset are lost by TCP, not by us.
            wait_for(
                lambda: partial.exists() and partial.stat().st_size > 1_000_000, 60, "a partial top layer"
            )
            proxy.cut_after(1)
            wait_for(lambda: proxy.cuts == 1, 30, "the cut")
            proxy.rate = None
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    finally:
        proxy.close()
    assert proc.returncode == 0, stderr
    assert proxy.cuts == 1
    report = json.loads(stdout)["hosts"]["b"]
    assert report["retries"] >= 1 and report["resumed_bytes"] > 0
    writes = [e for e in written(b) if e["digest"] == top["digest"]]
    assert len(writes) >= 2 and not writes[0]["complete"] and writes[-1]["complete"]
    assert writes[-1]["resumed_at"] > 0
    # nothing was written twice: the attempts add up to the layer exactly
    assert sum(e["received"] for e in writes) == top["size"]
    # a resumed layer is unpacked from the stored blob at register; one that arrived whole, on arrival
    # (the cut may have caught another layer in flight too)
    assert not any(e["unpacked"] for e in writes)
    layers = {layer["digest"] for layer in info["layers"]}
    # a layer may also have arrived whole just before the cut and be offered again on the retry (then
    # its last write resumes at its full size): what counts is whether it ever arrived whole
    whole = [e for e in written(b) if e["digest"] in layers and e["complete"] and e["resumed_at"] == 0]
    assert unpacked_on_arrival(b) == len({e["digest"] for e in whole})
    assert all(e["unpacked"] for e in whole)
    assert leftover_unpacks(b) == []
    assert_runs(b)


def test_send_resumes_what_a_killed_controller_left(hosts: HostFactory) -> None:
    (a,) = hosts("a")
    (b,) = hosts("b", image=False)
    info = make_app_image(a)
    top = info["layers"][-1]
    partial = b.data_root / "content" / "ingest" / top["digest"].split(":", 1)[1] / "data"
    proxy = TcpProxy(b.agent.port, direction="upload")
    proxy.rate = 4_000_000  # slow enough to catch the controller in the middle of the layer
    env = {"DOCKYARD_CONFIG_DIR": str(a.config_dir)}
    try:
        proc = subprocess.Popen(
            [CLI_BIN, "image", "send", "app:1", "--from", a.target, "-H", f"b={proxy.host}"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(
                lambda: partial.exists() and partial.stat().st_size > 1_000_000, 30, "a partial top layer"
            )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    finally:
        proxy.close()
    kept = wait_for(lambda: partial.exists() and partial.stat().st_size, 10, "the partial to stay")
    assert kept < top["size"]
    done = cli_for([a])("--format", "json", "image", "send", "app:1", "--from", a.target, "-H", b.target)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["hosts"]["b"]
    assert report["resumed_bytes"] >= kept
    last = [e for e in written(b) if e["digest"] == top["digest"]][-1]
    assert (
        last["complete"]
        and last["resumed_at"] >= kept
        and last["received"] == top["size"] - last["resumed_at"]
    )
    assert_runs(b)


class FlippingSource:
    """The real source with one byte of one blob changed the first time it is read (a fault on the way)."""

    def __init__(self, inner: AgentSource, digest: str, at: int) -> None:
        self.inner = inner
        self.name = inner.name
        self.digest = digest
        self.at = at
        self.flipped = 0

    @property
    def bytes_read(self) -> int:
        return self.inner.bytes_read

    async def plan(self) -> ImagePlan:
        return await self.inner.plan()

    async def read(self, blob: Blob, offset: int) -> AsyncIterator[bytes]:
        position = offset
        async for chunk in self.inner.read(blob, offset):
            if (
                blob.digest == self.digest
                and not self.flipped
                and position <= self.at < position + len(chunk)
            ):
                i = self.at - position
                chunk = chunk[:i] + bytes([chunk[i] ^ 0x01]) + chunk[i + 1 :]
                self.flipped += 1
            position += len(chunk)
            yield chunk


def test_a_corrupted_byte_is_rejected_with_data_loss_and_retried(hosts: HostFactory) -> None:
    (a,) = hosts("a")
    b, c = hosts("b", "c", image=False)
    info = make_app_image(a)
    top = info["layers"][-1]

    async def scenario() -> tuple[dict[str, Any], int, int, int]:
        def client(h: Host) -> AgentClient:
            return AgentClient(parse_target(h.agent.tcp_target, name=h.name), a.config_dir)

        src = client(a)
        targets = [client(b), client(c)]
        source = FlippingSource(AgentSource(src, "app:1"), top["digest"], at=5_000_000)
        try:
            plan = await source.plan()
            reports = await Sender(source, targets, retry_delays=(0.05,)).run(plan)
        finally:
            for cl in [src, *targets]:
                await cl.close()
        return dict(reports), source.bytes_read, source.flipped, plan.size

    reports, bytes_read, flipped, plan_size = asyncio.run(scenario())
    assert flipped == 1
    for name, host in (("b", b), ("c", c)):
        r = reports[name]
        assert r.error is None and r.retries == 1, (name, r)
        finished = [e for e in host.events("rpc.finished") if e.get("rpc", "").endswith("/WriteBlob")]
        assert [e["code"] for e in finished].count("DATA_LOSS") == 1
        attempts = [e for e in written(host) if e["digest"] == top["digest"]]
        assert [e["complete"] for e in attempts] == [False, True]
        # what was unpacked of the corrupted pass was thrown away; the good pass unpacked on arrival
        assert attempts[-1]["unpacked"] and unpacked_on_arrival(host) == len(info["layers"])
        assert leftover_unpacks(host) == []
        assert_runs(host)
    # the bad pass was read once for both; each target then got the layer again on its own
    assert bytes_read == plan_size + 2 * top["size"]


def test_a_dead_target_fails_alone(hosts: HostFactory) -> None:
    a, b, c = hosts("a", "b", "c")
    make_app_image(a)
    c.agent.stop()
    done = cli_for([a])(
        "image", "send", "app:1", "--from", a.target, "-H", b.target, "-H", c.target, timeout=120
    )
    assert done.returncode == 1
    assert "1 ok, 1 failed" in done.stderr
    assert "error: c: " in done.stderr and "Traceback" not in done.stderr
    assert "b | " in done.stdout
    assert_runs(b)
    missing = cli_for([a])("image", "send", "nope:1", "--from", a.target, "-H", b.target)
    assert missing.returncode == 1 and "nope" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_send_from_a_local_archive(hosts: HostFactory, tmp_path: Path, fmt: str) -> None:
    (a,) = hosts("a")
    b, c = hosts("b", "c", image=False)
    info = make_app_image(a)
    archive = tmp_path / f"app-{fmt}.tar"
    a.ok("save", "--format", fmt, "-o", str(archive), "app:1")
    done = cli_for([a])(
        "--format", "json", "image", "send", "app:1", str(archive), "--from", "local",
        "-H", b.target, "-H", c.target, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["bytes_read"] == result["image_size"]
    for host in (b, c):
        assert_runs(host)
        sent = json.loads(host.ok("image", "inspect", "app:1"))[0]
        assert sent["id"] == info["id"]
        if fmt == "oci":
            assert sent["digest"] == info["digest"]  # blobs as stored: the manifest digest survives
    if fmt == "docker":  # the same image `load` makes of the archive
        a.ok("rmi", "app:1")
        a.ok("load", "-i", str(archive))
        assert json.loads(a.ok("image", "inspect", "app:1"))[0]["digest"] == sent["digest"]
    bad = cli_for([a])(
        "image", "send", "other:1", str(tmp_path / "missing.tar"), "--from", "local", "-H", b.target
    )
    assert bad.returncode == 2 and "no such file" in bad.stderr
