"""Several `-f` files merged in order, by docker compose's rules (compose-spec's merge.md).

Mappings merge key by key (a later value wins); `environment`, `labels`, `build.args`, `depends_on`,
`networks` (of a service) merge as mappings whatever form each file wrote them in; `ports`, `expose`,
`cap_add`, `cap_drop`, `tmpfs`, `env_file`, `profiles` append (duplicates dropped); `volumes` of a service
merge by their target path; `command`, `entrypoint` and `healthcheck.test` are replaced whole. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_AS_MAPPING = ("environment", "labels", "depends_on", "networks")
_APPEND = ("ports", "expose", "cap_add", "cap_drop", "tmpfs", "env_file", "profiles")
_REPLACE = ("command", "entrypoint")


def pairs(value: Any) -> dict[str, Any]:
    """`["A=1", "B"]` or `{A: 1, B: null}` → {"A": "1", "B": None}; `[db, cache]` (depends_on,
    networks) → {"db": None, "cache": None}."""
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in value or []:
        key, eq, val = str(item).partition("=")
        out[key] = val if eq else None
    return out


def _list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def volume_target(entry: Any) -> str:
    """The container path of a service volume in either form (`SRC:DST[:MODE]`, `DST`, or long)."""
    if isinstance(entry, dict):
        return str(entry.get("target", ""))
    parts = str(entry).split(":")
    return parts[1] if len(parts) >= 2 else parts[0]


def _merge_service(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if old is None or key not in out:
            out[key] = value
        elif key in _AS_MAPPING:
            merged = pairs(old)
            for k, v in pairs(value).items():
                if isinstance(merged.get(k), dict) and isinstance(v, dict):
                    merged[k] = {**merged[k], **v}
                else:
                    merged[k] = v
            out[key] = merged
        elif key in _APPEND:
            items = _list(old)
            for item in _list(value):
                if item not in items:
                    items.append(item)
            out[key] = items
        elif key == "volumes":
            by_target = {volume_target(v): v for v in _list(old)}
            for v in _list(value):
                by_target[volume_target(v)] = v
            out[key] = list(by_target.values())
        elif key in _REPLACE:
            out[key] = value
        elif key == "build":
            old_b = {"context": old} if isinstance(old, str) else dict(old)
            new_b = {"context": value} if isinstance(value, str) else dict(value)
            if "args" in old_b and "args" in new_b:
                new_b["args"] = {**pairs(old_b["args"]), **pairs(new_b["args"])}
            out[key] = {**old_b, **new_b}
        elif key == "healthcheck" and isinstance(old, dict) and isinstance(value, dict):
            out[key] = {**old, **value}
        elif isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge_mappings(old, value)
        else:
            out[key] = value
    return out


def merge_mappings(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        out[key] = merge_mappings(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def merge(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """The files' documents (already interpolated and checked) as one document."""
    out: dict[str, Any] = {}
    for doc in documents:
        for key, value in doc.items():
            if key == "services" and isinstance(value, dict):
                services = dict(out.get("services") or {})
                for name, svc in value.items():
                    old = services.get(name)
                    services[name] = _merge_service(old or {}, svc or {})
                out["services"] = services
            elif isinstance(out.get(key), dict) and isinstance(value, dict):
                out[key] = merge_mappings(out[key], value)
            else:
                out[key] = value
    return out
