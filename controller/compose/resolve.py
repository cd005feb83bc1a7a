"""A merged, checked compose document → the typed `Project`, and the resolved document `config` prints.

Each service's keys map onto `ContainerConfig` (the run flags' typed form) here and nowhere else:
ports and volumes in either form become `-p` and `--mount` values, `env_file` + `environment` one env list,
health checks the `--health-*` options, `deploy.resources.limits` the same fields as `mem_limit`/`cpus`.
Values the agent would refuse anyway (sizes, durations, CPUs) are checked here so the error names the
key in the file. Relative paths resolve against the project directory, on the controller.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller import units
from controller.api.containers import ContainerConfig
from controller.compose import dotenv
from controller.compose.merge import pairs
from controller.compose.model import (
    NETWORK,
    PROJECT,
    VOLUME,
    Attachment,
    Build,
    ComposeError,
    Condition,
    Healthcheck,
    NetworkDef,
    Project,
    SecretDef,
    SecretRef,
    Service,
    VolumeDef,
    argv_fields,
)

_RESTART = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
RESERVED_LABEL_PREFIX = "com.docker.compose."
DEFAULT_NETWORK = "default"
# Service keys `config` prints as written (after interpolation and merging).
_AS_WRITTEN = (
    "restart", "labels", "user", "working_dir", "hostname", "stop_signal", "stop_grace_period", "read_only",
    "cap_add", "cap_drop", "ulimits", "mem_limit", "cpus", "deploy", "profiles", "expose", "init",
)  # fmt: skip


@dataclass(frozen=True)
class Context:
    """What resolving needs besides the document."""

    project: str
    working_dir: Path
    source: str  # the file name errors name (the first -f file)
    env: Mapping[str, str]  # the interpolation environment: this process's, over .env
    files: tuple[Path, ...] = ()
    profiles: frozenset[str] = frozenset()


class _Resolver:
    def __init__(self, doc: Mapping[str, Any], ctx: Context) -> None:
        self.doc = doc
        self.ctx = ctx

    def fail(self, path: str, problem: str) -> ComposeError:
        return ComposeError(self.ctx.source, path, problem)

    # ---- scalars ---------------------------------------------------------------------------------

    def text(self, value: Any, path: str) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        if isinstance(value, str | int | float):
            return str(value)
        raise self.fail(path, f"expected a string, not {type(value).__name__}")

    def boolean(self, value: Any, path: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise self.fail(path, f"expected true or false, not {value!r}")

    def integer(self, value: Any, path: str, low: int = 0, high: int = (1 << 31) - 1) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise self.fail(path, f"expected an integer, not {value!r}") from None
        if not low <= number <= high:
            raise self.fail(path, f"{number} is out of range ({low} to {high})")
        return number

    def duration(self, value: Any, path: str) -> str:
        text = self.text(value, path)
        try:
            units.parse_duration(text, path.rsplit(".", 1)[-1])
        except units.InvalidValue:
            raise self.fail(
                path, f"invalid duration {text!r}: expected a duration such as 30s or 1m30s"
            ) from None
        return text

    def seconds(self, value: Any, path: str) -> int:
        text = self.duration(value, path)
        return math.ceil(units.parse_duration(text, path) / units.NANO)

    def size(self, value: Any, path: str, *, memory: bool = False) -> str:
        text = self.text(value, path)
        try:
            units.parse_memory(text) if memory else units.parse_size(text, path)
        except units.InvalidValue as exc:
            problem = exc.message.replace("--memory value", "value")
            raise self.fail(path, problem) from None
        return text

    def cpus(self, value: Any, path: str) -> str:
        text = self.text(value, path)
        try:
            units.parse_cpus(text)
        except units.InvalidValue:
            raise self.fail(
                path, f"invalid value {text!r}: expected a number of CPUs from 0.01 to 4096"
            ) from None
        return text

    def argv(self, value: Any, path: str) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                raise self.fail(path, f"cannot split {value!r} into words: {exc}") from None
        return tuple(self.text(v, f"{path}.{i}") for i, v in enumerate(value))

    def path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.ctx.working_dir / p).resolve()

    # ---- top level -------------------------------------------------------------------------------

    def volumes(self) -> dict[str, VolumeDef]:
        out: dict[str, VolumeDef] = {}
        for key, spec in (self.doc.get("volumes") or {}).items():
            spec = spec or {}
            path = f"volumes.{key}"
            external = self.boolean(spec.get("external", False), f"{path}.external")
            default = key if external else f"{self.ctx.project}_{key}"
            name = self.text(spec.get("name", default), f"{path}.name")
            labels = {k: self.text(v, f"{path}.labels.{k}") for k, v in pairs(spec.get("labels")).items()}
            out[key] = VolumeDef(key, name, external, labels)
        return out

    def networks(self) -> dict[str, NetworkDef]:
        declared = dict(self.doc.get("networks") or {})
        declared.setdefault(DEFAULT_NETWORK, None)
        out: dict[str, NetworkDef] = {}
        for key, spec in declared.items():
            spec = spec or {}
            path = f"networks.{key}"
            external = self.boolean(spec.get("external", False), f"{path}.external")
            default = key if external else f"{self.ctx.project}_{key}"
            name = self.text(spec.get("name", default), f"{path}.name")
            internal = self.boolean(spec.get("internal", False), f"{path}.internal")
            labels = {k: self.text(v, f"{path}.labels.{k}") for k, v in pairs(spec.get("labels")).items()}
            out[key] = NetworkDef(key, name, external, internal, labels)
        return out

    # ---- one service -----------------------------------------------------------------------------

    def secrets(self) -> dict[str, SecretDef]:
        """The top-level secrets: a dockyard secret by `name:`/`external.name`/key, or a local source."""
        out: dict[str, SecretDef] = {}
        for key, spec in (self.doc.get("secrets") or {}).items():
            spec = spec or {}
            p = f"secrets.{key}"
            external = spec.get("external", False)
            name = self.text(spec.get("name", key), f"{p}.name")
            if isinstance(external, dict):
                name = self.text(external.get("name", name), f"{p}.external.name")
                external = True
            local = next((k for k in ("file", "environment") if k in spec), "")
            if not self.boolean(external, f"{p}.external") and not local and "name" not in spec:
                raise self.fail(p, "needs `external: true` (a dockyard secret) or a name")
            out[key] = SecretDef(key, name, local)
        return out

    def secret_refs(self, value: Any, path: str, secrets: Mapping[str, SecretDef]) -> tuple[SecretRef, ...]:
        """A service's `secrets:` (short form: the source; long form: source, target, uid, gid, mode)."""
        out: list[SecretRef] = []
        for i, item in enumerate(_as_list(value)):
            where = f"{path}.{i}"
            entry: Mapping[str, Any] = {"source": item} if isinstance(item, str) else item
            if "source" not in entry:
                raise self.fail(where, "missing source (a secret under the top-level secrets:)")
            source = self.text(entry["source"], f"{where}.source")
            if source not in secrets:
                raise self.fail(where, f"refers to undefined secret {source!r} (declare it under secrets:)")
            ids = {
                k: self.integer(entry[k], f"{where}.{k}", 0, (1 << 32) - 2)
                for k in ("uid", "gid")
                if k in entry
            }
            mode = entry.get("mode")
            if mode is not None:
                mode = self.mode(mode, f"{where}.mode")
            target = self.text(entry.get("target", source), f"{where}.target")
            out.append(SecretRef(source, target, ids.get("uid"), ids.get("gid"), mode))
        return tuple(out)

    def mode(self, value: Any, path: str) -> int:
        """A file mode in octal digits: `0440` (docker compose reads a leading 0 as octal; the YAML 1.2
        loader here reads the number 440, the same digits) or the string "0440"."""
        try:
            number = int(str(value), 8) if not isinstance(value, bool) else -1
        except ValueError:
            number = -1
        if not 0 <= number <= 0o777:
            raise self.fail(path, f"invalid mode {value!r}: octal digits, 0000 to 0777 (such as 0440)")
        return number

    def service(
        self,
        name: str,
        s: Mapping[str, Any],
        volumes: Mapping[str, VolumeDef],
        networks: Mapping[str, NetworkDef],
        secrets: Mapping[str, SecretDef] | None = None,
    ) -> tuple[Service, dict[str, Any]]:
        """The typed service and its entry in the resolved document."""
        p = f"services.{name}"
        out: dict[str, Any] = {}
        build = self.build(s.get("build"), f"{p}.build")
        image = s.get("image")
        if image is None and build is None:
            raise self.fail(p, "has neither an image nor a build context")
        image_ref = self.text(image, f"{p}.image") if image is not None else f"{self.ctx.project}-{name}"
        out["image"] = image_ref
        if build is not None:
            out["build"] = {"context": str(build.context), "dockerfile": build.dockerfile}
            if build.args:
                out["build"]["args"] = dict(build.args)
            if build.target:
                out["build"]["target"] = build.target

        command = self.argv(s.get("command"), f"{p}.command")
        entrypoint = self.argv(s.get("entrypoint"), f"{p}.entrypoint")
        if command is not None:
            out["command"] = list(command)
        if entrypoint is not None:
            out["entrypoint"] = list(entrypoint)
        ep_word, argv = argv_fields(entrypoint, command)

        env = self.environment(s, p)
        if env:
            out["environment"] = dict(env)

        publish, ports_doc = self.ports(s.get("ports") or [], f"{p}.ports")
        if ports_doc:
            out["ports"] = ports_doc
        mounts, used_volumes, volumes_doc = self.mounts(s.get("volumes") or [], f"{p}.volumes", volumes)
        if volumes_doc:
            out["volumes"] = volumes_doc
        tmpfs = tuple(self.text(t, f"{p}.tmpfs") for t in _as_list(s.get("tmpfs")))
        if tmpfs:
            out["tmpfs"] = list(tmpfs)

        attachments = self.attachments(name, s.get("networks"), f"{p}.networks", networks)
        out["networks"] = {
            a.network: ({"aliases": list(a.aliases)} if a.aliases else None) for a in attachments
        }
        depends = self.depends_on(s.get("depends_on"), f"{p}.depends_on")
        if depends:
            out["depends_on"] = {d: {"condition": str(c), "required": True} for d, c in depends.items()}

        secret_refs = self.secret_refs(s.get("secrets"), f"{p}.secrets", secrets or {})
        if secret_refs:
            out["secrets"] = [
                {"source": r.source, "target": r.target}
                | {k: v for k, v in (("uid", r.uid), ("gid", r.gid)) if v is not None}
                | ({"mode": f"{r.mode:04o}"} if r.mode is not None else {})
                for r in secret_refs
            ]

        health = self.healthcheck(s.get("healthcheck"), f"{p}.healthcheck")
        if s.get("healthcheck") is not None:
            out["healthcheck"] = dict(s["healthcheck"])
        health_fields: dict[str, Any] = {}
        if health is not None:
            if health.disabled:
                health_fields["no_healthcheck"] = True
            else:
                cmd = health.test[1] if health.test[0] == "CMD-SHELL" else shlex.join(health.test[1:])
                health_fields.update(
                    health_cmd=cmd,
                    health_interval=health.interval,
                    health_timeout=health.timeout,
                    health_retries=health.retries,
                    health_start_period=health.start_period,
                )

        restart = self.text(s.get("restart", "no"), f"{p}.restart")
        if not _RESTART.match(restart):
            raise self.fail(
                f"{p}.restart", f"invalid value {restart!r}: no, always, on-failure[:N] or unless-stopped"
            )
        labels = {k: self.text(v, f"{p}.labels.{k}") for k, v in pairs(s.get("labels")).items()}
        for key in labels:
            if key.startswith(RESERVED_LABEL_PREFIX):
                raise self.fail(
                    f"{p}.labels.{key}", "reserved: dockyard compose sets the com.docker.compose.* labels"
                )

        memory, cpus, pids = self.limits(s, p)
        ulimits = self.ulimits(s.get("ulimits") or {}, f"{p}.ulimits")
        stop_timeout = (
            self.seconds(s["stop_grace_period"], f"{p}.stop_grace_period")
            if "stop_grace_period" in s
            else None
        )
        first = attachments[0]
        for key in _AS_WRITTEN:
            if key in s:
                out[key] = s[key]
        config = ContainerConfig(
            image=image_ref,
            command=argv,
            entrypoint=ep_word,
            env=tuple(f"{k}={v}" for k, v in env.items()),
            workdir=self.text(s.get("working_dir", ""), f"{p}.working_dir"),
            user=self.text(s.get("user", ""), f"{p}.user"),
            hostname=self.text(s.get("hostname", ""), f"{p}.hostname"),
            labels=tuple(f"{k}={v}" for k, v in labels.items()),
            mounts=mounts,
            tmpfs=tmpfs,
            memory=memory,
            cpus=cpus,
            pids_limit=pids,
            ulimits=ulimits,
            restart=restart,
            network=networks[first.network].name,
            publish=publish,
            network_aliases=(name, *first.aliases),
            cap_add=tuple(self.text(c, f"{p}.cap_add") for c in s.get("cap_add") or ()),
            cap_drop=tuple(self.text(c, f"{p}.cap_drop") for c in s.get("cap_drop") or ()),
            read_only=self.boolean(s.get("read_only", False), f"{p}.read_only"),
            stop_signal=self.text(s.get("stop_signal", ""), f"{p}.stop_signal"),
            stop_timeout=stop_timeout,
            **health_fields,
        )
        service = Service(
            name=name,
            config=config,
            build=build,
            depends_on=depends,
            networks=attachments,
            healthcheck=health,
            profiles=tuple(self.text(x, f"{p}.profiles") for x in s.get("profiles") or ()),
            volumes=used_volumes,
            pull_never=image is None,
            command=command,
            entrypoint=entrypoint,
            secrets=secret_refs,
        )
        return service, out

    def build(self, value: Any, path: str) -> Build | None:
        if value is None:
            return None
        spec = {"context": value} if isinstance(value, str) else dict(value)
        context_text = self.text(spec.get("context", "."), f"{path}.context")
        if re.match(r"^[a-z][a-z0-9+.-]*://", context_text) or context_text.startswith("git@"):
            raise self.fail(f"{path}.context", "only a local directory is supported (not a URL)")
        context = self.path(context_text)
        if not context.is_dir():
            raise self.fail(f"{path}.context", f"{context} is not a directory")
        dockerfile = self.text(spec.get("dockerfile", "Dockerfile"), f"{path}.dockerfile")
        args: dict[str, str] = {}
        for key, val in pairs(spec.get("args")).items():
            if val is None:
                if key in self.ctx.env:
                    args[key] = self.ctx.env[key]
            else:
                args[key] = self.text(val, f"{path}.args.{key}")
        target = self.text(spec.get("target", ""), f"{path}.target")
        return Build(context, dockerfile, args, target)

    def environment(self, s: Mapping[str, Any], p: str) -> dict[str, str]:
        env: dict[str, str] = {}
        for i, entry in enumerate(_as_list(s.get("env_file"))):
            where = f"{p}.env_file.{i}" if isinstance(s.get("env_file"), list) else f"{p}.env_file"
            if isinstance(entry, dict):
                file_text, required = (
                    entry.get("path"),
                    self.boolean(entry.get("required", True), f"{where}.required"),
                )
            else:
                file_text, required = entry, True
            file = self.path(self.text(file_text, where))
            try:
                text = file.read_text()
            except FileNotFoundError:
                if required:
                    raise self.fail(where, f"env file {file} not found") from None
                continue
            except (OSError, UnicodeDecodeError) as exc:
                raise self.fail(where, f"cannot read env file {file}: {exc}") from None
            try:
                env.update(dotenv.parse(text, self.ctx.env))
            except dotenv.DotenvError as exc:
                raise self.fail(where, f"{file}:{exc.line}: {exc.problem}") from None
        for key, value in pairs(s.get("environment")).items():
            if value is None:
                if key in self.ctx.env:
                    env[key] = self.ctx.env[key]
                else:
                    env.pop(key, None)
            else:
                env[key] = self.text(value, f"{p}.environment.{key}")
        return env

    def ports(self, entries: list[Any], path: str) -> tuple[tuple[str, ...], list[dict[str, Any]]]:
        publish: list[str] = []
        doc: list[dict[str, Any]] = []
        for i, entry in enumerate(entries):
            where = f"{path}.{i}"
            if isinstance(entry, dict):
                target = self.text(entry.get("target"), f"{where}.target")
                published = self.text(entry.get("published", ""), f"{where}.published")
                host_ip = self.text(entry.get("host_ip", ""), f"{where}.host_ip")
                protocol = self.text(entry.get("protocol", "tcp"), f"{where}.protocol")
            else:
                host_ip, published, target, protocol = self.short_port(self.text(entry, where), where)
            if protocol not in ("tcp", "udp"):
                raise self.fail(where, f"protocol {protocol!r} {('not supported by dockyard (tcp or udp)')}")
            if ":" in host_ip:
                raise self.fail(where, f"IPv6 host address {host_ip} not supported by dockyard")
            targets = self.port_range(target, where)
            hosts = self.port_range(published, where) if published else []
            if hosts and len(hosts) != len(targets):
                if len(hosts) > 1 and len(targets) == 1:
                    raise self.fail(
                        where, "a range of host ports for one container port is not supported by dockyard"
                    )
                raise self.fail(where, "the host and container port ranges differ in length")
            for n, ctr in enumerate(targets):
                host = str(hosts[n]) if hosts else ""
                spec = f"{ctr}/{protocol}"
                if host_ip:
                    spec = f"{host_ip}:{host}:{spec}"
                elif host:
                    spec = f"{host}:{spec}"
                publish.append(spec)
                item: dict[str, Any] = {"mode": "ingress", "target": ctr, "protocol": protocol}
                if host:
                    item["published"] = host
                if host_ip:
                    item["host_ip"] = host_ip
                doc.append(item)
        return tuple(publish), doc

    def short_port(self, text: str, where: str) -> tuple[str, str, str, str]:
        body, _, protocol = text.partition("/")
        protocol = protocol or "tcp"
        if body.startswith("["):
            raise self.fail(where, f"IPv6 host address in {text!r} not supported by dockyard")
        parts = body.split(":")
        if len(parts) > 3:
            raise self.fail(
                where, f"invalid port {text!r}: expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/PROTOCOL]"
            )
        target = parts[-1]
        published = parts[-2] if len(parts) >= 2 else ""
        host_ip = parts[0] if len(parts) == 3 else ""
        return host_ip, published, target, protocol

    def port_range(self, text: str, where: str) -> list[int]:
        low_text, dash, high_text = text.partition("-")
        try:
            low = int(low_text)
            high = int(high_text) if dash else low
        except ValueError:
            raise self.fail(where, f"invalid port {text!r}") from None
        if not (1 <= low <= high <= 65535):
            raise self.fail(where, f"invalid port {text!r}: ports are 1-65535")
        if high - low >= 1000:
            raise self.fail(where, f"port range {text!r} is too long (at most 1000 ports)")
        return list(range(low, high + 1))

    def mounts(
        self, entries: list[Any], path: str, volumes: Mapping[str, VolumeDef]
    ) -> tuple[tuple[str, ...], tuple[str, ...], list[dict[str, Any]]]:
        mounts: list[str] = []
        used: list[str] = []
        doc: list[dict[str, Any]] = []
        for i, entry in enumerate(entries):
            where = f"{path}.{i}"
            if isinstance(entry, dict):
                kind = self.text(entry.get("type", "volume"), f"{where}.type")
                source = self.text(entry.get("source", ""), f"{where}.source")
                target = self.text(entry.get("target", ""), f"{where}.target")
                read_only = self.boolean(entry.get("read_only", False), f"{where}.read_only")
                propagation = self.text((entry.get("bind") or {}).get("propagation", ""), f"{where}.bind")
                nocopy = self.boolean((entry.get("volume") or {}).get("nocopy", False), f"{where}.volume")
                tmpfs = entry.get("tmpfs") or {}
            else:
                kind, source, target, read_only, propagation, nocopy = self.short_volume(
                    self.text(entry, where), where
                )
                tmpfs = {}
            if not target.startswith("/"):
                raise self.fail(where, f"the container path {target!r} must be absolute")
            fields = [f"type={kind}"]
            item: dict[str, Any] = {"type": kind}
            if kind == "bind":
                if not source:
                    raise self.fail(where, "a bind mount needs a source")
                host = str(self.path(source))
                fields.append(f"source={host}")
                item["source"] = host
            elif kind == "volume" and source:
                if source not in volumes:
                    raise self.fail(
                        where, f"refers to undefined volume {source} (declare it under top-level volumes)"
                    )
                fields.append(f"source={volumes[source].name}")
                item["source"] = source
                if source not in used:
                    used.append(source)
            elif kind == "tmpfs" and source:
                raise self.fail(where, "a tmpfs mount takes no source")
            fields.append(f"target={target}")
            item["target"] = target
            if read_only:
                fields.append("readonly")
                item["read_only"] = True
            if propagation:
                fields.append(f"bind-propagation={propagation}")
            if nocopy:
                fields.append("volume-nocopy")
            if kind == "tmpfs":
                if "size" in tmpfs:
                    fields.append(f"tmpfs-size={self.size(tmpfs['size'], f'{where}.tmpfs.size')}")
                if "mode" in tmpfs:
                    fields.append(f"tmpfs-mode={self.text(tmpfs['mode'], f'{where}.tmpfs.mode')}")
            if any("," in f for f in fields):
                raise self.fail(where, "a path with a comma is not supported by dockyard")
            mounts.append(",".join(fields))
            doc.append(item)
        return tuple(mounts), tuple(used), doc

    def short_volume(self, text: str, where: str) -> tuple[str, str, str, bool, str, bool]:
        parts = text.split(":")
        if len(parts) == 1:
            return "volume", "", parts[0], False, "", False
        if len(parts) > 3 or not parts[0] or not parts[1]:
            raise self.fail(where, f"invalid volume {text!r}: expected SOURCE:TARGET[:MODE] or TARGET")
        source, target = parts[0], parts[1]
        read_only, propagation, nocopy = False, "", False
        for opt in parts[2].split(",") if len(parts) == 3 else []:
            if opt in ("ro", "rw"):
                read_only = opt == "ro"
            elif opt in ("private", "rprivate", "shared", "rshared", "slave", "rslave"):
                propagation = opt
            elif opt == "nocopy":
                nocopy = True
            elif opt in ("z", "Z"):
                continue  # SELinux relabelling: nothing to do without SELinux
            else:
                raise self.fail(where, f"invalid volume {text!r}: unknown mode {opt!r}")
        kind = "bind" if source.startswith((".", "/", "~")) else "volume"
        return kind, source, target, read_only, propagation, nocopy

    def attachments(
        self, service: str, value: Any, path: str, networks: Mapping[str, NetworkDef]
    ) -> tuple[Attachment, ...]:
        chosen = pairs(value) if value is not None else {DEFAULT_NETWORK: None}
        if not chosen:
            chosen = {DEFAULT_NETWORK: None}
        out = []
        for key, spec in chosen.items():
            if key not in networks:
                raise self.fail(
                    f"{path}.{key}",
                    f"refers to undefined network {key} (declare it under top-level networks)",
                )
            aliases = tuple(self.text(a, f"{path}.{key}.aliases") for a in (spec or {}).get("aliases") or ())
            out.append(Attachment(key, aliases))
        return tuple(out)

    def depends_on(self, value: Any, path: str) -> dict[str, Condition]:
        out: dict[str, Condition] = {}
        services = self.doc.get("services") or {}
        for dep, spec in pairs(value).items():
            if dep not in services:
                raise self.fail(f"{path}.{dep}", f"no such service: {dep}")
            condition = (spec or {}).get("condition", Condition.STARTED.value)
            try:
                out[dep] = Condition(condition)
            except ValueError:
                raise self.fail(f"{path}.{dep}.condition", f"unknown condition {condition!r}") from None
        return out

    def healthcheck(self, value: Any, path: str) -> Healthcheck | None:
        if value is None:
            return None
        if self.boolean(value.get("disable", False), f"{path}.disable"):
            return Healthcheck(("NONE",))
        test_value = value.get("test")
        if test_value is None:
            raise self.fail(f"{path}.test", "a health check needs a test (or disable: true)")
        if isinstance(test_value, str):
            test: tuple[str, ...] = ("CMD-SHELL", test_value)
        else:
            test = tuple(self.text(t, f"{path}.test") for t in test_value)
            if not test or test[0] not in ("CMD", "CMD-SHELL", "NONE"):
                raise self.fail(f"{path}.test", "a list test starts with CMD, CMD-SHELL or NONE")
            if test[0] == "CMD-SHELL" and len(test) != 2:
                test = ("CMD-SHELL", " ".join(test[1:]))
            if test[0] != "NONE" and len(test) < 2:
                raise self.fail(f"{path}.test", "the test has no command")
        return Healthcheck(
            test=test,
            interval=self.duration(value["interval"], f"{path}.interval") if "interval" in value else "",
            timeout=self.duration(value["timeout"], f"{path}.timeout") if "timeout" in value else "",
            retries=self.integer(value["retries"], f"{path}.retries") if "retries" in value else 0,
            start_period=self.duration(value["start_period"], f"{path}.start_period")
            if "start_period" in value
            else "",
        )

    def limits(self, s: Mapping[str, Any], p: str) -> tuple[str, str, int]:
        limits = ((s.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        lp = f"{p}.deploy.resources.limits"
        memory = self.size(s["mem_limit"], f"{p}.mem_limit", memory=True) if "mem_limit" in s else ""
        if "memory" in limits:
            deploy_memory = self.size(limits["memory"], f"{lp}.memory", memory=True)
            if memory and units.parse_size(memory, "") != units.parse_size(deploy_memory, ""):
                raise self.fail(f"{lp}.memory", "differs from mem_limit (set one of them)")
            memory = deploy_memory
        cpus = self.cpus(s["cpus"], f"{p}.cpus") if "cpus" in s else ""
        if "cpus" in limits:
            deploy_cpus = self.cpus(limits["cpus"], f"{lp}.cpus")
            if cpus and units.parse_cpus(cpus) != units.parse_cpus(deploy_cpus):
                raise self.fail(f"{lp}.cpus", "differs from cpus (set one of them)")
            cpus = deploy_cpus
        pids = self.integer(limits["pids"], f"{lp}.pids", -1, (1 << 62)) if "pids" in limits else 0
        return memory, cpus, pids

    def ulimits(self, value: Mapping[str, Any], path: str) -> tuple[str, ...]:
        out = []
        for name, spec in value.items():
            where = f"{path}.{name}"
            if isinstance(spec, dict):
                soft = self.integer(spec.get("soft"), f"{where}.soft", -1, (1 << 63) - 1)
                hard = self.integer(spec.get("hard"), f"{where}.hard", -1, (1 << 63) - 1)
            else:
                soft = hard = self.integer(spec, where, -1, (1 << 63) - 1)
            out.append(f"{name}={soft}:{hard}")
        return tuple(out)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _cycle(services: Mapping[str, Service]) -> list[str]:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str]:
        state[name] = 1
        stack.append(name)
        for dep in services[name].depends_on:
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if state.get(dep) is None:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        state[name] = 2
        return []

    for name in services:
        if state.get(name) is None:
            found = visit(name)
            if found:
                return found
    return []


def resolve(doc: Mapping[str, Any], ctx: Context) -> Project:
    """The typed project of a merged, checked document."""
    r = _Resolver(doc, ctx)
    services_doc = doc.get("services") or {}
    if not services_doc:
        raise r.fail("services", "no services defined")
    volumes = r.volumes()
    networks = r.networks()
    secrets = r.secrets()
    services: dict[str, Service] = {}
    documents: dict[str, Any] = {}
    for name, spec in services_doc.items():
        services[name], documents[name] = r.service(name, spec or {}, volumes, networks, secrets)
    cycle = _cycle(services)
    if cycle:
        raise r.fail(f"services.{cycle[0]}.depends_on", "dependency cycle: " + " -> ".join(cycle))
    active = frozenset(
        n
        for n, s in services.items()
        if not s.profiles or set(s.profiles) & ctx.profiles or "*" in ctx.profiles
    )
    used_networks = {a.network for n in active for a in services[n].networks}
    document: dict[str, Any] = {
        "name": ctx.project,
        "services": {n: documents[n] for n in services if n in active},
    }
    net_doc = {
        k: {
            "name": n.name,
            **({"external": True} if n.external else {}),
            **({"internal": True} if n.internal else {}),
        }
        for k, n in networks.items()
        if k in used_networks or k in (doc.get("networks") or {})
    }
    if net_doc:
        document["networks"] = net_doc
    vol_doc = {k: {"name": v.name, **({"external": True} if v.external else {})} for k, v in volumes.items()}
    if vol_doc:
        document["volumes"] = vol_doc
    sec_doc = {
        k: {"name": d.name, **({"external": True} if not d.local else {d.local: doc["secrets"][k][d.local]})}
        for k, d in secrets.items()
    }
    if sec_doc:
        document["secrets"] = sec_doc
    return Project(
        name=ctx.project,
        working_dir=ctx.working_dir,
        files=ctx.files,
        services=tuple(services.values()),
        volumes=volumes,
        networks=networks,
        active=active,
        document=document,
        secrets=secrets,
    )


def network_labels(project: str, key: str) -> dict[str, str]:
    return {PROJECT: project, NETWORK: key}


def volume_labels(project: str, key: str) -> dict[str, str]:
    return {PROJECT: project, VOLUME: key}
