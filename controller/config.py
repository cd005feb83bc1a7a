"""Where the controller keeps its files: `$DOCKYARD_CONFIG_DIR`, default `~/.config/dockyard`."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CONFIG_DIR = "DOCKYARD_CONFIG_DIR"
ENV_HOST = "DOCKYARD_HOST"
DEFAULT_SOCKET = "/run/dockyard/agent.sock"
DEFAULT_PORT = 7443

# The controller's TLS identity in its config dir (written by controller.pki, read by controller.client).
CA_FILE = "ca.pem"
CLIENT_CERT_FILE = "client.pem"
CLIENT_KEY_FILE = "client-key.pem"


def config_dir() -> Path:
    value = os.environ.get(ENV_CONFIG_DIR)
    return Path(value) if value else Path.home() / ".config" / "dockyard"
