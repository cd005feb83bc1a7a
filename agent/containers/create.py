"""Creating a container: validate → image → volumes → record → bundle; rollback in one place.

Every step's leftovers are listed in a `Created` as they appear; a failure at any step (and a
cancellation: the client went away) undoes exactly those, so a failed create leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import agent.log
from agent.containers import names, removal
from agent.containers.context import Context
from agent.containers.seams import RunnableImage
from agent.errors import FailedPrecondition, InvalidArgument
from agent.runtime import bundle
from agent.runtime.options import (
    MountSpec,
    MountType,
    RestartMode,
    RunOptions,
    check_mounts,
    check_name,
    options_to_dict,
    parse_signal,
)
from agent.runtime.spec import ImageConfig, SpecInputs, build_spec, resolve_process
from agent.runtime.users import resolve_in_root
from agent.state.containers import ACTIVE, ContainerRecord, Status, now

log = agent.log.get(__name__)


@dataclass
class Created:
    """What a create made so far, i.e. what its rollback removes."""

    anonymous_volumes: list[str] = field(default_factory=list)
    container_id: str = ""  # set once the record is inserted: from then on the bundle may exist too


def validate(ctx: Context, opts: RunOptions) -> RunOptions:
    """Check the options before anything is made; fill in the network mode's default."""
    name = check_name(opts.name)
    check_mounts(opts.mounts)
    if opts.auto_remove and opts.restart.mode is not RestartMode.NO:
        raise InvalidArgument("--rm and --restart cannot be combined")
    network = opts.network or ("bridge" if ctx.network is not None else "none")
    if network not in ("none", "host") and ctx.network is None:
        raise InvalidArgument(f"network mode {network!r} is not available on this agent (use none or host)")
    for m in opts.mounts:
        if m.type is MountType.BIND and not os.path.exists(m.source):
            raise InvalidArgument(f"invalid mount: bind source path does not exist: {m.source}")
    if opts.stop_signal:
        parse_signal(opts.stop_signal)
    return replace(opts, name=name, network=network)


async def create(ctx: Context, opts: RunOptions) -> ContainerRecord:
    ctx.runtime.ensure_usable()
    opts = validate(ctx, opts)
    runnable = await ctx.images.resolve_for_run(opts.image)
    if ctx.gate is not None:  # may this image run here (the trust policy)?
        await ctx.gate.check(opts.image, runnable.digest)
    image = ImageConfig.from_oci(runnable.config)
    if opts.health is None and image.healthcheck is not None:
        opts = replace(opts, health=image.healthcheck)
    opts = replace(opts, stop_signal=opts.stop_signal or image.stop_signal)
    made = Created()
    try:
        rec = await _make(ctx, opts, image, runnable, made)
    except BaseException:
        await asyncio.shield(rollback(ctx, made))
        raise
    ctx.event("create", rec)
    log.info("container.created", id=rec.id, name=rec.name, image=opts.image)
    return rec


async def _make(
    ctx: Context, opts: RunOptions, image: ImageConfig, runnable: RunnableImage, made: Created
) -> ContainerRecord:
    cid = ctx.new_id()
    name = opts.name or names.generate(ctx.store.names())
    hostname = opts.hostname or (ctx.host.hostname if opts.network == "host" else cid[:12])
    mounts: list[MountSpec] = []
    for m in opts.mounts:
        if m.type is MountType.VOLUME:
            vol = ctx.volumes.create(m.source)
            if vol.anonymous and not m.source:
                made.anonymous_volumes.append(vol.name)
            m = replace(m, source=vol.name)
        mounts.append(m)
    opts = replace(opts, name=name, mounts=tuple(mounts))
    rec = ContainerRecord(
        id=cid,
        name=name,
        image=opts.image,
        image_digest=runnable.digest,
        options=options_to_dict(opts),
        created_at=now(),
        status=Status.CREATING,
        hostname=hostname,
        labels=dict(opts.labels),
        lowerdirs=[str(p) for p in runnable.lowerdirs],
        command=list(resolve_process(opts, image, hostname).args),
    )
    ctx.store.insert(rec)
    made.container_id = cid
    await asyncio.to_thread(build_bundle, ctx, rec, opts, image, list(runnable.lowerdirs))
    return ctx.store.transition(cid, Status.CREATED)


async def rollback(ctx: Context, made: Created) -> None:
    """Undo a failed create: its record, bundle and runtime state if it got that far, its anonymous
    volumes in any case."""
    if made.container_id:
        await removal.discard(ctx, made.container_id, made.anonymous_volumes)
        return
    for v in made.anonymous_volumes:
        ctx.volumes.remove(v, force=True)


def build_bundle(
    ctx: Context, rec: ContainerRecord, opts: RunOptions, image: ImageConfig, lowerdirs: list[Path]
) -> None:
    """The OCI bundle: rootfs mounted, /etc files, config.json (runs in a thread)."""
    paths = ctx.paths(rec.id)
    bundle.prepare(paths)
    bundle.mount_rootfs(paths, lowerdirs)
    user = resolve_in_root(opts.user or image.user, paths.rootfs)
    netns_path: str | None = None
    if opts.network.startswith("container:"):  # joins OTHER's namespace, shares its files
        other = ctx.store.find(opts.network.split(":", 1)[1])
        if other.status not in ACTIVE or not other.pid:
            raise FailedPrecondition(f"cannot join the network of {other.name}: it is not running")
        netns_path = f"/proc/{other.pid}/ns/net"
        shared = ctx.network.etc_files_of(other.id) if ctx.network is not None else None
        etc = shared or bundle.write_etc_files(paths, rec.hostname, host_network=False)
    elif ctx.network is not None and opts.network not in ("none", "host"):
        etc = ctx.network.etc_files(rec.id, rec.hostname)
    else:
        etc = bundle.write_etc_files(paths, rec.hostname, host_network=opts.network == "host")
    volume_sources = {
        m.target: str(ctx.volumes.get(m.source).mountpoint) for m in opts.mounts if m.type is MountType.VOLUME
    }
    spec = build_spec(
        opts,
        image,
        ctx.host,
        SpecInputs(
            container_id=rec.id,
            rootfs=str(paths.rootfs),
            hostname=rec.hostname,
            user=user,
            cgroups_path=f"{ctx.settings.cgroup_parent.rstrip('/')}/{rec.id}",
            etc_files=etc,
            netns_path=netns_path,
            volume_sources=volume_sources,
        ),
    )
    bundle.write_config(paths, spec)
