"""The container manager asks its run gate (the trust policy) before an image runs: create, start,
restart and `start -a` — and so a release's activation, which goes through create and start_container.

Fake runtime and monitor, a real database; a refusal must leave nothing behind and start nothing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.containers import create
from agent.containers.context import Context
from agent.containers.manager import ContainerManager, ContainerSettings
from agent.containers.seams import RunnableImage
from agent.containers.view import ContainerView
from agent.containers.volumes import VolumeManager
from agent.errors import PermissionDenied
from agent.runtime import host
from agent.runtime.options import RunOptions
from agent.runtime.spec import ImageConfig
from agent.state.containers import ContainerRecord, Status
from agent.state.db import Database
from agent.state.events import EventLog
from tests.support.fake_runtime import FakeMonitor, FakeRuntime

DIGEST = "sha256:" + "b" * 64


class Images:
    def __init__(self, lower: Path) -> None:
        self.lower = lower

    async def resolve_for_run(self, ref: str) -> RunnableImage:
        return RunnableImage(DIGEST, {"config": {"Cmd": ["sh"]}}, (self.lower,))


class Gate:
    """Refuses while `refuse` is set; records what it was asked."""

    def __init__(self) -> None:
        self.refuse = False
        self.asked: list[tuple[str, str]] = []

    async def check(self, reference: str, digest: str) -> None:
        self.asked.append((reference, digest))
        if self.refuse:
            raise PermissionDenied(f'image {reference} refused by trust policy rule "x/" (reject): test')


@pytest.fixture
async def setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[ContainerManager, Gate]]:
    db = Database(tmp_path / "dockyard.db")
    events = EventLog(db)
    volumes = VolumeManager(tmp_path, db, events, users_of=ContainerView(db).volume_users)
    runtime = FakeRuntime(tmp_path / "run" / "runc")
    (tmp_path / "lower").mkdir()
    gate = Gate()
    manager = ContainerManager(
        ContainerSettings(data_root=tmp_path, exec_root=tmp_path / "run"),
        db,
        Images(tmp_path / "lower"),
        events,
        volumes,
        runtime=runtime,
        monitor=FakeMonitor(runtime, tmp_path / "run" / "s"),
        host_facts=host.probe(),
        gate=gate,
    )

    def build_bundle(
        ctx: Context, rec: ContainerRecord, opts: RunOptions, image: ImageConfig, lowerdirs: list[Path]
    ) -> None:
        ctx.paths(rec.id).root.mkdir(parents=True)

    monkeypatch.setattr(create, "build_bundle", build_bundle)
    yield manager, gate
    db.close()


async def test_create_asks_the_gate_and_a_refusal_leaves_nothing(
    setup: tuple[ContainerManager, Gate],
) -> None:
    manager, gate = setup
    gate.refuse = True
    with pytest.raises(PermissionDenied, match="refused by trust policy"):
        await manager.create(RunOptions("registry.lab/shop/web:1", name="web"))
    assert manager.list_containers() == []
    assert gate.asked == [("registry.lab/shop/web:1", DIGEST)]


async def test_start_restart_and_attach_of_a_stopped_container_ask_again(
    setup: tuple[ContainerManager, Gate],
) -> None:
    manager, gate = setup
    rec = await manager.create(RunOptions("registry.lab/shop/web:1", name="web"))
    gate.refuse = True  # the policy changed after the create
    with pytest.raises(PermissionDenied):
        await manager.start_container("web")
    with pytest.raises(PermissionDenied):
        await manager.restart_container("web")
    with pytest.raises(PermissionDenied):
        async for _ in manager.attach("web", None, start=True):
            pass
    assert manager.find("web").status is Status.CREATED  # nothing ran
    assert gate.asked[1:] == [("registry.lab/shop/web:1", rec.image_digest)] * 3
