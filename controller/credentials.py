"""Registry credentials kept by the controller: `$DOCKYARD_CONFIG_DIR/auth.json`, mode 0600.

The layout is Docker's (`{"auths": {"host:port": {"auth": base64("user:password")}}}`) so it reads like
the file users know. Credentials never go to an agent's disk: the controller sends the matching entry
inside each pull/push call (over mutual TLS) and the agent forgets it when the call ends.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from controller.errors import ControllerError, UsageError

AUTH_FILE = "auth.json"
DOCKER_HUB = "docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"}
_HOST_RE = re.compile(r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$")


@dataclass(frozen=True)
class Login:
    username: str
    password: str = field(repr=False)


def normalize_registry(name: str) -> str:
    """`host[:port]` for what users type after `login` (URLs and Docker Hub's many names included)."""
    text = name.strip()
    if "://" in text:
        text = urlsplit(text).netloc
    text = text.rstrip("/").split("/", 1)[0]
    if text.lower() in _HUB_ALIASES:
        return DOCKER_HUB
    if not _HOST_RE.match(text):
        raise UsageError(f"invalid registry {name!r}: expected HOST[:PORT]")
    return text


def registry_of(reference: str) -> str:
    """The registry an image reference points at (Docker's rule: the first component is a host only if
    it has a '.' or ':' or is `localhost`, or has upper-case letters); Docker Hub otherwise."""
    first, sep, _ = reference.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        return DOCKER_HUB if first.lower() in _HUB_ALIASES else first
    return DOCKER_HUB


class CredentialStore:
    def __init__(self, config_dir: Path) -> None:
        self.path = config_dir / AUTH_FILE

    def _load(self) -> dict[str, Any]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"auths": {}}
        except (OSError, ValueError) as exc:
            raise ControllerError(f"cannot read {self.path}: {exc}") from exc
        if not isinstance(raw, dict) or not isinstance(raw.get("auths", {}), dict):
            raise ControllerError(f"{self.path} is not a credentials file")
        raw.setdefault("auths", {})
        return raw

    def get(self, registry: str) -> Login | None:
        entry = self._load()["auths"].get(registry)
        if not isinstance(entry, dict) or not isinstance(entry.get("auth"), str):
            return None
        try:
            username, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ControllerError(f"{self.path}: unreadable entry for {registry}") from exc
        return Login(username, password) if sep else None

    def save(self, registry: str, login: Login) -> None:
        data = self._load()
        token = base64.b64encode(f"{login.username}:{login.password}".encode()).decode("ascii")
        data["auths"][registry] = {"auth": token}
        self._write(data)

    def remove(self, registry: str) -> bool:
        data = self._load()
        if registry not in data["auths"]:
            return False
        del data["auths"][registry]
        self._write(data)
        return True

    def _write(self, data: dict[str, Any]) -> None:
        """Atomically, 0600 from the first byte (the file holds passwords)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
