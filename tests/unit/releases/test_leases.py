"""Lease decisions (pure): grant, renew, refuse naming the holder, takeover after expiry, token checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agent.errors import FailedPrecondition, InvalidArgument
from agent.releases import leases
from agent.releases.store import Lease

T0 = datetime(2024, 5, 6, 12, 0, 0, tzinfo=UTC)


def grant(current: Lease | None, rollout: str, *, at: datetime = T0, takeover: bool = False) -> Lease:
    return leases.grant(
        current, release="web", owner="alice", rollout_id=rollout, ttl=60, takeover=takeover, now=at
    )


def test_free_release_is_granted_and_the_same_rollout_renews_with_the_same_token() -> None:
    first = grant(None, "r-1")
    assert first.expires_at == T0 + timedelta(seconds=60)
    renewed = grant(first, "r-1", at=T0 + timedelta(seconds=30))
    assert renewed.token == first.token
    assert renewed.expires_at == T0 + timedelta(seconds=90)


def test_another_rollout_is_refused_with_the_holder() -> None:
    first = grant(None, "r-7")
    with pytest.raises(FailedPrecondition) as err:
        grant(first, "r-8", at=T0 + timedelta(seconds=10), takeover=True)
    assert str(err.value) == "release web is held by alice (rollout r-7) until 2024-05-06 12:01:00 UTC"


def test_an_expired_lease_needs_takeover() -> None:
    first = grant(None, "r-7")
    later = T0 + timedelta(seconds=61)
    with pytest.raises(FailedPrecondition, match=r"was held by alice \(rollout r-7\).*expired"):
        grant(first, "r-8", at=later)
    taken = grant(first, "r-8", at=later, takeover=True)
    assert taken.rollout_id == "r-8" and taken.token != first.token


def test_ttl_bounds() -> None:
    with pytest.raises(InvalidArgument):
        leases.grant(None, release="web", owner="a", rollout_id="r", ttl=-1, takeover=False, now=T0)
    default = leases.grant(None, release="web", owner="a", rollout_id="r", ttl=0, takeover=False, now=T0)
    assert default.expires_at == T0 + timedelta(seconds=leases.DEFAULT_TTL)


def test_token_checks() -> None:
    lease = grant(None, "r-1")
    leases.check_token(None, "", release="web", now=T0)
    leases.check_token(lease, lease.token, release="web", now=T0)
    leases.check_token(lease, "", release="web", now=T0 + timedelta(seconds=61))  # expired: free
    with pytest.raises(FailedPrecondition, match="held by alice"):
        leases.check_token(lease, "", release="web", now=T0)
    with pytest.raises(FailedPrecondition):
        leases.check_token(lease, "not-the-token", release="web", now=T0)
    assert leases.describe(lease) == "alice (rollout r-1), until 2024-05-06 12:01:00 UTC"
