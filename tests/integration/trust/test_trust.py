"""Image trust end to end: real agents, a real `docker-registry`, signatures in cosign's format.

Signatures come from two independent implementations: `dockyard image sign` (the product) and the
test's own (tests/support/cosign_openssl.py: payload spelled out from cosign's spec, signed by the
`openssl` command line, the `.sig` manifest assembled and uploaded here by hand) — what one writes, the
other reads: an image signed by cosign in a CI verifies on the agent.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.integration.trust.conftest import (
    HostFactory,
    Images,
    push_image,
    registry_get_blob,
    registry_get_manifest,
    registry_put_blob,
    registry_put_manifest,
)
from tests.support import cosign_openssl
from tests.support.cosign_openssl import OpensslKey
from tests.support.registry import RegistryServer

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SHOP = "shop/web"


def signed_policy(scope: str, key_path: str = "keys/ci.pub", default: str = "accept") -> str:
    return (
        f'default = "{default}"\n\n[[rules]]\nscope = "{scope}"\npolicy = "signed"\nkeys = ["{key_path}"]\n'
    )


def sign_by_hand(registry: RegistryServer, repository: str, digest: str, key: OpensslKey, work: Path) -> None:
    """Sign `repository@digest` the way cosign does, without Dockyard's code."""
    payload = cosign_openssl.payload(f"{registry.host}/{repository}", digest)
    signature = key.sign(payload, work)
    manifest, config = cosign_openssl.sig_manifest([(payload, signature)])
    registry_put_blob(registry, repository, payload)
    registry_put_blob(registry, repository, config)
    registry_put_manifest(registry, repository, digest.replace(":", "-") + ".sig", manifest)


def test_signed_is_accepted_unsigned_and_unlisted_keys_are_refused(
    trust_hosts: HostFactory,
    trust_registry: RegistryServer,
    images: Images,
    keys: dict[str, OpensslKey],
    tmp_path: Path,
) -> None:
    reg = trust_registry
    for n in range(4):
        push_image(images, reg, f"web{n}", f"{SHOP}:{n}", tmp_path / "skopeo")
    (a,) = trust_hosts("a")
    (a.etc / "keys" / "ci.pub").write_text(keys["ci"].public_pem())
    scope = f"{reg.host}/shop/"
    digests = [image.manifest["digest"] for image in images.web]

    # 0: signed by `dockyard image sign` (the product); the signature is cosign's format: openssl verifies it
    signed = a.cli("image", "sign", f"{reg.host}/{SHOP}:0", "--key", str(keys["ci"].private))
    assert signed.returncode == 0, signed.stderr
    assert f"{reg.host}/{SHOP}:sha256-{digests[0][7:]}.sig" in signed.stdout
    sig_manifest = registry_get_manifest(reg, SHOP, f"sha256-{digests[0][7:]}.sig")
    assert sig_manifest is not None
    layer = json.loads(sig_manifest)["layers"][0]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    payload = registry_get_blob(reg, SHOP, layer["digest"])
    assert json.loads(payload)["critical"] == {
        "identity": {"docker-reference": f"{reg.host}/{SHOP}"},
        "image": {"docker-manifest-digest": digests[0]},
        "type": "cosign container image signature",
    }
    sig = layer["annotations"]["dev.cosignproject.cosign/signature"]
    assert keys["ci"].verify(payload, sig, tmp_path / "openssl")
    # signing again with the same key adds nothing
    again = a.cli("image", "sign", f"{reg.host}/{SHOP}:0", "--key", str(keys["ci"].private))
    assert again.returncode == 0 and "already signed with this key" in again.stdout
    # 1: signed the cosign way by the test's own implementation, with the listed key
    sign_by_hand(reg, SHOP, digests[1], keys["ci"], tmp_path / "sign1")
    # 2: signed by a key the policy does not list; 3: not signed
    sign_by_hand(reg, SHOP, digests[2], keys["stranger"], tmp_path / "sign2")

    a.set_policy(signed_policy(scope))
    shown = json.loads(a.ok("--format", "json", "trust", "show"))
    assert shown["default"] == "accept" and shown["rules"][0]["scope"] == scope
    assert shown["path"] == str(a.policy_file) and a.policy_file.exists()
    for n in range(4):
        a.ok("pull", f"{reg.host}/{SHOP}:{n}", timeout=120)

    # the signatures were fetched at pull: the registry can go away, runs are judged offline
    trust_registry.stop()
    for n in (0, 1):
        assert a.ok("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:{n}", "true", timeout=120) == ""
    for n in (2, 3):
        error = a.refused("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:{n}", "true")
        assert error == (
            f"image {reg.host}/{SHOP}@{digests[n]} refused by trust policy rule"
            f' "{scope}" (signed): no signature by a listed key'
            + (
                " (1 signature(s), none verifies with the rule's keys)"
                if n == 2
                else " (the image has no signatures on this agent)"
            )
        )
        assert "refused by trust policy" in a.refused("create", f"{reg.host}/{SHOP}:{n}")
    verified = a.ok("image", "verify", f"{reg.host}/{SHOP}:1")
    assert f'accepted by trust policy rule "{scope}" (signed): signed by key sha256:' in verified
    assert a.cli("image", "verify", f"{reg.host}/{SHOP}:3").returncode == 1
    # an unsigned image run by its ID is judged under its names
    image_id = json.loads(a.ok("image", "inspect", f"{reg.host}/{SHOP}:3"))[0]["id"]
    assert "refused by trust policy" in a.refused("run", "--rm", "--network", "none", image_id[7:19], "true")
    refusals = [e for e in a.agent.events() if e.get("event") == "trust.refused"]
    assert refusals and all(e["rule"] == scope for e in refusals)


