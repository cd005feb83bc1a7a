"""A failed create leaves nothing behind, whichever step fails (agent/containers/create.py).

The container core runs on the fake runtime and monitor (tests/support/fake_runtime.py), a real database,
real volumes, and an image source of our own; no root needed. The bundle step is replaced by one that
writes into the container's directory as the real one does (the real one mounts an overlay: root only)
and fails on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.containers import create
from agent.containers.context import Context
from agent.containers.manager import ContainerManager, ContainerSettings
from agent.containers.seams import RunnableImage
from agent.containers.view import ContainerView
from agent.containers.volumes import VolumeManager
from agent.errors import AlreadyExists, InvalidArgument, NotFound
from agent.runtime import host
from agent.runtime.options import MountSpec, MountType, RunOptions
from agent.runtime.spec import ImageConfig
from agent.state.containers import ContainerRecord, Status
from agent.state.db import Database
from agent.state.events import EventLog
from tests.support.fake_runtime import FakeMonitor, FakeRuntime

ANONYMOUS = MountSpec(MountType.VOLUME, "/data")
NAMED = MountSpec(MountType.VOLUME, "/keep", source="kept")


class Images:
    """An image source with one image, `busybox`; anything else is not found."""

    def __init__(self, lower: Path) -> None:
        self.lower = lower

    async def resolve_for_run(self, ref: str) -> RunnableImage:
        if ref != "busybox":
            raise NotFound(f"no such image: {ref}")
        return RunnableImage("sha256:" + "b" * 64, {"config": {"Cmd": ["sh"]}}, (self.lower,))


@dataclass
class Core:
    manager: ContainerManager
    volumes: VolumeManager
    runtime: FakeRuntime
    data_root: Path
    bundle_fails: BaseException | None = None

    @property
    def ctx(self) -> Context:
        return self.manager.ctx

    def containers(self) -> list[ContainerRecord]:
        return self.manager.list_containers()

    def volume_names(self) -> set[str]:
        return {v.name for v in self.volumes.list_volumes()}

    def container_dirs(self) -> list[Path]:
        root = self.data_root / "containers"
        return sorted(root.iterdir()) if root.exists() else []


@pytest.fixture
async def core(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Core]:
    db = Database(tmp_path / "dockyard.db")
    events = EventLog(db)
    view = ContainerView(db)
    volumes = VolumeManager(tmp_path, db, events, users_of=view.volume_users)
    runtime = FakeRuntime(tmp_path / "run" / "runc")
    (tmp_path / "lower").mkdir()
    manager = ContainerManager(
        ContainerSettings(data_root=tmp_path, exec_root=tmp_path / "run"),
        db,
        Images(tmp_path / "lower"),
        events,
        volumes,
        runtime=runtime,
        monitor=FakeMonitor(runtime, tmp_path / "run" / "s"),
        host_facts=host.probe(),
    )
    c = Core(manager, volumes, runtime, tmp_path)

    def build_bundle(
        ctx: Context, rec: ContainerRecord, opts: RunOptions, image: ImageConfig, lowerdirs: list[Path]
    ) -> None:
        paths = ctx.paths(rec.id)
        paths.root.mkdir(parents=True)
        (paths.root / "config.json").write_text("{}")
        if c.bundle_fails is not None:
            raise c.bundle_fails

    monkeypatch.setattr(create, "build_bundle", build_bundle)
    yield c
    db.close()


def assert_nothing_left(core: Core, *, volumes: frozenset[str] = frozenset()) -> None:
    assert core.containers() == []
    assert core.container_dirs() == []
    assert core.volume_names() == volumes
    assert core.runtime.list_ids() == []
    assert core.ctx.locks == {}


async def test_a_create_that_succeeds_leaves_a_created_record_and_its_volumes(core: Core) -> None:
    rec = await core.manager.create(RunOptions("busybox", name="ok", mounts=(ANONYMOUS, NAMED)))
    assert rec.status is Status.CREATED
    assert [r.name for r in core.containers()] == ["ok"]
    assert len(core.volume_names()) == 2 and "kept" in core.volume_names()


async def test_invalid_options_fail_before_anything_is_made(core: Core) -> None:
    with pytest.raises(InvalidArgument):
        await core.manager.create(RunOptions("busybox", network="bridge", mounts=(ANONYMOUS,)))
    assert_nothing_left(core)


async def test_an_image_that_cannot_be_resolved_leaves_nothing(core: Core) -> None:
    with pytest.raises(NotFound):
        await core.manager.create(RunOptions("nosuch", mounts=(ANONYMOUS, NAMED)))
    assert_nothing_left(core)


async def test_a_volume_that_cannot_be_made_takes_the_earlier_anonymous_ones_along(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_create = core.volumes.create

    def create_volume(name: str = "", *args: object, **kwargs: bool) -> object:
        if name == "kept":
            raise OSError(28, "No space left on device")
        return real_create(name)

    monkeypatch.setattr(core.volumes, "create", create_volume)
    with pytest.raises(OSError):
        await core.manager.create(RunOptions("busybox", mounts=(ANONYMOUS, NAMED)))
    assert_nothing_left(core)


async def test_a_name_in_use_removes_the_new_anonymous_volumes_and_keeps_the_other_container(
    core: Core,
) -> None:
    first = await core.manager.create(RunOptions("busybox", name="web"))
    with pytest.raises(AlreadyExists):
        await core.manager.create(RunOptions("busybox", name="web", mounts=(ANONYMOUS,)))
    assert [r.id for r in core.containers()] == [first.id]
    assert core.container_dirs() == [core.ctx.paths(first.id).root]
    assert core.volume_names() == set()


async def test_a_bundle_that_fails_removes_record_files_and_anonymous_volumes_but_not_named_ones(
    core: Core,
) -> None:
    core.bundle_fails = InvalidArgument("unable to find user nobody")
    with pytest.raises(InvalidArgument):
        await core.manager.create(RunOptions("busybox", name="web", mounts=(ANONYMOUS, NAMED)))
    assert_nothing_left(core, volumes=frozenset({"kept"}))


async def test_a_create_cancelled_while_building_its_bundle_leaves_nothing(core: Core) -> None:
    core.bundle_fails = asyncio.CancelledError()
    with pytest.raises(asyncio.CancelledError):
        await core.manager.create(RunOptions("busybox", mounts=(ANONYMOUS,)))
    assert_nothing_left(core)


async def test_a_record_that_cannot_become_created_is_rolled_back(
    core: Core, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_transition = core.ctx.store.transition

    def transition(container_id: str, to: Status, **changes: Any) -> ContainerRecord:
        if to is Status.CREATED:
            raise OSError(5, "Input/output error")
        return real_transition(container_id, to, **changes)

    monkeypatch.setattr(core.ctx.store, "transition", transition)
    with pytest.raises(OSError):
        await core.manager.create(RunOptions("busybox", mounts=(ANONYMOUS,)))
    assert_nothing_left(core)
