"""TrustManager: the policy in force on this agent, the check before an image runs, and the Trust RPCs' work.

The policy lives in one file (`policy_file`, default `<config_dir>/policy.toml`). It is read at start (a
bad file stops the agent with the line that is wrong, as a bad agent.toml does), replaced by `set_policy`
(`dockyard trust set`: parsed first, written atomically only when good), and re-read when the file changes
on disk (a hand edit): a changed file that does not parse is refused and the policy in force stays, with
the error logged and shown by `trust show`. A deleted file means no policy: accept, as without one.

`check(reference, digest)` is the container manager's run gate (create, run, start, restart, and so a
release's activation): it judges the image under the name it is run by — the reference when that is a
name, else every name the image has — and raises PermissionDenied naming the rule when any refuses.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import agent.log
from agent.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from agent.images.manager import ImageManager
from agent.oci import cosign
from agent.oci.files import write_atomic
from agent.oci.reference import Reference
from agent.registry.auth import Credentials
from agent.trust import policy as policy_mod
from agent.trust import signatures as sigs
from agent.trust.policy import DEFAULT_POLICY, Policy
from agent.trust.signatures import StoredSignature
from agent.trust.verify import ImageFacts, Verdict, VerifiedCache, judge

log = agent.log.get(__name__)

_ID_RE = re.compile(r"^(sha256:)?[0-9a-f]{4,64}$")
_FileKey = tuple[int, int, int] | None


@dataclass(frozen=True)
class PolicyState:
    """What `trust show` prints: the file, the policy in force, and a changed file that was refused."""

    path: Path
    present: bool
    policy: Policy
    refused: str = ""  # why the file on disk (changed since) is not the policy in force


@dataclass(frozen=True)
class Judgement:
    """Every name's verdict for one image; it may run when all allow it."""

    reference: str
    digest: str
    verdicts: tuple[Verdict, ...]

    @property
    def allowed(self) -> bool:
        return all(v.allowed for v in self.verdicts)

    def refusal(self) -> Verdict | None:
        return next((v for v in self.verdicts if not v.allowed), None)


@dataclass(frozen=True)
class SignResult:
    tag: str
    manifest_digest: str
    signatures: int
    already_present: bool
    stored: int  # rows added on this agent (local images the signature is for)


def judged_names(reference: str, stored_names: Sequence[str]) -> list[str]:
    """The names an image run by `reference` is judged under: the reference itself when it is a name
    (`web:1`, `host/app@sha256:…`), else (an image ID or digest) every name the image has, else ""."""
    if not _ID_RE.match(reference):
        try:
            return [str(Reference.parse(reference))]
        except InvalidArgument:
            pass
    else:
        try:
            spelled = str(Reference.parse(reference))
            if spelled in stored_names:
                return [spelled]
        except InvalidArgument:
            pass
    return list(stored_names) or [""]


