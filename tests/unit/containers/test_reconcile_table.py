"""Start-up reconcile as a table (agent/containers/reconcile.plan): one test per row.

(stored status × what runs on the host × exit file present, plus the boot and the container's
options) → the steps, in order.
"""

from __future__ import annotations

import pytest

from agent.containers.reconcile import Facts, Running, Step, plan
from agent.state.containers import Status

ACTIVE = [Status.RUNNING, Status.PAUSED]
ALL_RUNNING = list(Running)


def facts(
    status: Status,
    running: Running = Running.NOTHING,
    *,
    exit_file: bool = False,
    host_restarted: bool = False,
    paused_by_commit: bool = False,
    auto_remove: bool = False,
    restart_at_agent_start: bool = False,
) -> Facts:
    return Facts(
        status, running, exit_file, host_restarted, paused_by_commit, auto_remove, restart_at_agent_start
    )


@pytest.mark.parametrize("running", ALL_RUNNING)
@pytest.mark.parametrize("exit_file", [False, True])
def test_a_half_done_create_is_discarded(running: Running, exit_file: bool) -> None:
    assert plan(facts(Status.CREATING, running, exit_file=exit_file)) == (Step.DISCARD,)


@pytest.mark.parametrize("running", ALL_RUNNING)
def test_an_interrupted_removal_is_finished(running: Running) -> None:
    assert plan(facts(Status.REMOVING, running)) == (Step.FINISH_REMOVAL,)


@pytest.mark.parametrize("status", ACTIVE)
def test_a_run_whose_monitor_lives_is_adopted(status: Status) -> None:
    assert plan(facts(status, Running.MONITOR)) == (Step.ADOPT,)


@pytest.mark.parametrize("status", ACTIVE)
def test_a_commit_s_freeze_is_thawed_before_adopting(status: Status) -> None:
    assert plan(facts(status, Running.MONITOR, paused_by_commit=True)) == (Step.THAW, Step.ADOPT)


@pytest.mark.parametrize("status", ACTIVE)
@pytest.mark.parametrize("running", [Running.STATE, Running.NOTHING])
def test_a_run_that_ended_while_the_agent_was_down_is_recorded_from_its_exit_file(
    status: Status, running: Running
) -> None:
    assert plan(facts(status, running, exit_file=True)) == (Step.RECORD_EXIT,)


@pytest.mark.parametrize("status", ACTIVE)
@pytest.mark.parametrize("running", [Running.STATE, Running.NOTHING])
def test_a_run_whose_monitor_left_no_exit_file_is_recorded_unknown(status: Status, running: Running) -> None:
    assert plan(facts(status, running)) == (Step.RECORD_NO_EXIT,)


@pytest.mark.parametrize("status", ACTIVE)
@pytest.mark.parametrize("exit_file", [False, True])
def test_a_run_of_an_earlier_boot_ended_with_the_host(status: Status, exit_file: bool) -> None:
    f = facts(status, Running.NOTHING, exit_file=exit_file, host_restarted=True, paused_by_commit=True)
    assert plan(f) == (Step.RECORD_HOST_RESTART,)


@pytest.mark.parametrize("status", [Status.CREATED, Status.DEAD])
def test_a_container_that_does_not_run_loses_leftover_runtime_state(status: Status) -> None:
    assert plan(facts(status, Running.STATE)) == (Step.CLEAN_RUNTIME,)
    assert plan(facts(status, Running.NOTHING)) == ()


def test_an_exited_container_gets_its_rootfs_unmounted() -> None:
    assert plan(facts(Status.EXITED)) == (Step.UNMOUNT,)
    assert plan(facts(Status.EXITED, Running.STATE)) == (Step.CLEAN_RUNTIME, Step.UNMOUNT)


def test_an_interrupted_rm_is_done() -> None:
    f = facts(Status.EXITED, auto_remove=True, host_restarted=True, restart_at_agent_start=True)
    assert plan(f) == (Step.UNMOUNT, Step.REMOVE)


def test_a_host_restart_brings_back_what_its_policy_says() -> None:
    f = facts(Status.EXITED, host_restarted=True, restart_at_agent_start=True)
    assert plan(f) == (Step.UNMOUNT, Step.RESTART_NOW)


def test_without_a_host_restart_an_exited_container_stays_exited() -> None:
    assert plan(facts(Status.EXITED, restart_at_agent_start=True)) == (Step.UNMOUNT,)
    assert plan(facts(Status.EXITED, host_restarted=True)) == (Step.UNMOUNT,)


@pytest.mark.parametrize("running", [Running.STATE, Running.NOTHING])
def test_a_restart_back_off_goes_on(running: Running) -> None:
    expected = (
        (Step.RESUME_BACKOFF,) if running is Running.NOTHING else (Step.CLEAN_RUNTIME, Step.RESUME_BACKOFF)
    )
    assert plan(facts(Status.RESTARTING, running)) == expected
