"""Platforms (os/arch/variant): parsing, normalization and picking the best manifest from an index.

Pure. Follows the rules Docker and containerd users expect: `aarch64` is `arm64`, an arm64 without a
variant is v8 (and `arm64/v8` equals `arm64`), 32-bit arm defaults to v7 and runs v6/v5 images too, and an
amd64 host also accepts 386 images as a last resort. Exact matches always win over compatible ones.
"""

from __future__ import annotations

import platform as _host
import re
from collections.abc import Sequence
from dataclasses import dataclass

from agent.errors import InvalidArgument

_ARCH_ALIASES = {
    "x86_64": "amd64",
    "x86-64": "amd64",
    "aarch64": "arm64",
    "i386": "386",
    "i686": "386",
    "armhf": "arm",
    "armel": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
}
_ALIAS_VARIANT = {"armhf": "v7", "armel": "v6", "armv7l": "v7", "armv6l": "v6"}
_WORD_RE = re.compile(r"^[a-z0-9._-]+$")


@dataclass(frozen=True, order=True)
class Platform:
    """A normalized platform; `variant` is "" when it is the architecture's default."""

    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, spec: str) -> Platform:
        """Parse `os/arch[/variant]` (what `--platform` takes) and normalize it."""
        parts = spec.strip().lower().split("/")
        if len(parts) not in (2, 3) or not all(p and _WORD_RE.match(p) for p in parts):
            raise InvalidArgument(f"invalid platform {spec!r}: expected os/arch[/variant], e.g. linux/arm64")
        return normalize(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def from_oci(cls, data: object) -> Platform | None:
        """The `platform` object of an index entry or the os/architecture/variant of an image config."""
        if not isinstance(data, dict):
            return None
        os_, arch = data.get("os"), data.get("architecture")
        variant = data.get("variant") or ""
        if not isinstance(os_, str) or not isinstance(arch, str) or not isinstance(variant, str):
            return None
        if not os_ or not arch:
            return None
        return normalize(os_, arch, variant)

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")


def normalize(os_: str, architecture: str, variant: str = "") -> Platform:
    """Canonical names and default variants, so that equal platforms compare equal."""
    os_, arch, variant = os_.lower(), architecture.lower(), variant.lower()
    if os_ == "macos":
        os_ = "darwin"
    if arch in _ARCH_ALIASES:
        variant = _ALIAS_VARIANT.get(arch, variant)
        arch = _ARCH_ALIASES[arch]
    if arch == "386":
        variant = ""
    elif arch == "amd64" and variant == "v1":
        variant = ""
    elif arch == "arm64" and variant in ("8", "v8", "v8.0"):
        variant = ""
    elif arch == "arm":
        if variant in ("", "7"):
            variant = "v7"
        elif variant in ("5", "6", "8"):
            variant = "v" + variant
    return Platform(os_, arch, variant)


def host() -> Platform:
    """The platform this agent runs on (Linux only)."""
    return normalize("linux", _host.machine() or "amd64")


def candidates(wanted: Platform) -> list[Platform]:
    """Platforms that can run on `wanted`, best first."""
    out = [wanted]
    if wanted.architecture == "amd64":
        level = _variant_number(wanted.variant)
        if level is not None:
            out += [Platform(wanted.os, "amd64", f"v{n}" if n > 1 else "") for n in range(level - 1, 0, -1)]
        out.append(Platform(wanted.os, "386"))
    elif wanted.architecture == "arm":
        level = _variant_number(wanted.variant)
        if level is not None:
            out += [Platform(wanted.os, "arm", f"v{n}") for n in range(level - 1, 4, -1)]
    elif wanted.architecture == "arm64" and wanted.variant == "":
        out += [Platform(wanted.os, "arm", f"v{n}") for n in range(8, 4, -1)]
    return out


def _variant_number(variant: str) -> int | None:
    if variant == "":
        return 1
    if variant.startswith("v") and variant[1:].isdigit():
        return int(variant[1:])
    return None


def select(wanted: Platform, available: Sequence[Platform | None]) -> int | None:
    """Index of the best entry of `available` for `wanted` (first of equals), or None if none fits."""
    for candidate in candidates(wanted):
        for index, offered in enumerate(available):
            if offered == candidate:
                return index
    return None
