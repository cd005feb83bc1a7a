"""The audit log itself: chain, rotation, torn tails, verification, redaction, fail-closed writes."""

from __future__ import annotations

import asyncio
import errno
import json
import os
from pathlib import Path

import pytest

from agent.api.v1 import containers_pb2, images_pb2, releases_pb2, transfer_pb2
from agent.audit import GENESIS, AuditLog, AuditUnavailable, line_hash, summarize


def _log(path: Path, **kw: object) -> AuditLog:
    log = AuditLog(path, **kw)  # type: ignore[arg-type]
    log.open()
    return log


def _entries(log: AuditLog) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.lines()]


async def test_entries_chain_and_verify(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit")
    await asyncio.gather(*(log.record({"event": "rpc", "n": i}) for i in range(50)))
    entries = _entries(log)
    assert [e["seq"] for e in entries] == list(range(1, 51))
    assert entries[0]["prev"] == GENESIS
    raw = list(log.lines())
    assert all(json.loads(raw[i])["prev"] == line_hash(raw[i - 1]) for i in range(1, len(raw)))
    result = log.verify()
    assert result.ok and result.entries == 50 and result.anchored


async def test_the_chain_continues_across_restart_and_rotation(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit", max_size=2000, keep=50)
    for i in range(40):
        await log.record({"event": "rpc", "n": i})
    log.close()
    log = _log(tmp_path / "audit", max_size=2000, keep=50)
    for i in range(40, 60):
        await log.record({"event": "rpc", "n": i})
    files = log.files()
    assert len(files) > 3
    assert [e["n"] for e in _entries(log)] == list(range(60))
    first_of_current = json.loads((tmp_path / "audit" / "audit.log").read_bytes().split(b"\n")[0])
    last_of_previous = (tmp_path / "audit" / "audit.log.1").read_bytes().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    assert first_of_current["prev"] == line_hash(last_of_previous)
    assert log.verify().ok


async def test_rotation_keeps_n_files_and_verify_starts_from_the_first_kept(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit", max_size=1000, keep=2)
    for i in range(80):
        await log.record({"event": "rpc", "n": i})
    assert [p.name for p in log.files()] == ["audit.log.2", "audit.log.1", "audit.log"]
    result = log.verify()
    assert result.ok and not result.anchored and result.first_seq > 1 and result.last_seq == 80


async def test_a_one_byte_edit_in_the_middle_is_named(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit")
    for i in range(100):
        await log.record({"event": "rpc", "target": f"c{i:03d}"})
    path = tmp_path / "audit" / "audit.log"
    data = path.read_bytes()
    at = data.index(b'"target":"c050"') + len(b'"target":"c05')
    path.write_bytes(data[:at] + b"1" + data[at + 1 :])  # c050 -> c051, still valid JSON
    result = log.verify()
    assert not result.ok and result.broken is not None
    assert result.broken.seq == 51 and result.broken.line == 51
    assert "hash mismatch" in result.broken.reason


async def test_a_removed_line_breaks_the_link(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit")
    for i in range(10):
        await log.record({"event": "rpc", "n": i})
    path = tmp_path / "audit" / "audit.log"
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:4] + lines[5:]))
    result = log.verify()
    assert result.broken is not None and result.broken.seq == 6 and "chain broken" in result.broken.reason


async def test_a_torn_tail_is_cut_recorded_and_the_chain_stays_valid(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit")
    for i in range(5):
        await log.record({"event": "rpc", "n": i})
    log.close()
    path = tmp_path / "audit" / "audit.log"
    with path.open("ab") as f:
        f.write(b'{"event":"rpc","n":5,"seq":6,"pre')  # a crash in the middle of a line
    assert log.verify().broken is not None  # seen as torn before the repair
    log = _log(tmp_path / "audit")
    entries = _entries(log)
    assert entries[-1]["event"] == "audit.torn_tail"
    assert entries[-1]["torn_text"] == '{"event":"rpc","n":5,"seq":6,"pre'
    assert entries[-1]["torn_bytes"] == 33 and entries[-1]["seq"] == 6
    await log.record({"event": "rpc", "n": 6})
    assert log.verify().ok


async def test_required_log_refuses_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = _log(tmp_path / "audit", required=True)
    await log.record({"event": "rpc", "n": 0})
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        if fd == log._fd:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(AuditUnavailable) as info:
        await log.record({"event": "rpc", "n": 1})
    assert info.value.message == "audit log cannot be written: No space left on device"
    monkeypatch.setattr(os, "write", real_write)
    await log.record({"event": "rpc", "n": 2})
    assert [e["n"] for e in _entries(log)] == [0, 2] and log.verify().ok


async def test_an_optional_log_lets_the_call_go_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = _log(tmp_path / "audit", required=False)

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    await log.record({"event": "rpc"})  # logged, not raised


async def test_read_filters_and_follows(tmp_path: Path) -> None:
    log = _log(tmp_path / "audit")
    await log.record({"event": "rpc", "caller": {"cn": "alice"}})
    await log.record({"event": "rpc", "caller": "local"})
    got = [json.loads(x)["caller"] async for x in log.read(user="alice")]
    assert got == [{"cn": "alice"}]

    async def follow() -> list[int]:
        seen = []
        async for line in log.read(follow=True):
            seen.append(json.loads(line)["seq"])
            if len(seen) == 3:
                return seen
        return seen

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.05)
    await log.record({"event": "rpc"})
    assert await asyncio.wait_for(task, 5) == [1, 2, 3]


def test_summaries_keep_targets_and_drop_secrets() -> None:
    cfg = containers_pb2.ContainerConfig(
        image="busybox", name="web", env=["DB_PASSWORD=hunter2-secret", "MODE=prod"], privileged=True
    )
    target, args = summarize(containers_pb2.CreateContainerRequest(config=cfg))
    assert target == "web"
    assert args["config"]["env"] == ["DB_PASSWORD", "MODE"]
    assert args["config"]["privileged"] is True
    pull = images_pb2.PullImageRequest(
        reference="reg/app:1", credentials=images_pb2.RegistryCredentials(username="u", password="hunter2")
    )
    target, args = summarize(pull)
    assert target == "reg/app:1" and args["credentials"] == "<redacted>"
    lease = releases_pb2.ActivateReleaseRequest(release="shop", lease_token="tok-hunter2")
    target, args = summarize(lease)
    assert target == "shop" and args["lease_token"] == "<redacted>"
    rec = transfer_pb2.RecreateContainerRequest(config_json='{"env": ["K=hunter2"]}', image="app")
    target, args = summarize(rec)
    assert target == "app" and "hunter2" not in json.dumps(args)
    for message in (cfg, pull, lease, rec):
        assert "hunter2" not in json.dumps(summarize(message)[1])
