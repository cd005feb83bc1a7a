"""The content-addressed blob store: an OCI image-layout `blobs/` tree plus resumable ingests.

Layout under `root` (normally `<data_root>/content`):

    blobs/sha256/<hex>           verified blobs, read-only once visible
    ingest/<hex>/data            partial download of a blob, appended to in order
    ingest/<hex>/meta            JSON: expected digest and size, started time
    ingest/.<kind>-<random>      temp files of blobs being written whole (`temp_file`: put, build, commit)

A blob becomes visible only after its size and digest were checked and its bytes fsynced (then renamed into
`blobs/`, directory fsynced). A mismatch raises `Integrity` (DATA_LOSS) and leaves nothing behind. A partial
ingest survives exceptions and agent restarts; reopening it rehashes the bytes already there and reports
`offset`, from which a download resumes with an HTTP Range request.

A full disk (ENOSPC/EDQUOT) in any write here is `NoSpace` (RESOURCE_EXHAUSTED, naming `space_root`, the
data root, and the bytes the blob needs). Partials and temp files use space until collected: `partials_size`
counts them, `remove_partials` drops every one no writer holds (an ingest's writer holds its flock, a temp
file's writer is listed in `_writing`), `remove_temp_files` drops all temp files (at start-up, when no
writer can exist).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

import agent.log
from agent.errors import Conflict, Integrity, InvalidArgument, NotFound, translate_no_space
from agent.oci.files import fsync_dir

log = agent.log.get(__name__)

_DIGEST_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})$")
_CHUNK = 1 << 20


def validate_digest(digest: str) -> tuple[str, str]:
    """Split `"sha256:<hex>"` into (algorithm, hex); anything else is InvalidArgument."""
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 hex> (or sha512)")
    algo, _, hexpart = digest.partition(":")
    return algo, hexpart


def digest_bytes(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


class ContentStore:
    """Blobs under their verified digest; the only writer of `<root>/blobs` and `<root>/ingest`."""

    def __init__(self, root: Path, *, space_root: Path | None = None) -> None:
        self.root = root
        self.space_root = space_root or root  # named by NoSpace errors: the agent's data root
        self.blobs_dir = root / "blobs"
        self.ingest_dir = root / "ingest"
        for algo in ("sha256", "sha512"):
            (self.blobs_dir / algo).mkdir(parents=True, exist_ok=True)
        self.ingest_dir.mkdir(parents=True, exist_ok=True)
        self._writing: set[str] = set()  # names of temp files being written (never collected)
        self._writing_lock = threading.Lock()

    def no_space(self, needs: int | None = None) -> contextlib.AbstractContextManager[None]:
        """A full disk inside the block becomes NoSpace naming the data root (`needs`: bytes, if known)."""
        return translate_no_space(self.space_root, needs)

    @contextlib.contextmanager
    def temp_file(self, kind: str, needs: int | None = None) -> Iterator[tuple[Path, BinaryIO]]:
        """A new file `ingest/.<kind>-<random>` open for writing a blob whole (then `adopt` it).

        However the block ends the file is closed and removed (unless adopted: renamed away), so no
        descriptor of a deleted file stays open; a full disk inside is NoSpace. While the block runs the
        file is listed as being written and `remove_partials` leaves it alone.
        """
        name = f".{kind}-{secrets.token_hex(8)}"
        path = self.ingest_dir / name
        with self._writing_lock:
            self._writing.add(name)
        try:
            with self.no_space(needs), open(path, "wb") as fh:
                yield path, fh
        finally:
            path.unlink(missing_ok=True)
            with self._writing_lock:
                self._writing.discard(name)

    def _blob_path(self, digest: str) -> Path:
        algo, hexpart = validate_digest(digest)
        return self.blobs_dir / algo / hexpart

    def has(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def path(self, digest: str) -> Path:
        """The blob's file; NotFound if the store does not hold it."""
        p = self._blob_path(digest)
        if not p.is_file():
            raise NotFound(f"blob {digest} not found")
        return p

    def size(self, digest: str) -> int:
        try:
            return self._blob_path(digest).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} not found") from exc

    def read_bytes(self, digest: str) -> bytes:
        """Whole blob in memory: meant for manifests and configs."""
        try:
            return self._blob_path(digest).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} not found") from exc

    def open(self, digest: str) -> BinaryIO:
        try:
            return open(self._blob_path(digest), "rb")
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} not found") from exc

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        """Store `data`, returning its digest; a digest other than `expected` is Integrity, nothing stored."""
        algo = validate_digest(expected)[0] if expected is not None else "sha256"
        digest = digest_bytes(data, algo)
        if expected is not None and digest != expected:
            raise Integrity(f"content digest mismatch: expected {expected}, got {digest}")
        final = self._blob_path(digest)
        if final.is_file():
            return digest
        with self.temp_file("put", len(data)) as (tmp, fh):
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.chmod(tmp, 0o444)
            os.replace(tmp, final)
        fsync_dir(final.parent)
        return digest

    def put_file(self, src: Path, expected: str | None = None, *, size: int | None = None) -> str:
        """Move a file (on the same filesystem) into the store after hashing it; verifies like `ingest`."""
        algo = validate_digest(expected)[0] if expected is not None else "sha256"
        h = hashlib.new(algo)
        total = 0
        with open(src, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
                total += len(chunk)
            os.fsync(fh.fileno())
        digest = f"{algo}:{h.hexdigest()}"
        if (expected is not None and digest != expected) or (size is not None and size != total):
            src.unlink(missing_ok=True)
            raise Integrity(
                f"content mismatch: want {expected or digest} ({size} bytes), got {digest} ({total} bytes)"
            )
        return self.adopt(src, digest)

    def adopt(self, src: Path, digest: str) -> str:
        """Rename a file whose digest the caller computed while writing it (same filesystem) into place."""
        final = self._blob_path(digest)
        if final.is_file():
            src.unlink(missing_ok=True)
            return digest
        with self.no_space():
            fd = os.open(src, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.chmod(src, 0o444)
            os.replace(src, final)
            fsync_dir(final.parent)
        return digest

    def ingest(self, digest: str, size: int | None) -> Ingest:
        """Open (or reopen, keeping its bytes) the partial ingest of `digest`.

        Only one writer per digest at a time: a second concurrent `ingest` of the same digest raises Conflict.
        A partial whose recorded size disagrees with `size`, or which is already longer, is restarted.
        """
        validate_digest(digest)
        if size is not None and size < 0:
            raise InvalidArgument(f"invalid size {size} for {digest}")
        return Ingest(self, digest, size)

    def delete(self, digest: str) -> None:
        """Remove a blob; absent blobs are fine (GC may race with itself across restarts)."""
        p = self._blob_path(digest)
        with contextlib.suppress(FileNotFoundError):
            p.unlink()

    def digests(self) -> Iterator[str]:
        for algo_dir in sorted(self.blobs_dir.iterdir()):
            if not algo_dir.is_dir():
                continue
            for entry in os.scandir(algo_dir):
                name = f"{algo_dir.name}:{entry.name}"
                if _DIGEST_RE.match(name) and entry.is_file(follow_symlinks=False):
                    yield name

    def total_size(self) -> int:
        total = 0
        for d in self.digests():
            with contextlib.suppress(FileNotFoundError):
                total += self._blob_path(d).stat().st_size
        return total

    def ingests(self) -> list[tuple[str, int, float]]:
        """(digest, bytes so far, mtime) of every partial ingest."""
        out = []
        for entry in os.scandir(self.ingest_dir):
            if not entry.is_dir(follow_symlinks=False):
                continue
            data = Path(entry.path) / "data"
            try:
                st = data.stat()
            except FileNotFoundError:
                continue
            out.append(
                (
                    f"sha256:{entry.name}" if len(entry.name) == 64 else f"sha512:{entry.name}",
                    st.st_size,
                    st.st_mtime,
                )
            )
        return out

    def partials_size(self) -> int:
        """Bytes held by partial ingests and temp files (what `system df` shows as partial data)."""
        return tree_size(self.ingest_dir)

    def remove_stale_ingests(self, max_age_seconds: float) -> int:
        """Drop partial ingests untouched for longer than `max_age_seconds` and stray temp files."""
        return self.remove_partials(max_age_seconds)[0]

    def remove_partials(self, max_age_seconds: float = 0.0) -> tuple[int, int]:
        """Drop partial ingests and temp files untouched for `max_age_seconds` (all with 0) that no writer
        holds: an ingest whose flock another operation has, or a temp file being written, stays.
        Returns (entries removed, bytes freed)."""
        now = time.time()
        removed = freed = 0
        for entry in os.scandir(self.ingest_dir):
            try:
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if max_age_seconds and now - mtime < max_age_seconds:
                continue
            path = Path(entry.path)
            if entry.is_dir(follow_symlinks=False):
                lock = _try_lock(path / "data")
                if lock is None:
                    continue
                try:
                    size = tree_size(path)
                    shutil.rmtree(path, ignore_errors=True)
                finally:
                    os.close(lock)
            else:
                with self._writing_lock:
                    if entry.name in self._writing:
                        continue
                    size = tree_size(path)
                    path.unlink(missing_ok=True)
            removed += 1
            freed += size
        if removed:
            log.info("content.partials_removed", entries=removed, bytes=freed)
        return removed, freed

    def remove_temp_files(self) -> int:
        """At start-up (no writer can exist): delete the temp files killed writers left (`.build-*`,
        `.commit-*`, `.put-*`, an ingest's `meta.tmp`). Partial ingests stay for resuming."""
        removed = freed = 0
        for entry in os.scandir(self.ingest_dir):
            path = Path(entry.path)
            targets = [path] if not entry.is_dir(follow_symlinks=False) else [path / "meta.tmp"]
            for target in targets:
                with contextlib.suppress(FileNotFoundError):
                    size = target.lstat().st_size
                    target.unlink()
                    removed += 1
                    freed += size
        if removed:
            log.info("content.temp_files_removed", files=removed, bytes=freed)
        return removed


def tree_size(path: Path) -> int:
    """Bytes of the files at or below `path` (vanishing entries count 0)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return 0
    if not os.path.isdir(path) or os.path.islink(path):
        return st.st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _try_lock(data: Path) -> int | None:
    """Exclusive non-blocking flock on an ingest's data file; None when someone else holds it."""
    try:
        fd = os.open(data, os.O_RDWR)
    except FileNotFoundError:
        return os.open(os.devnull, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            return None
        raise
    return fd


class Ingest:
    """One blob being written. Use as a context manager; an exception keeps the partial data for resume.

    `offset` is the number of bytes already in the partial (resume the download from there). `write`
    appends and updates the running hash; `commit` verifies size and digest, fsyncs and publishes the
    blob, or raises Integrity after removing the partial; `discard` throws the partial away.
    """

    def __init__(self, store: ContentStore, digest: str, size: int | None) -> None:
        self._store = store
        self.digest = digest
        self.expected_size = size
        algo, hexpart = validate_digest(digest)
        self._dir = store.ingest_dir / hexpart
        self._data = self._dir / "data"
        self._meta = self._dir / "meta"
        self._hash = hashlib.new(algo)
        self._closed = False
        with store.no_space(size):
            self._dir.mkdir(exist_ok=True)
            fd = os.open(self._data, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                    raise Conflict(f"blob {digest} is already being written by another operation") from exc
                raise
            self._fh: IO[bytes] = os.fdopen(fd, "r+b", buffering=0)
            try:
                self._open_partial(algo, size)
            except BaseException:
                self._close()  # no descriptor outlives a failed open
                raise
        if self.offset:
            log.info("content.ingest_resumed", digest=digest, offset=self.offset, size=size)

    def _open_partial(self, algo: str, size: int | None) -> None:
        meta = self._read_meta()
        if meta.get("size") != size or meta.get("digest") != self.digest:
            self._fh.truncate(0)
            self._write_meta({"digest": self.digest, "size": size, "started": time.time()})
        self.offset = self._rehash()
        if size is not None and self.offset > size:
            self._fh.truncate(0)
            self._hash = hashlib.new(algo)
            self.offset = 0
        self._fh.seek(self.offset)

    def _read_meta(self) -> dict[str, Any]:
        try:
            raw = json.loads(self._meta.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def _write_meta(self, meta: dict[str, Any]) -> None:
        tmp = self._meta.with_name("meta.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self._meta)

    def _rehash(self) -> int:
        self._fh.seek(0)
        total = 0
        while chunk := self._fh.read(_CHUNK):
            self._hash.update(chunk)
            total += len(chunk)
        return total

    def write(self, chunk: bytes | bytearray | memoryview) -> None:
        """Append bytes; more bytes than the expected size is Integrity (the partial is removed)."""
        if self._closed:
            raise InvalidArgument(f"ingest of {self.digest} is closed")
        n = len(chunk)
        if self.expected_size is not None and self.offset + n > self.expected_size:
            self.discard()
            raise Integrity(f"blob {self.digest} is larger than its declared size {self.expected_size} bytes")
        view = memoryview(chunk)
        with self._store.no_space(self.expected_size):
            while view:
                written = self._fh.write(view)
                assert written is not None
                view = view[written:]
        self._hash.update(chunk)
        self.offset += n

    def commit(self) -> Path:
        """Verify size and digest, fsync, publish under blobs/; Integrity (nothing left) on mismatch."""
        if self._closed:
            raise InvalidArgument(f"ingest of {self.digest} is closed")
        algo = self.digest.split(":", 1)[0]
        got = f"{algo}:{self._hash.hexdigest()}"
        if self.expected_size is not None and self.offset != self.expected_size:
            self.discard()
            raise Integrity(f"blob {self.digest}: got {self.offset} bytes, expected {self.expected_size}")
        if got != self.digest:
            self.discard()
            raise Integrity(f"blob digest mismatch: expected {self.digest}, got {got}")
        final = self._store._blob_path(self.digest)
        with self._store.no_space(self.expected_size):
            os.fsync(self._fh.fileno())
            os.chmod(self._data, 0o444)
            os.replace(self._data, final)
            fsync_dir(final.parent)
        self._close()
        shutil.rmtree(self._dir, ignore_errors=True)
        return final

    def discard(self) -> None:
        """Forget the partial; safe to call more than once."""
        if not self._closed:
            self._close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _close(self) -> None:
        self._closed = True
        self._fh.close()

    def close(self) -> None:
        """Keep the partial (durably) for a later resume and release the lock."""
        if self._closed:
            return
        with contextlib.suppress(OSError):
            os.fsync(self._fh.fileno())
        self._close()

    def __enter__(self) -> Ingest:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
