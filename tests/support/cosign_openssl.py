"""Cosign-format signatures made independently of Dockyard's code, with the `openssl` command line.

A second implementation from cosign's signature spec, for interoperability tests: the payload JSON is
written out here by hand (not by `agent.oci.cosign`), signed with `openssl dgst -sha256 -sign` (ECDSA
P-256, DER), and the `.sig` OCI manifest is assembled here too. What verifies against these verifies
against what cosign writes; what Dockyard signs is checked back with `openssl dgst -verify`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class OpensslKey:
    private: Path  # PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----")
    public: Path  # "-----BEGIN PUBLIC KEY-----", as cosign.pub

    @classmethod
    def generate(cls, directory: Path, name: str = "cosign") -> OpensslKey:
        directory.mkdir(parents=True, exist_ok=True)
        sec1 = directory / f"{name}.sec1.pem"
        private, public = directory / f"{name}.key", directory / f"{name}.pub"
        _run("openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(sec1))
        _run("openssl", "pkcs8", "-topk8", "-nocrypt", "-in", str(sec1), "-out", str(private))
        _run("openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public))
        sec1.unlink()
        return cls(private, public)

    def public_pem(self) -> str:
        return self.public.read_text()

    def sign(self, data: bytes, work: Path) -> str:
        """base64 of the DER ECDSA signature over SHA-256(data), by openssl."""
        work.mkdir(parents=True, exist_ok=True)
        src, out = work / "to-sign", work / "sig.der"
        src.write_bytes(data)
        _run("openssl", "dgst", "-sha256", "-sign", str(self.private), "-out", str(out), str(src))
        return base64.b64encode(out.read_bytes()).decode()

    def verify(self, data: bytes, signature_b64: str, work: Path) -> bool:
        work.mkdir(parents=True, exist_ok=True)
        src, sig = work / "to-verify", work / "sig-to-verify.der"
        src.write_bytes(data)
        sig.write_bytes(base64.b64decode(signature_b64))
        done = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", str(self.public), "-signature", str(sig), str(src)],
            capture_output=True,
            check=False,
        )
        return done.returncode == 0


def payload(repository: str, digest: str) -> bytes:
    """The simple-signing payload as cosign writes it (spelled out here, not built by Dockyard)."""
    head = '{"critical":{"identity":{"docker-reference":"' + repository + '"},'
    image = '"image":{"docker-manifest-digest":"' + digest + '"},'
    return (head + image + '"type":"cosign container image signature"},"optional":null}').encode()


def sig_manifest(payloads_and_signatures: list[tuple[bytes, str]]) -> tuple[bytes, bytes]:
    """(the `.sig` OCI manifest, its config blob) over payload layers with signature annotations."""
    layers = [
        {
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "size": len(p),
            "digest": "sha256:" + hashlib.sha256(p).hexdigest(),
            "annotations": {"dev.cosignproject.cosign/signature": s},
        }
        for p, s in payloads_and_signatures
    ]
    config = json.dumps(
        {
            "architecture": "",
            "os": "",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [x["digest"] for x in layers]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "size": len(config),
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
            },
            "layers": layers,
        }
    ).encode()
    return manifest, config


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)
