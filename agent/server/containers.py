"""The Containers servicer: validate → ContainerManager → convert to agent.api.v1 messages. Nothing else.

`run_options` turns the API's `ContainerConfig` into `RunOptions`, so bad input is an InvalidArgument naming
the flag before anything is created. It is the one place that reads a typed field or, when a controller
did not set it (an older one), parses the string beside it with the parsers of `agent.runtime.options`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any, Literal

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from agent import limits
from agent.api.v1 import containers_pb2 as pb
from agent.api.v1 import containers_pb2_grpc
from agent.containers import copy, stats
from agent.containers.io import CloseStdin, Event, Exited, Input, Output, Resize, Started, Stdin
from agent.containers.manager import ContainerManager
from agent.errors import InvalidArgument
from agent.runtime import bundle
from agent.runtime.options import (
    HealthConfig,
    MountSpec,
    MountType,
    RunOptions,
    cpus_from_nano,
    memory_from_bytes,
    memory_swap_from_bytes,
    parse_cpus,
    parse_duration,
    parse_env_line,
    parse_memory,
    parse_memory_swap,
    parse_mount,
    parse_restart,
    parse_tmpfs,
    parse_ulimit,
    parse_volume,
    seconds_from_nanoseconds,
    whole_seconds_from_nanoseconds,
)
from agent.server import paging, permissions
from agent.server.requests import first_message
from agent.state.containers import ContainerRecord, Status

STATUS = {
    Status.CREATING: pb.CONTAINER_STATUS_CREATING,
    Status.CREATED: pb.CONTAINER_STATUS_CREATED,
    Status.RUNNING: pb.CONTAINER_STATUS_RUNNING,
    Status.PAUSED: pb.CONTAINER_STATUS_PAUSED,
    Status.RESTARTING: pb.CONTAINER_STATUS_RESTARTING,
    Status.EXITED: pb.CONTAINER_STATUS_EXITED,
    Status.REMOVING: pb.CONTAINER_STATUS_REMOVING,
    Status.DEAD: pb.CONTAINER_STATUS_DEAD,
}
STREAMS = {"stdout": pb.OUTPUT_STREAM_STDOUT, "stderr": pb.OUTPUT_STREAM_STDERR}
MOUNT_TYPES = {
    MountType.BIND: pb.MOUNT_TYPE_BIND,
    MountType.VOLUME: pb.MOUNT_TYPE_VOLUME,
    MountType.TMPFS: pb.MOUNT_TYPE_TMPFS,
}


def _ts(dt: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(dt)
    return ts


def _security_opts(values: list[str]) -> tuple[bool, str]:
    no_new_privs, seccomp = True, "default"
    for raw in values:
        key, sep, value = raw.replace(":", "=", 1).partition("=")
        if key == "no-new-privileges":
            if value not in ("", "true", "false"):
                raise InvalidArgument(
                    f"invalid --security-opt {raw!r}: expected no-new-privileges[=true|false]"
                )
            no_new_privs = value != "false"
        elif key == "seccomp" and sep and value:
            seccomp = value
        else:
            raise InvalidArgument(
                f"invalid --security-opt {raw!r}: "
                "supported are no-new-privileges[=false] and seccomp=unconfined"
            )
    return no_new_privs, seccomp


def _memory(cfg: pb.ContainerConfig) -> int | None:
    if cfg.HasField("memory_bytes"):
        return memory_from_bytes(cfg.memory_bytes)
    return parse_memory(cfg.memory) if cfg.memory else None


def _memory_swap(cfg: pb.ContainerConfig) -> int | None:
    if cfg.HasField("memory_swap_bytes"):
        return memory_swap_from_bytes(cfg.memory_swap_bytes)
    return parse_memory_swap(cfg.memory_swap) if cfg.memory_swap else None


def _cpus(cfg: pb.ContainerConfig) -> float | None:
    if cfg.HasField("nano_cpus"):
        return cpus_from_nano(cfg.nano_cpus)
    return parse_cpus(cfg.cpus) if cfg.cpus else None


HealthDuration = Literal[
    "health_interval_duration", "health_timeout_duration", "health_start_period_duration"
]


def _typed(cfg: pb.ContainerConfig, name: HealthDuration) -> Duration | None:
    value: Duration = getattr(cfg, name)
    return value if cfg.HasField(name) else None


def _seconds(typed: Duration | None, text: str, flag: str) -> float | None:
    """A typed duration when set, else the string form parsed; None when neither is given."""
    if typed is not None:
        return seconds_from_nanoseconds(typed.ToNanoseconds(), flag)
    return parse_duration(text, flag) if text else None


def _health(cfg: pb.ContainerConfig) -> HealthConfig | None:
    if cfg.no_healthcheck:
        return HealthConfig(test=("NONE",))
    interval_d = _typed(cfg, "health_interval_duration")
    timeout_d = _typed(cfg, "health_timeout_duration")
    start_period_d = _typed(cfg, "health_start_period_duration")
    if not cfg.health_cmd:
        typed = (interval_d, timeout_d, start_period_d)
        strings = (cfg.health_interval, cfg.health_timeout, cfg.health_start_period)
        if any(d is not None for d in typed) or any(strings) or cfg.health_retries:
            raise InvalidArgument("--health-interval/--health-timeout/--health-retries need --health-cmd")
        return None
    if cfg.health_retries < 0:
        raise InvalidArgument("--health-retries must not be negative")
    interval = _seconds(interval_d, cfg.health_interval, "--health-interval")
    timeout = _seconds(timeout_d, cfg.health_timeout, "--health-timeout")
    start_period = _seconds(start_period_d, cfg.health_start_period, "--health-start-period")
    interval = 30.0 if interval is None else interval
    timeout = 30.0 if timeout is None else timeout
    if interval <= 0 or timeout <= 0:
        raise InvalidArgument("--health-interval and --health-timeout must be positive")
    return HealthConfig(
        test=("CMD-SHELL", cfg.health_cmd),
        interval_s=interval,
        timeout_s=timeout,
        retries=cfg.health_retries or 3,
        start_period_s=start_period or 0.0,
    )


def _check_limits(cfg: pb.ContainerConfig) -> None:
    """The bounds of `agent.limits` on what a container record keeps (see there for the numbers); the
    specific ones first so that the error names the field, the whole config's size last."""
    limits.check_labels(cfg.labels)
    limits.check_argv_env(cfg.command.values, cfg.entrypoint.values, cfg.env)
    limits.check_hostname(cfg.hostname)
    for alias in cfg.network_aliases:
        limits.check_network_alias(alias)
    limits.check_range("--pids-limit", cfg.pids_limit, -limits.INT64_MAX - 1, limits.PIDS_LIMIT_MAX)
    limits.check_config_size(cfg.ByteSize())


