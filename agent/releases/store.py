"""The releases tables in the agent's SQLite database: per release its state, its revisions, its lease.

    releases_state      name → phase, active / previous / last known good / candidate, reason, policy,
                        verification times, and while `activating` the phase the switch lands in
    releases_revisions  (release, number) → the spec as received, its containers as run options, who
                        staged it, the image digests; spec_digest is unique per release (same spec = same
                        revision, so a repeated Stage returns the same number)
    releases_leases     release → token, owner, rollout id, expiry

Schema changes are additive (`ensure_columns`), as for the other tables. Every state change goes through
`transition`, checked against `phases.TRANSITIONS` inside the write transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from agent.errors import NotFound
from agent.releases.phases import Phase, Pointers, check_move, held_revisions
from agent.releases.spec import ContainerSpec, ReleaseSpec
from agent.state.db import Database

DDL = """
CREATE TABLE IF NOT EXISTS releases_state (
    name TEXT PRIMARY KEY,
    phase TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    previous INTEGER NOT NULL DEFAULT 0,
    last_known_good INTEGER NOT NULL DEFAULT 0,
    candidate INTEGER NOT NULL DEFAULT 0,
    reason TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    rollout_id TEXT NOT NULL DEFAULT '',
    policy TEXT NOT NULL DEFAULT '{}',
    verify_started_at TEXT,
    healthy_at TEXT,
    landing TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS releases_revisions (
    release TEXT NOT NULL,
    number INTEGER NOT NULL,
    spec BLOB NOT NULL,
    spec_digest TEXT NOT NULL,
    containers TEXT NOT NULL,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT '',
    rollout_id TEXT NOT NULL DEFAULT '',
    image_digests TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (release, number),
    UNIQUE (release, spec_digest)
);
CREATE TABLE IF NOT EXISTS releases_leases (
    release TEXT PRIMARY KEY,
    token TEXT NOT NULL,
    owner TEXT NOT NULL,
    rollout_id TEXT NOT NULL DEFAULT '',
    expires_at TEXT NOT NULL
);
"""


def now() -> datetime:
    return datetime.now(UTC)


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


@dataclass(frozen=True)
class Policy:
    """How a revision is verified and switched (VerifyPolicy, with the defaults filled in)."""

    min_healthy_s: float = 10.0
    deadline_s: float = 120.0
    start_first: bool = False

    def to_json(self) -> str:
        return json.dumps({"min_healthy_s": self.min_healthy_s, "deadline_s": self.deadline_s,
                           "start_first": self.start_first})  # fmt: skip

    @classmethod
    def from_json(cls, raw: str) -> Policy:
        d = json.loads(raw or "{}")
        return cls(float(d.get("min_healthy_s", 10.0)), float(d.get("deadline_s", 120.0)),
                   bool(d.get("start_first", False)))  # fmt: skip


@dataclass(frozen=True)
class ReleaseState:
    name: str
    phase: Phase
    pointers: Pointers = field(default_factory=Pointers)
    reason: str = ""
    updated_at: datetime = field(default_factory=now)
    rollout_id: str = ""
    policy: Policy = field(default_factory=Policy)
    verify_started_at: datetime | None = None
    healthy_at: datetime | None = None
    landing: Phase | None = None  # while ACTIVATING: where the switch lands


@dataclass(frozen=True)
class Revision:
    release: str
    number: int
    spec: ReleaseSpec
    created_at: datetime
    created_by: str = ""
    rollout_id: str = ""
    image_digests: dict[str, str] = field(default_factory=dict)  # container name → manifest digest

    @property
    def containers(self) -> tuple[ContainerSpec, ...]:
        return self.spec.containers


@dataclass(frozen=True)
class Lease:
    release: str
    token: str
    owner: str
    rollout_id: str
    expires_at: datetime


def _state(row: sqlite3.Row) -> ReleaseState:
    return ReleaseState(
        name=row["name"],
        phase=Phase(row["phase"]),
        pointers=Pointers(row["active"], row["previous"], row["last_known_good"], row["candidate"]),
        reason=row["reason"],
        updated_at=datetime.fromisoformat(row["updated_at"]),
        rollout_id=row["rollout_id"],
        policy=Policy.from_json(row["policy"]),
        verify_started_at=_time(row["verify_started_at"]),
        healthy_at=_time(row["healthy_at"]),
        landing=Phase(row["landing"]) if row["landing"] else None,
    )


def _revision(row: sqlite3.Row) -> Revision:
    containers = tuple(ContainerSpec.from_dict(c) for c in json.loads(row["containers"]))
    return Revision(
        release=row["release"],
        number=row["number"],
        spec=ReleaseSpec(row["release"], containers, row["spec_digest"], bytes(row["spec"])),
        created_at=datetime.fromisoformat(row["created_at"]),
        created_by=row["created_by"],
        rollout_id=row["rollout_id"],
        image_digests=json.loads(row["image_digests"]),
    )


class ReleaseStore:
    """The three releases tables. Built early by the composition root: ImageManager asks it which images
    releases hold (GC protection and the `rmi` message)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(DDL)

    # ---- state ---------------------------------------------------------------------------------------

    def get(self, name: str) -> ReleaseState:
        row = self.db.query_one("SELECT * FROM releases_state WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no such release: {name}")
        return _state(row)

    def find(self, name: str) -> ReleaseState | None:
        row = self.db.query_one("SELECT * FROM releases_state WHERE name = ?", (name,))
        return _state(row) if row is not None else None

    def all(self) -> list[ReleaseState]:
        return [_state(r) for r in self.db.query("SELECT * FROM releases_state ORDER BY name")]

    def create_staged(self, name: str) -> None:
        """The state row of a release's first Stage (nothing happens if it exists)."""
        self.db.execute(
            "INSERT OR IGNORE INTO releases_state (name, phase, updated_at) VALUES (?, ?, ?)",
            (name, str(Phase.STAGED), now().isoformat()),
        )

    def transition(
        self, name: str, to: Phase, *, check: Callable[[ReleaseState], None] | None = None, **changes: Any
    ) -> ReleaseState:
        """Move to `to` (checked against the table, and by `check` on the current state, inside the
        write transaction) with the other column changes; returns the new state."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT * FROM releases_state WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no such release: {name}")
            current = _state(row)
            if check is not None:
                check(current)
            check_move(current.phase, to)
            new = replace(current, phase=to, updated_at=now(), **changes)
            conn.execute(
                "UPDATE releases_state SET phase = ?, active = ?, previous = ?, last_known_good = ?,"
                " candidate = ?, reason = ?, updated_at = ?, rollout_id = ?, policy = ?,"
                " verify_started_at = ?, healthy_at = ?, landing = ? WHERE name = ?",
                (
                    str(new.phase),
                    new.pointers.active,
                    new.pointers.previous,
                    new.pointers.last_known_good,
                    new.pointers.candidate,
                    new.reason,
                    new.updated_at.isoformat(),
                    new.rollout_id,
                    new.policy.to_json(),
                    new.verify_started_at.isoformat() if new.verify_started_at else None,
                    new.healthy_at.isoformat() if new.healthy_at else None,
                    str(new.landing) if new.landing else "",
                    name,
                ),
            )
            return new

    # ---- revisions -----------------------------------------------------------------------------------

    def record_revision(self, spec: ReleaseSpec, *, created_by: str, rollout_id: str) -> tuple[int, bool]:
        """(number, created): the revision of this spec_digest, or a new one numbered max+1."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT number FROM releases_revisions WHERE release = ? AND spec_digest = ?",
                (spec.release, spec.spec_digest),
            ).fetchone()
            if row is not None:
                return int(row["number"]), False
            top = conn.execute(
                "SELECT MAX(number) AS n FROM releases_revisions WHERE release = ?", (spec.release,)
            ).fetchone()
            number = int(top["n"] or 0) + 1
            conn.execute(
                "INSERT INTO releases_revisions (release, number, spec, spec_digest, containers, created_at,"
                " created_by, rollout_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    spec.release,
                    number,
                    spec.raw,
                    spec.spec_digest,
                    json.dumps([c.to_dict() for c in spec.containers], sort_keys=True),
                    now().isoformat(),
                    created_by,
                    rollout_id,
                ),
            )
            return number, True

    def set_image_digests(self, release: str, number: int, digests: dict[str, str]) -> None:
        self.db.execute(
            "UPDATE releases_revisions SET image_digests = ? WHERE release = ? AND number = ?",
            (json.dumps(digests, sort_keys=True), release, number),
        )

    def revision(self, release: str, number: int) -> Revision:
        row = self.db.query_one(
            "SELECT * FROM releases_revisions WHERE release = ? AND number = ?", (release, number)
        )
        if row is None:
            raise NotFound(f"release {release} has no revision {number}")
        return _revision(row)

    def revisions(self, release: str) -> list[Revision]:
        rows = self.db.query(
            "SELECT * FROM releases_revisions WHERE release = ? ORDER BY number DESC", (release,)
        )
        return [_revision(r) for r in rows]

    def latest(self, release: str) -> int:
        row = self.db.query_one(
            "SELECT MAX(number) AS n FROM releases_revisions WHERE release = ?", (release,)
        )
        return int(row["n"] or 0) if row else 0

    # ---- images releases hold (GC roots) --------------------------------------------------------------

    def _holdings(self) -> list[tuple[str, int, str, str]]:
        """(release, revision, roles, image digest) for every revision a release may switch to without a
        pull (`phases.held_revisions`)."""
        out: list[tuple[str, int, str, str]] = []
        for state in self.all():
            for number, roles in held_revisions(state.pointers, self.latest(state.name)).items():
                try:
                    rev = self.revision(state.name, number)
                except NotFound:
                    continue
                out.extend((state.name, number, ", ".join(roles), d) for d in rev.image_digests.values())
        return out

    def image_digests(self) -> set[str]:
        """The digests of every image a release holds (kept by prune and GC)."""
        return {digest for _, _, _, digest in self._holdings()}

    def image_holder(self, digest: str) -> str | None:
        """Who holds `digest`, for `rmi`'s refusal: "release web (revision 3, last known good)"."""
        for release, number, roles, held in self._holdings():
            if held == digest:
                return f"release {release} (revision {number}, {roles})"
        return None

    # ---- leases --------------------------------------------------------------------------------------

    def lease(self, release: str) -> Lease | None:
        row = self.db.query_one("SELECT * FROM releases_leases WHERE release = ?", (release,))
        if row is None:
            return None
        return Lease(row["release"], row["token"], row["owner"], row["rollout_id"],
                     datetime.fromisoformat(row["expires_at"]))  # fmt: skip

    def put_lease(self, lease: Lease) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO releases_leases (release, token, owner, rollout_id, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (lease.release, lease.token, lease.owner, lease.rollout_id, lease.expires_at.isoformat()),
        )

    def delete_lease(self, release: str, token: str) -> bool:
        return (
            self.db.execute("DELETE FROM releases_leases WHERE release = ? AND token = ?", (release, token))
            > 0
        )
