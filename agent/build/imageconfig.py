"""The image a build stage produces: how each instruction changes the OCI image config (pure, no I/O).

`ImageState` starts from a base image's config (or `scratch`), takes config-only instructions (`apply`),
layers (`add_layer`) and history entries, and finally renders the image config JSON (with
`rootfs.diff_ids` and `history`) and the OCI manifest. Docker's rules kept here:

* shell-form CMD/ENTRYPOINT/HEALTHCHECK run through the current SHELL (`["/bin/sh", "-c"]` by default);
* ENTRYPOINT resets a CMD inherited from the base image (not one set earlier in the same stage);
* a relative WORKDIR is joined to the previous one;
* ONBUILD triggers of the base image run right after FROM and are not passed on to the new image;
* ENV values replace earlier ones in place (keeping the order of first definition).
"""

from __future__ import annotations

import copy
import json
import posixpath
from dataclasses import dataclass, field
from typing import Any

from agent.images.store import parse_created
from agent.oci import instructions as ins
from agent.oci.platform import Platform

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
_OCI_LAYER_TYPES = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": OCI_LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.docker.image.rootfs.diff.tar.zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
HISTORY_COMMENT = "dockyard build"
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class LayerRef:
    """A layer blob the image lists (the compressed blob; the diff ID is kept alongside)."""

    digest: str
    size: int
    media_type: str
    diff_id: str


def oci_layer_type(media_type: str) -> str:
    """The OCI name of a layer media type (Docker's names carry the same bytes)."""
    return _OCI_LAYER_TYPES.get(media_type, media_type)


def env_map(env: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in env:
        key, _, value = item.partition("=")
        out[key] = value
    return out


@dataclass
class ImageState:
    """A stage's image while it is built."""

    platform: Platform
    config: dict[str, Any] = field(default_factory=dict)
    author: str = ""
    layers: list[LayerRef] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    base_created: str = EPOCH
    triggers: list[str] = field(default_factory=list)  # the base's ONBUILD, to run after FROM
    cmd_set: bool = False

    @classmethod
    def scratch(cls, platform: Platform) -> ImageState:
        return cls(platform=platform)

    @classmethod
    def from_image(
        cls, image_config: dict[str, Any], layers: list[LayerRef], platform: Platform
    ) -> ImageState:
        """Start from a base image's config JSON and its layers."""
        config = copy.deepcopy(image_config.get("config") or {})
        triggers = [str(t) for t in (config.pop("OnBuild", None) or [])]
        history = copy.deepcopy(image_config.get("history") or [])
        return cls(
            platform=Platform.from_oci(image_config) or platform,
            config=config,
            author=str(image_config.get("author") or ""),
            layers=list(layers),
            history=history if isinstance(history, list) else [],
            base_created=str(image_config.get("created") or EPOCH),
            triggers=triggers,
        )

    def copy(self) -> ImageState:
        return copy.deepcopy(self)

    # -- views --------------------------------------------------------------------------------------------

    @property
    def diff_ids(self) -> list[str]:
        return [layer.diff_id for layer in self.layers]

    @property
    def env_list(self) -> list[str]:
        return [str(e) for e in self.config.get("Env") or []]

    @property
    def env(self) -> dict[str, str]:
        return env_map(self.env_list)

    @property
    def shell(self) -> list[str]:
        return [str(s) for s in self.config.get("Shell") or ins.DEFAULT_SHELL]

    @property
    def workdir(self) -> str:
        return str(self.config.get("WorkingDir") or "/")

    @property
    def user(self) -> str:
        return str(self.config.get("User") or "")

    def absolute(self, path: str) -> str:
        """A path as an instruction means it: relative ones are relative to WORKDIR (trailing / kept)."""
        joined = path if path.startswith("/") else posixpath.join(self.workdir, path)
        cleaned = posixpath.normpath(joined)
        if cleaned.startswith("//"):
            cleaned = "/" + cleaned.lstrip("/")
        return cleaned + ("/" if path.endswith(("/", "/.")) and cleaned != "/" else "")

    # -- changes ------------------------------------------------------------------------------------------

    def set_env(self, key: str, value: str) -> None:
        env = self.env_list
        for i, item in enumerate(env):
            if item.partition("=")[0] == key:
                env[i] = f"{key}={value}"
                break
        else:
            env.append(f"{key}={value}")
        self.config["Env"] = env

    def apply(self, instr: ins.Instruction) -> None:
        """Apply a config-only instruction (already expanded)."""
        cfg = self.config
        if isinstance(instr, ins.Env):
            for key, value in instr.pairs:
                self.set_env(key, value)
        elif isinstance(instr, ins.Label):
            labels = dict(cfg.get("Labels") or {})
            labels.update(dict(instr.pairs))
            cfg["Labels"] = labels
        elif isinstance(instr, ins.Workdir):
            cfg["WorkingDir"] = self.absolute(instr.path).rstrip("/") or "/"
        elif isinstance(instr, ins.User):
            cfg["User"] = instr.user
        elif isinstance(instr, ins.Expose):
            ports = dict(cfg.get("ExposedPorts") or {})
            ports.update({p: {} for p in instr.ports})
            cfg["ExposedPorts"] = ports
        elif isinstance(instr, ins.Volume):
            volumes = dict(cfg.get("Volumes") or {})
            volumes.update({p: {} for p in instr.paths})
            cfg["Volumes"] = volumes
        elif isinstance(instr, ins.Cmd):
            cfg["Cmd"] = instr.command.argv(self.shell)
            self.cmd_set = True
        elif isinstance(instr, ins.Entrypoint):
            cfg["Entrypoint"] = instr.command.argv(self.shell)
            if not self.cmd_set:
                cfg["Cmd"] = None
        elif isinstance(instr, ins.Shell):
            cfg["Shell"] = list(instr.argv)
        elif isinstance(instr, ins.StopSignal):
            cfg["StopSignal"] = instr.signal
        elif isinstance(instr, ins.Healthcheck):
            cfg["Healthcheck"] = healthcheck(instr)
        elif isinstance(instr, ins.Onbuild):
            cfg["OnBuild"] = [*(cfg.get("OnBuild") or []), instr.trigger]
        elif isinstance(instr, ins.Maintainer):
            self.author = instr.name
        elif isinstance(instr, ins.Arg):
            pass  # build-time only: nothing in the image
        else:
            raise TypeError(f"{instr.keyword} is not a config-only instruction")

    def add_layer(self, layer: LayerRef) -> None:
        self.layers.append(layer)

    def add_history(self, created: str, created_by: str, *, empty_layer: bool) -> None:
        entry: dict[str, Any] = {"created": created, "created_by": created_by, "comment": HISTORY_COMMENT}
        if empty_layer:
            entry["empty_layer"] = True
        self.history.append(entry)

    # -- output -------------------------------------------------------------------------------------------

    def created(self) -> str:
        """The image's creation time: the newest history entry (stable across fully cached rebuilds)."""
        best, best_at = self.base_created, parse_created(self.base_created)
        for entry in self.history:
            at = parse_created(entry.get("created"))
            if at is not None and (best_at is None or at > best_at):
                best, best_at = str(entry["created"]), at
        return best

    def config_json(self, extra_labels: dict[str, str] | None = None) -> bytes:
        config = {k: v for k, v in self.config.items() if v not in (None, [], {}, "")}
        if extra_labels:
            config["Labels"] = {**(config.get("Labels") or {}), **extra_labels}
        image: dict[str, Any] = {"created": self.created()}
        if self.author:
            image["author"] = self.author
        image["architecture"] = self.platform.architecture
        image["os"] = self.platform.os
        if self.platform.variant:
            image["variant"] = self.platform.variant
        image["config"] = config
        image["rootfs"] = {"type": "layers", "diff_ids": self.diff_ids}
        image["history"] = self.history
        return json.dumps(image, separators=(",", ":"), ensure_ascii=False).encode()

    def manifest_json(self, config_digest: str, config_size: int) -> bytes:
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_size},
            "layers": [
                {"mediaType": oci_layer_type(layer.media_type), "digest": layer.digest, "size": layer.size}
                for layer in self.layers
            ],
        }
        return json.dumps(manifest, separators=(",", ":")).encode()


