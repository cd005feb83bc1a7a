"""The Audit servicer: read (filtered, followed) and verify the agent's audit log. Nothing else."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agent import errors
from agent.api.v1 import audit_pb2 as pb
from agent.api.v1 import audit_pb2_grpc
from agent.audit import AuditLog, parse_time


def entry_message(line: bytes) -> pb.AuditEntry:
    """One written line → its message; the line itself travels along (what verify checks)."""
    text = line.decode(errors="replace")
    try:
        d = json.loads(text)
    except ValueError:
        return pb.AuditEntry(line=text)
    caller = d.get("caller")
    msg = pb.AuditEntry(
        seq=int(d.get("seq", 0)),
        caller=str(caller.get("cn", "")) if isinstance(caller, dict) else str(caller or ""),
        role=str(caller.get("role", "")) if isinstance(caller, dict) else "",
        rpc=str(d.get("rpc") or d.get("event") or ""),
        target=str(d.get("target", "")),
        result=str(d.get("result", "")),
        request_id=str(d.get("request_id", "")),
        stage=str(d.get("stage", "")),
        line=text,
    )
    try:
        msg.time.FromDatetime(parse_time(str(d.get("time", ""))))
    except ValueError:
        pass
    return msg


class AuditServicer(audit_pb2_grpc.AuditServicer):
    def __init__(self, log: AuditLog | None) -> None:
        self._log = log

    def _audit(self) -> AuditLog:
        if self._log is None:
            raise errors.FailedPrecondition("this agent keeps no audit log (audit = false in agent.toml)")
        return self._log

    async def Read(
        self, request: pb.ReadAuditRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AuditEntry]:
        log = self._audit()
        since = _since(request.since) if request.HasField("since") else None
        async for line in log.read(since=since, user=request.user or None, follow=request.follow):
            yield entry_message(line)

    async def Verify(
        self, request: pb.VerifyAuditRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyAuditResponse:
        result = await asyncio.to_thread(self._audit().verify)
        msg = pb.VerifyAuditResponse(
            ok=result.ok,
            entries=result.entries,
            files=result.files,
            first_seq=result.first_seq,
            last_seq=result.last_seq,
            anchored=result.anchored,
        )
        if result.broken is not None:
            msg.broken_file = result.broken.file
            msg.broken_line = result.broken.line
            msg.broken_seq = result.broken.seq or 0
            msg.reason = result.broken.reason
        return msg


def _since(ts: Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)
