"""One build: a parsed Dockerfile executed stage by stage into an image in the agent's image store.

* Stages: only the target stage and the stages it needs (`FROM <stage>`, `COPY --from=<stage>`) are
  built, in file order. FROM takes an image from the store (pulled through the registry client when
  missing), `scratch`, or an earlier stage; the base image's ONBUILD triggers run right after it.
* Variables: global ARGs (before the first FROM) and the automatic platform ARGs are visible in FROM lines;
  inside a stage an ARG takes the `--build-arg` value, else its default, else the global default; ENV wins
  over ARG. The proxy ARGs reach RUN without being declared and stay out of the cache key.
* Steps: config-only instructions change the image config; RUN runs in a container (`runner.py`);
  COPY/ADD write through an overlay mount (`fileops.py`); WORKDIR creates its directory. Every filesystem
  step runs on an overlay of the stage's snapshots and a fresh upper dir; the upper dir becomes the layer
  (`layer.py`, stored in the content store) and, renamed, its snapshot. An empty diff adds no layer.
* Cache (`cache.py`): each step's key chains its parent's; a hit reuses the step's layer and timestamp, so
  an unchanged rebuild runs nothing and yields the same image ID. `--no-cache` skips lookups.
* Failure: the step's mount, runtime container and temporary directories are removed before the error
  (a DockerfileError naming the line) propagates; nothing is tagged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping, Set
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agent.log
from agent.build import fileops
from agent.build.cache import BuildCache, CacheEntry, base_key, step_key
from agent.build.imageconfig import ImageState, LayerRef, created_by
from agent.build.layer import LayerInfo, strip_overlay_metadata, write_layer
from agent.build.runner import RunStep, StepRunner, settled
from agent.errors import AgentError, InvalidArgument, NotFound
from agent.images.manager import ImageManager
from agent.images.pull import PullFinished, PullResolved
from agent.images.snapshots import chain_ids
from agent.images.store import ImageRecord, Layer
from agent.oci import dockerfile as df
from agent.oci import instructions as ins
from agent.oci.platform import Platform
from agent.oci.platform import host as host_platform
from agent.oci.reference import Reference
from agent.registry.auth import Credentials
from agent.runtime import bundle
from agent.runtime.bundle import ContainerPaths

log = agent.log.get(__name__)

PLATFORM_ARGS = (
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
)
# BuildKit's entitlements a build may be granted with `--allow`; only host networking exists here.
NETWORK_HOST = "network.host"
ENTITLEMENTS = frozenset({NETWORK_HOST})


# ---- options and progress --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOptions:
    dockerfile: str
    dockerfile_name: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    platform: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    registry_auth: Mapping[str, Credentials] = field(default_factory=dict)  # registry host → login
    allow: frozenset[str] = frozenset()  # granted entitlements (`--allow network.host`)


@dataclass(frozen=True)
class StepEvent:
    number: int
    total: int
    text: str


@dataclass(frozen=True)
class OutputEvent:
    line: str


@dataclass(frozen=True)
class CachedEvent:
    number: int


@dataclass(frozen=True)
class LayerEvent:
    digest: str  # "" when the step changed nothing
    size: int  # compressed bytes
    diff_size: int  # uncompressed tar bytes


@dataclass(frozen=True)
class MessageEvent:
    text: str
    warning: bool = False


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    manifest_digest: str
    tags: tuple[str, ...]
    layers: int
    cached_steps: int
    run_steps: int


BuildEvent = StepEvent | OutputEvent | CachedEvent | LayerEvent | MessageEvent
Emit = Callable[[BuildEvent], None]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def describe(instr: ins.Instruction) -> dict[str, Any]:
    """An expanded instruction as cache-key material (no line numbers or spelling)."""
    data = dataclasses.asdict(instr)
    for key in ("line", "text", "escape", "filename"):
        data.pop(key, None)
    return {"keyword": instr.keyword, **data}


def check_entitlements(instr: ins.Instruction, allow: Set[str]) -> None:
    """BuildKit's rule: a step that leaves the build's sandbox needs the entitlement granted explicitly.

    `RUN --network=host` shares the agent host's network namespace: it reaches services listening on the
    host's loopback (a registry, a database, the cloud metadata endpoint) that nothing else in a build can.
    """
    if isinstance(instr, ins.Run) and instr.network == "host" and NETWORK_HOST not in allow:
        raise instr.error(
            f"RUN --network=host needs `dockyard build --allow {NETWORK_HOST}` "
            "(it would reach the agent host's own network and loopback services)"
        )


def platform_args(target: Platform, build: Platform) -> dict[str, str]:
    return {
        "TARGETPLATFORM": str(target),
        "TARGETOS": target.os,
        "TARGETARCH": target.architecture,
        "TARGETVARIANT": target.variant,
        "BUILDPLATFORM": str(build),
        "BUILDOS": build.os,
        "BUILDARCH": build.architecture,
        "BUILDVARIANT": build.variant,
    }


# ---- stage bookkeeping ---------------------------------------------------------------------------------


@dataclass
class _StageCtx:
    stage: df.Stage
    state: ImageState
    key: str
    args: dict[str, str | None] = field(default_factory=dict)  # declared in this stage (None: no value)

    def lookup(self) -> dict[str, str]:
        """What `$VAR` sees: this stage's ARGs with values, overridden by ENV."""
        env = {k: v for k, v in self.args.items() if v is not None}
        env.update(self.state.env)
        return env


