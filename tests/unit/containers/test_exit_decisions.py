"""What happens when a run ends (agent/containers/exits.decide_exit): one test per row of the decision."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.containers import restart
from agent.containers.exits import NO_EXIT_CODE, NO_EXIT_FILE, ExitAction, ExitDecision, decide_exit
from agent.runtime.monitor import ExitInfo
from agent.runtime.options import RestartMode, RestartPolicy
from agent.state.containers import ContainerRecord, Status

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
NO = RestartPolicy()
ALWAYS = RestartPolicy(RestartMode.ALWAYS)
UNLESS_STOPPED = RestartPolicy(RestartMode.UNLESS_STOPPED)
ON_FAILURE = RestartPolicy(RestartMode.ON_FAILURE)
ON_FAILURE_2 = RestartPolicy(RestartMode.ON_FAILURE, max_retries=2)


def record(
    status: Status = Status.RUNNING,
    *,
    ran_for: float = 2.0,
    restart_count: int = 0,
    stopped_by_user: bool = False,
) -> ContainerRecord:
    return ContainerRecord(
        id="c" * 64,
        name="web",
        image="busybox",
        image_digest="sha256:x",
        options={},
        created_at=NOW - timedelta(minutes=5),
        status=status,
        started_at=NOW - timedelta(seconds=ran_for),
        restart_count=restart_count,
        stopped_by_user=stopped_by_user,
    )


def exited(code: int, *, oom: bool = False) -> ExitInfo:
    return ExitInfo(code, oom, NOW)


def decide(
    rec: ContainerRecord | None,
    info: ExitInfo | None,
    policy: RestartPolicy = NO,
    *,
    auto_remove: bool = False,
    previous_delay: float = 0.0,
    closing: bool = False,
) -> ExitDecision:
    return decide_exit(
        rec, info, policy, auto_remove=auto_remove, previous_delay=previous_delay, closing=closing, now=NOW
    )


# ---- the exit itself -------------------------------------------------------------------------------


def test_a_recorded_exit_keeps_its_code_oom_and_time() -> None:
    d = decide(record(), exited(137, oom=True))
    assert (d.code, d.oom, d.finished_at, d.message) == (137, True, NOW, "")


def test_no_exit_file_is_an_unknown_code_now_with_the_reason() -> None:
    d = decide(record(), None)
    assert (d.code, d.oom, d.finished_at, d.message) == (255, False, NOW, NO_EXIT_FILE)
    assert d.status is Status.EXITED


def test_an_unreadable_exit_code_is_unknown_with_the_reason() -> None:
    d = decide(record(), ExitInfo(-1, True, NOW - timedelta(seconds=3)))
    assert (d.code, d.oom, d.message) == (255, True, NO_EXIT_CODE)
    assert d.finished_at == NOW - timedelta(seconds=3)


# ---- what happens next ------------------------------------------------------------------------------


def test_a_record_removed_meanwhile_is_forgotten() -> None:
    d = decide(None, exited(0), ALWAYS, auto_remove=True)
    assert (d.action, d.status) == (ExitAction.FORGET, None)


@pytest.mark.parametrize("status", [Status.EXITED, Status.RESTARTING, Status.CREATED, Status.REMOVING])
def test_a_record_no_longer_running_keeps_the_exit_but_not_a_new_status(status: Status) -> None:
    d = decide(record(status), exited(1), ALWAYS, previous_delay=0.4)
    assert (d.action, d.status, d.delay) == (ExitAction.LEAVE, None, 0.4)


def test_a_record_no_longer_running_with_rm_is_still_removed() -> None:
    d = decide(record(Status.EXITED), exited(0), auto_remove=True)
    assert (d.action, d.status) == (ExitAction.REMOVE, None)


@pytest.mark.parametrize("status", [Status.RUNNING, Status.PAUSED])
def test_no_policy_leaves_it_exited_with_the_back_off_unchanged(status: Status) -> None:
    d = decide(record(status), exited(1), NO, previous_delay=0.8)
    assert (d.action, d.status, d.delay) == (ExitAction.LEAVE, Status.EXITED, 0.8)


def test_rm_removes_it_after_recording_it_exited() -> None:
    d = decide(record(), exited(3), auto_remove=True)
    assert (d.action, d.status, d.code) == (ExitAction.REMOVE, Status.EXITED, 3)


@pytest.mark.parametrize("policy", [ALWAYS, UNLESS_STOPPED])
@pytest.mark.parametrize("code", [0, 1])
def test_always_and_unless_stopped_restart_on_any_code(policy: RestartPolicy, code: int) -> None:
    d = decide(record(), exited(code), policy)
    assert (d.action, d.status, d.delay) == (ExitAction.RESTART, Status.RESTARTING, restart.INITIAL_DELAY)


@pytest.mark.parametrize("policy", [ALWAYS, UNLESS_STOPPED, ON_FAILURE])
def test_a_container_the_user_stopped_is_not_restarted(policy: RestartPolicy) -> None:
    d = decide(record(stopped_by_user=True), exited(137), policy)
    assert (d.action, d.status) == (ExitAction.LEAVE, Status.EXITED)


def test_on_failure_leaves_a_clean_exit() -> None:
    assert decide(record(), exited(0), ON_FAILURE).action is ExitAction.LEAVE


def test_on_failure_restarts_a_failure() -> None:
    assert decide(record(), exited(2), ON_FAILURE).action is ExitAction.RESTART


def test_on_failure_with_a_limit_stops_restarting_at_the_limit() -> None:
    assert decide(record(restart_count=1), exited(2), ON_FAILURE_2).action is ExitAction.RESTART
    assert decide(record(restart_count=2), exited(2), ON_FAILURE_2).action is ExitAction.LEAVE


def test_an_agent_shutting_down_restarts_nothing() -> None:
    d = decide(record(), exited(1), ALWAYS, closing=True, previous_delay=0.2)
    assert (d.action, d.status, d.delay) == (ExitAction.LEAVE, Status.EXITED, 0.2)


def test_the_back_off_doubles_after_a_short_run() -> None:
    d = decide(record(ran_for=1.0), exited(1), ALWAYS, previous_delay=0.4)
    assert d.delay == pytest.approx(0.8)


def test_the_back_off_resets_after_a_long_run() -> None:
    d = decide(record(ran_for=restart.RESET_AFTER + 1), exited(1), ALWAYS, previous_delay=8.0)
    assert d.delay == restart.INITIAL_DELAY


def test_the_back_off_stops_growing_at_its_maximum() -> None:
    d = decide(record(), exited(1), ALWAYS, previous_delay=restart.MAX_DELAY)
    assert d.delay == restart.MAX_DELAY
