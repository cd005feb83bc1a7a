"""Fixtures shared by every area: a fleet PKI, real agent processes, and the CLI against them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli, sweep_unheld_slots
from tests.support.warm import stop_servers


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


def _failed(request: pytest.FixtureRequest) -> bool:
    return any(
        getattr(request.node, f"rep_{w}", None) and getattr(request.node, f"rep_{w}").failed
        for w in ("setup", "call")
    )


@pytest.fixture(scope="session", autouse=True)
def _sweep_test_networks() -> Iterator[None]:
    """Test agents' bridges and nft tables are removed even when an agent or a test process died."""
    yield
    sweep_unheld_slots()


@pytest.fixture(scope="session", autouse=True)
def _warm_cli_servers() -> Iterator[None]:
    """The CLI's warm servers of this run live in a private runtime dir and are stopped at the end."""
    runtime_dir = Path(tempfile.mkdtemp(prefix="dyw-"))
    previous = os.environ.get("DOCKYARD_RUNTIME_DIR")
    os.environ["DOCKYARD_RUNTIME_DIR"] = str(runtime_dir)
    yield
    stop_servers(runtime_dir)
    shutil.rmtree(runtime_dir, ignore_errors=True)
    if previous is None:
        os.environ.pop("DOCKYARD_RUNTIME_DIR", None)
    else:
        os.environ["DOCKYARD_RUNTIME_DIR"] = previous


@pytest.fixture
def fleet_pki(tmp_path: Path) -> FleetPki:
    return FleetPki.create(tmp_path)


@pytest.fixture
def agent_factory(
    tmp_path: Path, fleet_pki: FleetPki, request: pytest.FixtureRequest
) -> Iterator[Callable[..., AgentProcess]]:
    """Start real agents: `agent_factory(name="a1", extra_args=[...])`; all stopped at teardown."""
    started: list[AgentProcess] = []

    def make(name: str = "agent", *, tls: bool = True, start: bool = True, **kwargs: Any) -> AgentProcess:
        root = tmp_path / name
        tls_dir = fleet_pki.agent_tls(root / "tls", name=name) if tls else None
        agent = AgentProcess(root=root, tls_dir=tls_dir, **kwargs)
        started.append(agent)
        return agent.start() if start else agent

    yield make
    for agent in started:
        agent.stop()
        agent.release()
        if _failed(request):
            print(f"\n----- agent log {agent.root} -----\n{agent.log_text()[-20000:]}")


@pytest.fixture
def agent(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    return agent_factory()


@pytest.fixture
def cli(fleet_pki: FleetPki, agent: AgentProcess) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`cli("ps", "-a")` runs the CLI against the default test agent over its unix socket."""

    def run(*args: str, host: str | None = None, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return run_cli(fleet_pki.config_dir, *args, host=host or agent.unix_target, **kwargs)

    return run


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="needs root")
        for item in items:
            if "root" in item.keywords:
                item.add_marker(skip)
