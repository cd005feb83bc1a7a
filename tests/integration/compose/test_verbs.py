"""The compose verbs on a real agent: the supported keys reaching the container, depends_on conditions
(and their failures), attached `up` until Ctrl-C, logs, exec, run --rm, stop/start/restart, images, ps,
build, and down with --rmi; verbs that find containers by label with only `-p NAME`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.compose.conftest import IMAGE, Yard
from tests.support.agent import CLI_BIN, wait_for

pytestmark = pytest.mark.root

KEYS = f"""
name: keys
services:
  app:
    image: {IMAGE}
    entrypoint: ["sh", "-c"]
    command: ["echo started; exec sleep 1000"]
    environment:
      GREETING: hello ${{WHO:-world}}
    env_file: app.env
    ports: ["8080"]
    volumes:
      - data:/data
      - ./conf:/conf:ro
      - type: tmpfs
        target: /scratch
    tmpfs: /tmp
    restart: on-failure:2
    labels: {{team: shop}}
    user: "65534:65534"
    working_dir: /data
    hostname: apphost
    stop_signal: SIGTERM
    stop_grace_period: 3s
    read_only: true
    cap_drop: [ALL]
    ulimits:
      nofile: {{soft: 512, hard: 1024}}
    mem_limit: 64m
    cpus: 0.5
    deploy:
      resources:
        limits: {{pids: 50}}
    healthcheck:
      test: ["CMD", "test", "-d", "/data"]
      interval: 1s
volumes:
  data:
"""


def project_dir(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "proj"
    d.mkdir()
    (d / "compose.yaml").write_text(text)
    return d


def inspect(yard: Yard, name: str) -> dict[str, Any]:
    data: list[dict[str, Any]] = json.loads(yard.ok("inspect", name).stdout)
    return data[0]


def test_supported_keys_reach_the_container(yard: Yard, tmp_path: Path) -> None:
    d = project_dir(tmp_path, KEYS)
    (d / "conf").mkdir()
    (d / "conf" / "x").write_text("conf\n")
    (d / "app.env").write_text("FROM_FILE=yes\n")
    env: dict[str, str] = {}
    try:
        yard.ok("compose", "up", "-d", cwd=d, env=env)
        c = inspect(yard, "keys-app-1")
        assert c["hostname"] == "apphost"
        assert c["restart_policy"] == "on-failure:2"
        assert c["labels"]["team"] == "shop" and c["labels"]["com.docker.compose.service"] == "app"
        mounts = {m["destination"]: m for m in c["mounts"]}
        assert mounts["/data"]["type"] == "volume"
        assert mounts["/conf"]["read_only"] and mounts["/scratch"]["type"] == "tmpfs"

        def sh(script: str) -> str:
            return yard.ok("compose", "exec", "app", "sh", "-c", script, cwd=d, env=env).stdout

        assert sh("echo $GREETING $FROM_FILE") == "hello world yes\n"
        assert sh("id -u; pwd; hostname") == "65534\n/data\napphost\n"
        assert sh("cat /conf/x") == "conf\n"
        assert sh("touch /nope 2>&1 || echo read-only").endswith("read-only\n")
        assert sh("touch /tmp/ok /scratch/ok && echo writable") == "writable\n"
        assert sh("grep 'open files' /proc/1/limits").split()[3:5] == ["512", "1024"]  # the service's process
        resources = c["oci_spec"]["linux"]["resources"]
        assert resources["memory"]["limit"] == 64 << 20
        assert (resources["cpu"]["quota"], resources["cpu"]["period"]) == (50000, 100000)
        assert resources["pids"]["limit"] == 50
        assert c["config"]["stop_timeout"] == 3 and c["config"]["stop_signal"] == "SIGTERM"
        assert sh("grep CapEff /proc/self/status").split() == ["CapEff:", "0000000000000000"]
        wait_for(lambda: inspect(yard, "keys-app-1")["health"] == "healthy", 30, "app to be healthy")
        logs = yard.ok("compose", "logs", cwd=d, env=env).stdout
        assert logs == "app-1 | started\n"
    finally:
        yard.cli("compose", "down", "-v", cwd=d, env=env)
    assert yard.project_objects("keys") == {"containers": [], "networks": [], "volumes": []}


CONDITIONS = f"""
name: cond
services:
  db:
    image: {IMAGE}
    healthcheck:
      test: ["CMD-SHELL", "${{DB_CHECK:-true}}"]
      interval: 1s
      retries: 1
  migrate:
    image: {IMAGE}
    entrypoint: ["sh", "-c", "exit ${{MIGRATE_EXIT:-0}}"]
  web:
    image: {IMAGE}
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
"""


def test_depends_on_conditions_and_their_failures(yard: Yard, tmp_path: Path) -> None:
    d = project_dir(tmp_path, CONDITIONS)
    try:
        up = yard.ok("compose", "up", "-d", cwd=d)
        order = [line.split()[1] for line in up.stderr.splitlines() if line.strip().startswith("Container")]
        assert order.index("cond-web-1") > max(order.index("cond-db-1"), order.index("cond-migrate-1"))
        rows = {r["service"]: r for r in yard.json("compose", "ps", "-a", cwd=d)}
        assert rows["db"]["health"] == "healthy" and rows["web"]["status"] == "running"
        assert (rows["migrate"]["status"], rows["migrate"]["exit_code"]) == ("exited", 0)
        yard.ok("compose", "down", cwd=d)

        failed = yard.cli("compose", "up", "-d", cwd=d, env={"MIGRATE_EXIT": "3"})
        assert failed.returncode == 1
        assert (
            failed.stderr.strip().splitlines()[-1]
            == "error: service migrate didn't complete successfully: exit 3"
        )
        yard.ok("compose", "down", cwd=d)

        failed = yard.cli("compose", "up", "-d", cwd=d, env={"DB_CHECK": "false"})
        assert failed.returncode == 1
        assert failed.stderr.strip().splitlines()[-1] == (
            "error: dependency failed to start: container cond-db-1 is unhealthy"
        )
        assert "cond-web-1" not in {r["name"] for r in yard.json("compose", "ps", "-a", cwd=d)}
    finally:
        yard.cli("compose", "down", "-v", cwd=d)


ATTACHED = f"""
name: att
services:
  talk:
    image: {IMAGE}
    entrypoint: ["sh", "-c", "trap 'echo bye; exit 0' TERM; echo hello; while :; do sleep 0.2; done"]
  quiet:
    image: {IMAGE}
