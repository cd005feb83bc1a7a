"""The rollout journal: the plan and every host's step, written BEFORE the controller acts on it.

A controller killed at any point resumes from here: each host's last step says what was done or begun
("activating" = Activate may or may not have reached the agent: ask it, Activate is idempotent anyway).

    rollouts    id, release, spec (a serialized RevisionSpec, digests pinned), options (JSON), plan (JSON),
                state, reason, owner, created_at, updated_at
    host_steps  seq, rollout_id, host, wave, step, revision, detail, at      (append-only: a host's history;
                its last step is the row with the highest seq)

Two stores behind one `Journal` Protocol: `SqliteJournal` (default: `rollouts.db` in the config dir, WAL)
and `PostgresJournal` (psycopg 3), which a team points every controller at so `rollout ls/status` shows
everyone's rollouts and any controller can resume one. `open_journal()` picks by `$DOCKYARD_JOURNAL` /
`journal = "…"` in the controller config. Every method is one transaction; the calls are async (the
database work runs in a thread, one statement batch at a time per journal).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import json
import secrets
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

from controller import config
from controller.errors import ControllerError
from controller.rollout.plan import Plan

if TYPE_CHECKING:
    import psycopg

SQLITE_FILE = "rollouts.db"
SCHEMA_VERSION = 1
T = TypeVar("T")


class RolloutState(StrEnum):
    PLANNED = "planned"
    STAGING = "staging"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


class Step(StrEnum):
    """Where one host is in a rollout."""

    PLANNED = "planned"
    STAGING = "staging"
    STAGED = "staged"
    STAGE_FAILED = "stage_failed"
    ACTIVATING = "activating"
    VERIFYING = "verifying"
    VERIFIED = "verified"
    COMMITTED = "committed"
    FAILED = "failed"
    REVERTED = "reverted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"


class JournalError(ControllerError):
    """The journal cannot be opened, read or written (or has no such rollout)."""


@dataclass(frozen=True)
class Rollout:
    id: str
    release: str
    spec: bytes  # RevisionSpec.SerializeToString(deterministic=True)
    options: Mapping[str, Any]  # the rollout's flags, as JSON
    plan: Plan
    state: RolloutState
    owner: str
    created_at: float = 0.0  # epoch seconds; set by the journal
    updated_at: float = 0.0
    reason: str = ""  # why the state is what it is ("max-fail 0 reached: h3 reverted")


@dataclass(frozen=True)
class HostStep:
    rollout_id: str
    host: str
    wave: int
    step: Step
    revision: int = 0  # the revision number the host gave the spec (0 until staged)
    detail: str = ""
    at: float = 0.0
    seq: int = 0  # order of the journal's writes


@dataclass(frozen=True)
class StepUpdate:
    """One host's new step (`revision` None keeps the host's last one)."""

    host: str
    step: Step
    revision: int | None = None
    detail: str = ""


class Journal(Protocol):
    """What the rollout engine and the `rollout` commands need from a journal."""

    location: str  # for messages: the SQLite path or the URL without its password

    async def create(self, rollout: Rollout) -> Rollout:
        """Record a new rollout and a "planned" step for each host of its plan (created_at/updated_at set)."""
        ...

    async def set_state(
        self, rollout_id: str, state: RolloutState, reason: str = "", *, expect: Collection[RolloutState] = ()
    ) -> bool:
        """Set the state; with `expect`, only when the current state is one of them (False otherwise)."""
        ...

    async def record(self, rollout_id: str, updates: Sequence[StepUpdate]) -> list[HostStep]:
        """Append the steps (all or none); every host must be in the rollout's plan."""
        ...

    async def get(self, rollout_id: str) -> Rollout:
        """The rollout (JournalError when there is none)."""
        ...

    async def list(self, limit: int = 50) -> list[Rollout]:
        """Rollouts, newest first."""
        ...

    async def last_steps(self, rollout_id: str) -> dict[str, HostStep]:
        """Each host's last step, by host."""
        ...

    async def history(self, rollout_id: str, host: str | None = None) -> builtins.list[HostStep]:
        """Every step recorded, in the order written (one host's only with `host`)."""
        ...

    async def close(self) -> None: ...


