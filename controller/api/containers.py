"""The Containers service as typed calls: the only controller module that builds its requests and reads
its responses.

Commands pass plain values (a `ContainerConfig` mirrors the run flags) and get frozen dataclasses back,
so a field renamed in the proto breaks here, under mypy, not in a dictionary lookup at run time.
Attached I/O (run, attach, exec) is a `Session`: send stdin/resizes, iterate `SessionEvent`s.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeAlias, TypeVar

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from agent.api.v1 import containers_pb2 as pb
from controller import units
from controller.client import DEFAULT_EXITS, AgentClient, ErrorExits, Rpc, rpc
from controller.errors import AgentCallError
from controller.terminal import Size

_SERVICE = pb.DESCRIPTOR.services_by_name["Containers"]
CREATE = rpc(_SERVICE, "Create", pb.CreateContainerRequest, pb.CreateContainerResponse)
RUN = rpc(_SERVICE, "Run", pb.RunContainerRequest, pb.RunContainerResponse)
START = rpc(_SERVICE, "Start", pb.StartContainerRequest, pb.StartContainerResponse)
ATTACH = rpc(_SERVICE, "Attach", pb.AttachContainerRequest, pb.AttachContainerResponse)
STOP = rpc(_SERVICE, "Stop", pb.StopContainerRequest, pb.StopContainerResponse)
RESTART = rpc(_SERVICE, "Restart", pb.RestartContainerRequest, pb.RestartContainerResponse)
KILL = rpc(_SERVICE, "Kill", pb.KillContainerRequest, pb.KillContainerResponse)
PAUSE = rpc(_SERVICE, "Pause", pb.PauseContainerRequest, pb.PauseContainerResponse)
UNPAUSE = rpc(_SERVICE, "Unpause", pb.UnpauseContainerRequest, pb.UnpauseContainerResponse)
REMOVE = rpc(_SERVICE, "Remove", pb.RemoveContainerRequest, pb.RemoveContainerResponse)
PRUNE = rpc(_SERVICE, "Prune", pb.PruneContainersRequest, pb.PruneContainersResponse)
WAIT = rpc(_SERVICE, "Wait", pb.WaitContainerRequest, pb.WaitContainerResponse)
LIST = rpc(_SERVICE, "List", pb.ListContainersRequest, pb.ListContainersResponse)
LIST_STREAM = rpc(_SERVICE, "ListStream", pb.ListContainersRequest, pb.ListContainersResponse)
INSPECT = rpc(_SERVICE, "Inspect", pb.InspectContainerRequest, pb.InspectContainerResponse)
LOGS = rpc(_SERVICE, "Logs", pb.ContainerLogsRequest, pb.ContainerLogsResponse)
EXEC = rpc(_SERVICE, "Exec", pb.ExecContainerRequest, pb.ExecContainerResponse)
TOP = rpc(_SERVICE, "Top", pb.TopContainerRequest, pb.TopContainerResponse)
STATS = rpc(_SERVICE, "Stats", pb.ContainerStatsRequest, pb.ContainerStatsResponse)
COPY_TO = rpc(_SERVICE, "CopyTo", pb.CopyToContainerRequest, pb.CopyToContainerResponse)
COPY_FROM = rpc(_SERVICE, "CopyFrom", pb.CopyFromContainerRequest, pb.CopyFromContainerResponse)

# Docker's exit codes when a session cannot run: 125 for `run` (the container could not be run at all),
# 126 for `exec` in a container that is not running.
RUN_ERROR_EXIT = 125
RUN_EXITS = ErrorExits(default=RUN_ERROR_EXIT)
EXEC_EXITS = ErrorExits(by_status={"FAILED_PRECONDITION": 126})

JsonValue: TypeAlias = "dict[str, JsonValue] | list[JsonValue] | str | int | float | bool | None"

STATUS_NAMES = {
    pb.CONTAINER_STATUS_CREATING: "creating",
    pb.CONTAINER_STATUS_CREATED: "created",
    pb.CONTAINER_STATUS_RUNNING: "running",
    pb.CONTAINER_STATUS_PAUSED: "paused",
    pb.CONTAINER_STATUS_RESTARTING: "restarting",
    pb.CONTAINER_STATUS_EXITED: "exited",
    pb.CONTAINER_STATUS_REMOVING: "removing",
    pb.CONTAINER_STATUS_DEAD: "dead",
}


# ---- results ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    type: str
    source: str
    destination: str
    read_only: bool


@dataclass(frozen=True)
class HealthCheck:
    start: datetime | None
    end: datetime | None
    exit_code: int
    output: str


@dataclass(frozen=True)
class Container:
    """A container as `ps` lists it; `inspect` also fills `config` and `oci_spec`."""

    id: str
    name: str
    image: str
    image_digest: str
    command: tuple[str, ...]
    created: datetime | None
    status: str  # creating | created | running | paused | restarting | exited | removing | dead | unknown
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int
    oom_killed: bool
    error: str
    pid: int
    restart_count: int
    restart_policy: str
    health: str | None  # None without a health check, else starting | healthy | unhealthy
    health_failing_streak: int
    health_log: tuple[HealthCheck, ...]
    labels: Mapping[str, str]
    hostname: str
    network: str
    ports: tuple[str, ...]
    mounts: tuple[Mount, ...]
    log_path: str
    tty: bool
    stdin_open: bool
    auto_remove: bool
    config: JsonValue | None  # the effective run options (inspect)
    oci_spec: JsonValue | None  # the runtime spec of the bundle (inspect)


@dataclass(frozen=True)
class Created:
    id: str
    name: str


@dataclass(frozen=True)
class WaitResult:
    exit_code: int
    error: str


@dataclass(frozen=True)
class Processes:
    titles: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class LogEntry:
    time_ns: int  # nanoseconds since the epoch
    stderr: bool
    data: bytes


@dataclass(frozen=True)
class StatsSample:
    id: str
    name: str
    cpu_percent: float
    memory_usage: int
    memory_limit: int
    pids: int
    net_rx: int
    net_tx: int
    block_read: int
    block_write: int


# ---- requests --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerConfig:
    """What `create`/`run` send: the run flags by their option names, values as the user typed them.

    A new run flag is a field here (same name as the click parameter) and one line in `config_message`.
    """

    image: str
    command: tuple[str, ...] = ()
    entrypoint: str | None = None  # None keeps the image's; "" resets it
    name: str = ""
    env: tuple[str, ...] = ()  # K=V, already resolved (env files, variables from the environment)
    workdir: str = ""
    user: str = ""
    hostname: str = ""
    labels: tuple[str, ...] = ()  # K=V
    volumes: tuple[str, ...] = ()
    mounts: tuple[str, ...] = ()
    tmpfs: tuple[str, ...] = ()
    memory: str = ""
    memory_swap: str = ""
    cpus: str = ""
    cpu_shares: int = 0
    pids_limit: int = 0
    ulimits: tuple[str, ...] = ()
    restart: str = "no"
    health_cmd: str = ""
    health_interval: str = ""
    health_timeout: str = ""
    health_retries: int = 0
    health_start_period: str = ""
    no_healthcheck: bool = False
    interactive: bool = False
    tty: bool = False
    network: str = ""
    publish: tuple[str, ...] = ()
    ip: str = ""
    network_aliases: tuple[str, ...] = ()
    privileged: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    read_only: bool = False
    security_opt: tuple[str, ...] = ()
    stop_signal: str = ""
    stop_timeout: int | None = None
    auto_remove: bool = False


@dataclass(frozen=True)
class ExecSpec:
    container: str
    command: tuple[str, ...]
    env: tuple[str, ...] = ()
    user: str = ""
    workdir: str = ""
    tty: bool = False
    interactive: bool = False
    detach: bool = False


# ---- attached sessions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The new container's (run) or exec's ID; attach sends the container's."""

    id: str


@dataclass(frozen=True)
class Output:
    data: bytes
    stderr: bool


@dataclass(frozen=True)
class Exited:
    code: int
    oom_killed: bool
    error: str  # set when the process could not be started


SessionEvent: TypeAlias = Started | Output | Exited
# What the local end sends into a session: a stdin chunk, a new window size, or the end of input.
SessionInput: TypeAlias = bytes | Size | Literal["close"]
_Req = TypeVar("_Req", bound=Message)
_Resp = TypeVar("_Resp", pb.RunContainerResponse, pb.AttachContainerResponse, pb.ExecContainerResponse)
_Opener: TypeAlias = Callable[[AsyncIterator[SessionInput]], AsyncGenerator[SessionEvent, None]]


class Session:
    """One attached Run/Attach/Exec call: input goes in through the methods, events come out of
    `events()`, which ends with the stream; a failure arrives as a ControllerError."""

    def __init__(self, opener: _Opener) -> None:
        self._opener = opener
        self._queue: asyncio.Queue[SessionInput | None] = asyncio.Queue()

    def send_stdin(self, data: bytes) -> None:
        self._queue.put_nowait(data)

    def close_stdin(self) -> None:
        self._queue.put_nowait("close")

    def resize(self, size: Size) -> None:
        self._queue.put_nowait(size)

    async def events(self) -> AsyncGenerator[SessionEvent, None]:
        async def inputs() -> AsyncIterator[SessionInput]:
            while (item := await self._queue.get()) is not None:
                yield item

        try:
            async with contextlib.aclosing(self._opener(inputs())) as events:
                async for event in events:
                    yield event
        finally:
            self._queue.put_nowait(None)


