"""The agent's composition root: build managers from config, serve them over gRPC, shut down cleanly.

`Components.build` constructs every manager and passes each what it uses; `register_services` adds one
servicer per service. Servicers only translate; managers own behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import grpc
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from agent import errors, log
from agent.api.v1 import (
    audit_pb2_grpc,
    build_pb2_grpc,
    containers_pb2_grpc,
    events_pb2_grpc,
    images_pb2_grpc,
    networks_pb2_grpc,
    pki_pb2_grpc,
    releases_pb2_grpc,
    system_pb2_grpc,
    transfer_pb2_grpc,
    trust_pb2_grpc,
    volumes_pb2_grpc,
)
from agent.audit import AuditLog
from agent.build.manager import BuildManager
from agent.config import AgentConfig
from agent.containers.manager import ContainerManager, ContainerSettings
from agent.containers.view import ContainerView
from agent.containers.volumes import VolumeManager
from agent.images.manager import ImageManager
from agent.network.attacher import BridgeAttacher, ContainerLookupAdapter
from agent.network.manager import NetworkManager, NetworkSettings
from agent.registry.client import RegistryClient
from agent.releases.manager import ReleaseManager
from agent.releases.secrets import Locks, SecretFiles, Vault
from agent.releases.store import ReleaseStore
from agent.runtime.monitor import Conmon
from agent.runtime.oci import OciRuntime
from agent.server import status
from agent.server.audit import AuditServicer
from agent.server.build import BuildServicer
from agent.server.connlimit import ConnectionLimits, ListenerGuard, raise_fd_limit
from agent.server.containers import ContainersServicer
from agent.server.events import EventsServicer
from agent.server.images import ImagesServicer
from agent.server.interceptors import AgentInterceptor
from agent.server.networks import NetworksServicer
from agent.server.permissions import HostIdentity
from agent.server.pki import PkiServicer
from agent.server.releases import ReleasesServicer
from agent.server.system import Counts, SystemServicer
from agent.server.tls import ReloadableServerCredentials, Revocations, common_name, load_identity
from agent.server.transfer import TransferServicer
from agent.server.trust import TrustServicer
from agent.server.volumes import VolumesServicer
from agent.state.db import Database
from agent.state.events import EventLog
from agent.transfer.manager import TransferManager
from agent.trust.manager import TrustManager

_log = log.get(__name__)

Hook = Callable[[], Awaitable[None]]
DRAIN_SECONDS = 10.0


@dataclass(frozen=True)
class Components:
    """Every manager the servicers need, built once per agent process, with their start/stop hooks."""

    config: AgentConfig
    db: Database
    started_at: datetime
    events: EventLog
    images: ImageManager
    networks: NetworkManager
    volumes: VolumeManager
    containers: ContainerManager
    builds: BuildManager
    transfers: TransferManager
    releases: ReleaseManager
    trust: TrustManager
    audit: AuditLog | None
    on_start: list[Hook]
    on_stop: list[Hook]

    @classmethod
    def build(cls, config: AgentConfig) -> Components:
        """Build the managers in dependency order; each gets what it uses at construction.

        Images, volumes and networks ask about containers (an image or volume in use, a name to connect,
        orphans at start): they read the container records, which exist before the container manager.
        """
        config.data_root.mkdir(parents=True, exist_ok=True)
        db = Database(config.data_root / "dockyard.db")
        records = ContainerView(db)
        events = EventLog(db)
        audit = open_audit(config)
        release_records = ReleaseStore(db)  # images of active/previous/last-known-good releases are kept
        registry = RegistryClient.from_config(config)
        images = ImageManager(
            config.data_root,
            db,
            in_use=lambda: records.image_digests() | release_records.image_digests(),
            held_by=release_records.image_holder,
            registry=registry,
            pull_concurrency=config.max_concurrent_downloads,
        )
        # the image trust policy: a bad file stops the agent here, with the line that is wrong
        policy_file = config.policy_file or config.config_dir / "policy.toml"
        trust = TrustManager(policy_file, config.config_dir, images)
        networks = NetworkManager(
            db,
            NetworkSettings(
                bridge=config.network_bridge,
                subnet=config.network_subnet,
                pool=config.network_pool,
                name_prefix=config.network_name_prefix,
                nft_table=config.network_nft_table,
                etc_dir=config.data_root / "network" / "containers",
            ),
            ContainerLookupAdapter(records),
        )
        volumes = VolumeManager(config.data_root, db, events, users_of=records.volume_users)
        exec_root = config.exec_root or config.data_root / "run"
        runtime = OciRuntime(config.runtime, exec_root / config.runtime)
        containers = ContainerManager(
            ContainerSettings(
                data_root=config.data_root,
                exec_root=exec_root,
                runtime=config.runtime,
                cgroup_parent=config.cgroup_parent,
                log_max_size=config.container_log_max_size,
                log_max_files=config.container_log_max_files,
                stop_timeout=config.stop_timeout,
            ),
            db,
            images,
            events,
            volumes,
            runtime=runtime,
            monitor=Conmon(runtime, exec_root / "s"),
            network=BridgeAttacher(networks),
            gate=trust,
        )
        # RUN steps run on the agent's own runtime, on the default bridge
        builds = BuildManager(
            config.data_root, db, images, runtime=config.runtime, network=BridgeAttacher(networks)
        )
        transfers = TransferManager(images, containers, volumes)
        run_dir = config.socket.parent if config.socket else exec_root
        releases = ReleaseManager(
            release_records,
            containers,
            images,
            events,
            vault=Vault(
                config.data_root / "secrets",
                (config.tls_dir if config.listen else config.config_dir) / "secrets.key",
            ),
            # both next to the agent's socket (/run/dockyard): the secrets' tmpfs stays out of the data root
            secret_files=SecretFiles(run_dir / "secrets"),
            locks=Locks(run_dir / "locks"),
        )
        return cls(
            config=config,
            db=db,
            started_at=datetime.now(UTC),
            events=events,
            images=images,
            networks=networks,
            volumes=volumes,
            containers=containers,
            builds=builds,
            transfers=transfers,
            releases=releases,
            trust=trust,
            audit=audit,
            # started in this order, stopped in reverse
            # releases.prepare writes secret files again before containers restart (a reboot empties them)
            on_start=[
                images.start,
                networks.start,
                releases.prepare,
                containers.start,
                builds.start,
                releases.start,
            ],
            on_stop=[registry.aclose, networks.stop, containers.stop, releases.stop],
        )

    def counts(self) -> Counts:
        total, running = self.containers.counts()
        return Counts(images=self.images.count(), containers=total, containers_running=running)


def register_services(server: grpc.aio.Server, c: Components) -> None:
    system_pb2_grpc.add_SystemServicer_to_server(
        SystemServicer(
            data_root=str(c.config.data_root),
            default_runtime=c.config.runtime,
            started_at=c.started_at,
            counts=c.counts,
        ),
        server,
    )
    images_pb2_grpc.add_ImagesServicer_to_server(ImagesServicer(c.images), server)
    networks_pb2_grpc.add_NetworksServicer_to_server(NetworksServicer(c.networks), server)
    if c.config.listen:  # certificate rotation only makes sense where there is a TLS identity
        pki_pb2_grpc.add_PkiServicer_to_server(PkiServicer(c.config.tls_dir), server)
    containers_pb2_grpc.add_ContainersServicer_to_server(ContainersServicer(c.containers), server)
    volumes_pb2_grpc.add_VolumesServicer_to_server(VolumesServicer(c.volumes), server)
    events_pb2_grpc.add_EventsServicer_to_server(EventsServicer(c.events), server)
    build_pb2_grpc.add_BuildServicer_to_server(BuildServicer(c.builds), server)
    transfer_pb2_grpc.add_TransferServicer_to_server(TransferServicer(c.transfers, c.images), server)
    releases_pb2_grpc.add_ReleasesServicer_to_server(ReleasesServicer(c.releases), server)
    trust_pb2_grpc.add_TrustServicer_to_server(TrustServicer(c.trust), server)
    audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(c.audit), server)


def open_audit(config: AgentConfig) -> AuditLog | None:
    """The audit log (None with `audit = false`), opened: a torn last line is repaired and recorded."""
    if not config.audit:
        return None
    log = AuditLog(
        config.audit_dir or config.data_root / "audit",
        max_size=config.audit_max_size,
        keep=config.audit_max_files,
        required=config.audit_required,
    )
    log.open()
    return log


def host_identity(config: AgentConfig) -> HostIdentity:
    """This host's labels for certificate scopes: agent.toml `labels`, `host` = its certificate's CN."""
    labels: dict[str, str] = {}
    if config.listen:
        cert = x509.load_pem_x509_certificate(load_identity(config.tls_dir).cert_pem)
        labels["host"] = common_name(cert.subject)
    return HostIdentity({**labels, **config.labels})


def split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise errors.InvalidArgument(f"listen address {address!r} is not HOST:PORT")
    return host, int(port)


PRIVATE_DIR = 0o700


def secure_data_root(data_root: Path, *others: Path) -> list[str]:
    """Make the data root (and a separate exec root) reachable by root only; returns what was changed.

    Why: snapshots and container roots hold setuid binaries and device nodes from images, and
    dockyard.db holds containers' env secrets (CVE-2021-41091 class). A closed top directory closes
    everything below it whatever the modes inside (image content keeps its own modes; containers reach
    their root through a mount, not through this path). The entries right under it are closed too: that
    is what an older agent left 0755/0644, and the agent's umask (0077) keeps new ones closed.
    """
    changed: list[str] = []

    def close(path: Path, mode: int) -> None:
        current = stat.S_IMODE(path.lstat().st_mode)
        if current != mode:
            os.chmod(path, mode)
            changed.append(f"{path} {current:04o}->{mode:04o}")

    for root in (data_root, *others):
        root.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        close(root, PRIVATE_DIR)
        for entry in root.iterdir():
            st = entry.lstat()
            if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
                close(entry, stat.S_IMODE(st.st_mode) & ~0o077)
    if changed:
        _log.warning("data_root.permissions_fixed", changed=changed)
    return changed


def _mkdir_reachable(path: Path) -> None:
    """Create `path` and its missing parents 0755 whatever the umask: the socket's group must reach it."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o755)


