"""What bootstrap must change on a host, decided purely from its facts and the desired state.

An empty plan means "no changes": re-running bootstrap on a host that is already as wanted touches
nothing. Problems that bootstrap cannot fix (no usable Python, missing packages and no package
manager) are returned as one clear list instead of steps.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from controller.bootstrap.facts import Facts

MIN_PYTHON = (3, 11)

# Package that provides each binary, per package manager.
PACKAGES: dict[str, dict[str, str]] = {
    "apt-get": {"runc": "runc", "conmon": "conmon", "nft": "nftables", "python3": "python3"},
    "dnf": {"runc": "runc", "conmon": "conmon", "nft": "nftables", "python3": "python3"},
    "yum": {"runc": "runc", "conmon": "conmon", "nft": "nftables", "python3": "python3"},
    "zypper": {"runc": "runc", "conmon": "conmon", "nft": "nftables", "python3": "python3"},
    "apk": {"runc": "runc", "conmon": "conmon", "nft": "nftables", "python3": "python3"},
}


class Kind(enum.Enum):
    INSTALL_PACKAGES = "install packages"
    INSTALL_AGENT = "install agent"
    ENROLL = "enroll"
    PUSH_CRL = "push revocation list"
    WRITE_CONFIG = "write config"
    WRITE_SERVICE = "write service"
    START = "start agent"
    RESTART = "restart agent"
    RELOAD = "reload certificates"


@dataclass(frozen=True)
class Step:
    kind: Kind
    detail: str = ""
    packages: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.kind.value}" + (f" ({self.detail})" if self.detail else "")


@dataclass(frozen=True)
class Desired:
    """The state bootstrap converges a host to (content hashes, not contents, so planning stays pure)."""

    wheelhouse_digest: str
    config_sha: str
    service_sha: str
    ca_sha: str
    cert_names: tuple[str, ...]
    upgrade: bool = False
    crl_sha: str = ""  # empty: the controller has no revocation list


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def kinds(self) -> list[Kind]:
        return [s.kind for s in self.steps]


def make(facts: Facts, desired: Desired) -> Plan:
    problems: list[str] = []
    steps: list[Step] = []
    notes: list[str] = []

    missing = list(facts.missing_binaries)
    if not facts.python:
        missing.append("python3")
    elif facts.python_version < MIN_PYTHON:
        have = ".".join(map(str, facts.python_version)) or "unknown"
        problems.append(f"python3 {have} is too old (need >= {'.'.join(map(str, MIN_PYTHON))})")
    if missing:
        table = PACKAGES.get(facts.pkg_manager)
        if table is None:
            problems.append(
                f"missing: {', '.join(missing)}; no supported package manager to install them "
                f"(install {', '.join(missing)} by hand)"
            )
        else:
            pkgs = tuple(dict.fromkeys(table[m] for m in missing))
            steps.append(Step(Kind.INSTALL_PACKAGES, f"{facts.pkg_manager}: {' '.join(pkgs)}", pkgs))
    if problems:
        return Plan((), tuple(problems))

    changed_runtime = False
    if not facts.installed:
        steps.append(Step(Kind.INSTALL_AGENT, f"wheelhouse {desired.wheelhouse_digest[:12]}"))
        changed_runtime = True
    elif facts.installed != desired.wheelhouse_digest:
        if desired.upgrade:
            steps.append(
                Step(Kind.INSTALL_AGENT, f"{facts.installed[:12]} -> {desired.wheelhouse_digest[:12]}")
            )
            changed_runtime = True
        else:
            notes.append(
                f"agent build {facts.installed[:12]} installed, {desired.wheelhouse_digest[:12]} "
                "available (--upgrade to replace it)"
            )

    enroll = (
        not facts.has_cert
        or facts.ca_sha != desired.ca_sha
        or sorted(facts.cert_names) != sorted(desired.cert_names)
    )
    if enroll:
        reason = "no certificate" if not facts.has_cert else "CA or names changed"
        steps.append(Step(Kind.ENROLL, reason))
    # Enrolling with another CA drops the host's CRL (it was that CA's): send ours again.
    if desired.crl_sha and (facts.crl_sha != desired.crl_sha or facts.ca_sha != desired.ca_sha):
        steps.append(Step(Kind.PUSH_CRL))
    if facts.config_sha != desired.config_sha:
        steps.append(Step(Kind.WRITE_CONFIG))
        changed_runtime = True
    service_sha = facts.unit_sha if facts.init == "systemd" else facts.supervisor_sha
    if service_sha != desired.service_sha:
        what = "systemd unit" if facts.init == "systemd" else "supervisor script"
        steps.append(Step(Kind.WRITE_SERVICE, what))
        changed_runtime = True

    if not facts.running:
        steps.append(Step(Kind.START))
    elif changed_runtime:
        steps.append(Step(Kind.RESTART, "containers keep running"))
    elif enroll:
        steps.append(Step(Kind.RELOAD))
    return Plan(tuple(steps), (), tuple(notes))