def _file_key(path: Path) -> _FileKey:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TrustManager:
    def __init__(self, path: Path, config_dir: Path, images: ImageManager) -> None:
        """Reads the policy file now: InvalidArgument (with the line) if it is there and bad."""
        self.path = path
        self.config_dir = config_dir
        self.images = images
        self._lock = threading.Lock()
        self._verified = VerifiedCache()
        self._key: _FileKey = _file_key(path)
        self._policy = self._read() if self._key is not None else DEFAULT_POLICY
        self._refused = ""
        log.info(
            "trust.policy_loaded",
            path=str(path),
            present=self._key is not None,
            default=str(self._policy.default),
            rules=len(self._policy.rules),
        )

    def _read(self) -> Policy:
        try:
            text = self.path.read_text()
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{self.path}: not UTF-8 text") from exc
        return policy_mod.parse(text, config_dir=self.config_dir, source=str(self.path))

    # ---- the policy in force -------------------------------------------------------------------------

    def policy(self) -> Policy:
        """The policy in force, re-read first if the file changed (blocking: a stat, rarely a parse)."""
        key = _file_key(self.path)
        if key == self._key:
            return self._policy
        with self._lock:
            key = _file_key(self.path)
            if key == self._key:
                return self._policy
            if key is None:
                self._policy, self._refused = DEFAULT_POLICY, ""
                log.warning("trust.policy_removed", path=str(self.path))
            else:
                try:
                    self._policy, self._refused = self._read(), ""
                    log.info("trust.policy_reloaded", path=str(self.path), rules=len(self._policy.rules))
                except (InvalidArgument, OSError) as exc:
                    self._refused = str(exc)
                    log.error("trust.policy_refused", path=str(self.path), error=self._refused)
            self._key = key
            return self._policy

    def state(self) -> PolicyState:
        current = self.policy()
        return PolicyState(self.path, self._key is not None, current, self._refused)

    async def set_policy(self, text: str, *, source: str = "policy") -> PolicyState:
        """Replace the policy file with `text` once it parses (InvalidArgument `SOURCE:LINE: key: …`
        otherwise: then nothing changes)."""

        def work() -> PolicyState:
            parsed = policy_mod.parse(text, config_dir=self.config_dir, source=source)
            with self._lock:
                write_atomic(self.path, text.encode(), 0o644)
                self._policy, self._refused, self._key = parsed, "", _file_key(self.path)
            log.info(
                "trust.policy_set", path=str(self.path), default=str(parsed.default), rules=len(parsed.rules)
            )
            return PolicyState(self.path, True, parsed)

        return await asyncio.to_thread(work)

    # ---- verdicts ----------------------------------------------------------------------------------------

    def _judge(self, reference: str, digest: str) -> Judgement:
        current = self.policy()
        record = self.images.store.by_digest(digest)
        facts = (
            ImageFacts(digest, record.index_digest, record.config_digest) if record else ImageFacts(digest)
        )
        stored_names = self.images.names_of(digest) if record else []
        signatures = self.images.signatures.for_image(digest)
        names = judged_names(reference, stored_names)
        verdicts = tuple(judge(current, n, facts, signatures, self._verified) for n in names)
        return Judgement(reference, digest, verdicts)

    async def verify(self, reference: str) -> Judgement:
        """`image verify`: the verdicts for a local image, nothing run."""
        record = self.images.get(reference)
        return await asyncio.to_thread(self._judge, reference, record.digest)

    async def check(self, reference: str, digest: str) -> None:
        """The run gate: PermissionDenied naming the rule unless the policy lets `digest` run."""
        current = self.policy()
        if not current.rules and current.default is policy_mod.Kind.ACCEPT:
            return  # no policy: today's behaviour, at no cost
        judgement = await asyncio.to_thread(self._judge, reference, digest)
        refused = judgement.refusal()
        if refused is not None:
            log.warning(
                "trust.refused", image_ref=reference, digest=digest, rule=refused.scope, reason=refused.reason
            )
            raise PermissionDenied(refused.message())

    # ---- signatures --------------------------------------------------------------------------------------

    async def push_signature(
        self,
        reference: str,
        signed_digest: str,
        payload: bytes,
        signature: str,
        credentials: Credentials | None,
    ) -> SignResult:
        """Push a signature made by the controller to the `.sig` tag of `reference`'s repository and keep
        it for the local images it is for. The agent never sees the private key."""
        claimed = _checked_payload(payload, signature)
        if claimed != signed_digest:
            raise InvalidArgument(f"the payload signs {claimed}, not {signed_digest}")
        ref = Reference.parse(reference)
        client = self.images.registry
        if client is None:
            raise FailedPrecondition("this agent has no registry client configured")

        def work() -> SignResult:
            repo = client.repository(
                ref.with_tag(cosign.signature_tag(signed_digest)), credentials, push=True
            )
            pushed = sigs.push(repo, signed_digest, payload, signature)
            stored = self.images.signatures.add(
                self._local_rows(signed_digest, payload, signature, pushed.tag)
            )
            return SignResult(
                pushed.tag, pushed.manifest_digest, pushed.signatures, pushed.already_present, stored
            )

        return await asyncio.to_thread(work)

    def _local_rows(self, signed: str, payload: bytes, signature: str, source: str) -> list[StoredSignature]:
        rows = []
        content = self.images.content
        for record in self.images.store.records():
            if record.digest == signed:
                rows.append(StoredSignature(record.digest, signed, payload, signature, b"", source))
            elif record.index_digest == signed and content.has(signed):
                index = content.read_bytes(signed)
                rows.append(StoredSignature(record.digest, signed, payload, signature, index, source))
        return rows

    def export(self, reference: str) -> tuple[str, list[StoredSignature]]:
        """(the image's manifest digest, the signatures kept for it) — what `image send` carries along."""
        record = self.images.get(reference)
        return record.digest, self.images.signatures.for_image(record.digest)

    def import_(self, image_digest: str, signatures: Sequence[StoredSignature]) -> int:
        """Keep signatures another agent had for `image_digest`; returns how many were new."""
        if self.images.store.by_digest(image_digest) is None:
            raise NotFound(f"image {image_digest} not found")
        if len(signatures) > sigs.MAX_SIGNATURES_PER_IMAGE:
            raise InvalidArgument(f"at most {sigs.MAX_SIGNATURES_PER_IMAGE} signatures at once")
        for sig in signatures:
            if sig.image_digest != image_digest:
                raise InvalidArgument(f"a signature is for {sig.image_digest}, not {image_digest}")
            _checked_payload(sig.payload, sig.signature)
        added = self.images.signatures.add(signatures)
        log.info("trust.signatures_imported", digest=image_digest, received=len(signatures), added=added)
        return added


def _checked_payload(payload: bytes, signature: str) -> str:
    """The digest a payload signs; InvalidArgument if payload or signature is malformed."""
    try:
        cosign.decode_signature(signature)
        return cosign.parse_payload(payload).digest
    except FailedPrecondition as exc:
        raise InvalidArgument(exc.message) from exc