def _stop_timeout(cfg: pb.ContainerConfig) -> int | None:
    """--stop-timeout in whole seconds: the Duration when set (a fraction rounded up), else the int."""
    if cfg.HasField("stop_timeout_duration"):
        seconds = whole_seconds_from_nanoseconds(cfg.stop_timeout_duration.ToNanoseconds())
    elif cfg.HasField("stop_timeout"):
        seconds = cfg.stop_timeout
    else:
        return None
    return limits.check_range("--stop-timeout", seconds, 0, limits.INT32_MAX)


def _request_timeout(request: pb.StopContainerRequest | pb.RestartContainerRequest) -> int | None:
    """Stop's and restart's `-t` in whole seconds: the Duration when set (a fraction rounded up), else
    the int; a Duration the int could not hold is refused, so both forms mean the same."""
    if request.HasField("timeout_duration"):
        seconds = whole_seconds_from_nanoseconds(request.timeout_duration.ToNanoseconds())
        return limits.check_range("the stop timeout", seconds, -limits.INT32_MAX - 1, limits.INT32_MAX)
    return request.timeout if request.HasField("timeout") else None


def run_options(cfg: pb.ContainerConfig) -> RunOptions:
    """The API's config in the user's syntax → validated RunOptions (InvalidArgument on bad input);
    host-power options the caller may not use are refused here (PermissionDenied, see permissions)."""
    opts = _run_options(cfg)
    permissions.check_run_options(opts)
    return opts


