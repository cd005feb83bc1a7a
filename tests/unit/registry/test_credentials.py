"""The controller's credential store and registry naming (controller/credentials.py)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from agent.oci.reference import parse
from controller.credentials import CredentialStore, Login, normalize_registry, registry_of
from controller.errors import UsageError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "references.json").read_text())


@pytest.mark.parametrize("text", sorted(GOLDEN["valid"]))
def test_registry_of_agrees_with_the_agents_parser(text: str) -> None:
    assert registry_of(text) == parse(text).registry


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("docker.io", "docker.io"),
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://registry.example:8443/", "registry.example:8443"),
        ("localhost:5000/", "localhost:5000"),
    ],
)
def test_normalize_registry(typed: str, expected: str) -> None:
    assert normalize_registry(typed) == expected


@pytest.mark.parametrize("typed", ["", "bad host", "host:port", "-x.example"])
def test_normalize_registry_rejects(typed: str) -> None:
    with pytest.raises(UsageError):
        normalize_registry(typed)


def test_store_round_trip_is_private(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "cfg")
    assert store.get("r.example:5000") is None
    store.save("r.example:5000", Login("alice", "pa:ss word"))
    store.save("docker.io", Login("bob", "x"))
    assert store.get("r.example:5000") == Login("alice", "pa:ss word")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert "pa:ss word" not in repr(store.get("r.example:5000"))
    # Docker's layout: base64("user:password") under auths.<host>.auth
    assert json.loads(store.path.read_text())["auths"]["docker.io"] == {"auth": "Ym9iOng="}
    assert store.remove("r.example:5000") is True
    assert store.remove("r.example:5000") is False
    assert store.get("docker.io") == Login("bob", "x")
