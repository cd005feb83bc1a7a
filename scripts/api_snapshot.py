"""Record or check the wire contract of agent.api.v1 against a committed snapshot.

Inside v1 we only add: a field, enum value, RPC or message that was released must keep its number, type
and name. `python scripts/api_snapshot.py --write` records the current contract in
proto/agent/api/v1/api.snapshot.json (do this when you add to the API); the test suite calls `check()`,
which fails on any removal or change of something recorded there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "proto" / "agent" / "api" / "v1" / "api.snapshot.json"


def _messages(desc: Any, prefix: str, out: dict[str, Any]) -> None:
    for msg in (
        desc.message_types_by_name.values() if hasattr(desc, "message_types_by_name") else desc.nested_types
    ):
        name = f"{prefix}{msg.name}"
        out["messages"][name] = {
            f.name: {"number": f.number, "type": f.type, "label": _label(f), "type_name": _type_name(f)}
            for f in msg.fields
        }
        for enum in msg.enum_types:
            out["enums"][f"{name}.{enum.name}"] = {v.name: v.number for v in enum.values}
        _messages(msg, f"{name}.", out)


def _label(field: Any) -> str:
    return "repeated" if field.is_repeated else "single"


def _type_name(field: Any) -> str:
    if field.message_type is not None:
        return str(field.message_type.full_name)
    if field.enum_type is not None:
        return str(field.enum_type.full_name)
    return ""


def current() -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    package = importlib.import_module("agent.api.v1")
    out: dict[str, Any] = {"messages": {}, "enums": {}, "services": {}}
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.endswith("_pb2"):
            continue
        desc = importlib.import_module(f"agent.api.v1.{info.name}").DESCRIPTOR
        _messages(desc, "", out)
        for enum in desc.enum_types_by_name.values():
            out["enums"][enum.name] = {v.name: v.number for v in enum.values}
        for svc in desc.services_by_name.values():
            out["services"][svc.name] = {
                m.name: {
                    "input": m.input_type.full_name,
                    "output": m.output_type.full_name,
                    "client_streaming": m.client_streaming,
                    "server_streaming": m.server_streaming,
                }
                for m in svc.methods
            }
    return out


def breaking_changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    for section in ("messages", "enums", "services"):
        for name, members in recorded[section].items():
            if name not in now[section]:
                problems.append(f"{section[:-1]} {name} was removed")
                continue
            for member, spec in members.items():
                got = now[section][name].get(member)
                if got is None:
                    problems.append(f"{name}.{member} was removed")
                elif got != spec:
                    problems.append(f"{name}.{member} changed: {spec} -> {got}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="record the current contract")
    ns = parser.parse_args()
    now = current()
    if ns.write:
        SNAPSHOT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT}")
        return
    problems = breaking_changes(json.loads(SNAPSHOT.read_text()), now)
    for p in problems:
        print(p)
    raise SystemExit(1 if problems else 0)


if __name__ == "__main__":
    main()