def healthcheck(instr: ins.Healthcheck) -> dict[str, Any]:
    """Docker's `Healthcheck` config object (durations in nanoseconds, zero ones left out; a shell-form
    test is `CMD-SHELL`, which the runtime runs with /bin/sh -c)."""
    if instr.command is None:
        return {"Test": ["NONE"]}
    cmd = instr.command
    test = ["CMD", *cmd.args] if cmd.exec_form else ["CMD-SHELL", cmd.args[0]]
    out: dict[str, Any] = {"Test": test}
    for key, value in (
        ("Interval", instr.interval),
        ("Timeout", instr.timeout),
        ("StartPeriod", instr.start_period),
        ("StartInterval", instr.start_interval),
        ("Retries", instr.retries),
    ):
        if value:
            out[key] = value
    return out


def created_by(instr: ins.Instruction, shell: list[str]) -> str:
    """The history `created_by` of a step, in the style `docker history` shows."""
    if isinstance(instr, ins.Run):
        return "RUN " + " ".join(instr.command.argv(shell))
    if isinstance(instr, ins.Copy):
        flags = "".join(
            f"--{name}={value} "
            for name, value in (("from", instr.from_stage), ("chown", instr.chown), ("chmod", instr.chmod))
            if value
        )
        return f"{instr.keyword} {flags}{' '.join(instr.sources)} {instr.dest}"
    if isinstance(instr, ins.Workdir):
        return f"WORKDIR {instr.path}"
    if isinstance(instr, ins.KeyValues):
        return f"{instr.keyword} " + " ".join(f"{k}={v}" for k, v in instr.pairs)
    return instr.text
