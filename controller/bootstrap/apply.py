"""Bootstrap one host over SSH: gather facts, plan, apply each step idempotently, wait for Ping over mTLS.

Every step converges (write-if-different, install-if-missing), so an interrupted bootstrap is finished by
running it again. The agent's private key is generated on the host (`python -m agent.enroll csr`); only
the CSR travels to the controller, which signs it with the fleet CA and sends the certificate back.
The fleet's revocation list (crl.pem) goes to every host whose copy differs.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller import inventory, pki, ssh
from controller.api.system import SystemApi
from controller.bootstrap import facts as facts_mod
from controller.bootstrap import plan as plan_mod
from controller.bootstrap import wheelhouse as wh_mod
from controller.bootstrap.facts import Facts
from controller.bootstrap.plan import Kind, Step
from controller.client import AgentClient
from controller.errors import ControllerError
from controller.inventory import Host

WHEELHOUSE_DIR = f"{facts_mod.PREFIX}/wheelhouse"
VENV_LINK = f"{facts_mod.PREFIX}/venv"
AGENT_LOG = "/var/lib/dockyard/agent.log"

INSTALL_COMMANDS = {
    "apt-get": "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
    "--no-install-recommends",
    "dnf": "dnf install -y -q",
    "yum": "yum install -y -q",
    "zypper": "zypper -n -q install",
    "apk": "apk add -q",
}


class BootstrapError(ControllerError):
    pass


@dataclass(frozen=True)
class Assets:
    """The files bootstrap writes, from deploy/: agent config template, systemd unit, supervisor."""

    config_template: str
    unit: bytes
    supervisor: bytes

    @classmethod
    def load(cls, deploy_dir: Path | None = None) -> Assets:
        d = deploy_dir or _deploy_dir()
        try:
            return cls(
                (d / "agent.toml.example").read_text(),
                (d / "dockyard-agent.service").read_bytes(),
                (d / "dockyard-supervise.sh").read_bytes(),
            )
        except FileNotFoundError as exc:
            raise BootstrapError(f"deploy file missing: {exc.filename}") from exc

    def config_for(self, port: int, labels: Mapping[str, str] | None = None) -> bytes:
        """agent.toml for a host: its port and its inventory labels (what certificate scopes match)."""
        text = self.config_template.replace('"0.0.0.0:7443"', f'"0.0.0.0:{port}"')
        if labels:
            pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in sorted(labels.items()))
            listen = f'listen = ["0.0.0.0:{port}"]\n'
            comment = "# This host's labels (from the inventory), for certificate scopes.\n"
            text = text.replace(listen, f"{listen}{comment}labels = {{ {pairs} }}\n", 1)
        return text.encode()

    def service_for(self, init: str) -> bytes:
        return self.unit if init == "systemd" else self.supervisor


def _deploy_dir() -> Path:
    """deploy/ of the source tree, else where an installed wheel puts it (share/dockyard/deploy)."""
    source = Path(__file__).resolve().parents[2] / "deploy"
    return source if source.is_dir() else Path(sys.prefix) / "share" / "dockyard" / "deploy"


@dataclass(frozen=True)
class Options:
    config_dir: Path
    inventory_path: Path
    known_hosts: ssh.KnownHosts
    accept_new_host_keys: bool = False
    upgrade: bool = False
    ssh_user: str | None = None
    ssh_port: int | None = None
    ssh_key: Path | None = None
    wheelhouse: Path | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    ping_deadline_s: float = 60.0


@dataclass(frozen=True)
class Report:
    host: str
    changes: tuple[str, ...]
    notes: tuple[str, ...]
    os: str
    arch: str
    seconds: float

    @property
    def summary(self) -> str:
        return "changed: " + "; ".join(self.changes) if self.changes else "no changes"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Bootstrapper:
    """Bootstraps hosts; shares one wheelhouse build and one CA load between all of them."""

    def __init__(self, options: Options, assets: Assets | None = None) -> None:
        self.options = options
        self.assets = assets or Assets.load()
        self.ca = pki.load_ca(options.config_dir)
        self.crl = pki.crl_for_push(options.config_dir, self.ca)
        self._wheelhouses: dict[tuple[str, str], asyncio.Task[wh_mod.Wheelhouse]] = {}

    async def wheelhouse_for(self, facts: Facts) -> wh_mod.Wheelhouse:
        key = (facts.python_tag, facts.arch)
        if self.options.wheelhouse is not None:
            given = self.options.wheelhouse
            key = ("given", "")
            if key not in self._wheelhouses:
                self._wheelhouses[key] = asyncio.create_task(asyncio.to_thread(wh_mod.existing, given))
            return await asyncio.shield(self._wheelhouses[key])
        task = self._wheelhouses.get(key)
        if task is None:  # the first host to need this platform builds it; the others wait for it
            cache = self.options.config_dir / "wheelhouse"
            task = asyncio.create_task(wh_mod.build(cache, facts.python_tag, facts.arch))
            self._wheelhouses[key] = task
        return await asyncio.shield(task)

    def ssh_target(self, host: Host) -> ssh.SshTarget:
        o = self.options
        key = o.ssh_key or (Path(host.ssh_key).expanduser() if host.ssh_key else None)
        return ssh.SshTarget(host.address, o.ssh_port or host.ssh_port, o.ssh_user or host.ssh_user, key)

    def cert_names(self, host: Host) -> tuple[str, ...]:
        return tuple(dict.fromkeys([host.name, host.address]))

    async def run(self, host: Host) -> Report:
        start = time.monotonic()
        target = self.ssh_target(host)
        async with ssh.connect(
            target, self.options.known_hosts, accept_new=self.options.accept_new_host_keys
        ) as session:
            facts = facts_mod.parse((await session.run(facts_mod.COMMAND)).stdout)
            wheelhouse = await self.wheelhouse_for(facts) if facts.python else None
            labels = {"arch": facts.arch, **host.labels, **self.options.labels}
            config = self.assets.config_for(host.port, labels)
            service = self.assets.service_for(facts.init)
            desired = plan_mod.Desired(
                wheelhouse_digest=wheelhouse.digest if wheelhouse else "",
                config_sha=_sha(config),
                service_sha=_sha(service),
                ca_sha=_sha(self.ca.cert_pem),
                crl_sha=_sha(self.crl) if self.crl is not None else "",
                cert_names=self.cert_names(host),
                upgrade=self.options.upgrade,
            )
            plan = plan_mod.make(facts, desired)
            if plan.problems:
                raise BootstrapError("; ".join(plan.problems), host.name)
            for step in plan.steps:
                await self._apply(step, session, facts, host, wheelhouse, config, service)
            try:
                await self._wait_ping(host)
            except ControllerError as exc:
                tail = await session.run(f"tail -n 5 {AGENT_LOG} 2>/dev/null", check=False)
                detail = " | ".join(tail.stdout.strip().splitlines()[-5:])
                raise BootstrapError(f"{exc.message}; agent log: {detail or '(empty)'}", host.name) from exc
        recorded = replace(
            host,
            ssh_user=target.user,
            ssh_port=target.port,
            labels=labels,
            ssh_key=str(self.options.ssh_key) if self.options.ssh_key else host.ssh_key,
        )
        changes = [s.describe() for s in plan.steps]
        if inventory.record(self.options.inventory_path, recorded):
            changes.append("recorded in inventory")
        return Report(
            host.name, tuple(changes), plan.notes, facts.os_name, facts.arch, time.monotonic() - start
        )

    async def _apply(
        self,
        step: Step,
        s: ssh.Session,
        facts: Facts,
        host: Host,
        wheelhouse: wh_mod.Wheelhouse | None,
        config: bytes,
        service: bytes,
    ) -> None:
        if step.kind is Kind.INSTALL_PACKAGES:
            await s.run(f"{INSTALL_COMMANDS[facts.pkg_manager]} {' '.join(step.packages)}", time_limit=900)
        elif step.kind is Kind.INSTALL_AGENT:
            assert wheelhouse is not None
            await self._install(s, facts, wheelhouse)
        elif step.kind is Kind.ENROLL:
            await self._enroll(s, host)
        elif step.kind is Kind.PUSH_CRL:
            assert self.crl is not None
            python = f"{VENV_LINK}/bin/python"
            await s.run(
                f"{python} -m agent.enroll crl --tls-dir {facts_mod.TLS_DIR}", input=self.crl.decode()
            )
        elif step.kind is Kind.WRITE_CONFIG:
            await s.run(f"mkdir -p {facts_mod.ETC}")
            await s.write_file(facts_mod.CONFIG_FILE, config, 0o644)
        elif step.kind is Kind.WRITE_SERVICE:
            if facts.init == "systemd":
                await s.write_file(facts_mod.UNIT_FILE, service, 0o644)
                await s.run("systemctl daemon-reload && systemctl enable -q dockyard-agent")
            else:
                await s.run(f"mkdir -p {facts_mod.PREFIX}/bin")
                await s.write_file(facts_mod.SUPERVISOR, service, 0o755)
        else:
            verb = {Kind.START: "start", Kind.RESTART: "restart", Kind.RELOAD: "reload"}[step.kind]
            if facts.init == "systemd":
                await s.run(f"systemctl {verb} dockyard-agent")
            else:
                await s.run(f"{facts_mod.SUPERVISOR} {verb}")

    async def _install(self, s: ssh.Session, facts: Facts, wheelhouse: wh_mod.Wheelhouse) -> None:
        """Upload missing wheels, install into versions/<digest>, then swap the venv symlink."""
        await s.run(f"mkdir -p {WHEELHOUSE_DIR}")
        listing = await s.run(f"cd {WHEELHOUSE_DIR} && sha256sum -- *.whl 2>/dev/null; true")
        present: dict[str, str] = {}
        for line in listing.stdout.splitlines():
            sha, _, name = line.partition(" ")
            present[name.lstrip(" *")] = sha
        # By content, not by name: a rebuilt dockyard wheel keeps its name and version.
        wheels = await asyncio.to_thread(lambda: {w: wh_mod.wheel_sha256(w) for w in wheelhouse.wheels})
        missing = [w for w, sha in wheels.items() if present.get(w.name) != sha]
        if missing:
            await s.put(missing, WHEELHOUSE_DIR)
        version = f"{facts_mod.PREFIX}/versions/{wheelhouse.digest[:16]}"
        pip = f"{WHEELHOUSE_DIR}/{wheelhouse.pip_wheel.name}/pip"
        script = f"""
set -e
v={version}
if [ ! -f "$v/.complete" ]; then
  rm -rf "$v"
  {shlex.quote(facts.python)} -m venv --without-pip "$v"
  "$v/bin/python" {pip} install -q --no-index --find-links {WHEELHOUSE_DIR} --no-cache-dir \\
      --no-compile --disable-pip-version-check dockyard
  touch "$v/.complete"
fi
prev="$(readlink {VENV_LINK} || true)"
ln -sfn "$v" {VENV_LINK}.new && mv -T {VENV_LINK}.new {VENV_LINK}
echo {wheelhouse.digest} > {facts_mod.INSTALLED}.tmp && mv {facts_mod.INSTALLED}.tmp {facts_mod.INSTALLED}
# Keep the new build and the one the running agent still uses; older builds go.
for old in {facts_mod.PREFIX}/versions/*; do
  [ "$old" = "$v" ] || [ "$old" = "$prev" ] || rm -rf "$old"
done
"""
        await s.run(script, time_limit=600)

    async def _enroll(self, s: ssh.Session, host: Host) -> None:
        names = self.cert_names(host)
        python = f"{VENV_LINK}/bin/python"
        args = " ".join(f"--san {shlex.quote(n)}" for n in names) + f" --name {shlex.quote(host.name)}"
        csr = await s.run(f"{python} -m agent.enroll csr --tls-dir {facts_mod.TLS_DIR} {args}")
        cert = pki.sign_csr(self.ca, csr.stdout.encode(), role=pki.ROLE_AGENT, sans=list(names))
        bundle = (pki.cert_pem(cert) + self.ca.cert_pem).decode()
        await s.run(f"{python} -m agent.enroll install --tls-dir {facts_mod.TLS_DIR}", input=bundle)
        await s.write_file(facts_mod.CERT_NAMES, (",".join(names) + "\n").encode(), 0o644)

    async def _wait_ping(self, host: Host) -> None:
        """Poll Ping over mTLS until it answers or the deadline passes."""
        deadline = time.monotonic() + self.options.ping_deadline_s
        last: ControllerError | None = None
        while time.monotonic() < deadline:
            client = AgentClient(inventory.to_target(host), self.options.config_dir)
            try:
                await SystemApi(client).ping(timeout=2.0)
                return
            except ControllerError as exc:
                last = exc
            finally:
                await client.close()
            await asyncio.sleep(0.2)
        reason = last.message if last else "no answer"
        raise BootstrapError(
            f"agent did not answer Ping within {self.options.ping_deadline_s:g}s: {reason}", host.name
        )