@dataclass(frozen=True)
class _StageResult:
    state: ImageState
    key: str


@dataclass
class _SourceRoot:
    path: Path
    what: str
    keep_owner: bool
    cleanup: Callable[[], Awaitable[None]] | None = None


# ---- the builder ---------------------------------------------------------------------------------------


class Builder:
    """Runs one build; `run()` returns the result or raises (AgentError, usually a DockerfileError)."""

    def __init__(
        self,
        *,
        images: ImageManager,
        cache: BuildCache,
        runner: StepRunner,
        work_dir: Path,
        context_dir: Path,
        options: BuildOptions,
        emit: Emit,
        layer_level: int = 6,
    ) -> None:
        self.images = images
        self.cache = cache
        self.runner = runner
        self.work_dir = work_dir
        self.context_dir = context_dir
        self.options = options
        self.emit = emit
        self.layer_level = layer_level
        self.build_id = work_dir.name
        self.host = host_platform()
        self.target_platform = Platform.parse(options.platform) if options.platform else self.host
        self.dockerfile = df.parse(options.dockerfile, options.dockerfile_name)
        self.results: dict[int, _StageResult] = {}
        self.consumed: set[str] = set()
        self.step_no = 0
        self.total = 0
        self.fs_seq = 0
        self.cached_steps = 0
        self.run_steps = 0
        self.empty_dir = work_dir / "empty"
        self._global_declared: Mapping[str, str | None] = {}
        self.network = runner.shared_network(self.build_id, work_dir / "net")

    # -- variables ------------------------------------------------------------------------------------

    def _global_scope(self) -> tuple[dict[str, str], dict[str, str | None]]:
        """(values FROM lines see, every global ARG's value or None)."""
        env = platform_args(self.target_platform, self.host)
        declared: dict[str, str | None] = dict(env)  # the automatic platform ARGs are global ones too
        for arg in self.dockerfile.global_args:
            arg = arg.expand(env)
            for name, default in arg.pairs:
                value = self.options.build_args.get(name, default)
                self.consumed.add(name)
                declared[name] = value
                if value is not None:
                    env[name] = value
                else:
                    env.pop(name, None)
        return env, declared

    def _proxy_env(self) -> list[str]:
        return [f"{k}={v}" for k, v in sorted(self.options.build_args.items()) if k in ins.PROXY_ARGS]

    # -- planning -------------------------------------------------------------------------------------

    def _stage_ref(self, ref: str, before: int) -> df.Stage | None:
        stage = self.dockerfile.stage(ref)
        return stage if stage is not None and stage.index < before else None

    def _needed(self, target: df.Stage, global_env: Mapping[str, str]) -> list[df.Stage]:
        needed: set[int] = set()
        todo = [target]
        while todo:
            stage = todo.pop()
            if stage.index in needed:
                continue
            needed.add(stage.index)
            refs = [stage.from_.expand(global_env).image]
            for instr in stage.instructions:
                if isinstance(instr, ins.Copy) and instr.from_stage:
                    with contextlib.suppress(ins.DockerfileError):
                        refs.append(instr.expand(global_env).from_stage or "")
            for ref in refs:
                dep = self._stage_ref(ref, stage.index)
                if dep is not None:
                    todo.append(dep)
        return [s for s in self.dockerfile.stages if s.index in needed]

    # -- the build ------------------------------------------------------------------------------------

    async def run(self) -> BuildResult:
        try:
            return await self._build()
        finally:
            if self.network is not None:
                await self.network.close()

    async def _build(self) -> BuildResult:
        global_env, self._global_declared = self._global_scope()
        if self.options.target:
            target = self.dockerfile.stage(self.options.target)
            if target is None:
                raise InvalidArgument(
                    f"target stage {self.options.target!r} could not be found in the Dockerfile"
                )
        else:
            target = self.dockerfile.stages[-1]
        stages = self._needed(target, global_env)
        for stage in stages:  # refused before anything is pulled or run (ONBUILD triggers: in `_run`)
            for instr in stage.instructions:
                check_entitlements(instr, self.options.allow)
        self.total = sum(1 + len(s.instructions) for s in stages)
        self.empty_dir.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            self.results[stage.index] = await self._build_stage(stage, global_env)
        unused = sorted(
            k for k in self.options.build_args if k not in self.consumed and k not in ins.PROXY_ARGS
        )
        if unused:
            self.emit(
                MessageEvent(f"one or more build args were not consumed: {', '.join(unused)}", warning=True)
            )
        return await self._finish(self.results[target.index].state)

    def _step(self, text: str) -> int:
        self.step_no += 1
        self.emit(StepEvent(self.step_no, self.total, text))
        return self.step_no

    async def _build_stage(self, stage: df.Stage, global_env: Mapping[str, str]) -> _StageResult:
        from_ = stage.from_.expand(global_env)
        self._step(f"FROM {from_.image}" + (f" AS {from_.name}" if from_.name else ""))
        state, key = await self._base(from_, stage.index)
        ctx = _StageCtx(stage, state, key)
        triggers, state.triggers = state.triggers, []
        for trigger in triggers:
            self.emit(MessageEvent(f"# executing build trigger: {trigger}"))
            instr = df.parse_instruction(
                trigger, from_.line, escape=self.dockerfile.escape, filename=self.dockerfile.filename
            )
            await self._execute(ctx, instr)
        for instr in stage.instructions:
            number = self._step(instr.text)
            await self._execute(ctx, instr, number)
        return _StageResult(ctx.state, ctx.key)

    async def _base(self, from_: ins.From, index: int) -> tuple[ImageState, str]:
        platform = Platform.parse(from_.platform) if from_.platform else self.target_platform
        if from_.image.lower() == "scratch":
            return ImageState.scratch(platform), base_key("scratch", str(platform))
        stage = self._stage_ref(from_.image, index)
        if stage is not None:
            result = self.results[stage.index]
            state = result.state.copy()
            state.cmd_set = False  # a CMD of the parent stage counts as inherited (ENTRYPOINT resets it)
            return state, result.key
        record, config = await self._image(from_.image, platform, from_)
        layers = [
            LayerRef(layer.digest, layer.size, layer.media_type, diff_id)
            for layer, diff_id in zip(record.layers, record.diff_ids, strict=True)
        ]
        return ImageState.from_image(config, layers, platform), base_key(
            record.config_digest, record.platform
        )

    async def _image(
        self, ref: str, platform: Platform, instr: ins.Instruction
    ) -> tuple[ImageRecord, dict[str, Any]]:
        """An image from the store, pulled first when missing."""
        try:
            record = self.images.get(ref)
        except NotFound:
            record = await self._pull(ref, platform, instr)
        except InvalidArgument as exc:
            raise instr.error(f"{instr.keyword}: invalid image reference {ref!r}: {exc}") from None
        _, _, config, _ = await asyncio.to_thread(self.images.inspect, record.digest)
        return record, config

    async def _pull(self, ref: str, platform: Platform, instr: ins.Instruction) -> ImageRecord:
        self.emit(MessageEvent(f"pulling {ref} ({platform}) ..."))
        try:
            registry = Reference.parse(ref).registry
            credentials = self.options.registry_auth.get(registry)
            async for event in self.images.pull(ref, platform=platform, credentials=credentials):
                if isinstance(event, PullResolved):
                    self.emit(MessageEvent(f"{ref}: resolved to {event.digest}"))
                elif isinstance(event, PullFinished):
                    return event.record
        except AgentError as exc:
            raise instr.error(f"{instr.keyword}: cannot pull {ref}: {exc}") from None
        raise instr.error(f"{instr.keyword}: pull of {ref} did not finish")

    # -- steps ----------------------------------------------------------------------------------------

    async def _execute(self, ctx: _StageCtx, instr: ins.Instruction, number: int = 0) -> None:
        if isinstance(instr, ins.Arg):
            self._arg(ctx, instr)
            return
        expanded = instr.expand(ctx.lookup())
        if isinstance(expanded, ins.Run):
            await self._run(ctx, expanded, number)
        elif isinstance(expanded, ins.Copy):
            await self._copy(ctx, expanded, number)
        elif isinstance(expanded, ins.Workdir):
            await self._workdir(ctx, expanded, number)
        elif isinstance(expanded, ins.From):
            raise expanded.error("FROM is not allowed here")
        else:
            ctx.state.apply(expanded)
            ctx.key = step_key(ctx.key, describe(expanded))
            entry = self._config_entry(ctx.key, expanded)
            ctx.state.add_history(entry.created, created_by(expanded, ctx.state.shell), empty_layer=True)

    def _arg(self, ctx: _StageCtx, instr: ins.Arg) -> None:
        expanded = instr.expand(ctx.lookup())
        material: list[tuple[str, str | None]] = []
        for name, default in expanded.pairs:
            self.consumed.add(name)
            if name in self.options.build_args:
                value: str | None = self.options.build_args[name]
            elif default is not None:
                value = default
            else:
                value = self._global_declared.get(name)
            ctx.args[name] = value
            material.append((name, None if name in ins.PROXY_ARGS else value))
        ctx.key = step_key(ctx.key, {"keyword": "ARG", "values": material})

    def _config_entry(self, key: str, instr: ins.Instruction) -> CacheEntry:
        """Config-only steps are cached too: their history timestamps keep rebuilds identical."""
        entry = None if self.options.no_cache else self.cache.get(key)
        if entry is None:
            entry = CacheEntry(key=key, created=now_rfc3339(), description=instr.text)
            self.cache.put(entry)
        return entry

    def _hit(self, key: str, number: int, *, quiet: bool = False) -> CacheEntry | None:
        if self.options.no_cache:
            return None
        entry = self.cache.get(key)
        if entry is None:
            return None
        if entry.layer_digest is not None and not self.images.content.has(entry.layer_digest):
            self.cache.delete(key)  # its layer was garbage-collected: a miss
            return None
        self.cache.touch(key)
        if not quiet:
            self.cached_steps += 1
            self.emit(CachedEvent(number))
        return entry

    def _apply_entry(self, ctx: _StageCtx, entry: CacheEntry, description: str) -> None:
        if entry.diff_id is not None and entry.layer_digest is not None:
            ctx.state.add_layer(
                LayerRef(entry.layer_digest, entry.layer_size, entry.media_type or "", entry.diff_id)
            )
        ctx.state.add_history(entry.created, description, empty_layer=entry.diff_id is None)
        ctx.key = entry.key

    async def _run(self, ctx: _StageCtx, instr: ins.Run, number: int) -> None:
        check_entitlements(instr, self.options.allow)
        state = ctx.state
        argv = instr.command.argv(state.shell)
        env = state.env
        args = [f"{k}={v}" for k, v in sorted(ctx.args.items()) if v is not None and k not in env]
        key = step_key(ctx.key, {**describe(instr), "argv": argv, "args": args})
        description = created_by(instr, state.shell)
        entry = self._hit(key, number)
        if entry is None:
            if self.target_platform.architecture != self.host.architecture:
                raise instr.error(
                    f"RUN: cannot run commands for platform {self.target_platform} on a {self.host} host "
                    "(no emulation); build on a matching agent with -H"
                )
            proxy = [e for e in self._proxy_env() if e.partition("=")[0] not in env]
            step = RunStep(
                step_id=f"{self.build_id}-{self._next_fs()}",
                argv=argv,
                env=state.env_list,
                extra_env=args + proxy,
                user=state.user,
                workdir=state.workdir,
                network=instr.network,
                shared_network=self.network,
            )

            async def action(paths: ContainerPaths) -> list[str]:
                result = await self.runner.run(paths, step, lambda line: self.emit(OutputEvent(line)))
                if result.exit_code != 0:
                    raise instr.error(
                        f"RUN {' '.join(argv)}: the command returned a non-zero code: {result.exit_code}"
                    )
                return result.stubs

            self.run_steps += 1
            entry = await self._fs_step(ctx, key, description, action)
        self._apply_entry(ctx, entry, description)

    async def _copy(self, ctx: _StageCtx, instr: ins.Copy, number: int) -> None:
        source = await self._source_root(ctx, instr)
        try:
            try:
                sources, multiple = await asyncio.to_thread(
                    fileops.resolve_sources, source.path, instr.sources, source.what
                )
                digest = await asyncio.to_thread(fileops.checksum, sources, with_owner=source.keep_owner)
            except InvalidArgument as exc:
                raise instr.error(f"{instr.keyword}: {exc}") from None
            dest = ctx.state.absolute(instr.dest)
            key = step_key(ctx.key, {**describe(instr), "dest": dest}, digest)
            description = created_by(instr, ctx.state.shell)
            entry = self._hit(key, number)
            if entry is None:

                async def action(paths: ContainerPaths) -> list[str]:
                    def work() -> None:
                        rootfs = paths.rootfs
                        owner = None
                        if instr.chown:
                            owner = fileops.parse_chown(
                                instr.chown,
                                fileops.read_etc(rootfs, "passwd"),
                                fileops.read_etc(rootfs, "group"),
                            )
                        options = fileops.CopyOptions(
                            owner=owner,
                            keep_owner=source.keep_owner,
                            mode=int(instr.chmod, 8) if instr.chmod else None,
                            extract_archives=isinstance(instr, ins.Add),
                        )
                        fileops.copy_into(sources, multiple, rootfs, dest, options)

                    try:
                        await settled(asyncio.to_thread(work))
                    except (InvalidArgument, OSError) as exc:
                        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                        raise instr.error(f"{instr.keyword}: {reason}") from None
                    return []

                entry = await self._fs_step(ctx, key, description, action)
            self._apply_entry(ctx, entry, description)
        finally:
            if source.cleanup is not None:
                await source.cleanup()

    async def _source_root(self, ctx: _StageCtx, instr: ins.Copy) -> _SourceRoot:
        """The context, or (COPY --from) a read view of an earlier stage or an image."""
        if not instr.from_stage:
            return _SourceRoot(self.context_dir, "build context", keep_owner=False)
        ref = instr.from_stage
        stage = self._stage_ref(ref, ctx.stage.index)
        if stage is not None:
            diff_ids = self.results[stage.index].state.diff_ids
            layers = self.results[stage.index].state.layers
            what = f"stage {ref}"
        else:
            if ref.isdigit():
                raise instr.error(f"{instr.keyword}: --from={ref}: there is no earlier stage {ref}")
            record, _ = await self._image(ref, self.target_platform, instr)
            diff_ids = list(record.diff_ids)
            layers = [
                LayerRef(x.digest, x.size, x.media_type, d)
                for x, d in zip(record.layers, diff_ids, strict=True)
            ]
            what = f"image {ref}"
        if not diff_ids:
            return _SourceRoot(self.empty_dir, what, keep_owner=True)
        lowerdirs = await self._lowerdirs(layers)
        paths = ContainerPaths(self.work_dir / f"from-{self._next_fs()}")
        await asyncio.to_thread(bundle.prepare, paths)
        try:
            await settled(asyncio.to_thread(bundle.mount_rootfs, paths, lowerdirs))
        except BaseException:
            await settled(asyncio.to_thread(bundle.remove, paths))
            raise

        async def cleanup() -> None:
            await settled(asyncio.to_thread(bundle.remove, paths))

        return _SourceRoot(paths.rootfs, what, keep_owner=True, cleanup=cleanup)

    async def _workdir(self, ctx: _StageCtx, instr: ins.Workdir, number: int) -> None:
        ctx.state.apply(instr)
        workdir = ctx.state.workdir
        key = step_key(ctx.key, {"keyword": "WORKDIR", "path": workdir})
        description = f"WORKDIR {workdir}"
        entry = self._hit(key, number, quiet=True)
        if entry is None:

            async def action(paths: ContainerPaths) -> list[str]:
                await settled(asyncio.to_thread(fileops.ensure_directory, paths.rootfs, workdir))
                return []

            entry = await self._fs_step(ctx, key, description, action, quiet=True)
        self._apply_entry(ctx, entry, description)

    # -- filesystem steps -----------------------------------------------------------------------------

    def _next_fs(self) -> int:
        self.fs_seq += 1
        return self.fs_seq

    async def _lowerdirs(self, layers: list[LayerRef]) -> list[Path]:
        if not layers:
            return [self.empty_dir]
        diff_ids = [layer.diff_id for layer in layers]
        chains = chain_ids(diff_ids)
        if not all(self.images.snapshots.has(c) for c in chains):
            await self.images.ensure_snapshots(
                [Layer(x.digest, x.media_type, x.size) for x in layers], diff_ids
            )
        return self.images.snapshots.lowerdirs(chains)

    async def _fs_step(
        self,
        ctx: _StageCtx,
        key: str,
        description: str,
        action: Callable[[ContainerPaths], Awaitable[list[str]]],
        *,
        quiet: bool = False,
    ) -> CacheEntry:
        """Run `action` on a fresh overlay of the stage; turn the upper dir into a layer and snapshot."""
        paths = ContainerPaths(self.work_dir / f"step-{self._next_fs()}")
        lowerdirs = await self._lowerdirs(ctx.state.layers)
        await asyncio.to_thread(bundle.prepare, paths)
        try:
            await settled(asyncio.to_thread(bundle.mount_rootfs, paths, lowerdirs))
            try:
                stubs = await action(paths)
            finally:
                await settled(asyncio.to_thread(bundle.unmount_rootfs, paths))
            info = await settled(
                asyncio.to_thread(self._commit_upper, paths, stubs, lowerdirs, ctx.state.diff_ids)
            )
        finally:
            await settled(asyncio.to_thread(bundle.remove, paths))
        if info is None:
            if not quiet:
                self.emit(LayerEvent("", 0, 0))
            entry = CacheEntry(key=key, created=now_rfc3339(), description=description)
        else:
            self.emit(LayerEvent(info.digest, info.size, info.uncompressed_size))
            entry = CacheEntry(
                key=key,
                created=now_rfc3339(),
                diff_id=info.diff_id,
                layer_digest=info.digest,
                layer_size=info.size,
                media_type=info.media_type,
                description=description,
            )
        self.cache.put(entry)
        return entry

    def _commit_upper(
        self, paths: ContainerPaths, stubs: list[str], lowerdirs: list[Path], parent_diff_ids: list[str]
    ) -> LayerInfo | None:
        """Blocking: the upper dir as a layer blob in the content store and as a snapshot."""
        upper = paths.upper
        StepRunner.drop_stubs(upper, stubs, lowerdirs)
        strip_overlay_metadata(upper)
        content = self.images.content
        with content.temp_file("build") as (tmp, out):  # closed and removed however this ends
            info = write_layer(upper, out, level=self.layer_level)
            out.flush()
            os.fsync(out.fileno())
            if info.empty:
                return None
            content.adopt(tmp, info.digest)
        chain = chain_ids([*parent_diff_ids, info.diff_id])[-1]
        snapshots = self.images.snapshots
        if not snapshots.has(chain):
            fs = snapshots.prepare(chain)
            try:
                os.rename(upper, fs)  # the empty prepared dir is replaced by the upper dir
                os.chmod(fs, 0o755)
                snapshots.commit(chain, fs, info.diff_id, info.uncompressed_size)
            except BaseException:
                snapshots.abort(fs)
                raise
        self.images.store.record_layer_size(info.diff_id, info.uncompressed_size)
        return info

    # -- the image ------------------------------------------------------------------------------------

    async def _finish(self, state: ImageState) -> BuildResult:
        content = self.images.content
        config = state.config_json(extra_labels=dict(self.options.labels))
        config_digest = await asyncio.to_thread(content.put_bytes, config)
        manifest = state.manifest_json(config_digest, len(config))
        manifest_digest = await asyncio.to_thread(content.put_bytes, manifest)
        tags: list[str] = []
        if self.options.tags:
            for tag in self.options.tags:
                record = await self.images.register(tag, manifest_digest)
                tags.append(record.name)
        else:
            await self.images.register("", manifest_digest)
        log.info(
            "build.finished",
            image_id=config_digest,
            manifest=manifest_digest,
            tags=tags,
            layers=len(state.layers),
            cached_steps=self.cached_steps,
        )
        return BuildResult(
            image_id=config_digest,
            manifest_digest=manifest_digest,
            tags=tuple(tags),
            layers=len(state.layers),
            cached_steps=self.cached_steps,
            run_steps=self.run_steps,
        )
