"""The build cache: which result a build step had, keyed by everything the result depends on.

A step's key chains the key of the step before it (the parent: a stage starts from its base image's
config digest, or `scratch` and the platform), the instruction with its arguments expanded (and, for RUN,
the build args in force), and for COPY/ADD the content hash of the files it reads. Equal keys mean equal
results, so a hit reuses the step's layer (and its history timestamp, which keeps an unchanged rebuild's
image ID unchanged) without running anything.

Rows live in the `build_cache` table (owned here). A row whose layer blob was garbage-collected since is
a miss and is dropped when seen.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from agent.state.db import Database

_DDL = """
CREATE TABLE IF NOT EXISTS build_cache (
    key          TEXT PRIMARY KEY,
    created      TEXT NOT NULL,
    diff_id      TEXT,
    layer_digest TEXT,
    layer_size   INTEGER NOT NULL DEFAULT 0,
    media_type   TEXT,
    description  TEXT NOT NULL DEFAULT '',
    last_used    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS build_cache_layer ON build_cache(layer_digest)
"""


@dataclass(frozen=True)
class CacheEntry:
    """A step's result: its history timestamp and, if it changed the filesystem, its layer."""

    key: str
    created: str
    diff_id: str | None = None
    layer_digest: str | None = None
    layer_size: int = 0
    media_type: str | None = None
    description: str = ""

    @property
    def has_layer(self) -> bool:
        return self.diff_id is not None


def _digest(payload: Any) -> str:
    data = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return "sha256:" + hashlib.sha256(data).hexdigest()


def base_key(base: str, platform: str) -> str:
    """The parent key of a stage's first step: the base image's config digest, or "scratch"."""
    return _digest({"base": base, "platform": platform})


def step_key(parent: str, instruction: dict[str, Any], inputs: str = "") -> str:
    """The key of a step: its parent's key, the expanded instruction and a hash of what it reads."""
    return _digest({"parent": parent, "instruction": instruction, "inputs": inputs})


class BuildCache:
    """Owner of the `build_cache` table."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(_DDL)

    def get(self, key: str) -> CacheEntry | None:
        row = self.db.query_one("SELECT * FROM build_cache WHERE key = ?", (key,))
        if row is None:
            return None
        return CacheEntry(
            key=row["key"],
            created=row["created"],
            diff_id=row["diff_id"],
            layer_digest=row["layer_digest"],
            layer_size=int(row["layer_size"]),
            media_type=row["media_type"],
            description=row["description"],
        )

    def touch(self, key: str) -> None:
        self.db.execute("UPDATE build_cache SET last_used = ? WHERE key = ?", (time.time(), key))

    def put(self, entry: CacheEntry) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO build_cache"
            " (key, created, diff_id, layer_digest, layer_size, media_type, description, last_used)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                entry.key,
                entry.created,
                entry.diff_id,
                entry.layer_digest,
                entry.layer_size,
                entry.media_type,
                entry.description[:300],
                time.time(),
            ),
        )

    def delete(self, key: str) -> None:
        self.db.execute("DELETE FROM build_cache WHERE key = ?", (key,))

    def count(self) -> int:
        row = self.db.query_one("SELECT COUNT(*) AS n FROM build_cache")
        return int(row["n"]) if row is not None else 0

    def prune(self, older_than_seconds: float = 0.0) -> int:
        """Forget entries not used for `older_than_seconds` (all with 0); returns how many."""
        cutoff = time.time() - older_than_seconds
        with self.db.transaction() as conn:
            return conn.execute("DELETE FROM build_cache WHERE last_used <= ?", (cutoff,)).rowcount
