"""The agent's audit log: who did what, append-only, hash-chained, on disk before the reply.

One JSON object per line in `<audit dir>/audit.log` (rotated to audit.log.1 … audit.log.N by size):

    {"seq": 7, "time": "2025-…Z", "event": "rpc", "stage": "request"|"response",
     "caller": "local" | {"cn": "alice", "serial": "5f…", "role": "deployer"},
     "rpc": "/agent.api.v1.Containers/Create", "permission": "deploy", "target": "web",
     "args": {… the request, secrets redacted …}, "result": "OK", "message": "", "request_id": "…",
     "prev": "<sha256 of the previous line>", "hash": "<sha256 of this entry without `hash`>"}

Every audited call is written twice: a `request` entry before the agent acts (so a call is on record even
if the agent dies while doing it, and a log that cannot be written stops it before it acts when
`audit_required`) and a `response` entry with the result before the reply. A refused call has one
`response` entry. Lines are written with one O_APPEND write; concurrent calls share a write (group
commit). A batch with a `response` entry is fsynced before the replies go out; a batch of `request` entries
only is written, not fsynced: the page cache keeps it through an agent SIGKILL, and the response's fsync
carries it to disk (a power cut between acting and replying can lose that request entry, never an answered
call's). The chain crosses rotations: a new file's first entry chains to the last line
of the previous file.

A last line without its newline (a write torn by a crash or power loss) is found at start: it is cut from
the file, logged, and recorded in full in an `audit.torn_tail` entry — never silently dropped. `verify`
walks every kept file and names the first entry whose hash or link is wrong.

Redaction (`summarize`): fields named like passwords, tokens, secrets, credentials or auth are replaced by
"<redacted>"; `env` and `build_args` keep their KEYS only; bytes fields and `*_json` blobs become their
size.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import errno
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from agent import errors, log

_log = log.get(__name__)

LOG_NAME = "audit.log"
GENESIS = "0" * 64
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_KEEP = 5
_TAIL_WINDOW = 1 << 20  # a line is far shorter; the last newline is within this much of the end
_TEXT_MAX = 256
_ARGS_MAX = 8192
_TORN_TEXT_MAX = 4096


def canonical(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def entry_hash(entry: dict[str, Any]) -> str:
    """sha256 of the entry's canonical JSON without its own `hash` field."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "hash"})).hexdigest()


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- redaction --------------------------------------------------------------------------------------

_SECRET_RE = re.compile(r"pass(word|wd)?|secret|token|credential|auth|private|key_pem", re.IGNORECASE)
_KEYS_ONLY = {"env", "build_args"}
TARGET_FIELDS = (
    "container", "release", "name", "image", "reference", "network", "volume", "id", "tag", "source",
    "references", "names", "containers",
)  # fmt: skip


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_BYTES:
        return f"<{len(value)} bytes>"
    if field.type == FieldDescriptor.TYPE_ENUM and field.enum_type is not None:
        enum = field.enum_type.values_by_number.get(value)
        return enum.name if enum is not None else value
    if isinstance(value, str):
        return value if len(value) <= _TEXT_MAX else value[:_TEXT_MAX] + "…"
    return value


def _env_key(item: str) -> str:
    return item.split("=", 1)[0]


def redact(msg: Message, depth: int = 0) -> dict[str, Any]:
    """The message's set fields as JSON values, with secrets removed (see the module docstring)."""
    out: dict[str, Any] = {}
    for field, value in msg.ListFields():
        name = field.name
        if _SECRET_RE.search(name):
            out[name] = "<redacted>"
        elif name.endswith("_json"):
            out[name] = f"<{len(value)} bytes>"
        elif name in _KEYS_ONLY:
            keys = list(value.keys()) if hasattr(value, "keys") else [_env_key(str(v)) for v in value]
            out[name] = sorted(keys) if name == "build_args" else keys
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            if value_field.message_type is not None:
                out[name] = {str(k): redact(v, depth + 1) for k, v in value.items()} if depth < 6 else "…"
            else:
                out[name] = {str(k): _scalar(value_field, v) for k, v in value.items()}
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth >= 6:
                out[name] = "…"
            elif field.is_repeated:
                out[name] = [redact(v, depth + 1) for v in value]
            else:
                out[name] = redact(value, depth + 1)
        elif field.is_repeated:
            out[name] = [_scalar(field, v) for v in value]
        else:
            out[name] = _scalar(field, value)
    return out


