"""Verdicts over signatures made independently (openssl, payload spelled out from cosign's spec)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agent.oci import cosign
from agent.trust.policy import Kind, parse
from agent.trust.signatures import StoredSignature
from agent.trust.verify import ImageFacts, VerifiedCache, judge
from tests.support import cosign_openssl
from tests.support.cosign_openssl import OpensslKey

REPO = "registry.lab:5000/shop/web"
NAME = REPO + ":1"
IMAGE = "sha256:" + "1" * 64
OTHER = "sha256:" + "2" * 64


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[OpensslKey, OpensslKey]:
    root = tmp_path_factory.mktemp("keys")
    return OpensslKey.generate(root, "ci"), OpensslKey.generate(root, "stranger")


def _policy(tmp: Path, key: OpensslKey, default: str = "accept") -> str:
    rule = '[[rules]]\nscope = "registry.lab:5000/shop/"\npolicy = "signed"\n'
    return f'default = "{default}"\n{rule}keys = ["""{key.public_pem()}"""]\n'


def _signed(
    key: OpensslKey, tmp: Path, digest: str = IMAGE, signed: str | None = None, via: bytes = b""
) -> StoredSignature:
    body = cosign_openssl.payload(REPO, signed or digest)
    return StoredSignature(digest, signed or digest, body, key.sign(body, tmp), via, "test")


def test_a_signature_by_a_listed_key_is_accepted(tmp_path: Path, keys: tuple[OpensslKey, OpensslKey]) -> None:
    ci, _ = keys
    policy = parse(_policy(tmp_path, ci), config_dir=tmp_path)
    verdict = judge(policy, NAME, ImageFacts(IMAGE), [_signed(ci, tmp_path)])
    assert verdict.allowed and verdict.key == policy.rules[0].keys[0].fingerprint
    assert verdict.message().startswith(
        f'image {REPO}@{IMAGE} accepted by trust policy rule "registry.lab:5000/shop/"'
    )


def test_unsigned_or_signed_by_another_key_is_refused_naming_the_rule(
    tmp_path: Path, keys: tuple[OpensslKey, OpensslKey]
) -> None:
    ci, stranger = keys
    policy = parse(_policy(tmp_path, ci), config_dir=tmp_path)
    unsigned = judge(policy, NAME, ImageFacts(IMAGE), [])
    assert not unsigned.allowed
    assert unsigned.message().startswith(
        f'image {REPO}@{IMAGE} refused by trust policy rule "registry.lab:5000/shop/" (signed): '
        "no signature by a listed key"
    )
    by_stranger = judge(policy, NAME, ImageFacts(IMAGE), [_signed(stranger, tmp_path)])
    assert not by_stranger.allowed and "none verifies with the rule's keys" in by_stranger.reason


def test_a_tampered_payload_or_a_signature_for_another_image_is_refused(
    tmp_path: Path, keys: tuple[OpensslKey, OpensslKey]
) -> None:
    ci, _ = keys
    policy = parse(_policy(tmp_path, ci), config_dir=tmp_path)
    good = _signed(ci, tmp_path)
    altered = good.payload.replace(b'"optional":null', b'"optional":{"x":"y"}')
    tampered = StoredSignature(IMAGE, IMAGE, altered, good.signature, b"", "test")
    assert not judge(policy, NAME, ImageFacts(IMAGE), [tampered]).allowed
    # a valid signature of OTHER, filed under IMAGE (copied to IMAGE's .sig tag): the payload says OTHER
    moved = _signed(ci, tmp_path, digest=OTHER)
    filed = StoredSignature(IMAGE, IMAGE, moved.payload, moved.signature, b"", "test")
    verdict = judge(policy, NAME, ImageFacts(IMAGE), [filed])
    assert not verdict.allowed and f"payload is for {OTHER}" in verdict.reason


def test_a_signature_of_the_index_counts_when_the_index_lists_the_manifest(
    tmp_path: Path, keys: tuple[OpensslKey, OpensslKey]
) -> None:
    ci, _ = keys
    policy = parse(_policy(tmp_path, ci), config_dir=tmp_path)
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": cosign.OCI_MANIFEST.replace("manifest", "index"),
            "manifests": [
                {
                    "mediaType": cosign.OCI_MANIFEST,
                    "digest": IMAGE,
                    "size": 10,
                    "platform": {"os": "linux", "architecture": "amd64"},
                }
            ],
        }
    ).encode()
    index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
    sig = _signed(ci, tmp_path, signed=index_digest, via=index)
    assert judge(policy, NAME, ImageFacts(IMAGE, index_digest), [sig]).allowed
    # the same index signature presented for a manifest the index does not list
    other = StoredSignature(OTHER, index_digest, sig.payload, sig.signature, index, "test")
    assert not judge(policy, NAME, ImageFacts(OTHER), [other]).allowed


def test_reject_digests_and_default(tmp_path: Path) -> None:
    text = f'''default = "reject"
[[rules]]
scope = "docker.io/library/busybox"
policy = "digests"
digests = ["{IMAGE}"]
[[rules]]
scope = "registry.lab:5000/"
policy = "reject"
[[rules]]
scope = "registry.lab:5000/public/"
policy = "accept"
'''
    policy = parse(text, config_dir=tmp_path)
    assert judge(policy, "docker.io/library/busybox:1", ImageFacts(IMAGE), []).allowed
    assert judge(policy, "docker.io/library/busybox:1", ImageFacts(OTHER, config_digest=IMAGE), []).allowed
    wrong = judge(policy, "docker.io/library/busybox:1", ImageFacts(OTHER), [])
    assert not wrong.allowed and wrong.policy is Kind.DIGESTS
    assert not judge(policy, "registry.lab:5000/shop/web:1", ImageFacts(IMAGE), []).allowed
    assert judge(policy, "registry.lab:5000/public/web:1", ImageFacts(IMAGE), []).allowed
    default = judge(policy, "docker.io/library/alpine:3", ImageFacts(IMAGE), [])
    assert not default.allowed and default.message().endswith(
        "refused by trust policy default (reject): no rule covers it and the default is reject"
    )
    assert not judge(policy, "", ImageFacts(IMAGE), []).allowed  # a nameless image: the default


def test_dockyard_payloads_verify_with_openssl(tmp_path: Path, keys: tuple[OpensslKey, OpensslKey]) -> None:
    """The other direction: the payload Dockyard builds is byte-for-byte what the spec describes."""
    body = cosign.make_payload(REPO, IMAGE)
    assert json.loads(body) == json.loads(cosign_openssl.payload(REPO, IMAGE))
    assert cosign.parse_payload(body).digest == IMAGE
    assert cosign.signature_tag(IMAGE) == "sha256-" + "1" * 64 + ".sig"


def test_the_verification_cache_never_vouches_for_changed_bytes(
    tmp_path: Path, keys: tuple[OpensslKey, OpensslKey]
) -> None:
    ci, _ = keys
    policy = parse(_policy(tmp_path, ci), config_dir=tmp_path)
    cache = VerifiedCache(size=2)
    good = _signed(ci, tmp_path)
    assert judge(policy, NAME, ImageFacts(IMAGE), [good], cache).allowed
    assert judge(policy, NAME, ImageFacts(IMAGE), [good], cache).allowed  # from the cache
    altered = good.payload.replace(b'"optional":null', b'"optional":{"x":"y"}')
    tampered = StoredSignature(IMAGE, IMAGE, altered, good.signature, b"", "test")
    assert not judge(policy, NAME, ImageFacts(IMAGE), [tampered], cache).allowed
    for n in range(3):  # a full cache starts over rather than growing
        other = _signed(ci, tmp_path, digest="sha256:" + str(n + 3) * 64)
        judge(policy, NAME, ImageFacts(other.image_digest), [other], cache)
    assert len(cache._seen) <= 2
