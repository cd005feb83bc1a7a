"""The trust policy file: strict parsing with the line and key named, scopes, longest prefix wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.trust.policy import Kind, parse, scope_matches
from tests.support.cosign_openssl import OpensslKey

D1 = "sha256:" + "a" * 64


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> OpensslKey:
    return OpensslKey.generate(tmp_path_factory.mktemp("keys"))


def _error(text: str, config_dir: Path) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse(text, config_dir=config_dir, source="policy.toml")
    return info.value.message


def test_no_rules_means_the_default_and_accept_is_the_default(tmp_path: Path) -> None:
    empty = parse("", config_dir=tmp_path)
    assert empty.default is Kind.ACCEPT and empty.rules == ()
    assert parse('default = "reject"\n', config_dir=tmp_path).default is Kind.REJECT


def test_a_full_policy_parses_with_inline_and_path_keys(tmp_path: Path, key: OpensslKey) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "shop.pub").write_text(key.public_pem())
    text = f'''default = "reject"
[[rules]]
scope = "registry.lab:5000/shop/"
policy = "signed"
keys = ["""{key.public_pem()}""", "keys/shop.pub"]

[[rules]]
scope = "docker.io/library/busybox"
policy = "digests"
digests = ["{D1}"]

[[rules]]
scope = "registry.lab:5000/"
policy = "accept"
'''
    policy = parse(text, config_dir=tmp_path)
    signed, digests, accept = policy.rules
    assert signed.policy is Kind.SIGNED and len(signed.keys) == 2
    assert signed.keys[0].fingerprint == signed.keys[1].fingerprint  # the same key, both ways
    assert signed.keys[1].source == str((tmp_path / "keys" / "shop.pub").resolve())
    assert digests.digests == {D1} and signed.line == 2 and digests.line == 11
    # longest prefix wins; a scope ends at a name boundary
    assert policy.rule_for("registry.lab:5000/shop/web:1") is signed
    assert policy.rule_for("registry.lab:5000/other:1") is accept
    assert policy.rule_for("docker.io/library/busybox:1.36") is digests
    assert policy.rule_for("docker.io/library/busyboxes:1") is None
    assert policy.rule_for("docker.io/library/alpine:3") is None


def test_scope_boundaries() -> None:
    assert scope_matches("docker.io/library/busybox", "docker.io/library/busybox@sha256:" + "0" * 64)
    assert scope_matches("registry.lab:5000", "registry.lab:5000/app:1")
    assert not scope_matches("registry.lab:5000", "registry.lab:50001/app:1")
    assert scope_matches("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36")
    assert not scope_matches("docker.io/library/busybox:1", "docker.io/library/busybox:1.36")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('default = "maybe"\n', "policy.toml:1: default: 'maybe' is not accept or reject"),
        ('default = "accept"\ncolour = "blue"\n', "policy.toml:2: colour: unknown key"),
        (
            '[[rules]]\nscope = "registry.lab:5000/shop/"\npolicy = "sined"\n',
            "policy.toml:3: rules #1 policy: 'sined' is not one of accept, reject, signed, digests",
        ),
        (
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "accept"\n\n'
            '[[rules]]\nscope = "busybox"\npolicy = "reject"\n',
            "policy.toml:6: rules #2 scope: 'busybox' is not fully qualified",
        ),
        (
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "signed"\n',
            "policy.toml:1: rules #1 keys: a signed rule needs a list of PEM keys or paths",
        ),
        (
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "digests"\ndigests = ["sha256:12"]\n',
            "policy.toml:4: rules #1 digests[0]: invalid digest",
        ),
        (
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "accept"\nkeys = ["k.pub"]\n',
            "policy.toml:4: rules #1 keys: only a signed rule has keys",
        ),
        (
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "accept"\n'
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "reject"\n',
            "policy.toml:5: rules #2 scope: 'r.lab/a/' is also rules #1",
        ),
        (
            '[[rules]]\nscope = "r.lab/a/"\npolicy = "accept"\nwho = 1\n',
            "policy.toml:4: rules #1 who: unknown key",
        ),
        ('default = "accept\n', "policy.toml: "),  # TOML syntax: tomllib's own line/column
    ],
)
def test_a_bad_policy_is_one_error_naming_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    assert _error(text, tmp_path).startswith(expected)


def test_keys_must_be_p256_public_keys_under_the_config_dir(tmp_path: Path, key: OpensslKey) -> None:
    config_dir = tmp_path / "etc"
    config_dir.mkdir()
    (tmp_path / "outside.pub").write_text(key.public_pem())
    rule = '[[rules]]\nscope = "r.lab/a/"\npolicy = "signed"\nkeys = [%s]\n'
    assert "must be under the agent's config dir" in _error(rule % '"../outside.pub"', config_dir)
    assert "cannot read" in _error(rule % '"missing.pub"', config_dir)
    private = key.private.read_text()
    assert "not a PEM public key" in _error(rule % f'"""{private}"""', config_dir)
    (config_dir / "p384.pub").write_text(_p384_public_pem(tmp_path))
    message = _error(rule % '"p384.pub"', config_dir)
    assert message.startswith("policy.toml:4: rules #1 keys[0]: p384.pub: not an ECDSA P-256 public key")


def _p384_public_pem(tmp: Path) -> str:
    import subprocess

    subprocess.run(
        ["openssl", "ecparam", "-name", "secp384r1", "-genkey", "-noout", "-out", str(tmp / "p384.pem")],
        check=True,
    )
    out = subprocess.run(
        ["openssl", "pkey", "-in", str(tmp / "p384.pem"), "-pubout"],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout
