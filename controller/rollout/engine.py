"""The rollout driver: plan → lease → stage everywhere → canary → waves → done, journaled before every act.

    create()   plan the waves, pin every image tag to a digest (asked of the first reachable host), record
               the rollout in the journal (state "planned"): nothing has happened on any host yet
    run()      lease the release on every host (renewed while running) → stage on every host in parallel
               (nothing switches until every host that will switch has staged; a host that cannot stage
               counts as failed) → for each wave, canary first: activate its hosts in parallel, watch each
               until the agent says healthy (→ Commit) or reverted/failed/too late (→ failed) → done

Each host's step is written to the journal BEFORE the act it names ("activating" before Activate,
"verified" before Commit, "rolling_back" before Rollback), so `run(resume=True)` after a crash at any point
continues exactly there: a host in "activating" is asked (Get) whether it runs the revision, and is
activated only if not (Activate is idempotent anyway); staged hosts are not staged again; canary results
stand. Failures are counted over the whole rollout: beyond max-fail, `pause` stops before the next wave
(state paused, exit 3) and `rollback` returns every host running the new revision to its previous one,
waves in reverse order (state rolled_back, exit 1). `rollout pause/abort` set the journal's state; the
engine reads it between waves and stops there. Exit codes: 0 done (failures within max-fail), 1 failed,
rolled back or aborted, 3 paused.

The engine talks to agents through a `Fleet` (per-host Releases calls and tag resolution), so tests drive
it with fake agents and the CLI with real ones (`AgentFleet`).

Per host (issue 23): `create` renders the release for each host (controller/rollout/values.py) and fills
in the versions of the secrets it gets (controller/rollout/secrets.py), so each host has its own spec
(journaled in options["host_specs"] when they differ); staging sends a host its secret values. A host
stages only inside its download window and switches only inside its apply window with min-healthy +
deadline left before it closes (controller/rollout/windows.py; time from a `windows.Clock`); a host whose
release is held by an update lock on the agent waits (`--lock-timeout`, then failed, or `--force`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import getpass
import socket
import time
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Coroutine,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent.api.v1 import releases_pb2 as pb
from agent.oci import reference as oci_reference
from controller import credentials, fanout
from controller.api.containers import ContainersApi
from controller.api.registry import RegistryApi
from controller.api.releases import (
    Activated,
    Lease,
    Material,
    ReleaseDetails,
    ReleasesApi,
    ReleaseState,
    RollbackTarget,
    StageProgress,
    VerifyPolicy,
)
from controller.errors import AgentCallError, ConnectError, ControllerError
from controller.rollout import plan as plan_mod
from controller.rollout import secrets as secrets_mod
from controller.rollout import spec as spec_mod
from controller.rollout import values as values_mod
from controller.rollout import windows as windows_mod
from controller.rollout.journal import (
    HostStep,
    Journal,
    Rollout,
    RolloutState,
    Step,
    StepUpdate,
    new_rollout_id,
)
from controller.target import Target

T = TypeVar("T")
EXIT_OK, EXIT_FAILED, EXIT_PAUSED = 0, 1, 3
LEASE_TTL = 60.0  # seconds; renewed every third of it while the engine runs
WATCH_GRACE = 30.0  # at most this many seconds past the verify deadline (Options.grace) before a host fails
DEFAULT_DEADLINE = 120.0  # the agent's default verify deadline (releases.proto)
DEFAULT_MIN_HEALTHY = 10.0
WAIT_STEP = 60.0  # seconds between looks at the journal (pause/abort) while a host waits for its window
LOCK_RETRY = 5.0  # seconds between Activate attempts on a host whose update lock is held
CALL_TIMEOUT = 30.0
STAGE_TIMEOUT = 3600.0
RETRY_DELAY = 1.0

ACTIVE_STATES = (RolloutState.PLANNED, RolloutState.STAGING, RolloutState.RUNNING)
FINAL_STATES = (RolloutState.DONE, RolloutState.FAILED, RolloutState.ROLLED_BACK, RolloutState.ABORTED)
FAILED_STEPS = frozenset({Step.STAGE_FAILED, Step.FAILED, Step.REVERTED})
TO_STAGE = frozenset({Step.PLANNED, Step.STAGING, Step.STAGE_FAILED})
TO_SWITCH = frozenset({Step.STAGED, Step.ACTIVATING, Step.VERIFYING, Step.VERIFIED})
# steps after which the host may run the new revision (rollback asks it)
MAYBE_SWITCHED = frozenset(
    {Step.ACTIVATING, Step.VERIFYING, Step.VERIFIED, Step.COMMITTED, Step.FAILED, Step.ROLLING_BACK}
)
VERIFIED_PHASES = frozenset({"healthy", "unconfirmed", "committed"})
RELEASE_LABEL = "dockyard.release"  # the agent labels a release's containers with its name


# ---- what the engine needs from agents ---------------------------------------------------------------


class Releases(Protocol):
    """The calls of controller.api.releases.ReleasesApi the engine makes (fake agents implement them)."""

    async def lease(
        self, release: str, *, owner: str, rollout_id: str, ttl: float, takeover: bool = False
    ) -> Lease: ...

    async def unlease(self, release: str, token: str) -> None: ...

    def stage(
        self,
        spec: pb.RevisionSpec,
        *,
        lease_token: str = "",
        rollout_id: str = "",
        materials: Sequence[Material] = (),
    ) -> AsyncIterator[StageProgress]: ...

    async def activate(
        self,
        release: str,
        revision: int,
        *,
        policy: VerifyPolicy = ...,
        lease_token: str = "",
        rollout_id: str = "",
        timeout: float | None = None,
        force: bool = False,
    ) -> Activated: ...

    async def commit(
        self, release: str, revision: int, *, lease_token: str = "", timeout: float | None = None
    ) -> ReleaseState: ...

    async def rollback(
        self,
        release: str,
        target: RollbackTarget,
        *,
        lease_token: str = "",
        reason: str = "",
        timeout: float | None = None,
    ) -> ReleaseState: ...

    async def get(self, release: str) -> ReleaseDetails: ...

    def watch(self, release: str) -> AsyncIterator[ReleaseState]: ...


@dataclass(frozen=True)
class Published:
    """A container on a host that publishes host ports (`ps`'s "0.0.0.0:8080->80/tcp" strings)."""

    container: str
    release: str  # its dockyard.release label ("" for a plain container)
    ports: tuple[str, ...]


class Fleet(Protocol):
    def releases(self, host: str) -> Releases: ...

    async def published(self, host: str) -> Sequence[Published]:
        """The host's containers that publish ports now (ConnectError: the host is unreachable)."""
        ...

    async def resolve(self, host: str, reference: str) -> str:
        """The digest `reference` has for that host's platform (ConnectError: the host is unreachable)."""
        ...

    async def close(self) -> None: ...


class AgentFleet:
    """The real fleet: one mTLS channel per host (controller.fanout.Pool); registry logins from the
    controller's credential store travel with each resolution, as with `pull`."""

    def __init__(self, targets: Mapping[str, Target], config_dir: Path) -> None:
        self.targets = dict(targets)
        self.config_dir = config_dir
        self._pool = fanout.Pool(config_dir)

    def releases(self, host: str) -> ReleasesApi:
        return ReleasesApi(self._pool.client(self.targets[host]))

    async def published(self, host: str) -> list[Published]:
        found = await ContainersApi(self._pool.client(self.targets[host])).ls()
        return [Published(c.name, c.labels.get(RELEASE_LABEL, ""), tuple(c.ports)) for c in found if c.ports]

    async def resolve(self, host: str, reference: str) -> str:
        login = credentials.CredentialStore(self.config_dir).get(credentials.registry_of(reference))
        api = RegistryApi(self._pool.client(self.targets[host]))
        return (await api.resolve(reference, login=login, timeout=CALL_TIMEOUT)).digest

    async def close(self) -> None:
        await self._pool.close()


# ---- the rollout's inputs, as the journal keeps them --------------------------------------------------


@dataclass(frozen=True)
class Options:
    """The flags of `rollout apply` (counts as typed, parsed again from the journal on resume)."""

    canary: str = "1"
    batch: str = "25%"
    budgets: Mapping[str, int] = field(default_factory=dict)
    max_fail: str = "0"
    on_failure: str = "pause"  # | "rollback"
    min_healthy: float | None = None  # seconds; None = the agent's default (10 s)
    deadline: float | None = None  # seconds; None = the agent's default (2 m)
    delay: float = 0.0  # seconds between waves
    stage_only: bool = False
    start_first: bool = False
    download_window: str = ""  # windows.parse form; "" = any time (or the host's group's)
    apply_window: str = ""
    tz: str = ""  # the windows' zone; "" = the controller's local zone
    lock_timeout: float | None = None  # seconds a host held by an update lock waits; None = no limit
    force: bool = False  # after lock_timeout (at once without one), switch a locked host anyway
    watch_grace: float | None = None  # seconds; None = min(WATCH_GRACE, deadline / 2) (see grace())

    def plan_options(self) -> plan_mod.PlanOptions:
        return plan_mod.PlanOptions(
            canary=plan_mod.parse_count(self.canary, "--canary"),
            batch=plan_mod.parse_batch(self.batch),
            budgets=dict(self.budgets),
            max_fail=plan_mod.parse_count(self.max_fail, "--max-fail"),
        )

    def policy(self) -> VerifyPolicy:
        return VerifyPolicy(self.min_healthy, self.deadline, self.start_first)

    def switch_needs(self) -> float:
        """Seconds of apply window a host needs to start switching: min-healthy + deadline."""
        return (self.min_healthy if self.min_healthy is not None else DEFAULT_MIN_HEALTHY) + (
            self.deadline if self.deadline is not None else DEFAULT_DEADLINE
        )

    def window(self, kind: str, host_values: Mapping[str, str]) -> windows_mod.Window | None:
        """The host's `download` or `apply` window: the flag, else its group's var, else None (any time)."""
        text = self.download_window if kind == "download" else self.apply_window
        tz = self.tz
        if not text:
            text = host_values.get(f"{kind}_window", "")
            tz = tz or host_values.get("window_tz", "")
        return windows_mod.parse(text, tz, flag=f"{kind}_window") if text else None

    def grace(self) -> float:
        """How long past the verify deadline the controller waits to hear a host's verdict (the agent
        decides by the deadline itself; this covers the way back) before counting it as failed:
        --watch-grace, else min(30 s, deadline / 2), so a short deadline also fails a cut host soon."""
        if self.watch_grace is not None:
            return self.watch_grace
        return min(WATCH_GRACE, (self.deadline if self.deadline is not None else DEFAULT_DEADLINE) / 2)

    def watch_timeout(self, grace: float | None = None) -> float:
        """How long the controller watches a host verify before counting it as failed (`grace`: a
        test's override of grace())."""
        deadline = self.deadline if self.deadline is not None else DEFAULT_DEADLINE
        return deadline + (self.grace() if grace is None else grace)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["budgets"] = dict(self.budgets)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Options:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class HostInfo:
    """A selected host: its name, how to reach it, its inventory labels (for budgets)."""

    name: str
    target: Target
    labels: Mapping[str, str] = field(default_factory=dict)
    values: Mapping[str, str] = field(default_factory=dict)  # inventory vars (host > group > defaults)
    groups: tuple[str, ...] = ()  # its inventory groups in file order (secret scopes)

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self.target),
            "labels": dict(self.labels),
            "values": dict(self.values),
            "groups": list(self.groups),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostInfo:
        target = Target(data["name"], data["kind"], data["address"], int(data.get("port", 0)))
        return cls(
            target.name,
            target,
            dict(data.get("labels", {})),
            dict(data.get("values", {})),
            tuple(data.get("groups", ())),
        )

    def render_values(self) -> values_mod.HostValues:
        return values_mod.HostValues(self.name, dict(self.labels), dict(self.values))


