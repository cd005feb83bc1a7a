"""The verification verdict (pure): the window, resets, the deadline, failures that are final at once."""

from __future__ import annotations

from agent.releases.store import Policy
from agent.releases.verify import Kind, Observed, Window, assess, problem

POLICY = Policy(min_healthy_s=10, deadline_s=60)


def up(name: str = "app", health: str = "", run: str = "r1") -> Observed:
    return Observed(name, "running", health, run)


def test_healthy_only_after_min_healthy_of_continuous_health() -> None:
    verdict, window = assess([up(), up("side")], Window(), now=100, started=100, policy=POLICY)
    assert verdict.kind is Kind.WAIT and verdict.due == 110
    verdict, window = assess([up(), up("side")], window, now=105, started=100, policy=POLICY)
    assert verdict.kind is Kind.WAIT
    verdict, _ = assess([up(), up("side")], window, now=110, started=100, policy=POLICY)
    assert verdict.kind is Kind.HEALTHY


def test_min_healthy_zero_is_healthy_as_soon_as_everything_runs() -> None:
    verdict, _ = assess([up()], Window(), now=5, started=0, policy=Policy(0, 60))
    assert verdict.kind is Kind.HEALTHY


def test_a_restart_resets_the_window() -> None:
    _, window = assess([up(run="r1")], Window(), now=100, started=100, policy=POLICY)
    verdict, window = assess([up(run="r2")], window, now=108, started=100, policy=POLICY)
    assert verdict.kind is Kind.WAIT and window.since == 108
    verdict, _ = assess([up(run="r2")], window, now=112, started=100, policy=POLICY)
    assert verdict.kind is Kind.WAIT


def test_a_health_check_not_yet_passed_or_failing_waits_and_resets() -> None:
    _, window = assess([up(health="healthy")], Window(), now=100, started=100, policy=POLICY)
    verdict, window = assess([up(health="unhealthy")], window, now=105, started=100, policy=POLICY)
    assert verdict.kind is Kind.WAIT and "health check failing" in verdict.reason
    assert window.since is None
    verdict, _ = assess([up(health="starting")], Window(), now=100, started=100, policy=POLICY)
    assert verdict.kind is Kind.WAIT and "not passed yet" in verdict.reason


def test_unhealthy_once_min_healthy_no_longer_fits_before_the_deadline() -> None:
    failing = Observed("app", "running", "unhealthy", "r1", "failed 3 times, last exit code 1: 404")
    verdict, _ = assess([failing], Window(), now=151, started=100, policy=POLICY)
    assert verdict.kind is Kind.UNHEALTHY
    assert verdict.reason == (
        "app: health check failing: failed 3 times, last exit code 1: 404"
        " (not healthy for 10s within the 60s deadline)"
    )
    # fine again, but too late to last 10 s before the deadline
    verdict, _ = assess([up()], Window(), now=155, started=100, policy=POLICY)
    assert verdict.kind is Kind.UNHEALTHY and "healthy for 0s only, 10s needed" in verdict.reason


def test_an_exit_or_a_vanished_container_fails_at_once() -> None:
    verdict, _ = assess(
        [up(), Observed("side", "exited", "", "r1", "exit code 3")], Window(), 101, 100, POLICY
    )
    assert (verdict.kind, verdict.reason) == (Kind.UNHEALTHY, "side: exited: exit code 3")
    verdict, _ = assess([Observed("app", "")], Window(), 101, 100, POLICY)
    assert (verdict.kind, verdict.reason) == (Kind.UNHEALTHY, "app: container is gone")


def test_restarting_is_not_final() -> None:
    assert problem(Observed("app", "restarting", "", "r1", "exit code 1")) == (
        "app: restarting after exit code 1",
        False,
    )
    assert problem(up()) is None
    assert problem(up(health="healthy")) is None
