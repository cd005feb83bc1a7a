"""Parsing of user-facing run flags (Docker syntax) and --user resolution against passwd/group text."""

from __future__ import annotations

import signal

import pytest

from agent.errors import InvalidArgument
from agent.runtime.options import (
    MountSpec,
    MountType,
    RestartMode,
    RestartPolicy,
    check_mounts,
    check_name,
    parse_cpus,
    parse_duration,
    parse_env_file,
    parse_memory,
    parse_mount,
    parse_restart,
    parse_signal,
    parse_size,
    parse_tmpfs,
    parse_ulimit,
    parse_volume,
)
from agent.runtime.users import ResolvedUser, resolve_user


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512m", 512 << 20),
        ("1g", 1 << 30),
        ("1.5G", 3 << 29),
        ("100000", 100000),
        ("64MB", 64 << 20),
        ("7m", 7 << 20),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text, "--memory") == expected


@pytest.mark.parametrize("text", ["lots", "12x", "-5m", "", "1m2"])
def test_bad_memory(text: str) -> None:
    with pytest.raises(InvalidArgument, match="--memory"):
        parse_memory(text)


def test_memory_minimum() -> None:
    with pytest.raises(InvalidArgument, match="minimum is 6m"):
        parse_memory("1m")


def test_cpus() -> None:
    assert parse_cpus("0.5") == 0.5
    with pytest.raises(InvalidArgument):
        parse_cpus("half")
    with pytest.raises(InvalidArgument):
        parse_cpus("0")


def test_volumes() -> None:
    assert parse_volume("/a/b/:/c:ro") == MountSpec(MountType.BIND, "/c", "/a/b", True)
    assert parse_volume("data:/d") == MountSpec(MountType.VOLUME, "/d", "data")
    assert parse_volume("/anon") == MountSpec(MountType.VOLUME, "/anon")
    assert parse_volume("/x:/y:rshared").propagation == "rshared"
    for bad in ["", ":/x", "/x:", "a:b:c:d", "/x:rel", "/x:/", "-bad:/x", "/x:/y:bogus", "v:/x:rshared"]:
        with pytest.raises(InvalidArgument, match="-v"):
            parse_volume(bad)


def test_tmpfs_and_mount() -> None:
    assert parse_tmpfs("/run:size=1m,mode=1777").tmpfs_options == ("size=1m", "mode=1777")
    m = parse_mount("type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=700")
    assert m.tmpfs_options == ("size=1048576", "mode=700")
    assert parse_mount("type=volume,src=vol,target=/v,ro").read_only
    assert parse_mount("type=bind,source=/s,target=/t").source == "/s"
    for bad in [
        "type=foo,target=/x",
        "type=bind,src=rel,target=/x",
        "target=",
        "type=bind,src=/a",
        "x=1,target=/a",
    ]:
        with pytest.raises(InvalidArgument, match="--mount"):
            parse_mount(bad)


def test_duplicate_mount_points() -> None:
    with pytest.raises(InvalidArgument, match="duplicate mount point"):
        check_mounts((parse_volume("/a:/x"), parse_tmpfs("/x")))


def test_ulimits() -> None:
    u = parse_ulimit("nofile=1024:2048")
    assert (u.name, u.soft, u.hard) == ("nofile", 1024, 2048)
    assert parse_ulimit("nproc=10").hard == 10
    for bad in ["nofile", "bogus=1", "nofile=2:1", "nofile=a"]:
        with pytest.raises(InvalidArgument, match="--ulimit"):
            parse_ulimit(bad)


def test_restart() -> None:
    assert parse_restart("on-failure:3") == RestartPolicy(RestartMode.ON_FAILURE, 3)
    assert parse_restart("always").mode is RestartMode.ALWAYS
    assert str(parse_restart("on-failure:2")) == "on-failure:2"
    for bad in ["sometimes", "always:3", "on-failure:x"]:
        with pytest.raises(InvalidArgument, match="--restart"):
            parse_restart(bad)


def test_signals() -> None:
    assert parse_signal("SIGTERM") == signal.SIGTERM
    assert parse_signal("kill") == 9
    assert parse_signal("1") == 1
    assert parse_signal("SIGRTMIN+1") == signal.SIGRTMIN + 1
    for bad in ["SIGFOO", "0", "99", "", "RTMIN+99"]:
        with pytest.raises(InvalidArgument, match="invalid signal"):
            parse_signal(bad)


def test_env_file_and_names_and_durations() -> None:
    assert parse_env_file("# c\n\nA=1\n  B=two words\nC\n") == ("A=1", "B=two words", "C")
    with pytest.raises(InvalidArgument, match="line 2"):
        parse_env_file("A=1\n=oops\n")
    assert check_name("/web-1") == "web-1"
    with pytest.raises(InvalidArgument, match="invalid container name"):
        check_name("bad name")
    assert parse_duration("1m30s", "--health-interval") == 90
    assert parse_duration("250ms", "--health-interval") == 0.25
    with pytest.raises(InvalidArgument, match="duration"):
        parse_duration("soon", "--health-interval")


PASSWD = "\n".join(
    [
        "root:x:0:0:root:/root:/bin/sh",
        "app:x:1000:1000::/home/app:/bin/sh",
        "# comment",
        "nobody:x:65534:65534::/:/x",
    ]
)
GROUP = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:app\n"


def test_resolve_user() -> None:
    assert resolve_user("", PASSWD, GROUP) == ResolvedUser(0, 0, (), "root", "/root")
    assert resolve_user("app", PASSWD, GROUP) == ResolvedUser(1000, 1000, (10, 50), "app", "/home/app")
    assert resolve_user("1000", PASSWD, GROUP).name == "app"
    assert resolve_user("4242", PASSWD, GROUP) == ResolvedUser(4242, 0, (), "", "/")
    assert resolve_user("app:staff", PASSWD, GROUP).gid == 50
    assert resolve_user("4242:77", PASSWD, GROUP).gid == 77
    with pytest.raises(InvalidArgument, match="unable to find user ghost"):
        resolve_user("ghost", PASSWD, GROUP)
    with pytest.raises(InvalidArgument, match="unable to find group nope"):
        resolve_user("app:nope", PASSWD, GROUP)