"""


def test_attached_up_streams_logs_and_ctrl_c_stops(yard: Yard, tmp_path: Path) -> None:
    d = project_dir(tmp_path, ATTACHED)
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}
    env.pop("DOCKYARD_HOST", None)
    proc = subprocess.Popen(
        [CLI_BIN, "-H", yard.host, "compose", "up"],
        cwd=d,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        seen = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            seen.append(line)
            if line == "talk-1  | hello\n":
                break
        assert seen[-1] == "talk-1  | hello\n", seen
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "talk-1  | bye" in out.decode()
        assert "Gracefully stopping" in err.decode()
        rows = {r["service"]: r["status"] for r in yard.json("compose", "ps", "-a", cwd=d)}
        assert rows == {"talk": "exited", "quiet": "exited"}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        yard.cli("compose", "down", cwd=d)


VERBS = f"""
name: verbs
services:
  web:
    image: {IMAGE}
  tool:
    build:
      context: ./tool
      args: {{MESSAGE: built}}
    entrypoint: ["sh", "-c"]
    command: ["cat /message; sleep 1000"]
    depends_on: [web]
"""
DOCKERFILE = f"""FROM {IMAGE}
ARG MESSAGE
RUN echo "$MESSAGE" > /message
"""


def test_verbs(yard: Yard, tmp_path: Path) -> None:
    d = project_dir(tmp_path, VERBS)
    (d / "tool").mkdir()
    (d / "tool" / "Dockerfile").write_text(DOCKERFILE)
    try:
        yard.ok("compose", "build", cwd=d)
        assert yard.ok("compose", "run", "--rm", "tool", "cat /message", cwd=d).stdout == "built\n"
        # run started the dependency, and removed its one-off container
        names = {r["name"] for r in yard.json("compose", "ps", "-a", cwd=d)}
        assert names == {"verbs-web-1"}
        up = yard.ok("compose", "up", "-d", cwd=d)
        assert "verbs-web-1  Running" in up.stderr
        assert yard.cli("compose", "exec", "web", "sh", "-c", "exit 7", cwd=d).returncode == 7
        assert yard.ok("compose", "logs", "tool", cwd=d).stdout == "tool-1 | built\n"
        ids = yard.ok("compose", "ps", "-q", cwd=d).stdout.split()
        assert len(ids) == 2

        images = yard.ok("compose", "images", cwd=d).stdout
        assert "verbs-tool" in images and "dyc/app" in images

        stopped = yard.ok("compose", "stop", cwd=d)
        assert "verbs-tool-1  Stopped" in stopped.stderr and "verbs-web-1  Stopped" in stopped.stderr
        assert stopped.stderr.index("verbs-tool-1") < stopped.stderr.index("verbs-web-1")  # dependents first
        # by label only, without the file
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        assert yard.ok("compose", "-p", "verbs", "ps", cwd=elsewhere).stdout.count("verbs-") == 0
        rows = yard.json("compose", "-p", "verbs", "ps", "-a", cwd=elsewhere)
        assert sorted((r["name"], r["status"]) for r in rows) == [
            ("verbs-tool-1", "exited"),
            ("verbs-web-1", "exited"),
        ]
        started = yard.ok("compose", "start", cwd=d)
        assert started.stderr.index("verbs-web-1") < started.stderr.index(
            "verbs-tool-1"
        )  # dependencies first
        yard.ok("compose", "restart", "web", cwd=d)
        assert {r["status"] for r in yard.json("compose", "ps", cwd=d)} == {"running"}

        never = yard.cli("compose", "up", "-d", "--pull", "never", "--force-recreate", cwd=d)
        assert never.returncode == 0, never.stderr
        assert never.stderr.count("Recreated") == 2
    finally:
        down = yard.cli("compose", "down", "-v", "--rmi", "local", cwd=d)
    assert down.returncode == 0, down.stderr
    assert "Image verbs-tool  Removed" in down.stderr
    assert yard.cli("image", "inspect", "verbs-tool").returncode != 0
    assert yard.cli("image", "inspect", IMAGE).returncode == 0
