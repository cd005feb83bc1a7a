"""Unpacked layers ("snapshots") keyed by chain ID, each usable as an overlayfs lower directory.

Layout under `root` (normally `<data_root>/snapshots`):

    <chain-id-hex>/fs          the layer's own files (overlayfs whiteouts in place), a lowerdir
    <chain-id-hex>/meta.json   chain ID, diff ID, size: lets the SQLite rows be rebuilt
    .tmp/<random>/fs           being unpacked; renamed into place by `commit`, swept at start

A snapshot holds one layer's diff only: the rootfs of an image is the overlay of its snapshots' `fs`
directories, top-most first (`lowerdirs`). A chain ID names a layer *and everything under it*, so equal
chain IDs are interchangeable between images and each is unpacked once. Metadata rows live in the
`images_snapshots` table; the directories are the truth and `reconcile` realigns the rows with them.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import agent.log
from agent.errors import InvalidArgument, NotFound
from agent.images.content import validate_digest
from agent.libc import LIBC
from agent.oci.files import fsync_dir
from agent.state.db import Database

log = agent.log.get(__name__)

_DDL = """
CREATE TABLE IF NOT EXISTS images_snapshots (
    chain_id   TEXT PRIMARY KEY,
    diff_id    TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at REAL NOT NULL
)
"""


def chain_ids(diff_ids: list[str]) -> list[str]:
    """OCI chain IDs: ChainID(L0) = DiffID(L0); ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))

    (the image spec's algorithm, so equal layer stacks share one snapshot whichever image brought them).
    """
    out: list[str] = []
    for diff_id in diff_ids:
        validate_digest(diff_id)
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


@dataclass(frozen=True)
class SnapshotInfo:
    chain_id: str
    diff_id: str
    size: int
    created_at: float


def _syncfs(path: Path) -> None:
    """Flush the filesystem holding `path` (one call instead of an fsync per unpacked file)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        LIBC.syncfs(fd)
    finally:
        os.close(fd)


class SnapshotStore:
    """Owner of `<root>` and of the `images_snapshots` table."""

    def __init__(self, root: Path, db: Database, *, durable: bool = True) -> None:
        self.root = root
        self.db = db
        self.durable = durable
        self._tmp = root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        db.ensure_schema(_DDL)

    def _dir(self, chain_id: str) -> Path:
        algo, hexpart = validate_digest(chain_id)
        if algo != "sha256":
            raise InvalidArgument(f"chain IDs are sha256 digests, got {chain_id!r}")
        return self.root / hexpart

    def has(self, chain_id: str) -> bool:
        return (self._dir(chain_id) / "fs").is_dir()

    def path(self, chain_id: str) -> Path:
        """The snapshot's `fs` directory (an overlayfs lowerdir); NotFound if not unpacked."""
        p = self._dir(chain_id) / "fs"
        if not p.is_dir():
            raise NotFound(f"snapshot {chain_id} not found")
        return p

    def prepare(self, chain_id: str) -> Path:
        """A fresh, empty directory to unpack the layer of `chain_id` into; pass it to `commit` or `abort`."""
        self._dir(chain_id)
        work = self._tmp / f"{chain_id.split(':', 1)[1][:16]}-{secrets.token_hex(6)}"
        work.mkdir(parents=True)
        fs = work / "fs"
        fs.mkdir(mode=0o755)
        return fs

    def abort(self, tmp: Path) -> None:
        """Throw away a prepared directory (after a failed unpack)."""
        work = tmp.parent
        if work.parent != self._tmp:
            raise InvalidArgument(f"{tmp} is not a prepared snapshot directory")
        shutil.rmtree(work, ignore_errors=True)

    def commit(self, chain_id: str, tmp: Path, diff_id: str, size: int) -> None:
        """Publish a prepared directory as the snapshot of `chain_id` (atomic rename) and record it.

        If another operation committed the same chain ID first, `tmp` is discarded: both are the same layer.
        """
        final = self._dir(chain_id)
        validate_digest(diff_id)
        work = tmp.parent
        if work.parent != self._tmp or not tmp.is_dir():
            raise InvalidArgument(f"{tmp} is not a prepared snapshot directory")
        if final.is_dir():
            shutil.rmtree(work, ignore_errors=True)
            self._record(chain_id, diff_id, size)
            return
        meta = {"chain_id": chain_id, "diff_id": diff_id, "size": size, "created_at": time.time()}
        (work / "meta.json").write_text(json.dumps(meta))
        if self.durable:
            _syncfs(work)
        try:
            os.rename(work, final)
        except OSError:
            if final.is_dir():  # lost a race with an identical commit
                shutil.rmtree(work, ignore_errors=True)
            else:
                raise
        fsync_dir(self.root)
        self._record(chain_id, diff_id, size)
        log.info("snapshot.committed", chain_id=chain_id, diff_id=diff_id, size=size)

    def _record(self, chain_id: str, diff_id: str, size: int) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO images_snapshots (chain_id, diff_id, size, created_at)"
            " VALUES (?, ?, ?, ?)",
            (chain_id, diff_id, size, time.time()),
        )

    def lowerdirs(self, chain_ids: list[str]) -> list[Path]:
        """The `fs` dirs of an image's chain, top-most first (overlayfs `lowerdir=` order)."""
        return [self.path(c) for c in reversed(chain_ids)]

    def get(self, chain_id: str) -> SnapshotInfo:
        row = self.db.query_one("SELECT * FROM images_snapshots WHERE chain_id = ?", (chain_id,))
        if row is None or not self.has(chain_id):
            raise NotFound(f"snapshot {chain_id} not found")
        return SnapshotInfo(row["chain_id"], row["diff_id"], row["size"], row["created_at"])

    def list(self) -> list[SnapshotInfo]:
        rows = self.db.query("SELECT * FROM images_snapshots ORDER BY created_at")
        return [SnapshotInfo(r["chain_id"], r["diff_id"], r["size"], r["created_at"]) for r in rows]

    def remove(self, chain_id: str) -> None:
        """Delete a snapshot: renamed away first (atomic disappearance), then its tree removed."""
        final = self._dir(chain_id)
        self.db.execute("DELETE FROM images_snapshots WHERE chain_id = ?", (chain_id,))
        if not final.exists():
            return
        doomed = self._tmp / f"rm-{final.name[:16]}-{secrets.token_hex(6)}"
        os.rename(final, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        log.info("snapshot.removed", chain_id=chain_id)

    def reconcile(self) -> None:
        """At start: drop half-done work, rebuild rows for directories, drop rows without directories."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        on_disk: dict[str, tuple[str, int]] = {}
        for entry in os.scandir(self.root):
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            chain_id = f"sha256:{entry.name}"
            try:
                meta = json.loads((Path(entry.path) / "meta.json").read_text())
                on_disk[chain_id] = (str(meta["diff_id"]), int(meta["size"]))
            except (OSError, ValueError, KeyError, TypeError):
                log.warning("snapshot.unreadable_removed", chain_id=chain_id)
                shutil.rmtree(entry.path, ignore_errors=True)
        rows = {r["chain_id"] for r in self.db.query("SELECT chain_id FROM images_snapshots")}
        with self.db.transaction() as conn:
            for chain_id in rows - on_disk.keys():
                conn.execute("DELETE FROM images_snapshots WHERE chain_id = ?", (chain_id,))
            for chain_id in on_disk.keys() - rows:
                diff_id, size = on_disk[chain_id]
                conn.execute(
                    "INSERT INTO images_snapshots (chain_id, diff_id, size, created_at) VALUES (?, ?, ?, ?)",
                    (chain_id, diff_id, size, time.time()),
                )

    def total_size(self) -> int:
        row = self.db.query_one("SELECT COALESCE(SUM(size), 0) AS total FROM images_snapshots")
        return int(row["total"]) if row is not None else 0
