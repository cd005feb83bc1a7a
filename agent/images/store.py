"""Image metadata in SQLite: which manifests the agent holds and which names point at them.

Two tables, both owned here:

    images_records   one row per image (manifest digest): media type, platform, config, layers, chain IDs
    images_names     name → manifest digest; a record with no name is "dangling" (`<none>` in listings)

Names are normalized references (`docker.io/library/busybox:latest`, see `agent.oci.reference`). A
record and everything it lists (manifest, config and layer blobs, snapshots of its chain IDs) are the GC
roots: `referenced_blobs` and `referenced_chain_ids` say what must stay.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from agent.errors import InvalidArgument, NotFound
from agent.oci.reference import Reference
from agent.state.db import Database

_DDL = """
CREATE TABLE IF NOT EXISTS images_records (
    digest        TEXT PRIMARY KEY,
    media_type    TEXT NOT NULL,
    platform      TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    size          INTEGER NOT NULL,
    content_size  INTEGER NOT NULL,
    created       TEXT,
    chain_ids     TEXT NOT NULL,
    diff_ids      TEXT NOT NULL,
    layers        TEXT NOT NULL,
    index_digest  TEXT,
    stored_at     REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS images_names (
    name   TEXT PRIMARY KEY,
    digest TEXT NOT NULL REFERENCES images_records(digest) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS images_names_digest ON images_names(digest);
CREATE TABLE IF NOT EXISTS images_layer_sizes (
    diff_id  TEXT PRIMARY KEY,
    tar_size INTEGER NOT NULL
)
"""

_FULL_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_ID_PREFIX_RE = re.compile(r"^(sha256:)?[0-9a-f]{4,64}$")


@dataclass(frozen=True)
class Layer:
    """A layer descriptor as the manifest lists it (compressed blob)."""

    digest: str
    media_type: str
    size: int

    def to_json(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True)
class ImageRecord:
    """One image under one name. `name` is "" for a dangling image (or when looked up by ID).

    `digest` is the manifest digest (platform-specific); `index_digest` the index it was chosen from, if
    any. `size` is the uncompressed size of the layers (what `images` shows); `content_size` the bytes of
    manifest, config and layer blobs in the content store.
    """

    name: str
    digest: str
    media_type: str
    platform: str
    config_digest: str
    size: int
    created: datetime | None
    chain_ids: tuple[str, ...]
    diff_ids: tuple[str, ...] = ()
    layers: tuple[Layer, ...] = ()
    index_digest: str | None = None
    content_size: int = 0
    stored_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def id(self) -> str:
        """The image ID users see (Docker's convention: the config digest)."""
        return self.config_digest

    @property
    def short_id(self) -> str:
        return self.config_digest.split(":", 1)[-1][:12]

    @property
    def repository(self) -> str:
        """Familiar repository for listings (`busybox`), "<none>" when dangling."""
        if not self.name:
            return "<none>"
        ref = Reference.parse(self.name)
        familiar = ref.familiar()
        return familiar.split("@", 1)[0].rsplit(":", 1)[0] if ref.tag else familiar.split("@", 1)[0]

    @property
    def tag(self) -> str:
        if not self.name:
            return "<none>"
        return Reference.parse(self.name).tag or "<none>"

    def blobs(self) -> set[str]:
        out = {self.digest, self.config_digest, *(layer.digest for layer in self.layers)}
        if self.index_digest:
            out.add(self.index_digest)
        return out


def normalize_name(text: str) -> str:
    """The stored form of a user-typed name; InvalidArgument if it is not a valid reference."""
    ref = Reference.parse(text)
    return str(ref)


def _dt(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def parse_created(value: object) -> datetime | None:
    """An image config's `created` (RFC 3339, maybe with nanoseconds) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    m = re.match(r"^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$", text)
    if m:
        frac = (m.group(2) or "")[:7]
        text = m.group(1) + frac + (m.group(3) or "")
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


class ImageStore:
    """Names and image records; the one owner of the `images_*` metadata tables."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.ensure_schema(_DDL)

    def _row_to_record(self, row: sqlite3.Row, name: str) -> ImageRecord:
        return ImageRecord(
            name=name,
            digest=row["digest"],
            media_type=row["media_type"],
            platform=row["platform"],
            config_digest=row["config_digest"],
            size=row["size"],
            created=_dt(row["created"]),
            chain_ids=tuple(json.loads(row["chain_ids"])),
            diff_ids=tuple(json.loads(row["diff_ids"])),
            layers=tuple(Layer(**layer) for layer in json.loads(row["layers"])),
            index_digest=row["index_digest"],
            content_size=row["content_size"],
            stored_at=datetime.fromtimestamp(row["stored_at"], UTC),
        )

    def put(self, record: ImageRecord) -> str | None:
        """Store a record and, if it has a name, point the name at it.

        Returns the digest the name pointed at before when that was a different image (now maybe dangling).
        """
        name = normalize_name(record.name) if record.name else ""
        layers = [{"digest": x.digest, "media_type": x.media_type, "size": x.size} for x in record.layers]
        with self.db.transaction() as conn:
            conn.execute(
                """INSERT INTO images_records (digest, media_type, platform, config_digest, size,
                       content_size, created, chain_ids, diff_ids, layers, index_digest, stored_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(digest) DO UPDATE SET
                       index_digest = COALESCE(excluded.index_digest, images_records.index_digest)""",
                (
                    record.digest,
                    record.media_type,
                    record.platform,
                    record.config_digest,
                    record.size,
                    record.content_size,
                    record.created.isoformat() if record.created else None,
                    json.dumps(list(record.chain_ids)),
                    json.dumps(list(record.diff_ids)),
                    json.dumps(layers),
                    record.index_digest,
                    time.time(),
                ),
            )
            previous = None
            if name:
                row = conn.execute("SELECT digest FROM images_names WHERE name = ?", (name,)).fetchone()
                previous = row["digest"] if row is not None and row["digest"] != record.digest else None
                conn.execute(
                    "INSERT INTO images_names (name, digest) VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET digest = excluded.digest",
                    (name, record.digest),
                )
        return previous

    def by_digest(self, digest: str) -> ImageRecord | None:
        """The record of a manifest digest (name = its first name, or "" if dangling)."""
        row = self.db.query_one("SELECT * FROM images_records WHERE digest = ?", (digest,))
        if row is None:
            return None
        names = self.names_of(digest)
        return self._row_to_record(row, names[0] if names else "")

    def names_of(self, digest: str) -> list[str]:
        rows = self.db.query("SELECT name FROM images_names WHERE digest = ? ORDER BY name", (digest,))
        return [r["name"] for r in rows]

    def get(self, ref: str) -> ImageRecord:
        """Resolve what a user typed: a name, `name@digest`, a manifest/config digest or a short image ID."""
        if not ref:
            raise InvalidArgument("empty image reference")
        if _FULL_DIGEST_RE.match(ref):
            found = self._by_any_digest(ref)
            if found is not None:
                return found
            raise NotFound(f"image {ref} not found")
        parsed: Reference | None
        try:
            parsed = Reference.parse(ref)
        except InvalidArgument:
            parsed = None
        if parsed is not None:
            row = self.db.query_one(
                "SELECT r.* FROM images_names n JOIN images_records r ON r.digest = n.digest"
                " WHERE n.name = ?",
                (str(parsed),),
            )
            if row is not None:
                return self._row_to_record(row, str(parsed))
            if parsed.digest is not None:
                found = self._by_any_digest(parsed.digest, repository=parsed.name)
                if found is not None:
                    return found
        if _ID_PREFIX_RE.match(ref):
            return self._by_id_prefix(ref.removeprefix("sha256:"))
        if parsed is None:
            Reference.parse(ref)  # re-raise the parse error: it says what is wrong
        raise NotFound(f"image {ref} not found")

    def _by_any_digest(self, digest: str, repository: str | None = None) -> ImageRecord | None:
        rows = self.db.query(
            "SELECT * FROM images_records WHERE digest = ? OR config_digest = ? OR index_digest = ?",
            (digest, digest, digest),
        )
        for row in rows:
            names = self.names_of(row["digest"])
            if repository is not None:
                same_repo = [n for n in names if Reference.parse(n).name == repository]
                return self._row_to_record(row, same_repo[0] if same_repo else "")
            return self._row_to_record(row, names[0] if names else "")
        return None

    def _by_id_prefix(self, prefix: str) -> ImageRecord:
        rows = self.db.query(
            "SELECT * FROM images_records WHERE config_digest LIKE ? OR digest LIKE ?",
            (f"sha256:{prefix}%", f"sha256:{prefix}%"),
        )
        ids = {r["config_digest"] for r in rows}
        if not rows:
            raise NotFound(f"image {prefix} not found")
        if len(ids) > 1 or len(rows) > 1:
            raise InvalidArgument(f"image ID prefix {prefix!r} is ambiguous ({len(rows)} images)")
        names = self.names_of(rows[0]["digest"])
        return self._row_to_record(rows[0], names[0] if names else "")

    def records(self) -> list[ImageRecord]:
        """Every record once (name = first name or "")."""
        out = []
        for row in self.db.query("SELECT * FROM images_records ORDER BY stored_at"):
            names = self.names_of(row["digest"])
            out.append(self._row_to_record(row, names[0] if names else ""))
        return out

    def tag(self, src: str, dst: str) -> ImageRecord:
        """Point name `dst` at the image `src` resolves to."""
        record = self.get(src)
        name = normalize_name(dst)
        if Reference.parse(name).digest is not None:
            raise InvalidArgument(f"cannot tag with a digest reference {dst!r}")
        self.put(replace(record, name=name))
        return replace(record, name=name)

    def untag(self, name: str) -> str:
        """Remove a name; returns the digest it pointed at. NotFound if no such name."""
        normalized = normalize_name(name)
        with self.db.transaction() as conn:
            row = conn.execute("SELECT digest FROM images_names WHERE name = ?", (normalized,)).fetchone()
            if row is None:
                raise NotFound(f"image {name} not found")
            conn.execute("DELETE FROM images_names WHERE name = ?", (normalized,))
        return str(row["digest"])

    def remove(self, name: str) -> str:
        """Alias of `untag` (contract name)."""
        return self.untag(name)

    def delete(self, digest: str) -> None:
        """Forget a record and all its names (content and snapshots are left to GC)."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM images_names WHERE digest = ?", (digest,))
            conn.execute("DELETE FROM images_records WHERE digest = ?", (digest,))

    def referenced_blobs(self) -> set[str]:
        out: set[str] = set()
        for record in self.records():
            out |= record.blobs()
        return out

    def referenced_chain_ids(self) -> set[str]:
        out: set[str] = set()
        for row in self.db.query("SELECT chain_ids FROM images_records"):
            out.update(json.loads(row["chain_ids"]))
        return out

    def record_layer_size(self, diff_id: str, tar_size: int) -> None:
        """Remember a layer's uncompressed tar size (needed up front when writing docker-archives)."""
        self.db.execute(
            "INSERT OR REPLACE INTO images_layer_sizes (diff_id, tar_size) VALUES (?, ?)", (diff_id, tar_size)
        )

    def layer_size(self, diff_id: str) -> int | None:
        row = self.db.query_one("SELECT tar_size FROM images_layer_sizes WHERE diff_id = ?", (diff_id,))
        return int(row["tar_size"]) if row is not None else None

    def list(self) -> list[ImageRecord]:
        """One entry per name, plus one per dangling record; newest first."""
        out: list[ImageRecord] = []
        for row in self.db.query("SELECT * FROM images_records ORDER BY stored_at DESC"):
            names = self.names_of(row["digest"])
            for name in names or [""]:
                out.append(self._row_to_record(row, name))
        return out
