"""The release phase table and the pointer moves (pure)."""

from __future__ import annotations

import pytest

from agent.releases.phases import (
    LANDINGS,
    SETTLED,
    TRANSITIONS,
    InvalidMove,
    Phase,
    Pointers,
    after_activate,
    after_switch_back,
    check_move,
    held_revisions,
    is_verified,
    revert_target,
)


def test_every_phase_has_a_row_and_every_settled_phase_can_switch_again() -> None:
    assert set(TRANSITIONS) == set(Phase)
    for phase in SETTLED:
        assert Phase.ACTIVATING in TRANSITIONS[phase], phase


def test_a_switch_lands_only_where_landings_allow() -> None:
    assert TRANSITIONS[Phase.ACTIVATING] == LANDINGS | {Phase.ACTIVATING}
    assert Phase.HEALTHY not in TRANSITIONS[Phase.ACTIVATING]  # verification is never skipped
    assert Phase.COMMITTED not in TRANSITIONS[Phase.VERIFYING]  # a commit needs a healthy verdict


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (Phase.STAGED, Phase.VERIFYING),
        (Phase.STAGED, Phase.COMMITTED),
        (Phase.VERIFYING, Phase.COMMITTED),
        (Phase.REVERTED, Phase.COMMITTED),
        (Phase.FAILED, Phase.HEALTHY),
        (Phase.COMMITTED, Phase.UNCONFIRMED),
    ],
)
def test_moves_outside_the_table_are_refused(frm: Phase, to: Phase) -> None:
    with pytest.raises(InvalidMove):
        check_move(frm, to)


@pytest.mark.parametrize(
    ("frm", "to"),
    [
        (Phase.STAGED, Phase.ACTIVATING),
        (Phase.ACTIVATING, Phase.VERIFYING),
        (Phase.VERIFYING, Phase.HEALTHY),
        (Phase.HEALTHY, Phase.COMMITTED),
        (Phase.HEALTHY, Phase.UNCONFIRMED),
        (Phase.UNCONFIRMED, Phase.COMMITTED),
        (Phase.VERIFYING, Phase.ACTIVATING),
        (Phase.ACTIVATING, Phase.REVERTED),
        (Phase.VERIFYING, Phase.FAILED),
        (Phase.ACTIVATING, Phase.ROLLED_BACK),
    ],
)
def test_the_rollout_path_is_allowed(frm: Phase, to: Phase) -> None:
    check_move(frm, to)


def test_activate_moves_active_to_previous_and_names_the_candidate() -> None:
    p = after_activate(Pointers(active=2, previous=1, last_known_good=2, candidate=2), 3)
    assert p == Pointers(active=3, previous=2, last_known_good=2, candidate=3)


def test_reactivating_the_active_revision_keeps_previous() -> None:
    p = after_activate(Pointers(active=3, previous=2, last_known_good=2, candidate=3), 3)
    assert p.previous == 2


def test_a_switch_back_keeps_previous_so_a_repeated_rollback_is_not_a_toggle() -> None:
    start = Pointers(active=3, previous=2, last_known_good=3, candidate=3)
    once = after_switch_back(start, start.previous)
    assert once == Pointers(active=2, previous=2, last_known_good=3, candidate=3)
    assert after_switch_back(once, once.previous) == once


def test_revert_goes_to_last_known_good_unless_it_is_the_failing_one() -> None:
    assert revert_target(Pointers(active=3, previous=2, last_known_good=2, candidate=3)) == 2
    assert revert_target(Pointers(active=1, previous=0, last_known_good=0, candidate=1)) == 0
    assert revert_target(Pointers(active=3, previous=2, last_known_good=3, candidate=3)) == 0


def test_only_verified_phases_can_be_committed() -> None:
    assert {p for p in Phase if is_verified(p)} == {Phase.HEALTHY, Phase.UNCONFIRMED, Phase.COMMITTED}


def test_held_revisions_name_every_role_and_a_newer_staged_one() -> None:
    held = held_revisions(Pointers(active=4, previous=3, last_known_good=3, candidate=4), latest=5)
    assert held == {4: ["active"], 3: ["previous", "last known good"], 5: ["staged"]}
    assert held_revisions(Pointers(active=2, previous=1, last_known_good=2), latest=2) == {
        2: ["active", "last known good"],
        1: ["previous"],
    }
    assert held_revisions(Pointers(), latest=1) == {1: ["staged"]}
