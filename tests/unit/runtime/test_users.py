"""Reading a root's /etc/passwd and /etc/group as bounded data, and what a file too large to read means."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.runtime.users import ETC_FILE_MAX, ResolvedUser, read_etc, resolve_in_root, resolve_user

PASSWD = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n"
GROUP = "root:x:0:\nstaff:x:50:app\n"


def make_root(tmp_path: Path, passwd: str = PASSWD, group: str = GROUP) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(passwd)
    (root / "etc" / "group").write_text(group)
    return root


def test_read_etc_reads_inside_the_root_only(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    assert read_etc(root, "passwd") == PASSWD
    outside = tmp_path / "host-secret"
    outside.write_text("secret:x:0:0::/:/bin/sh\n")
    (root / "etc" / "passwd").unlink()
    (root / "etc" / "passwd").symlink_to(outside)  # absolute: resolved as if the root were /
    assert read_etc(root, "passwd") == ""
    (root / "etc" / "group").unlink()
    (root / "etc" / "group").symlink_to("../../host-secret")  # `..` stops at the root
    assert read_etc(root, "group") == ""
    os.mkfifo(root / "etc" / "fifo")
    assert read_etc(root, "fifo") == ""  # not a regular file, and the open does not block
    assert read_etc(root, "absent") == ""


def test_a_file_over_the_bound_is_none_and_refused_only_for_names(tmp_path: Path) -> None:
    for name in ("passwd", "group"):
        root = make_root(tmp_path / name)
        os.truncate(root / "etc" / name, 1 << 30)  # sparse, like the hostile container's
        assert read_etc(root, name) is None
        with pytest.raises(InvalidArgument, match=f"^/etc/{name} in the container is larger than 1 MiB; use"):
            resolve_in_root("app", root)
        assert resolve_in_root("4242:50", root) == ResolvedUser(4242, 50, (), "", "/")
    root = make_root(tmp_path / "bound", passwd=PASSWD + "x" * (ETC_FILE_MAX - len(PASSWD) - 1) + "\n")
    assert resolve_in_root("app", root).uid == 1000  # exactly at the bound is still read
    assert resolve_user("1000", None, None) == ResolvedUser(1000, 0, (), "", "/")
    assert resolve_user("", None, None) == ResolvedUser(0, 0, (), "root", "/root")
    with pytest.raises(InvalidArgument, match=r"^/etc/passwd .* use a numeric uid$"):
        resolve_user("app", None, GROUP)
    with pytest.raises(InvalidArgument, match=r"^/etc/group .* use a numeric uid and gid"):
        resolve_user("0:staff", PASSWD, None)
    # a numeric uid that has a passwd entry: its supplementary groups cannot be read, the rest works
    assert resolve_user("1000", PASSWD, None) == ResolvedUser(1000, 1000, (), "app", "/home/app")
    assert resolve_user("1000", PASSWD, GROUP) == ResolvedUser(1000, 1000, (50,), "app", "/home/app")
