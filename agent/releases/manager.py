"""ReleaseManager: releases as state the agent keeps, and the work the agent does alone for them.

    spec.py    a revision's containers (pure): validation, names, labels, start order, host ports
    phases.py  the phase state machine and pointer moves (pure)
    store.py   the releases tables (state, revisions, leases) in the agent's database
    leases.py  who may drive a release now (pure)
    stage.py   images present (pull by digest, space checked before downloading)
    switch.py  one switch for Activate, revert and Rollback (through ContainerManager's public verbs)
    verify.py  the verdict (pure) and the event-driven wait for it

Per release one lock serialises the verbs, and at most one background task runs: the verification of
the active revision, then the wait for a Commit. Both restart at agent start from the stored state (the
deadline counts from the stored activation time), so neither an agent restart nor a vanished controller
leaves a host on an unverified release: when verification fails, the agent switches back to the last
known good revision by itself and records why.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any

import agent.log
from agent.containers.manager import ContainerManager
from agent.errors import AgentError, FailedPrecondition, NotFound
from agent.images.manager import ImageManager
from agent.releases import leases, switch, verify
from agent.releases import secrets as secrets_mod
from agent.releases import spec as specs
from agent.releases import stage as staging
from agent.releases.phases import Phase, after_activate, after_switch_back, is_verified, revert_target
from agent.releases.spec import ReleaseSpec
from agent.releases.stage import StageProgress
from agent.releases.store import Lease, Policy, ReleaseState, ReleaseStore, Revision, now
from agent.runtime.options import MountSpec
from agent.state.events import EventLog

log = agent.log.get(__name__)


class Target(StrEnum):
    PREVIOUS = "previous"
    LAST_KNOWN_GOOD = "last known good"


@dataclass(frozen=True)
class Caller:
    """Who calls (certificate CN, "local" over the unix socket) with which lease token and rollout."""

    identity: str = "local"
    token: str = ""
    rollout_id: str = ""


class ReleaseManager:
    def __init__(
        self,
        store: ReleaseStore,
        containers: ContainerManager,
        images: ImageManager,
        events: EventLog,
        *,
        vault: secrets_mod.Vault | None = None,
        secret_files: secrets_mod.SecretFiles | None = None,
        locks: secrets_mod.Locks | None = None,
    ) -> None:
        self.vault = vault
        self.secret_files = secret_files
        self.locks = locks
        self.store = store
        self.containers = containers
        self.images = images
        self.events = events
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tick = asyncio.Event()  # replaced on every state change; Watch waits on it

    # ---- agent lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Go on with what a stopped or killed agent left: a switch half done, a verification, a wait."""
        for state in self.store.all():
            if state.phase is Phase.ACTIVATING:
                self._spawn(state.name, self._resume_switch(state.name))
            elif state.phase is Phase.VERIFYING:
                self._spawn(state.name, self._verify(state.name))
            elif state.phase is Phase.HEALTHY:
                self._spawn(state.name, self._await_commit(state.name))

    async def prepare(self) -> None:
        """Before containers start (agent start): write the secret files of every release's active
        revision again, so a container restarted by its policy after a reboot finds them on the tmpfs."""
        for state in self.store.all():
            if not state.pointers.active:
                continue
            try:
                revision = self.store.revision(state.name, state.pointers.active)
                for c in revision.containers:
                    if c.secrets:
                        name = specs.container_name(revision.release, c.name, revision.number)
                        await asyncio.to_thread(self._prepare_container, revision, c, name)
            except AgentError as exc:
                log.warning("release.secrets_not_restored", release=state.name, error=exc.message)

    def _prepare_container(
        self, revision: Revision, c: specs.ContainerSpec, name: str
    ) -> tuple[MountSpec, ...]:
        """switch.Prepare: the container's secret files (written again) and the agent's mounts for it."""
        mounts: list[MountSpec] = []
        if c.secrets:
            if self.vault is None or self.secret_files is None:
                raise FailedPrecondition("this agent keeps no secrets (no secret store configured)")
            values = [(ref, self.vault.get(ref.name, ref.version)) for ref in c.secrets]
            mounts.extend(self.secret_files.write(name, values))
        if c.update_lock and self.locks is not None:
            mounts.append(self.locks.mount(revision.release))
        return tuple(mounts)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks.clear()

    # ---- queries ---------------------------------------------------------------------------------

    def all(self) -> list[ReleaseState]:
        return self.store.all()

    def get(self, name: str) -> tuple[ReleaseState, list[Revision]]:
        return self.store.get(name), self.store.revisions(name)

    def image_digests(self, state: ReleaseState) -> dict[str, str]:
        if not state.pointers.active:
            return {}
        try:
            return self.store.revision(state.name, state.pointers.active).image_digests
        except NotFound:
            return {}

    def live_lease(self, name: str) -> Lease | None:
        lease = self.store.lease(name)
        return lease if lease is not None and lease.expires_at > now() else None

    async def watch(self, name: str) -> AsyncIterator[ReleaseState]:
        """The state now, then each change, until the caller stops."""
        last: ReleaseState | None = None
        while True:
            tick = self._tick
            state = self.store.get(name)
            if state != last:
                yield state
                last = state
            await tick.wait()

    # ---- leases ----------------------------------------------------------------------------------

    def lease(self, name: str, owner: str, rollout_id: str, ttl: float, takeover: bool) -> Lease:
        specs.check_name(name, "release name")
        granted = leases.grant(
            self.store.lease(name),
            release=name,
            owner=owner,
            rollout_id=rollout_id,
            ttl=ttl,
            takeover=takeover,
            now=now(),
        )
        self.store.put_lease(granted)
        log.info("release.leased", release=name, owner=owner, rollout_id=rollout_id, until=granted.expires_at)
        self._changed()
        return granted

    def unlease(self, name: str, token: str) -> None:
        if token and self.store.delete_lease(name, token):
            log.info("release.unleased", release=name)
            self._changed()

    def _check_lease(self, name: str, caller: Caller) -> None:
        leases.check_token(self.store.lease(name), caller.token, release=name, now=now())

    # ---- stage -----------------------------------------------------------------------------------

    async def stage(
        self, spec: ReleaseSpec, caller: Caller, materials: list[tuple[str, str, bytes]] | None = None
    ) -> AsyncIterator[StageProgress]:
        """Record the revision (same spec_digest → same number) and make its images present; keep the
        values of the secrets it names (encrypted) — every one must be here after this call."""
        self._check_lease(spec.release, caller)
        self._keep_secrets(spec, materials or [])
        number, created = self.store.record_revision(
            spec, created_by=caller.identity, rollout_id=caller.rollout_id
        )
        self.store.create_staged(spec.release)
        self._changed()
        yield StageProgress(
            f"revision {number} of {spec.release}{'' if created else ' (known)'}", revision=number
        )
        staged = staging.Staged({})
        async for progress in staging.pull_images(self.images, spec, staged):
            yield progress
        self.store.set_image_digests(spec.release, number, staged.digests)
        self._event("staged", spec.release, number, caller.rollout_id)
        log.info("release.staged", release=spec.release, revision=number, images=staged.digests)
        yield StageProgress(f"staged revision {number} of {spec.release}", revision=number, done=True)

    def _keep_secrets(self, spec: ReleaseSpec, materials: list[tuple[str, str, bytes]]) -> None:
        named = {(r.name, r.version) for c in spec.containers for r in c.secrets}
        if not named:
            return
        if self.vault is None:
            raise FailedPrecondition("this agent keeps no secrets (no secret store configured)")
        for name, version, value in materials:
            if (name, version) in named:  # only what this host's release names is kept
                self.vault.put(name, version, value)
        missing = sorted(f"{n} version {v}" for n, v in named if not self.vault.has(n, v))
        if missing:
            raise FailedPrecondition(
                f"release {spec.release}: no value for secret {', '.join(missing)} (the controller sends"
                " the values with Stage)"
            )
        log.info("release.secrets_kept", release=spec.release, secrets=sorted(f"{n}@{v}" for n, v in named))

    # ---- activate / commit / rollback -------------------------------------------------------------

    async def activate(
        self, name: str, number: int, policy: Policy, caller: Caller, *, force: bool = False
    ) -> tuple[ReleaseState, bool]:
        """Switch to revision `number` and start verifying it; (state, whether this call switched).
        A held update lock refuses the switch unless `force`."""
        self._check_lease(name, caller)
        async with self._lock(name):
            state = self.store.get(name)
            revision = self.store.revision(name, number)
            p = state.pointers
            if p.active == number:
                return state, False
            if self.locks is not None:
                if not force:
                    self.locks.check(name)
                elif holder := self.locks.holder(name):
                    log.warning("release.lock_forced", release=name, revision=number, holder=holder)
            if (
                p.candidate == number
                and state.phase in (Phase.REVERTED, Phase.FAILED)
                and (caller.rollout_id and caller.rollout_id == state.rollout_id)
            ):
                return state, False  # this rollout already saw it fail: a repeated call switches nothing
            self._check_staged(revision)
            if policy.start_first and p.active:
                shared = specs.shared_host_ports(
                    self.store.revision(name, p.active).containers, revision.containers
                )
                if shared:
                    raise FailedPrecondition(
                        f"start-first cannot switch release {name}: revisions {p.active} and {number} both"
                        f" publish host port {', '.join(shared)}; use stop-first"
                    )
            await self._cancel_task(name)
            self.store.transition(
                name,
                Phase.ACTIVATING,
                pointers=after_activate(p, number),
                landing=Phase.VERIFYING,
                policy=policy,
                rollout_id=caller.rollout_id,
                reason="",
                verify_started_at=None,
                healthy_at=None,
            )
            self._changed()
            await self._switch_and_land(name)
            return self.store.get(name), True

    async def commit(self, name: str, number: int, caller: Caller) -> ReleaseState:
        """Confirm a verified revision: it becomes last known good; other revisions' containers go."""
        self._check_lease(name, caller)
        async with self._lock(name):
            state = self.store.get(name)
            if state.pointers.active != number:
                raise FailedPrecondition(
                    f"revision {number} of release {name} is not active"
                    f" (active: {state.pointers.active or 'none'})"
                )
            if state.phase is Phase.COMMITTED:
                return state
            if not is_verified(state.phase):
                raise FailedPrecondition(
                    f"revision {number} of release {name} is {state.phase}, not verified healthy"
                )
            await self._cancel_task(name)
            new = self.store.transition(
                name, Phase.COMMITTED, pointers=replace(state.pointers, last_known_good=number), reason=""
            )
            self._changed()
            self._event("committed", name, number, state.rollout_id)
            removed = await switch.remove_except(self.containers, name, {number})
            if self.secret_files is not None:
                for container in removed:
                    self.secret_files.remove(container)
            log.info("release.committed", release=name, revision=number, removed=removed)
            return new

    async def rollback(self, name: str, target: Target, reason: str, caller: Caller) -> ReleaseState:
        """Reactivate the previous or the last-known-good revision now."""
        self._check_lease(name, caller)
        async with self._lock(name):
            state = self.store.get(name)
            p = state.pointers
            number = p.previous if target is Target.PREVIOUS else p.last_known_good
            if not number:
                raise FailedPrecondition(f"release {name} has no {target} revision to roll back to")
            if number == p.active and state.phase is not Phase.ACTIVATING:
                return state  # already there: a repeated call switches nothing
            await self._cancel_task(name)
            self.store.transition(
                name,
                Phase.ACTIVATING,
                pointers=after_switch_back(p, number),
                landing=Phase.ROLLED_BACK,
                reason=reason or f"rolled back to the {target} revision {number}",
                rollout_id=caller.rollout_id or state.rollout_id,
            )
            self._changed()
            await self._switch_and_land(name)
            return self.store.get(name)

    # ---- the switch and what the agent does alone ------------------------------------------------

    async def _switch_and_land(self, name: str) -> None:
        """With the lock held and the state ACTIVATING: switch to the active revision, then land."""
        state = self.store.get(name)
        landing = state.landing or Phase.VERIFYING
        number = state.pointers.active
        try:
            revision = self.store.revision(name, number)
            self._check_staged(revision)
            await switch.switch(
                self.containers,
                self.events,
                revision,
                start_first=state.policy.start_first and landing is Phase.VERIFYING,
                ready_timeout=state.policy.deadline_s,
                prepare=self._prepare_container,
            )
        except AgentError as exc:
            log.warning("release.switch_failed", release=name, revision=number, error=str(exc))
            if landing is Phase.VERIFYING:
                await self._failed(name, f"switching to revision {number} failed: {exc}")
            else:
                self.store.transition(
                    name,
                    Phase.FAILED,
                    landing=None,
                    reason=f"{state.reason}; switching to revision {number} failed: {exc}",
                )
                self._changed()
                self._event("failed", name, number, state.rollout_id, self.store.get(name).reason)
            return
        changes: dict[str, Any] = {"landing": None}
        if landing is Phase.VERIFYING:
            changes.update(verify_started_at=now(), healthy_at=None)
        new = self.store.transition(name, landing, **changes)
        self._changed()
        action = {Phase.VERIFYING: "activated", Phase.REVERTED: "reverted", Phase.ROLLED_BACK: "rolled_back"}
        self._event(action.get(landing, str(landing)), name, number, new.rollout_id, new.reason)
        log.info("release.switched", release=name, revision=number, phase=str(landing), reason=new.reason)
        if landing is Phase.VERIFYING:
            self._spawn(name, self._verify(name))

    async def _failed(self, name: str, reason: str) -> None:
        """The candidate failed (lock held): go back to last known good, or stop it when there is none."""
        state = self.store.get(name)
        candidate = state.pointers.candidate
        self._event("unhealthy", name, candidate, state.rollout_id, reason)
        log.warning("release.unhealthy", release=name, revision=candidate, reason=reason)
        target = revert_target(state.pointers)
        if target:
            self.store.transition(
                name, Phase.ACTIVATING, pointers=after_switch_back(state.pointers, target),
                landing=Phase.REVERTED, reason=reason,
            )  # fmt: skip
            self._changed()
            await self._switch_and_land(name)
            return
        try:
            await switch.stop_revision(self.containers, name, candidate)
        except AgentError as exc:
            log.warning("release.stop_failed", release=name, revision=candidate, error=str(exc))
        full = f"{reason}; no last known good revision to go back to"
        self.store.transition(name, Phase.FAILED, landing=None, reason=full)
        self._changed()
        self._event("failed", name, candidate, state.rollout_id, full)

    async def _resume_switch(self, name: str) -> None:
        async with self._lock(name):
            if self.store.get(name).phase is Phase.ACTIVATING:
                await self._switch_and_land(name)

    async def _verify(self, name: str) -> None:
        """The background verification of the active revision, then the wait for a Commit."""
        state = self.store.get(name)
        revision = self.store.revision(name, state.pointers.active)
        started = (state.verify_started_at or now()).timestamp()
        verdict = await verify.watch(
            self.events, name, lambda: switch.observe(self.containers, revision), started, state.policy
        )
        async with self._lock(name):
            current = self.store.get(name)
            if current.phase is not Phase.VERIFYING or current.pointers.active != revision.number:
                return
            if verdict.kind is not verify.Kind.HEALTHY:
                await self._failed(name, verdict.reason)
                return
            self.store.transition(name, Phase.HEALTHY, healthy_at=now(), reason="")
            self._changed()
            self._event("healthy", name, revision.number, current.rollout_id)
            log.info("release.healthy", release=name, revision=revision.number)
        await self._await_commit(name)

    async def _await_commit(self, name: str) -> None:
        """HEALTHY until a Commit; none within the deadline: UNCONFIRMED (kept, not last known good)."""
        state = self.store.get(name)
        due = (state.healthy_at or now()) + timedelta(seconds=state.policy.deadline_s)
        await asyncio.sleep(max(0.0, (due - now()).total_seconds()))
        async with self._lock(name):
            current = self.store.get(name)
            if current.phase is not Phase.HEALTHY or current.pointers.active != state.pointers.active:
                return
            reason = f"verified, but no Commit within {state.policy.deadline_s:g}s"
            self.store.transition(name, Phase.UNCONFIRMED, reason=reason)
            self._changed()
            self._event("unconfirmed", name, current.pointers.active, current.rollout_id, reason)

    # ---- helpers ---------------------------------------------------------------------------------

    def _check_staged(self, revision: Revision) -> None:
        for c in revision.containers:
            try:
                self.images.get(c.options.image)
            except NotFound:
                raise FailedPrecondition(
                    f"revision {revision.number} of release {revision.release} is not staged:"
                    f" image {c.options.image} is not present (Stage it first)"
                ) from None

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(f"releases.{name}")
        self._tasks[name] = task
        task.add_done_callback(lambda t: self._task_done(name, t))

    def _task_done(self, name: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "release.task_failed", release=name, error=repr(task.exception()), exc_info=task.exception()
            )

    async def _cancel_task(self, name: str) -> None:
        """Stop the release's background task (called with the lock held: the task only waits outside it)."""
        task = self._tasks.get(name)
        if task is None or task is asyncio.current_task():
            return
        del self._tasks[name]
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def _changed(self) -> None:
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    def _event(self, action: str, name: str, revision: int, rollout_id: str, reason: str = "") -> None:
        attrs = {"release": name, "revision": str(revision), "rollout_id": rollout_id, "reason": reason}
        self.events.append("release", action, name, attrs)
