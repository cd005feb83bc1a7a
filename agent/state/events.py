"""The agent's event log: persisted in SQLite, sequence-numbered, replayable from any sequence number.

A reconnecting controller passes the last sequence it saw and misses nothing that is still retained
(the newest `RETAIN` events; Docker keeps 256 in memory only). Live subscribers get events pushed in
sequence order; `stream(since)` subscribes first and replays from the database second, so no event
falls between the two.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from agent.state.db import Database

RETAIN = 10_000
QUEUE_LIMIT = 4096

DDL = """
CREATE TABLE IF NOT EXISTS events_log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ns INTEGER NOT NULL,
    type TEXT NOT NULL,
    action TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}'
);
"""


@dataclass(frozen=True)
class Event:
    seq: int
    time_ns: int
    type: str  # container | image | volume | network
    action: str  # create, start, die, oom, health_status, destroy, pull, …
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)


EventFilter = Callable[[Event], bool]


def matches(filters: Mapping[str, list[str]]) -> EventFilter:
    """Docker-style filters: type=, event=/action=, container=/image=/volume= (id or name attribute)."""

    def check(e: Event) -> bool:
        for key, wanted in filters.items():
            if not wanted:
                continue
            if key == "type" and e.type not in wanted:
                return False
            if key in ("event", "action") and not any(
                e.action == w or e.action.split(":", 1)[0] == w for w in wanted
            ):
                return False
            if key in ("container", "image", "volume", "network"):
                if e.type != key:
                    return False
                ids = {e.actor_id, e.attributes.get("name", ""), e.attributes.get("image", "")}
                if not any(w in ids or (len(w) >= 3 and e.actor_id.startswith(w)) for w in wanted):
                    return False
            if key == "label":
                for w in wanted:
                    k, _, v = w.partition("=")
                    if e.attributes.get(k) != v if v else k not in e.attributes:
                        return False
        return True

    return check


class EventLog:
    def __init__(self, db: Database, retain: int = RETAIN) -> None:
        self.db = db
        self.retain = retain
        db.ensure_schema(DDL)
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self._appended = 0

    def append(
        self, type_: str, action: str, actor_id: str, attributes: Mapping[str, str] | None = None
    ) -> Event:
        attrs = {k: str(v) for k, v in (attributes or {}).items()}
        ts = time.time_ns()
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO events_log (time_ns, type, action, actor_id, attributes) VALUES (?, ?, ?, ?, ?)",
                (ts, type_, action, actor_id, json.dumps(attrs, sort_keys=True)),
            )
            seq = int(cur.lastrowid or 0)
            self._appended += 1
            if self._appended % 500 == 0:
                conn.execute("DELETE FROM events_log WHERE seq <= ?", (seq - self.retain,))
        event = Event(seq, ts, type_, action, actor_id, attrs)
        for q in list(self._subscribers):
            if q.qsize() >= QUEUE_LIMIT:
                # a subscriber that does not keep up is cut off rather than letting memory grow
                self._subscribers.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(None)
                continue
            q.put_nowait(event)
        return event

    def since(self, seq: int, until_ns: int | None = None, limit: int = RETAIN) -> list[Event]:
        rows = self.db.query(
            "SELECT * FROM events_log WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        )
        out = [
            Event(r["seq"], r["time_ns"], r["type"], r["action"], r["actor_id"], json.loads(r["attributes"]))
            for r in rows
        ]
        return [e for e in out if until_ns is None or e.time_ns <= until_ns]

    def last_seq(self) -> int:
        row = self.db.query_one("SELECT MAX(seq) AS s FROM events_log")
        return int(row["s"] or 0) if row else 0

    async def stream(
        self, since: int | None, *, follow: bool = True, accept: EventFilter | None = None
    ) -> AsyncIterator[Event]:
        """Past events after `since` (None: none), then live ones while `follow`."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        if follow:
            self._subscribers.add(queue)
        try:
            last = self.last_seq() if since is None else since
            if since is not None:
                for e in self.since(since):
                    last = e.seq
                    if accept is None or accept(e):
                        yield e
            while follow:
                item = await queue.get()
                if item is None:
                    return
                if item.seq <= last:
                    continue
                last = item.seq
                if accept is None or accept(item):
                    yield item
        finally:
            self._subscribers.discard(queue)
