"""`make demo`: a small fleet on this machine, bootstrapped over SSH, and a rollout with a bad release.

    .venv/bin/python -m scripts.demo up       # what `make demo` runs (it starts with `clean`)
    .venv/bin/python -m scripts.demo clean    # what `make demo-clean` runs

Three hosts (network + mount namespaces on the bridge `dyd-br0`, 10.232.0.0/24, each with its own sshd:
scripts/netns_hosts.py, the machinery of the fleet tests) are bootstrapped with the demo's own config dir,
a TLS registry (Debian's docker-registry) on the bridge's address serves a tiny web app built from
deploy/demo/web/, and `dockyard rollout apply` takes the fleet from v1 to v2, then fails to roll out the
broken v3: the canary reverts by itself and the rollout stops. Every step is printed as the command a user
would type, and that very text is what runs (in bash, from the checkout, with the demo's
DOCKYARD_CONFIG_DIR and .venv/bin first on PATH); the lines starting with `#` say what happens around them.

Everything lives under one directory (`.demo/` in the checkout, or $DOCKYARD_DEMO_DIR) and in names
starting with `dyd-`, so `clean` finds all of it without any record: the hosts' processes (sshd, agents,
conmon, containers) by namespace, the registry and the demo's warm CLI server by pid file and command
line, the containers' cgroups by id, the namespaces, veths and bridge by name, then the directory.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from scripts.netns_hosts import (
    PRIVATE_DIRS,
    NamespaceHost,
    kill_namespace,
    link_exists,
    make_bridge,
    namespaces,
    netns_pids,
    sh,
    signal_pid,
    wait_until,
    with_descendants,
)

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("DOCKYARD_DEMO_DIR") or REPO / ".demo").absolute()
PREFIX = "dyd-"
BRIDGE = f"{PREFIX}br0"
NET = "10.232.0"
GATEWAY = f"{NET}.1"
REGISTRY = f"{GATEWAY}:5055"
# In this order in the inventory, so the plan's canary is south-1 and the budget splits the two north hosts.
HOSTS = (("south-1", "south"), ("north-1", "north"), ("north-2", "north"))
ROLLOUT_FLAGS = "--canary 1 --batch 2 --budget site=1 --min-healthy 3s --deadline 15s"
CGROUP_ROOT = Path("/sys/fs/cgroup")
# The names are machine-wide: which checkout's demo holds them (another one's is never torn down from here).
OWNER_FILE = Path("/run/dyd-demo.owner")
CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


@dataclass
class DemoHost(NamespaceHost):
    index: int
    host_name: str
    site: str
    root: Path
    client_pubkey: str = ""
    sshd_proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.host_name

    @property
    def netns(self) -> str:
        return f"{PREFIX}{self.host_name}"

    @property
    def veth(self) -> str:
        return f"{PREFIX}{self.host_name}"

    @property
    def veth_peer(self) -> str:
        return f"{PREFIX}{self.host_name}p"

    @property
    def address(self) -> str:
        return f"{NET}.{10 + self.index}"

    @property
    def bridge(self) -> str:
        return BRIDGE


def demo_hosts(pubkey: str = "") -> list[DemoHost]:
    return [
        DemoHost(index=i, host_name=name, site=site, root=DEMO / "hosts" / name, client_pubkey=pubkey)
        for i, (name, site) in enumerate(HOSTS, start=1)
    ]


def rel(path: Path) -> str:
    """A path as the printed commands show it: relative to the checkout when inside it."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(REPO))
    return str(path)


def say(text: str) -> None:
    print(f"{DIM}{text}{RESET}", flush=True)


class Failed(Exception):
    """The demo could not do a step; the message says which and why."""


class Runner:
    """Prints each command as typed, then runs exactly that text in bash with the demo's environment."""

    def __init__(self) -> None:
        self.config_dir = DEMO / "config"
        self.env = {
            **os.environ,
            "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '/usr/bin:/bin')}",
            "DOCKYARD_CONFIG_DIR": str(self.config_dir),
            # the demo's warm CLI server lives (and is stopped by `clean`) in the demo's directory
            "DOCKYARD_RUNTIME_DIR": str(DEMO / "run"),
        }
        # a proxy in the environment is for the internet (the wheelhouse's pip), not for the demo hosts
        local = ",".join([GATEWAY, *(h.address for h in demo_hosts())])
        for var in ("no_proxy", "NO_PROXY"):
            self.env[var] = ",".join(filter(None, [os.environ.get(var, ""), local]))

    def run(self, command: str, *, ok: tuple[int, ...] = (0,), capture: bool = False) -> tuple[int, str]:
        print(f"\n{BOLD}$ {command}{RESET}", flush=True)
        out = subprocess.run(
            ["bash", "-c", command],
            cwd=REPO,
            env=self.env,
            stdout=subprocess.PIPE if capture else None,
            text=True,
        )
        if capture:
            print(out.stdout, end="", flush=True)
        if out.returncode not in ok:
            raise Failed(f"`{command}` exited with {out.returncode}")
        return out.returncode, out.stdout or ""


