"""Resolve a Docker `--user` value against a root filesystem's /etc/passwd and /etc/group.

Docker's rules: empty means root; a name must exist in passwd; a numeric uid need not; the gid defaults
to the passwd entry's (0 when absent); supplementary groups are the groups that list the user by name.

The files belong to the image or the running container, so they are read as data only (never through
NSS), found by directory fd inside the root (agent/fsroot.py), and only up to ETC_FILE_MAX: a bigger one
is refused when a name has to be looked up in it and skipped when the ids are numeric. `resolve_user`
itself is pure (text in, ids out); `resolve_in_root` reads the files and blocks: run it in a thread.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent import fsroot
from agent.errors import InvalidArgument

ETC_FILE_MAX = 1 << 20


@dataclass(frozen=True)
class ResolvedUser:
    uid: int
    gid: int
    additional_gids: tuple[int, ...] = ()
    name: str = ""
    home: str = "/"


def _table(text: str, fields: int) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.split(":")
        if len(parts) >= fields:
            rows.append(parts)
    return rows


def read_etc(rootfs: Path, name: str) -> str | None:
    """/etc/<name> inside `rootfs` as text; "" when absent or unreadable, None when over ETC_FILE_MAX."""
    try:
        rootfd = fsroot.open_root(rootfs)
    except OSError:
        return ""
    try:
        data = fsroot.read_file(rootfd, f"/etc/{name}", ETC_FILE_MAX)
    except InvalidArgument:  # read_file refuses only a file over the limit
        return None
    except OSError:
        return ""
    finally:
        os.close(rootfd)
    return "" if data is None else data.decode(errors="replace")


def resolve_in_root(spec: str, rootfs: Path) -> ResolvedUser:
    """`resolve_user` against the /etc/passwd and /etc/group of a root filesystem (blocking)."""
    return resolve_user(spec, read_etc(rootfs, "passwd"), read_etc(rootfs, "group"))


def _too_large(name: str, use: str) -> InvalidArgument:
    return InvalidArgument(f"/etc/{name} in the container is larger than {ETC_FILE_MAX >> 20} MiB; use {use}")


def resolve_user(spec: str, passwd: str | None, group: str | None) -> ResolvedUser:
    """`spec` is "", "name", "uid", "name:group", "uid:gid", … ; a file is None when it was too large to
    read: that is an error only where a name must be looked up in it."""
    user_part, _, group_part = spec.partition(":")
    if passwd is None and user_part and not user_part.isdigit():
        raise _too_large("passwd", "a numeric uid")
    if group is None and (
        (group_part and not group_part.isdigit()) or (user_part and not user_part.isdigit())
    ):  # a group name to find, or a user name whose supplementary groups are listed there
        raise _too_large("group", "a numeric uid and gid (-u UID:GID)")
    users = _table(passwd or "", 7)
    groups = _table(group or "", 4)
    uid, gid, name, home = 0, 0, "root", "/root"
    if user_part:
        match = next((u for u in users if u[0] == user_part), None)
        if match is None and user_part.isdigit():
            match = next((u for u in users if u[2] == user_part), None)
            uid, gid, name, home = int(user_part), 0, "", "/"
        if match is None and not user_part.isdigit():
            raise InvalidArgument(f"unable to find user {user_part}: no matching entries in passwd file")
        if match is not None:
            try:
                uid, gid, name, home = int(match[2]), int(match[3]), match[0], match[5] or "/"
            except ValueError:
                raise InvalidArgument(f"the image's passwd entry for {user_part!r} is malformed") from None
    else:
        root = next((u for u in users if u[2] == "0"), None)
        if root is not None:
            home = root[5] or "/"
    if group_part:
        gmatch = next((g for g in groups if g[0] == group_part), None)
        if gmatch is not None:
            gid = int(gmatch[2]) if gmatch[2].isdigit() else 0
        elif group_part.isdigit():
            gid = int(group_part)
        else:
            raise InvalidArgument(f"unable to find group {group_part}: no matching entries in group file")
    if uid > 2**31 - 1 or gid > 2**31 - 1:
        raise InvalidArgument(f"invalid --user {spec!r}: ids must be below 2^31")
    extra: list[int] = []
    if name:
        for g in groups:
            members = [m for m in g[3].split(",") if m]
            if name in members and g[2].isdigit() and int(g[2]) != gid and int(g[2]) not in extra:
                extra.append(int(g[2]))
    return ResolvedUser(uid, gid, tuple(extra), name, home)
