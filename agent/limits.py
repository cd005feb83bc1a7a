"""The bounds on what a caller may make the agent store or send back: one table, checked at the API edge.

Why bounds at all: every record the agent keeps (a container's labels, argv and env, a volume's labels) is
sent back whole by `ps`, `inspect`, `events` and the list calls. Without a bound one careless or hostile
caller could store 12 MB of labels and break `ps -a` for everyone. Each bound is generous next to what
Docker users do in practice and never above what the kernel itself accepts:

    what                                   bound                  why this number
    label key                              1 KiB                  reverse-DNS keys are tens of bytes
    label value                            64 KiB                 room for a JSON blob or a certificate
    labels of one object, keys + values    256 KiB                as Kubernetes' annotations
    one argv or env string                 128 KiB                the kernel's MAX_ARG_STRLEN (E2BIG above)
    argv + env of a container, all told    1 MiB                  half the kernel's usual ARG_MAX (2 MiB);
                                                                  the image's own env and entrypoint add to it
    hostname                               64 bytes, labels ≤ 63  the kernel's HOST_NAME_MAX; RFC 1123
    network alias                          253 bytes, labels ≤ 63 RFC 1123 (it goes to /etc/hosts)
    container and volume names             128 characters         Docker's charset; a volume name is a
                                                                  directory name (NAME_MAX 255)
    a container's whole config             2 MiB                  what is left (mounts, ports, …) stays small
    a Dockerfile line (after continuations) 1 MiB                 BuildKit's scanner refuses far less
    pids limit                             4194304                the kernel's PID_MAX_LIMIT
    sizes (memory, swap, tmpfs)            2^63-1 bytes           an OCI spec field is an int64

A list call streams its records in pages of about `LIST_PAGE_BYTES`, each well under gRPC's default
4 MiB message limit, so no number of records can make a reply too large to send.

Pure: no I/O, no grpc. Every check raises `InvalidArgument` naming the field and the bound.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from agent.errors import InvalidArgument

KiB = 1 << 10
MiB = 1 << 20

LABEL_KEY_BYTES = 1 * KiB
LABEL_VALUE_BYTES = 64 * KiB
LABELS_BYTES = 256 * KiB
ARG_STRING_BYTES = 128 * KiB
ARGV_ENV_BYTES = 1 * MiB
HOSTNAME_BYTES = 64
HOSTNAME_LABEL_BYTES = 63
DNS_NAME_BYTES = 253
NAME_CHARS = 128
CONTAINER_CONFIG_BYTES = 2 * MiB
DOCKERFILE_LINE_BYTES = 1 * MiB
PIDS_LIMIT_MAX = 4_194_304
INT32_MAX = (1 << 31) - 1
INT64_MAX = (1 << 63) - 1
UINT64_MAX = (1 << 64) - 1
LIST_PAGE_BYTES = 1 * MiB
# An error's message travels in a trailer (gRPC's default limit for all metadata is 8 KiB); messages that
# quote a huge input are cut to this many characters.
ERROR_MESSAGE_CHARS = 2000

# RFC 1123 labels, with "_" allowed as Docker does in practice; no whitespace or newlines, which would
# otherwise reach /etc/hosts.
_HOSTNAME_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]*[A-Za-z0-9_])?$")


def human(size: int) -> str:
    """1048576 → "1 MiB"; bounds are whole binary units, other numbers stay bytes."""
    for unit, factor in (("MiB", MiB), ("KiB", KiB)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} bytes"


def _too_big(what: str, size: int, limit: int) -> InvalidArgument:
    return InvalidArgument(f"{what} is {size} bytes, over the limit of {human(limit)}")


def _utf8(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def check_labels(labels: Mapping[str, str], flag: str = "--label") -> None:
    """Bounds on one object's labels: each key, each value, and all of them together."""
    total = 0
    for key, value in labels.items():
        key_size, value_size = _utf8(key), _utf8(value)
        if key_size > LABEL_KEY_BYTES:
            raise _too_big(f"{flag}: the key {key[:40]!r}…", key_size, LABEL_KEY_BYTES)
        if value_size > LABEL_VALUE_BYTES:
            raise _too_big(f"{flag} {key[:80]!r}: the value", value_size, LABEL_VALUE_BYTES)
        total += key_size + value_size
    if total > LABELS_BYTES:
        raise _too_big(f"{flag}: the labels together", total, LABELS_BYTES)


def check_argv_env(
    command: Iterable[str], entrypoint: Iterable[str], env: Iterable[str], *, env_flag: str = "-e"
) -> None:
    """The kernel's per-string bound, and our bound on argv + env as a whole (each string with its NUL)."""
    total = 0
    for what, values in (("the command", command), ("--entrypoint", entrypoint), (env_flag, env)):
        for value in values:
            size = _utf8(value)
            if size > ARG_STRING_BYTES:
                name = f"{env_flag} {value.split('=', 1)[0][:80]!r}" if what == env_flag else what
                raise _too_big(f"{name}: one argument", size, ARG_STRING_BYTES)
            total += size + 1
    if total > ARGV_ENV_BYTES:
        raise _too_big("the command, entrypoint and environment together", total, ARGV_ENV_BYTES)


def check_hostname(hostname: str, flag: str = "--hostname") -> None:
    """The kernel takes at most 64 bytes; each dot-separated label is RFC 1123 (1-63 characters)."""
    _check_dns_name(hostname, flag, HOSTNAME_BYTES)


def check_network_alias(alias: str, flag: str = "--network-alias") -> None:
    """A DNS name other containers resolve (it is written to their /etc/hosts): RFC 1123, 253 at most."""
    _check_dns_name(alias, flag, DNS_NAME_BYTES)


def _check_dns_name(name: str, flag: str, limit: int) -> None:
    if not name:
        return
    size = _utf8(name)
    if size > limit:
        raise InvalidArgument(f"invalid {flag} {name[:80]!r}…: {size} characters, over the limit of {limit}")
    for label in name.split("."):
        if not _HOSTNAME_LABEL_RE.match(label) or len(label) > HOSTNAME_LABEL_BYTES:
            raise InvalidArgument(
                f"invalid {flag} {name!r}: each dot-separated part must be 1-{HOSTNAME_LABEL_BYTES} "
                "letters, digits, '-' or '_', not starting or ending with '-'"
            )


def check_name_length(name: str, what: str) -> None:
    """Container and volume names: at most `NAME_CHARS` characters (the charset is the caller's rule)."""
    if len(name) > NAME_CHARS:
        raise InvalidArgument(
            f"invalid {what} {name[:40]!r}…: {len(name)} characters, over the limit of {NAME_CHARS}"
        )


def check_range(flag: str, value: int, low: int, high: int) -> int:
    """An integer option within [low, high], else an error naming the flag and the bound it broke."""
    if value > high:
        raise InvalidArgument(f"{flag}: {value} is out of range (max {high})")
    if value < low:
        raise InvalidArgument(f"{flag}: {value} is out of range (min {low})")
    return value


def check_config_size(size: int) -> None:
    """The serialized create/run config as a whole: what no single bound above catches stays small."""
    if size > CONTAINER_CONFIG_BYTES:
        raise _too_big("the container config", size, CONTAINER_CONFIG_BYTES)


def clip_message(message: str) -> str:
    """An error message cut to `ERROR_MESSAGE_CHARS` so it always fits in the status trailer."""
    if len(message) <= ERROR_MESSAGE_CHARS:
        return message
    return message[: ERROR_MESSAGE_CHARS - 40] + f"… ({len(message)} characters in all)"
