"""The controller's own version (the same distribution as the agent)."""

from __future__ import annotations

from importlib import metadata


def controller_version() -> str:
    try:
        return metadata.version("dockyard")
    except metadata.PackageNotFoundError:
        return "0.0.0+unknown"
