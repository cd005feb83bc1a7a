"""Images end to end: the `dockyard` CLI against a real agent process, with skopeo and podman as peers.

podman always gets a private storage root, run root and tmp dir under the test's tmp_path (vfs driver,
no events) so the machine's own container state is never touched.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.agent import AgentProcess, FleetPki, run_cli
from tests.support.images import busybox_rootfs_tar, tree_summary

pytestmark = pytest.mark.root

CLI = Callable[..., subprocess.CompletedProcess[str]]


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (
        f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    )
    return result


@pytest.fixture
def busybox_tar(tmp_path: Path) -> Path:
    return busybox_rootfs_tar(tmp_path / "busybox.tar")


@pytest.fixture
def reference_tree(tmp_path: Path, busybox_tar: Path) -> dict[str, tuple[object, ...]]:
    """The busybox rootfs as GNU tar extracts it: the independent yardstick for our unpacked trees."""
    ref = tmp_path / "reference"
    ref.mkdir()
    subprocess.run(["tar", "-xpf", str(busybox_tar), "-C", str(ref), "--same-owner"], check=True)
    return tree_summary(ref)


class Podman:
    """podman with private storage under `root` (a peer in tests, never used by the product)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        for d in ("storage", "run", "tmp"):
            (root / d).mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            "podman",
            "--root", str(self.root / "storage"),
            "--runroot", str(self.root / "run"),
            "--tmpdir", str(self.root / "tmp"),
            "--storage-driver", "vfs",
            "--events-backend", "none",
            "--cgroup-manager", "cgroupfs",
            *args,
        ]  # fmt: skip
        env = {**os.environ, "TMPDIR": str(self.root / "tmp")}
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def podman() -> Iterator[Podman]:
    # podman refuses a run root longer than 50 characters: pytest's tmp_path is too long.
    root = Path(tempfile.mkdtemp(prefix="dy-images-podman-", dir="/tmp"))
    try:
        yield Podman(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def skopeo_inspect(transport_ref: str) -> dict[str, Any]:
    out = subprocess.run(
        ["skopeo", "inspect", transport_ref], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def inspect(cli: CLI, ref: str) -> dict[str, Any]:
    return json.loads(ok(cli("image", "inspect", ref)).stdout)[0]  # type: ignore[no-any-return]


def snapshot_tree(agent: AgentProcess, image: dict[str, Any]) -> dict[str, tuple[object, ...]]:
    chain = image["layers"][-1]["chain_id"].split(":")[1]
    return tree_summary(agent.data_root / "snapshots" / chain / "fs")


def test_import_list_tag_inspect_rmi(
    cli: CLI, agent: AgentProcess, busybox_tar: Path, reference_tree: dict[str, tuple[object, ...]]
) -> None:
    imported = ok(cli("import", str(busybox_tar), "busybox:test", "-c", 'CMD ["sh"]', "-m", "from tests"))
    image_id = imported.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71

    table = ok(cli("images")).stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == ["busybox", "test", image_id[7:19]]
    assert ok(cli("images", "-q")).stdout.split() == [image_id[7:19]]

    ok(cli("tag", "busybox:test", "127.0.0.1:5999/team/bb:v1"))
    listed = json.loads(ok(cli("--format", "json", "images")).stdout)
    assert sorted(listed[0]["names"]) == ["127.0.0.1:5999/team/bb:v1", "docker.io/library/busybox:test"]
    assert "DIGEST" in ok(cli("images", "--digests")).stdout

    details = inspect(cli, "busybox:test")
    assert details["id"] == image_id
    assert details["config"]["config"]["Cmd"] == ["sh"]
    assert details["config"]["history"][0]["comment"] == "from tests"
    assert snapshot_tree(agent, details) == reference_tree

    removed = ok(cli("rmi", "busybox:test"))
    assert removed.stdout.strip() == "Untagged: busybox:test"  # another name is left: untag only
    removed = ok(cli("rmi", "127.0.0.1:5999/team/bb:v1"))
    assert f"Deleted: {details['digest']}" in removed.stdout
    assert ok(cli("images", "-q")).stdout.strip() == ""
    assert list((agent.data_root / "content" / "blobs" / "sha256").iterdir()) == []

    missing = cli("rmi", "busybox:test")
    assert missing.returncode == 1 and "not found" in missing.stderr


def test_dockyard_save_is_read_by_skopeo_and_podman(
    cli: CLI, busybox_tar: Path, tmp_path: Path, podman: Podman
) -> None:
    ok(cli("import", str(busybox_tar), "busybox:saved"))
    image = inspect(cli, "busybox:saved")
    docker_archive = tmp_path / "saved-docker.tar"
    oci_archive = tmp_path / "saved-oci.tar"
    ok(cli("save", "busybox:saved", "-o", str(docker_archive)))
    ok(cli("save", "--format", "oci", "-o", str(oci_archive), "busybox:saved"))

    seen = skopeo_inspect(f"docker-archive:{docker_archive}")
    assert seen["Layers"] == [image["layers"][0]["diff_id"]]
    assert seen["Architecture"] == "amd64" and seen["Os"] == "linux"
    seen_oci = skopeo_inspect(f"oci-archive:{oci_archive}")
    assert seen_oci["Digest"] == image["digest"]  # OCI archives keep the manifest byte for byte

    loaded = podman("load", "-i", str(docker_archive))
    assert loaded.returncode == 0, loaded.stderr
    assert "docker.io/library/busybox:saved" in loaded.stdout
    loaded_oci = podman("load", "-i", str(oci_archive))
    assert loaded_oci.returncode == 0, loaded_oci.stderr
    images = podman("images", "--format", "{{.ID}}")
    assert images.stdout.split()[0] == image["id"][7:19]


@pytest.mark.parametrize("podman_format", ["docker-archive", "oci-archive", "docker-archive+gzip"])
def test_podman_save_loads_into_dockyard(
    cli: CLI,
    agent: AgentProcess,
    busybox_tar: Path,
    reference_tree: dict[str, tuple[object, ...]],
    tmp_path: Path,
    podman: Podman,
    podman_format: str,
) -> None:
    imported = podman("import", str(busybox_tar), "localhost/bbpod:1")
    assert imported.returncode == 0, imported.stderr
    archive = tmp_path / "podman.tar"
    fmt = podman_format.removesuffix("+gzip")
    saved = podman("save", "--format", fmt, "-o", str(archive), "localhost/bbpod:1")
    assert saved.returncode == 0, saved.stderr
    if podman_format.endswith("+gzip"):
        archive.write_bytes(gzip.compress(archive.read_bytes(), compresslevel=1))

    loaded = ok(cli("load", "-i", str(archive)))
    assert loaded.stdout.strip() == "Loaded image: localhost/bbpod:1"
    image = inspect(cli, "localhost/bbpod:1")
    assert image["id"][7:19] == podman("images", "--format", "{{.ID}}").stdout.split()[0]
    assert snapshot_tree(agent, image) == reference_tree


def test_remote_load_import_df_and_prune_over_mtls(
    fleet_pki: FleetPki, agent: AgentProcess, busybox_tar: Path, tmp_path: Path
) -> None:
    def remote(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(fleet_pki.config_dir, *args, host=agent.tcp_target)

    gz = tmp_path / "busybox.tar.gz"
    gz.write_bytes(gzip.compress(busybox_tar.read_bytes()))
    ok(remote("import", str(gz), "remote/busybox:gz"))
    archive = tmp_path / "remote.tar"
    ok(remote("save", "remote/busybox:gz", "-o", str(archive)))
    ok(remote("rmi", "remote/busybox:gz"))
    assert ok(remote("load", "-i", str(archive))).stdout.strip() == "Loaded image: remote/busybox:gz"

    df = ok(remote("--format", "json", "system", "df"))
    usage = json.loads(df.stdout)
    assert usage["images"]["total"] == 1 and usage["snapshots"]["total"] == 1
    assert usage["content"]["size"] > len(gz.read_bytes())
    table = ok(remote("system", "df")).stdout
    assert table.splitlines()[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]

    ok(remote("tag", "remote/busybox:gz", "remote/busybox:other"))
    ok(remote("rmi", "remote/busybox:gz"))  # untags only: "other" still names the image
    assert ok(remote("image", "prune", "-f")).stdout.strip() == "Total reclaimed space: 0B"  # not dangling
    pruned = ok(remote("image", "prune", "-a", "-f")).stdout
    assert "untagged: remote/busybox:other" in pruned and "Total reclaimed space: 0B" not in pruned
    after = json.loads(ok(remote("--format", "json", "system", "df")).stdout)
    assert (
        after["images"]["total"] == 0 and after["content"]["blobs"] == 0 and after["snapshots"]["total"] == 0
    )


def test_cli_errors_are_one_line_and_leave_nothing(cli: CLI, agent: AgentProcess, tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not an archive" * 1000)
    result = cli("load", "-i", str(junk))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "not an image archive" in result.stderr
    assert "Traceback" not in result.stderr

    result = cli("import", str(junk), "junk:1")
    assert result.returncode == 1 and "not a tar archive" in result.stderr

    out = tmp_path / "nothing.tar"
    result = cli("save", "no/such:image", "-o", str(out))
    assert result.returncode == 1 and "not found" in result.stderr
    assert not out.exists() and list(tmp_path.glob(".nothing.tar.part-*")) == []

    result = cli("load", "-i", str(tmp_path / "absent.tar"))
    assert result.returncode == 2 and "no such file" in result.stderr
    result = cli("import", str(junk), "Bad:Name")
    assert result.returncode == 1 and "invalid reference" in result.stderr

    assert ok(cli("images", "-q")).stdout.strip() == ""
    tmp = agent.data_root / "tmp" / "images"
    assert not tmp.exists() or list(tmp.iterdir()) == []
