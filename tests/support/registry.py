"""Real registries for tests: Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, in three flavours.

- `http`: plain HTTP, no auth (an "insecure registry" for the agent);
- `tls`: HTTPS with a test CA and htpasswd (bcrypt) Basic auth;
- `token`: HTTPS with Bearer-token auth from `TokenIssuer` (ES256 JWTs with an x5c chain to the test CA);
- `token-http`: the same over plain HTTP, registry and token server (a common lab and CI setup).

Each gets a free port and a private storage directory; readiness is polled with a deadline; teardown is
SIGTERM → wait → SIGKILL, and the registry's log is printed when it fails to start.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controller import pki
from tests.support.token_issuer import ISSUER, SERVICE, TokenIssuer

REGISTRY_BIN = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER = "dockyard"
PASSWORD = "s3cret-Pa55"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for htpasswd (distribution accepts only bcrypt there)."""
    try:
        import bcrypt  # type: ignore[import-not-found]

        return str(bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode())
    except ImportError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt

            return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))


@dataclass
class RegistryServer:
    """A running `docker-registry`; `host` is what references and certs.d use (`127.0.0.1:PORT`)."""

    flavour: str
    root: Path
    port: int
    ca: pki.CertificateAuthority | None = None
    users: dict[str, str] = field(default_factory=dict)
    issuer: TokenIssuer | None = None
    process: subprocess.Popen[bytes] | None = None
    client_certs: bool = False  # TLS flavours: require a client certificate signed by the test CA

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def scheme(self) -> str:
        return "http" if self.flavour in ("http", "token-http") else "https"

    @property
    def storage(self) -> Path:
        return self.root / "storage"

    @property
    def ca_pem(self) -> Path:
        return self.root / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def blob_data(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (tests corrupt it to fake a bad registry)."""
        hexpart = digest.split(":", 1)[1]
        return self.storage / "docker/registry/v2/blobs/sha256" / hexpart[:2] / hexpart / "data"

    def install_certs(self, config_dir: Path, *, client_cert: bool = False) -> None:
        """Trust this registry (and its token issuer) the Docker way: `<config_dir>/certs.d/<host>/ca.crt`,
        plus a `client.cert`/`client.key` pair signed by the test CA when asked."""
        if self.ca is None:
            return
        hosts = [self.host] + ([self.issuer.host] if self.issuer is not None else [])
        for host in hosts:
            directory = config_dir / "certs.d" / host
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "ca.crt").write_bytes(self.ca.cert_pem)
        if client_cert:
            self.write_client_cert(config_dir / "certs.d" / self.host)

    def write_client_cert(self, directory: Path, name: str = "client") -> None:
        """`<name>.cert` + `<name>.key` signed by the test CA (clientAuth), as certs.d expects them."""
        assert self.ca is not None
        key = pki.new_key()
        cert = pki.sign(self.ca, key.public_key(), common_name=f"test-{name}", role=pki.ROLE_CLIENT)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{name}.cert").write_bytes(pki.cert_pem(cert))
        (directory / f"{name}.key").write_bytes(pki.key_pem(key))

    def ssl_context(self) -> ssl.SSLContext | None:
        if self.ca is None:
            return None
        context = ssl.create_default_context(cadata=self.ca.cert_pem.decode())
        if self.client_certs:
            probe = self.root / "probe-client"
            if not (probe / "client.cert").exists():
                self.write_client_cert(probe)
            context.load_cert_chain(probe / "client.cert", probe / "client.key")
        return context

    def connection(self) -> http.client.HTTPConnection:
        if self.scheme == "http":
            return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.ssl_context())

    def catalog_tags(self, repository: str, authorization: str | None = None) -> list[str]:
        conn = self.connection()
        try:
            headers = {"Authorization": authorization} if authorization else {}
            conn.request("GET", f"/v2/{repository}/tags/list", headers=headers)
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                return []
            tags = json.loads(body).get("tags") or []
            return [str(t) for t in tags]
        finally:
            conn.close()

    def skopeo_args(self, side: str = "dest") -> list[str]:
        """skopeo flags to reach this registry (TLS policy, test CA dir, credentials).

        `side` is "dest" or "src" for `copy`, "" for `inspect` (which takes unprefixed flags).
        """
        prefix = f"--{side}-" if side else "--"
        args: list[str] = []
        if self.scheme == "http":
            args.append(f"{prefix}tls-verify=false")
        else:
            cert_dir = self.root / "skopeo-certs"
            cert_dir.mkdir(exist_ok=True)
            assert self.ca is not None
            (cert_dir / "ca.crt").write_bytes(self.ca.cert_pem)
            if self.client_certs and not (cert_dir / "client.cert").exists():
                self.write_client_cert(cert_dir)
            args.append(f"{prefix}cert-dir={cert_dir}")
        if self.users:
            user, password = next(iter(self.users.items()))
            args.append(f"{prefix}creds={user}:{password}")
        return args

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if self.issuer is not None:
            self.issuer.close()


def _config(server: RegistryServer) -> str:
    lines = [
        "version: 0.1",
        "log:",
        "  level: warn",
        "  accesslog:",
        "    disabled: true",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {server.storage}",
        "  delete:",
        "    enabled: true",
        "  maintenance:",
        "    uploadpurging:",
        "      enabled: false",
        "http:",
        f"  addr: 127.0.0.1:{server.port}",
        f"  secret: {secrets.token_hex(16)}",
    ]
    if server.scheme == "https":
        lines += [
            "  tls:",
            f"    certificate: {server.root / 'server.pem'}",
            f"    key: {server.root / 'server-key.pem'}",
        ]
        if server.client_certs:
            lines += ["    clientcas:", f"      - {server.ca_pem}"]
    if server.flavour == "tls":
        lines += ["auth:", "  htpasswd:", "    realm: dockyard-test", f"    path: {server.root / 'htpasswd'}"]
    if server.flavour in ("token", "token-http"):
        assert server.issuer is not None
        lines += [
            "auth:",
            "  token:",
            f"    realm: {server.issuer.realm}",
            f"    service: {SERVICE}",
            f"    issuer: {ISSUER}",
            f"    rootcertbundle: {server.ca_pem}",
        ]
    return "\n".join(lines) + "\n"


def start_registry(
    root: Path,
    flavour: str = "http",
    *,
    anonymous_pull: bool = False,
    client_certs: bool = False,
    realm_host: str = "127.0.0.1",
) -> RegistryServer:
    """Start one registry under `root` and wait until it answers /v2/ (401 counts as up)."""
    if flavour not in ("http", "tls", "token", "token-http"):
        raise ValueError(flavour)
    root.mkdir(parents=True, exist_ok=True)
    server = RegistryServer(flavour, root, free_port(), client_certs=client_certs)
    server.storage.mkdir(exist_ok=True)
    if flavour != "http":
        server.ca = pki.create_ca("dockyard registry test CA")
        server.ca_pem.write_bytes(server.ca.cert_pem)
        key = pki.new_key()
        cert = pki.sign(
            server.ca, key.public_key(), common_name="127.0.0.1", role=pki.ROLE_AGENT, sans=["127.0.0.1"]
        )
        (root / "server.pem").write_bytes(pki.cert_pem(cert))
        (root / "server-key.pem").write_bytes(pki.key_pem(key))
        server.users = {USER: PASSWORD}
    if flavour == "tls":
        (root / "htpasswd").write_text(f"{USER}:{bcrypt_hash(PASSWORD)}\n")
    if flavour in ("token", "token-http"):
        assert server.ca is not None
        server.issuer = TokenIssuer(
            server.ca,
            root / "issuer",
            dict(server.users),
            anonymous_pull=anonymous_pull,
            tls=flavour == "token",
            realm_host=realm_host,
        )
    config = root / "config.yml"
    config.write_text(_config(server))
    with open(server.log_path, "wb") as log:
        server.process = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_ready(server)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: RegistryServer, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        assert server.process is not None
        if server.process.poll() is not None:
            raise RuntimeError(
                f"docker-registry exited {server.process.returncode}:\n{server.log_path.read_text()}"
            )
        conn = server.connection()
        try:
            conn.request("GET", "/v2/")
            status = conn.getresponse().status
            if status in (200, 401):
                return
        except (OSError, http.client.HTTPException) as exc:
            last = exc
        finally:
            conn.close()
        time.sleep(0.05)
    raise RuntimeError(f"docker-registry not ready after {timeout}s ({last}):\n{server.log_path.read_text()}")


@contextlib.contextmanager
def running_registry(root: Path, flavour: str = "http", **kwargs: Any) -> Iterator[RegistryServer]:
    server = start_registry(root, flavour, **kwargs)
    try:
        yield server
    finally:
        server.stop()


SKOPEO_BIN = shutil.which("skopeo") or "/usr/bin/skopeo"


def skopeo(args: list[str], workdir: Path, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run skopeo with private policy, auth file, registries.conf and temp dir (nothing from the host)."""
    import os

    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    registries = workdir / "registries.conf"
    registries.write_text("")
    tmp = workdir / "tmp"
    tmp.mkdir(exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(workdir),
        "TMPDIR": str(tmp),
        "REGISTRY_AUTH_FILE": str(workdir / "auth.json"),
        "CONTAINERS_REGISTRIES_CONF": str(registries),
    }
    result = subprocess.run(
        [SKOPEO_BIN, "--policy", str(policy), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        raise RuntimeError(f"skopeo {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result