def target_of(args: dict[str, Any]) -> str:
    """The object a call is about (container, image, release, …), from its redacted arguments."""
    layers = [args]
    for _ in range(3):
        for layer in layers:
            for key in TARGET_FIELDS:
                value = layer.get(key)
                if isinstance(value, str) and value and not value.startswith("<"):
                    return value
                if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                    return ",".join(value)[:_TEXT_MAX]
        layers = [v for layer in layers for v in layer.values() if isinstance(v, dict)]
    return ""


def summarize(message: Message | None) -> tuple[str, dict[str, Any]]:
    """(target, salient arguments) of a request, secrets redacted, bounded in size."""
    if message is None:
        return "", {}
    args = redact(message)
    target = target_of(args)
    if len(canonical(args)) > _ARGS_MAX:
        args = {"truncated": True, "fields": sorted(args)}
    return target, args


# --- the log ----------------------------------------------------------------------------------------


class AuditUnavailable(errors.Unavailable):
    """The audit log cannot be written and `audit_required` is set: the call is refused."""


@dataclass(frozen=True)
class Broken:
    file: str
    line: int  # 1-based line number in `file`
    seq: int | None
    reason: str


@dataclass(frozen=True)
class Verified:
    entries: int
    files: int
    first_seq: int
    last_seq: int
    broken: Broken | None = None
    anchored: bool = True  # the first kept entry is the genesis (no older file was rotated away)

    @property
    def ok(self) -> bool:
        return self.broken is None


