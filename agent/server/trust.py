"""The Trust servicer: validate → TrustManager → convert to agent.api.v1 messages. Nothing else."""

from __future__ import annotations

import asyncio
import hashlib

import grpc

from agent.api.v1 import trust_pb2 as pb
from agent.api.v1 import trust_pb2_grpc
from agent.errors import InvalidArgument
from agent.registry.auth import Credentials
from agent.trust.manager import PolicyState, TrustManager
from agent.trust.signatures import StoredSignature
from agent.trust.verify import Verdict

MAX_POLICY_TEXT = 1024 * 1024


def _policy(state: PolicyState) -> pb.TrustPolicy:
    p = state.policy
    return pb.TrustPolicy(
        path=str(state.path),
        present=state.present,
        default_policy=str(p.default),
        rules=[
            pb.TrustRule(
                scope=r.scope,
                policy=str(r.policy),
                key_fingerprints=[k.fingerprint for k in r.keys],
                digests=sorted(r.digests),
                line=r.line,
            )
            for r in p.rules
        ],
        text=p.text,
        sha256=hashlib.sha256(p.text.encode()).hexdigest() if state.present else "",
        refused=state.refused,
    )


def _verdict(v: Verdict) -> pb.TrustVerdict:
    return pb.TrustVerdict(
        name=v.name,
        image=v.image,
        allowed=v.allowed,
        scope=v.scope,
        policy=str(v.policy),
        reason=v.reason,
        key_fingerprint=v.key,
        message=v.message(),
    )


def _credentials(msg: pb.PushSignatureRequest) -> Credentials | None:
    if not msg.HasField("credentials"):
        return None
    c = msg.credentials
    return Credentials(c.username, c.password) if c.username or c.password else None


class TrustServicer(trust_pb2_grpc.TrustServicer):
    def __init__(self, manager: TrustManager) -> None:
        self._m = manager

    async def GetPolicy(
        self, request: pb.GetTrustPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetTrustPolicyResponse:
        state = await asyncio.to_thread(self._m.state)
        return pb.GetTrustPolicyResponse(policy=_policy(state))

    async def SetPolicy(
        self, request: pb.SetTrustPolicyRequest, context: grpc.aio.ServicerContext
    ) -> pb.SetTrustPolicyResponse:
        if len(request.text.encode()) > MAX_POLICY_TEXT:
            raise InvalidArgument(f"the policy is larger than {MAX_POLICY_TEXT} bytes")
        state = await self._m.set_policy(request.text, source=request.source or "policy")
        return pb.SetTrustPolicyResponse(policy=_policy(state))

    async def Verify(
        self, request: pb.VerifyImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.VerifyImageResponse:
        if not request.reference:
            raise InvalidArgument("an image reference is required")
        judgement = await self._m.verify(request.reference)
        return pb.VerifyImageResponse(
            reference=judgement.reference,
            digest=judgement.digest,
            allowed=judgement.allowed,
            verdicts=[_verdict(v) for v in judgement.verdicts],
        )

    async def PushSignature(
        self, request: pb.PushSignatureRequest, context: grpc.aio.ServicerContext
    ) -> pb.PushSignatureResponse:
        if not request.reference or not request.signed_digest:
            raise InvalidArgument("a reference and the signed digest are required")
        result = await self._m.push_signature(
            request.reference,
            request.signed_digest,
            request.payload,
            request.signature,
            _credentials(request),
        )
        return pb.PushSignatureResponse(
            tag=result.tag,
            manifest_digest=result.manifest_digest,
            signatures=result.signatures,
            already_present=result.already_present,
            stored=result.stored,
        )

    async def ExportSignatures(
        self, request: pb.ExportSignaturesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExportSignaturesResponse:
        if not request.reference:
            raise InvalidArgument("an image reference is required")
        digest, found = await asyncio.to_thread(self._m.export, request.reference)
        return pb.ExportSignaturesResponse(
            image_digest=digest,
            signatures=[
                pb.ImageSignature(
                    signed_digest=s.signed_digest,
                    payload=s.payload,
                    signature=s.signature,
                    index=s.via_index,
                    source=s.source,
                )
                for s in found
            ],
        )

    async def ImportSignatures(
        self, request: pb.ImportSignaturesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImportSignaturesResponse:
        if not request.image_digest:
            raise InvalidArgument("the image digest is required")
        signatures = [
            StoredSignature(request.image_digest, s.signed_digest, s.payload, s.signature, s.index, s.source)
            for s in request.signatures
        ]
        added = await asyncio.to_thread(self._m.import_, request.image_digest, signatures)
        return pb.ImportSignaturesResponse(added=added)
