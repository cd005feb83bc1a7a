"""Bad input gets a clear error, exit code 125 from `run` (as Docker), and leaves nothing behind."""

from __future__ import annotations

import pytest

from tests.integration.containers.conftest import IMAGE, Yard, YardFactory, assert_nothing_left

pytestmark = pytest.mark.root

CASES = [
    (["nosuch/image:1", "true"], "not found"),
    (["-v", ":/x", IMAGE, "true"], "invalid -v"),
    (["-v", "rel/dir:/x", IMAGE, "true"], "neither an absolute host path nor a volume name"),
    (["-v", "/no/such/dir/anywhere:/x", IMAGE, "true"], "bind source path does not exist"),
    (["-v", "/tmp:relative", IMAGE, "true"], "must be absolute"),
    (["--mount", "type=floppy,target=/x", IMAGE, "true"], "type must be bind, volume or tmpfs"),
    (["--memory", "lots", IMAGE, "true"], "invalid --memory"),
    (["--memory", "1m", IMAGE, "true"], "minimum is 6m"),
    (["--memory-swap", "1g", IMAGE, "true"], "needs --memory"),
    (["--cpus", "999", IMAGE, "true"], "CPUs available"),
    (["--restart", "sometimes", IMAGE, "true"], "invalid --restart"),
    (["--rm", "--restart", "always", IMAGE, "true"], "cannot be combined"),
    (["-u", "ghost", IMAGE, "true"], "unable to find user ghost"),
    (["-w", "relative", IMAGE, "true"], "must be absolute"),
    (["--cap-add", "FLYING", IMAGE, "true"], "unknown capability"),
    (["--ulimit", "nofile=bad", IMAGE, "true"], "invalid --ulimit"),
    (["--stop-signal", "SIGNOPE", IMAGE, "true"], "invalid signal"),
    (["--health-cmd", "true", "--health-interval", "soon", IMAGE, "true"], "invalid --health-interval"),
    (["--security-opt", "apparmor=x", IMAGE, "true"], "invalid --security-opt"),
    (["--name", "bad name", IMAGE, "true"], "invalid container name"),
    (["--entrypoint", "", IMAGE], "no command specified"),
]


@pytest.mark.parametrize(("args", "message"), CASES, ids=[c[1] for c in CASES])
def test_bad_run_input_is_refused_cleanly(yard: Yard, args: list[str], message: str) -> None:
    before = yard.ok("ps", "-aq", "--no-trunc")
    done = yard.cli("run", "--rm", *args)
    assert done.returncode == 125, done
    assert done.stderr.startswith("error: ") and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert yard.ok("ps", "-aq", "--no-trunc") == before
    assert_nothing_left(yard)


def test_duplicate_name_and_invalid_signal(yard: Yard) -> None:
    first = yard.ok("run", "-d", "--name", "dup", IMAGE, "sleep", "300").strip()
    try:
        again = yard.cli("run", "-d", "--name", "dup", IMAGE, "sleep", "300")
        assert again.returncode == 125 and 'name "dup" is already in use' in again.stderr
        assert yard.ok("ps", "-aq", "--no-trunc").split() == [first]
        bad = yard.cli("kill", "-s", "NOPE", "dup")
        assert bad.returncode == 1 and "invalid signal 'NOPE'" in bad.stderr
        assert yard.status("dup") == "running"
        ambiguous = yard.cli("inspect", "")
        assert ambiguous.returncode == 1
        missing = yard.cli("stop", "no-such-container")
        assert missing.returncode == 1 and "no such container" in missing.stderr
    finally:
        yard.ok("rm", "-f", first)
    assert_nothing_left(yard)


def test_command_not_found_exits_127_like_docker(yard: Yard) -> None:
    done = yard.cli("run", "--rm", IMAGE, "no-such-command")
    assert done.returncode == 127 and "no-such-command" in done.stderr
    assert yard.ok("ps", "-aq") == ""
    kept = yard.cli("run", "--name", "nocmd", IMAGE, "no-such-command")
    assert kept.returncode == 127
    info = yard.inspect("nocmd")
    assert info["status"] == "created" and info["exit_code"] == 127 and "no-such-command" in info["error"]
    yard.ok("rm", "nocmd")
    assert_nothing_left(yard)


def test_crun_on_the_hybrid_layout_is_reported_clearly(yard_factory: YardFactory) -> None:
    from agent.hostinfo import cgroup_layout

    if cgroup_layout() != "hybrid":
        pytest.skip("only the cgroup hybrid layout makes crun 1.8 refuse to run")
    yard = yard_factory("crun", runtime="crun")
    done = yard.cli("run", "--rm", IMAGE, "true")
    assert done.returncode == 125
    assert "crun cannot run containers on this host" in done.stderr and "hybrid" in done.stderr
    assert 'runtime = "runc"' in done.stderr
    assert yard.ok("ps", "-aq") == ""
