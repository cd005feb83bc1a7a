"""Every container command through the real CLI against a real agent (runc + conmon)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.integration.containers.conftest import IMAGE, Yard, leftovers
from tests.support.agent import CLI_BIN, wait_for

pytestmark = pytest.mark.root
PAD = "x" * 32


def test_attached_run_streams_both_streams_and_exits_with_the_code(yard: Yard) -> None:
    done = yard.cli("run", "--rm", IMAGE, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert done.returncode == 3
    assert done.stdout == "out\n"
    assert done.stderr == "err\n"


def test_detached_lifecycle_ps_stop_start_restart_wait_rm(yard: Yard) -> None:
    cid = yard.ok("run", "-d", "--name", "life", "-l", "team=blue", IMAGE, "sleep", "300").strip()
    assert len(cid) == 64
    try:
        ps = yard.ok("ps")
        assert cid[:12] in ps and "life" in ps and "Up " in ps
        assert yard.ok("ps", "-q").split() == [cid[:12]] or cid[:12] in yard.ok("ps", "-q").split()
        assert cid[:12] in yard.ok("ps", "-q", "--filter", "label=team=blue")
        assert cid[:12] not in yard.ok("ps", "-q", "--filter", "label=team=red")
        listed = json.loads(yard.ok("--format", "json", "ps"))
        assert any(c["id"] == cid and c["status"] == "running" for c in listed)
        # sleep as PID 1 ignores SIGTERM: stop waits out the timeout, then SIGKILL (as in Docker)
        started = time.monotonic()
        yard.ok("stop", "-t", "1", "life")
        assert time.monotonic() - started >= 1
        info = yard.inspect(cid[:8])
        assert info["status"] == "exited" and info["exit_code"] == 137
        assert "Exited (137)" in yard.ok("ps", "-a", "--filter", "name=life")
        assert "life" not in yard.ok("ps")
        assert yard.ok("wait", "life").strip() == "137"
        yard.ok("start", "life")
        assert yard.status("life") == "running"
        pid_before = yard.inspect("life")["pid"]
        yard.ok("restart", "-t", "0", "life")
        after = yard.inspect("life")
        assert after["status"] == "running" and after["pid"] != pid_before
        refused = yard.cli("rm", "life")
        assert refused.returncode == 1 and "stop it first" in refused.stderr
    finally:
        yard.ok("rm", "-f", "life")
    assert "life" not in yard.ok("ps", "-a")
    assert cid not in leftovers(yard)["dirs"]


def test_create_then_start_attached(yard: Yard) -> None:
    cid = yard.ok("create", "--name", "later", IMAGE, "sh", "-c", "echo from-create; exit 4").strip()
    try:
        assert yard.status(cid) == "created"
        done = yard.cli("start", "-a", "later")
        assert done.returncode == 4
        assert done.stdout == "from-create\n"
        assert yard.status(cid) == "exited"
    finally:
        yard.ok("rm", "-f", cid)


def test_kill_signals(yard: Yard) -> None:
    script = "trap 'echo got-usr1' USR1; trap 'echo got-term; exit 5' TERM; while true; do sleep 0.1; done"
    yard.ok("run", "-d", "--name", "sig", IMAGE, "sh", "-c", script)
    try:
        bad = yard.cli("kill", "-s", "SIGBOGUS", "sig")
        assert bad.returncode == 1 and "invalid signal" in bad.stderr
        yard.ok("kill", "-s", "USR1", "sig")
        wait_for(lambda: "got-usr1" in yard.ok("logs", "sig"), 10, "USR1 handled")
        yard.ok("kill", "-s", "TERM", "sig")
        assert yard.ok("wait", "sig").strip() == "5"
        not_running = yard.cli("kill", "sig")
        assert not_running.returncode == 1 and "not running" in not_running.stderr
    finally:
        yard.ok("rm", "-f", "sig")


def test_exec_exit_codes_env_user_workdir(yard: Yard) -> None:
    yard.ok("run", "-d", "--name", "ex", "-e", "BASE=1", IMAGE, "sleep", "300")
    try:
        assert yard.cli("exec", "ex", "sh", "-c", "exit 7").returncode == 7
        assert yard.cli("exec", "ex", "true").returncode == 0
        out = yard.ok(
            "exec",
            "-e",
            "FOO=bar",
            "-u",
            "nobody",
            "-w",
            "/tmp",
            "ex",
            "sh",
            "-c",
            'echo "$FOO $BASE"; id -u; pwd',
        )
        assert out.split() == ["bar", "1", "65534", "/tmp"]
        missing = yard.cli("exec", "ex", "no-such-binary")
        assert missing.returncode == 127
        piped = yard.cli("exec", "-i", "ex", "sh", "-c", "tr a-z A-Z", input=b"hello\n")
        assert piped.stdout == "HELLO\n"
        yard.ok("stop", "-t", "0", "ex")
        stopped = yard.cli("exec", "ex", "true")
        assert stopped.returncode != 0 and "not running" in stopped.stderr
    finally:
        yard.ok("rm", "-f", "ex")


def test_logs_tail_timestamps_since_and_follow(yard: Yard) -> None:
    yard.ok(
        "run",
        "-d",
        "--name",
        "talker",
        IMAGE,
        "sh",
        "-c",
        "for i in 1 2 3; do echo line$i; done; echo oops >&2; sleep 300",
    )
    follower: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: "oops" in yard.cli("logs", "talker").stderr, 10, "first output")
        done = yard.cli("logs", "talker")
        assert done.stdout == "line1\nline2\nline3\n" and done.stderr == "oops\n"
        assert yard.ok("logs", "--tail", "2", "talker").splitlines() == ["line3"]  # oops went to stderr
        stamped = yard.ok("logs", "-t", "--tail", "2", "talker").split()
        assert stamped[1] == "line3" and stamped[0].endswith("Z") and "T" in stamped[0]
        assert yard.ok("logs", "--since", "1m", "talker").startswith("line1")
        assert yard.ok("logs", "--until", "2000-01-01T00:00:00Z", "talker") == ""
        env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}
        follower = subprocess.Popen(
            [CLI_BIN, "-H", yard.host, "logs", "-f", "--tail", "0", "talker"],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        assert follower.stdout is not None
        # the follower needs a moment to connect: write until a line comes through (lines written before
        # it connected are not part of `--tail 0 -f`)
        deadline = time.monotonic() + 20
        ready: list[object] = []
        while not ready and time.monotonic() < deadline:
            yard.ok("exec", "talker", "sh", "-c", "echo live-line > /proc/1/fd/1")
            ready, _, _ = select.select([follower.stdout], [], [], 0.5)
        assert ready, "logs -f did not print a new line"
        assert follower.stdout.readline() == "live-line\n"
        yard.ok("kill", "talker")
        assert follower.wait(15) == 0  # logs -f ends when the container does
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        yard.ok("rm", "-f", "talker")


def test_cp_both_ways(yard: Yard, tmp_path: Path) -> None:
    src = tmp_path / "payload"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    yard.ok("run", "-d", "--name", "cpx", IMAGE, "sleep", "300")
    try:
        yard.ok("cp", str(src), "cpx:/tmp/")
        assert yard.ok("exec", "cpx", "cat", "/tmp/payload/sub/b.txt") == "beta\n"
        yard.ok("cp", str(src / "a.txt"), "cpx:/tmp/renamed.txt")
        assert yard.ok("exec", "cpx", "cat", "/tmp/renamed.txt") == "alpha\n"
        yard.ok(
            "exec", "cpx", "sh", "-c", "mkdir /out && echo gamma > /out/c.txt && ln -s /etc/passwd /out/link"
        )
        yard.ok("cp", "cpx:/out", str(tmp_path / "back"))
        assert (tmp_path / "back" / "c.txt").read_text() == "gamma\n"
        assert os.readlink(tmp_path / "back" / "link") == "/etc/passwd"
        stream = subprocess.run(
            [CLI_BIN, "-H", yard.host, "cp", "cpx:/out/c.txt", "-"],
            capture_output=True, env={**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}, check=True,
        )  # fmt: skip
        tar_path = tmp_path / "c.tar"
        tar_path.write_bytes(stream.stdout)
        with tarfile.open(tar_path) as tar:
            assert tar.getnames() == ["c.txt"]
        missing = yard.cli("cp", "cpx:/nope", str(tmp_path / "x"))
        assert missing.returncode == 1 and "no such file" in missing.stderr
        # a symlink planted in the container must not lead the copy onto the host
        yard.ok("exec", "cpx", "ln", "-s", "/", "/hostroot")
        yard.ok("cp", str(src / "a.txt"), "cpx:/hostroot/tmp/escape-check.txt")
        assert not Path("/tmp/escape-check.txt").exists()
        assert yard.ok("exec", "cpx", "cat", "/tmp/escape-check.txt") == "alpha\n"
        # copying into a stopped container works on its root filesystem
        yard.ok("stop", "-t", "0", "cpx")
        yard.ok("cp", str(src / "a.txt"), "cpx:/stopped.txt")
        yard.ok("start", "cpx")
        assert yard.ok("exec", "cpx", "cat", "/stopped.txt") == "alpha\n"
    finally:
        yard.ok("rm", "-f", "cpx")


def _read_until(fd: int, token: bytes, buf: bytearray, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while token not in buf and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return token in buf
            if not chunk:
                break
            buf.extend(chunk)
    return token in buf


def test_run_it_through_a_pseudo_terminal(yard: Yard) -> None:
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir), "COLUMNS": "100", "LINES": "30"}
    pid, fd = pty.fork()
    if pid == 0:  # child: the CLI on the pty's slave side
        os.execve(
            CLI_BIN, [CLI_BIN, "-H", yard.host, "run", "-it", "--rm", "--name", "tty1", IMAGE, "sh"], env
        )
    buf = bytearray()
    try:
        assert _read_until(fd, b"# ", buf), bytes(buf)
        os.write(fd, b"tty && echo answer-$((6*7))\r")
        assert _read_until(fd, b"answer-42", buf), bytes(buf)
        assert b"/dev/pts/" in buf
        os.write(fd, b"exit 9\r")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 9
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    wait_for(lambda: "tty1" not in yard.ok("ps", "-a"), 10, "--rm to remove tty1")


def test_exec_it_through_a_pseudo_terminal(yard: Yard) -> None:
    yard.ok("run", "-d", "--name", "tty2", IMAGE, "sleep", "300")
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(CLI_BIN, [CLI_BIN, "-H", yard.host, "exec", "-it", "tty2", "sh"], env)
    buf = bytearray()
    try:
        assert _read_until(fd, b"# ", buf), bytes(buf)
        os.write(fd, b"echo in-$((1+1))-exec; exit 3\r")
        assert _read_until(fd, b"in-2-exec", buf), bytes(buf)
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 3
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
        yard.ok("rm", "-f", "tty2")


def test_top_stats_inspect_pause(yard: Yard) -> None:
    yard.ok("run", "-d", "--name", "obs", "--memory", "64m", IMAGE, "sh", "-c", "sleep 300")
    try:
        top = yard.ok("top", "obs")
        assert "PID" in top.splitlines()[0] and "sleep 300" in top
        stats = json.loads(yard.ok("--format", "json", "stats", "--no-stream", "obs"))
        assert stats[0]["name"] == "obs"
        assert stats[0]["memory_limit"] == 64 * 1024 * 1024
        assert stats[0]["pids"] >= 1 and stats[0]["memory_usage"] > 0
        info = yard.inspect("obs")
        assert info["oci_spec"]["linux"]["resources"]["memory"]["limit"] == 64 * 1024 * 1024
        assert info["command"] == ["sh", "-c", "sleep 300"]
        yard.ok("pause", "obs")
        assert yard.status("obs") == "paused"
        assert "(Paused)" in yard.ok("ps", "--filter", "name=obs")
        yard.ok("unpause", "obs")
        assert yard.status("obs") == "running"
    finally:
        yard.ok("rm", "-f", "obs")


def test_events_are_sequenced_and_replayable(yard: Yard) -> None:
    before = yard.ok("events", "--since", "0", "--no-follow").splitlines()
    last = int(before[-1].split()[0]) if before else 0
    yard.ok("run", "--rm", "--name", "evt", IMAGE, "true")
    new = yard.ok("events", "--since", str(last), "--no-follow", "--filter", "container=evt").splitlines()
    actions = [line.split()[3] for line in new]
    assert actions == ["create", "start", "die", "destroy"]
    seqs = [int(line.split()[0]) for line in new]
    assert seqs == sorted(seqs) and seqs[0] > last
    assert "exitCode=0" in new[2]


def test_named_and_anonymous_volumes(yard: Yard) -> None:
    yard.ok("volume", "create", "shared-data")
    try:
        yard.ok("run", "--rm", "-v", "shared-data:/data", IMAGE, "sh", "-c", "echo kept > /data/f")
        assert yard.ok("run", "--rm", "-v", "shared-data:/d:ro", IMAGE, "cat", "/d/f") == "kept\n"
        ro = yard.cli("run", "--rm", "-v", "shared-data:/d:ro", IMAGE, "touch", "/d/g")
        assert ro.returncode != 0 and "read-only" in ro.stderr.lower()
        vols = json.loads(yard.ok("volume", "inspect", "shared-data"))
        assert vols[0]["name"] == "shared-data" and Path(vols[0]["mountpoint"], "f").read_text() == "kept\n"
        cid = yard.ok("run", "-d", "-v", "shared-data:/data", "-v", "/anon", IMAGE, "sleep", "300").strip()
        in_use = yard.cli("volume", "rm", "shared-data")
        assert in_use.returncode == 1 and "in use" in in_use.stderr
        anon = next(m["source"] for m in yard.inspect(cid)["mounts"] if m["destination"] == "/anon")
        assert anon in yard.ok("volume", "ls", "-q")
        yard.ok("rm", "-f", "-v", cid)
        assert anon not in yard.ok("volume", "ls", "-q")
        assert "shared-data" in yard.ok("volume", "ls", "-q")
    finally:
        yard.cli("volume", "rm", "shared-data")
    assert "shared-data" not in yard.ok("volume", "ls", "-q")


def test_bind_mounts(yard: Yard, tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("from-host\n")
    out = yard.ok(
        "run",
        "--rm",
        "-v",
        f"{tmp_path}:/host",
        IMAGE,
        "sh",
        "-c",
        "cat /host/in.txt; echo back > /host/out.txt",
    )
    assert out == "from-host\n"
    assert (tmp_path / "out.txt").read_text() == "back\n"
    ro = yard.cli(
        "run", "--rm", "--mount", f"type=bind,src={tmp_path},dst=/h,readonly", IMAGE, "touch", "/h/x"
    )
    assert ro.returncode != 0


def test_restart_policy_on_failure_counts(yard: Yard) -> None:
    yard.ok(
        "run", "-d", "--name", "flaky", "--restart", "on-failure:2", IMAGE, "sh", "-c", "echo try; exit 1"
    )
    try:
        info = wait_for(
            lambda: (d := yard.inspect("flaky"))["status"] == "exited" and d["restart_count"] == 2 and d,
            30,
            "two restarts then exited",
            interval=0.1,
        )
        assert info["exit_code"] == 1
        assert yard.ok("logs", "flaky").count("try") == 3
    finally:
        yard.ok("rm", "-f", "flaky")


def test_health_check_status_in_ps_and_inspect(yard: Yard) -> None:
    yard.ok(
        "run", "-d", "--name", "doc", "--health-cmd", "test -f /tmp/ok", "--health-interval", "0.3s",
        "--health-retries", "1", IMAGE, "sleep", "300",
    )  # fmt: skip
    try:
        wait_for(lambda: yard.inspect("doc")["health"] == "unhealthy", 20, "unhealthy", interval=0.1)
        assert "(unhealthy)" in yard.ok("ps", "--filter", "name=doc")
        yard.ok("exec", "doc", "touch", "/tmp/ok")
        info = wait_for(
            lambda: (d := yard.inspect("doc"))["health"] == "healthy" and d, 20, "healthy", interval=0.1
        )
        assert info["health_log"][-1]["exit_code"] == 0
        events = yard.ok("events", "--since", "0", "--no-follow", "--filter", "container=doc")
        assert "health_status: unhealthy" in events and "health_status: healthy" in events
    finally:
        yard.ok("rm", "-f", "doc")


def test_logs_rotate_and_stay_bounded(yard: Yard) -> None:
    # the shared agent rotates at 256 KiB and keeps 3 files; ~1.7 MB of log is written fast
    script = f"i=0; while [ $i -lt 20000 ]; do echo line-$i-{PAD}; i=$((i+1)); done; echo finished; sleep 300"
    yard.ok("run", "-d", "--name", "chatty", IMAGE, "sh", "-c", script)
    try:
        log_dir = Path(yard.inspect("chatty")["log_path"]).parent
        wait_for(lambda: "finished" in yard.ok("logs", "--tail", "1", "chatty"), 60, "output to finish")
        files = sorted(p for p in log_dir.glob("ctr.log*") if not p.name.endswith(".keep"))
        assert [p.name for p in files] == ["ctr.log", "ctr.log.1", "ctr.log.2"]
        assert all(p.stat().st_size <= 256 * 1024 for p in files)
        tail = yard.ok("logs", "--tail", "2", "chatty").splitlines()
        assert tail == [f"line-19999-{PAD}", "finished"]
        all_lines = yard.ok("logs", "chatty").splitlines()
        numbers = [int(x.split("-")[1]) for x in all_lines if x.startswith("line-")]
        assert numbers == list(range(numbers[0], 20000))  # contiguous: rotation lost nothing
        assert numbers[0] > 0  # the oldest files were dropped
    finally:
        yard.ok("rm", "-f", "chatty")


def test_prune_removes_only_stopped(yard: Yard) -> None:
    yard.ok("run", "--name", "gone1", IMAGE, "true")
    yard.ok("run", "-d", "--name", "stays", IMAGE, "sleep", "300")
    try:
        out = yard.ok("container", "prune", "-f")
        assert "Deleted Containers" in out
        names = yard.ok("ps", "-a")
        assert "gone1" not in names and "stays" in names
    finally:
        yard.ok("rm", "-f", "stays")


def test_attach_follows_new_output_and_exits_with_the_code(yard: Yard) -> None:
    yard.ok(
        "run",
        "-d",
        "--name",
        "att",
        IMAGE,
        "sh",
        "-c",
        "echo before; trap 'exit 6' TERM; while true; do sleep 0.1; done",
    )
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}
    attached = subprocess.Popen(
        [CLI_BIN, "-H", yard.host, "attach", "att"], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert attached.stdout is not None
        deadline = time.monotonic() + 20
        ready: list[object] = []
        while not ready and time.monotonic() < deadline:
            yard.ok("exec", "att", "sh", "-c", "echo after > /proc/1/fd/1")
            ready, _, _ = select.select([attached.stdout], [], [], 0.5)
        assert ready and attached.stdout.readline() == "after\n"  # not "before": only new output
        yard.ok("kill", "-s", "TERM", "att")
        assert attached.wait(15) == 6
    finally:
        if attached.poll() is None:
            attached.kill()
            attached.wait()
        yard.ok("rm", "-f", "att")


def test_interactive_stdin_from_a_file_or_dev_null_reaches_its_end(yard: Yard, tmp_path: Path) -> None:
    """epoll refuses regular files and /dev/null: such stdin is read without the event loop's poller."""
    data = tmp_path / "in.txt"
    data.write_text("from a file\n")
    env = {**os.environ, "DOCKYARD_CONFIG_DIR": str(yard.config_dir)}
    argv = [CLI_BIN, "-H", yard.host, "run", "--rm", "-i", "--network", "none", IMAGE, "cat"]
    for source, expected in ((data, "from a file\n"), (Path("/dev/null"), "")):
        with source.open("rb") as stdin:
            done = subprocess.run(argv, stdin=stdin, capture_output=True, text=True, timeout=60, env=env)
        assert done.returncode == 0, done.stderr
        assert done.stdout == expected
