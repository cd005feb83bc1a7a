"""Points in time as the user types them for --since/--until (logs, events): RFC 3339, a unix timestamp,
or a duration back from now such as 10m or 2h."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from controller.errors import UsageError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIN_NS, _MAX_NS = -62_135_596_800 * 10**9, 253_402_300_800 * 10**9 - 1  # years 1 to 9999 (protobuf's)


def parse_time(value: str, now: datetime | None = None) -> int:
    """`value` as nanoseconds since the epoch; a one-line UsageError when it is none of the three forms."""
    now = now or datetime.now(UTC)
    invalid = UsageError(f"invalid time {value!r}: use RFC3339, a unix timestamp or a duration like 10m")
    m = _DURATION.match(value)
    if m:
        try:
            return _nanoseconds(now - timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)]))
        except OverflowError:
            raise invalid from None
    try:
        ns = int(float(value) * 1e9)
        if _MIN_NS <= ns <= _MAX_NS:
            return ns
    except (ValueError, OverflowError):  # not a number, or inf/nan
        pass
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid from None
    return _nanoseconds(when if when.tzinfo else when.replace(tzinfo=UTC))


def _nanoseconds(when: datetime) -> int:
    """Exact (no float on the way): whole microseconds, as a datetime holds them."""
    return (when - _EPOCH) // timedelta(microseconds=1) * 1000