def test_tampered_manifest_or_payload_is_refused(
    trust_hosts: HostFactory,
    trust_registry: RegistryServer,
    images: Images,
    keys: dict[str, OpensslKey],
    tmp_path: Path,
) -> None:
    reg = trust_registry
    push_image(images, reg, "web0", f"{SHOP}:1", tmp_path / "skopeo")
    push_image(images, reg, "web1", f"{SHOP}:2", tmp_path / "skopeo")
    (a,) = trust_hosts("a")
    (a.etc / "keys" / "ci.pub").write_text(keys["ci"].public_pem())
    a.set_policy(signed_policy(f"{reg.host}/shop/"))
    first, second = images.web[0].manifest["digest"], images.web[1].manifest["digest"]
    assert a.cli("image", "sign", f"{reg.host}/{SHOP}:1", "--key", str(keys["ci"].private)).returncode == 0

    # 1. someone pushes a different manifest under the signed tag: its digest has no signature
    push_image(images, reg, "web2", f"{SHOP}:1", tmp_path / "skopeo")
    a.ok("pull", f"{reg.host}/{SHOP}:1", timeout=120)
    error = a.refused("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:1", "true")
    assert f"@{images.web[2].manifest['digest']} refused by trust policy" in error
    # 2. the valid signature of one image copied to another image's .sig tag: its payload names the first
    sig = registry_get_manifest(reg, SHOP, f"sha256-{first[7:]}.sig")
    assert sig is not None
    registry_put_manifest(reg, SHOP, f"sha256-{second[7:]}.sig", sig)
    a.ok("pull", f"{reg.host}/{SHOP}:2", timeout=120)
    error = a.refused("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:2", "true")
    assert f"no signature by a listed key (a signature's payload is for {first}, not this image)" in error
    # 3. the payload kept on the agent altered after the pull: the signature no longer verifies
    push_image(images, reg, "web0", f"{SHOP}:3", tmp_path / "skopeo")
    a.ok("pull", f"{reg.host}/{SHOP}:3", timeout=120)
    a.ok("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:3", "true", timeout=120)
    with sqlite3.connect(a.agent.data_root / "dockyard.db", timeout=30) as db:
        changed = db.execute(
            "UPDATE trust_signatures SET payload = CAST(replace(CAST(payload AS TEXT), '\"optional\":null',"
            ' \'"optional":{"x":"1"}\') AS BLOB) WHERE image_digest = ?',
            (first,),
        ).rowcount
    assert changed == 1
    error = a.refused("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:3", "true")
    assert "no signature by a listed key" in error


