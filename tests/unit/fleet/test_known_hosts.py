"""The controller's known_hosts file: OpenSSH format, per-port patterns, append-only."""

from __future__ import annotations

from pathlib import Path

import asyncssh

from controller.ssh import KnownHosts


def test_add_and_lookup_by_address_and_port(tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    assert known.keys_for("192.0.2.1", 22) == []
    key22 = asyncssh.generate_private_key("ssh-ed25519")
    key2222 = asyncssh.generate_private_key("ssh-ed25519")
    known.add("192.0.2.1", 22, key22)
    known.add("192.0.2.1", 2222, key2222)
    lines = known.path.read_text().splitlines()
    assert [line.split()[0] for line in lines] == ["192.0.2.1", "[192.0.2.1]:2222"]
    assert known.path.stat().st_mode & 0o777 == 0o600
    assert [k.export_public_key() for k in known.keys_for("192.0.2.1", 22)] == [key22.export_public_key()]
    assert [k.export_public_key() for k in known.keys_for("192.0.2.1", 2222)] == [key2222.export_public_key()]
    assert known.keys_for("192.0.2.2", 22) == []
