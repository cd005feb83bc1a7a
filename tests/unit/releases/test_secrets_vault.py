"""The agent's secret vault (encrypted at rest, bound to NAME@VERSION, key made 0600 at first use) and the
update lock's holder (host file, container file, first line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import FailedPrecondition
from agent.releases.secrets import Locks, Vault


def test_vault_keeps_values_encrypted_and_bound_to_their_version(tmp_path: Path) -> None:
    vault = Vault(tmp_path / "data" / "secrets", tmp_path / "etc" / "secrets.key")
    vault.put("db_password", "3", b"hunter2")
    stored = tmp_path / "data" / "secrets" / "db_password@3"
    assert b"hunter2" not in stored.read_bytes()
    assert stored.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc" / "secrets.key").stat().st_mode & 0o777 == 0o600
    assert Vault(stored.parent, tmp_path / "etc" / "secrets.key").get("db_password", "3") == b"hunter2"
    stored.rename(stored.with_name("db_password@4"))  # another version's name: does not open
    with pytest.raises(FailedPrecondition, match="does not decrypt"):
        vault.get("db_password", "4")
    with pytest.raises(FailedPrecondition, match="never delivered"):
        vault.get("db_password", "3")
    assert vault.prune([]) == ["db_password@4"]


def test_lock_holder_from_the_host_or_a_container(tmp_path: Path) -> None:
    locks = Locks(tmp_path)
    assert locks.holder("web") == ""
    locks.check("web")
    mount = locks.mount("web")
    assert (mount.target, mount.source) == ("/run/dockyard/locks", str(tmp_path / "web"))
    (tmp_path / "web" / "web.lock").write_text("migrating db\nmore\n")
    assert locks.holder("web") == f"{tmp_path / 'web' / 'web.lock'} (migrating db)"
    (tmp_path / "web" / "web.lock").unlink()
    (tmp_path / "web.lock").write_text("")
    with pytest.raises(FailedPrecondition, match=f"release web is locked by {tmp_path / 'web.lock'}$"):
        locks.check("web")
    assert locks.holder("other") == ""
