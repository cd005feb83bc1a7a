"""The Trust service: the agent's image trust policy, verdicts, cosign signatures (push, export, import)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.api.v1 import images_pb2
from agent.api.v1 import trust_pb2 as pb
from controller.client import AgentClient, rpc
from controller.credentials import Login

_SERVICE = pb.DESCRIPTOR.services_by_name["Trust"]
GET_POLICY = rpc(_SERVICE, "GetPolicy", pb.GetTrustPolicyRequest, pb.GetTrustPolicyResponse)
SET_POLICY = rpc(_SERVICE, "SetPolicy", pb.SetTrustPolicyRequest, pb.SetTrustPolicyResponse)
VERIFY = rpc(_SERVICE, "Verify", pb.VerifyImageRequest, pb.VerifyImageResponse)
PUSH_SIGNATURE = rpc(_SERVICE, "PushSignature", pb.PushSignatureRequest, pb.PushSignatureResponse)
EXPORT_SIGNATURES = rpc(_SERVICE, "ExportSignatures", pb.ExportSignaturesRequest, pb.ExportSignaturesResponse)
IMPORT_SIGNATURES = rpc(_SERVICE, "ImportSignatures", pb.ImportSignaturesRequest, pb.ImportSignaturesResponse)


@dataclass(frozen=True)
class Rule:
    scope: str
    policy: str  # accept | reject | signed | digests
    keys: tuple[str, ...]  # fingerprints
    digests: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class Policy:
    path: str
    present: bool  # False: no file on the agent (accept everything)
    default: str
    rules: tuple[Rule, ...]
    text: str
    sha256: str
    refused: str  # why a changed file on disk is not in force ("" normally)


@dataclass(frozen=True)
class Verdict:
    name: str
    image: str
    allowed: bool
    scope: str  # "" = the default
    policy: str
    reason: str
    key: str
    message: str


@dataclass(frozen=True)
class Verification:
    reference: str
    digest: str
    allowed: bool
    verdicts: tuple[Verdict, ...]


@dataclass(frozen=True)
class PushedSignature:
    tag: str
    manifest_digest: str
    signatures: int
    already_present: bool
    stored: int


@dataclass(frozen=True)
class Signature:
    """A signature an agent keeps for an image (opaque here: it travels from one agent to another)."""

    signed_digest: str
    payload: bytes
    signature: str
    index: bytes = b""
    source: str = ""


def _policy(p: pb.TrustPolicy) -> Policy:
    return Policy(
        path=p.path,
        present=p.present,
        default=p.default_policy,
        rules=tuple(
            Rule(r.scope, r.policy, tuple(r.key_fingerprints), tuple(r.digests), r.line) for r in p.rules
        ),
        text=p.text,
        sha256=p.sha256,
        refused=p.refused,
    )


class TrustApi:
    """Typed calls to one agent's Trust service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def get_policy(self) -> Policy:
        r = await self.client.unary(GET_POLICY, pb.GetTrustPolicyRequest())
        return _policy(r.policy)

    async def set_policy(self, text: str, *, source: str = "") -> Policy:
        """Replace the agent's policy; `source` (a file name) is what the agent's errors call it."""
        r = await self.client.unary(SET_POLICY, pb.SetTrustPolicyRequest(text=text, source=source))
        return _policy(r.policy)

    async def verify(self, reference: str) -> Verification:
        r = await self.client.unary(VERIFY, pb.VerifyImageRequest(reference=reference))
        return Verification(
            r.reference,
            r.digest,
            r.allowed,
            tuple(
                Verdict(v.name, v.image, v.allowed, v.scope, v.policy, v.reason, v.key_fingerprint, v.message)
                for v in r.verdicts
            ),
        )

    async def push_signature(
        self,
        reference: str,
        signed_digest: str,
        payload: bytes,
        signature: str,
        *,
        login: Login | None = None,
    ) -> PushedSignature:
        """Have the agent add a signature (made here) to the registry's `.sig` tag of `reference`."""
        credentials = (
            None
            if login is None
            else images_pb2.RegistryCredentials(username=login.username, password=login.password)
        )
        request = pb.PushSignatureRequest(
            reference=reference,
            signed_digest=signed_digest,
            payload=payload,
            signature=signature,
            credentials=credentials,
        )
        r = await self.client.unary(PUSH_SIGNATURE, request, timeout=120.0)
        return PushedSignature(r.tag, r.manifest_digest, r.signatures, r.already_present, r.stored)

    async def export_signatures(self, reference: str) -> tuple[str, tuple[Signature, ...]]:
        """(the image's manifest digest, the signatures the agent keeps for it)."""
        r = await self.client.unary(EXPORT_SIGNATURES, pb.ExportSignaturesRequest(reference=reference))
        return r.image_digest, tuple(
            Signature(s.signed_digest, s.payload, s.signature, s.index, s.source) for s in r.signatures
        )

    async def import_signatures(self, image_digest: str, signatures: Sequence[Signature]) -> int:
        """Give the agent signatures for its image `image_digest`; how many were new there."""
        request = pb.ImportSignaturesRequest(
            image_digest=image_digest,
            signatures=[
                pb.ImageSignature(
                    signed_digest=s.signed_digest,
                    payload=s.payload,
                    signature=s.signature,
                    index=s.index,
                    source=s.source,
                )
                for s in signatures
            ],
        )
        return (await self.client.unary(IMPORT_SIGNATURES, request)).added
