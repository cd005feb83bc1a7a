"""Bootstrap's pure parts: the facts parser and the planner (what changes for which facts)."""

from __future__ import annotations

import dataclasses

import pytest

from controller.bootstrap import facts, plan
from controller.bootstrap.plan import Desired, Kind

FRESH = """os_id=debian
os_version=12
os_name=Debian GNU/Linux 12 (bookworm)
arch=x86_64
kernel=6.1.0
hostname=h1
python=/usr/bin/python3
python_version=3.11.2
init=none
bin_runc=/usr/sbin/runc
bin_conmon=/usr/bin/conmon
bin_nft=/usr/sbin/nft
pkg_manager=apt-get
installed=
config_sha=
unit_sha=
supervisor_sha=
ca_sha=
cert_names=
some_future_key=ignored
"""

DESIRED = Desired("d" * 64, "c" * 64, "s" * 64, "a" * 64, ("h1", "10.0.0.1"))


def converged() -> facts.Facts:
    return dataclasses.replace(
        facts.parse(FRESH),
        installed="d" * 64,
        config_sha="c" * 64,
        supervisor_sha="s" * 64,
        ca_sha="a" * 64,
        has_cert=True,
        cert_names=("10.0.0.1", "h1"),
        running=True,
    )


def test_parse_facts() -> None:
    f = facts.parse(FRESH)
    assert (f.os_id, f.arch, f.python_version, f.python_tag, f.init) == (
        "debian",
        "x86_64",
        (3, 11, 2),
        "3.11",
        "none",
    )
    assert f.missing_binaries == [] and not f.has_cert and not f.running and f.pkg_manager == "apt-get"


def test_fresh_host_gets_everything() -> None:
    p = plan.make(facts.parse(FRESH), DESIRED)
    assert p.kinds == [Kind.INSTALL_AGENT, Kind.ENROLL, Kind.WRITE_CONFIG, Kind.WRITE_SERVICE, Kind.START]
    assert not p.problems


def test_converged_host_needs_nothing() -> None:
    assert plan.make(converged(), DESIRED).steps == ()


def test_newer_build_is_only_noted_without_upgrade() -> None:
    f = dataclasses.replace(converged(), installed="e" * 64)
    p = plan.make(f, DESIRED)
    assert p.steps == () and "--upgrade" in p.notes[0]
    p = plan.make(f, dataclasses.replace(DESIRED, upgrade=True))
    assert p.kinds == [Kind.INSTALL_AGENT, Kind.RESTART]


@pytest.mark.parametrize(
    ("change", "kinds"),
    [
        ({"running": False}, [Kind.START]),
        ({"config_sha": "x"}, [Kind.WRITE_CONFIG, Kind.RESTART]),
        ({"supervisor_sha": "x"}, [Kind.WRITE_SERVICE, Kind.RESTART]),
        ({"ca_sha": "x"}, [Kind.ENROLL, Kind.RELOAD]),
        ({"cert_names": ("h1",)}, [Kind.ENROLL, Kind.RELOAD]),
        ({"init": "systemd", "unit_sha": "s" * 64}, []),
    ],
)
def test_drift_is_repaired_minimally(change: dict[str, object], kinds: list[Kind]) -> None:
    assert plan.make(dataclasses.replace(converged(), **change), DESIRED).kinds == kinds  # type: ignore[arg-type]


def test_missing_binaries_are_installed_by_the_package_manager() -> None:
    f = dataclasses.replace(facts.parse(FRESH), binaries={"runc": "", "conmon": "", "nft": "/usr/sbin/nft"})
    step = plan.make(f, DESIRED).steps[0]
    assert step.kind is Kind.INSTALL_PACKAGES and step.packages == ("runc", "conmon")


def test_missing_without_package_manager_is_a_clear_list() -> None:
    f = dataclasses.replace(
        facts.parse(FRESH), binaries={"runc": "", "conmon": "", "nft": ""}, pkg_manager=""
    )
    p = plan.make(f, DESIRED)
    assert p.steps == ()
    assert p.problems == (
        "missing: runc, conmon, nft; no supported package manager to install them "
        "(install runc, conmon, nft by hand)",
    )


def test_old_python_is_a_problem() -> None:
    p = plan.make(dataclasses.replace(facts.parse(FRESH), python_version=(3, 9, 2)), DESIRED)
    assert p.problems == ("python3 3.9.2 is too old (need >= 3.11)",)
