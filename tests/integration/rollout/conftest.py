"""End-to-end rollouts: the `dockyard` CLI driving real agents on netns hosts (tests/support/fleet_hosts.py).

One fleet per test module (`FLEET`: 8 hosts with site=a|b|c in group `edge`, plus dyf-h9 with an 8 MiB
tmpfs data root and dyf-h10 whose agent is down), one registry on the fleet's bridge, and web images built
here from busybox-static, pushed by tag:

    shop/web:v1, v2   busybox httpd serving /www/index.html ("v1"/"v2") and /www/health
    shop/web:v3       the page but no /www/health: the health check (`wget …/health`) gets 404 and fails
    shop/web:big      v2 plus a 12 MB layer (too big for dyf-h9's data root)

Release files name images by tag; the controller resolves them to digests once per rollout. A test uses
release names of its own, so tests on the shared fleet do not see each other's state. Agents record what
they did as events (type "release": staged, activated, healthy, committed, reverted, …; type "container":
the containers' lifecycle, with the release's labels), timestamped by the one machine clock: the tests
prove orderings (waves, budgets, "nothing after staging") from those logs, read over each agent's unix
socket.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.api.v1 import events_pb2
from tests.support.agent import CLI_BIN
from tests.support.fleet_hosts import AgentFleet, FleetHost, agent_fleet, print_agent_logs, wait_until
from tests.support.images import busybox_rootfs_bytes
from tests.support.oci_layout import OciLayout, compressible_bytes, tar_of

EDGE_SITES = ("a", "a", "a", "b", "b", "b", "c", "c")
FLEET: dict[str, Any] = {
    "labels": [{"site": s} for s in EDGE_SITES] + [{"site": "c"}, {"site": "a"}],
    "groups": {"edge": list(range(1, 9))},
    "tmpfs": {9: 8 * 1024 * 1024},
    "no_agent": {10},
}
HEALTH = "wget -q -O- http://127.0.0.1:8080/health"
FAST = ("--canary", "0", "--batch", "100%", "--min-healthy", "0s", "--deadline", "20s")


@dataclass
class Env:
    fleet: AgentFleet
    images: dict[str, str]  # tag → the reference by tag (registry/shop/web:TAG)
    digests: dict[str, str]  # tag → manifest digest
    work: Path

    @property
    def registry(self) -> str:
        assert self.fleet.registry is not None
        return self.fleet.registry.host

    @property
    def edge(self) -> list[FleetHost]:
        return self.fleet.hosts[:8]

    def host(self, name: str) -> FleetHost:
        return self.fleet[name]

    def cli(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return self.fleet.cli(*args, **kwargs)

    def release_file(
        self,
        name: str,
        tag: str,
        *,
        health: str = HEALTH,
        volumes: Sequence[str] = (),
        ports: Sequence[str] = (),
        path: Path | None = None,
    ) -> Path:
        """A release of one busybox httpd container `app`; no network unless it publishes `ports` (then
        the agent's default bridge). Health checks use the container's loopback."""
        lines = [
            f'name = "{name}"',
            "[containers.app]",
            f'image = "{self.images[tag]}"',
            'command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]',
            "ports = [" + ", ".join(json.dumps(p) for p in ports) + "]" if ports else 'network = "none"',
            'stop_signal = "KILL"  # httpd as pid 1 ignores SIGTERM: do not wait for each stop',
        ]
        if volumes:
            lines.append("volumes = [" + ", ".join(json.dumps(v) for v in volumes) + "]")
        lines += [
            "[containers.app.health]",
            f"cmd = {json.dumps(['CMD-SHELL', health])}",
            'interval = "500ms"',
            'timeout = "2s"',
            "retries = 2",
            "",
        ]
        target = path or self.work / f"{name}-{tag}.toml"
        target.write_text("\n".join(lines))
        return target

    def apply(
        self,
        targets: str,
        file: Path,
        *flags: str,
        timeout: float = 180,
        journal_env: dict[str, str] | None = None,
    ) -> Rollout:
        """`dockyard -H TARGETS --format json rollout apply -f FILE FLAGS` to its end."""
        argv = ("-H", targets, "--format", "json", "rollout", "apply", "-f", str(file), *flags)
        return Rollout.of(self.cli(*argv, timeout=timeout, env=journal_env))

    def start_apply(
        self, targets: str, file: Path, *flags: str, config_dir: Path | None = None
    ) -> Background:
        """The same, in the background (to kill it, or to race it)."""
        argv = [CLI_BIN, "-H", targets, "--format", "json", "rollout", "apply", "-f", str(file), *flags]
        return Background.start(argv, config_dir or self.fleet.config_dir, self.work)

    def baseline(self, release: str, tag: str, hosts: str = "@edge", **file: Any) -> dict[str, int]:
        """Roll `tag` out fast to `hosts` (no canary, one wave); returns host → the active revision."""
        path = self.work / f"{release}-base.toml"
        r = self.apply(hosts, self.release_file(release, tag, path=path, **file), *FAST)
        assert r.code == 0, r.text
        out = {}
        for name in r.hosts():
            got = self.host(name).release(release)
            assert got is not None and phase(got.state) == "committed", (name, got)
            out[name] = got.state.active_revision
        return out


def phase(state: Any) -> str:
    from agent.api.v1 import releases_pb2 as rpb

    return str(rpb.ReleasePhase.Name(state.phase)).removeprefix("RELEASE_PHASE_").lower()


@dataclass
class Rollout:
    """A finished `rollout apply`/`resume` run: exit code, the JSON events it printed, its stderr."""

    code: int
    events: list[dict[str, Any]]
    stdout: str
    stderr: str

    @classmethod
    def of(cls, r: subprocess.CompletedProcess[str]) -> Rollout:
        return cls(r.returncode, json_lines(r.stdout), r.stdout, r.stderr)

    @property
    def text(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.stdout[-6000:]}\n--- stderr\n{self.stderr[-3000:]}"

    @property
    def id(self) -> str:
        ids = {e["rollout_id"] for e in self.events if e.get("rollout_id")}
        assert len(ids) == 1, (ids, self.text)
        return ids.pop()

    def hosts(self) -> list[str]:
        return list(dict.fromkeys(e["host"] for e in self.events if e.get("kind") == "host"))

    def steps(self) -> dict[str, str]:
        """Host → the last journal step the run reported for it."""
        out: dict[str, str] = {}
        for e in self.events:
            if e.get("kind") == "host" and e.get("step"):
                out[e["host"]] = e["step"]
        return out

    def waves(self) -> dict[str, int]:
        return {e["host"]: e["wave"] for e in self.events if e.get("kind") == "host" and "wave" in e}

    def final_state(self) -> str:
        states = [e["state"] for e in self.events if e.get("kind") == "rollout" and e.get("state")]
        assert states, self.text
        return str(states[-1])

    def details(self, host: str) -> list[str]:
        return [e.get("detail", "") for e in self.events if e.get("host") == host and e.get("detail")]


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


@dataclass
class Background:
    """A CLI process running in the background; stdout and stderr go to files the test reads."""

    proc: subprocess.Popen[bytes]
    out: Path
    err: Path

    @classmethod
    def start(
        cls, argv: list[str], config_dir: Path, work: Path, env: dict[str, str] | None = None
    ) -> Background:
        n = len(list(work.glob("bg-*.out")))
        out, err = work / f"bg-{n}.out", work / f"bg-{n}.err"
        full_env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(config_dir), "COLUMNS": "200", **(env or {})}
        full_env.pop("DOCKYARD_HOST", None)
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                argv, stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=full_env, start_new_session=True
            )
        return cls(proc, out, err)

    def events(self) -> list[dict[str, Any]]:
        return json_lines(self.out.read_text())

    def rollout_id(self) -> str | None:
        for e in self.events():
            if e.get("rollout_id"):
                return str(e["rollout_id"])
        return None

    def kill(self) -> None:
        """SIGKILL the whole process group (the controller and anything it started)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
        self.proc.wait(10)

    def wait(self, timeout: float) -> Rollout:
        code = self.proc.wait(timeout)
        return Rollout(code, self.events(), self.out.read_text(), self.err.read_text())


def release_events(
    host: FleetHost, release: str, rollout_id: str | None = None
) -> list[events_pb2.AgentEvent]:
    return [
        e
        for e in host.events("release")
        if e.attributes.get("release") == release
        and (rollout_id is None or e.attributes.get("rollout_id") == rollout_id)
    ]


LIFECYCLE = frozenset({"create", "start", "stop", "kill", "die", "restart", "destroy", "pause", "unpause"})


def container_events(host: FleetHost, release: str) -> list[events_pb2.AgentEvent]:
    """Lifecycle events of the release's containers (not health-check execs, which run all the time)."""
    return [
        e
        for e in host.events("container")
        if e.attributes.get("dockyard.release") == release and e.action in LIFECYCLE
    ]


def ns(event: events_pb2.AgentEvent) -> int:
    return int(event.time.ToNanoseconds())


def activated(host: FleetHost, release: str, rollout_id: str | None = None) -> bool:
    return any(e.action == "activated" for e in release_events(host, release, rollout_id))


def wait_activated(hosts: Sequence[FleetHost], release: str, run: Background, timeout: float = 60) -> str:
    """Wait until the background rollout `run` has switched every one of `hosts`; its rollout id."""

    def switched() -> str | None:
        rollout_id = run.rollout_id()
        if rollout_id is None or not all(activated(h, release, rollout_id) for h in hosts):
            return None
        return rollout_id

    found: str = wait_until(switched, timeout, f"{', '.join(h.name for h in hosts)} to activate {release}")
    return found


@pytest.fixture(scope="module")
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, containers)")
    base = tmp_path_factory.mktemp("rollout")
    with agent_fleet(base, FLEET["labels"], **{k: v for k, v in FLEET.items() if k != "labels"}) as fleet:
        failed_before = request.session.testsfailed
        try:
            images, digests = _push_images(fleet, base / "images")
            work = base / "work"
            work.mkdir()
            yield Env(fleet, images, digests, work)
        finally:
            if request.session.testsfailed > failed_before:
                print_agent_logs(fleet)


def _push_images(fleet: AgentFleet, root: Path) -> tuple[dict[str, str], dict[str, str]]:
    assert fleet.registry is not None
    oci = OciLayout(root / "layout")
    base = busybox_rootfs_bytes()
    page = {v: tar_of({"www/index.html": f"{v}\n".encode(), "www/health": b"ok\n"}) for v in ("v1", "v2")}
    built = {
        "v1": oci.add_image([base, page["v1"]]),
        "v2": oci.add_image([base, page["v2"]]),
        "v3": oci.add_image([base, tar_of({"www/index.html": b"v3\n"})]),
        "big": oci.add_image([base, page["v2"], tar_of({"big.bin": compressible_bytes(12_000_000, seed=7)})]),
    }
    images, digests = {}, {}
    for tag, image in built.items():
        oci.tag(image.manifest, tag)
        digests[tag] = image.manifest["digest"]
        images[tag] = f"{fleet.registry.host}/shop/web:{tag}"
    for tag in built:  # one at a time: concurrent uploads of a shared blob make docker-registry fail (500)
        fleet.registry.push(root / "layout", tag, "shop/web")
    return images, digests