def hosts_of(rollout: Rollout) -> list[HostInfo]:
    """The hosts a journaled rollout drives (so `resume` needs no -H)."""
    return [HostInfo.from_json(h) for h in rollout.options.get("hosts", [])]


def options_of(rollout: Rollout) -> Options:
    return Options.from_json(rollout.options.get("flags", {}))


def specs_of(rollout: Rollout) -> dict[str, pb.RevisionSpec]:
    """Each host's spec (the same one for every host when nothing differed per host)."""
    common = pb.RevisionSpec.FromString(rollout.spec)
    per_host = rollout.options.get("host_specs", {})
    return {
        h: pb.RevisionSpec.FromString(base64.b64decode(per_host[h])) if h in per_host else common
        for h in rollout.plan.hosts()
    }


def default_owner() -> str:
    """`user@machine`: who drives a rollout (shown by `rollout ls`, recorded with each lease)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


# ---- what the engine reports -------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One thing that happened: the rollout's state, a host's step or agent phase, or a message."""

    kind: str  # "rollout" | "host" | "message"
    rollout_id: str
    at: float  # epoch seconds
    state: str = ""  # kind "rollout": the rollout's state
    host: str = ""
    wave: int = -1
    step: str = ""  # kind "host": the journal step
    phase: str = ""  # kind "host": the agent's phase of the release (its health), when known
    revision: int = 0
    digest: str = ""  # the image digests the host runs for the release, "c=sha256:…" joined by ", "
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in ("", -1) or k in ("kind", "rollout_id")}


@dataclass(frozen=True)
class Result:
    rollout_id: str
    state: RolloutState
    exit_code: int
    reason: str
    steps: Mapping[str, HostStep]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.steps.values():
            out[str(s.step)] = out.get(str(s.step), 0) + 1
        return out


class Stopped(Exception):
    """Internal: the rollout reached a state where this run ends."""

    def __init__(self, state: RolloutState, reason: str) -> None:
        super().__init__(reason)
        self.state = state
        self.reason = reason


EXIT_CODES = {
    RolloutState.DONE: EXIT_OK,
    RolloutState.PAUSED: EXIT_PAUSED,
    RolloutState.FAILED: EXIT_FAILED,
    RolloutState.ROLLED_BACK: EXIT_FAILED,
    RolloutState.ABORTED: EXIT_FAILED,
}


# ---- create -------------------------------------------------------------------------------------------


async def resolve_images(fleet: Fleet, release: spec_mod.Release, hosts: Sequence[str]) -> dict[str, str]:
    """Every image reference of the release → its digest, asked of the first host that answers. A reference
    that already names a digest is kept as written. An agent's refusal (no such tag) is the error."""
    wanted = [ref for ref in release.images() if oci_reference.parse(ref).digest is None]
    digests = {ref: str(oci_reference.parse(ref).digest) for ref in release.images() if ref not in wanted}
    if not wanted:
        return digests
    unreachable: list[str] = []
    for host in hosts:
        try:
            for ref in wanted:
                try:
                    digests[ref] = await fleet.resolve(host, ref)
                except AgentCallError as exc:
                    raise _unresolved(release, ref, host, exc) from None
            return digests
        except ConnectError as exc:
            unreachable.append(f"{host}: {exc.message}")
    raise ControllerError(
        "cannot resolve the images' tags: no selected host answered (" + "; ".join(unreachable) + ")"
    )


def _unresolved(release: spec_mod.Release, ref: str, host: str, exc: AgentCallError) -> ControllerError:
    """A tag the registry refused as a release-file error at the first container naming it
    (`web.toml:3: containers.app.image: REF: not found in the registry`): the file is what to fix."""
    container = next(c.name for c in release.containers if c.config.image == ref)
    if exc.code == "NOT_FOUND":
        problem = f"{ref}: not found in the registry"
        if "HTTP 404" not in exc.message:  # e.g. no manifest for the host's platform: say which
            problem += f" ({host}: {exc.message})"
    else:
        problem = f"{ref}: cannot resolve it ({host}: {exc.message})"
    return release.error(container, "image", problem)


async def host_specs(
    release: spec_mod.Release,
    hosts: Sequence[HostInfo],
    digests: Mapping[str, str],
    secrets: secrets_mod.SecretStore | None,
    *,
    pin: bool = True,
) -> dict[str, pb.RevisionSpec]:
    """Each host's RevisionSpec: the release rendered with its values, images pinned (unless not `pin`:
    a dry run), and the versions of the secrets it gets (ValuesError / SecretError name the host and
    what is missing)."""
    rendered = values_mod.render_all(release, [h.render_values() for h in hosts])
    names = secrets_mod.release_secrets(release)
    if names and secrets is None:
        raise ControllerError("the release uses secrets, but no secret store is available")
    out: dict[str, pb.RevisionSpec] = {}
    for h in hosts:
        mine = rendered[h.name].pinned(digests) if pin else rendered[h.name]
        if names and secrets is not None:
            mine = secrets_mod.with_versions(mine, await secrets.versions_for(names, h.name, h.groups))
        out[h.name] = spec_mod.revision_spec(mine)
    return out