# -- up ----------------------------------------------------------------------------------------------


def make_hosts() -> list[DemoHost]:
    DEMO.mkdir(parents=True, exist_ok=True)
    OWNER_FILE.write_text(f"{DEMO}\n")
    (DEMO / ".gitignore").write_text("*\n")
    created = [f"/{d}" for d in PRIVATE_DIRS if not (Path("/") / d).exists()]
    (DEMO / "created-dirs").write_text("".join(f"{d}\n" for d in created))
    key = DEMO / "id_ed25519"
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dockyard-demo", "-f", str(key))
    hosts = demo_hosts(Path(f"{key}.pub").read_text())
    make_bridge(BRIDGE, f"{GATEWAY}/24")
    for host in hosts:
        host.setup()
    say(f"# 3 demo hosts on this machine: network + mount namespaces on the bridge {BRIDGE} ({NET}.0/24),")
    say("# each with its own sshd and private /etc/dockyard, /opt/dockyard, /var/lib/dockyard, /run/dockyard")
    say(f"# (seen from here under {rel(DEMO / 'hosts')}/NAME/); root logs in with the key {rel(key)}.")
    for host in hosts:
        say(f"#   {host.name:8} {host.address:12} site={host.site}")
    return hosts


def write_inventory(runner: Runner, hosts: list[DemoHost]) -> None:
    lines = []
    for host in hosts:
        lines += [
            f"[hosts.{host.name}]",
            f'address = "{host.address}"',
            f'ssh_key = "{DEMO / "id_ed25519"}"',
            f'labels = {{ site = "{host.site}" }}',
            "",
        ]
    inventory = runner.config_dir / "inventory.toml"
    inventory.write_text("\n".join(lines))
    say("\n# The inventory names the hosts, how to reach them over SSH, and their labels:")
    runner.run(f"cat {rel(inventory)}")


def ssh_config(runner: Runner, hosts: list[DemoHost]) -> Path:
    path = DEMO / "ssh_config"
    entries = [f"Host {h.name}\n  HostName {h.address}\n" for h in hosts]
    entries.append(
        "Host *\n  User root\n"
        f"  IdentityFile {DEMO / 'id_ed25519'}\n"
        f"  UserKnownHostsFile {runner.config_dir / 'known_hosts'}\n"
        "  StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n"
    )
    path.write_text("".join(entries))
    return path