def _run_options(cfg: pb.ContainerConfig) -> RunOptions:
    if not cfg.image:
        raise InvalidArgument("an image is required")
    _check_limits(cfg)
    stop_timeout = _stop_timeout(cfg)
    mounts: list[MountSpec] = [parse_volume(v) for v in cfg.volumes]
    mounts += [parse_mount(m) for m in cfg.mounts]
    mounts += [parse_tmpfs(t) for t in cfg.tmpfs]
    no_new_privs, seccomp = _security_opts(list(cfg.security_opt))
    return RunOptions(
        image=cfg.image,
        command=tuple(cfg.command.values) if cfg.HasField("command") else None,
        entrypoint=tuple(v for v in cfg.entrypoint.values if v) if cfg.HasField("entrypoint") else None,
        name=cfg.name,
        env=tuple(parse_env_line(e) for e in cfg.env),
        workdir=cfg.workdir,
        user=cfg.user,
        hostname=cfg.hostname,
        labels=dict(cfg.labels),
        mounts=tuple(mounts),
        memory=_memory(cfg),
        memory_swap=_memory_swap(cfg),
        cpus=_cpus(cfg),
        cpu_shares=cfg.cpu_shares or None,
        pids_limit=cfg.pids_limit or None,
        ulimits=tuple(parse_ulimit(u) for u in cfg.ulimits),
        restart=parse_restart(cfg.restart or "no"),
        health=_health(cfg),
        tty=cfg.tty,
        stdin_open=cfg.stdin_open,
        network=cfg.network,
        privileged=cfg.privileged,
        cap_add=tuple(cfg.cap_add),
        cap_drop=tuple(cfg.cap_drop),
        read_only=cfg.read_only,
        no_new_privileges=no_new_privs,
        seccomp=seccomp,
        auto_remove=cfg.auto_remove,
        stop_signal=cfg.stop_signal,
        stop_timeout=stop_timeout,
        publish=tuple(cfg.publish),  # network (agent/network)
        ip=cfg.ip,
        network_aliases=tuple(cfg.network_aliases),
    )


def container_message(mgr: ContainerManager, rec: ContainerRecord, *, detail: bool = False) -> pb.Container:
    opts = mgr.options(rec)
    msg = pb.Container(
        id=rec.id,
        name=rec.name,
        image=rec.image,
        image_digest=rec.image_digest,
        command=rec.command,
        created=_ts(rec.created_at),
        status=STATUS[rec.status],
        exit_code=rec.exit_code or 0,
        oom_killed=rec.oom_killed,
        error=rec.error,
        pid=rec.pid,
        restart_count=rec.restart_count,
        restart_policy=str(opts.restart),
        health_status=rec.health_status,
        health_failing_streak=rec.health_failing_streak,
        labels=rec.labels,
        hostname=rec.hostname,
        network=opts.network,
        mounts=[
            pb.ContainerMount(
                type=str(m.type),
                mount_type=MOUNT_TYPES[m.type],
                source=m.source,
                destination=m.target,
                read_only=m.read_only,
            )
            for m in opts.mounts
        ],
        log_path=str(mgr.paths(rec.id).log),
        tty=opts.tty,
        stdin_open=opts.stdin_open,
        auto_remove=opts.auto_remove,
        conmon_pid=rec.conmon_pid,
        ports=mgr.network.ports(rec.id) if mgr.network is not None else [],  # network (agent/network)
        stopped_by_user=rec.stopped_by_user,
    )
    if rec.started_at is not None:
        msg.started_at.CopyFrom(_ts(rec.started_at))
    if rec.finished_at is not None:
        msg.finished_at.CopyFrom(_ts(rec.finished_at))
    for h in rec.health_log:
        entry = pb.HealthLogEntry(exit_code=int(h.get("exit_code", 0)), output=str(h.get("output", "")))
        if h.get("start"):
            entry.start.CopyFrom(_ts(datetime.fromisoformat(h["start"])))
        if h.get("end"):
            entry.end.CopyFrom(_ts(datetime.fromisoformat(h["end"])))
        msg.health_log.append(entry)
    if detail:
        msg.config_json = json.dumps(rec.options, sort_keys=True)
        try:
            msg.spec_json = json.dumps(bundle.read_config(mgr.paths(rec.id)), sort_keys=True)
        except (OSError, ValueError):
            msg.spec_json = ""
    return msg


def _parse_filters(request: pb.ListContainersRequest) -> dict[str, list[str]]:
    """The key/value pairs when a controller sent them, else the KEY=VALUE strings (an older one)."""
    pairs: list[tuple[str, str]] = []
    for p in request.filter_pairs:
        if not p.key:
            raise InvalidArgument(f"invalid filter {p.key + '=' + p.value!r}: expected KEY=VALUE")
        pairs.append((p.key, p.value))
    for f in [] if pairs else request.filters:
        key, sep, value = f.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"invalid filter {f!r}: expected KEY=VALUE")
        pairs.append((key, value))
    out: dict[str, list[str]] = {}
    for key, value in pairs:
        out.setdefault(key.strip().lower(), []).append(value)
    return out