async def check_ports(fleet: Fleet, release: spec_mod.Release, hosts: Sequence[str]) -> None:
    """No host port the release publishes is published on a selected host by a container that is not
    the release's own (another release's, or a plain one): else the first clash, in host order, as a
    release-file error naming the host and the holder. Unreachable hosts are left to staging."""
    wanted = [
        (c.name, text, port)
        for c in release.containers
        for text in c.config.publish
        if (port := spec_mod.parse_port(text)).host_port
    ]
    if not wanted:
        return

    async def holders(host: str) -> Sequence[Published]:
        try:
            return [p for p in await fleet.published(host) if p.release != release.name]
        except ControllerError:
            return []

    found = await _together(*(holders(h) for h in hosts))
    for host, published in zip(hosts, found, strict=True):
        for container, _, port in wanted:
            for holder in published:
                for text in holder.ports:
                    bound = _bound_port(text)
                    if bound is None or not port.clashes(bound):
                        continue
                    by = f"container {holder.container}"
                    if holder.release:
                        by = f"release {holder.release} ({by})"
                    raise release.error(
                        container,
                        "ports",
                        f"host port {port.host_port}/{port.protocol} on {host} is taken by {by}",
                    )


def _bound_port(text: str) -> spec_mod.PortSpec | None:
    """ "0.0.0.0:8080->80/tcp" (what the agent lists) as a PortSpec; None if it reads otherwise."""
    host_side, arrow, container_side = text.partition("->")
    try:
        return spec_mod.parse_port(f"{host_side}:{container_side}") if arrow else None
    except ValueError:
        return None


def plan_windows(options: Options, hosts: Sequence[HostInfo]) -> None:
    """Every host's windows parse and are ever long enough (UsageError / ControllerError otherwise)."""
    need = options.switch_needs()
    for h in hosts:
        options.window("download", h.values)
        apply = options.window("apply", h.values)
        if apply is not None and apply.next_fit(time.time(), need) is None:
            raise ControllerError(
                f"{h.name}: the apply window {apply.text!r} is never open for {need:g}s"
                " (min-healthy + deadline: what a switch may take)"
            )


async def create(
    journal: Journal,
    fleet: Fleet,
    release: spec_mod.Release,
    hosts: Sequence[HostInfo],
    options: Options,
    *,
    owner: str | None = None,
    rollout_id: str | None = None,
    secrets: secrets_mod.SecretStore | None = None,
) -> Rollout:
    """Plan, pin the images, render each host's spec, journal the rollout (state planned). Nothing
    happens on any host."""
    if not hosts:
        raise ControllerError("no hosts selected: say which with -H or --selector")
    plan = plan_mod.make_plan([plan_mod.PlanHost(h.name, h.labels) for h in hosts], options.plan_options())
    plan_windows(options, hosts)
    values_mod.render_all(release, [h.render_values() for h in hosts])  # a missing value: before any call
    digests = await resolve_images(fleet, release, [h.name for h in hosts])
    await check_ports(fleet, release, [h.name for h in hosts])
    specs = await host_specs(release, hosts, digests, secrets)
    first = specs[hosts[0].name].SerializeToString(deterministic=True)
    extra: dict[str, Any] = {}
    if any(s.SerializeToString(deterministic=True) != first for s in specs.values()):
        extra["host_specs"] = {
            h: base64.b64encode(s.SerializeToString(deterministic=True)).decode() for h, s in specs.items()
        }
    rollout = Rollout(
        id=rollout_id or new_rollout_id(),
        release=release.name,
        spec=first,
        options={
            "flags": options.to_json(),
            "hosts": [h.to_json() for h in hosts],
            "images": digests,
            "source": release.source,
            **extra,
        },
        plan=plan,
        state=RolloutState.PLANNED,
        owner=owner or default_owner(),
    )
    return await journal.create(rollout)


# ---- run ----------------------------------------------------------------------------------------------


