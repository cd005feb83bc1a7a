"""Checking one compose file: first against the Compose Specification's published JSON schema
(compose-spec.json, next to this module; see LICENSE-compose-spec.md), then against the subset Dockyard
supports (`SUPPORTED` below). Either failure is one line naming the file and the key's path:
`compose.yaml: services.web.deploy.placement: not supported by dockyard`. Keys starting with `x-` are
extensions and always allowed. Nothing outside the subset is ever silently ignored.
"""

from __future__ import annotations

import difflib
import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import jsonschema

from controller.compose.model import ComposeError

SCHEMA_FILE = Path(__file__).with_name("compose-spec.json")
NOT_SUPPORTED = "not supported by dockyard"


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    return jsonschema.Draft7Validator(schema)


def _dotted(parts: Any) -> str:
    return ".".join(str(p) for p in parts)


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)  # fmt: skip


def validate(document: Any, source: str) -> None:
    """The document against compose-spec.json; ComposeError naming the first problem's key."""
    if not isinstance(document, dict):
        raise ComposeError(source, "", f"the top level must be a mapping, not {_type_name(document)}")
    error = jsonschema.exceptions.best_match(_validator().iter_errors(document))
    if error is None:
        return
    path = _dotted(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        patterns = error.schema.get("patternProperties", {}) if isinstance(error.schema, dict) else {}
        extra = [
            str(k)
            for k in error.instance
            if k not in props and not any(re.search(p, str(k)) for p in patterns)
        ]
        if extra:
            key = extra[0]
            hint = difflib.get_close_matches(key, list(props), n=1)
            problem = "unknown key" + (f" (did you mean {hint[0]}?)" if hint else "")
            raise ComposeError(source, f"{path}.{key}" if path else key, problem)
    if error.validator == "type":
        expected = error.validator_value
        names = " or ".join(expected) if isinstance(expected, list) else str(expected)
        problem = f"must be {names}, not {_type_name(error.instance)}"
    elif error.validator in ("oneOf", "anyOf") and _types(error.validator_value):
        problem = f"must be {' or '.join(_types(error.validator_value))}, not {_type_name(error.instance)}"
    else:
        problem = str(error.message)
        if len(problem) > 160:
            problem = problem[:157] + "..."
    raise ComposeError(source, path, problem)


def _types(alternatives: Any) -> list[str]:
    """The JSON types a oneOf/anyOf allows, when its branches name them."""
    found: list[str] = []
    for branch in alternatives if isinstance(alternatives, list) else []:
        kind = branch.get("type") if isinstance(branch, dict) else None
        for name in kind if isinstance(kind, list) else [kind] if kind else []:
            if name not in found:
                found.append(str(name))
    return found


# ---- the supported subset -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Each:
    """A mapping whose keys are names (services, volumes, variables); each value checked by `spec`."""

    spec: Spec


@dataclass(frozen=True)
class Value:
    """A value Dockyard takes only in some forms: `check` returns the reason it refuses, or None."""

    check: Callable[[Any], str | None]


Spec: TypeAlias = "Mapping[str, Spec] | Each | Value | None"


def _init(value: Any) -> str | None:
    if value in (False, "false", "False"):
        return None
    return f"{NOT_SUPPORTED} (the agent runs no init process; leave init out or set it to false)"


def _one_of(*allowed: str) -> Value:
    def check(value: Any) -> str | None:
        if value is None or str(value) in allowed:
            return None
        return f"{value!r} {NOT_SUPPORTED} (only {', '.join(allowed)})"

    return Value(check)


_HEALTHCHECK: Spec = {
    "test": None,
    "interval": None,
    "timeout": None,
    "retries": None,
    "start_period": None,
    "disable": None,
}
_SERVICE: Spec = {
    "image": None,
    "build": {"context": None, "dockerfile": None, "args": None, "target": None},
    "command": None,
    "entrypoint": None,
    "environment": None,
    "env_file": {"path": None, "required": None},
    "ports": {"target": None, "published": None, "host_ip": None, "protocol": None, "mode": None},
    "expose": None,  # documentation only: every port is reachable on the project's networks
    "volumes": {
        "type": _one_of("bind", "volume", "tmpfs"),
        "source": None,
        "target": None,
        "read_only": None,
        "bind": {"propagation": None, "create_host_path": None},
        "volume": {"nocopy": None},
        "tmpfs": {"size": None, "mode": None},
    },
    "networks": Each({"aliases": None}),
    "depends_on": Each({"condition": None}),
    "healthcheck": _HEALTHCHECK,
    "restart": None,
    "labels": None,
    "user": None,
    "working_dir": None,
    "hostname": None,
    "stop_signal": None,
    "stop_grace_period": None,
    "init": Value(_init),
    "read_only": None,
    "cap_add": None,
    "cap_drop": None,
    "tmpfs": None,
    "ulimits": Each({"soft": None, "hard": None}),
    "mem_limit": None,
    "cpus": None,
    "deploy": {"resources": {"limits": {"cpus": None, "memory": None, "pids": None}}},
    "profiles": None,
    "secrets": {"source": None, "target": None, "uid": None, "gid": None, "mode": None},
}
SUPPORTED: Spec = {
    "version": None,  # obsolete; docker compose ignores it with a warning, so does dockyard
    "name": None,
    "services": Each(_SERVICE),
    "volumes": Each({"name": None, "external": None, "labels": None, "driver": _one_of("local")}),
    "networks": Each(
        {"name": None, "external": None, "internal": None, "labels": None, "driver": _one_of("bridge")}
    ),
    # a release's secrets (controller/rollout/compose_release.py refuses the `file`/`environment` sources)
    "secrets": Each({"name": None, "external": {"name": None}, "file": None, "environment": None}),
}


def check_subset(document: Mapping[str, Any], source: str) -> None:
    """ComposeError for the first key (or value) outside what Dockyard runs."""
    _check(document, SUPPORTED, "", source)


def _check(value: Any, spec: Spec, path: str, source: str) -> None:
    if spec is None:
        return
    if isinstance(spec, Value):
        problem = spec.check(value)
        if problem is not None:
            raise ComposeError(source, path, problem)
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check(item, spec, f"{path}.{i}", source)
        return
    if not isinstance(value, dict):
        return
    for key, item in value.items():
        sub = f"{path}.{key}" if path else str(key)
        if str(key).startswith("x-"):
            continue
        if isinstance(spec, Each):
            _check(item, spec.spec, sub, source)
        elif key in spec:
            _check(item, spec[key], sub, source)
        else:
            raise ComposeError(source, sub, NOT_SUPPORTED)
