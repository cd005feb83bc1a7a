"""Secrets on the controller: values encrypted at rest, chosen per host, delivered only with Stage.

    dockyard secret create NAME [-f FILE | < stdin] [--host H | --group G]
    dockyard secret ls | rm NAME [--host H | --group G]

A value is kept in the rollout journal's database (SQLite `rollouts.db` in the config dir, or the team's
PostgreSQL journal), encrypted with AES-256-GCM under `secrets.key` in the config dir (0600, made at first
use; every controller sharing a PostgreSQL journal needs a copy of the same key). The associated data is
the row's identity (name, scope, version), so a value moved to another row does not decrypt.

Scopes: a value for one host (`host:edge-1`), for a group (`group:north`), or the default (""). For a
host, the host's value wins, then the value of its last group in inventory order, then the default.
Every `create` gives the name a new version (a counter over all its scopes): the version is what a
release's spec carries (never the value), so a new value is a new revision on the hosts it reaches and
goes through the health gate and auto-revert like any other change. Old versions stay (a rollout planned
before a rotation still stages what it planned) until `secret rm`.
"""

from __future__ import annotations

import builtins
import os
import secrets as random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.oci.files import write_atomic
from controller.api.releases import Material
from controller.errors import ControllerError
from controller.rollout.journal import TYPES, Exec, PostgresJournal, SqliteJournal
from controller.rollout.spec import SECRET_NAME_RE, Release, SecretUse

KEY_FILE = "secrets.key"
MAX_VALUE = 512 * 1024  # bytes; a secret is a password, a key, a certificate — not a file system
_SCHEMA = """CREATE TABLE IF NOT EXISTS secrets (
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    version {INT} NOT NULL,
    nonce {BLOB} NOT NULL,
    sealed {BLOB} NOT NULL,
    created_at {FLOAT} NOT NULL,
    created_by TEXT NOT NULL,
    PRIMARY KEY (name, scope, version))"""


class SecretError(ControllerError):
    """A secret that cannot be stored, found or opened (never with its value in the message)."""


@dataclass(frozen=True)
class SecretInfo:
    """One stored value, without the value (what `secret ls` shows)."""

    name: str
    scope: str  # "" | "host:NAME" | "group:NAME"
    version: int
    created_at: float
    created_by: str
    size: int


def scope_of(host: str | None = None, group: str | None = None) -> str:
    if host and group:
        raise SecretError("give --host or --group, not both")
    return f"host:{host}" if host else f"group:{group}" if group else ""


def check_name(name: str) -> str:
    if not SECRET_NAME_RE.match(name):
        raise SecretError(f"invalid secret name {name!r}: expected [A-Za-z0-9][A-Za-z0-9_.-]*, 1-63")
    return name