async def _session_requests(
    first: _Req, make: Callable[..., _Req], inputs: AsyncIterator[SessionInput]
) -> AsyncIterator[_Req]:
    yield first
    async for item in inputs:
        if isinstance(item, bytes):
            yield make(stdin=item)
        elif isinstance(item, Size):
            yield make(resize=_window(item))
        else:
            yield make(close_stdin=True)


async def _session_events(
    responses: AsyncIterator[_Resp],
) -> AsyncGenerator[SessionEvent, None]:
    try:
        async for resp in responses:
            kind = resp.WhichOneof("msg")
            if kind in ("id", "exec_id"):
                yield Started(str(getattr(resp, kind)))
            elif kind == "output":
                yield Output(resp.output.data, resp.output.stream == pb.OUTPUT_STREAM_STDERR)
            elif kind == "exit":
                yield Exited(resp.exit.code, resp.exit.oom_killed, resp.exit.error)
    finally:  # the call is cancelled now, not whenever the stream is collected
        if isinstance(responses, AsyncGenerator):
            await responses.aclose()


# ---- the client ------------------------------------------------------------------------------------


class ContainersApi:
    """Typed calls to one agent's Containers service."""

    def __init__(self, client: AgentClient) -> None:
        self.client = client

    async def create(self, config: ContainerConfig) -> Created:
        req = pb.CreateContainerRequest(config=self._config_pb(config, DEFAULT_EXITS))
        r = await self.client.unary(CREATE, req)
        return Created(r.id, r.name)

    def run(
        self, config: ContainerConfig, *, detach: bool, size: Size, exits: ErrorExits = RUN_EXITS
    ) -> Session:
        """Create, start and (unless `detach`) attach; an agent error exits 125 as in Docker."""
        first = pb.RunContainerRequest(
            start=pb.RunStart(config=self._config_pb(config, exits), detach=detach, size=_window(size))
        )
        return self._session(RUN, first, exits)

    def attach(self, container: str, *, start: bool, stdin: bool, size: Size) -> Session:
        """Attach to a running container (`start`: start it first); its stdin only with `stdin`."""
        first = pb.AttachContainerRequest(
            start=pb.AttachStart(container=container, start=start, stdin=stdin, size=_window(size))
        )
        return self._session(ATTACH, first, DEFAULT_EXITS)

    def exec(self, spec: ExecSpec, *, size: Size, exits: ErrorExits = EXEC_EXITS) -> Session:
        """Run a process in a running container; not running exits 126 as in Docker."""
        first = pb.ExecContainerRequest(
            start=pb.ExecStart(
                container=spec.container,
                command=list(spec.command),
                env=list(spec.env),
                user=spec.user,
                workdir=spec.workdir,
                tty=spec.tty,
                interactive=spec.interactive,
                detach=spec.detach,
                size=_window(size),
            )
        )
        return self._session(EXEC, first, exits)

    def _config_pb(self, config: ContainerConfig, exits: ErrorExits) -> pb.ContainerConfig:
        try:
            return config_message(config)
        except units.InvalidValue as exc:
            raise self._invalid(exc, exits) from None

    def _invalid(self, exc: units.InvalidValue, exits: ErrorExits) -> AgentCallError:
        """A value refused here reads as the agent's refusal of the same string always did: the same line
        under this host's name, INVALID_ARGUMENT, the call's exit code (125 for run)."""
        code = "INVALID_ARGUMENT"
        return AgentCallError(exc.message, code, self.client.name, exit_code=exits(code))

    def _session(self, call: Rpc[_Req, _Resp], first: _Req, exits: ErrorExits) -> Session:
        make = type(first)

        def opener(inputs: AsyncIterator[SessionInput]) -> AsyncGenerator[SessionEvent, None]:
            return _session_events(
                self.client.bidi(call, _session_requests(first, make, inputs), exits=exits)
            )

        return Session(opener)

    async def start(self, container: str) -> None:
        await self.client.unary(START, pb.StartContainerRequest(container=container))

    async def stop(self, container: str, timeout: int | None = None) -> None:
        """The stop signal, then SIGKILL after `timeout` seconds (None: the container's own)."""
        req = pb.StopContainerRequest(container=container)
        if timeout is not None:
            req.timeout = timeout  # for older agents
            req.timeout_duration.FromSeconds(timeout)
        await self.client.unary(STOP, req, timeout=None)

    async def restart(self, container: str, timeout: int | None = None) -> None:
        req = pb.RestartContainerRequest(container=container)
        if timeout is not None:
            req.timeout = timeout  # for older agents
            req.timeout_duration.FromSeconds(timeout)
        await self.client.unary(RESTART, req, timeout=None)

    async def kill(self, container: str, signal: str) -> None:
        await self.client.unary(KILL, pb.KillContainerRequest(container=container, signal=signal))

    async def pause(self, container: str) -> None:
        await self.client.unary(PAUSE, pb.PauseContainerRequest(container=container))

    async def unpause(self, container: str) -> None:
        await self.client.unary(UNPAUSE, pb.UnpauseContainerRequest(container=container))

    async def remove(self, container: str, *, force: bool = False, volumes: bool = False) -> None:
        req = pb.RemoveContainerRequest(container=container, force=force, volumes=volumes)
        await self.client.unary(REMOVE, req, timeout=None)

    async def prune(self) -> list[str]:
        """Remove every stopped container; the IDs removed."""
        r = await self.client.unary(PRUNE, pb.PruneContainersRequest(), timeout=None)
        return list(r.removed)

    async def wait(self, container: str, condition: str = "not-running") -> WaitResult:
        req = pb.WaitContainerRequest(container=container, condition=condition)
        r = await self.client.unary(WAIT, req, timeout=None)
        return WaitResult(r.exit_code, r.error)

    async def ls(self, *, all: bool = False, filters: tuple[str, ...] = ()) -> list[Container]:
        try:
            pairs = [pb.ContainerFilter(key=k, value=v) for k, v in map(units.parse_filter, filters)]
        except units.InvalidValue as exc:
            raise self._invalid(exc, DEFAULT_EXITS) from None
        req = pb.ListContainersRequest(all=all, filters=list(filters), filter_pairs=pairs)
        pages = self.client.paged(LIST_STREAM, LIST, req)
        return [_container(c) async for page in pages for c in page.containers]

    async def inspect(self, container: str) -> Container:
        r = await self.client.unary(INSPECT, pb.InspectContainerRequest(container=container))
        return _container(r.container)

    async def top(self, container: str) -> Processes:
        r = await self.client.unary(TOP, pb.TopContainerRequest(container=container))
        return Processes(tuple(r.titles), tuple(tuple(p.cells) for p in r.processes))

    async def logs(
        self,
        container: str,
        *,
        follow: bool = False,
        tail: int = -1,
        since_ns: int | None = None,
        until_ns: int | None = None,
    ) -> AsyncIterator[LogEntry]:
        """Stored output, then live output while `follow`; `tail` < 0 = all; times in epoch nanoseconds."""
        req = pb.ContainerLogsRequest(container=container, follow=follow, tail=tail)
        if since_ns is not None:
            req.since.FromNanoseconds(since_ns)
        if until_ns is not None:
            req.until.FromNanoseconds(until_ns)
        async for r in self.client.server_stream(LOGS, req):
            for e in r.entries:
                yield LogEntry(e.time.ToNanoseconds(), e.stream == pb.OUTPUT_STREAM_STDERR, e.data)

    async def stats(self, containers: tuple[str, ...], *, stream: bool) -> AsyncIterator[list[StatsSample]]:
        """One sample of every container asked for (all running when none), every second while `stream`."""
        req = pb.ContainerStatsRequest(containers=list(containers), stream=stream)
        async for r in self.client.server_stream(STATS, req):
            yield [
                StatsSample(
                    id=s.id,
                    name=s.name,
                    cpu_percent=s.cpu_percent,
                    memory_usage=s.memory_usage,
                    memory_limit=s.memory_limit,
                    pids=s.pids,
                    net_rx=s.net_rx_bytes,
                    net_tx=s.net_tx_bytes,
                    block_read=s.block_read_bytes,
                    block_write=s.block_write_bytes,
                )
                for s in r.stats
            ]

    async def copy_to(self, container: str, path: str, tar: AsyncIterator[bytes]) -> None:
        """Unpack the tar stream `tar` at `path` (a directory) inside the container."""

        async def requests() -> AsyncIterator[pb.CopyToContainerRequest]:
            yield pb.CopyToContainerRequest(target=pb.CopyTarget(container=container, path=path))
            async for chunk in tar:
                yield pb.CopyToContainerRequest(data=chunk)

        await self.client.client_stream(COPY_TO, requests())

    async def copy_from(self, container: str, path: str) -> AsyncIterator[bytes]:
        """`path` of the container as a tar stream."""
        req = pb.CopyFromContainerRequest(container=container, path=path)
        async for r in self.client.server_stream(COPY_FROM, req):
            yield r.data


