"""Content store: verified before visible, nothing left on mismatch, partial ingests resume after restart."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from agent.errors import Conflict, Integrity, InvalidArgument, NotFound
from agent.images.content import ContentStore


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def visible_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_put_bytes_stores_under_digest_and_reads_back(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b'{"schemaVersion":2}'
    digest = store.put_bytes(data)
    assert digest == sha(data)
    assert store.has(digest)
    assert store.read_bytes(digest) == data
    assert store.size(digest) == len(data)
    assert store.path(digest) == tmp_path / "blobs" / "sha256" / digest.split(":")[1]
    assert list(store.digests()) == [digest]
    with store.open(digest) as fh:
        assert fh.read() == data


def test_put_bytes_with_wrong_expected_digest_is_integrity_and_stores_nothing(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(Integrity):
        store.put_bytes(b"actual", expected=sha(b"something else"))
    assert list(store.digests()) == []
    assert visible_files(tmp_path) == []


def test_ingest_commit_verifies_and_publishes(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = os.urandom(300_000)
    digest = sha(data)
    with store.ingest(digest, len(data)) as ingest:
        assert ingest.offset == 0
        for i in range(0, len(data), 65536):
            ingest.write(data[i : i + 65536])
        path = ingest.commit()
    assert path.read_bytes() == data
    assert store.has(digest)
    assert store.ingests() == []


@pytest.mark.parametrize(
    ("payload", "declared_size"),
    [
        (b"tampered bytes!", 15),  # right size, wrong digest
        (b"short", 15),  # too few bytes
    ],
)
def test_ingest_mismatch_is_integrity_and_leaves_nothing(
    tmp_path: Path, payload: bytes, declared_size: int
) -> None:
    store = ContentStore(tmp_path)
    expected = sha(b"the real content")
    with store.ingest(expected, declared_size) as ingest:
        ingest.write(payload)
        with pytest.raises(Integrity):
            ingest.commit()
    assert not store.has(expected)
    assert store.ingests() == []
    assert visible_files(tmp_path) == []


def test_ingest_rejects_more_bytes_than_declared_at_once(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    data = b"0123456789"
    with store.ingest(sha(data), 5) as ingest, pytest.raises(Integrity):
        ingest.write(data)
    assert store.ingests() == []
    assert not store.has(sha(data))


def test_partial_ingest_survives_error_and_restart_then_resumes(tmp_path: Path) -> None:
    data = os.urandom(1_000_000)
    digest = sha(data)
    store = ContentStore(tmp_path)
    with pytest.raises(ConnectionError), store.ingest(digest, len(data)) as ingest:
        ingest.write(data[:400_000])
        raise ConnectionError("connection cut mid-blob")
    assert not store.has(digest)
    assert store.ingests()[0][:2] == (digest, 400_000)

    restarted = ContentStore(tmp_path)  # a new agent process: only what is on disk counts
    with restarted.ingest(digest, len(data)) as ingest:
        assert ingest.offset == 400_000
        ingest.write(data[ingest.offset :])
        ingest.commit()
    assert restarted.read_bytes(digest) == data


def test_resumed_ingest_with_corrupt_partial_fails_verification(tmp_path: Path) -> None:
    """The running hash covers the bytes already on disk, so a corrupted partial cannot slip through."""
    data = os.urandom(100_000)
    digest = sha(data)
    store = ContentStore(tmp_path)
    with store.ingest(digest, len(data)) as ingest:
        ingest.write(data[:50_000])
    partial = tmp_path / "ingest" / digest.split(":")[1] / "data"
    raw = bytearray(partial.read_bytes())
    raw[10] ^= 0xFF
    partial.write_bytes(bytes(raw))
    with store.ingest(digest, len(data)) as ingest:
        assert ingest.offset == 50_000
        ingest.write(data[50_000:])
        with pytest.raises(Integrity):
            ingest.commit()
    assert not store.has(digest)
    assert store.ingests() == []


def test_reopen_with_different_size_restarts_from_zero(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = sha(b"x" * 100)
    with store.ingest(digest, 100) as ingest:
        ingest.write(b"x" * 40)
    with store.ingest(digest, 200) as ingest:
        assert ingest.offset == 0


def test_second_concurrent_ingest_of_same_digest_is_conflict(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = sha(b"abc")
    with store.ingest(digest, 3):
        with pytest.raises(Conflict):
            store.ingest(digest, 3)
    with store.ingest(digest, 3) as again:  # released on close
        again.write(b"abc")
        again.commit()
    assert store.has(digest)


def test_discard_removes_partial(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = sha(b"abcdef")
    with store.ingest(digest, 6) as ingest:
        ingest.write(b"abc")
        ingest.discard()
    assert store.ingests() == []


@pytest.mark.parametrize(
    "bad", ["", "sha256:xyz", "md5:" + "0" * 32, "sha256:" + "A" * 64, "sha256:../../etc/passwd"]
)
def test_invalid_digests_are_invalid_argument(tmp_path: Path, bad: str) -> None:
    store = ContentStore(tmp_path)
    with pytest.raises(InvalidArgument):
        store.has(bad)
    with pytest.raises(InvalidArgument):
        store.ingest(bad, 1)


def test_missing_blob_is_not_found_and_delete_is_idempotent(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    digest = sha(b"nope")
    with pytest.raises(NotFound):
        store.path(digest)
    with pytest.raises(NotFound):
        store.read_bytes(digest)
    stored = store.put_bytes(b"here")
    store.delete(stored)
    store.delete(stored)
    assert not store.has(stored)


def test_stale_ingests_are_swept_but_fresh_and_locked_ones_stay(tmp_path: Path) -> None:
    store = ContentStore(tmp_path)
    old, fresh, busy = sha(b"old"), sha(b"fresh"), sha(b"busy")
    for digest in (old, fresh):
        with store.ingest(digest, 10) as ingest:
            ingest.write(b"12345")
    long_ago = time.time() - 30 * 24 * 3600
    os.utime(tmp_path / "ingest" / old.split(":")[1], (long_ago, long_ago))
    with store.ingest(busy, 10) as held:
        held.write(b"1")
        os.utime(tmp_path / "ingest" / busy.split(":")[1], (long_ago, long_ago))
        assert store.remove_stale_ingests(7 * 24 * 3600) == 1
    remaining = {d for d, _, _ in store.ingests()}
    assert remaining == {fresh, busy}