def _matches(mgr: ContainerManager, rec: ContainerRecord, filters: dict[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key == "status":
            if str(rec.status) not in values:
                return False
        elif key == "name":
            if not any(v in rec.name for v in values):
                return False
        elif key == "id":
            if not any(rec.id.startswith(v) for v in values):
                return False
        elif key == "label":
            for v in values:
                k, sep, val = v.partition("=")
                if k not in rec.labels or (sep and rec.labels[k] != val):
                    return False
        elif key == "ancestor":
            if not any(v in (rec.image, rec.image_digest) for v in values):
                return False
        elif key == "exited":
            if rec.status is not Status.EXITED or str(rec.exit_code) not in values:
                return False
        elif key == "health":
            if (rec.health_status or "none") not in values:
                return False
        else:
            raise InvalidArgument(
                f"invalid filter {key!r}: supported are status, name, id, label, ancestor, exited, health"
            )
    return True


async def _inputs(requests: AsyncIterator[Any]) -> AsyncIterator[Input]:
    """Later messages of a Run/Attach/Exec stream → stdin, resize and end-of-input events."""
    async for req in requests:
        kind = req.WhichOneof("msg")
        if kind == "stdin":
            yield Stdin(req.stdin)
        elif kind == "resize":
            yield Resize(req.resize.rows, req.resize.cols)
        elif kind == "close_stdin":
            yield CloseStdin()
            return
    yield CloseStdin()


def _io_response(cls: Any, ev: Event, id_field: str = "id") -> Any:
    if isinstance(ev, Started):
        return cls(**{id_field: ev.id})
    if isinstance(ev, Output):
        return cls(output=pb.Output(stream=STREAMS.get(ev.stream, pb.OUTPUT_STREAM_STDOUT), data=ev.data))
    assert isinstance(ev, Exited)
    return cls(exit=pb.ExitStatus(code=ev.code, oom_killed=ev.oom, error=ev.error))


class ContainersServicer(containers_pb2_grpc.ContainersServicer):
    def __init__(self, manager: ContainerManager) -> None:
        self._m = manager

    async def Create(
        self, request: pb.CreateContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.CreateContainerResponse:
        rec = await self._m.create(run_options(request.config))
        return pb.CreateContainerResponse(id=rec.id, name=rec.name)

    async def Run(
        self, request_iterator: AsyncIterator[pb.RunContainerRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.RunContainerResponse]:
        start = await first_message(request_iterator, "start")
        opts = run_options(start.config)
        inputs = _inputs(request_iterator) if (opts.stdin_open or opts.tty) and not start.detach else None
        async for ev in self._m.run(
            opts, inputs, detach=start.detach, size=(start.size.rows, start.size.cols)
        ):
            yield _io_response(pb.RunContainerResponse, ev)

    async def Start(
        self, request: pb.StartContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StartContainerResponse:
        rec = await self._m.start_container(request.container)
        return pb.StartContainerResponse(container=container_message(self._m, rec))

    async def Attach(
        self, request_iterator: AsyncIterator[pb.AttachContainerRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.AttachContainerResponse]:
        start = await first_message(request_iterator, "start")
        inputs = _inputs(request_iterator) if start.stdin else None
        rec = self._m.find(start.container)
        yield pb.AttachContainerResponse(id=rec.id)
        async for ev in self._m.attach(
            rec.id, inputs, start=start.start, size=(start.size.rows, start.size.cols)
        ):
            yield _io_response(pb.AttachContainerResponse, ev)

    async def Stop(
        self, request: pb.StopContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopContainerResponse:
        timeout = _request_timeout(request)
        if timeout is not None and timeout < 0:
            raise InvalidArgument("the stop timeout must not be negative")
        rec = await self._m.stop_container(request.container, timeout)
        return pb.StopContainerResponse(container=container_message(self._m, rec))

    async def Restart(
        self, request: pb.RestartContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestartContainerResponse:
        timeout = _request_timeout(request)
        rec = await self._m.restart_container(request.container, timeout)
        return pb.RestartContainerResponse(container=container_message(self._m, rec))

    async def Kill(
        self, request: pb.KillContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.KillContainerResponse:
        await self._m.kill(request.container, request.signal or "SIGKILL")
        return pb.KillContainerResponse()

    async def Pause(
        self, request: pb.PauseContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.PauseContainerResponse:
        await self._m.pause(request.container)
        return pb.PauseContainerResponse()

    async def Unpause(
        self, request: pb.UnpauseContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.UnpauseContainerResponse:
        await self._m.unpause(request.container)
        return pb.UnpauseContainerResponse()

    async def Remove(
        self, request: pb.RemoveContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveContainerResponse:
        cid = await self._m.remove(request.container, force=request.force, volumes=request.volumes)
        return pb.RemoveContainerResponse(id=cid)

    async def Prune(
        self, request: pb.PruneContainersRequest, context: grpc.aio.ServicerContext
    ) -> pb.PruneContainersResponse:
        return pb.PruneContainersResponse(removed=await self._m.prune())

    async def Wait(
        self, request: pb.WaitContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.WaitContainerResponse:
        code, error = await self._m.wait(request.container, request.condition or "not-running")
        return pb.WaitContainerResponse(exit_code=code, error=error)

    def _listed(self, request: pb.ListContainersRequest) -> Iterator[pb.Container]:
        filters = _parse_filters(request)
        records = self._m.list_containers(all_=request.all or "status" in filters)
        return (container_message(self._m, r) for r in records if _matches(self._m, r, filters))

    async def List(
        self, request: pb.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListContainersResponse:
        return pb.ListContainersResponse(containers=list(self._listed(request)))

    async def ListStream(
        self, request: pb.ListContainersRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ListContainersResponse]:
        for page in paging.pages(self._listed(request)):
            yield pb.ListContainersResponse(containers=page)

    async def Inspect(
        self, request: pb.InspectContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.InspectContainerResponse:
        rec = self._m.find(request.container)
        return pb.InspectContainerResponse(container=container_message(self._m, rec, detail=True))

    async def Logs(
        self, request: pb.ContainerLogsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ContainerLogsResponse]:
        since = request.since.ToNanoseconds() if request.HasField("since") else None
        until = request.until.ToNanoseconds() if request.HasField("until") else None
        tail = request.tail if request.tail >= 0 else None
        batch: list[pb.LogEntry] = []
        async for e in self._m.logs(
            request.container, follow=request.follow, tail=tail, since_ns=since, until_ns=until
        ):
            ts = Timestamp()
            ts.FromNanoseconds(e.time_ns)
            batch.append(pb.LogEntry(time=ts, stream=STREAMS[e.stream], data=e.data, partial=e.partial))
            if len(batch) >= 256 or request.follow:
                yield pb.ContainerLogsResponse(entries=batch)
                batch = []
        if batch:
            yield pb.ContainerLogsResponse(entries=batch)

    async def Exec(
        self, request_iterator: AsyncIterator[pb.ExecContainerRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecContainerResponse]:
        start = await first_message(request_iterator, "start")
        if not start.command:
            raise InvalidArgument("exec needs a command")
        inputs = _inputs(request_iterator) if start.interactive and not start.detach else None
        events = self._m.exec(
            start.container,
            tuple(start.command),
            env=tuple(parse_env_line(e) for e in start.env),
            user=start.user,
            workdir=start.workdir,
            tty=start.tty,
            interactive=start.interactive,
            inputs=inputs,
            detach=start.detach,
            size=(start.size.rows, start.size.cols),
        )
        # closed when this call ends (a client that went away cancels it), not when the garbage collector
        # gets to it: closing the exec is what kills its process
        async with contextlib.aclosing(events):
            async for ev in events:
                yield _io_response(pb.ExecContainerResponse, ev, "exec_id")

    async def Top(
        self, request: pb.TopContainerRequest, context: grpc.aio.ServicerContext
    ) -> pb.TopContainerResponse:
        titles, rows = await self._m.top(request.container)
        return pb.TopContainerResponse(titles=titles, processes=[pb.ProcessRow(cells=r) for r in rows])

    async def Stats(
        self, request: pb.ContainerStatsRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ContainerStatsResponse]:
        async for samples in stats.sample(self._m, list(request.containers), stream=request.stream):
            out = []
            for s in samples:
                ts = Timestamp()
                ts.FromNanoseconds(s.time_ns)
                out.append(
                    pb.ContainerStats(
                        id=s.id,
                        name=s.name,
                        cpu_percent=s.cpu_percent,
                        cpu_usage_ns=s.cpu_usage_ns,
                        memory_usage=s.memory_usage,
                        memory_limit=s.memory_limit,
                        pids=s.pids,
                        net_rx_bytes=s.net_rx,
                        net_tx_bytes=s.net_tx,
                        block_read_bytes=s.block_read,
                        block_write_bytes=s.block_write,
                        time=ts,
                    )
                )
            yield pb.ContainerStatsResponse(stats=out)

    async def CopyTo(
        self, request_iterator: AsyncIterator[pb.CopyToContainerRequest], context: grpc.aio.ServicerContext
    ) -> pb.CopyToContainerResponse:
        target = await first_message(request_iterator, "target")

        async def chunks() -> AsyncIterator[bytes]:
            async for req in request_iterator:
                if req.WhichOneof("msg") == "data":
                    yield req.data

        await copy.copy_to(self._m, target.container, target.path, chunks())
        return pb.CopyToContainerResponse()

    async def CopyFrom(
        self, request: pb.CopyFromContainerRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.CopyFromContainerResponse]:
        async for chunk in copy.copy_from(self._m, request.container, request.path):
            yield pb.CopyFromContainerResponse(data=chunk)
