"""The verdict for one image under one name: the rule that covers the name, and whether it lets it run.

Pure over its inputs (policy, the image's digests, its stored signatures). A `signed` rule accepts the
image when one stored signature (a) is a cosign simple-signing payload, (b) names in
`critical.image.docker-manifest-digest` the image's manifest digest — or an index whose bytes come with
the signature and list that manifest — and (c) verifies (ECDSA P-256, SHA-256) with one of the rule's keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import AgentError
from agent.oci import cosign
from agent.oci.reference import Reference
from agent.trust.policy import Kind, Policy, TrustKey
from agent.trust.signatures import StoredSignature, check_link

NO_KEY = "no signature by a listed key"
VERIFIED_CACHE_SIZE = 4096


class VerifiedCache:
    """Remembers which (payload, signature, key) triples verified, so the check on the hot path (every
    run of a signed image) does the ECDSA verification once. Keyed by the exact bytes: a changed payload
    or signature is a different entry, verified afresh."""

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self.size = size
        self._seen: dict[tuple[bytes, str, str], bool] = {}

    def verify(self, key: TrustKey, der: bytes, sig: StoredSignature) -> bool:
        entry = (sig.payload, sig.signature, key.fingerprint)
        known = self._seen.get(entry)
        if known is None:
            try:
                key.public_key.verify(der, sig.payload, ec.ECDSA(hashes.SHA256()))
                known = True
            except InvalidSignature:
                known = False
            if len(self._seen) >= self.size:
                self._seen.clear()
            self._seen[entry] = known
        return known


@dataclass(frozen=True)
class ImageFacts:
    """The digests an image is known by: its manifest (what runs), the index it came from, its config."""

    digest: str
    index_digest: str | None = None
    config_digest: str = ""

    def all(self) -> set[str]:
        return {d for d in (self.digest, self.index_digest, self.config_digest) if d}


@dataclass(frozen=True)
class Verdict:
    name: str  # the fully qualified name judged ("" when the image has none)
    digest: str
    allowed: bool
    scope: str  # the deciding rule's scope; "" when the default decided
    policy: Kind
    reason: str
    key: str = ""  # the fingerprint of the key whose signature was accepted

    @property
    def image(self) -> str:
        """`registry/repository@sha256:…` (the digest alone for a nameless image)."""
        if not self.name:
            return self.digest
        try:
            return f"{Reference.parse(self.name).name}@{self.digest}"
        except AgentError:
            return f"{self.name}@{self.digest}"

    @property
    def rule(self) -> str:
        return f'rule "{self.scope}" ({self.policy})' if self.scope else f"default ({self.policy})"

    def message(self) -> str:
        """One line: `image X refused by trust policy rule "S" (signed): no signature by a listed key`."""
        word = "accepted" if self.allowed else "refused"
        return f"image {self.image} {word} by trust policy {self.rule}: {self.reason}"


def judge(
    policy: Policy,
    name: str,
    image: ImageFacts,
    signatures: Sequence[StoredSignature],
    cache: VerifiedCache | None = None,
) -> Verdict:
    """The verdict for `image` run under `name` (a fully qualified reference, or "" for none)."""
    rule = policy.rule_for(name) if name else None
    if rule is None:
        allowed = policy.default is Kind.ACCEPT
        reason = "no rule covers it" if allowed else "no rule covers it and the default is reject"
        return Verdict(name, image.digest, allowed, "", policy.default, reason)
    if rule.policy is Kind.ACCEPT:
        return Verdict(name, image.digest, True, rule.scope, rule.policy, "accepted by the rule")
    if rule.policy is Kind.REJECT:
        return Verdict(name, image.digest, False, rule.scope, rule.policy, "the rule rejects it")
    if rule.policy is Kind.DIGESTS:
        listed = sorted(image.all() & rule.digests)
        if listed:
            return Verdict(name, image.digest, True, rule.scope, rule.policy, f"{listed[0]} is listed")
        return Verdict(name, image.digest, False, rule.scope, rule.policy, "its digest is not listed")
    key, reason = check_signatures(signatures, image.digest, rule.keys, cache or VerifiedCache())
    if key is None:
        return Verdict(name, image.digest, False, rule.scope, rule.policy, reason)
    return Verdict(
        name, image.digest, True, rule.scope, rule.policy, f"signed by key {key.fingerprint}", key.fingerprint
    )


def check_signatures(
    signatures: Sequence[StoredSignature],
    image_digest: str,
    keys: Sequence[TrustKey],
    cache: VerifiedCache,
) -> tuple[TrustKey | None, str]:
    """(the key that verifies one of the signatures, "") or (None, why none does)."""
    if not signatures:
        return None, f"{NO_KEY} (the image has no signatures on this agent)"
    problems: list[str] = []
    for sig in signatures:
        if sig.image_digest != image_digest:
            continue
        try:
            check_link(sig)
            payload = cosign.parse_payload(sig.payload)
            if payload.digest != sig.signed_digest:
                problems.append(f"a signature's payload is for {payload.digest}, not this image")
                continue
            der = cosign.decode_signature(sig.signature)
        except AgentError as exc:
            problems.append(exc.message)
            continue
        for key in keys:
            if cache.verify(key, der, sig):
                return key, ""
    if problems:
        return None, f"{NO_KEY} ({problems[0]})"
    return None, f"{NO_KEY} ({len(signatures)} signature(s), none verifies with the rule's keys)"
