"""`docker commit`: a new image from a container's writable layer on top of the container's image.

The container's overlay upper dir is written as one OCI gzip layer by `agent.build.layer.write_layer`
(whiteouts for deletions, opaque directories), added to the content store, and listed after the image's
layers. The config is the image's, with what the container was created with applied the way Docker's
container config carries it into a commit (Env merged by key, Cmd/Entrypoint, WorkingDir, User, Labels,
StopSignal), then the `--change` lines (parsed by the Dockerfile parser, `agent.oci.dockerfile`, and
applied by `agent.build.imageconfig`), plus one history entry. A running container is paused while its
layer is written (Docker's default), so the layer is one consistent moment of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import agent.log
from agent import fsroot
from agent.build.imageconfig import ImageState, LayerRef
from agent.build.layer import LayerInfo, write_layer
from agent.containers.manager import ContainerManager
from agent.errors import AgentError, Conflict, FailedPrecondition, InvalidArgument
from agent.images.manager import ImageManager
from agent.images.store import ImageRecord, normalize_name
from agent.oci import instructions as ins
from agent.oci.dockerfile import parse_instruction
from agent.oci.platform import Platform
from agent.runtime import bundle
from agent.runtime.options import RunOptions
from agent.state.containers import ContainerRecord, Status

log = agent.log.get(__name__)

# What `docker commit --change` accepts.
CHANGE_KEYWORDS = frozenset(
    {"CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "USER", "VOLUME", "WORKDIR"}
)


@dataclass(frozen=True)
class CommitOptions:
    reference: str = ""
    message: str = ""
    author: str = ""
    changes: tuple[str, ...] = ()
    pause: bool = True


@dataclass(frozen=True)
class CommitResult:
    record: ImageRecord
    layer: LayerInfo


def parse_changes(lines: tuple[str, ...]) -> list[ins.Instruction]:
    """The `--change` lines as instructions; anything docker commit refuses is InvalidArgument."""
    out = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        keyword = text.split(None, 1)[0].upper() if text else ""
        if keyword not in CHANGE_KEYWORDS:
            raise InvalidArgument(
                f"--change {line!r}: {keyword or 'an empty line'} is not allowed "
                f"(use one of {', '.join(sorted(CHANGE_KEYWORDS))})"
            )
        try:
            out.append(parse_instruction(text, number, filename="--change"))
        except ins.DockerfileError as exc:
            raise InvalidArgument(f"--change {line!r}: {exc.reason}") from None
    return out


def container_config(base: dict[str, Any], opts: RunOptions) -> dict[str, Any]:
    """The image config `config` object with the container's own settings applied (Docker's rules)."""
    config = dict(base)
    if opts.env:
        env = [str(e) for e in config.get("Env") or []]
        keys = [e.partition("=")[0] for e in env]
        for item in opts.env:
            key = item.partition("=")[0]
            if "=" not in item:
                continue  # a bare KEY was resolved from the client's environment, or dropped
            if key in keys:
                env[keys.index(key)] = item
            else:
                env.append(item)
                keys.append(key)
        config["Env"] = env
    if opts.entrypoint is not None:
        config["Entrypoint"] = list(opts.entrypoint) or None
        if opts.command is None:
            config["Cmd"] = None  # a new entrypoint resets the image's command, as in `docker run`
    if opts.command is not None:
        config["Cmd"] = list(opts.command)
    if opts.workdir:
        config["WorkingDir"] = opts.workdir
    if opts.user:
        config["User"] = opts.user
    if opts.labels:
        config["Labels"] = {**(config.get("Labels") or {}), **opts.labels}
    if opts.stop_signal:
        config["StopSignal"] = opts.stop_signal
    return config


class Committer:
    """Makes images from containers of one agent."""

    def __init__(self, containers: ContainerManager, images: ImageManager) -> None:
        self._containers = containers
        self._images = images

    async def commit(self, ref: str, options: CommitOptions) -> CommitResult:
        name = normalize_name(options.reference) if options.reference else ""
        changes = parse_changes(options.changes)
        rec = self._containers.find(ref)
        if rec.status in (Status.CREATING, Status.REMOVING, Status.DEAD):
            raise FailedPrecondition(f"container {rec.name} is {rec.status} and cannot be committed")
        base = self._images.get(rec.image_digest)
        base_config, _ = self._images.documents(base)
        state = self._state(base, base_config, rec)
        for instr in changes:
            state.apply(instr.expand(state.env))
        async with self._images.operation():
            paused = await self._pause(rec) if options.pause else False
            try:
                layer = await asyncio.to_thread(self._write_layer, rec)
            finally:
                if paused:
                    with contextlib.suppress(AgentError):
                        await self._containers.unpause(rec.id)
            now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            state.add_layer(LayerRef(layer.digest, layer.size, layer.media_type, layer.diff_id))
            entry: dict[str, Any] = {"created": now, "created_by": " ".join(rec.command)}
            if options.message:
                entry["comment"] = options.message
            if options.author:
                entry["author"] = options.author
                state.author = options.author
            state.history.append(entry)
            config = state.config_json()
            config_digest = await asyncio.to_thread(self._images.content.put_bytes, config)
            manifest = state.manifest_json(config_digest, len(config))
            manifest_digest = await asyncio.to_thread(self._images.content.put_bytes, manifest)
            record = await self._images.register(name, manifest_digest)
        log.info(
            "container.committed",
            id=rec.id,
            image_ref=name or None,
            digest=manifest_digest,
            layer=layer.digest,
            layer_bytes=layer.size,
            paused=paused,
        )
        return CommitResult(record, layer)

    def _state(self, base: ImageRecord, config_bytes: bytes, rec: ContainerRecord) -> ImageState:
        image_config = json.loads(config_bytes)
        layers = [
            LayerRef(layer.digest, layer.size, layer.media_type, diff_id)
            for layer, diff_id in zip(base.layers, base.diff_ids, strict=True)
        ]
        state = ImageState.from_image(image_config, layers, Platform.parse(base.platform))
        state.config = container_config(state.config, self._containers.options(rec))
        return state

    async def _pause(self, rec: ContainerRecord) -> bool:
        """Pause a running container; False when it is not running (then there is nothing to freeze)."""
        if self._containers.find(rec.id).status is not Status.RUNNING:
            return False
        try:
            await self._containers.pause(rec.id, by="commit")  # thawed at start-up if the agent dies
        except FailedPrecondition:
            return False  # it stopped meanwhile
        return True

    def _write_layer(self, rec: ContainerRecord) -> LayerInfo:
        paths = self._containers.paths(rec.id)
        try:
            spec = bundle.read_config(paths)
        except (OSError, ValueError):
            spec = {}
        stubs = mount_stubs(paths.upper, spec, [Path(d) for d in rec.lowerdirs])
        content = self._images.content
        with content.temp_file("commit") as (tmp, out):  # closed and removed however this ends
            try:
                info = write_layer(paths.upper, out, exclude=stubs)
            except FileNotFoundError as exc:
                raise Conflict("the container was removed while it was being committed") from exc
            out.flush()
            os.fsync(out.fileno())
            content.adopt(tmp, info.digest)
        return info


def mount_stubs(upper: Path, spec: dict[str, Any], lowerdirs: list[Path]) -> frozenset[str]:
    """What runc made in the upper dir to mount over (/etc/hosts, a volume's directory...): a mount
    destination of the spec that no image layer has and that is an empty file or directory up there.
    Docker keeps these out of a commit too (they live in its separate "init" layer). Looked up by
    directory fd (`agent.fsroot`): a live container's symlinks never lead the check to host paths."""
    out = set()
    for mount in spec.get("mounts") or []:
        rel = posixpath.normpath(str(mount.get("destination", ""))).lstrip("/")
        if not rel or rel == "." or rel.startswith(".."):
            continue
        if any(_lstat_in(lower, rel) is not None for lower in lowerdirs):
            continue
        st = _lstat_in(upper, rel)
        if st is None:
            continue
        if (stat.S_ISREG(st.st_mode) and st.st_size == 0) or (
            stat.S_ISDIR(st.st_mode) and _is_empty_dir(upper, rel)
        ):
            out.add(rel)
    return frozenset(out)


def _open_in(root: Path, rel: str, flags: int) -> int | None:
    """`rel` opened inside `root` (symlinks resolve within it), or None when it is not there."""
    try:
        rootfd = fsroot.open_root(root)
    except OSError:
        return None
    try:
        return fsroot.resolve(rootfd, rel, flags)
    except OSError:
        return None
    finally:
        os.close(rootfd)


def _lstat_in(root: Path, rel: str) -> os.stat_result | None:
    fd = _open_in(root, rel, os.O_PATH | os.O_NOFOLLOW)
    if fd is None:
        return None
    try:
        return os.fstat(fd)
    finally:
        os.close(fd)


def _is_empty_dir(root: Path, rel: str) -> bool:
    fd = _open_in(root, rel, fsroot.O_DIR)
    if fd is None:
        return False
    try:
        return not os.listdir(fd)
    finally:
        os.close(fd)
