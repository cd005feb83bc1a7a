"""The trust policy file: which images may run on this agent, by registry/repository prefix.

    default = "accept"                      # accept | reject: images no rule covers
    [[rules]]
    scope = "registry.lab:5000/shop/"       # a prefix of the fully qualified name; the longest one wins
    policy = "signed"                       # accept | reject | signed | digests
    keys = ["keys/shop.pub"]                # signed: PEM public keys (ECDSA P-256), inline or paths
                                            #   relative to the agent's config dir
    [[rules]]
    scope = "docker.io/library/busybox"
    policy = "digests"
    digests = ["sha256:…"]                  # digests: the manifest, index or config digests allowed

A scope is matched against the image's fully qualified name as the agent stores it
(`busybox` → `docker.io/library/busybox:latest`, `host:5000/app@sha256:…`): it matches when the name starts
with it and the scope ends there at a boundary (the scope ends in `/` or `:`, or the name goes on with `/`,
`:` or `@`), so `docker.io/library/busybox` covers `busybox:1.36` but not `busyboxes`. No file means
`default = "accept"` and no rules: today's behaviour.

Parsing is strict: an unknown key, a wrong type, a policy word that is not one of the four, a key that is
not an ECDSA P-256 public key, a path outside the config dir — each is one InvalidArgument naming the line
and the key. Pure apart from reading key files.
"""

from __future__ import annotations

import enum
import hashlib
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from agent.errors import InvalidArgument
from agent.oci.reference import validate_digest

MAX_POLICY_BYTES = 1024 * 1024


class Kind(enum.StrEnum):
    ACCEPT = "accept"
    REJECT = "reject"
    SIGNED = "signed"
    DIGESTS = "digests"


@dataclass(frozen=True)
class TrustKey:
    """A public key a `signed` rule accepts signatures of; `fingerprint` is how people tell keys apart."""

    public_key: ec.EllipticCurvePublicKey
    fingerprint: str  # "sha256:" + the first 16 hex of the SHA-256 of its DER SubjectPublicKeyInfo
    source: str  # "inline" or the path it was read from


@dataclass(frozen=True)
class Rule:
    scope: str
    policy: Kind
    keys: tuple[TrustKey, ...] = ()
    digests: frozenset[str] = frozenset()
    line: int = 0

    def matches(self, name: str) -> bool:
        return scope_matches(self.scope, name)


@dataclass(frozen=True)
class Policy:
    default: Kind = Kind.ACCEPT
    rules: tuple[Rule, ...] = ()
    text: str = ""  # the file as written ("" when there is no file)

    def rule_for(self, name: str) -> Rule | None:
        """The rule with the longest scope that covers `name` (a fully qualified reference), if any."""
        best: Rule | None = None
        for rule in self.rules:
            if rule.matches(name) and (best is None or len(rule.scope) > len(best.scope)):
                best = rule
        return best


DEFAULT_POLICY = Policy()


def scope_matches(scope: str, name: str) -> bool:
    """Whether `scope` is a prefix of `name` that ends at a name boundary (see the module docstring)."""
    if not name.startswith(scope):
        return False
    if len(name) == len(scope) or scope.endswith(("/", ":")):
        return True
    return name[len(scope)] in "/:@"


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()[:16]


def load_public_key(pem: bytes, where: str) -> ec.EllipticCurvePublicKey:
    """An ECDSA P-256 public key from PEM (`-----BEGIN PUBLIC KEY-----`, as `cosign.pub`)."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise InvalidArgument(f"{where}: not a PEM public key ({exc})") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise InvalidArgument(f"{where}: not an ECDSA P-256 public key (cosign's key-pair format)")
    return key


# ---- parsing ---------------------------------------------------------------------------------------

_HEADER_RE = re.compile(r"^\s*\[")
_RULES_HEADER_RE = re.compile(r"^\s*\[\[\s*rules\s*\]\]")
_TOP_KEYS = {"default", "rules"}
_RULE_KEYS = {"scope", "policy", "keys", "digests"}


class _Lines:
    """Line numbers of keys in the policy text (tomllib reports none for values it parsed)."""

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.rule_starts = [i for i, line in enumerate(self.lines) if _RULES_HEADER_RE.match(line)]

    def _key_in(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
        for i in range(start, end):
            if pattern.match(self.lines[i]):
                return i + 1
        return None

    def top(self, key: str) -> int:
        first_header = next(
            (i for i, line in enumerate(self.lines) if _HEADER_RE.match(line)), len(self.lines)
        )
        return self._key_in(key, 0, first_header) or 1

    def rule(self, index: int, key: str | None = None) -> int:
        if index >= len(self.rule_starts):
            return 1
        start = self.rule_starts[index]
        if key is None:
            return start + 1
        end = next(
            (i for i in range(start + 1, len(self.lines)) if _HEADER_RE.match(self.lines[i])), len(self.lines)
        )
        return self._key_in(key, start + 1, end) or start + 1


def parse(text: str, *, config_dir: Path, source: str = "policy.toml") -> Policy:
    """Parse and check a policy file's text; key paths are read from under `config_dir`."""
    if len(text.encode()) > MAX_POLICY_BYTES:
        raise InvalidArgument(f"{source}: the policy is larger than {MAX_POLICY_BYTES} bytes")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{source}: {exc}") from exc
    lines = _Lines(text)

    def fail(line: int, what: str, problem: str) -> InvalidArgument:
        return InvalidArgument(f"{source}:{line}: {what}: {problem}")

    for key in raw:
        if key not in _TOP_KEYS:
            raise fail(lines.top(key), key, f"unknown key (want {', '.join(sorted(_TOP_KEYS))})")
    default_word = raw.get("default", "accept")
    if default_word not in (Kind.ACCEPT, Kind.REJECT):
        raise fail(lines.top("default"), "default", f"{default_word!r} is not accept or reject")
    rules_raw = raw.get("rules", [])
    if not isinstance(rules_raw, list) or not all(isinstance(r, dict) for r in rules_raw):
        raise fail(lines.top("rules"), "rules", "must be [[rules]] tables")
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(rules_raw):
        rules.append(_rule(entry, index, lines, fail, config_dir))
        scope = rules[-1].scope
        if scope in seen:
            raise fail(
                lines.rule(index, "scope"),
                f"rules #{index + 1} scope",
                f"{scope!r} is also rules #{seen[scope]}",
            )
        seen[scope] = index + 1
    return Policy(Kind(default_word), tuple(rules), text)


