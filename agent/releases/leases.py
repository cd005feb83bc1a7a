"""Leases (pure decisions): one rollout at a time drives a release on this host.

A lease names its owner and rollout and expires; the rollout renews it by asking again with the same
rollout id (the token stays). While it is unexpired, Stage/Activate/Commit/Rollback of the release need
its token; another rollout is refused with the holder's name. An expired lease is taken over only when
asked (`takeover`: `rollout resume`), so a crashed rollout's release is not silently grabbed by a new one.
No lease, or an expired one, lets calls without a token through.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from agent.errors import FailedPrecondition, InvalidArgument
from agent.releases.store import Lease

DEFAULT_TTL = 60.0
MAX_TTL = 24 * 3600.0


def when(t: datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def describe(lease: Lease) -> str:
    """`<owner> (rollout <id>), until <time>` (ReleaseState.lease)."""
    rollout = f" (rollout {lease.rollout_id})" if lease.rollout_id else ""
    return f"{lease.owner}{rollout}, until {when(lease.expires_at)}"


def held_by(lease: Lease) -> str:
    rollout = f" (rollout {lease.rollout_id})" if lease.rollout_id else ""
    return f"{lease.owner}{rollout}"


def grant(
    current: Lease | None,
    *,
    release: str,
    owner: str,
    rollout_id: str,
    ttl: float,
    takeover: bool,
    now: datetime,
    token: str | None = None,
) -> Lease:
    """The lease after a Lease call, or FailedPrecondition naming the holder."""
    if ttl < 0 or ttl > MAX_TTL:
        raise InvalidArgument(f"lease ttl must be between 0 and {MAX_TTL:.0f}s (0 = {DEFAULT_TTL:.0f}s)")
    expires = now + timedelta(seconds=ttl or DEFAULT_TTL)
    if current is not None and rollout_id and current.rollout_id == rollout_id:
        # a renewal, maybe from another controller resuming the same rollout
        return Lease(release, current.token, owner, rollout_id, expires)
    if current is not None and current.expires_at > now:
        raise FailedPrecondition(
            f"release {release} is held by {held_by(current)} until {when(current.expires_at)}"
        )
    if current is not None and not takeover:
        raise FailedPrecondition(
            f"release {release} was held by {held_by(current)} until {when(current.expires_at)} (expired);"
            " take the lease over to continue (rollout resume)"
        )
    return Lease(release, token or secrets.token_hex(16), owner, rollout_id, expires)


def check_token(current: Lease | None, token: str, *, release: str, now: datetime) -> None:
    """FailedPrecondition unless the call may act on the release: no live lease, or its token."""
    if current is None or current.expires_at <= now or token == current.token:
        return
    raise FailedPrecondition(
        f"release {release} is held by {held_by(current)} until {when(current.expires_at)}"
    )
