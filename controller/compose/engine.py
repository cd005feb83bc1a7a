"""A compose project on one agent: make what the project describes exist and run, find it again by its
labels, and take it down. Everything goes through the typed clients (controller/api/*).

`up` is convergent: networks and volumes are created when missing; a service's container is kept when
its `com.docker.compose.config-hash` label equals the service's hash and it runs the image the reference
names now, else it is recreated; services start in dependency order, each after its dependencies meet
their `depends_on` condition (started, healthy, or exited 0). Progress goes to stderr as
` Container NAME  Created|Recreated|Started|Running`, like docker compose.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from controller.api.build import BuildApi, BuildOptions, BuildResult, Message
from controller.api.containers import Container, ContainerConfig, ContainersApi
from controller.api.images import ImagesApi
from controller.api.networks import NetworksApi
from controller.api.registry import Pulled, RegistryApi
from controller.api.volumes import VolumesApi
from controller.app import HostOutput
from controller.client import AgentClient
from controller.compose.model import (
    CONFIG_HASH,
    NUMBER,
    ONEOFF,
    PROJECT,
    SERVICE,
    Condition,
    Project,
    Service,
)
from controller.compose.resolve import network_labels, volume_labels
from controller.credentials import Login
from controller.errors import AgentCallError, ControllerError

PullPolicy = Literal["always", "missing", "never"]
HEALTH_POLL_S = 0.25
STOP_LOG_GRACE_S = 5.0  # attached `up` after Ctrl-C: how long the stopped containers' last lines may take
# A service's build options and a maker of its context's tar stream (the command layer reads the files).
BuildSource = Callable[[Service], tuple[BuildOptions, Callable[[], AsyncIterator[bytes]]]]


@dataclass(frozen=True)
class UpOptions:
    services: tuple[str, ...] = ()
    pull: PullPolicy = "missing"
    build: bool = False  # build images of `build:` services even when present
    force_recreate: bool = False
    no_recreate: bool = False
    remove_orphans: bool = False


@dataclass(frozen=True)
class Action:
    """What `up` did to one container."""

    container: str
    service: str
    action: str  # created | recreated | started | running


def _not_found(exc: AgentCallError) -> bool:
    return exc.code == "NOT_FOUND"


class Engine:
    """One project on one agent."""

    def __init__(
        self,
        client: AgentClient,
        project: Project,
        out: HostOutput,
        *,
        login: Callable[[str], Login | None] = lambda ref: None,
        build_source: BuildSource | None = None,
        quiet: bool = False,
    ) -> None:
        self.client = client
        self.project = project
        self.out = out
        self.login = login
        self.build_source = build_source
        self.quiet = quiet
        self.containers_api = ContainersApi(client)

    def say(self, text: str) -> None:
        if not self.quiet:
            self.out.line(text, err=True)

    # ---- finding what exists -----------------------------------------------------------------------

    async def containers(
        self, *, services: Iterable[str] = (), oneoff: bool | None = False
    ) -> list[Container]:
        """The project's containers (all states), by service order then number; `oneoff=None`: both kinds."""
        found = await self.containers_api.ls(all=True, filters=(f"label={PROJECT}={self.project.name}",))
        wanted = set(services)
        order = self._order()
        out = [
            c
            for c in found
            if (not wanted or c.labels.get(SERVICE) in wanted)
            and (oneoff is None or (c.labels.get(ONEOFF) == "True") == oneoff)
        ]
        out.sort(key=lambda c: (order.get(c.labels.get(SERVICE, ""), len(order)), _number(c), c.name))
        return out

    def _order(self) -> dict[str, int]:
        """Service name → its place in dependency order (dependencies first)."""
        every = self.project.select([s.name for s in self.project.services]) if self.project.services else []
        return {s.name: i for i, s in enumerate(every)}

    # ---- networks, volumes, images --------------------------------------------------------------------

    async def ensure_networks(self, services: Sequence[Service]) -> None:
        api = NetworksApi(self.client)
        existing = {n.name for n in await api.list()}
        for key in dict.fromkeys(a.network for s in services for a in s.networks):
            net = self.project.networks[key]
            if net.name in existing:
                continue
            if net.external:
                raise ControllerError(f"network {net.name} is external but does not exist")
            labels = {**net.labels, **network_labels(self.project.name, key)}
            await api.create(net.name, internal=net.internal, labels=labels)
            self.say(f" Network {net.name}  Created")

    async def ensure_volumes(self, services: Sequence[Service]) -> None:
        api = VolumesApi(self.client)
        existing = {v.name for v in await api.list()}
        for key in dict.fromkeys(v for s in services for v in s.volumes):
            vol = self.project.volumes[key]
            if vol.name in existing:
                continue
            if vol.external:
                raise ControllerError(f"volume {vol.name} is external but does not exist")
            await api.create(vol.name, labels={**vol.labels, **volume_labels(self.project.name, key)})
            self.say(f" Volume {vol.name}  Created")

    async def image_digest(self, reference: str) -> str | None:
        try:
            return (await ImagesApi(self.client).inspect(reference)).image.digest
        except AgentCallError as exc:
            if _not_found(exc):
                return None
            raise

    async def pull(self, service: Service) -> str:
        digest = ""
        async for event in RegistryApi(self.client).pull(service.image, login=self.login(service.image)):
            if isinstance(event, Pulled):
                digest = event.image.digest
        self.say(f" Image {service.image}  Pulled")
        return digest

    async def build(self, service: Service) -> str:
        if self.build_source is None or service.build is None:
            raise ControllerError(f"service {service.name} has no build section")
        options, context = self.build_source(service)
        result: BuildResult | None = None
        self.say(f" Image {service.image}  Building")
        async for event in BuildApi(self.client).build(options, context()):
            if isinstance(event, BuildResult):
                result = event
            elif isinstance(event, Message) and event.warning:
                self.out.line(f"warning: {event.text}", err=True)
        if result is None:
            raise ControllerError(f"the agent ended the build of {service.name} without a result")
        self.say(f" Image {service.image}  Built")
        return await self.image_digest(service.image) or result.manifest_digest

    async def ensure_image(self, service: Service, policy: PullPolicy, build: bool) -> str:
        """The digest of the image the service runs: a `build:` service's image is built when missing (or
        with `build`), as docker compose does; any other is pulled as the policy says."""
        present = await self.image_digest(service.image)
        if service.build is not None:
            return present if present is not None and not build else await self.build(service)
        if policy == "always" or (present is None and policy == "missing"):
            return await self.pull(service)
        if present is None:
            raise ControllerError(
                f"image {service.image} of service {service.name} is not on the agent (--pull never)"
            )
        return present

    # ---- up -----------------------------------------------------------------------------------------

    async def up(self, options: UpOptions) -> list[Action]:
        services = self.project.select(options.services)
        refuse_secrets(services)
        await self.ensure_networks(services)
        await self.ensure_volumes(services)
        digests = {s.name: await self.ensure_image(s, options.pull, options.build) for s in services}
        current: dict[str, list[Container]] = {}
        for c in await self.containers():
            current.setdefault(c.labels.get(SERVICE, ""), []).append(c)
        orphans = [
            c
            for name, cs in current.items()
            if name not in {s.name for s in self.project.services}
            for c in cs
        ]
        for c in orphans:
            if options.remove_orphans:
                await self.remove(c)
                self.say(f" Container {c.name}  Removed")
            else:
                note = "not in the compose file; --remove-orphans removes it"
                self.say(f"warning: found orphan container {c.name} ({note})")
        actions: list[Action] = []
        for service in services:
            for dep, condition in service.depends_on.items():
                await self.wait_for(dep, condition)
            actions.append(
                await self.converge(service, current.get(service.name, []), digests[service.name], options)
            )
        return actions

    async def converge(
        self, service: Service, existing: list[Container], digest: str, options: UpOptions
    ) -> Action:
        keep = existing[0] if existing else None
        for extra in existing[1:]:  # from a scaled-up project: one container per service here
            await self.remove(extra)
        if keep is not None and not options.force_recreate:
            same = keep.labels.get(CONFIG_HASH) == service.config_hash and (
                not digest or keep.image_digest == digest
            )
            if same or options.no_recreate:
                if keep.status == "running":
                    self.say(f" Container {keep.name}  Running")
                    return Action(keep.name, service.name, "running")
                await self.containers_api.start(keep.id)
                self.say(f" Container {keep.name}  Started")
                return Action(keep.name, service.name, "started")
        action = "created"
        if keep is not None:
            await self.remove(keep, timeout=service.config.stop_timeout)
            action = "recreated"
        name = await self.create(service, 1)
        await self.containers_api.start(name)
        self.say(f" Container {name}  {action.capitalize()}")
        return Action(name, service.name, action)

    async def create(
        self, service: Service, number: int, *, config: ContainerConfig | None = None, oneoff: bool = False
    ) -> str:
        """Create the service's container (or a one-off from `config`), on all its networks; its name."""
        base = config or service.config
        name = base.name or self.project.container_name(service.name, number)
        labels = self.project.labels(service, number, oneoff=oneoff)
        config = replace(base, name=name, labels=(*base.labels, *(f"{k}={v}" for k, v in labels.items())))
        created = await self.containers_api.create(config)
        for attachment in service.networks[1:]:
            net = self.project.networks[attachment.network]
            aliases = () if oneoff else (service.name, *attachment.aliases)
            await NetworksApi(self.client).connect(net.name, created.id, aliases=aliases)
        return name

    async def remove(
        self, container: Container, *, timeout: int | None = None, volumes: bool = False
    ) -> None:
        if container.status in ("running", "restarting", "paused"):
            with contextlib.suppress(AgentCallError):
                await self.containers_api.stop(container.id, timeout)
        try:
            await self.containers_api.remove(container.id, force=True, volumes=volumes)
        except AgentCallError as exc:
            if not _not_found(exc):
                raise

    async def wait_for(self, dependency: str, condition: Condition) -> None:
        """Until the dependency's container meets `condition`; an error when it cannot any more."""
        name = self.project.container_name(dependency)
        if condition is Condition.STARTED:
            return
        if condition is Condition.COMPLETED:
            result = await self.containers_api.wait(name)
            if result.exit_code != 0:
                raise ControllerError(
                    f"service {dependency} didn't complete successfully: exit {result.exit_code}"
                )
            return
        while True:
            c = await self.containers_api.inspect(name)
            if c.health is None:
                raise ControllerError(
                    f"dependency {dependency} has no health check (condition service_healthy)"
                )
            if c.health == "healthy":
                return
            if c.health == "unhealthy":
                raise ControllerError(f"dependency failed to start: container {name} is unhealthy")
            if c.status not in ("running", "restarting", "created"):
                raise ControllerError(f"dependency failed to start: container {name} exited ({c.exit_code})")
            await asyncio.sleep(HEALTH_POLL_S)

    # ---- the other verbs --------------------------------------------------------------------------

    async def down(self, *, volumes: bool, rmi: str | None, timeout: int | None = None) -> None:
        containers = await self.containers(oneoff=None)
        for c in reversed(containers):
            await self.remove(c, timeout=timeout, volumes=volumes)
            self.say(f" Container {c.name}  Removed")
        networks = NetworksApi(self.client)
        for net in await networks.list():
            if net.labels.get(PROJECT) == self.project.name:
                await networks.remove(net.name)
                self.say(f" Network {net.name}  Removed")
        if volumes:
            api = VolumesApi(self.client)
            for vol in await api.list():
                if vol.labels.get(PROJECT) == self.project.name:
                    await api.remove(vol.name)
                    self.say(f" Volume {vol.name}  Removed")
        if rmi is not None:
            images = ImagesApi(self.client)
            for service in self.project.services:
                if rmi == "all" or service.pull_never:
                    try:
                        await images.remove(service.image)
                        self.say(f" Image {service.image}  Removed")
                    except AgentCallError as exc:
                        if not _not_found(exc):
                            raise

    async def stop(self, services: Sequence[str] = (), timeout: int | None = None) -> list[str]:
        done = []
        for c in reversed(await self.containers(services=services)):
            if c.status in ("running", "restarting", "paused"):
                await self.containers_api.stop(
                    c.id, timeout if timeout is not None else self._stop_timeout(c)
                )
                self.say(f" Container {c.name}  Stopped")
                done.append(c.name)
        return done

    def _stop_timeout(self, c: Container) -> int | None:
        for s in self.project.services:
            if s.name == c.labels.get(SERVICE):
                return s.config.stop_timeout
        return None

    async def start(self, services: Sequence[str] = ()) -> list[str]:
        done = []
        containers = {c.labels.get(SERVICE, ""): c for c in await self.containers(services=services)}
        order = [s.name for s in self.project.select(services)] if self.project.services else list(containers)
        for name in order:
            c = containers.get(name)
            if c is None:
                continue
            for dep, condition in (
                self.project.service(name).depends_on.items() if self.project.services else ()
            ):
                if dep in containers:
                    await self.wait_for(dep, condition)
            if c.status != "running":
                await self.containers_api.start(c.id)
                self.say(f" Container {c.name}  Started")
                done.append(c.name)
        return done

    async def restart(self, services: Sequence[str] = (), timeout: int | None = None) -> list[str]:
        done = []
        for c in await self.containers(services=services):
            await self.containers_api.restart(c.id, timeout if timeout is not None else self._stop_timeout(c))
            self.say(f" Container {c.name}  Restarted")
            done.append(c.name)
        return done

    async def logs(
        self, services: Sequence[str], *, follow: bool, tail: int = -1, since_ns: int | None = None
    ) -> None:
        """Every container's output, each line prefixed `SERVICE-N | `; concurrently while following."""
        containers = await self.containers(services=services)
        width = max((len(self.short(c)) for c in containers), default=0)

        async def one(c: Container) -> None:
            prefix = f"{self.short(c):<{width}} | "
            pending = b""
            async for entry in self.containers_api.logs(c.id, follow=follow, tail=tail, since_ns=since_ns):
                pending += entry.data
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.out.line(prefix + line.decode(errors="replace"))
            if pending:
                self.out.line(prefix + pending.decode(errors="replace"))

        if follow:
            async with asyncio.TaskGroup() as tg:
                for c in containers:
                    tg.create_task(one(c))
        else:
            for c in containers:
                await one(c)

    def short(self, c: Container) -> str:
        """`web-1` for `proj-web-1`, as docker compose prefixes log lines."""
        return c.name.removeprefix(f"{self.project.name}-")

    async def attached(self, actions: Sequence[Action], since_ns: int) -> None:
        """Follow the logs of `up`'s containers until they have all exited; on cancel (Ctrl-C) stop them."""
        names = [a.service for a in actions]
        follower = asyncio.create_task(self.logs(names, follow=True, since_ns=since_ns))
        try:
            await asyncio.shield(follower)
        except asyncio.CancelledError:
            self.out.line("Gracefully stopping... (press Ctrl+C again to force)", err=True)
            try:
                await self.stop(names)
                # the last lines (what the containers print as they stop): their streams end at exit
                await asyncio.wait([follower], timeout=STOP_LOG_GRACE_S)
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError, ControllerError):
                    await follower
            raise

    async def run_oneoff(self, service: Service, config: ContainerConfig) -> str:
        """Create a one-off container of `service` (not started); its name."""
        refuse_secrets([service])
        name = f"{self.project.name}-{service.name}-run-{secrets.token_hex(6)}"
        return await self.create(service, 1, config=replace(config, name=name), oneoff=True)


def refuse_secrets(services: Iterable[Service]) -> None:
    """Secrets are delivered with a release (stored on the controller, staged on the agent); a single
    `compose up` has no such path, so it refuses before touching the host."""
    for service in services:
        if service.secrets:
            raise ControllerError(
                f"services.{service.name}.secrets: compose secrets are supported in rollouts"
                " (dockyard rollout apply -f …); for compose up use a volume or env"
            )


def _number(c: Container) -> int:
    try:
        return int(c.labels.get(NUMBER, "0"))
    except ValueError:
        return 0


def now_ns() -> int:
    return time.time_ns()
