"""`dockyard commit` against a real agent, runc and conmon; the result pushed to a real registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.transfer.conftest import IMAGE, HostFactory
from tests.support.registry import running_registry, skopeo

pytestmark = pytest.mark.root


def test_commit_keeps_added_and_deleted_files_config_and_history(hosts: HostFactory) -> None:
    (a,) = hosts("a")
    a.ok(
        "run", "-d", "--name", "src", "--network", "none", "-e", "FROM_RUN=1", "--label", "team=x",
        IMAGE, "sh", "-c", "echo added > /srv-added.txt; "
        "rm /bin/vi; mkdir -p /data/deep; echo deep > /data/deep/f; exec sleep 600",
    )  # fmt: skip
    assert "deep" in a.exec("src", "cat", "/data/deep/f")

    out = a.ok(
        "commit", "-m", "snapshot one", "-a", "Tester <t@example.com>",
        "-c", "ENV MODE=committed", "-c", 'CMD ["cat", "/srv-added.txt"]', "-c", "EXPOSE 8080",
        "-c", "LABEL stage=two", "-c", "WORKDIR /data", "-c", "VOLUME /cache",
        "src", "committed:1",
    )  # fmt: skip
    image_id = out.strip()
    assert image_id.startswith("sha256:")
    # the container kept running (it was paused for the commit, then resumed)
    assert a.inspect("src")["status"] == "running"

    info = json.loads(a.ok("image", "inspect", "committed:1"))[0]
    base = json.loads(a.ok("image", "inspect", IMAGE))[0]
    assert info["id"] == image_id
    assert [x["digest"] for x in info["layers"][:-1]] == [x["digest"] for x in base["layers"]]
    assert len(info["layers"]) == len(base["layers"]) + 1
    cfg = info["config"]["config"]
    assert "MODE=committed" in cfg["Env"] and "FROM_RUN=1" in cfg["Env"]
    assert cfg["Cmd"] == ["cat", "/srv-added.txt"]
    assert cfg["Labels"] == {"team": "x", "stage": "two"}
    assert "8080/tcp" in cfg["ExposedPorts"] and "/cache" in cfg["Volumes"]
    assert cfg["WorkingDir"] == "/data"
    history = info["config"]["history"][-1]
    assert history["comment"] == "snapshot one" and history["author"] == "Tester <t@example.com>"
    assert info["config"]["author"] == "Tester <t@example.com>"

    # a container of the committed image sees the added file and not the deleted one
    run = a.cli("run", "--rm", "--network", "none", "committed:1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "added"
    check = a.cli(
        "run", "--rm", "--network", "none", "committed:1", "sh", "-c",
        "test ! -e /bin/vi && test -x /bin/ls && cat /data/deep/f && pwd && echo $MODE",
    )  # fmt: skip
    assert check.returncode == 0, check.stderr
    assert check.stdout.split() == ["deep", "/data", "committed"]


def test_commit_without_pause_untagged_and_bad_changes(hosts: HostFactory) -> None:
    (a,) = hosts("a")
    a.ok("run", "-d", "--name", "c1", "--network", "none", IMAGE, "sh", "-c", "touch /x; exec sleep 600")
    out = a.ok("commit", "--pause=false", "c1")
    image_id = out.strip()
    listed = json.loads(a.ok("--format", "json", "images"))
    assert any(i["id"] == image_id and not i["names"] for i in listed)
    assert not any(e.get("paused") for e in a.events("container.committed"))

    bad = a.cli("commit", "-c", "RUN echo hi", "c1", "bad:1")
    assert bad.returncode == 1
    assert "RUN is not allowed" in bad.stderr and "Traceback" not in bad.stderr
    assert a.cli("image", "inspect", "bad:1").returncode != 0
    missing = a.cli("commit", "no-such-container", "x:1")
    assert missing.returncode == 1 and "no-such-container" in missing.stderr
    badref = a.cli("commit", "c1", "UPPER/Case:1")
    assert badref.returncode == 1 and "Traceback" not in badref.stderr


def test_committed_image_pushes_to_a_registry_and_skopeo_reads_it(hosts: HostFactory, tmp_path: Path) -> None:
    with running_registry(tmp_path / "registry", "http") as registry:
        (a,) = hosts("a", extra_args=("--insecure-registry", registry.host))
        a.ok(
            "run",
            "-d",
            "--name",
            "w",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "echo hi > /hello; rm /bin/vi; sleep 600",
        )
        ref = f"{registry.host}/commits/w:1"
        a.ok("commit", "w", ref)
        pushed = a.cli("push", ref, timeout=120)
        assert pushed.returncode == 0, pushed.stderr
        raw = skopeo(["inspect", "--raw", f"docker://{ref}", *registry.skopeo_args("")], tmp_path / "skopeo")
        manifest = json.loads(raw.stdout)
        local = json.loads(a.ok("image", "inspect", ref))[0]
        assert [x["digest"] for x in manifest["layers"]] == [x["digest"] for x in local["layers"]]
        # skopeo copies it out; the top layer holds the new file and the whiteout of the deleted one
        copied = skopeo(
            ["copy", *registry.skopeo_args("src"), f"docker://{ref}", f"oci:{tmp_path / 'oci'}:w"],
            tmp_path / "skopeo",
        )
        assert copied.returncode == 0, copied.stderr
        top = manifest["layers"][-1]["digest"].split(":", 1)[1]
        import tarfile

        with tarfile.open(tmp_path / "oci" / "blobs" / "sha256" / top) as tf:
            names = tf.getnames()
        assert "hello" in names and "bin/.wh.vi" in names
        # what runc made to mount over (/etc/hosts, /etc/resolv.conf) stays out, as with docker commit
        assert "etc/hosts" not in names and "etc/resolv.conf" not in names
