"""The audit log on real agents: 10,000 calls and a SIGKILL keep the chain valid, an edit is found, a torn
tail is recorded, secrets never reach the audit/log/events, a full disk refuses calls when required."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent.api.v1 import volumes_pb2, volumes_pb2_grpc
from agent.server.permissions import Permission, Role
from tests.integration.security.conftest import IMAGE, SecureAgent, SecureFleet
from tests.support.agent import CLI_BIN

pytestmark = pytest.mark.root

PASSWORD = "Hunter2-d0ntl3ak-7f3a"


def _lines(agent: SecureAgent) -> list[dict[str, object]]:
    audit = agent.agent.data_root / "audit"
    files = sorted(audit.glob("audit.log.*"), key=lambda p: -int(p.name.rsplit(".", 1)[1]))
    out = []
    for path in [*files, audit / "audit.log"]:
        out += [json.loads(line) for line in path.read_text().splitlines() if line]
    return out


async def _volume_calls(socket: Path, names: list[str], *, remove: bool, concurrency: int = 64) -> set[str]:
    """Create (or remove) each volume with request id = its name; returns the ids answered OK."""
    done: set[str] = set()
    gate = asyncio.Semaphore(concurrency)
    async with grpc.aio.insecure_channel(f"unix:{socket}") as ch:
        stub = volumes_pb2_grpc.VolumesStub(ch)

        async def one(name: str) -> None:
            rid = f"{'rm' if remove else 'mk'}-{name}"
            async with gate:
                try:
                    if remove:
                        await stub.Remove(
                            volumes_pb2.RemoveVolumeRequest(name=name), metadata=(("x-request-id", rid),)
                        )
                    else:
                        await stub.Create(
                            volumes_pb2.CreateVolumeRequest(name=name), metadata=(("x-request-id", rid),)
                        )
                except grpc.aio.AioRpcError:
                    return
            done.add(rid)

        await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
    return done


def test_chain_survives_10000_calls_rotation_and_sigkill_and_an_edit_is_found(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1", audit_max_size=1024 * 1024, audit_max_files=100)
    names = [f"v{i:05d}" for i in range(5000)]
    answered = asyncio.run(_volume_calls(a.agent.socket, names, remove=False))
    answered |= asyncio.run(_volume_calls(a.agent.socket, names, remove=True))
    assert len(answered) == 10_000

    # a burst cut by SIGKILL: whatever was answered is on record
    async def burst_then_kill() -> set[str]:
        task = asyncio.create_task(
            _volume_calls(a.agent.socket, [f"k{i:04d}" for i in range(2000)], remove=False)
        )
        await asyncio.sleep(1.0)
        a.agent.kill()
        return await task

    answered_before_kill = asyncio.run(burst_then_kill())
    assert answered_before_kill, "no call was answered before the kill"
    a.agent.start()

    entries = _lines(a)
    ok_responses = {
        e["request_id"] for e in entries if e.get("stage") == "response" and e.get("result") == "OK"
    }
    missing = (answered | answered_before_kill) - ok_responses
    assert not missing, f"{len(missing)} answered calls have no response entry, e.g. {sorted(missing)[:3]}"
    requests = {e["request_id"] for e in entries if e.get("stage") == "request"}
    assert ok_responses <= requests  # every response has its request entry, written before acting
    files = sorted((a.agent.data_root / "audit").glob("audit.log*"))
    assert len(files) > 5, files  # rotated, and the chain is carried across
    done = fleet.cli(fleet.admin_dir, "audit", "verify", host=a.unix, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: ") and "file(s)" in done.stdout

    # one byte changed in the middle of a middle file: verify names that entry
    middle = a.agent.data_root / "audit" / "audit.log.3"
    raw = middle.read_bytes()
    lines = raw.split(b"\n")
    victim = json.loads(lines[len(lines) // 2])
    # the victim's own line: its request and response entries share the request id
    line_start = sum(len(line) + 1 for line in lines[: len(lines) // 2])
    at = raw.index(f'"request_id":"{victim["request_id"]}"'.encode(), line_start) + len('"request_id":"')
    middle.write_bytes(raw[:at] + (b"X" if raw[at : at + 1] != b"X" else b"Y") + raw[at + 1 :])
    done = fleet.cli(fleet.admin_dir, "audit", "verify", host=a.unix, timeout=120)
    assert done.returncode != 0
    assert (
        f"broken at entry seq {victim['seq']} (audit.log.3 line {len(lines) // 2 + 1}): hash mismatch"
    ) in done.stderr, done.stderr


def test_a_torn_tail_is_detected_reported_and_recorded(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    assert fleet.cli(fleet.admin_dir, "volume", "create", "before", host=a.unix).returncode == 0
    a.agent.kill()
    log = a.agent.data_root / "audit" / "audit.log"
    with log.open("ab") as f:
        f.write(b'{"event":"rpc","rpc":"/agent.api.v1.Volumes/Create","tar')
    a.agent.start()
    assert any(e.get("event") == "audit.torn_tail" for e in a.agent.events())
    shown = fleet.cli(fleet.admin_dir, "audit", host=a.unix).stdout
    assert "audit.torn_tail" in shown
    torn = [e for e in _lines(a) if e.get("event") == "audit.torn_tail"]
    assert torn and torn[0]["torn_text"] == '{"event":"rpc","rpc":"/agent.api.v1.Volumes/Create","tar'
    assert fleet.cli(fleet.admin_dir, "audit", "verify", host=a.unix).returncode == 0


def test_secrets_never_reach_the_audit_the_agent_log_or_events(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    registry = "127.0.0.1:9"
    cli = fleet.cli
    login = cli(fleet.admin_dir, "login", registry, "-u", "bob", "--password-stdin", host=a.tcp,
                input=PASSWORD.encode())  # fmt: skip
    assert login.returncode != 0  # nothing listens there; the agent saw the password all the same
    cli(fleet.admin_dir, "login", registry, "-u", "bob", "--password-stdin", "--no-verify", host=a.tcp,
        input=PASSWORD.encode())  # fmt: skip
    assert cli(fleet.admin_dir, "pull", f"{registry}/app:1", host=a.tcp).returncode != 0
    run = cli(fleet.admin_dir, "run", "--rm", "-e", f"DB_PASSWORD={PASSWORD}", IMAGE, "true", host=a.tcp)
    assert run.returncode == 0, run.stderr
    entries = _lines(a)
    rpcs = {e.get("rpc") for e in entries}
    assert {
        "/agent.api.v1.Images/CheckLogin",
        "/agent.api.v1.Images/Pull",
        "/agent.api.v1.Containers/Run",
    } <= rpcs
    run_entry = next(e for e in entries if e.get("rpc") == "/agent.api.v1.Containers/Run")
    assert "DB_PASSWORD" in json.dumps(run_entry)  # the key is recorded, its value is not
    events = cli(fleet.admin_dir, "events", "--since", "0", "--no-follow", host=a.unix).stdout
    audit_text = "".join(p.read_text() for p in (a.agent.data_root / "audit").glob("audit.log*"))
    for where, text in (("audit", audit_text), ("agent log", a.agent.log_text()), ("events", events)):
        assert PASSWORD not in text, f"the password is in the {where}"


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "tiny"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_required_audit_log_that_cannot_be_written_refuses_the_call(
    fleet: SecureFleet, tiny_tmpfs: Path
) -> None:
    a = fleet.start_agent("a1", audit_dir=str(tiny_tmpfs / "audit"), audit_required=True)
    filler = tiny_tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass  # full
    finally:
        os.close(fd)
    # the log's last page may still hold an entry or two: call until the disk is really full
    for n in range(20):
        done = fleet.cli(fleet.admin_dir, "volume", "create", f"nope{n}", host=a.unix)
        if done.returncode != 0:
            break
    assert done.returncode != 0
    assert "audit log cannot be written: No space left on device" in done.stderr, done.stderr
    # (that call may have acted before its response entry failed; the next one is stopped before acting)
    done = fleet.cli(fleet.admin_dir, "volume", "create", "never", host=a.unix)
    assert "audit log cannot be written: No space left on device" in done.stderr, done.stderr
    volumes = fleet.cli(fleet.admin_dir, "volume", "ls", "-q", host=a.unix)
    assert volumes.returncode == 0 and "never" not in volumes.stdout.split()
    filler.unlink()
    assert fleet.cli(fleet.admin_dir, "volume", "create", "yes", host=a.unix).returncode == 0
    assert fleet.cli(fleet.admin_dir, "audit", "verify", host=a.unix).returncode == 0


def test_reading_the_audit_needs_the_audit_permission(fleet: SecureFleet) -> None:
    a = fleet.start_agent("a1")
    vic = fleet.identity("vic", Role.VIEWER)
    vaud = fleet.identity("vaud", Role.VIEWER, allow=(Permission.AUDIT,))
    dee = fleet.identity("dee", Role.DEPLOYER)
    assert fleet.cli(dee, "volume", "create", "by-dee", host=a.tcp).returncode == 0
    assert fleet.cli(fleet.admin_dir, "volume", "create", "by-local", host=a.unix).returncode == 0
    done = fleet.cli(vic, "audit", host=a.tcp)
    assert done.stderr.strip() == f"error: {a.tcp}: role viewer may not audit (needs --allow audit)"
    shown = fleet.cli(vaud, "audit", "--user", "dee", host=a.tcp)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines and all(" dee (deployer) " in line for line in lines)
    assert any("Volumes.Create by-dee OK" in line for line in lines)
    refused = fleet.cli(vaud, "audit", "--user", "vic", host=a.tcp).stdout
    assert "Audit.Read - PERMISSION_DENIED" in refused
    assert fleet.cli(vaud, "audit", "--since", "1h", host=a.tcp).stdout.count("by-local") == 2
    assert fleet.cli(vaud, "audit", "--since", "2999-01-01T00:00:00Z", host=a.tcp).stdout == ""

    async def follow() -> str:
        proc = await asyncio.create_subprocess_exec(
            *[CLI_BIN, "-H", a.tcp, "audit", "--follow", "--user", "local"],
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "DOCKYARD_CONFIG_DIR": str(vaud)},
        )
        assert proc.stdout is not None
        try:
            await asyncio.sleep(1.0)
            fleet.cli(fleet.admin_dir, "volume", "create", "followed", host=a.unix)
            seen = ""
            while "followed" not in seen:
                seen += (await asyncio.wait_for(proc.stdout.readline(), 20)).decode()
            return seen
        finally:
            proc.terminate()
            await proc.wait()

    assert "Volumes.Create followed" in asyncio.run(follow())