# ---- conversions -----------------------------------------------------------------------------------


def _window(size: Size) -> pb.WindowSize:
    return pb.WindowSize(rows=size.rows, cols=size.cols)


def _time(ts: Timestamp) -> datetime | None:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=UTC)


def _container(c: pb.Container) -> Container:
    config: JsonValue | None = json.loads(c.config_json) if c.config_json else None
    oci_spec: JsonValue | None = json.loads(c.spec_json) if c.spec_json else None
    return Container(
        id=c.id,
        name=c.name,
        image=c.image,
        image_digest=c.image_digest,
        command=tuple(c.command),
        created=_time(c.created),
        status=STATUS_NAMES.get(c.status, "unknown"),
        started_at=_time(c.started_at),
        finished_at=_time(c.finished_at),
        exit_code=c.exit_code,
        oom_killed=c.oom_killed,
        error=c.error,
        pid=c.pid,
        restart_count=c.restart_count,
        restart_policy=c.restart_policy,
        health=c.health_status or None,
        health_failing_streak=c.health_failing_streak,
        health_log=tuple(
            HealthCheck(_time(h.start), _time(h.end), h.exit_code, h.output) for h in c.health_log
        ),
        labels=dict(c.labels),
        hostname=c.hostname,
        network=c.network,
        ports=tuple(c.ports),
        mounts=tuple(Mount(_mount_type(m), m.source, m.destination, m.read_only) for m in c.mounts),
        log_path=c.log_path,
        tty=c.tty,
        stdin_open=c.stdin_open,
        auto_remove=c.auto_remove,
        config=config,
        oci_spec=oci_spec,
    )


