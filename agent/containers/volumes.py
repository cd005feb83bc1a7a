"""Named volumes: directories under `<data_root>/volumes/<name>/_data`, recorded in `volumes_records`.

Containers mount them by name (`-v name:/path`, created on first use as in Docker) or anonymously
(`-v /path`, removed with `rm -v`). A volume in use by any container cannot be removed.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import agent.log
from agent.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from agent.runtime.options import VOLUME_NAME_RE
from agent.state.db import Database
from agent.state.events import EventLog

log = agent.log.get(__name__)

DDL = """
CREATE TABLE IF NOT EXISTS volumes_records (
    name TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}',
    anonymous INTEGER NOT NULL DEFAULT 0
);
"""

UsersOf = Callable[[str], list[str]]


@dataclass(frozen=True)
class Volume:
    name: str
    mountpoint: Path
    created_at: datetime
    labels: dict[str, str] = field(default_factory=dict)
    anonymous: bool = False
    driver: str = "local"


class VolumeManager:
    def __init__(self, data_root: Path, db: Database, events: EventLog, users_of: UsersOf) -> None:
        """`users_of(name)` gives the IDs of the containers that mount a volume (those block `rm`)."""
        self.root = data_root / "volumes"
        self.db = db
        self.events = events
        self.users_of = users_of
        db.ensure_schema(DDL)

    def _volume(self, name: str, created: str, labels: str, anonymous: int) -> Volume:
        return Volume(
            name,
            self.root / name / "_data",
            datetime.fromisoformat(created),
            json.loads(labels),
            bool(anonymous),
        )

    def get(self, name: str) -> Volume:
        row = self.db.query_one("SELECT * FROM volumes_records WHERE name = ?", (name,))
        if row is None:
            raise NotFound(f"no such volume: {name}")
        return self._volume(row["name"], row["created_at"], row["labels"], row["anonymous"])

    def list_volumes(self) -> list[Volume]:
        rows = self.db.query("SELECT * FROM volumes_records ORDER BY name")
        return [self._volume(r["name"], r["created_at"], r["labels"], r["anonymous"]) for r in rows]

    def create(
        self,
        name: str = "",
        labels: dict[str, str] | None = None,
        *,
        anonymous: bool = False,
        exist_ok: bool = True,
    ) -> Volume:
        """Create (or, like Docker, return the existing) volume; an empty name makes an anonymous one."""
        if not name:
            name, anonymous = secrets.token_hex(32), True
        if not VOLUME_NAME_RE.match(name):
            raise InvalidArgument(f"invalid volume name {name!r}: use [a-zA-Z0-9][a-zA-Z0-9_.-]+")
        existing = self.db.query_one("SELECT * FROM volumes_records WHERE name = ?", (name,))
        if existing is not None:
            if not exist_ok:
                raise AlreadyExists(f"volume {name} already exists")
            return self.get(name)
        created = datetime.now(UTC)
        (self.root / name / "_data").mkdir(parents=True, exist_ok=True)
        (self.root / name / "_data").chmod(0o755)  # as Docker: not the agent's umask (0077)
        self.db.execute(
            "INSERT OR IGNORE INTO volumes_records (name, created_at, labels, anonymous) VALUES (?, ?, ?, ?)",
            (name, created.isoformat(), json.dumps(labels or {}, sort_keys=True), int(anonymous)),
        )
        self.events.append("volume", "create", name, {"driver": "local"})
        log.info("volume.created", volume=name, anonymous=anonymous)
        return self.get(name)

    def remove(self, name: str, *, force: bool = False) -> None:
        volume = self.get(name) if not force else None
        users = self.users_of(name)
        if users:
            raise FailedPrecondition(
                f"volume {name} is in use by container(s) {', '.join(u[:12] for u in users)}"
            )
        if (
            volume is None
            and self.db.query_one("SELECT 1 FROM volumes_records WHERE name = ?", (name,)) is None
        ):
            return
        self.db.execute("DELETE FROM volumes_records WHERE name = ?", (name,))
        shutil.rmtree(self.root / name, ignore_errors=True)
        self.events.append("volume", "destroy", name, {"driver": "local"})
        log.info("volume.removed", volume=name)

    def prune(self) -> list[str]:
        removed = []
        for v in self.list_volumes():
            if not self.users_of(v.name):
                self.remove(v.name)
                removed.append(v.name)
        return removed

    def size(self, volume: Volume) -> int:
        total = 0
        for p in volume.mountpoint.rglob("*"):
            try:
                if p.is_file() and not p.is_symlink():
                    total += p.stat().st_size
            except OSError:
                continue
        return total