def start_registry(runner: Runner, hosts: list[DemoHost]) -> None:
    reg = DEMO / "registry"
    reg.mkdir()
    say(f"\n# A registry for the fleet: Debian's docker-registry on this machine at {REGISTRY}, the bridge's")
    say("# address, which the hosts reach; TLS with a self-signed certificate, like any private registry.")
    runner.run(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30"
        f" -subj /CN=demo-registry -addext subjectAltName=IP:{GATEWAY}"
        f" -keyout {rel(reg / 'key.pem')} -out {rel(reg / 'ca.crt')} 2>/dev/null"
    )
    config = reg / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {reg / 'storage'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {REGISTRY}\n  tls:\n    certificate: {reg / 'ca.crt'}\n    key: {reg / 'key.pem'}\n"
    )
    shown = f"docker-registry serve {rel(config)} &"
    print(f"\n{BOLD}$ {shown}{RESET}", flush=True)
    with (reg / "registry.log").open("ab") as log:
        # its own session, so that it outlives `make demo` and no Ctrl-C of a later command reaches it
        proc = subprocess.Popen(
            ["docker-registry", "serve", str(config)],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (reg / "registry.pid").write_text(f"{proc.pid}\n")
    context = ssl.create_default_context(cafile=str(reg / "ca.crt"))

    def answers() -> bool:
        if proc.poll() is not None:
            raise Failed(f"docker-registry exited: {(reg / 'registry.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"https://{REGISTRY}/v2/", context=context, timeout=1):
                return True
        except OSError:
            return False

    wait_until(answers, 20, "the registry")
    say("\n# Each host trusts that certificate for this registry (certs.d, as Docker does):")
    names = " ".join(h.name for h in hosts)
    certs = f"/etc/dockyard/certs.d/{REGISTRY}"
    runner.run(
        f"for h in {names}; do ssh -F {rel(ssh_config(runner, hosts))} $h "
        f"'mkdir -p {certs} && cat > {certs}/ca.crt' < {rel(reg / 'ca.crt')}; done"
    )


def build_images(runner: Runner, builder: DemoHost) -> None:
    context = DEMO / "build" / "web"
    say(
        "\n# The web app (deploy/demo/web/Dockerfile: busybox httpd serving a page with its version, a health"
    )
    say(f"# check that fetches it), built on {builder.name} and pushed: v1, v2, and a v3 without its page.")
    build_dir = rel(context.parent)
    runner.run(
        f"mkdir -p {build_dir} && cp -r deploy/demo/web {build_dir}/ && cp /bin/busybox {rel(context)}/"
    )
    image = f"{REGISTRY}/demo/web"
    runner.run(f"dockyard -H {builder.name} build -t {image}:1 --build-arg VERSION=v1 {rel(context)}")
    runner.run(f"dockyard -H {builder.name} build -q -t {image}:2 --build-arg VERSION=v2 {rel(context)}")
    broken = "--build-arg VERSION=v3 --build-arg BROKEN=1"
    runner.run(f"dockyard -H {builder.name} build -q -t {image}:3 {broken} {rel(context)}")
    runner.run(f"for v in 1 2 3; do dockyard -H {builder.name} push -q {image}:$v; done")


def pages(runner: Runner, hosts: list[DemoHost]) -> dict[str, str]:
    addresses = " ".join(h.address for h in hosts)
    _, out = runner.run(
        f'for ip in {addresses}; do echo "$ip: $(curl -s --max-time 5 http://$ip:8080/)"; done', capture=True
    )
    by_address = dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)
    return {h.name: by_address.get(h.address, "").strip() for h in hosts}


def roll_out(runner: Runner, release: Path, version: int, hosts: list[DemoHost]) -> int:
    if version > 1:
        runner.run(f"sed -i 's|/demo/web:{version - 1}\"|/demo/web:{version}\"|' {rel(release)}")
    code, _ = runner.run(f"dockyard -H all rollout apply -f {rel(release)} {ROLLOUT_FLAGS}", ok=(0, 1, 3))
    return code


def up() -> int:
    if os.geteuid() != 0:
        print(
            "make demo needs root (network and mount namespaces, sshd, the agents' containers)",
            file=sys.stderr,
        )
        return 1
    started = time.monotonic()
    if clean(quiet=True) != 0:
        return 1
    runner = Runner()
    try:
        hosts = make_hosts()
        say("\n# The demo's own config dir (CA, inventory, known_hosts, journal), not ~/.config/dockyard:")
        print(f"\n{BOLD}$ export DOCKYARD_CONFIG_DIR={runner.config_dir}{RESET}", flush=True)
        runner.run("dockyard pki init")
        write_inventory(runner, hosts)
        say("\n# Bootstrap all three over SSH at once. Their host keys are new to this controller:")
        say("# --accept-new-host-keys records them in $DOCKYARD_CONFIG_DIR/known_hosts on first use")
        say("# (a key that changes later is always refused).")
        runner.run("dockyard -H all bootstrap --accept-new-host-keys")
        runner.run("dockyard -H all hosts")
        start_registry(runner, hosts)
        build_images(runner, hosts[0])

        release = DEMO / "web.toml"
        say("\n# The release: what every host should run.")
        runner.run(f"cp deploy/demo/web.toml {rel(release)} && cat {rel(release)}")
        say("\n# Roll v1 out: a canary first, then waves of up to 2 hosts, but never two of one site at once")
        say("# (--budget site=1), so north-1 and north-2 go in waves of their own:")
        if roll_out(runner, release, 1, hosts) != 0:
            raise Failed("the rollout of v1 did not succeed")
        seen = pages(runner, hosts)
        if set(seen.values()) != {"v1"}:
            raise Failed(f"pages after v1: {seen}")
        say("\n# v2, the same way:")
        if roll_out(runner, release, 2, hosts) != 0:
            raise Failed("the rollout of v2 did not succeed")
        seen = pages(runner, hosts)
        if set(seen.values()) != {"v2"}:
            raise Failed(f"pages after v2: {seen}")
        say(
            "\n# v3 is broken (its health check fails): the canary's agent reverts it to v2 by itself and the"
        )
        say("# rollout stops before any other host is touched.")
        code = roll_out(runner, release, 3, hosts)
        if code == 0:
            raise Failed("the rollout of the broken v3 succeeded")
        say(f"# (exit code {code}: the rollout {'paused' if code == 3 else 'failed'})")
        seen = pages(runner, hosts)
        if set(seen.values()) != {"v2"}:
            raise Failed(f"pages after v3: {seen}")
        runner.run("dockyard -H all release ls")
    except (Failed, RuntimeError, subprocess.SubprocessError, OSError, KeyboardInterrupt) as exc:
        print(f"\nmake demo failed: {exc or type(exc).__name__}", file=sys.stderr)
        print("(what it made stays for a look; `make demo-clean` removes it)", file=sys.stderr)
        return 1
    bin_dir = REPO / ".venv" / "bin"
    print(f"\n{BOLD}The demo fleet is running{RESET} ({time.monotonic() - started:.0f} s). Use it:")
    print(f"  export DOCKYARD_CONFIG_DIR={runner.config_dir} PATH={bin_dir}:$PATH")
    print("  dockyard -H all ps;  dockyard rollout ls;  dockyard -H all release ls")
    print("  make demo-clean      # removes the hosts, their processes, mounts, bridge, registry and files")
    return 0


# -- clean -------------------------------------------------------------------------------------------


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _demo_pids_outside_hosts() -> list[int]:
    """The registry and the demo's warm CLI server: by their command line, which names the demo's dir."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != me:
            line = _cmdline(int(entry.name))
            if f"{DEMO}/" in line and ("docker-registry" in line or "controller.warm" in line):
                found.append(int(entry.name))
    return found


def _container_ids() -> set[str]:
    """Ids of every container the demo hosts' agents made (their state dirs), for their cgroups."""
    found = (DEMO / "hosts").glob("*/var-lib-dockyard/containers/*")
    return {path.name for path in found if CONTAINER_ID.match(path.name)}


def _cgroups_of(pids: list[int], ids: set[str]) -> set[Path]:
    """Cgroup directories (in every hierarchy) of the containers `ids` and of those `pids` run in."""
    ids = set(ids)
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
                leaf = line.rsplit("/", 1)[-1]
                if CONTAINER_ID.match(leaf):
                    ids.add(leaf)
    found: set[Path] = set()
    if ids:
        for root, dirs, _ in os.walk(CGROUP_ROOT):
            found.update(Path(root) / d for d in dirs if d in ids)
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan waits for a pid 1 that may be slow to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _stop(pids: list[int]) -> None:
    """SIGTERM all at once, SIGKILL what is left after a grace period (httpd as pid 1 ignores SIGTERM)."""
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        alive = [p for p in pids if _alive(p)]
        for pid in alive:
            signal_pid(pid, sig)
        with contextlib.suppress(TimeoutError):
            wait_until(functools.partial(_all_gone, alive), grace, "demo processes")


def _all_gone(pids: list[int]) -> bool:
    return not any(_alive(p) for p in pids)


def _cgroup_empty(group: Path) -> bool:
    return not group.exists() or not (group / "cgroup.procs").read_text().strip()


def clean(*, quiet: bool = False) -> int:
    """Remove everything the demo made; safe to run at any point, and twice."""
    if os.geteuid() != 0:
        print("make demo-clean needs root", file=sys.stderr)
        return 1
    owner = OWNER_FILE.read_text().strip() if OWNER_FILE.exists() else str(DEMO)
    if owner != str(DEMO) and (namespaces(PREFIX) or link_exists(BRIDGE)):
        print(f"the demo of {owner} holds the demo's hosts: `make demo-clean` there first", file=sys.stderr)
        return 1
    netnses = namespaces(PREFIX)
    pids = with_descendants([pid for ns in netnses for pid in netns_pids(ns)]) + _demo_pids_outside_hosts()
    groups = _cgroups_of(pids, _container_ids())
    _stop(pids)
    for ns in netnses:  # anything started in a host meanwhile
        kill_namespace(ns)
    for group in sorted(groups, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            wait_until(functools.partial(_cgroup_empty, group), 5, str(group))
            group.rmdir()
    for host in demo_hosts():
        sh("ip", "link", "del", host.veth, check=False)
    for ns in netnses:
        sh("ip", "netns", "del", ns, check=False)
    if link_exists(BRIDGE):
        sh("ip", "link", "del", BRIDGE)
    created = DEMO / "created-dirs"
    if created.exists() and not namespaces("dyf-"):  # no test fleet uses them as mount points
        for line in reversed(created.read_text().split()):
            with contextlib.suppress(OSError):
                Path(line).rmdir()
    leftovers = _mounts_under(DEMO)
    for target in sorted(leftovers, key=len, reverse=True):
        sh("umount", "-l", target, check=False)
    OWNER_FILE.unlink(missing_ok=True)
    if DEMO.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(DEMO)], check=False)
    if not quiet:
        print(f"demo removed: {len(netnses)} hosts, bridge {BRIDGE}, registry, {rel(DEMO)}/")
    return 0


def _mounts_under(root: Path) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line.split(" ")[4] for line in f if line.split(" ")[4].startswith(str(root))]


def main(argv: list[str]) -> int:
    if argv[1:] == ["up"]:
        return up()
    if argv[1:] == ["clean"]:
        return clean()
    print(f"usage: {argv[0]} up|clean", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
