"""`dockyard -H SEL release ls`: per host, each release the agent keeps — its active revision, state
(committed, verifying, unconfirmed, reverted with the reason, …), last known good, and the image digests it
runs. Releases are state on the agent (agent/releases/); `rollout` (commands/rollout.py) changes it.
"""

from __future__ import annotations

from typing import Any

import click

from controller import output
from controller.api.releases import ReleasesApi, ReleaseState
from controller.app import App, HostOutput
from controller.client import AgentClient


@click.group()
def release() -> None:
    """Releases the selected hosts run (what `rollout` changes)."""


@release.command("ls")
@click.pass_obj
def ls(app: App) -> None:
    """Per host: release, active revision, state, last known good, digests, reason."""

    async def op(client: AgentClient, out: HostOutput) -> list[ReleaseState]:
        return await ReleasesApi(client).list()

    app.run(op, table=state_table, to_json=lambda states: [state_json(s) for s in states], idempotent=True)


def state_json(s: ReleaseState) -> dict[str, Any]:
    return {
        "release": s.release,
        "phase": s.phase,
        "active_revision": s.active_revision,
        "previous_revision": s.previous_revision,
        "last_known_good": s.last_known_good,
        "candidate_revision": s.candidate_revision,
        "reason": s.reason,
        "image_digests": dict(s.image_digests),
        "lease": s.lease,
        "rollout_id": s.rollout_id,
        "updated_at": s.updated_at.isoformat() if s.updated_at else None,
    }


def state_table(states: list[ReleaseState]) -> output.Table:
    columns = ["RELEASE", "REVISION", "STATE", "LAST KNOWN GOOD", "DIGESTS", "REASON"]
    rows = [
        [
            s.release,
            s.active_revision or "",
            s.phase,
            s.last_known_good or "",
            " ".join(f"{c}={d.split(':', 1)[-1][:12]}" for c, d in sorted(s.image_digests.items())),
            s.reason,
        ]
        for s in states
    ]
    return output.Table(columns, rows)
