"""Maintenance windows: when a rollout may download (stage) and when it may switch (activate). Pure.

    --download-window "Mon-Fri 01:00-05:00"   --apply-window "Sat 02:00-04:00"   [--tz Europe/Berlin]

The form (no cron): one or more `[DAYS] HH:MM-HH:MM` joined by `;`. DAYS is a day (`Sat`), a range
(`Mon-Fri`, `Fri-Mon` wraps), a comma list (`Mon,Wed,Fri`), or `daily`/`*` (also when left out). An end
at or before the start runs past midnight into the next day (`Fri 22:00-02:00` ends Saturday 02:00);
`24:00` is the end of the day. Times are in `--tz` (an IANA zone name), else the controller's local zone.
Adjacent spans join (`Mon 22:00-24:00; Tue 00:00-03:00` is one window of five hours).

A group of the inventory may carry its own: `download_window`, `apply_window` and `window_tz` in its vars
(`[groups.vars.north] apply_window = "Sat 02:00-04:00"`); a flag of `rollout apply` wins over them.

`Window.next_fit(t, need)` is the planner's question: the earliest moment at or after `t` inside the
window with at least `need` seconds left before it closes (a wave that cannot finish in time does not
start). Time comes from a `Clock`, so tests drive the engine with a controllable one instead of sleeping.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller.errors import UsageError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SEARCH_DAYS = 15  # how far ahead a window is looked for (every weekly window recurs within it)
_SPAN_RE = re.compile(r"^(?:(?P<days>\S+)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


class Clock(Protocol):
    """The engine's time source: epoch seconds, and a sleep on that time."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Span:
    days: frozenset[int]  # weekday numbers, Monday 0
    start: int  # minutes after midnight
    end: int  # minutes after the start day's midnight (> start; up to 24 h later)


@dataclass(frozen=True)
class Window:
    text: str
    tz: str  # "" = the controller's local zone
    spans: tuple[Span, ...]

    def zone(self) -> ZoneInfo | None:
        return ZoneInfo(self.tz) if self.tz else None

    def intervals(self, t: float) -> list[tuple[float, float]]:
        """Open intervals (epoch start, end) from the day before `t` for SEARCH_DAYS, merged, in order."""
        zone = self.zone()
        first = datetime.fromtimestamp(t, zone).date() - timedelta(days=1)
        raw: list[tuple[float, float]] = []
        for offset in range(SEARCH_DAYS + 1):
            day = first + timedelta(days=offset)
            for span in self.spans:
                if day.weekday() in span.days:
                    raw.append((_at(day, span.start, zone), _at(day, span.end, zone)))
        raw.sort()
        merged: list[tuple[float, float]] = []
        for start, end in raw:
            if merged and start <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], end))
            else:
                merged.append((start, end))
        return merged

    def open_at(self, t: float) -> tuple[float, float] | None:
        """The interval `t` is in, or None when the window is closed at `t`."""
        return next(((s, e) for s, e in self.intervals(t) if s <= t < e), None)

    def next_fit(self, t: float, need: float = 0.0) -> tuple[float, float] | None:
        """(when to start, when the window closes): the earliest moment at or after `t` inside the window
        with at least `need` seconds before it closes; None when no interval is long enough."""
        for start, end in self.intervals(t):
            begin = max(start, t)
            if begin < end and begin + need <= end:
                return begin, end
        return None

    def describe(self, t: float) -> str:
        """A moment in this window's zone, for people: `Sat 2024-06-08 02:00 CEST`."""
        return describe(t, self.tz)


def describe(t: float, tz: str = "") -> str:
    return datetime.fromtimestamp(t, ZoneInfo(tz) if tz else None).strftime("%a %Y-%m-%d %H:%M %Z").strip()


def _at(day: date, minutes: int, zone: ZoneInfo | None) -> float:
    """Epoch seconds of a wall-clock time in `zone` (aware arithmetic in Python is wall-clock)."""
    return (datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(minutes=minutes)).timestamp()


def check_tz(tz: str, flag: str = "--tz") -> str:
    if not tz:
        return ""
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise UsageError(
            f"invalid {flag} {tz!r}: not a time zone name (such as Europe/Berlin or UTC)"
        ) from None
    return tz


def parse(text: str, tz: str = "", *, flag: str = "window") -> Window:
    """`[DAYS] HH:MM-HH:MM[; …]` (see the module docstring); UsageError naming the flag otherwise."""
    tz = check_tz(tz)
    spans = []
    for part in (p.strip() for p in text.split(";")):
        m = _SPAN_RE.match(part)
        if not m:
            raise UsageError(
                f'invalid {flag} {text!r}: expected [DAYS] HH:MM-HH:MM, e.g. "Mon-Fri 01:00-05:00"'
                " (days: Mon…Sun, ranges, comma lists, daily; several joined by ;)"
            )
        start, end = _minutes(m.group("start"), text, flag), _minutes(m.group("end"), text, flag)
        if start == 24 * 60:
            raise UsageError(f"invalid {flag} {text!r}: a window starts at 23:59 at the latest")
        if end <= start:
            end += 24 * 60
        spans.append(Span(_days(m.group("days") or "daily", text, flag), start, end))
    return Window(text.strip(), tz, tuple(spans))


def _minutes(hhmm: str, text: str, flag: str) -> int:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    if hours > 24 or minutes > 59 or (hours == 24 and minutes):
        raise UsageError(f"invalid {flag} {text!r}: {hhmm} is not a time of day (00:00-24:00)")
    return hours * 60 + minutes


def _days(text: str, whole: str, flag: str) -> frozenset[int]:
    if text.lower() in ("daily", "*"):
        return frozenset(range(7))

    def day(name: str) -> int:
        key = name.strip().lower()[:3]
        if len(name.strip()) < 3 or key not in DAYS or not DAYS[DAYS.index(key)].startswith(key):
            raise UsageError(
                f"invalid {flag} {whole!r}: {name!r} is not a day or a range of days (Mon…Sun, Mon-Fri)"
            )
        return DAYS.index(key)

    out: set[int] = set()
    for item in text.split(","):
        first, dash, last = item.partition("-")
        current, stop = day(first), day(last) if dash else day(first)
        out.add(current)
        while current != stop:
            current = (current + 1) % 7
            out.add(current)
    return frozenset(out)
