"""The releases tables: revisions numbered once per spec, checked transitions, the images releases hold."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import NotFound
from agent.releases.phases import InvalidMove, Phase, Pointers
from agent.releases.spec import ContainerSpec, ReleaseSpec
from agent.releases.store import Policy, ReleaseStore
from agent.runtime.options import RunOptions
from agent.state.db import Database

IMAGE = "registry.lab:5000/shop/web@sha256:" + "a" * 64


def spec(digest: str) -> ReleaseSpec:
    return ReleaseSpec(
        "web", (ContainerSpec("app", RunOptions(image=IMAGE)),), digest, b"raw-" + digest.encode()
    )


@pytest.fixture
def store(tmp_path: Path) -> ReleaseStore:
    return ReleaseStore(Database(tmp_path / "dockyard.db"))


def test_same_spec_digest_is_the_same_revision(store: ReleaseStore) -> None:
    assert store.record_revision(spec("d1"), created_by="alice", rollout_id="r-1") == (1, True)
    assert store.record_revision(spec("d1"), created_by="bob", rollout_id="r-2") == (1, False)
    assert store.record_revision(spec("d2"), created_by="bob", rollout_id="r-2") == (2, True)
    rev = store.revision("web", 1)
    assert (rev.created_by, rev.rollout_id, rev.spec.raw) == ("alice", "r-1", b"raw-d1")
    assert rev.containers[0].options.image == IMAGE
    assert [r.number for r in store.revisions("web")] == [2, 1]


def test_state_survives_a_new_store_over_the_same_database(tmp_path: Path) -> None:
    db_path = tmp_path / "dockyard.db"
    first = ReleaseStore(Database(db_path))
    first.create_staged("web")
    first.transition(
        "web", Phase.ACTIVATING, pointers=Pointers(1, 0, 0, 1), landing=Phase.VERIFYING, policy=Policy(0, 30)
    )
    again = ReleaseStore(Database(db_path)).get("web")
    assert (again.phase, again.landing, again.policy, again.pointers) == (
        Phase.ACTIVATING,
        Phase.VERIFYING,
        Policy(0, 30),
        Pointers(1, 0, 0, 1),
    )


def test_transitions_are_checked(store: ReleaseStore) -> None:
    store.create_staged("web")
    with pytest.raises(InvalidMove):
        store.transition("web", Phase.COMMITTED)
    with pytest.raises(NotFound):
        store.transition("nope", Phase.ACTIVATING)


def test_images_held_by_a_release_and_who_holds_them(store: ReleaseStore) -> None:
    store.record_revision(spec("d1"), created_by="a", rollout_id="")
    store.set_image_digests("web", 1, {"app": "sha256:one"})
    store.record_revision(spec("d2"), created_by="a", rollout_id="")
    store.set_image_digests("web", 2, {"app": "sha256:two"})
    store.create_staged("web")
    # staged only: the newest staged revision is held
    assert store.image_digests() == {"sha256:two"}
    store.transition("web", Phase.ACTIVATING, pointers=Pointers(1, 0, 1, 1))
    assert store.image_digests() == {"sha256:one", "sha256:two"}
    assert store.image_holder("sha256:one") == "release web (revision 1, active, last known good)"
    assert store.image_holder("sha256:two") == "release web (revision 2, staged)"
    assert store.image_holder("sha256:other") is None