def _mount_type(m: pb.ContainerMount) -> str:
    """bind | volume | tmpfs: the enum when the agent sets it, the string from an older agent."""
    if m.mount_type == pb.MOUNT_TYPE_UNSPECIFIED:
        return m.type
    return pb.MountType.Name(m.mount_type).removeprefix("MOUNT_TYPE_").lower()


def config_message(c: ContainerConfig) -> pb.ContainerConfig:
    """The config with both forms of each sized/timed value: the string as typed (read by older agents)
    and the typed field parsed here (units.InvalidValue when it does not parse), which newer agents use.
    The one mapping of run options to the wire: `run`/`create` and release files (controller.rollout.spec).
    """
    labels: dict[str, str] = {}
    for item in c.labels:
        key, _, value = item.partition("=")
        labels[key] = value
    cfg = pb.ContainerConfig(
        image=c.image,
        name=c.name,
        env=list(c.env),
        workdir=c.workdir,
        user=c.user,
        hostname=c.hostname,
        labels=labels,
        volumes=list(c.volumes),
        mounts=list(c.mounts),
        tmpfs=list(c.tmpfs),
        memory=c.memory,
        memory_swap=c.memory_swap,
        cpus=c.cpus,
        cpu_shares=c.cpu_shares,
        pids_limit=c.pids_limit,
        ulimits=list(c.ulimits),
        restart=c.restart,
        tty=c.tty,
        stdin_open=c.interactive,
        network=c.network,
        publish=list(c.publish),
        ip=c.ip,
        network_aliases=list(c.network_aliases),
        privileged=c.privileged,
        cap_add=list(c.cap_add),
        cap_drop=list(c.cap_drop),
        read_only=c.read_only,
        security_opt=list(c.security_opt),
        auto_remove=c.auto_remove,
        stop_signal=c.stop_signal,
        health_cmd=c.health_cmd,
        health_interval=c.health_interval,
        health_timeout=c.health_timeout,
        health_retries=c.health_retries,
        health_start_period=c.health_start_period,
        no_healthcheck=c.no_healthcheck,
    )
    if c.command:
        cfg.command.values.extend(c.command)
    if c.entrypoint is not None:
        cfg.entrypoint.values.extend([c.entrypoint] if c.entrypoint else [])
    if c.stop_timeout is not None:
        cfg.stop_timeout = c.stop_timeout
        cfg.stop_timeout_duration.FromSeconds(c.stop_timeout)
    if c.memory:
        cfg.memory_bytes = units.parse_memory(c.memory)
    if c.memory_swap:
        cfg.memory_swap_bytes = units.parse_memory_swap(c.memory_swap)
    if c.cpus:
        cfg.nano_cpus = units.parse_cpus(c.cpus)
    for text, flag, field in (
        (c.health_interval, "--health-interval", cfg.health_interval_duration),
        (c.health_timeout, "--health-timeout", cfg.health_timeout_duration),
        (c.health_start_period, "--health-start-period", cfg.health_start_period_duration),
    ):
        if text:
            field.FromNanoseconds(units.parse_duration(text, flag))
    return cfg
