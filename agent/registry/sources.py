"""Where each blob came from (registry + repository), so a push can ask for a cross-repository mount.

Owner of the `registry_blob_sources` table. Pulls and pushes record every blob they moved; a push of the
same blob to another repository of the same registry then tries `POST …/uploads/?mount=<digest>&from=<repo>`
instead of sending the bytes. Only hints: a registry may refuse the mount and we upload as usual.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from agent.state.db import Database

_DDL = """
CREATE TABLE IF NOT EXISTS registry_blob_sources (
    digest     TEXT NOT NULL,
    registry   TEXT NOT NULL,
    repository TEXT NOT NULL,
    seen_at    REAL NOT NULL,
    PRIMARY KEY (digest, registry, repository)
)
"""


class BlobSources:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(_DDL)

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        now = time.time()
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT INTO registry_blob_sources (digest, registry, repository, seen_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (digest, registry, repository)"
                " DO UPDATE SET seen_at = excluded.seen_at",
                [(digest, registry, repository, now) for digest in digests],
            )

    def repositories(self, digest: str, registry: str) -> list[str]:
        """Repositories of `registry` known to hold `digest`, most recently seen first."""
        rows = self.db.query(
            "SELECT repository FROM registry_blob_sources WHERE digest = ? AND registry = ?"
            " ORDER BY seen_at DESC",
            (digest, registry),
        )
        return [str(row["repository"]) for row in rows]

    def forget(self, digests: Iterable[str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM registry_blob_sources WHERE digest = ?", [(d,) for d in digests])