def test_policy_kinds_default_and_a_bad_file(
    trust_hosts: HostFactory, trust_registry: RegistryServer, images: Images, tmp_path: Path
) -> None:
    reg = trust_registry
    for n in range(3):
        push_image(images, reg, f"web{n}", f"{SHOP}:{n}", tmp_path / "skopeo")
    (a,) = trust_hosts("a")
    for n in range(3):
        a.ok("pull", f"{reg.host}/{SHOP}:{n}", timeout=120)
    # no policy file: today's behaviour
    assert not a.policy_file.exists()
    assert a.ok("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:0", "true", timeout=120) == ""
    kept = a.ok("create", "--name", "made-before", "--network", "none", f"{reg.host}/{SHOP}:2").strip()
    assert kept

    d0 = images.web[0].manifest["digest"]
    policy = (
        'default = "reject"\n\n'
        f'[[rules]]\nscope = "{reg.host}/shop/"\npolicy = "digests"\ndigests = ["{d0}"]\n\n'
        f'[[rules]]\nscope = "{reg.host}/shop/web:1"\npolicy = "accept"\n'
    )
    a.set_policy(policy)
    assert a.ok("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:0", "true", timeout=120) == ""
    assert a.ok("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:1", "true", timeout=120) == ""
    error = a.refused("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:2", "true")
    assert error.endswith(
        f'refused by trust policy rule "{reg.host}/shop/" (digests): its digest is not listed'
    )
    # a container created before the policy: its start is judged now
    assert 'rule "' in a.refused("start", "made-before")
    a.ok("import", str(_rootfs(tmp_path)), "local/thing:1", timeout=120)
    error = a.refused("run", "--rm", "--network", "none", "local/thing:1", "true")
    assert error.endswith(
        "refused by trust policy default (reject): no rule covers it and the default is reject"
    )

    # a bad file pushed: refused with its line, the policy in force stays
    bad = tmp_path / "bad-policy.toml"
    bad.write_text(f'default = "reject"\n[[rules]]\nscope = "{reg.host}/shop/"\npolicy = "sined"\n')
    assert a.refused("trust", "set", str(bad)) == (
        "bad-policy.toml:4: rules #1 policy: 'sined' is not one of accept, reject, signed, digests"
    )
    assert a.policy_file.read_text() == policy
    # a bad hand edit of the file on the agent: refused at the next check, the last good policy stays
    a.policy_file.write_text('default = "accept"\nrules = 3\n')
    assert "refused by trust policy" in a.refused(
        "run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:2", "true"
    )
    shown = json.loads(a.ok("--format", "json", "trust", "show"))
    assert shown["default"] == "reject" and shown["refused"].endswith("rules: must be [[rules]] tables")
    # a good hand edit takes effect without a restart; and reject is a rule kind too
    a.policy_file.write_text(f'[[rules]]\nscope = "{reg.host}/shop/web:0"\npolicy = "reject"\n')
    assert a.ok("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:2", "true", timeout=120) == ""
    error = a.refused("run", "--rm", "--network", "none", f"{reg.host}/{SHOP}:0", "true")
    assert error.endswith(
        f'refused by trust policy rule "{reg.host}/shop/web:0" (reject): the rule rejects it'
    )
    # an agent whose policy file is bad does not start, and says which line
    a.policy_file.write_text('default = "maybe"\n')
    a.agent.stop()
    with pytest.raises(RuntimeError, match=r"policy.toml:1: default: 'maybe' is not accept or reject"):
        a.agent.start()


def test_a_sent_image_keeps_its_signature_and_is_accepted_on_the_target(
    trust_hosts: HostFactory,
    trust_registry: RegistryServer,
    images: Images,
    keys: dict[str, OpensslKey],
    tmp_path: Path,
) -> None:
    """The image is a two-platform index signed at the index (as cosign signs a tag); the target never
    talks to the registry: it gets the image and the signature (with the index that links them) by send."""
    reg = trust_registry
    push_image(images, reg, "multi", f"{SHOP}:multi", tmp_path / "skopeo")
    a, b = trust_hosts("a", "b")
    ref = f"{reg.host}/{SHOP}:multi"
    signed = a.cli("--format", "json", "image", "sign", ref, "--key", str(keys["ci"].private))
    assert signed.returncode == 0, signed.stderr
    assert json.loads(signed.stdout)["signed_digest"] == images.index["digest"]
    for host in (a, b):
        (host.etc / "keys" / "ci.pub").write_text(keys["ci"].public_pem())
        host.set_policy(signed_policy(f"{reg.host}/shop/", default="reject"))
    a.ok("pull", ref, timeout=120)
    a.ok("run", "--rm", "--network", "none", ref, "true", timeout=120)
    trust_registry.stop()

    sent = a.cli("--format", "json", "image", "send", ref, "--from", a.target, "-H", b.target, timeout=180)
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["hosts"]["b"]["signatures"] == 1
    verdict = b.ok("image", "verify", ref)
    assert f"{reg.host}/{SHOP}@{images.amd64.manifest['digest']} accepted by trust policy rule" in verdict
    assert b.ok("run", "--rm", "--network", "none", ref, "true", timeout=120) == ""
    # the same image under a name no rule covers is refused by the default, signature or not
    b.ok("tag", ref, "elsewhere/web:1")
    assert "default (reject)" in b.refused("run", "--rm", "--network", "none", "elsewhere/web:1", "true")


def _rootfs(tmp: Path) -> Path:
    from tests.support.images import busybox_rootfs_tar

    return busybox_rootfs_tar(tmp / "rootfs.tar")