def new_rollout_id(now: float | None = None) -> str:
    """`r-YYYYMMDD-HHMMSS-xxxx`: sorts by time, unique across controllers sharing a journal."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, UTC).strftime("%Y%m%d-%H%M%S")
    return f"r-{stamp}-{secrets.token_hex(2)}"


def open_journal(location: str | None = None, *, cfg_dir: Path | None = None) -> Journal:
    """The journal at `location`, else $DOCKYARD_JOURNAL / `journal` in the controller config, else
    `rollouts.db` in the config dir. postgresql:// (or postgres://) URLs open PostgreSQL; `sqlite:///PATH`
    or a plain path opens SQLite."""
    where = location or config.journal_location(cfg_dir)
    if not where:
        return SqliteJournal((cfg_dir or config.config_dir()) / SQLITE_FILE)
    scheme = where.partition("://")[0].lower() if "://" in where else ""
    if scheme in ("postgresql", "postgres"):
        return PostgresJournal(where)
    if scheme == "sqlite":
        return SqliteJournal(Path(urlsplit(where).path))
    if scheme:
        raise JournalError(f"journal {redact(where)}: expected a postgresql:// URL or a SQLite file path")
    return SqliteJournal(Path(where).expanduser())


def redact(url: str) -> str:
    """The URL without its password (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


# ---- SQL shared by both stores ---------------------------------------------------------------------

# (sqlite type, postgresql type)
TYPES = _TYPES = {
    "BLOB": ("BLOB", "BYTEA"),
    "FLOAT": ("REAL", "DOUBLE PRECISION"),
    "INT": ("INTEGER", "BIGINT"),
    "SERIAL": ("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"),
}
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS journal_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS rollouts (
        id TEXT PRIMARY KEY,
        release TEXT NOT NULL,
        spec {BLOB} NOT NULL,
        options TEXT NOT NULL,
        plan TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        owner TEXT NOT NULL,
        created_at {FLOAT} NOT NULL,
        updated_at {FLOAT} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rollouts_created ON rollouts (created_at)",
    """CREATE TABLE IF NOT EXISTS host_steps (
        seq {SERIAL},
        rollout_id TEXT NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
        host TEXT NOT NULL,
        wave {INT} NOT NULL,
        step TEXT NOT NULL,
        revision {INT} NOT NULL DEFAULT 0,
        detail TEXT NOT NULL DEFAULT '',
        at {FLOAT} NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS host_steps_by_host ON host_steps (rollout_id, host, seq)",
]
_ROLLOUT_COLUMNS = "id, release, spec, options, plan, state, owner, created_at, updated_at, reason"
_STEP_COLUMNS = "rollout_id, host, wave, step, revision, detail, at, seq"

# The statements' parameters are `?`; PostgreSQL's driver takes `%s` (no statement has a literal `?`).
Exec = Callable[[str, Sequence[Any]], list[tuple[Any, ...]]]


def _rollout(row: tuple[Any, ...]) -> Rollout:
    rid, release, spec, options, plan, state, owner, created, updated, reason = row
    return Rollout(
        rid,
        release,
        bytes(spec),
        json.loads(options),
        Plan.from_json(json.loads(plan)),
        RolloutState(state),
        owner,
        float(created),
        float(updated),
        reason,
    )


def _step(row: tuple[Any, ...]) -> HostStep:
    rid, host, wave, step, revision, detail, at, seq = row
    return HostStep(rid, host, int(wave), Step(step), int(revision), detail, float(at), int(seq))


class _SqlJournal(ABC):
    """The journal's statements over a DB-API connection; subclasses open it and run transactions."""

    location: str

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()

    @abstractmethod
    def _transaction(self, write: bool) -> contextlib.AbstractContextManager[Exec]:
        """A transaction on the connection (committed at exit, rolled back on an exception)."""

    @abstractmethod
    def _close(self) -> None: ...

    def _sync(self, work: Callable[[Exec], T], write: bool) -> T:
        with self._lock, self._transaction(write) as execute:
            return work(execute)

    async def _do(self, work: Callable[[Exec], T], *, write: bool) -> T:
        return await asyncio.to_thread(self._sync, work, write)

    async def run(self, work: Callable[[Exec], T], *, write: bool) -> T:
        """`work` in one transaction of this database (other controller tables kept next to the journal's:
        controller/rollout/secrets.py). Statements use `?` parameters; `TYPES[...][dialect]` names types."""
        return await self._do(work, write=write)

    def _create_schema(self, execute: Exec, dialect: int) -> None:
        for statement in _SCHEMA:
            execute(statement.format(**{k: v[dialect] for k, v in _TYPES.items()}), ())
        rows = execute("SELECT value FROM journal_meta WHERE key = 'schema'", ())
        if not rows:
            execute("INSERT INTO journal_meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(rows[0][0]) > SCHEMA_VERSION:
            raise JournalError(
                f"journal {self.location} has schema {rows[0][0]}, newer than this controller's "
                f"({SCHEMA_VERSION}): upgrade the controller"
            )

    async def create(self, rollout: Rollout) -> Rollout:
        now = self._clock()
        row = (
            rollout.id,
            rollout.release,
            rollout.spec,
            json.dumps(dict(rollout.options), sort_keys=True),
            json.dumps(rollout.plan.to_json()),
            str(rollout.state),
            rollout.owner,
            now,
            now,
            rollout.reason,
        )

        def work(execute: Exec) -> None:
            if execute("SELECT 1 FROM rollouts WHERE id = ?", (rollout.id,)):
                raise JournalError(f"rollout {rollout.id} already exists in the journal")
            execute(f"INSERT INTO rollouts ({_ROLLOUT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)
            for wave in rollout.plan.waves:
                for host in wave.hosts:
                    execute(
                        "INSERT INTO host_steps (rollout_id, host, wave, step, revision, detail, at) "
                        "VALUES (?, ?, ?, ?, 0, '', ?)",
                        (rollout.id, host, wave.number, str(Step.PLANNED), now),
                    )

        await self._do(work, write=True)
        return dataclasses.replace(rollout, created_at=now, updated_at=now)

    async def set_state(
        self, rollout_id: str, state: RolloutState, reason: str = "", *, expect: Collection[RolloutState] = ()
    ) -> bool:
        def work(execute: Exec) -> bool:
            # one conditional UPDATE: of two controllers racing on the same expected state, one wins
            sql = "UPDATE rollouts SET state = ?, reason = ?, updated_at = ? WHERE id = ?"
            params: list[object] = [str(state), reason, self._clock(), rollout_id]
            if expect:
                sql += f" AND state IN ({', '.join('?' for _ in expect)})"
                params += [str(s) for s in expect]
            if execute(sql + " RETURNING id", params):
                return True
            if not execute("SELECT 1 FROM rollouts WHERE id = ?", (rollout_id,)):
                raise JournalError(f"no rollout {rollout_id} in the journal")
            return False

        return await self._do(work, write=True)

    async def record(self, rollout_id: str, updates: Sequence[StepUpdate]) -> list[HostStep]:
        def work(execute: Exec) -> list[HostStep]:
            last = self._last_steps(execute, rollout_id)
            now = self._clock()
            written = []
            for u in updates:
                before = last.get(u.host)
                if before is None:
                    raise JournalError(f"host {u.host} is not in rollout {rollout_id}")
                revision = before.revision if u.revision is None else u.revision
                rows = execute(
                    "INSERT INTO host_steps (rollout_id, host, wave, step, revision, detail, at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                    (rollout_id, u.host, before.wave, str(u.step), revision, u.detail, now),
                )
                step = HostStep(
                    rollout_id, u.host, before.wave, u.step, revision, u.detail, now, int(rows[0][0])
                )
                last[u.host] = step
                written.append(step)
            execute("UPDATE rollouts SET updated_at = ? WHERE id = ?", (now, rollout_id))
            return written

        return await self._do(work, write=True)

    async def get(self, rollout_id: str) -> Rollout:
        def work(execute: Exec) -> Rollout:
            rows = execute(f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE id = ?", (rollout_id,))
            if not rows:
                raise JournalError(f"no rollout {rollout_id} in the journal {self.location}")
            return _rollout(rows[0])

        return await self._do(work, write=False)

    async def list(self, limit: int = 50) -> list[Rollout]:
        def work(execute: Exec) -> list[Rollout]:
            rows = execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
            )
            return [_rollout(r) for r in rows]

        return await self._do(work, write=False)

    def _last_steps(self, execute: Exec, rollout_id: str) -> dict[str, HostStep]:
        rows = execute(
            f"SELECT {_STEP_COLUMNS} FROM host_steps WHERE seq IN "
            "(SELECT max(seq) FROM host_steps WHERE rollout_id = ? GROUP BY host) ORDER BY seq",
            (rollout_id,),
        )
        return {s.host: s for s in map(_step, rows)}

    async def last_steps(self, rollout_id: str) -> dict[str, HostStep]:
        return await self._do(lambda execute: self._last_steps(execute, rollout_id), write=False)

    async def history(self, rollout_id: str, host: str | None = None) -> builtins.list[HostStep]:
        def work(execute: Exec) -> builtins.list[HostStep]:
            if host is None:
                sql = f"SELECT {_STEP_COLUMNS} FROM host_steps WHERE rollout_id = ? ORDER BY seq"
                return [_step(r) for r in execute(sql, (rollout_id,))]
            sql = f"SELECT {_STEP_COLUMNS} FROM host_steps WHERE rollout_id = ? AND host = ? ORDER BY seq"
            return [_step(r) for r in execute(sql, (rollout_id, host))]

        return await self._do(work, write=False)

    async def close(self) -> None:
        await asyncio.to_thread(self._close_locked)

    def _close_locked(self) -> None:
        with self._lock:
            self._close()


# ---- SQLite ----------------------------------------------------------------------------------------


class SqliteJournal(_SqlJournal):
    """The journal in one SQLite file (WAL: `rollout status` reads while a rollout writes)."""

    dialect = 0

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.path = path
        self.location = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA foreign_keys=ON")
            self._sync(lambda execute: self._create_schema(execute, 0), True)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(f"journal {path}: {exc}") from None

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[Exec]:
        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            return self._conn.execute(sql, params).fetchall()

        try:
            # IMMEDIATE takes the write lock up front: two controllers never deadlock upgrading a read lock
            self._conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield execute
            except BaseException:
                self._conn.rollback()
                raise
            self._conn.commit()
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.location}: {exc}") from None

    def _close(self) -> None:
        self._conn.close()


# ---- PostgreSQL ------------------------------------------------------------------------------------

# pg_advisory_xact_lock key serializing schema creation between controllers starting at once ("dockyard")
_SCHEMA_LOCK = 0x646F636B79617264


class PostgresJournal(_SqlJournal):
    """The journal in a PostgreSQL database shared by a team's controllers (psycopg 3).

    A dropped connection (server restart, network) is reopened once per call before the call fails."""

    dialect = 1

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self._url = url
        self.location = redact(url)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._sync(self._schema, True)

    def _schema(self, execute: Exec) -> None:
        execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
        self._create_schema(execute, 1)

    def _connect(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise JournalError(f"journal {self.location}: {_pg_message(exc)}") from None
        return self._conn

    def _sync(self, work: Callable[[Exec], T], write: bool) -> T:
        import psycopg

        with self._lock:
            for attempt in (1, 2):
                try:
                    with self._transaction(write) as execute:
                        return work(execute)
                except psycopg.OperationalError as exc:
                    conn = self._conn
                    if attempt == 2 or (conn is not None and not conn.closed and not conn.broken):
                        raise JournalError(f"journal {self.location}: {_pg_message(exc)}") from None
                    self._close()  # the connection died: open a new one, try once more
        raise AssertionError("unreachable")

    @contextlib.contextmanager
    def _transaction(self, write: bool) -> Iterator[Exec]:
        import psycopg

        conn = self._connect()

        def execute(sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
            with conn.cursor() as cur:
                cur.execute(sql.replace("?", "%s"), params)
                return cur.fetchall() if cur.description else []

        try:
            with conn.transaction():
                yield execute
        except psycopg.OperationalError:
            raise  # _sync reconnects when the connection is gone
        except psycopg.Error as exc:
            raise JournalError(f"journal {self.location}: {_pg_message(exc)}") from None

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _pg_message(exc: Exception) -> str:
    """psycopg's message on one line (it may span several)."""
    return " ".join(str(exc).split())
