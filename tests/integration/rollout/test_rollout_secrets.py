"""A secret end to end on netns hosts with real agents over mTLS (issue 23): `secret create` with a default
value and a value of one host's own (`--host`), a release that mounts it on three hosts of the fleet,
`rollout apply`; each container reads its host's value at /run/secrets/NAME, and neither value is anywhere
it must not be: not in an agent's data root (database, revisions, audit log, stored secrets), its log or
config dir, `events`, `audit`, `inspect`, the rollout's output (dry run included), `rollout status`, or the
controller's config dir and journal. Hosts the release does not reach get no secret at all."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator

import pytest

from tests.integration.releases.test_secrets import files_under
from tests.integration.rollout.conftest import FAST, HEALTH, Env
from tests.support.agent import run_cli
from tests.support.fleet_hosts import FleetHost

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

SECRET = "api_key"
RELEASE = "vault"
SECRET_TOML = f"""
[[containers.app.secrets]]
name = "{SECRET}"
mode = 0o440
uid = 1000
gid = 1000
"""


@pytest.fixture
def hosts(env: Env) -> Iterator[list[FleetHost]]:
    """Three hosts of three sites; afterwards no containers anywhere and the agents' secret tmpfs gone."""
    chosen = [env.host(n) for n in env.fleet.names(1, 4, 7)]
    yield chosen
    env.fleet.remove_containers()
    for h in chosen:  # next to the agent's socket, not under its data root: the fleet's sweep misses it
        assert h.agent is not None
        subprocess.run(["umount", "-l", str(h.agent.socket.parent / "secrets")], check=False)


def test_a_secret_reaches_each_host_as_its_own_value_and_nowhere_else(
    env: Env, hosts: list[FleetHost]
) -> None:
    default = f"default-{secrets.token_hex(8)}".encode()
    own = f"own-{secrets.token_hex(8)}".encode()
    special = hosts[1]
    created = [
        run_cli(env.fleet.config_dir, "secret", "create", SECRET, input=default),
        run_cli(env.fleet.config_dir, "secret", "create", SECRET, "--host", special.name, input=own),
    ]
    for c in created:
        assert c.returncode == 0, c.stderr
    assert f"for host:{special.name}" in created[1].stdout

    path = env.release_file(RELEASE, "v1", health=f"test -s /run/secrets/{SECRET} && {HEALTH}")
    path.write_text(path.read_text() + SECRET_TOML)
    targets = ",".join(h.name for h in hosts)
    dry = env.cli("-H", targets, "rollout", "apply", "-f", str(path), *FAST, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"/run/secrets/{SECRET} mode 0440 uid 1000" in dry.stdout
    r = env.apply(targets, path, *FAST)
    assert r.code == 0, r.text
    assert r.final_state() == "done" and sorted(r.hosts()) == sorted(h.name for h in hosts)

    container = f"{RELEASE}-app-r1"
    for h in hosts:
        expected = own if h is special else default
        inside = env.cli("-H", h.name, "exec", container, "cat", f"/run/secrets/{SECRET}")
        assert inside.returncode == 0, inside.stderr
        assert inside.stdout.encode() == expected, h.name
        mode = env.cli("-H", h.name, "exec", container, "stat", "-c", "%a %u %g", f"/run/secrets/{SECRET}")
        assert mode.stdout.split() == ["440", "1000", "1000"], (h.name, mode.stdout, mode.stderr)
        envvars = env.cli("-H", h.name, "exec", container, "env")
        assert envvars.returncode == 0 and default not in envvars.stdout.encode()
        assert own not in envvars.stdout.encode()

    # the values are nowhere they must not be
    status = env.cli("rollout", "status")
    ls = env.cli("secret", "ls")
    assert status.returncode == 0 and ls.returncode == 0, status.stderr + ls.stderr
    assert SECRET in ls.stdout and f"host:{special.name}" in ls.stdout
    shown: dict[str, bytes] = {
        "rollout output (dry run and apply)": (dry.stdout + dry.stderr + r.stdout + r.stderr).encode(),
        "rollout status": status.stdout.encode(),
        "secret ls": ls.stdout.encode(),
        "controller journal and config dir": files_under(env.fleet.config_dir),
    }
    for h in hosts:
        assert h.agent is not None
        inspect = env.cli("-H", h.name, "inspect", container)
        events = env.cli("-H", h.name, "--format", "json", "events", "--since", "0", "--no-follow")
        audit = env.cli("-H", h.name, "audit", "--since", "0")
        for what, got in (("inspect", inspect), ("events", events), ("audit", audit)):
            assert got.returncode == 0 and got.stdout.strip(), (h.name, what, got.stderr)
        assert f"/run/secrets/{SECRET}".encode() in inspect.stdout.encode()  # the mount, not the value
        assert b"Stage" in audit.stdout.encode()  # the audit log has the rollout's calls to search
        shown |= {
            f"{h.name} inspect": inspect.stdout.encode(),
            f"{h.name} events": events.stdout.encode(),
            f"{h.name} audit": audit.stdout.encode(),
            f"{h.name} agent log": h.agent.log_path.read_bytes(),
            f"{h.name} data root (database, revisions, audit, secrets)": files_under(h.data_root),
            f"{h.name} agent config and TLS dirs": files_under(h.root / "etc") + files_under(h.root / "tls"),
        }
        stored = sorted((h.data_root / "secrets").iterdir())
        version = 2 if h is special else 1  # versions count across scopes: the host's own value came second
        assert [p.name for p in stored] == [f"{SECRET}@{version}"], (h.name, stored)
        assert all(p.stat().st_mode & 0o777 == 0o600 for p in stored)
    assert special.agent is not None  # the search does find a value where it belongs: the agent's tmpfs
    assert own in files_under(special.agent.socket.parent / "secrets")
    for where, data in shown.items():
        for value in (default, own):
            assert value not in data, f"{value!r} found in {where}"

    # delivered only where a release uses it: the fleet's other hosts got nothing
    for other in env.edge:
        if other not in hosts:
            assert not (other.data_root / "secrets").exists() or not any(
                (other.data_root / "secrets").iterdir()
            ), other.name
