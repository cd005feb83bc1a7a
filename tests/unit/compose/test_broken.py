"""Broken compose files (tests/data/compose/broken): each fails with one line naming the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.compose import load
from controller.errors import ControllerError

BROKEN = Path(__file__).parents[2] / "data" / "compose" / "broken"
EXPECTED = {
    "01-unknown-key.yaml": "01-unknown-key.yaml: services.web.imagee: unknown key (did you mean image?)",
    "02-placement.yaml": "02-placement.yaml: services.web.deploy.placement: not supported by dockyard",
    "03-yaml-syntax.yaml": (
        "03-yaml-syntax.yaml:4: invalid YAML: expected <block end>, but found '<block mapping start>'"
    ),
    "04-required-variable.yaml": (
        "04-required-variable.yaml: services.web.image: required variable TAG is missing a value: "
        "set TAG to the release to run"
    ),
    "05-undefined-volume.yaml": (
        "05-undefined-volume.yaml: services.db.volumes.0: refers to undefined volume data "
        "(declare it under top-level volumes)"
    ),
    "06-unknown-dependency.yaml": (
        "06-unknown-dependency.yaml: services.web.depends_on.db: no such service: db"
    ),
    "07-dependency-cycle.yaml": (
        "07-dependency-cycle.yaml: services.a.depends_on: dependency cycle: a -> b -> a"
    ),
    "08-bad-port.yaml": "08-bad-port.yaml: services.web.ports.0: invalid port 'eighty'",
    "09-init.yaml": (
        "09-init.yaml: services.web.init: not supported by dockyard "
        "(the agent runs no init process; leave init out or set it to false)"
    ),
    "10-duplicate-key.yaml": "10-duplicate-key.yaml:4: invalid YAML: mapping key 'image' already defined",
    "11-wrong-type.yaml": "11-wrong-type.yaml: services.web.restart: must be string, not a list",
    "12-no-image.yaml": "12-no-image.yaml: services.web: has neither an image nor a build context",
    "13-bad-memory.yaml": (
        "13-bad-memory.yaml: services.web.mem_limit: invalid value '12q': expected a size such as 512m or 1g"
    ),
    "14-network-mode.yaml": "14-network-mode.yaml: services.web.network_mode: not supported by dockyard",
    "15-bad-condition.yaml": (
        "15-bad-condition.yaml: services.web.depends_on.db.condition: 'service_ready' is not one of "
        "['service_started', 'service_healthy', 'service_completed_successfully']"
    ),
}


def test_every_broken_file_has_its_expected_error() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in BROKEN.glob("*.yaml"))
    assert len(EXPECTED) >= 10


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_fails_with_one_clear_line(name: str) -> None:
    with pytest.raises(ControllerError) as info:
        load.load(load.Options(files=(name,), cwd=BROKEN, environ={}))
    assert str(info.value) == EXPECTED[name]
    assert "\n" not in str(info.value)


def test_the_cli_prints_the_line_and_fails(tmp_path: Path) -> None:
    import contextlib
    import io
    import os

    from controller import cli

    err = io.StringIO()
    cwd = os.getcwd()
    os.chdir(BROKEN)
    try:
        with contextlib.redirect_stderr(err):
            code = cli.run(["compose", "-f", "02-placement.yaml", "config"])
    finally:
        os.chdir(cwd)
    assert code == 1
    assert err.getvalue() == f"error: {EXPECTED['02-placement.yaml']}\n"
