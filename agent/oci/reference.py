"""Image references as Docker users write them, parsed and normalized (the one reference grammar).

`busybox` → `docker.io/library/busybox:latest`; `host:5000/ns/name:tag`; `name@sha256:…`; `name:tag@sha256:…`.
The grammar follows the distribution project's reference grammar so that names accepted by `docker pull`
are accepted here and names it rejects are rejected with a message that says which part is wrong.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.errors import InvalidArgument

DEFAULT_REGISTRY = "docker.io"
DEFAULT_TAG = "latest"
OFFICIAL_NAMESPACE = "library"
# Names that Docker users write for Docker Hub and that all mean docker.io.
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
MAX_NAME_LENGTH = 255

_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")
_PATH_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$")
_SHA256_HEX_RE = re.compile(r"^[a-f0-9]{64}$")
_SHA512_HEX_RE = re.compile(r"^[a-f0-9]{128}$")


def validate_digest(digest: str) -> str:
    """Return `digest` if it is a well-formed sha256/sha512 digest; InvalidArgument otherwise."""
    if not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: expected algorithm:hex, e.g. sha256:<64 hex>")
    algorithm, _, hexpart = digest.partition(":")
    if algorithm == "sha256" and _SHA256_HEX_RE.match(hexpart):
        return digest
    if algorithm == "sha512" and _SHA512_HEX_RE.match(hexpart):
        return digest
    if algorithm in ("sha256", "sha512"):
        raise InvalidArgument(f"invalid digest {digest!r}: wrong length or not lowercase hex")
    raise InvalidArgument(f"unsupported digest algorithm {algorithm!r} in {digest!r}")


def _split_registry(name: str) -> tuple[str, str]:
    """Split off the registry the way Docker does: the first component is a host only if it looks like one."""
    first, sep, rest = name.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost" or first.lower() != first):
        registry = DEFAULT_REGISTRY if first in _HUB_ALIASES else first
        return registry, rest
    return DEFAULT_REGISTRY, name


@dataclass(frozen=True, order=True)
class Reference:
    """A normalized image reference: `registry/repository[:tag][@digest]`.

    `tag` is None only when the reference names a digest alone (`name@sha256:…`).
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse what a user typed; missing registry → docker.io, missing tag and digest → :latest."""
        return parse(text)

    @property
    def name(self) -> str:
        """`registry/repository` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def identifier(self) -> str:
        """What goes after `/manifests/` in a registry URL: the digest if pinned, else the tag."""
        if self.digest is not None:
            return self.digest
        return self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, validate_digest(digest))

    def familiar(self) -> str:
        """The short form Docker prints: `busybox:latest`, `ns/app:1`, `host:5000/app@sha256:…`."""
        repository = self.repository
        if self.registry == DEFAULT_REGISTRY:
            if repository.startswith(OFFICIAL_NAMESPACE + "/") and repository.count("/") == 1:
                repository = repository[len(OFFICIAL_NAMESPACE) + 1 :]
            name = repository
        else:
            name = f"{self.registry}/{repository}"
        return name + self._suffix()

    def _suffix(self) -> str:
        out = ""
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse(text: str) -> Reference:
    """Parse a Docker-style image reference; every rejection says which part is wrong."""
    if not text or text != text.strip():
        raise InvalidArgument(f"invalid reference {text!r}: empty or surrounded by whitespace")
    remainder = text
    digest: str | None = None
    if "@" in remainder:
        remainder, _, digest = remainder.partition("@")
        validate_digest(digest)
    tag: str | None = None
    # A tag is after the last ':' that comes after the last '/' (a ':' before it is a registry port).
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG_RE.match(tag):
            raise InvalidArgument(
                f"invalid reference {text!r}: tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], "
                "not starting with . or -"
            )
    if not remainder:
        raise InvalidArgument(f"invalid reference {text!r}: no repository name")
    registry, repository = _split_registry(remainder)
    if registry != DEFAULT_REGISTRY and not _DOMAIN_RE.match(registry):
        raise InvalidArgument(f"invalid reference {text!r}: {registry!r} is not a valid registry host[:port]")
    if not repository:
        raise InvalidArgument(f"invalid reference {text!r}: no repository name after the registry")
    for component in repository.split("/"):
        if not _PATH_COMPONENT_RE.match(component):
            if component.lower() != component and _PATH_COMPONENT_RE.match(component.lower()):
                raise InvalidArgument(f"invalid reference {text!r}: repository name must be lowercase")
            raise InvalidArgument(
                f"invalid reference {text!r}: path component {component!r} must be lowercase letters, digits "
                "and single separators (., _, __, -)"
            )
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"{OFFICIAL_NAMESPACE}/{repository}"
    if len(registry) + 1 + len(repository) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"invalid reference {text!r}: name longer than {MAX_NAME_LENGTH} characters")
    if tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(registry, repository, tag, digest)
