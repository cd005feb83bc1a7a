"""Real `dockyard-agent` processes and the `dockyard` CLI for tests.

`FleetPki` makes a controller config dir with a fleet CA and a client certificate (via `dockyard pki`
functions); `AgentProcess` runs the agent as a separate process with its own data root, unix socket and an
mTLS listener on 127.0.0.1 (port chosen by the kernel, read back from the agent's `agent.started` log line);
`run_cli` runs the `dockyard` CLI as a subprocess. Readiness is polled with a deadline; teardown is
SIGTERM → wait → SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import pki

SLOT_DIR = Path("/run/dockyard-test-slots")
SLOTS = 64


class NetworkSlot:
    """A test agent's private default network (bridge, subnet, pool, nft table), unique machine-wide.

    Agents alive at the same time — in one test, or in test runs of several engineers — must not share a
    bridge or an nftables table. A slot is an flock on /run/dockyard-test-slots/N held while the
    AgentProcess lives; the kernel releases it if the test process dies.
    """

    def __init__(self) -> None:
        SLOT_DIR.mkdir(parents=True, exist_ok=True)
        for n in range(SLOTS):
            f = (SLOT_DIR / str(n)).open("a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.number, self._file = n, f
            return
        raise RuntimeError(f"all {SLOTS} test network slots are taken")

    def config(self) -> dict[str, str]:
        n = self.number
        return {
            "network_bridge": f"dyt{n}br",
            "network_subnet": f"10.240.{n}.0/24",
            "network_pool": f"10.241.{4 * n}.0/22",
            "network_name_prefix": f"t{n:02d}",
            "network_nft_table": f"dyt{n}",
        }

    def release(self) -> None:
        sweep_slot(self.number)
        self._file.close()


def sweep_slot(n: int) -> None:
    """Delete what an agent of slot `n` may have left in the kernel: its links and its nft table."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=False).stdout
    for line in links.splitlines():
        name = line.split(":", 2)[1].strip().split("@", 1)[0]
        if name == f"dyt{n}br" or name.startswith(f"t{n:02d}"):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    subprocess.run(["nft", "delete", "table", "inet", f"dyt{n}"], capture_output=True, check=False)


def sweep_unheld_slots() -> None:
    """At the end of a run: sweep every slot no live test process holds (crashed runs leave these)."""
    if not SLOT_DIR.exists():
        return
    for n in range(SLOTS):
        with (SLOT_DIR / str(n)).open("a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            sweep_slot(n)


def _toml_value(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def config_text(values: dict[str, Any]) -> str:
    """An agent config file of top-level keys (JSON strings and numbers are valid TOML values)."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())


BIN = Path(sys.executable).parent
AGENT_BIN = str(BIN / "dockyard-agent")
CLI_BIN = str(BIN / "dockyard")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `predicate` until it returns a truthy value; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class FleetPki:
    """A controller config dir holding the fleet CA and the controller's client certificate."""

    config_dir: Path

    @classmethod
    def create(cls, root: Path) -> FleetPki:
        config_dir = root / "controller"
        pki.init(config_dir)
        return cls(config_dir)

    def agent_tls(
        self, dest: Path, name: str = "agent", sans: Sequence[str] = ("127.0.0.1",), days: int = 30
    ) -> Path:
        pki.issue_agent(self.config_dir, name, list(sans), dest, days=days)
        return dest


@dataclass
class AgentProcess:
    """One agent process under test."""

    root: Path
    tls_dir: Path | None = None
    listen: str | None = "127.0.0.1:0"
    extra_args: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def socket(self) -> Path:
        return self.root / "run" / "agent.sock"

    @property
    def data_root(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "agent.log"

    @property
    def unix_target(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tcp_target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def args(self) -> list[str]:
        args = [
            AGENT_BIN,
            "--socket",
            str(self.socket),
            "--data-root",
            str(self.data_root),
            "--log-level",
            "debug",
        ]
        if self.listen and self.tls_dir:
            args += ["--listen", self.listen, "--tls-dir", str(self.tls_dir)]
        return args + list(self.extra_args)

    def _isolate_network(self) -> None:
        """Give the agent its own network slot unless its config file already names its network."""
        if getattr(self, "_slot", None) is None:
            self._slot: NetworkSlot | None = NetworkSlot()
        assert self._slot is not None
        args = list(self.extra_args)
        if "--config" in args:
            cfg = Path(args[args.index("--config") + 1])
            text = cfg.read_text() if cfg.exists() else ""
        else:
            cfg = self.root / "agent-test.toml"
            text = ""
            args += ["--config", str(cfg)]
        keys = self._slot.config()
        lines = [f"{k} = {_toml_value(v)}" for k, v in keys.items() if not _has_key(text, k)]
        if lines:
            # top-level keys must precede any [table] header
            cfg.write_text("\n".join(lines) + "\n" + text)
        self.extra_args = args

    def start(self, timeout: float = 20.0) -> AgentProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        self._isolate_network()
        log = self.log_path.open("ab")
        self._log_offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            self.args(), stdout=log, stderr=log, env={**os.environ, **self.env}, start_new_session=True
        )
        log.close()
        started = wait_for(self._started_event, timeout, f"agent {self.root} to start")
        if self.listen and self.tls_dir:
            self.port = int(next(iter(started["listen"].values())))
        return self

    def _started_event(self) -> dict[str, Any] | None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log_text()}")
        for event in self.events():
            if event.get("event") == "agent.started" and event.get("pid") == self.proc.pid:
                return event
        return None

    def events(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return found

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def release(self) -> None:
        slot = getattr(self, "_slot", None)
        if slot is not None:
            slot.release()
            self._slot = None

    def kill(self) -> None:
        """SIGKILL without any chance to clean up (crash simulation)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _has_key(toml_text: str, key: str) -> bool:
    return any(line.split("=", 1)[0].strip() == key for line in toml_text.splitlines() if "=" in line)


def run_cli(
    config_dir: Path,
    *args: str,
    host: str | None = None,
    input: bytes | None = None,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `dockyard [-H host] ARGS` with the given controller config dir; never raises on failure."""
    cmd = [CLI_BIN]
    if host:
        cmd += ["-H", host]
    cmd += list(args)
    full_env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(config_dir), "COLUMNS": "200", **(env or {})}
    full_env.pop("DOCKYARD_HOST", None)
    return subprocess.run(
        cmd,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