class Engine:
    """Drives one journaled rollout to its end (or to a pause) and returns the Result."""

    def __init__(
        self,
        journal: Journal,
        fleet: Fleet,
        *,
        on_event: Callable[[Event], None] | None = None,
        owner: str | None = None,
        lease_ttl: float = LEASE_TTL,
        watch_grace: float | None = None,  # None: the rollout's own (Options.grace)
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
        time_source: windows_mod.Clock | None = None,
        secrets: secrets_mod.SecretStore | None = None,
        wait_step: float = WAIT_STEP,
    ) -> None:
        self.journal = journal
        self.fleet = fleet
        self.on_event = on_event or (lambda event: None)
        self.owner = owner or default_owner()
        self.lease_ttl = lease_ttl
        self.watch_grace = watch_grace
        self._sleep = sleep  # lease renewal, --delay
        self._clock = time_source.now if time_source is not None else clock
        # waits for windows and update locks (a controllable clock in tests)
        self._wait = time_source.sleep if time_source is not None else sleep
        self.secrets = secrets
        self.wait_step = wait_step
        self._waiting: dict[str, str] = {}  # host → what it waits for (the rollout's reason says it)
        self._tokens: dict[str, str] = {}
        self._state = RolloutState.PLANNED
        self._reason = ""
        self.lease_renewals = 0
        self._stopped_as_asked = False  # --stage-only: paused after staging, exit 0
        self._takeover = False  # take over expired leases (a resumed rollout), not a new one

    # -- entry ------------------------------------------------------------------------------------------

    async def run(
        self, rollout_id: str, *, resume: bool = False, heartbeat_window: float | None = None
    ) -> Result:
        """Run a planned rollout, or (`resume`) continue a paused or interrupted one where it stands."""
        r = await self.journal.get(rollout_id)
        if r.state in FINAL_STATES:
            raise ControllerError(
                f"rollout {r.id} is {r.state}: there is nothing to {'resume' if resume else 'run'}"
            )
        if not resume and r.state is not RolloutState.PLANNED:
            raise ControllerError(f"rollout {r.id} is {r.state}; continue it with `rollout resume {r.id}`")
        window = self.lease_ttl if heartbeat_window is None else heartbeat_window
        if resume and r.state in (RolloutState.STAGING, RolloutState.RUNNING):
            age = self._clock() - r.updated_at
            if age < window:
                raise ControllerError(
                    f"rollout {r.id} is {r.state} (last heard of {age:.0f}s ago, by {r.owner}): it is still"
                    f" being driven; `rollout pause {r.id}` first, or resume after {window:.0f}s without news"
                )
        self.rollout = r
        self.spec = pb.RevisionSpec.FromString(r.spec)
        self.specs = specs_of(r)
        self.host_values = {h.name: dict(h.values) for h in hosts_of(r)}
        self.options = options_of(r)
        self.plan = r.plan
        self.hosts = [h.name for h in hosts_of(r)] or list(r.plan.hosts())
        steps = await self.journal.last_steps(r.id)
        # the failures an operator accepted by resuming a paused rollout (hosts that will be staged again
        # do not count: they get another chance)
        self._accepted = (
            sum(1 for s in steps.values() if s.step in FAILED_STEPS and s.step is not Step.STAGE_FAILED)
            if r.state is RolloutState.PAUSED
            else 0
        )
        stop_after_staging = self.options.stage_only and r.state in (
            RolloutState.PLANNED,
            RolloutState.STAGING,
        )
        takeover = self._takeover = r.state is not RolloutState.PLANNED
        first = (
            RolloutState.STAGING if any(s.step in TO_STAGE for s in steps.values()) else RolloutState.RUNNING
        )
        if not await self.journal.set_state(r.id, first, "", expect=[r.state]):
            now = await self.journal.get(r.id)
            raise ControllerError(f"rollout {r.id} changed to {now.state} meanwhile: nothing done")
        self._state, self._reason = first, ""
        self._emit_state()
        try:
            refused = await self._lease_all(takeover)
            if refused and r.state is RolloutState.PLANNED and " is held by " not in refused:
                # only expired leases (a crashed rollout's) stand in the way: resumable, and the resume
                # takes them over, as the agent's refusal says
                raise Stopped(RolloutState.PAUSED, f"{refused}; take them over with `rollout resume {r.id}`")
            if refused:
                raise Stopped(
                    RolloutState.FAILED if r.state is RolloutState.PLANNED else r.state,
                    refused,
                )
            async with self._renewing():
                state, reason = await self._drive(stop_after_staging)
        except Stopped as stop:
            state, reason = stop.state, stop.reason
        if state is not RolloutState.PAUSED:
            await self._unlease_all()
        await self._finish(state, reason)
        code = EXIT_OK if self._stopped_as_asked and state is RolloutState.PAUSED else EXIT_CODES[state]
        return Result(r.id, state, code, reason, await self.journal.last_steps(r.id))

    async def _drive(self, stop_after_staging: bool) -> tuple[RolloutState, str]:
        steps = await self.journal.last_steps(self.rollout.id)
        if any(s.step in (Step.ROLLING_BACK, Step.ROLLED_BACK) for s in steps.values()):
            return await self._roll_back("continuing the interrupted rollback")
        to_stage = [h for h in self.plan.hosts() if steps[h].step in TO_STAGE]
        if to_stage:
            await self._stage(to_stage)
            over = await self._over_max_fail()
            if over:
                return await self._on_failure(over, last_wave=False)
        if stop_after_staging:
            self._stopped_as_asked = True
            return (
                RolloutState.PAUSED,
                f"staged (--stage-only): switch with `rollout resume {self.rollout.id}`",
            )
        await self._interrupted()
        if self._state is not RolloutState.RUNNING:
            await self._set_state(RolloutState.RUNNING, expect=[self._state])
        acted = False
        for wave in self.plan.waves:
            steps = await self.journal.last_steps(self.rollout.id)
            pending = [h for h in wave.hosts if steps[h].step in TO_SWITCH]
            if not pending:
                continue
            # checked before each wave (not only after one), so a resume after a crash between a wave's
            # last write and this check still stops here
            over = await self._over_max_fail()
            if over:
                return await self._on_failure(over, last_wave=False)
            await self._interrupted()
            if acted and self.options.delay > 0:
                self._message(f"waiting {self.options.delay:g}s before wave {wave.number}")
                await self._sleep(self.options.delay)
                await self._interrupted()
            acted = True
            await _together(*(self._switch_host(h, steps[h]) for h in pending))
        over = await self._over_max_fail()
        if over:
            return await self._on_failure(over, last_wave=True)
        steps = await self.journal.last_steps(self.rollout.id)
        done = sum(1 for s in steps.values() if s.step is Step.COMMITTED)
        failed = [h for h, s in steps.items() if s.step in FAILED_STEPS]
        reason = f"{done} of {len(steps)} hosts committed"
        if failed:
            reason += f", {len(failed)} failed ({', '.join(failed)}; max-fail {self.plan.max_fail})"
        return RolloutState.DONE, reason

    # -- failure policy ---------------------------------------------------------------------------------

    async def _over_max_fail(self) -> str:
        """'' while failures are tolerated, else why not."""
        steps = await self.journal.last_steps(self.rollout.id)
        failed = [(h, s) for h, s in steps.items() if s.step in FAILED_STEPS]
        if len(failed) <= self.plan.max_fail + self._accepted:
            return ""
        named = ", ".join(f"{h} {s.step}" for h, s in failed[:8])  # each host's why is in its step
        more = f" (+{len(failed) - 8} more)" if len(failed) > 8 else ""
        return f"{len(failed)} failed, max-fail {self.plan.max_fail}: {named}{more}"

    async def _on_failure(self, why: str, *, last_wave: bool) -> tuple[RolloutState, str]:
        if self.options.on_failure == "rollback":
            return await self._roll_back(why)
        if last_wave:
            return RolloutState.FAILED, why
        return RolloutState.PAUSED, f"{why}; paused (resume with `rollout resume {self.rollout.id}`)"

    async def _interrupted(self) -> None:
        """Stop here when `rollout pause` or `rollout abort` changed the journal's state."""
        now = await self.journal.get(self.rollout.id)
        if now.state in (RolloutState.PAUSED, RolloutState.ABORTED):
            raise Stopped(now.state, now.reason or f"{now.state} by request")

    # -- leases -----------------------------------------------------------------------------------------

    async def _lease_one(self, host: str, takeover: bool) -> str:
        """'' when held (or the host is unreachable: it fails at staging), else the refusal."""
        try:
            lease = await self.fleet.releases(host).lease(
                self.rollout.release,
                owner=self.owner,
                rollout_id=self.rollout.id,
                ttl=self.lease_ttl,
                takeover=takeover,
            )
        except AgentCallError as exc:
            if exc.code == "FAILED_PRECONDITION":
                return f"{host}: {exc.message}"
            return ""
        except ControllerError:
            return ""
        self._tokens[host] = lease.token
        return ""

    async def _lease_all(self, takeover: bool) -> str:
        refusals = await _together(*(self._lease_one(h, takeover) for h in self.plan.hosts()))
        refused = [r for r in refusals if r]
        if not refused:
            return ""
        await self._unlease_all()
        return "lease refused: " + "; ".join(refused)

    async def _unlease_all(self) -> None:
        async def one(host: str, token: str) -> None:
            with contextlib.suppress(ControllerError):
                await self.fleet.releases(host).unlease(self.rollout.release, token)

        tokens, self._tokens = self._tokens, {}
        await _together(*(one(h, t) for h, t in tokens.items()))

    @contextlib.asynccontextmanager
    async def _renewing(self) -> AsyncIterator[None]:
        """Renew every lease (and the journal's heartbeat) every third of the TTL while the body runs."""

        async def loop() -> None:
            while True:
                await self._sleep(self.lease_ttl / 3)
                alive = await self.journal.set_state(
                    self.rollout.id, self._state, self._reason, expect=[self._state]
                )
                if not alive:
                    # paused or aborted meanwhile (`abort` gives the leases back: keep off them), or only
                    # our own state moved on between the two writes: then renew as usual
                    now = await self.journal.get(self.rollout.id)
                    if now.state in (RolloutState.PAUSED, RolloutState.ABORTED):
                        return
                await _together(*(self._lease_one(h, True) for h in self.plan.hosts()))
                self.lease_renewals += 1

        task = asyncio.create_task(loop())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- stage ------------------------------------------------------------------------------------------

    async def _stage(self, hosts: Sequence[str]) -> None:
        await self._record([StepUpdate(h, Step.STAGING) for h in hosts])
        await _together(*(self._stage_host(h) for h in hosts))

    async def _stage_host(self, host: str) -> None:
        api = self.fleet.releases(host)
        revision = 0
        try:
            await self._wait_window(host, "download", 0.0, Step.STAGING)
            if host not in self._tokens:  # unreachable when the rollout leased: lease it now
                refused = await self._lease_one(host, self._takeover)
                if refused:
                    raise ControllerError(refused)
            spec = self.specs.get(host, self.spec)
            materials = await self._materials(spec)
            async with asyncio.timeout(STAGE_TIMEOUT):
                async for p in api.stage(
                    spec,
                    lease_token=self._tokens.get(host, ""),
                    rollout_id=self.rollout.id,
                    **({"materials": materials} if materials else {}),
                ):
                    if p.done:
                        revision = p.revision
                    elif p.message:
                        self._host_event(host, Step.STAGING, detail=p.message)
            if not revision:
                raise ControllerError("the agent ended staging without naming the revision")
        except (ControllerError, TimeoutError) as exc:
            await self._record([StepUpdate(host, Step.STAGE_FAILED, detail=_why(exc))])
            return
        await self._record([StepUpdate(host, Step.STAGED, revision=revision)])

    # -- switch one host ------------------------------------------------------------------------------

    async def _switch_host(self, host: str, last: HostStep) -> None:
        api = self.fleet.releases(host)
        release, revision, token = self.rollout.release, last.revision, self._tokens.get(host, "")
        step = last.step
        try:
            if step is Step.ACTIVATING:  # a crash after writing "activating": did the switch happen?
                state = (await api.get(release)).state
                ours = state.active_revision == revision or (
                    state.candidate_revision == revision and state.rollout_id == self.rollout.id
                )
                if not ours:
                    await self._activate(api, host, revision, token)
            elif step is Step.STAGED:
                await self._wait_window(host, "apply", self.options.switch_needs(), Step.STAGED)
                await self._record([StepUpdate(host, Step.ACTIVATING)])
                await self._activate(api, host, revision, token)
            if step in (Step.STAGED, Step.ACTIVATING):
                await self._record([StepUpdate(host, Step.VERIFYING)])
            if step in (Step.STAGED, Step.ACTIVATING, Step.VERIFYING):
                verdict, why = await self._watch(api, host, revision)
                if verdict is not Step.VERIFIED:
                    await self._record([StepUpdate(host, verdict, detail=why)])
                    return
                await self._record([StepUpdate(host, Step.VERIFIED)])
            state = await api.commit(release, revision, lease_token=token, timeout=CALL_TIMEOUT)
        except ControllerError as exc:
            await self._record([StepUpdate(host, Step.FAILED, detail=exc.message)])
            return
        await self._record([StepUpdate(host, Step.COMMITTED)], phase=state.phase, digests=state.image_digests)

    async def _activate(self, api: Releases, host: str, revision: int, token: str) -> None:
        """Activate; while the host's update lock is held, wait (inside the apply window) and try again
        until --lock-timeout, then fail or (--force) switch anyway."""
        timeout = (
            self.options.watch_timeout(self.watch_grace) + CALL_TIMEOUT
        )  # the switch waits for dependencies to start
        limit = self.options.lock_timeout
        if limit is None and self.options.force:
            limit = 0.0
        locked_since: float | None = None
        force = False
        while True:
            try:
                activated = await api.activate(
                    self.rollout.release,
                    revision,
                    policy=self.options.policy(),
                    lease_token=token,
                    rollout_id=self.rollout.id,
                    timeout=timeout,
                    **({"force": True} if force else {}),
                )
                break
            except AgentCallError as exc:
                if exc.code != "FAILED_PRECONDITION" or " is locked by " not in exc.message:
                    raise
                now = self._clock()
                if locked_since is None:
                    locked_since = now
                    await self._record([StepUpdate(host, Step.ACTIVATING, detail=f"waiting: {exc.message}")])
                if limit is not None and now - locked_since >= limit:
                    if not self.options.force:
                        raise ControllerError(
                            f"{exc.message} (for longer than --lock-timeout {limit:g}s)"
                        ) from None
                    self._message(f"{host}: switching despite the update lock (--force): {exc.message}")
                    force = True
                    continue
                await self._set_waiting(host, f"{host} locked ({exc.message})")
                await self._wait(LOCK_RETRY)
                await self._interrupted()
                await self._wait_window(host, "apply", self.options.switch_needs(), Step.ACTIVATING)
        await self._set_waiting(host, "")
        self._host_event(host, Step.ACTIVATING, state=activated.state)

    async def _materials(self, spec: pb.RevisionSpec) -> list[Material]:
        """The values of the secrets (name, version) the host's spec names; never journaled."""
        wanted = {(f.name, f.version) for c in spec.containers for f in c.secrets}
        if not wanted:
            return []
        if self.secrets is None:
            raise ControllerError("the release uses secrets, but no secret store is available")
        return await self.secrets.materials(wanted)

    # -- windows ---------------------------------------------------------------------------------------

    async def _wait_window(self, host: str, kind: str, need: float, step: Step) -> None:
        """Return when the host may act: inside its `kind` window with `need` seconds left. Meanwhile the
        rollout's reason and the host's step say until when; pause/abort are noticed every WAIT_STEP."""
        window = self.options.window(kind, self.host_values.get(host, {}))
        if window is None:
            return
        told = 0.0
        while True:
            now = self._clock()
            fit = window.next_fit(now, need)
            if fit is None:
                raise ControllerError(f"the {kind} window {window.text!r} is never open for {need:g}s")
            start = fit[0]
            if start <= now:
                if told:
                    await self._set_waiting(host, "")
                return
            if told != start:
                told = start
                until = window.describe(start)
                why = f"waiting for the {kind} window {window.text!r}: opens {until}"
                if kind == "apply" and window.open_at(now) is not None:
                    why = (
                        f"waiting for the apply window {window.text!r}: not {need:g}s left before it closes;"
                        f" next at {until}"
                    )
                await self._record([StepUpdate(host, step, detail=why)])
                await self._set_waiting(host, why)
            await self._wait(min(self.wait_step, start - now))
            await self._interrupted()

    async def _set_waiting(self, host: str, why: str) -> None:
        """Keep the rollout's reason on what its hosts wait for (`rollout status` shows it)."""
        if why:
            self._waiting[host] = why
        elif self._waiting.pop(host, None) is None:
            return
        reason = ""
        if self._waiting:
            first = next(iter(self._waiting.values()))
            more = f" (+{len(self._waiting) - 1} more hosts waiting)" if len(self._waiting) > 1 else ""
            reason = first + more
        self._reason = reason
        await self.journal.set_state(self.rollout.id, self._state, reason, expect=[self._state])
        self._emit_state()

    async def _watch(self, api: Releases, host: str, revision: int) -> tuple[Step, str]:
        """(VERIFIED | REVERTED | FAILED, why): the agent's verdict on `revision`, or FAILED after the
        verify deadline plus a grace. A broken stream (connection cut) is watched again until then."""
        limit = self.options.watch_timeout(self.watch_grace)
        loop = asyncio.get_running_loop()
        until = loop.time() + limit
        last_phase, last_error = "", ""
        while True:
            try:
                async with asyncio.timeout_at(until):
                    async for state in api.watch(self.rollout.release):
                        last_phase = state.phase
                        self._host_event(host, Step.VERIFYING, state=state)
                        verdict = self._verdict(state, revision)
                        if verdict is not None:
                            return verdict
                    last_error = "the agent ended the watch"
                    await self._sleep(RETRY_DELAY)
            except TimeoutError:
                seen = f" (last phase: {last_phase})" if last_phase else ""
                seen += f" ({last_error})" if last_error and not last_phase else ""
                return Step.FAILED, f"not verified within {limit:g}s{seen}"
            except ControllerError as exc:
                last_error = exc.message
                if loop.time() >= until:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(until):
                        await self._sleep(RETRY_DELAY)

    def _verdict(self, state: ReleaseState, revision: int) -> tuple[Step, str] | None:
        if state.active_revision == revision and state.phase in VERIFIED_PHASES:
            return Step.VERIFIED, ""
        if state.candidate_revision == revision and state.phase == "reverted":
            back = f"reverted to revision {state.active_revision}" if state.active_revision else "reverted"
            return Step.REVERTED, f"{back}: {state.reason}" if state.reason else back
        if state.candidate_revision == revision and state.phase == "failed":
            return Step.FAILED, state.reason or "failed on the agent"
        if state.phase == "rolled_back" and state.active_revision != revision:
            return Step.FAILED, f"rolled back on the agent: {state.reason}" if state.reason else "rolled back"
        return None

    # -- rollback ---------------------------------------------------------------------------------------

    async def _roll_back(self, why: str) -> tuple[RolloutState, str]:
        """Every host that runs this rollout's revision back to its previous one, waves in reverse order."""
        self._message(f"rolling back: {why}")
        back: list[str] = []
        failed: list[str] = []
        before = await self.journal.last_steps(self.rollout.id)
        switched = any(s.step in MAYBE_SWITCHED | {Step.REVERTED, Step.ROLLED_BACK} for s in before.values())
        for wave in reversed(self.plan.waves):
            steps = await self.journal.last_steps(self.rollout.id)
            hosts = [h for h in wave.hosts if steps[h].step in MAYBE_SWITCHED | {Step.ROLLED_BACK}]
            results = await _together(*(self._roll_back_host(h, steps[h], why) for h in hosts))
            for host, result in zip(hosts, results, strict=True):
                if result == "back":
                    back.append(host)
                elif result:
                    failed.append(f"{host}: {result}")
        if not switched:
            return RolloutState.FAILED, f"{why}; no host had switched"
        reason = f"{why}; rolled back {len(back)} host(s)"
        if failed:
            reason += "; rollback failed on " + "; ".join(failed)
        return RolloutState.ROLLED_BACK, reason

    async def _roll_back_host(self, host: str, last: HostStep, why: str) -> str:
        """'back' when rolled back (now or before a crash), '' when it did not run the revision, else
        the error."""
        if last.step is Step.ROLLED_BACK:
            return "back"
        api = self.fleet.releases(host)
        try:
            state = (await api.get(self.rollout.release)).state
            if state.active_revision != last.revision:
                if last.step is Step.ROLLING_BACK:
                    await self._record(
                        [StepUpdate(host, Step.ROLLED_BACK, detail=f"on revision {state.active_revision}")]
                    )
                    return "back"
                return ""
            await self._record([StepUpdate(host, Step.ROLLING_BACK)])
            state = await api.rollback(
                self.rollout.release,
                "previous",
                lease_token=self._tokens.get(host, ""),
                reason=f"rollout {self.rollout.id} rolled back: {why}",
                timeout=self.options.watch_timeout(self.watch_grace) + CALL_TIMEOUT,
            )
        except ControllerError as exc:
            await self._record([StepUpdate(host, Step.FAILED, detail=f"rollback failed: {exc.message}")])
            return exc.message
        await self._record(
            [StepUpdate(host, Step.ROLLED_BACK, detail=f"on revision {state.active_revision}")],
            phase=state.phase,
            digests=state.image_digests,
        )
        return "back"

    # -- journal and events -----------------------------------------------------------------------------

    async def _set_state(
        self, state: RolloutState, reason: str = "", *, expect: Collection[RolloutState]
    ) -> None:
        if not await self.journal.set_state(self.rollout.id, state, reason, expect=expect):
            now = await self.journal.get(self.rollout.id)
            raise Stopped(now.state, now.reason or f"{now.state} by request")
        self._state, self._reason = state, reason
        self._emit_state()

    async def _finish(self, state: RolloutState, reason: str) -> None:
        """The final (or paused) state; a pause or abort asked for meanwhile is kept as asked."""
        stopping = state in (RolloutState.PAUSED, RolloutState.ABORTED)
        expect = [*ACTIVE_STATES, state] if stopping else [self._state]
        if not await self.journal.set_state(self.rollout.id, state, reason, expect=expect):
            now = await self.journal.get(self.rollout.id)
            state, reason = now.state, now.reason
        self._state, self._reason = state, reason
        self._emit_state()

    async def _record(
        self, updates: Sequence[StepUpdate], *, phase: str = "", digests: Mapping[str, str] | None = None
    ) -> None:
        written = await self.journal.record(self.rollout.id, updates)
        for s in written:
            self.on_event(
                Event(
                    "host",
                    self.rollout.id,
                    self._clock(),
                    host=s.host,
                    wave=s.wave,
                    step=str(s.step),
                    phase=phase,
                    revision=s.revision,
                    digest=_digests(digests or {}),
                    detail=s.detail,
                )
            )

    def _host_event(
        self, host: str, step: Step, *, state: ReleaseState | None = None, detail: str = ""
    ) -> None:
        self.on_event(
            Event(
                "host",
                self.rollout.id,
                self._clock(),
                host=host,
                wave=self.plan.wave_of(host),
                step=str(step),
                phase=state.phase if state else "",
                revision=state.active_revision if state else 0,
                digest=_digests(state.image_digests) if state else "",
                detail=detail or (state.reason if state else ""),
            )
        )

    def _emit_state(self) -> None:
        self.on_event(
            Event("rollout", self.rollout.id, self._clock(), state=str(self._state), detail=self._reason)
        )

    def _message(self, text: str) -> None:
        self.on_event(Event("message", self.rollout.id, self._clock(), detail=text))


