"""A full disk (issue 12, item 9), the pure parts: the one ENOSPC → NoSpace translation, the edge's safety
net, the content store's temp files (closed and removed on every path), and which partials a prune takes.
The real thing, on a 64 MB tmpfs with a real agent, is tests/integration/images/test_disk_full.py."""

from __future__ import annotations

import errno
import hashlib
import io
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from agent import errors
from agent.errors import InvalidArgument, NoSpace, ResourceExhausted, translate_no_space
from agent.images.content import ContentStore
from agent.images.unpack import LayerStream
from agent.server.status import as_agent_error, code_for

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def deleted_fds(under: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(under)) and target.endswith("(deleted)"):
            out.append(target)
    return out


def test_no_space_message_names_root_need_and_free(tmp_path: Path) -> None:
    err = errors.no_space(tmp_path, 83_886_080)
    assert isinstance(err, ResourceExhausted)
    assert str(err).startswith(f"no space left on {tmp_path}: needs 83.9MB, ")
    assert str(err).endswith(" free")
    assert str(errors.no_space(tmp_path)).startswith(f"no space left on {tmp_path}: ")
    assert "needs" not in str(errors.no_space(tmp_path))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_full_disk_is_recognised_also_when_wrapped(code: int) -> None:
    raw = OSError(code, os.strerror(code))
    assert errors.is_no_space(raw)
    try:
        try:
            raise raw
        except OSError as exc:
            raise InvalidArgument(f"corrupt tar layer data: {exc}") from exc
    except InvalidArgument as wrapped:
        assert errors.is_no_space(wrapped)
    assert not errors.is_no_space(OSError(errno.EIO, "I/O error"))
    assert not errors.is_no_space(InvalidArgument("corrupt tar layer data: bad header"))
    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    assert errors.is_no_space(full)


def test_translate_no_space_raises_no_space_from_the_original(tmp_path: Path) -> None:
    with pytest.raises(NoSpace) as caught, translate_no_space(tmp_path, 10):
        raise ENOSPC
    assert caught.value.__cause__ is ENOSPC
    with pytest.raises(OSError) as other, translate_no_space(tmp_path):
        raise OSError(errno.EIO, "I/O error")
    assert not isinstance(other.value, NoSpace)


def test_the_edge_answers_resource_exhausted_for_a_full_disk_however_it_surfaced() -> None:
    import grpc

    for exc in (ENOSPC, InvalidArgument("corrupt tar layer data"), RuntimeError("boom")):
        if isinstance(exc, InvalidArgument):
            exc.__cause__ = ENOSPC
        got = as_agent_error(exc)
        if isinstance(exc, RuntimeError):
            assert got is exc  # anything else stays an internal error
            continue
        assert isinstance(got, NoSpace)
        assert code_for(got) == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(got).startswith("no space left on ")
    already = errors.no_space("/data", 5)
    assert as_agent_error(already) is already


def test_layer_stream_does_not_call_a_full_disk_corrupt_data() -> None:
    class FullTee(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, b: Any) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as caught:
        LayerStream(FullTee(), "").drain()  # type: ignore[arg-type]
    assert not isinstance(caught.value, InvalidArgument)
    assert caught.value.errno == errno.ENOSPC


def test_temp_file_is_closed_and_removed_on_failure_and_a_full_disk_is_no_space(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content", space_root=tmp_path)
    seen: list[Path] = []
    with pytest.raises(NoSpace) as caught, store.temp_file("build") as (path, out):
        seen.append(path)
        out.write(b"x" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert str(caught.value).startswith(f"no space left on {tmp_path}: ")
    assert seen and seen[0].name.startswith(".build-") and not seen[0].exists()
    assert deleted_fds(tmp_path) == []
    assert list(store.ingest_dir.iterdir()) == []


def test_ingest_write_on_a_full_disk_is_no_space_needing_the_blob_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ContentStore(tmp_path / "content", space_root=tmp_path)
    data = os.urandom(4096)
    with store.ingest(sha(data), len(data)) as ingest:
        ingest.write(data[:1000])

        def full(_: object) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        monkeypatch.setattr(ingest._fh, "write", full)
        with pytest.raises(NoSpace, match=r"needs 4.1kB, .* free"):
            ingest.write(data[1000:])
    assert store.ingests()[0][:2] == (sha(data), 1000)  # kept for a resume, until pruned


def test_prune_takes_every_abandoned_partial_and_temp_file_but_none_being_written(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    abandoned = os.urandom(5000)
    with store.ingest(sha(abandoned), 10_000) as ingest:
        ingest.write(abandoned)
    leftover = store.ingest_dir / ".commit-0123456789abcdef"
    leftover.write_bytes(b"y" * 3000)
    ongoing = os.urandom(2000)
    with store.ingest(sha(ongoing), 4000) as held, store.temp_file("build") as (temp, out):
        held.write(ongoing)
        out.write(b"z" * 700)
        out.flush()
        assert store.partials_size() == 5000 + 3000 + 2000 + 700 + _meta_sizes(store)
        removed, freed = store.remove_partials()
        assert removed == 2
        assert freed >= 8000
        assert not leftover.exists()
        assert temp.exists()
        assert [d for d, _, _ in store.ingests()] == [sha(ongoing)]
    assert not temp.exists()


def _meta_sizes(store: ContentStore) -> int:
    return sum(p.stat().st_size for p in store.ingest_dir.glob("*/meta"))


def test_start_up_removes_temp_files_and_keeps_partials_for_resume(tmp_path: Path) -> None:
    store = ContentStore(tmp_path / "content")
    data = os.urandom(3000)
    with store.ingest(sha(data), 6000) as ingest:
        ingest.write(data)
    for name in (".build-0123456789abcdef", ".commit-0123456789abcdef", ".put-0123456789abcdef"):
        (store.ingest_dir / name).write_bytes(b"x" * 100)
    (store.ingest_dir / sha(data)[7:] / "meta.tmp").write_text("{")
    assert store.remove_temp_files() == 4
    assert sorted(p.name for p in store.ingest_dir.iterdir()) == [sha(data)[7:]]
    assert store.ingests()[0][:2] == (sha(data), 3000)