def _rule(entry: dict[str, Any], index: int, lines: _Lines, fail: Any, config_dir: Path) -> Rule:
    label = f"rules #{index + 1}"
    for key in entry:
        if key not in _RULE_KEYS:
            raise fail(
                lines.rule(index, key),
                f"{label} {key}",
                f"unknown key (want {', '.join(sorted(_RULE_KEYS))})",
            )
    scope = entry.get("scope")
    if not isinstance(scope, str) or not scope:
        raise fail(lines.rule(index, "scope"), f"{label} scope", "a non-empty string is required")
    problem = _scope_problem(scope)
    if problem:
        raise fail(lines.rule(index, "scope"), f"{label} scope", problem)
    word = entry.get("policy")
    if word not in {k.value for k in Kind}:
        raise fail(
            lines.rule(index, "policy"),
            f"{label} policy",
            f"{word!r} is not one of accept, reject, signed, digests",
        )
    kind = Kind(word)
    keys_raw, digests_raw = entry.get("keys"), entry.get("digests")
    if kind is not Kind.SIGNED and keys_raw is not None:
        raise fail(
            lines.rule(index, "keys"), f"{label} keys", f"only a signed rule has keys (this one is {kind})"
        )
    if kind is not Kind.DIGESTS and digests_raw is not None:
        raise fail(
            lines.rule(index, "digests"),
            f"{label} digests",
            f"only a digests rule has digests (this one is {kind})",
        )
    keys: list[TrustKey] = []
    if kind is Kind.SIGNED:
        if not isinstance(keys_raw, list) or not keys_raw or not all(isinstance(k, str) for k in keys_raw):
            raise fail(
                lines.rule(index, "keys"), f"{label} keys", "a signed rule needs a list of PEM keys or paths"
            )
        for n, item in enumerate(keys_raw):
            try:
                keys.append(_key(item, config_dir))
            except InvalidArgument as exc:
                raise fail(lines.rule(index, "keys"), f"{label} keys[{n}]", exc.message) from None
    digests: set[str] = set()
    if kind is Kind.DIGESTS:
        if (
            not isinstance(digests_raw, list)
            or not digests_raw
            or not all(isinstance(d, str) for d in digests_raw)
        ):
            raise fail(
                lines.rule(index, "digests"), f"{label} digests", "a digests rule needs a list of digests"
            )
        for n, digest in enumerate(digests_raw):
            try:
                validate_digest(digest)
            except InvalidArgument as exc:
                raise fail(lines.rule(index, "digests"), f"{label} digests[{n}]", exc.message) from None
            digests.add(digest)
    return Rule(scope, kind, tuple(keys), frozenset(digests), lines.rule(index))


def _scope_problem(scope: str) -> str:
    if scope != scope.strip() or any(c.isspace() for c in scope):
        return f"{scope!r} contains whitespace"
    first = scope.split("/", 1)[0]
    if not ("." in first or ":" in first or first == "localhost"):
        return (
            f"{scope!r} is not fully qualified: it must start with a registry host"
            f" (e.g. docker.io/library/{scope.rstrip('/')})"
        )
    return ""


def _key(item: str, config_dir: Path) -> TrustKey:
    if item.lstrip().startswith("-----BEGIN"):
        key = load_public_key(item.strip().encode() + b"\n", "inline key")
        return TrustKey(key, fingerprint(key), "inline")
    root = config_dir.resolve()
    path = (config_dir / item).resolve()
    if not path.is_relative_to(root):
        raise InvalidArgument(f"{item}: a key path must be under the agent's config dir {config_dir}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{item}: cannot read {path}: {exc.strerror or exc}") from exc
    key = load_public_key(data, item)
    return TrustKey(key, fingerprint(key), str(path))
