"""The rollout plan: which hosts switch together (waves), in which order, under which budgets. Pure.

    hosts (name, labels) in selection order
      │ --canary N|P%      first wave: the canary (0 = none)
      │ --batch N|P%|exp   the waves after it: N hosts, P% of all hosts, or 1, 2, 4, 8…
      │ --budget KEY=N     in any wave, at most N hosts share one value of label KEY (no label: value "")
      ▼
    wave 0 (canary) ─► wave 1 ─► wave 2 ─► …      each wave waits for the one before to verify

Waves are filled greedily in host order: a wave takes the next host that keeps every budget, until it has
its size; a host skipped for a budget goes in a later wave, as early as its budget allows. So the plan is a
function of its inputs (the same hosts and flags always give the same waves), every host is in exactly one
wave, and a wave is never bigger than its size or over a budget — possibly smaller, when budgets leave no
other host. Sizes: a percentage of all selected hosts, rounded up (at least 1); `--max-fail P%` rounds down.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.errors import UsageError

EXP = "exp"
_COUNT_RE = re.compile(r"^(\d{1,9})(%?)$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")


@dataclass(frozen=True)
class Count:
    """`N` hosts or `P%` of them."""

    value: int
    percent: bool = False

    def __str__(self) -> str:
        return f"{self.value}{'%' if self.percent else ''}"

    def of(self, total: int, *, round_up: bool = True) -> int:
        """How many hosts out of `total` (a percentage rounded up, or down for a tolerance)."""
        if not self.percent:
            return min(self.value, total)
        exact = total * self.value / 100
        return math.ceil(exact) if round_up else math.floor(exact)


@dataclass(frozen=True)
class PlanHost:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanOptions:
    canary: Count = Count(1)
    batch: Count | str = Count(25, percent=True)  # or EXP
    budgets: Mapping[str, int] = field(default_factory=dict)  # label key → hosts per value per wave
    max_fail: Count = Count(0)


@dataclass(frozen=True)
class Wave:
    number: int  # 0 is the canary wave when there is one
    hosts: tuple[str, ...]
    canary: bool = False


@dataclass(frozen=True)
class Plan:
    waves: tuple[Wave, ...]
    max_fail: int  # failed hosts tolerated over the whole rollout

    def hosts(self) -> Iterator[str]:
        """Every host, in the order it switches."""
        for wave in self.waves:
            yield from wave.hosts

    def wave_of(self, host: str) -> int:
        for wave in self.waves:
            if host in wave.hosts:
                return wave.number
        raise KeyError(host)

    def to_json(self) -> dict[str, object]:
        """What the journal keeps (round-trips through `from_json`)."""
        return {
            "max_fail": self.max_fail,
            "waves": [{"number": w.number, "canary": w.canary, "hosts": list(w.hosts)} for w in self.waves],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        waves = tuple(Wave(int(w["number"]), tuple(w["hosts"]), bool(w["canary"])) for w in data["waves"])
        return cls(waves, int(data["max_fail"]))


# ---- flags -----------------------------------------------------------------------------------------


def parse_count(text: str, flag: str, *, allow_zero: bool = True) -> Count:
    """`N` or `P%` (P at most 100)."""
    m = _COUNT_RE.match(text.strip())
    if not m:
        raise UsageError(f"invalid {flag} {text!r}: expected a number of hosts (3) or a percentage (25%)")
    count = Count(int(m.group(1)), bool(m.group(2)))
    if count.percent and count.value > 100:
        raise UsageError(f"invalid {flag} {text!r}: a percentage is at most 100%")
    if count.value == 0 and not allow_zero:
        raise UsageError(f"invalid {flag} {text!r}: must be at least 1")
    return count


def parse_batch(text: str) -> Count | str:
    """`--batch N|P%|exp`."""
    if text.strip().lower() == EXP:
        return EXP
    return parse_count(text, "--batch", allow_zero=False)


def parse_budgets(values: Sequence[str]) -> dict[str, int]:
    """`--budget KEY=N`, repeatable; the same KEY twice is an error."""
    budgets: dict[str, int] = {}
    for text in values:
        key, sep, number = text.partition("=")
        key = key.strip()
        if not sep or not _LABEL_KEY_RE.match(key) or not number.strip().isdigit():
            raise UsageError(f"invalid --budget {text!r}: expected LABEL=N, e.g. site=1")
        if key in budgets:
            raise UsageError(f"invalid --budget {text!r}: {key} already has a budget")
        if int(number) < 1:
            raise UsageError(f"invalid --budget {text!r}: at least 1 host per {key} must be allowed")
        budgets[key] = int(number)
    return budgets


# ---- planning --------------------------------------------------------------------------------------


def make_plan(hosts: Sequence[PlanHost], options: PlanOptions) -> Plan:
    """Cut `hosts` (in selection order) into the canary wave and the waves after it."""
    names = [h.name for h in hosts]
    duplicates = sorted(n for n, c in Counter(names).items() if c > 1)
    if duplicates:
        raise UsageError(f"host selected twice: {', '.join(duplicates)}")
    total = len(hosts)
    pending = list(hosts)
    waves: list[Wave] = []
    canary = options.canary.of(total)
    if canary and pending:
        waves.append(Wave(0, _fill(pending, canary, options.budgets), canary=True))
    number = 1
    while pending:
        waves.append(Wave(number, _fill(pending, _batch_size(options.batch, number, total), options.budgets)))
        number += 1
    return Plan(tuple(waves), options.max_fail.of(total, round_up=False))


def _batch_size(batch: Count | str, number: int, total: int) -> int:
    """The size of the `number`th wave after the canary (numbered from 1)."""
    if isinstance(batch, str):
        return 1 << min(number - 1, 40)
    return max(1, batch.of(total))


def _fill(pending: list[PlanHost], size: int, budgets: Mapping[str, int]) -> tuple[str, ...]:
    """Take up to `size` hosts out of `pending`, in order, skipping those that would break a budget.
    The first pending host always fits (every budget allows at least 1), so a wave is never empty."""
    taken: list[PlanHost] = []
    used: Counter[tuple[str, str]] = Counter()
    for host in list(pending):
        if len(taken) == size:
            break
        groups = [(key, host.labels.get(key, "")) for key in budgets]
        if all(used[g] < budgets[g[0]] for g in groups):
            taken.append(host)
            used.update(groups)
            pending.remove(host)
    return tuple(h.name for h in taken)