class Sealer:
    """AES-256-GCM under the key file (made 0600 at first use)."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path

    def _key(self, create: bool) -> bytes:
        try:
            key = self.key_path.read_bytes()
        except FileNotFoundError:
            if not create:
                raise SecretError(
                    f"no secrets key {self.key_path}: secrets were made by another controller"
                    " (copy its secrets.key here)"
                ) from None
            key = AESGCM.generate_key(bit_length=256)
            self.key_path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.key_path, key, mode=0o600)
            return key
        if len(key) != 32:
            raise SecretError(f"secrets key {self.key_path} is not a 256-bit key")
        if self.key_path.stat().st_mode & 0o077:
            raise SecretError(f"secrets key {self.key_path} is readable by others: chmod 600 it")
        return key

    def seal(self, value: bytes, aad: bytes) -> tuple[bytes, bytes]:
        nonce = random.token_bytes(12)
        return nonce, AESGCM(self._key(create=True)).encrypt(nonce, value, aad)

    def open(self, nonce: bytes, sealed: bytes, aad: bytes, what: str) -> bytes:
        try:
            return AESGCM(self._key(create=False)).decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise SecretError(f"secret {what} does not decrypt with {self.key_path} (another key?)") from None


def _aad(name: str, scope: str, version: int) -> bytes:
    return f"dockyard-secret\0{name}\0{scope}\0{version}".encode()


class SecretStore:
    """The secrets table next to the journal (same database), values sealed by `Sealer`."""

    def __init__(self, journal: SqliteJournal | PostgresJournal, config_dir: Path) -> None:
        self.journal = journal
        self.sealer = Sealer(config_dir / KEY_FILE)
        self._ready = False

    async def _run(self, work: Any, *, write: bool) -> Any:
        if not self._ready:
            schema = _SCHEMA.format(**{k: v[self.journal.dialect] for k, v in TYPES.items()})
            await self.journal.run(lambda execute: execute(schema, ()), write=True)
            self._ready = True
        return await self.journal.run(work, write=write)

    async def create(self, name: str, value: bytes, scope: str = "", *, by: str = "") -> int:
        """Store a new value of `name` for `scope`; its version (a new one, over all scopes)."""
        check_name(name)
        if not value:
            raise SecretError(f"secret {name}: the value is empty")
        if len(value) > MAX_VALUE:
            raise SecretError(f"secret {name}: the value is {len(value)} bytes, at most {MAX_VALUE}")

        def work(execute: Exec) -> int:
            rows = execute("SELECT max(version) FROM secrets WHERE name = ?", (name,))
            version = int(rows[0][0] or 0) + 1 if rows else 1
            nonce, sealed = self.sealer.seal(value, _aad(name, scope, version))
            execute(
                "INSERT INTO secrets (name, scope, version, nonce, sealed, created_at, created_by) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, scope, version, nonce, sealed, time.time(), by),
            )
            return version

        return int(await self._run(work, write=True))

    async def list(self) -> builtins.list[SecretInfo]:
        """The newest value of each (name, scope), by name then scope."""

        def work(execute: Exec) -> list[SecretInfo]:
            rows = execute(
                "SELECT name, scope, version, created_at, created_by, length(sealed) FROM secrets s WHERE "
                "version = (SELECT max(version) FROM secrets t WHERE t.name = s.name AND t.scope = s.scope)"
                " ORDER BY name, scope",
                (),
            )
            return [SecretInfo(r[0], r[1], int(r[2]), float(r[3]), r[4], int(r[5]) - 16) for r in rows]

        result: builtins.list[SecretInfo] = await self._run(work, write=False)
        return result

    async def remove(self, name: str, scope: str | None = None) -> int:
        """Forget every version of `name` (of one scope with `scope`); how many values went."""

        def work(execute: Exec) -> int:
            if scope is None:
                return len(execute("DELETE FROM secrets WHERE name = ? RETURNING version", (name,)))
            return len(
                execute("DELETE FROM secrets WHERE name = ? AND scope = ? RETURNING version", (name, scope))
            )

        removed = int(await self._run(work, write=True))
        if not removed:
            where = f" for {scope}" if scope else ""
            raise SecretError(f"no secret {name}{where}")
        return removed

    async def versions_for(
        self, names: Iterable[str], host: str, groups: Sequence[str]
    ) -> dict[str, tuple[int, str]]:
        """name → (version, scope) of the value `host` gets (SecretError naming a secret without one)."""
        wanted = sorted(set(names))

        def work(execute: Exec) -> dict[str, dict[str, int]]:
            out: dict[str, dict[str, int]] = {}
            for name in wanted:
                rows = execute(
                    "SELECT scope, max(version) FROM secrets WHERE name = ? GROUP BY scope", (name,)
                )
                out[name] = {r[0]: int(r[1]) for r in rows}
            return out

        found: dict[str, dict[str, int]] = await self._run(work, write=False)
        result: dict[str, tuple[int, str]] = {}
        for name in wanted:
            scopes = found.get(name, {})
            order = [f"host:{host}", *(f"group:{g}" for g in reversed(groups)), ""]
            chosen = next((s for s in order if s in scopes), None)
            if chosen is None:
                if not scopes:
                    raise SecretError(f"{host}: secret {name} does not exist (dockyard secret create {name})")
                raise SecretError(
                    f"{host}: secret {name} has no value for this host (only for "
                    f"{', '.join(s or 'default' for s in sorted(scopes))})"
                )
            result[name] = (scopes[chosen], chosen)
        return result

    async def materials(self, wanted: Iterable[tuple[str, str]]) -> builtins.list[Material]:
        """The values of (name, version) pairs, decrypted (SecretError when one is gone)."""
        pairs = sorted(set(wanted))

        def work(execute: Exec) -> builtins.list[tuple[str, str, int, bytes, bytes]]:
            out = []
            for name, version in pairs:
                rows = execute(
                    "SELECT scope, nonce, sealed FROM secrets WHERE name = ? AND version = ?",
                    (name, int(version)),
                )
                if not rows:
                    raise SecretError(
                        f"secret {name} version {version} is gone (removed or replaced): plan a new rollout"
                    )
                out.append((name, rows[0][0], int(version), bytes(rows[0][1]), bytes(rows[0][2])))
            return out

        rows: builtins.list[tuple[str, str, int, bytes, bytes]] = await self._run(work, write=False)
        return [
            Material(n, str(v), self.sealer.open(nonce, sealed, _aad(n, scope, v), f"{n} version {v}"))
            for n, scope, v, nonce, sealed in rows
        ]


def release_secrets(release: Release) -> set[str]:
    return {u.name for c in release.containers for u in c.secrets}


def with_versions(release: Release, versions: Mapping[str, tuple[int, str]]) -> Release:
    """The release with each secret use's version filled in (the host's values)."""
    from dataclasses import replace

    return replace(
        release,
        containers=tuple(
            replace(c, secrets=tuple(replace(u, version=str(versions[u.name][0])) for u in c.secrets))
            for c in release.containers
        ),
    )


def uses(release: Release) -> list[SecretUse]:
    return [u for c in release.containers for u in c.secrets]


def default_by() -> str:
    from controller.rollout.engine import default_owner

    return default_owner()


def read_value(path: Path | None, stdin: Any) -> bytes:
    """The value from a file, or from stdin (one trailing newline of a typed value is dropped)."""
    if path is not None:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise SecretError(f"cannot read {path}: {exc.strerror}") from None
    data: bytes = stdin.read()
    try:
        typed = os.isatty(stdin.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests, pipes wrapped in memory)
        typed = False
    return data.removesuffix(b"\n") if typed else data
