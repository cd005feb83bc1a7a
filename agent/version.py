"""The agent's version and the API version it serves (kept in one place for Version, Info and bootstrap)."""

from __future__ import annotations

from importlib import metadata

API_VERSION = "agent.api.v1"


def agent_version() -> str:
    try:
        return metadata.version("dockyard")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