class DataRootLock:
    """An exclusive flock on the data root so two agents never share one state directory."""

    def __init__(self, data_root: Path) -> None:
        self._path = data_root / "agent.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self._file = self._path.open("a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise errors.FailedPrecondition(
                f"another dockyard-agent is using data root {self._path.parent}"
            ) from exc
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _socket_in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
        return True


class Agent:
    """One serving agent process: listeners, signal handling, lifecycle hooks."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.credentials: ReloadableServerCredentials | None = None
        self.server: grpc.aio.Server | None = None
        self.health = health.aio.HealthServicer()
        self.bound: dict[str, int] = {}
        self._stop = asyncio.Event()
        self._lock = DataRootLock(config.data_root)
        self.components: Components | None = None
        self.fd_limit = raise_fd_limit()
        self.limits = ConnectionLimits.from_config(config, self.fd_limit)
        self.guard = ListenerGuard(f"{config.network_nft_table}-listen", self.limits)

    async def _open_listeners(self, server: grpc.aio.Server) -> None:
        if self.config.listen:
            self.credentials = ReloadableServerCredentials(self.config.tls_dir)
            for address in self.config.listen:
                split_host_port(address)
                port = server.add_secure_port(address, self.credentials.credentials)
                if port == 0:
                    raise errors.Unavailable(f"cannot listen on {address}")
                self.bound[address] = port
        sock = self.config.socket
        if sock is not None:
            _mkdir_reachable(sock.parent)
            if sock.exists():
                if _socket_in_use(sock):
                    raise errors.FailedPrecondition(f"another agent is serving on {sock}")
                sock.unlink()
            if server.add_insecure_port(f"unix:{sock}") == 0:
                raise errors.Unavailable(f"cannot listen on unix socket {sock}")
        if not self.config.listen and sock is None:
            raise errors.InvalidArgument("nothing to serve on: give --listen HOST:PORT or --socket PATH")

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload_tls)

    def reload_tls(self) -> None:
        if self.credentials is None:
            _log.info("tls.reload_skipped", reason="no TCP listener")
            return
        self.credentials.reload()

    async def run(self) -> None:
        exec_root = self.config.exec_root
        outside = (exec_root,) if exec_root is not None and exec_root.parent != self.config.data_root else ()
        secure_data_root(self.config.data_root, *outside)
        self._lock.acquire()
        try:
            await self._serve()
        finally:
            self._lock.release()

    async def _serve(self) -> None:
        status.report_space_on(self.config.data_root)
        components = Components.build(self.config)
        self.components = components
        server = grpc.aio.server(
            interceptors=[
                AgentInterceptor(
                    Revocations(self.config.tls_dir) if self.config.listen else None,
                    host=host_identity(self.config),
                    audit=components.audit,
                )
            ],
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                *self.limits.grpc_options(),
            ],
        )
        self.server = server
        register_services(server, components)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self._open_listeners(server)
        for hook in components.on_start:
            await hook()
        await self.guard.start(self.bound.values())
        await server.start()
        if self.config.socket is not None:
            os.chmod(self.config.socket, 0o660)  # root and the socket's group only, like docker.sock
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._install_signals(asyncio.get_running_loop())
        _log.info(
            "agent.started",
            pid=os.getpid(),
            listen={a: p for a, p in self.bound.items()},
            fd_limit=self.fd_limit,
            socket=str(self.config.socket) if self.config.socket else None,
            data_root=str(self.config.data_root),
            tls_subject=self.credentials.identity.subject if self.credentials else None,
        )
        try:
            await self._stop.wait()
        finally:
            await self._shutdown(server, components)

    async def _shutdown(self, server: grpc.aio.Server, components: Components) -> None:
        _log.info("agent.stopping", drain_seconds=DRAIN_SECONDS)
        await self.health.enter_graceful_shutdown()
        await server.stop(DRAIN_SECONDS)
        await self.guard.stop()
        for hook in reversed(components.on_stop):
            try:
                await hook()
            except Exception as exc:  # one failing hook must not skip the others
                _log.error("agent.stop_hook_failed", exc_info=exc)
        components.db.close()
        if self.config.socket is not None:
            with contextlib.suppress(FileNotFoundError):
                self.config.socket.unlink()
        _log.info("agent.stopped")

    def request_stop(self) -> None:
        self._stop.set()


def serve(config: AgentConfig) -> Any:
    """Run the agent until SIGTERM/SIGINT; returns when drained."""
    return asyncio.run(Agent(config).run())
