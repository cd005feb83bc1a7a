"""The Audit service: one agent's audit log, read (filtered, followed) and verified."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from agent.api.v1 import audit_pb2 as pb
from controller.client import AgentClient, rpc

_SERVICE = pb.DESCRIPTOR.services_by_name["Audit"]
READ = rpc(_SERVICE, "Read", pb.ReadAuditRequest, pb.AuditEntry)
VERIFY = rpc(_SERVICE, "Verify", pb.VerifyAuditRequest, pb.VerifyAuditResponse)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str  # ISO 8601, UTC
    caller: str  # certificate CN or "local"
    role: str
    rpc: str
    target: str
    result: str
    request_id: str
    stage: str
    line: str  # the entry as the agent wrote it (JSON)

    @property
    def record(self) -> dict[str, Any]:
        """The whole entry as written (arguments, message, hashes)."""
        data: dict[str, Any] = json.loads(self.line)
        return data


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    files: int
    first_seq: int
    last_seq: int
    anchored: bool
    broken_file: str
    broken_line: int
    broken_seq: int
    reason: str


class AuditApi:
    """Typed calls to one agent's Audit service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def read(
        self, *, since_ns: int | None = None, user: str | None = None, follow: bool = False
    ) -> AsyncIterator[AuditEntry]:
        request = pb.ReadAuditRequest(user=user or "", follow=follow)
        if since_ns is not None:
            request.since.FromNanoseconds(since_ns)
        async for e in self.client.server_stream(READ, request):
            when = e.time.ToDatetime(tzinfo=UTC) if e.HasField("time") else None
            yield AuditEntry(
                seq=e.seq,
                time=when.isoformat(timespec="milliseconds").replace("+00:00", "Z") if when else "",
                caller=e.caller,
                role=e.role,
                rpc=e.rpc,
                target=e.target,
                result=e.result,
                request_id=e.request_id,
                stage=e.stage,
                line=e.line,
            )

    async def verify(self) -> Verification:
        r = await self.client.unary(VERIFY, pb.VerifyAuditRequest())
        return Verification(
            ok=r.ok,
            entries=r.entries,
            files=r.files,
            first_seq=r.first_seq,
            last_seq=r.last_seq,
            anchored=r.anchored,
            broken_file=r.broken_file,
            broken_line=r.broken_line,
            broken_seq=r.broken_seq,
            reason=r.reason,
        )