async def _together(*work: Coroutine[Any, Any, T]) -> list[T]:
    """Run the coroutines at once; if one raises (a bug, or the journal failing), the rest are cancelled
    rather than left acting on hosts behind the error."""
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(w) for w in work]
    except BaseExceptionGroup as group:  # a pause/abort noticed by one host's wait stops them all
        stops = [e for e in group.exceptions if isinstance(e, Stopped)]
        if stops and len(stops) == len(group.exceptions):
            raise stops[0] from None
        raise
    return [task.result() for task in tasks]


def _digests(digests: Mapping[str, str]) -> str:
    return ", ".join(f"{c}={d}" for c, d in sorted(digests.items()))


def _why(exc: BaseException) -> str:
    if isinstance(exc, ControllerError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return f"staging took longer than {STAGE_TIMEOUT:g}s"
    return str(exc)


# ---- commands that act without an engine --------------------------------------------------------------


async def release_leases(rollout: Rollout, fleet: Fleet, owner: str, hosts: Iterable[str]) -> None:
    """Give back a stopped rollout's leases (`rollout abort`): the same rollout id finds its token."""

    async def one(host: str) -> None:
        api = fleet.releases(host)
        with contextlib.suppress(ControllerError):
            lease = await api.lease(
                rollout.release, owner=owner, rollout_id=rollout.id, ttl=1.0, takeover=True
            )
            await api.unlease(rollout.release, lease.token)

    await _together(*(one(h) for h in hosts))
