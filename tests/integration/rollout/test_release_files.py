"""Bad release files through the CLI: each one clear `error:` line naming the file, line and key (or the
image), a non-zero exit, and nothing anywhere — no rollout in the journal, no release, revision, image or
event on any host."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.rollout.journal import open_journal
from tests.integration.rollout.conftest import Env

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

FLEET = {"labels": [{"site": "a"}, {"site": "b"}, {"site": "c"}], "groups": {"edge": [1, 2, 3]}}

APP = """[containers.app]
image = "{image}"
command = ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]
"""

# (case, release file ({image}: a pushed tag, {missing}: a tag the registry lacks), what the error says)
CASES = [
    (
        "unknown-key",
        'name = "b1"\n' + APP + 'memroy = "256m"\n',
        "bad.toml:5: containers.app.memroy: unknown key (did you mean memory?)",
    ),
    (
        "bad-duration",
        'name = "b2"\n' + APP + '[containers.app.health]\ncmd = ["CMD-SHELL", "true"]\ninterval = "soon"\n',
        "bad.toml:7: containers.app.health.interval:",
    ),
    (
        "no-image",
        'name = "b3"\n[containers.app]\ncommand = ["true"]\n',
        "bad.toml:2: containers.app.image: missing",
    ),
    ("image-not-in-registry", 'name = "b4"\n' + APP.replace("{image}", "{missing}"), "{missing}"),
    ("toml-syntax", 'name = "b5\n' + APP, "bad.toml:1: "),
    ("bad-name", 'name = "Web!"\n' + APP, "bad.toml:1: name: invalid release name 'Web!'"),
    ("no-containers", 'name = "b7"\n', "the release has no containers"),
    (
        "port-twice",
        'name = "b8"\n'
        + APP
        + 'ports = ["8080:80"]\n[containers.side]\nimage = "{image}"\nports = ["8080:81"]\n',
        "bad.toml:8: containers.side.ports: host port 8080/tcp of '8080:81' is also published by"
        " containers.app",
    ),
    (
        "unknown-dependency",
        'name = "b9"\n' + APP + 'depends_on = ["db"]\n',
        "containers.app.depends_on: unknown container 'db'",
    ),
    (
        "dependency-cycle",
        'name = "b10"\n'
        + APP
        + 'depends_on = ["side"]\n[containers.side]\nimage = "{image}"\ndepends_on = ["app"]\n',
        "dependency cycle app → side → app",
    ),
    (
        "reserved-label",
        'name = "b11"\n' + APP + 'labels = { "dockyard.release" = "other" }\n',
        "containers.app.labels: dockyard.release: the agent sets this label",
    ),
    (
        "bad-restart",
        'name = "b12"\n' + APP + 'restart = "sometimes"\n',
        "containers.app.restart: invalid restart policy 'sometimes'",
    ),
    ("bad-memory", 'name = "b13"\n' + APP + 'memory = "lots"\n', "bad.toml:5: containers.app.memory:"),
    (
        "container-name",
        'name = "b14"\n' + APP + 'name = "web-1"\n',
        "containers.app.name: not allowed in a release",
    ),
    (
        "wrong-type",
        'name = "b15"\n' + APP + 'read_only = "yes"\n',
        "containers.app.read_only: expected true or false, got a string",
    ),
]


def fill(text: str, values: dict[str, str]) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def snapshot(env: Env) -> dict[str, object]:
    """What every host has that a rollout could change: releases, images, release and image events."""
    return {
        h.name: (sorted(s.release for s in h.releases()), h.images(), h.events("release"), h.events("image"))
        for h in env.fleet.hosts
    }


def journal_ids(env: Env) -> list[str]:
    async def ids() -> list[str]:
        journal = open_journal(cfg_dir=env.fleet.config_dir)
        try:
            return [r.id for r in await journal.list(1000)]
        finally:
            await journal.close()

    return asyncio.run(ids())


@pytest.mark.parametrize(("case", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_release_file_is_one_clear_error_and_changes_nothing(
    env: Env, tmp_path: Path, case: str, text: str, expected: str
) -> None:
    missing = f"{env.registry}/shop/web:nope"
    values = {"image": env.images["v1"], "missing": missing}
    path = tmp_path / "bad.toml"
    path.write_text(fill(text, values))
    before = snapshot(env)
    journal_before = journal_ids(env)

    r = env.cli("-H", "@edge", "rollout", "apply", "-f", str(path), "--min-healthy", "0s")

    assert r.returncode != 0, (case, r.stdout, r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, (case, r.stderr)
    print(errors[0])
    assert fill(expected, values) in errors[0], (case, errors[0])
    assert "Traceback" not in r.stderr
    assert snapshot(env) == before
    assert journal_ids(env) == journal_before


def test_a_missing_release_file_is_one_clear_error(env: Env, tmp_path: Path) -> None:
    r = env.cli("-H", "@edge", "rollout", "apply", "-f", str(tmp_path / "nope.toml"))
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        f"error: cannot read release file {tmp_path / 'nope.toml'}: No such file or directory"
    ]
