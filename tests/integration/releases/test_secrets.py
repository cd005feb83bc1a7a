"""A secret end to end on a real agent through the CLI: `secret create` on the controller, `rollout apply`
delivers it with Stage, the container reads it at /run/secrets/NAME with the mode and owner the release
asked for, and the value is nowhere else: not in the agent's data root (database, revisions, audit log,
bundles), its log, its events, `inspect`, `rollout status`, the rollout's output, or the controller's
journal. Rotating the secret is a new revision: a value that makes the health check fail is reverted by
the agent to the last known good revision, whose container reads the old value again."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agent import run_cli

from .conftest import Host, HostFactory, Images

pytestmark = pytest.mark.timeout(300)

RELEASE = """\
name = "web"
[containers.app]
image = "{image}"
network = "none"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
stop_timeout = 1
secrets = [{{ name = "db_password", mode = 0o440, uid = 1000, gid = 1000 }}]
[containers.app.health]
cmd = ["CMD-SHELL", "grep -q '^good-' /run/secrets/db_password && wget -q -O- http://127.0.0.1:8080/health"]
interval = "300ms"
timeout = "2s"
retries = 2
"""


@pytest.fixture
def agent(host_factory: HostFactory, tmp_path: Path) -> Iterator[Host]:
    host = host_factory("a", config_dir=str(tmp_path / "a-etc"))
    yield host
    # the agent's secrets tmpfs (next to its socket): lazily, containers may still hold the files
    subprocess.run(["umount", "-l", str(host.agent.socket.parent / "secrets")], check=False)


def cli(
    h: Host, *args: str, input: bytes | None = None, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    return run_cli(h.config_dir, *args, host=h.agent.unix_target, input=input, timeout=timeout)


def files_under(root: Path) -> bytes:
    out = b""
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            try:
                out += path.read_bytes()
            except OSError:
                continue
    return out


def test_secret_end_to_end_and_rotation_reverts(agent: Host, images: Images, tmp_path: Path) -> None:
    good = f"good-{secrets.token_hex(8)}".encode()
    bad = f"bad-{secrets.token_hex(8)}".encode()
    created = run_cli(agent.config_dir, "secret", "create", "db_password", input=good)
    assert created.returncode == 0, created.stderr
    assert "version 1" in created.stdout
    release = tmp_path / "web.toml"
    release.write_text(RELEASE.format(image=f"{images.registry.host}/shop/web:v1"))
    flags = ["rollout", "apply", "-f", str(release), "--min-healthy", "1s", "--deadline", "20s"]

    dry = cli(agent, *flags, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "secret db_password (version 1) → /run/secrets/db_password mode 0440 uid 1000" in dry.stdout

    first = cli(agent, *flags)
    assert first.returncode == 0, first.stderr + first.stdout
    inside = cli(agent, "exec", "web-app-r1", "cat", "/run/secrets/db_password")
    assert inside.returncode == 0 and inside.stdout.encode() == good
    mode = cli(agent, "exec", "web-app-r1", "stat", "-c", "%a %u %g", "/run/secrets/db_password")
    assert mode.stdout.split() == ["440", "1000", "1000"]
    env = cli(agent, "exec", "web-app-r1", "env").stdout
    assert good.decode() not in env  # files only, never the environment

    # rotation: a new value is a new revision; this one fails its health check → the agent reverts
    assert run_cli(agent.config_dir, "secret", "create", "db_password", input=bad).returncode == 0
    rotated = cli(agent, "--format", "json", *flags)
    assert rotated.returncode == 1, rotated.stderr + rotated.stdout  # its only host reverted: failed
    final = json.loads(rotated.stdout.splitlines()[-1])
    assert final["hosts"][agent.agent.unix_target]["step"] == "reverted"
    states = json.loads(cli(agent, "--format", "json", "release", "ls").stdout)
    assert states[0]["phase"] == "reverted" and states[0]["active_revision"] == 1
    again = cli(agent, "exec", "web-app-r1", "cat", "/run/secrets/db_password")
    assert again.stdout.encode() == good  # the last known good revision reads its own version

    # the values are nowhere they must not be
    status = run_cli(agent.config_dir, "rollout", "status")
    ls = run_cli(agent.config_dir, "secret", "ls")
    assert "db_password" in ls.stdout and "2" in ls.stdout
    shown = {
        "rollout output": (first.stdout + first.stderr + rotated.stdout + rotated.stderr).encode(),
        "rollout status": status.stdout.encode(),
        "secret ls": ls.stdout.encode(),
        "inspect": cli(agent, "inspect", "web-app-r1", "web-app-r2").stdout.encode(),
        "events": cli(agent, "--format", "json", "events", "--since", "0", "--no-follow").stdout.encode(),
        "agent log": agent.agent.log_path.read_bytes(),
        "agent data root (database, revisions, audit, bundles)": files_under(agent.agent.data_root),
        "controller journal and config dir": files_under(agent.config_dir),
    }
    assert shown["events"], "the events command printed nothing to search"
    for where, data in shown.items():
        for value in (good, bad):
            assert value not in data, f"{value!r} found in {where}"
    assert b"/run/secrets/db_password" in shown["inspect"]  # the mount is shown, not what it holds
    # stored at rest on the agent, 0600 and encrypted
    stored = sorted((agent.agent.data_root / "secrets").iterdir())
    assert [p.name for p in stored] == ["db_password@1", "db_password@2"]
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in stored)
    key = tmp_path / "a-etc" / "secrets.key"  # the agent's own key (its config dir: no TCP listener here)
    assert key.stat().st_mode & 0o777 == 0o600


COMPOSE = """\
name: shop
services:
  app:
    image: {image}
    command: ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
    stop_grace_period: 1s
    secrets:
      - source: db
        target: /run/secrets/pw
        uid: "1000"
        mode: 0440
    healthcheck:
      test: ["CMD-SHELL", "test -s /run/secrets/pw"]
      interval: 300ms
      retries: 2
networks:
  default: {{external: true, name: none}}
secrets:
  db: {{external: true, name: db_password}}
"""


def test_a_compose_release_mounts_a_secret(agent: Host, images: Images, tmp_path: Path) -> None:
    value = f"compose-{secrets.token_hex(8)}".encode()
    assert run_cli(agent.config_dir, "secret", "create", "db_password", input=value).returncode == 0
    compose = tmp_path / "compose.yaml"
    compose.write_text(COMPOSE.format(image=f"{images.registry.host}/shop/web:v1"))
    applied = cli(agent, "rollout", "apply", "-f", str(compose), "--min-healthy", "1s", "--deadline", "20s")
    assert applied.returncode == 0, applied.stderr + applied.stdout
    inside = cli(agent, "exec", "shop-app-r1", "cat", "/run/secrets/pw")
    assert inside.returncode == 0 and inside.stdout.encode() == value
    mode = cli(agent, "exec", "shop-app-r1", "stat", "-c", "%a %u %g", "/run/secrets/pw")
    assert mode.stdout.split() == ["440", "1000", "0"]
    assert value not in applied.stdout.encode() + applied.stderr.encode()
    # `compose up` on one host refuses the same file, before touching the host
    up = cli(agent, "compose", "-f", str(compose), "up", "-d")
    assert up.returncode != 0
    assert "compose secrets are supported in rollouts" in up.stderr
