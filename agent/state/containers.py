"""Container records in SQLite and the status state machine they obey.

Every status change goes through `ContainerStore.transition`, which checks the move against
`TRANSITIONS` inside a write transaction, so two racing operations cannot both win and no code path can
invent a move the rest of the agent does not expect.

    creating ─► created ─► running ⇄ paused
        │          │   ▲     │  ▲      │
        │          │   │     ▼  │      │
        │          │   └── restarting  │
        │          ▼         ▼         ▼
        └──────► exited ◄────┴─────────┘        any ─► removing ─► (row deleted)
                                                any ─► dead (cannot be cleaned up; rm -f retries)
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from agent.errors import AlreadyExists, Conflict, InvalidArgument, NotFound
from agent.state.db import Database


class Status(StrEnum):
    CREATING = "creating"  # bundle being built / conmon starting: cleaned up if the agent dies here
    CREATED = "created"
    RUNNING = "running"
    PAUSED = "paused"
    RESTARTING = "restarting"  # exited, waiting out the restart back-off
    EXITED = "exited"
    REMOVING = "removing"
    DEAD = "dead"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATING: frozenset({Status.CREATED, Status.REMOVING, Status.DEAD}),
    Status.CREATED: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING, Status.DEAD}),
    Status.RUNNING: frozenset(
        {Status.PAUSED, Status.EXITED, Status.RESTARTING, Status.REMOVING, Status.DEAD}
    ),
    Status.PAUSED: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING, Status.DEAD}),
    Status.RESTARTING: frozenset({Status.RUNNING, Status.EXITED, Status.REMOVING, Status.DEAD}),
    Status.EXITED: frozenset({Status.RUNNING, Status.RESTARTING, Status.REMOVING, Status.DEAD}),
    Status.REMOVING: frozenset({Status.DEAD}),
    Status.DEAD: frozenset({Status.REMOVING}),
}

ACTIVE = frozenset({Status.RUNNING, Status.PAUSED})


@dataclass(frozen=True)
class ContainerRecord:
    id: str
    name: str
    image: str  # the reference the user gave
    image_digest: str
    options: dict[str, Any]  # RunOptions as stored (agent.runtime.options.options_to_dict)
    created_at: datetime
    status: Status = Status.CREATING
    hostname: str = ""
    pid: int = 0
    conmon_pid: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    restart_count: int = 0
    stopped_by_user: bool = False  # an explicit stop: `unless-stopped` and `always` honour it
    health_status: str = ""  # "", starting, healthy, unhealthy
    health_failing_streak: int = 0
    health_log: list[dict[str, Any]] = field(default_factory=list)
    boot_id: str = ""  # host boot the current run belongs to
    labels: dict[str, str] = field(default_factory=dict)
    lowerdirs: list[str] = field(default_factory=list)  # the image's snapshot dirs, top-most first
    command: list[str] = field(default_factory=list)  # the process args after image defaults
    # who froze the container: "user" (`pause`) or "commit"; written before the freeze, so an agent
    # killed mid-commit thaws at its next start what only the commit froze
    paused_by: str = ""
    # the restart back-off (seconds) of the latest policy restart: kept so a crash-looping container
    # goes on backing off across agent restarts
    restart_delay: float = 0.0


_JSON_FIELDS = {"options", "health_log", "labels", "lowerdirs", "command"}
_TIME_FIELDS = {"created_at", "started_at", "finished_at"}
_BOOL_FIELDS = {"oom_killed", "stopped_by_user"}

DDL = """
CREATE TABLE IF NOT EXISTS containers_records (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    image TEXT NOT NULL,
    image_digest TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at TEXT NOT NULL,
    status TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    conmon_pid INTEGER NOT NULL DEFAULT 0,
    started_at TEXT,
    finished_at TEXT,
    exit_code INTEGER,
    oom_killed INTEGER NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    stopped_by_user INTEGER NOT NULL DEFAULT 0,
    health_status TEXT NOT NULL DEFAULT '',
    health_failing_streak INTEGER NOT NULL DEFAULT 0,
    health_log TEXT NOT NULL DEFAULT '[]',
    boot_id TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}',
    lowerdirs TEXT NOT NULL DEFAULT '[]',
    command TEXT NOT NULL DEFAULT '[]',
    paused_by TEXT NOT NULL DEFAULT '',
    restart_delay REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS containers_records_status ON containers_records(status);
