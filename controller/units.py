"""Human forms of run flags → the typed values the wire carries: sizes ("512m") in bytes, CPUs ("1.5") in
nano-CPUs, durations ("1m30s") in nanoseconds, `ps` filters ("label=a=b") as key/value pairs.

The controller parses each human form once, here, and sends the typed field next to the string (which
older agents read). The syntax and the error messages are those the agent has always answered with for
the string forms (agent.runtime.options; a unit test keeps the two in step), so a user sees the same
line whichever side refuses the value. Pure: no I/O, no grpc.
"""

from __future__ import annotations

import re
from fractions import Fraction

from controller.errors import ControllerError

INT64_MAX = (1 << 63) - 1
MIN_MEMORY = 6 * 1024 * 1024
NANO = 1_000_000_000
MIN_NANO_CPUS = NANO // 100  # 0.01 CPUs
MAX_NANO_CPUS = 4096 * NANO
# google.protobuf.Duration's range: 10,000 years
MAX_DURATION_NS = 315_576_000_000 * NANO

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmgtp]?)i?b?$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_DURATION_NS = {"h": 3600 * NANO, "m": 60 * NANO, "s": NANO, "ms": 1_000_000, "us": 1_000, "ns": 1}
_DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|us|ns|h|m|s)")


class InvalidValue(ControllerError):
    """A flag's value that does not parse (exit 1 as when the agent refused it; `run` makes it 125)."""


def parse_size(value: str, flag: str) -> int:
    """Docker's RAMInBytes: "512m", "1.5g", "100000" (bytes), binary multiples; at most 2^63-1."""
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise InvalidValue(f"invalid {flag} value {value!r}: expected a size such as 512m or 1g")
    whole, _, frac = m.group(1).partition(".")
    unit = _UNITS[m.group(2).lower()]
    frac = frac[:18]  # below a byte even in PiB; also keeps int() far from its digit limit
    size = -1 if len(whole) > 30 else int(whole) * unit + int(frac or 0) * unit // 10 ** len(frac)
    if not 0 <= size <= INT64_MAX:  # the OCI spec's fields are int64
        raise InvalidValue(f"invalid {flag} value {value!r}: out of range (max {INT64_MAX} bytes)")
    return size


def parse_memory(value: str) -> int:
    """-m/--memory in bytes; at least 6 MiB, as the agent requires."""
    size = parse_size(value, "--memory")
    if size < MIN_MEMORY:
        raise InvalidValue(f"invalid --memory value {value!r}: the minimum is 6m")
    return size


def parse_memory_swap(value: str) -> int:
    """--memory-swap in bytes; "-1" (unlimited swap) stays -1."""
    if value.strip() == "-1":
        return -1
    return parse_size(value, "--memory-swap")


def parse_cpus(value: str) -> int:
    """--cpus "1.5" → 1500000000 nano-CPUs (Docker's NanoCPUs), from 0.01 to 4096 CPUs."""
    try:
        cpus = float(value)
    except ValueError:
        raise InvalidValue(f"invalid --cpus value {value!r}: expected a number such as 0.5") from None
    if not 0.01 <= cpus <= 4096:  # also refuses nan
        raise InvalidValue(f"invalid --cpus value {value!r}: must be at least 0.01")
    return round(cpus * NANO)


def parse_duration(value: str, flag: str) -> int:
    """Go-style durations as Docker's health flags take them ("30s", "1m30s", "500ms", "2h"; a bare
    number is seconds) → nanoseconds, within google.protobuf.Duration's range."""
    text = value.strip()
    total = Fraction(0)
    if re.fullmatch(r"\d+(\.\d+)?", text):
        total = Fraction(text) * NANO
    else:
        pos = 0
        for m in _DURATION_PART_RE.finditer(text):
            if m.start() != pos:
                break
            total += Fraction(m.group(1)) * _DURATION_NS[m.group(2)]
            pos = m.end()
        if pos != len(text) or not text:
            raise InvalidValue(f"invalid {flag} {value!r}: expected a duration such as 30s or 1m30s")
    if total > MAX_DURATION_NS:
        raise InvalidValue(f"invalid {flag} {value!r}: out of range (max 10000 years)")
    return round(total)


def parse_filter(value: str) -> tuple[str, str]:
    """`ps -f KEY=VALUE` → (key, value); the key case-folded as the agent always matched it."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise InvalidValue(f"invalid filter {value!r}: expected KEY=VALUE")
    return key.strip().lower(), val
