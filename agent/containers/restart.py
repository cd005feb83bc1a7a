"""Restart policy decisions (pure): whether a container that just exited runs again, and after what delay.

Docker's rules: `no` never; `on-failure[:N]` on a non-zero exit, at most N times when N > 0; `always`
and `unless-stopped` unless the user stopped it. The back-off starts at 100 ms and doubles per
consecutive restart up to one minute; a run that lasted at least 10 s resets it. The manager stores the
current back-off with the container, so it goes on across agent restarts instead of starting over.
"""

from __future__ import annotations

from agent.runtime.options import RestartMode, RestartPolicy

INITIAL_DELAY = 0.1
MAX_DELAY = 60.0
RESET_AFTER = 10.0


def should_restart(policy: RestartPolicy, exit_code: int, restart_count: int, stopped_by_user: bool) -> bool:
    if stopped_by_user or policy.mode is RestartMode.NO:
        return False
    if policy.mode is RestartMode.ON_FAILURE:
        if exit_code == 0:
            return False
        return policy.max_retries == 0 or restart_count < policy.max_retries
    return True


def next_delay(previous: float, ran_for: float) -> float:
    """Delay before the next start, given the previous delay and how long the last run lasted."""
    if previous <= 0 or ran_for >= RESET_AFTER:
        return INITIAL_DELAY
    return min(previous * 2, MAX_DELAY)


def remaining(delay: float, since_exit: float) -> float:
    """What is left of a back-off `delay` once `since_exit` seconds passed since the exit (an agent that
    was down meanwhile restarts at once, but the next back-off is still the doubled one)."""
    return min(max(delay - max(since_exit, 0.0), 0.0), delay)


def restart_at_agent_start(policy: RestartPolicy, stopped_by_user: bool, was_running: bool) -> bool:
    """After an agent or host restart: `always` and `unless-stopped` containers come back unless the user
    stopped them; other policies only restart containers whose run ended while the agent was down."""
    if stopped_by_user:
        return False
    if policy.mode in (RestartMode.ALWAYS, RestartMode.UNLESS_STOPPED):
        return True
    return was_running and policy.mode is RestartMode.ON_FAILURE
