"""Resolve a Docker `--user` value against the image's /etc/passwd and /etc/group (pure: text in, ids out).

Docker's rules: empty means root; a name must exist in passwd; a numeric uid need not; the gid defaults
to the passwd entry's (0 when absent); supplementary groups are the groups that list the user by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.errors import InvalidArgument


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


def resolve_user(spec: str, passwd: str, group: str) -> ResolvedUser:
    """`spec` is "", "name", "uid", "name:group", "uid:gid", … ."""
    user_part, _, group_part = spec.partition(":")
    users = _table(passwd, 7)
    groups = _table(group, 4)
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