class AuditLog:
    """One agent's audit log (see the module docstring). `open()` once before serving."""

    def __init__(
        self,
        directory: Path,
        *,
        max_size: int = DEFAULT_MAX_SIZE,
        keep: int = DEFAULT_KEEP,
        required: bool = False,
    ) -> None:
        if max_size <= 0 or keep < 0:
            raise errors.InvalidArgument("audit_max_size must be positive and audit_max_files not negative")
        self.directory = directory
        self.max_size = max_size
        self.keep = keep
        self.required = required
        self._fd = -1
        self._size = 0
        self._prev = GENESIS
        self._seq = 0
        self._queue: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listeners: set[asyncio.Queue[bytes]] = set()

    @property
    def path(self) -> Path:
        return self.directory / LOG_NAME

    def files(self) -> list[Path]:
        """The kept files, oldest first (audit.log.N … audit.log.1, audit.log)."""
        rotated = []
        for p in self.directory.glob(f"{LOG_NAME}.*"):
            suffix = p.name[len(LOG_NAME) + 1 :]
            if suffix.isdigit():
                rotated.append((int(suffix), p))
        return [p for _, p in sorted(rotated, reverse=True)] + ([self.path] if self.path.exists() else [])

    # -- start ------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the current file, find where the chain stands, and repair (and record) a torn tail."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        size = os.fstat(self._fd).st_size
        tail = os.pread(self._fd, min(size, _TAIL_WINDOW), max(0, size - _TAIL_WINDOW))
        cut = tail.rfind(b"\n") + 1  # 0 when there is no complete line in the window
        torn = tail[cut:]
        if torn:
            os.ftruncate(self._fd, size - len(torn))
            os.fsync(self._fd)
            size -= len(torn)
        self._size = size
        last = tail[:cut].rstrip(b"\n").rsplit(b"\n", 1)[-1] if cut else b""
        if not last:
            last = self._last_line_of_rotated()
        if last:
            self._prev = line_hash(last)
            self._seq = self._seq_of(last)
        if torn:
            text = torn.decode(errors="replace")
            _log.warning("audit.torn_tail", file=str(self.path), torn_bytes=len(torn), after_seq=self._seq)
            entry = {
                "event": "audit.torn_tail",
                "time": now_iso(),
                "torn_bytes": len(torn),
                "torn_sha256": hashlib.sha256(torn).hexdigest(),
                "torn_text": text[:_TORN_TEXT_MAX],
            }
            self._write_now([entry])

    def _last_line_of_rotated(self) -> bytes:
        rotated = self.directory / f"{LOG_NAME}.1"
        try:
            data = rotated.read_bytes()
        except FileNotFoundError:
            return b""
        return data.rstrip(b"\n").rsplit(b"\n", 1)[-1]

    def _seq_of(self, line: bytes) -> int:
        try:
            return int(json.loads(line)["seq"])
        except (ValueError, KeyError, TypeError):
            _log.error("audit.tail_unreadable", file=str(self.path))
            return sum(1 for _ in self.path.open("rb"))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- writing ----------------------------------------------------------------------------------------

    def _seal(self, entries: list[dict[str, Any]]) -> tuple[bytes, str, int]:
        """The lines for `entries`, chained from where the log stands (state is not changed here)."""
        prev, seq, out = self._prev, self._seq, []
        for entry in entries:
            seq += 1
            body = {**entry, "seq": seq, "prev": prev}
            body["hash"] = entry_hash(body)
            line = canonical(body)
            out.append(line + b"\n")
            prev = hashlib.sha256(line).hexdigest()
        return b"".join(out), prev, seq

    def _append(self, data: bytes, sync: bool = True) -> None:
        """Rotate if `data` would pass the size limit, then write it in one call and (when `sync`) fsync;
        in a thread."""
        if self._size and self._size + len(data) > self.max_size:
            self._rotate()
        try:
            written = os.write(self._fd, data)
            if written != len(data):  # a regular file takes less only when the disk is full
                raise OSError(errno.ENOSPC, f"No space left on device (wrote {written} of {len(data)} bytes)")
            if sync:
                os.fsync(self._fd)
        except OSError:
            with contextlib.suppress(OSError):  # leave no half line behind us
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        if self.keep == 0:
            self.path.unlink()
        else:
            oldest = self.directory / f"{LOG_NAME}.{self.keep}"
            oldest.unlink(missing_ok=True)
            for n in range(self.keep - 1, 0, -1):
                src = self.directory / f"{LOG_NAME}.{n}"
                if src.exists():
                    os.replace(src, self.directory / f"{LOG_NAME}.{n + 1}")
            os.replace(self.path, self.directory / f"{LOG_NAME}.1")
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = 0
        dir_fd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        _log.info("audit.rotated", file=str(self.path), seq=self._seq)

    def _write_now(self, entries: list[dict[str, Any]]) -> None:
        data, prev, seq = self._seal(entries)
        self._append(data)
        self._prev, self._seq = prev, seq
        self._publish(data)

    def _publish(self, data: bytes) -> None:
        for queue in list(self._listeners):
            for line in data.splitlines():
                queue.put_nowait(line)

    async def record(self, entry: dict[str, Any]) -> None:
        """Append `entry` (time added here) and return once it is on disk.

        A write failure raises AuditUnavailable when `required`, else it is logged and the call goes on.
        """
        entry = {"time": now_iso(), **entry}
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((entry, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        try:
            await asyncio.shield(future)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            _log.error("audit.write_failed", reason=reason, rpc=entry.get("rpc"))
            if self.required:
                raise AuditUnavailable(f"audit log cannot be written: {reason}") from exc

    async def _flush(self) -> None:
        """Write everything queued, one write per batch (fsynced when it holds an answer), until the queue
        is empty."""
        while self._queue:
            batch, self._queue = self._queue, []
            data, prev, seq = self._seal([e for e, _ in batch])
            sync = any(e.get("stage") != "request" for e, _ in batch)
            try:
                await asyncio.to_thread(self._append, data, sync)
            except OSError as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self._prev, self._seq = prev, seq
            self._publish(data)
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    # -- reading ----------------------------------------------------------------------------------------

    def lines(self) -> Iterator[bytes]:
        for path in self.files():
            try:
                with path.open("rb") as f:
                    for line in f:
                        if line.endswith(b"\n"):
                            yield line.rstrip(b"\n")
            except FileNotFoundError:  # rotated away while we read
                continue

    async def read(
        self, *, since: dt.datetime | None = None, user: str | None = None, follow: bool = False
    ) -> AsyncIterator[bytes]:
        """The kept entries matching the filters, oldest first; then new ones as written while `follow`."""
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        if follow:
            self._listeners.add(queue)
        try:
            kept = await asyncio.to_thread(lambda: [ln for ln in self.lines() if matches(ln, since, user)])
            last = 0
            for line in kept:
                last = max(last, _seq(line))
                yield line
            while follow:
                line = await queue.get()
                if _seq(line) > last and matches(line, since, user):
                    last = _seq(line)
                    yield line
        finally:
            self._listeners.discard(queue)

    def verify(self) -> Verified:
        """Check every kept file: each line parses, its hash is right, and it links to the line before."""
        files = self.files()
        prev: str | None = None
        count, first, last = 0, 0, 0
        anchored = True
        for path in files:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            for number, raw in enumerate(data.split(b"\n"), 1):
                if not raw:
                    continue
                broken = _check_line(raw, prev, path.name, number)
                if broken is not None:
                    return Verified(count, len(files), first, last, broken, anchored)
                entry = json.loads(raw)
                if count == 0:
                    first = int(entry["seq"])
                    anchored = entry["prev"] == GENESIS
                last = int(entry["seq"])
                prev = line_hash(raw)
                count += 1
            if data and not data.endswith(b"\n"):
                tail = data.rsplit(b"\n", 1)[-1]
                return Verified(
                    count,
                    len(files),
                    first,
                    last,
                    Broken(path.name, data.count(b"\n") + 1, None, f"torn last line ({len(tail)} bytes)"),
                    anchored,
                )
        return Verified(count, len(files), first, last, None, anchored)


def _check_line(raw: bytes, prev: str | None, file: str, number: int) -> Broken | None:
    try:
        entry = json.loads(raw)
        if not isinstance(entry, dict):
            raise ValueError("not an object")
        seq = int(entry["seq"])
    except (ValueError, KeyError, TypeError) as exc:
        return Broken(file, number, None, f"unreadable entry ({exc})")
    if entry.get("hash") != entry_hash(entry):
        return Broken(file, number, seq, "hash mismatch: the entry was changed after it was written")
    if prev is not None and entry.get("prev") != prev:
        return Broken(file, number, seq, "chain broken: prev is not the hash of the entry before")
    if prev is None and entry.get("seq") == 1 and entry.get("prev") != GENESIS:
        return Broken(file, number, seq, "chain broken: the first entry does not start the chain")
    return None


def _seq(line: bytes) -> int:
    try:
        return int(json.loads(line)["seq"])
    except (ValueError, KeyError, TypeError):
        return 0


def matches(line: bytes, since: dt.datetime | None, user: str | None) -> bool:
    if since is None and user is None:
        return True
    try:
        entry = json.loads(line)
    except ValueError:
        return False
    if since is not None:
        try:
            if parse_time(str(entry.get("time", ""))) < since:
                return False
        except ValueError:
            return False
    if user is not None:
        caller = entry.get("caller")
        name = caller.get("cn") if isinstance(caller, dict) else caller
        if name != user:
            return False
    return True
