"""Real containers (runc + conmon through a real dockyard-agent) on bridge networks.

A busybox image is imported from /bin/busybox; servers are busybox httpd, clients busybox wget. Traffic
only goes to addresses these tests create inside 10.232.0.0/16 (and to 127.0.0.1).
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.integration.network.conftest import (
    Cli,
    Lab,
    bridge_ports,
    fetch_host,
    ok,
    sh,
    table_rules,
    wait_until,
)
from tests.support.agent import AgentProcess
from tests.support.images import busybox_rootfs_tar

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(
        shutil.which("runc") is None or shutil.which("conmon") is None, reason="needs runc+conmon"
    ),
]

IMAGE = "busybox:net"


def serve(tag: str) -> list[str]:
    """Arguments for `run -d`: busybox httpd on port 80 answering `tag`."""
    return [IMAGE, "sh", "-c", f"echo {tag} > /tmp/index.html && exec httpd -f -p 80 -h /tmp"]


@pytest.fixture
def image(dy: Cli, tmp_path: Path) -> str:
    ok(dy("import", str(busybox_rootfs_tar(tmp_path / "busybox.tar")), IMAGE))
    return IMAGE


def inspect_network(dy: Cli, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = json.loads(ok(dy("network", "inspect", name)))
    return found[0]


def address_of(dy: Cli, network: str, container: str) -> str:
    for ep in inspect_network(dy, network)["endpoints"]:
        if container in (ep["container_name"], ep["container_id"]):
            return str(ep["address"]).split("/")[0]
    raise AssertionError(f"{container} is not on {network}")


def wget(dy: Cli, network: str, url: str) -> str | None:
    """Fetch from a fresh container on `network`; None when it fails."""
    # `timeout` must not make wget PID 1 (which ignores SIGTERM): a shell with a second command stays PID 1.
    script = f"timeout 3 wget -q -O - {url}; exit $?"
    done = dy("run", "--rm", "--network", network, IMAGE, "sh", "-c", script, timeout=30)
    return done.stdout if done.returncode == 0 else None


def test_containers_resolve_each_other_by_name_and_networks_are_isolated(
    lab: Lab, dy: Cli, image: str
) -> None:
    ok(dy("network", "create", "front"))
    ok(dy("network", "create", "back"))
    ok(dy("run", "-d", "--name", "web", "--network", "front", "--network-alias", "www", *serve("web")))
    web_ip = address_of(dy, "front", "web")
    wait_until(lambda: fetch_host(f"http://{web_ip}/") == "web\n", 10, "web to serve")

    assert wget(dy, "front", "http://web/") == "web\n"
    assert wget(dy, "front", "http://www/") == "web\n"
    assert wget(dy, "back", "http://web/") is None  # no name
    assert wget(dy, "back", f"http://{web_ip}/") is None  # and no route
    assert wget(dy, "bridge", f"http://{web_ip}/") is None
    # nc (another getaddrinfo user) by name, from a container that stays up
    ok(dy("run", "-d", "--name", "peer", "--network", "front", IMAGE, "sleep", "300"))
    got = ok(dy("exec", "peer", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 80"))
    assert got.endswith("web\n")

    refused = dy("network", "rm", "front")
    assert refused.returncode != 0 and "attached" in refused.stderr
    ok(dy("rm", "-f", "web", "peer"))
    ok(dy("network", "rm", "front", "back"))


def test_published_ports_from_host_gateway_and_another_host(lab: Lab, dy: Cli, image: str) -> None:
    remote, host_side, _ = lab.test_host("remote", 0)
    ok(dy("run", "-d", "--name", "pub", "-p", "80", "-p", "127.0.0.1::80", *serve("pub")))
    ports = ok(dy("port", "pub")).splitlines()
    assert len(ports) == 2 and all(line.startswith("80/tcp -> ") for line in ports)
    any_port = int(ok(dy("port", "pub", "80/tcp")).splitlines()[0].rsplit(":", 1)[1])
    local_port = int(ports[1].rsplit(":", 1)[1])
    gateway = inspect_network(dy, "bridge")["gateway"]

    wait_until(lambda: fetch_host(f"http://127.0.0.1:{any_port}/") == "pub\n", 10, "published port")
    assert fetch_host(f"http://{gateway}:{any_port}/") == "pub\n"
    assert fetch_host(f"http://127.0.0.1:{local_port}/") == "pub\n"
    assert remote.fetch(f"http://{host_side.ip}:{any_port}/") == "pub\n"
    assert remote.fetch(f"http://{host_side.ip}:{local_port}/", timeout=1.5) is None
    ps = json.loads(ok(dy("--format", "json", "ps")))
    assert f"0.0.0.0:{any_port}->80/tcp" in ps[0]["ports"]

    clash = dy("run", "-d", "-p", f"{any_port}:80", *serve("clash"))
    assert clash.returncode != 0 and "already in use" in clash.stderr
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        taken = dy("run", "-d", "-p", f"{busy}:80", *serve("taken"))
        assert taken.returncode != 0 and "already in use" in taken.stderr
    ok(dy("rm", "-f", "pub"))
    assert fetch_host(f"http://127.0.0.1:{any_port}/", timeout=2) is None


def test_egress_is_masqueraded_to_the_host_address(lab: Lab, dy: Cli, image: str) -> None:
    upstream, host_side, upstream_side = lab.test_host("up", 1)
    upstream.serve_http(lab.www(upstream), "upstream")
    seen = wget(dy, "bridge", f"http://{upstream_side.ip}/cgi-bin/whoami")
    assert seen == f"upstream {host_side.ip}\n"
    ok(dy("network", "create", "--internal", "sealed"))
    assert wget(dy, "sealed", f"http://{upstream_side.ip}/") is None


async def test_run_rm_cycles_leave_no_veth_rule_or_lease(lab: Lab, dy: Cli, image: str) -> None:
    ok(dy("network", "create", "cyc"))
    for i in range(10):
        network = "cyc" if i % 2 else "bridge"
        ok(dy("run", "--rm", "--network", network, "-p", "80", IMAGE, "true", timeout=30))
    for name in ("bridge", "cyc"):
        net = inspect_network(dy, name)
        assert net["endpoints"] == [] and net["containers"] == 0
        bridge = str(net["bridge"])
        wait_until(lambda b=bridge: bridge_ports(b) == [], 5, f"veths on {name} to go")  # type: ignore[misc]
    assert not [r for r in await table_rules(lab.table) if "comment" in r]
    leases = sh("sqlite3", str(lab.databases[0]), "SELECT COUNT(*) FROM network_leases").stdout.strip()
    assert leases == "0"


def test_agent_sigkill_and_restart_keep_addresses_and_ports(
    lab: Lab, dy: Cli, image: str, net_agent: AgentProcess
) -> None:
    ok(dy("network", "create", "keep"))
    ok(dy("run", "-d", "--name", "kept", "--network", "keep", "-p", "80", *serve("kept")))
    port = ok(dy("port", "kept", "80")).strip()
    address = address_of(dy, "keep", "kept")
    host_port = int(port.rsplit(":", 1)[1])
    wait_until(lambda: fetch_host(f"http://127.0.0.1:{host_port}/") == "kept\n", 10, "published port")

    net_agent.kill()
    assert fetch_host(f"http://127.0.0.1:{host_port}/") == "kept\n"  # kernel rules outlive the agent
    net_agent.start()
    assert fetch_host(f"http://127.0.0.1:{host_port}/") == "kept\n"
    assert ok(dy("port", "kept", "80")).strip() == port
    assert address_of(dy, "keep", "kept") == address
    assert wget(dy, "keep", "http://kept/") == "kept\n"
    ok(dy("run", "-d", "--name", "fresh", "--network", "keep", IMAGE, "sleep", "300"))
    assert address_of(dy, "keep", "fresh") != address
    with socket.socket() as probe, pytest.raises(OSError):
        probe.bind(("0.0.0.0", host_port))  # the restarted agent holds the port again
    ok(dy("rm", "-f", "kept", "fresh"))


def test_sidecar_shares_the_other_containers_namespace_and_files(lab: Lab, dy: Cli, image: str) -> None:
    ok(dy("network", "create", "pod"))
    ok(dy("run", "-d", "--name", "main", "--network", "pod", IMAGE, "sh", "-c",
          "echo main > /tmp/index.html && exec httpd -f -p 127.0.0.1:80 -h /tmp"))  # fmt: skip
    main_ip = address_of(dy, "pod", "main")
    script = "wget -q -O - http://127.0.0.1/ && ip -4 -o addr show eth0 && grep -c main /etc/hosts"
    out = ok(dy("run", "--rm", "--network", "container:main", IMAGE, "sh", "-c", script, timeout=30))
    lines = out.splitlines()
    assert lines[0] == "main" and f"inet {main_ip}/" in lines[1] and int(lines[2]) >= 1
    assert [e["container_name"] for e in inspect_network(dy, "pod")["endpoints"]] == ["main"]


def test_connect_and_disconnect_a_running_container(lab: Lab, dy: Cli, image: str) -> None:
    ok(dy("network", "create", "one"))
    ok(dy("network", "create", "two"))
    ok(dy("run", "-d", "--name", "srv", "--network", "two", *serve("srv")))
    ok(dy("run", "-d", "--name", "cli", "--network", "one", IMAGE, "sleep", "300"))
    fetch = ["exec", "cli", "sh", "-c", "timeout 3 wget -q -O - http://srv/; exit $?"]
    assert dy(*fetch).returncode != 0

    ok(dy("network", "connect", "--alias", "client2", "two", "cli"))
    assert "eth1" in ok(dy("exec", "cli", "ip", "-4", "-o", "addr"))
    wait_until(lambda: dy(*fetch).stdout == "srv\n", 10, "srv to answer cli over the second network")
    assert "client2" in ok(dy("exec", "srv", "cat", "/etc/hosts"))  # the other member learnt the new name
    again = dy("network", "connect", "two", "cli")
    assert again.returncode != 0 and "already connected" in again.stderr

    ok(dy("network", "disconnect", "two", "cli"))
    assert "eth1" not in ok(dy("exec", "cli", "ip", "-4", "-o", "addr"))
    assert "client2" not in ok(dy("exec", "srv", "cat", "/etc/hosts"))
    assert dy(*fetch).returncode != 0
    ok(dy("rm", "-f", "srv", "cli"))
