"""Image trust: `trust set FILE`, `trust show`, `image sign REF --key FILE`, `image verify REF`.

The policy is enforced by each agent (agent/trust): these commands push it, show it, and ask for a
verdict. `image sign` signs on this machine — the private key never leaves it — in cosign's key-pair
format (ECDSA P-256 over the simple-signing payload of the digest the reference points at, an index
when it is one, as cosign does), and the agent pushes the signature to the registry's `sha256-<hex>.sig`
tag. Keys: a PEM EC P-256 private key, PKCS#8 (`-----BEGIN PRIVATE KEY-----`, e.g. from
`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`) or SEC1 (`-----BEGIN EC PRIVATE KEY-----`);
an encrypted PKCS#8 key takes its password from $COSIGN_PASSWORD or a prompt. cosign's own encrypted
format (`ENCRYPTED SIGSTORE PRIVATE KEY`) is not read: make the key with openssl and give the same PEM
to `cosign import-key-pair` for the CI.
"""

from __future__ import annotations

import base64
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from controller import credentials, output, terminal
from controller.api.registry import RegistryApi
from controller.api.trust import TrustApi
from controller.app import App, HostOutput
from controller.client import AgentClient
from controller.errors import ControllerError, UsageError

MAX_POLICY_FILE = 1024 * 1024


# ---- trust set / show -----------------------------------------------------------------------------------


@click.group(name="trust")
def trust_group() -> None:
    """The image trust policy each agent enforces before an image runs."""


@trust_group.command(name="set")
@click.argument("policy_file", metavar="FILE", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_obj
def trust_set(app: App, policy_file: Path) -> None:
    """Replace the agents' policy with FILE (policy.toml); a bad file is refused, the old one kept."""
    try:
        data = policy_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {policy_file}: {exc.strerror or exc}") from None
    if len(data) > MAX_POLICY_FILE:
        raise UsageError(f"{policy_file} is larger than {MAX_POLICY_FILE} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise UsageError(f"{policy_file} is not UTF-8 text") from None

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return asdict(await TrustApi(client).set_policy(text, source=policy_file.name))

    def shown(d: dict[str, Any]) -> str:
        return f"trust policy set: {_summary(d)} ({d['path']}, sha256 {d['sha256'][:12]})"

    app.run(op, text=shown)


@trust_group.command(name="show")
@click.option("--raw", is_flag=True, help="print the policy file as written")
@click.pass_obj
def trust_show(app: App, raw: bool) -> None:
    """Show the policy in force on the agents."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        return asdict(await TrustApi(client).get_policy())

    if raw and not app.json:
        app.run(op, text=lambda d: str(d["text"]).rstrip("\n"), idempotent=True)
        return

    def fields(d: dict[str, Any]) -> output.Fields:
        rows: list[tuple[str, Any]] = [
            ("File", d["path"] + ("" if d["present"] else " (none: accept everything)")),
            ("Default", d["default"]),
        ]
        for rule in d["rules"]:
            detail = ", ".join(rule["keys"] or rule["digests"])
            rows.append((f"Rule {rule['scope']}", f"{rule['policy']}{': ' + detail if detail else ''}"))
        if d["refused"]:
            rows.append(("Refused", f"the file changed and was refused, this policy stays: {d['refused']}"))
        return output.Fields(rows)

    app.run(op, fields=fields, idempotent=True)


def _summary(d: dict[str, Any]) -> str:
    return f"default {d['default']}, {len(d['rules'])} rule(s)"


# ---- image sign / verify -------------------------------------------------------------------------------


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """The ECDSA P-256 private key in a PEM file (see the module docstring for the formats)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read key {path}: {exc.strerror or exc}") from None
    if b"ENCRYPTED SIGSTORE PRIVATE KEY" in data or b"ENCRYPTED COSIGN PRIVATE KEY" in data:
        raise UsageError(
            f"{path}: cosign's encrypted key format is not supported; sign with the PEM (PKCS#8) key you gave"
            " `cosign import-key-pair`, or make one with openssl"
        )
    password: bytes | None = None
    if b"ENCRYPTED PRIVATE KEY" in data:
        secret = os.environ.get("COSIGN_PASSWORD")
        if secret is None:
            if not sys.stdin.isatty():
                raise UsageError(f"{path} is encrypted: set COSIGN_PASSWORD")
            secret = terminal.read_secret(f"Password for {path}: ")
        password = secret.encode()
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path}: not a usable PEM private key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UsageError(f"{path}: not an ECDSA P-256 private key (cosign's key-pair format)")
    return key


def sign_payload(key: ec.EllipticCurvePrivateKey, payload: bytes) -> str:
    """base64 of the DER ECDSA P-256 signature over SHA-256(payload): cosign's signature annotation.

    Deterministic (RFC 6979) where the library has it, so signing the same image again with the same
    key makes the same signature, which the agent sees is there already (no second layer)."""
    try:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        der = key.sign(payload, algorithm)
    except (TypeError, UnsupportedAlgorithm):  # older cryptography / OpenSSL: a random nonce
        der = key.sign(payload, ec.ECDSA(hashes.SHA256()))
    return base64.b64encode(der).decode()


@click.command(name="sign")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM private key",
)
@click.argument("reference")
@click.pass_obj
def image_sign(app: App, reference: str, key_file: Path) -> None:
    """Sign an image in its registry (cosign's format) and push the signature through the agent."""
    from agent.oci import cosign
    from agent.oci.errors import InvalidArgument
    from agent.oci.reference import Reference

    key = load_signing_key(key_file)
    try:
        repository = Reference.parse(reference).name
    except InvalidArgument as exc:
        raise UsageError(exc.message) from None
    login = credentials.CredentialStore(app.config_dir).get(credentials.registry_of(reference))

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        resolved = await RegistryApi(client).resolve(reference, login=login, timeout=app.timeout)
        signed = resolved.index_digest or resolved.digest
        payload = cosign.make_payload(repository, signed)
        pushed = await TrustApi(client).push_signature(
            reference, signed, payload, sign_payload(key, payload), login=login
        )
        return {"reference": reference, "signed_digest": signed, **asdict(pushed)}

    def shown(d: dict[str, Any]) -> str:
        done = "already signed with this key" if d["already_present"] else "signed"
        return f"{done}: {repository}@{d['signed_digest']} -> {d['tag']} ({d['signatures']} signature(s))"

    app.run(op, text=shown)


@click.command(name="verify")
@click.argument("reference")
@click.pass_obj
def image_verify(app: App, reference: str) -> None:
    """Show the trust policy's verdict for a local image without running it (exit 1 if refused)."""

    async def op(client: AgentClient, out: HostOutput) -> dict[str, Any]:
        verification = await TrustApi(client).verify(reference)
        if not verification.allowed:
            refused = next(v for v in verification.verdicts if not v.allowed)
            raise ControllerError(refused.message, client.name, exit_code=1)
        return asdict(verification)

    app.run(op, text=lambda d: "\n".join(v["message"] for v in d["verdicts"]), idempotent=True)


IMAGE_SUBCOMMANDS = [image_sign, image_verify]
