"""Inside agent.api.v1 we only add: everything recorded in the committed snapshot must still be there."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]


def _snapshot_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_snapshot", ROOT / "scripts" / "api_snapshot.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_breaking_change_against_committed_snapshot() -> None:
    snap = _snapshot_module()
    recorded = json.loads(snap.SNAPSHOT.read_text())
    assert recorded["services"]["System"]["Ping"]["output"] == "agent.api.v1.PingResponse"
    assert snap.breaking_changes(recorded, snap.current()) == []


def test_renumbering_or_removal_is_detected() -> None:
    snap = _snapshot_module()
    now = snap.current()
    renumbered = copy.deepcopy(now)
    renumbered["messages"]["InfoResponse"]["hostname"]["number"] = 99
    before = now["messages"]["InfoResponse"]["hostname"]
    after = renumbered["messages"]["InfoResponse"]["hostname"]
    assert snap.breaking_changes(now, renumbered) == [f"InfoResponse.hostname changed: {before} -> {after}"]
    removed = copy.deepcopy(now)
    del removed["services"]["System"]["Info"]
    assert snap.breaking_changes(now, removed) == ["System.Info was removed"]
    added = copy.deepcopy(now)
    added["messages"]["InfoResponse"]["new_field"] = {
        "number": 500,
        "type": 9,
        "label": "single",
        "type_name": "",
    }
    assert snap.breaking_changes(now, added) == []
