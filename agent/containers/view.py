"""A read-only view of the container records, for the managers built before the container manager.

Images (`rmi`, prune, GC keep what containers use), volumes (`volume rm` refuses one in use) and networks
(`network connect`, `port`, orphan cleanup) only read the `containers_records` table: they get this view
at construction from the composition root, instead of a callback assigned once the container manager
exists.
"""

from __future__ import annotations

from agent.state.containers import ACTIVE, ContainerRecord, ContainerStore, Status
from agent.state.db import Database


class ContainerView:
    def __init__(self, db: Database) -> None:
        self.store = ContainerStore(db)

    def find(self, ref: str) -> ContainerRecord:
        return self.store.find(ref)

    def list_containers(self, *, all_: bool = True) -> list[ContainerRecord]:
        records = self.store.all()
        return records if all_ else [r for r in records if r.status in ACTIVE | {Status.RESTARTING}]

    def counts(self) -> tuple[int, int]:
        """(containers, running containers)."""
        records = self.store.all()
        return len(records), sum(1 for r in records if r.status in ACTIVE)

    def image_digests(self) -> set[str]:
        """The digests of the images containers were created from."""
        return self.store.image_digests()

    def volume_users(self, volume: str) -> list[str]:
        """The IDs of the containers that mount `volume`."""
        return [
            rec.id
            for rec in self.store.all()
            for m in rec.options.get("mounts", ())
            if m.get("type") == "volume" and m.get("source") == volume
        ]
