"""A release's phase as an explicit state machine (pure), and the decisions that only read a state.

    staged ─► activating ─► verifying ─► healthy ─► committed
                 ▲  │  ▲        │           │  └──► unconfirmed ─► committed
                 │  │  └────────┴───────────┘       (no Commit within the deadline)
                 │  ├─► reverted     (verification failed: the agent switched back to last known good)
                 │  ├─► failed       (… and there was nothing to go back to)
                 │  └─► rolled_back  (a Rollback call)
                 └── every settled phase (a new Activate, a Rollback, the agent's own revert)

`activating` is written BEFORE containers are switched, with the phase to land in (`landing`) and the
target revision; an agent killed mid-switch redoes the switch (it is idempotent) at its next start. A
failure found in `verifying` that ends in `failed` stops the candidate's containers first and moves
`verifying → failed` afterwards, so it is redone after a crash too.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Phase(StrEnum):
    STAGED = "staged"
    ACTIVATING = "activating"
    VERIFYING = "verifying"
    HEALTHY = "healthy"
    COMMITTED = "committed"
    UNCONFIRMED = "unconfirmed"
    REVERTED = "reverted"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"


SETTLED = frozenset(
    {Phase.STAGED, Phase.COMMITTED, Phase.UNCONFIRMED, Phase.REVERTED, Phase.FAILED, Phase.ROLLED_BACK}
)
# where a switch may land (written as `landing` while activating)
LANDINGS = frozenset({Phase.VERIFYING, Phase.REVERTED, Phase.FAILED, Phase.ROLLED_BACK})

TRANSITIONS: dict[Phase, frozenset[Phase]] = {
    Phase.STAGED: frozenset({Phase.ACTIVATING}),
    # the switch lands, or fails and the agent switches again (to last known good)
    Phase.ACTIVATING: LANDINGS | {Phase.ACTIVATING},
    Phase.VERIFYING: frozenset({Phase.HEALTHY, Phase.FAILED, Phase.ACTIVATING}),
    Phase.HEALTHY: frozenset({Phase.COMMITTED, Phase.UNCONFIRMED, Phase.ACTIVATING}),
    Phase.COMMITTED: frozenset({Phase.ACTIVATING}),
    Phase.UNCONFIRMED: frozenset({Phase.COMMITTED, Phase.ACTIVATING}),
    Phase.REVERTED: frozenset({Phase.ACTIVATING}),
    Phase.FAILED: frozenset({Phase.ACTIVATING}),
    Phase.ROLLED_BACK: frozenset({Phase.ACTIVATING}),
}


class InvalidMove(RuntimeError):
    """A move the table does not allow: a bug in the agent, not a user error."""


def check_move(frm: Phase, to: Phase) -> None:
    if to not in TRANSITIONS[frm]:
        raise InvalidMove(f"release phase {frm} cannot become {to}")


@dataclass(frozen=True)
class Pointers:
    """The revisions a release names (0 = none)."""

    active: int = 0
    previous: int = 0
    last_known_good: int = 0
    candidate: int = 0


def after_activate(p: Pointers, revision: int) -> Pointers:
    """Activate N: the active one becomes previous (unless N is re-activated), N is the candidate."""
    previous = p.active if p.active and p.active != revision else p.previous
    return Pointers(revision, previous, p.last_known_good, revision)


def after_switch_back(p: Pointers, revision: int) -> Pointers:
    """A revert or rollback to `revision`: it is active; `previous` and the candidate stay, so a repeated
    Rollback(PREVIOUS) is a no-op rather than a toggle, and the candidate names what was abandoned."""
    return Pointers(revision, p.previous, p.last_known_good, p.candidate)


def revert_target(p: Pointers) -> int:
    """What the agent goes back to when the candidate fails: last known good, unless that is the failing
    revision itself (then nothing: 0)."""
    return p.last_known_good if p.last_known_good != p.candidate else 0


def is_verified(phase: Phase) -> bool:
    """Whether the active revision proved healthy (what Commit requires)."""
    return phase in (Phase.HEALTHY, Phase.UNCONFIRMED, Phase.COMMITTED)


def held_revisions(p: Pointers, latest: int) -> dict[int, list[str]]:
    """Revision → its roles, for every revision the release may switch to without a pull: active,
    previous, last known good, and the newest one if it is newer than active and has no other role
    ("staged"). Their images are kept by prune and GC, and `rmi` names the release and the roles. (A
    failed candidate's stopped containers keep its images through the container records.)"""
    held: dict[int, list[str]] = {}
    for number, role in (
        (p.active, "active"),
        (p.previous, "previous"),
        (p.last_known_good, "last known good"),
    ):
        if number and role not in held.get(number, []):
            held.setdefault(number, []).append(role)
    if latest > p.active and latest not in held:
        held[latest] = ["staged"]
    return held