"""

# columns added after the first release (older databases get them at start-up)
ADDED_COLUMNS = {
    "paused_by": "TEXT NOT NULL DEFAULT ''",
    "restart_delay": "REAL NOT NULL DEFAULT 0",
}


def _encode(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return json.dumps(value, sort_keys=True)
    if name in _TIME_FIELDS:
        return value.isoformat() if value is not None else None
    if name in _BOOL_FIELDS:
        return int(bool(value))
    if name == "status":
        return str(value)
    return value


def _decode(row: sqlite3.Row) -> ContainerRecord:
    values: dict[str, Any] = {}
    for f in fields(ContainerRecord):
        raw = row[f.name]
        if f.name in _JSON_FIELDS:
            values[f.name] = json.loads(raw)
        elif f.name in _TIME_FIELDS:
            values[f.name] = datetime.fromisoformat(raw) if raw else None
        elif f.name in _BOOL_FIELDS:
            values[f.name] = bool(raw)
        elif f.name == "status":
            values[f.name] = Status(raw)
        else:
            values[f.name] = raw
    return ContainerRecord(**values)


_COLUMNS = [f.name for f in fields(ContainerRecord)]


class ContainerStore:
    """The `containers_records` table. Lookups accept IDs, unique ID prefixes and names, as Docker does."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(DDL)
        db.ensure_columns("containers_records", ADDED_COLUMNS)

    def insert(self, record: ContainerRecord) -> None:
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    f"INSERT INTO containers_records ({cols}) VALUES ({marks})",
                    [_encode(c, getattr(record, c)) for c in _COLUMNS],
                )
        except sqlite3.IntegrityError as exc:
            if self.db.query_one("SELECT 1 FROM containers_records WHERE name = ?", (record.name,)):
                raise AlreadyExists(
                    f'the container name "{record.name}" is already in use; remove or rename that container'
                ) from exc
            raise AlreadyExists(f"container ID {record.id} already exists") from exc

    def get(self, container_id: str) -> ContainerRecord:
        row = self.db.query_one("SELECT * FROM containers_records WHERE id = ?", (container_id,))
        if row is None:
            raise NotFound(f"no such container: {container_id}")
        return _decode(row)

    def find(self, ref: str) -> ContainerRecord:
        """Docker's order: full ID, then exact name, then a unique ID prefix."""
        ref = ref.strip().lstrip("/")
        if not ref:
            raise InvalidArgument("a container name or ID is required")
        row = self.db.query_one("SELECT * FROM containers_records WHERE id = ?", (ref,))
        if row is None:
            row = self.db.query_one("SELECT * FROM containers_records WHERE name = ?", (ref,))
        if row is None and all(c in "0123456789abcdef" for c in ref):
            rows = self.db.query(
                "SELECT * FROM containers_records WHERE id >= ? AND id < ? LIMIT 2", (ref, ref + "g")
            )
            if len(rows) > 1:
                raise InvalidArgument(
                    f"multiple containers match the ID prefix {ref!r}; give more characters"
                )
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no such container: {ref}")
        return _decode(row)

    def all(self, statuses: frozenset[Status] | None = None) -> list[ContainerRecord]:
        rows = self.db.query("SELECT * FROM containers_records ORDER BY created_at DESC, id")
        out = [_decode(r) for r in rows]
        return [r for r in out if statuses is None or r.status in statuses]

    def update(self, container_id: str, **changes: Any) -> ContainerRecord:
        """Change non-status fields (health, pids, …) of an existing record."""
        if "status" in changes:
            raise InvalidArgument("status changes go through transition()")
        with self.db.transaction() as conn:
            return self._apply(conn, container_id, None, changes)

    def transition(
        self, container_id: str, to: Status, *, allowed_from: frozenset[Status] | None = None, **changes: Any
    ) -> ContainerRecord:
        """Move to `to` if the state machine (and `allowed_from`, when given) allows it; else Conflict."""
        with self.db.transaction() as conn:
            row = conn.execute(
                "SELECT status FROM containers_records WHERE id = ?", (container_id,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no such container: {container_id}")
            current = Status(row["status"])
            if to not in TRANSITIONS[current] or (allowed_from is not None and current not in allowed_from):
                raise Conflict(f"container {container_id[:12]} is {current}, cannot become {to}")
            return self._apply(conn, container_id, to, changes)

    def _apply(
        self, conn: sqlite3.Connection, container_id: str, to: Status | None, changes: dict[str, Any]
    ) -> ContainerRecord:
        if to is not None:
            changes = {**changes, "status": to}
        unknown = set(changes) - set(_COLUMNS)
        if unknown:
            raise InvalidArgument(f"unknown container fields: {sorted(unknown)}")
        if changes:
            assignments = ", ".join(f"{k} = ?" for k in changes)
            conn.execute(
                f"UPDATE containers_records SET {assignments} WHERE id = ?",
                [*(_encode(k, v) for k, v in changes.items()), container_id],
            )
        row = conn.execute("SELECT * FROM containers_records WHERE id = ?", (container_id,)).fetchone()
        if row is None:
            raise NotFound(f"no such container: {container_id}")
        return _decode(row)

    def delete(self, container_id: str) -> None:
        self.db.execute("DELETE FROM containers_records WHERE id = ?", (container_id,))

    def names(self) -> set[str]:
        return {r["name"] for r in self.db.query("SELECT name FROM containers_records")}

    def image_digests(self) -> set[str]:
        return {
            r["image_digest"] for r in self.db.query("SELECT DISTINCT image_digest FROM containers_records")
        }


def now() -> datetime:
    return datetime.now(UTC)


def with_status(record: ContainerRecord, status: Status) -> ContainerRecord:
    return replace(record, status=status)
