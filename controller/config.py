"""Where the controller keeps its files: `$DOCKYARD_CONFIG_DIR`, default `~/.config/dockyard`."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from controller.errors import ControllerError

ENV_CONFIG_DIR = "DOCKYARD_CONFIG_DIR"
ENV_HOST = "DOCKYARD_HOST"
# Where rollouts are journaled (a postgresql:// URL, or a SQLite file); else `journal` in CONFIG_FILE.
ENV_JOURNAL = "DOCKYARD_JOURNAL"
CONFIG_FILE = "config.toml"
_CONFIG_KEYS = {"journal"}
DEFAULT_SOCKET = "/run/dockyard/agent.sock"
DEFAULT_PORT = 7443

# The controller's TLS identity in its config dir (written by controller.pki, read by controller.client).
CA_FILE = "ca.pem"
CLIENT_CERT_FILE = "client.pem"
CLIENT_KEY_FILE = "client-key.pem"


def config_dir() -> Path:
    value = os.environ.get(ENV_CONFIG_DIR)
    return Path(value) if value else Path.home() / ".config" / "dockyard"


def journal_location(cfg_dir: Path | None = None) -> str | None:
    """$DOCKYARD_JOURNAL, else `journal = "…"` in the config dir's config.toml, else None (the default)."""
    value = os.environ.get(ENV_JOURNAL)
    if value:
        return value
    path = (cfg_dir or config_dir()) / CONFIG_FILE
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ControllerError(f"config {path}: {exc}") from None
    unknown = sorted(set(raw) - _CONFIG_KEYS)
    if unknown:
        raise ControllerError(f"config {path}: unknown key(s): {', '.join(unknown)}")
    journal = raw.get("journal")
    if journal is not None and not isinstance(journal, str):
        raise ControllerError(f"config {path}: journal must be a string (a postgresql:// URL or a file)")
    return journal or None
