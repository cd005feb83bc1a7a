"""`dockyard build` end to end: the CLI streams a context to a real agent, which builds with runc and stores
the image; the built images then run on the same agent and behave as their Dockerfiles say.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.hostinfo import oci_arch
from tests.integration.build.conftest import BUSYBOX, Cli, Net, failed, leftovers, ok, sh
from tests.support.agent import AgentProcess, wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]

Ctx = Callable[..., Path]


def image_config(cli: Cli, ref: str) -> dict[str, Any]:
    """The image config (OCI JSON) as `dockyard image inspect` shows it."""
    config: dict[str, Any] = json.loads(ok(cli("image", "inspect", ref)).stdout)[0]["config"]
    return config


def built_id(result: str) -> str:
    m = re.search(r"Successfully built ([0-9a-f]{12})", result)
    assert m, result
    return m.group(1)


def printed(out: str, line: str) -> bool:
    """Whether a step printed exactly this line (the step headers echo the command text too)."""
    return line in out.splitlines()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


EVERY = r"""# syntax=docker/dockerfile:1
ARG BASE=busybox:test
ARG GLOBAL_ONLY=global-default
FROM ${BASE} AS base
ARG GLOBAL_ONLY
ARG VERSION=1.0
ARG FROM_CLI
ARG TARGETARCH
ENV APP_HOME=/srv/app \
    GREETING="hello world"
ENV LEGACY legacy form value
LABEL org.example.version=$VERSION "org.example.title"="every instruction"
MAINTAINER someone@example.com
# comments and continuations are fine anywhere
RUN echo "global=$GLOBAL_ONLY version=$VERSION cli=$FROM_CLI proxy=$HTTP_PROXY arch=$TARGETARCH" \
    > /build-args.txt
RUN ["/bin/sh", "-c", "echo exec form > /exec.txt"]
RUN --network=none ls /sys/class/net > /net-none.txt
RUN ls /sys/class/net > /net-default.txt
RUN --network=host ls /sys/class/net > /net-host.txt
RUN echo 'app:x:1000:1000:app:/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1000:' >> /etc/group \
 && mkdir -p /home/app && chown app:app /home/app
WORKDIR $APP_HOME
WORKDIR sub
COPY --chown=app:app --chmod=0640 files/*.txt ./
COPY ["files/with space.dat", "/data/"]
ADD archive.tar.gz /opt/
ADD plain.bin /opt/plain.bin
EXPOSE 8080 53/udp
VOLUME ["/data"]
SHELL ["/bin/sh", "-ec"]
RUN echo "$0 $-" > /shell.txt
USER app
RUN id -un > /tmp/whoami.txt && touch /home/app/made-by-app
STOPSIGNAL SIGINT
HEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD test -f /srv/app/sub/a.txt
ONBUILD RUN echo triggered > /tmp/onbuild.txt
ENTRYPOINT ["/bin/sh", "-c", "echo \"entry $0 $* | $GREETING | $(pwd) | $(id -un)\"", "arg0"]
CMD ["c1", "c2"]
"""


def test_every_instruction_builds_and_the_image_behaves(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess, tmp_path: Path, net: Net
) -> None:
    ctx = context_dir(
        "every",
        EVERY,
        {
            "files/a.txt": "A\n",
            "files/b.txt": "B\n",
            "files/skip.md": "not copied\n",
            "files/with space.dat": "spaced\n",
            "archive.tar.gz": tar_gz({"pkg/inner.txt": b"from the archive\n"}),
            "plain.bin": b"\x00\x01 not an archive",
        },
    )
    result = ok(
        bcli(
            "build", "-t", "every:1", "-t", "every:latest",
            "--build-arg", "FROM_CLI=given", "--build-arg", "HTTP_PROXY=http://proxy.invalid:3128",
            "--label", "org.example.cli=yes", "--allow", "network.host", str(ctx),
        )
    )  # fmt: skip
    out = result.stdout
    assert "Step 1/32 : FROM busybox:test AS base" in out
    assert re.search(r"Step \d+/32 : RUN echo \"global=", out)
    assert "Successfully tagged docker.io/library/every:1" in out
    assert "Successfully tagged docker.io/library/every:latest" in out

    config = image_config(bcli, "every:1")
    cfg = config["config"]
    env = dict(e.split("=", 1) for e in cfg["Env"])
    assert env["APP_HOME"] == "/srv/app" and env["GREETING"] == "hello world"
    assert env["LEGACY"] == "legacy form value"
    assert "HTTP_PROXY" not in env and "FROM_CLI" not in env and "VERSION" not in env
    assert cfg["Labels"] == {
        "org.example.version": "1.0",
        "org.example.title": "every instruction",
        "org.example.cli": "yes",
    }
    assert cfg["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["WorkingDir"] == "/srv/app/sub"
    assert cfg["User"] == "app"
    assert cfg["StopSignal"] == "SIGINT"
    assert cfg["Shell"] == ["/bin/sh", "-ec"]
    assert cfg["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -f /srv/app/sub/a.txt"],
        "Interval": 1_000_000_000,
        "Timeout": 2_000_000_000,
        "Retries": 2,
    }
    assert cfg["OnBuild"] == ["RUN echo triggered > /tmp/onbuild.txt"]
    assert cfg["Cmd"] == ["c1", "c2"]
    assert cfg["Entrypoint"][0:2] == ["/bin/sh", "-c"]
    assert config["author"] == "someone@example.com"
    layers = [h for h in config["history"] if not h.get("empty_layer")]
    assert len(layers) == len(config["rootfs"]["diff_ids"])
    assert not any("proxy.invalid" in h["created_by"] for h in config["history"])

    # ENTRYPOINT + CMD, ENV, WORKDIR and USER as the container sees them
    ran = ok(bcli("run", "--rm", "every:1"))
    assert ran.stdout.strip() == "entry arg0 c1 c2 | hello world | /srv/app/sub | app"
    ran = ok(bcli("run", "--rm", "every:1", "x", "y"))
    assert ran.stdout.strip() == "entry arg0 x y | hello world | /srv/app/sub | app"

    script = (
        "cat /build-args.txt /exec.txt /net-none.txt /shell.txt /tmp/whoami.txt /opt/pkg/inner.txt /data/*;"
        "echo ---; ls -ln /srv/app/sub; echo ---; cat /net-default.txt /net-host.txt; echo ---;"
        "ls /home/app; ls /opt; test -f /opt/plain.bin && echo plain-copied;"
        "test -e /srv/app/sub/skip.md || echo no-md"
    )
    ran = ok(bcli("run", "--rm", "--entrypoint", "/bin/sh", "every:1", "-c", script)).stdout
    head, listing, default_net, tail = ran.split("---\n")
    lines = head.splitlines()
    shell_line = lines.pop(3)  # "$0 $-" of the RUN after SHELL ["/bin/sh", "-ec"]
    assert lines == [
        f"global=global-default version=1.0 cli=given proxy=http://proxy.invalid:3128 arch={oci_arch()}",
        "exec form",
        "lo",
        "app",
        "from the archive",
        "spaced",
    ]
    argv0, flags = shell_line.split()
    assert argv0 == "/bin/sh" and "e" in flags  # the SHELL's -e is in force
    rows = [line.split() for line in listing.splitlines() if line.startswith("-")]
    assert {(r[0], r[2], r[3], r[-1]) for r in rows} == {
        ("-rw-r-----", "1000", "1000", "a.txt"),
        ("-rw-r-----", "1000", "1000", "b.txt"),
    }
    assert "eth0" in default_net.split()  # RUN is on the default bridge unless --network says otherwise
    assert net.bridge in default_net.split()  # RUN --network=host sees the host's interfaces
    assert "made-by-app" in tail and "pkg" in tail and "plain-copied" in tail and "no-md" in tail

    # HEALTHCHECK is picked up by the agent
    cid = ok(bcli("run", "-d", "--entrypoint", "sleep", "every:1", "60")).stdout.strip()

    def healthy() -> bool:
        info = json.loads(bcli("--format", "json", "inspect", cid).stdout or "[]")
        item = info[0] if isinstance(info, list) and info else info
        return isinstance(item, dict) and item.get("health") == "healthy"

    wait_for(healthy, 30, "the container to become healthy from the image's HEALTHCHECK", interval=0.2)
    ok(bcli("rm", "-f", cid))

    # ONBUILD runs in the child build, and is not inherited further
    child = ok(
        bcli("build", "-t", "child:1", str(_child_ctx(tmp_path, "FROM every:1\nRUN cat /tmp/onbuild.txt\n")))
    )
    assert printed(child.stdout, "triggered")
    assert "OnBuild" not in image_config(bcli, "child:1")["config"]
    assert leftovers(build_agent) == []


def _child_ctx(tmp_path: Path, dockerfile: str) -> Path:
    ctx = tmp_path / "child"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return ctx


MATRIX = """# escape=`
FROM busybox:test AS base
CMD ["echo", "base-cmd"]

FROM base AS exec_exec
ENTRYPOINT ["echo", "e"]
CMD ["c"]

FROM base AS exec_shell
ENTRYPOINT ["echo", "e"]
CMD c

FROM base AS shell_entry
ENTRYPOINT echo shell-entry
CMD ["ignored"]

FROM base AS cmd_reset
ENTRYPOINT ["echo", "reset"]

FROM base AS cmd_shell
CMD echo `
    continued
"""


MATRIX_CASES = [  # (target, run args, expected output, steps in the build)
    ("base", (), "base-cmd", 2),
    ("exec_exec", (), "e c", 5),
    ("exec_exec", ("x", "y"), "e x y", 5),
    ("exec_shell", (), "e /bin/sh -c c", 5),
    ("shell_entry", ("ignored-too",), "shell-entry", 5),
    ("cmd_reset", (), "reset", 4),
    ("cmd_shell", (), "continued", 4),
]


def test_entrypoint_cmd_combinations(bcli: Cli, busybox: str, context_dir: Ctx) -> None:
    """Docker's ENTRYPOINT/CMD table, one stage per row, each built with --target."""
    ctx = context_dir("matrix", MATRIX)
    for target, args, expected, steps in MATRIX_CASES:
        out = ok(bcli("build", "--target", target, "-t", f"m:{target}", str(ctx))).stdout
        assert set(re.findall(r"Step \d+/(\d+) :", out)) == {str(steps)}, out
        ran = ok(bcli("run", "--rm", f"m:{target}", *args)).stdout.strip()
        assert ran == expected, (target, args)


SCRATCH = """FROM busybox:test AS builder
RUN mkdir /out && echo built-in-stage > /out/msg.txt
RUN rm /bin/true

FROM scratch AS final
COPY busybox /bin/busybox
COPY --from=builder /out/ /data/
COPY --from=0 /etc/passwd /etc/group /etc/
COPY --from=busybox:test /etc/hostname /etc/hostname-from-image
USER nobody
CMD ["/bin/busybox", "sh", "-c", "cat /data/msg.txt /etc/hostname-from-image; /bin/busybox id -u"]
"""


def test_scratch_multi_stage_copy_from_and_target_over_mtls(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess
) -> None:
    ctx = context_dir("scratch", SCRATCH, {"busybox": Path("/bin/busybox").read_bytes()})
    (ctx / "busybox").chmod(0o755)  # COPY keeps the context file's mode
    tcp = build_agent.tcp_target  # -H over TCP: mutual TLS, as for a remote agent
    out = ok(bcli("build", "-t", "scratchy:1", str(ctx), host=tcp)).stdout
    assert "Step 10/10" in out
    ran = ok(bcli("run", "--rm", "scratchy:1")).stdout.split()
    assert ran == ["built-in-stage", "busybox", "65534"]
    config = image_config(bcli, "scratchy:1")
    assert len(config["rootfs"]["diff_ids"]) == 4  # four COPYs, no base layers
    assert config["config"]["User"] == "nobody"

    out = ok(bcli("build", "--target", "builder", "-t", "scratchy:builder", str(ctx), host=tcp)).stdout
    assert "Step 3/3" in out and "FROM scratch" not in out  # the later stage is not built
    assert out.count("CACHED") == 2
    ran = ok(
        bcli(
            "run",
            "--rm",
            "scratchy:builder",
            "sh",
            "-c",
            "cat /out/msg.txt; test -e /bin/true || echo no-true",
        )
    )
    assert ran.stdout.split() == ["built-in-stage", "no-true"]

    unknown = failed(bcli("build", "--target", "nope", str(ctx)))
    assert "target stage 'nope' could not be found" in unknown.stderr

    # --platform: a COPY-only build for another architecture works, a RUN for it cannot
    other = "linux/arm64" if oci_arch() != "arm64" else "linux/amd64"
    copy_only = context_dir("foreign", "FROM scratch\nCOPY busybox /bin/busybox\n", {"busybox": b"x"})
    ok(bcli("build", "--platform", other, "-t", "scratchy:foreign", str(copy_only)))
    assert image_config(bcli, "scratchy:foreign")["architecture"] == other.split("/")[1]
    run_foreign = context_dir("foreign-run", "FROM busybox:test\nRUN true\n")
    refused = failed(bcli("build", "--platform", other, str(run_foreign)))
    assert f"line 2: RUN: cannot run commands for platform {other}" in refused.stderr
    assert leftovers(build_agent) == []


CACHE = """FROM busybox:test
RUN echo step-one && echo 1 > /one
COPY a.txt /a.txt
RUN echo "after-copy $(cat /a.txt)" && cp /a.txt /b.txt
COPY . /ctx/
"""


def test_cache_hits_misses_and_no_cache(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess
) -> None:
    ctx = context_dir(
        "cache", CACHE, {"a.txt": "A1\n", "ignored.log": "x\n", "keep.txt": "k\n", ".dockerignore": "*.log\n"}
    )
    first = ok(bcli("build", "-t", "cached:1", str(ctx))).stdout
    assert "CACHED" not in first and printed(first, "step-one") and printed(first, "after-copy A1")
    image = built_id(first)

    again = ok(bcli("build", "-t", "cached:1", str(ctx))).stdout
    assert again.count(" ---> CACHED") == 4
    assert not printed(again, "step-one") and not printed(again, "after-copy A1")
    assert built_id(again) == image  # an unchanged rebuild gives the same image

    (ctx / "ignored.log").write_text("changed, but ignored\n")
    assert ok(bcli("build", "-t", "cached:1", str(ctx))).stdout.count(" ---> CACHED") == 4

    (ctx / "a.txt").write_text("A2\n")
    changed = ok(bcli("build", "-t", "cached:1", str(ctx))).stdout
    assert changed.count(" ---> CACHED") == 1  # only the RUN before the COPY that reads a.txt
    assert not printed(changed, "step-one") and printed(changed, "after-copy A2")
    assert built_id(changed) != image

    fresh = ok(bcli("build", "--no-cache", "-t", "cached:1", str(ctx))).stdout
    assert "CACHED" not in fresh and printed(fresh, "step-one")
    from_stdin = ok(bcli("build", "-q", "-f", "-", str(ctx), input=CACHE.encode())).stdout.strip()
    assert from_stdin.split(":", 1)[1].startswith(built_id(fresh))  # the Dockerfile from stdin: all cached
    listing = ok(bcli("run", "--rm", "cached:1", "sh", "-c", "cat /b.txt; ls -a /ctx")).stdout.split()
    assert listing[0] == "A2"
    assert "ignored.log" not in listing and "keep.txt" in listing and ".dockerignore" in listing
    assert leftovers(build_agent) == []


BAD: list[tuple[str, dict[str, str], str]] = [
    ("FROM busybox:test\nRUN true\nFROOM x\n", {}, "Dockerfile line 3: unknown instruction: FROOM"),
    ("RUN true\nFROM busybox:test\n", {}, "Dockerfile line 1: RUN before the first FROM"),
    ("# only a comment\n", {}, "no FROM instruction"),
    (
        "FROM busybox:test\nCOPY ../outside.txt /x\n",
        {},
        "line 2: COPY: forbidden path outside the build context",
    ),
    (
        "FROM busybox:test\nCOPY missing.txt /x\n",
        {},
        "line 2: COPY: missing.txt: not found in the build context",
    ),
    ("FROM busybox:test\nCOPY *.nothing /x/\n", {}, "line 2: COPY: no source files were specified"),
    ("FROM busybox:test\nCOPY a b /notadir\n", {"a": "1", "b": "2"}, "the destination must be a directory"),
    (
        "FROM busybox:test\nRUN echo partial > /p\nRUN echo before-fail && false\n",
        {},
        "line 3: RUN /bin/sh -c echo before-fail && false: the command returned a non-zero code: 1",
    ),
    ("FROM busybox:test\nUSER ghost\nRUN true\n", {}, "unable to find user ghost"),
    (
        "FROM busybox:test\nCOPY --chown=ghost a /a\n",
        {"a": "1"},
        "line 2: COPY: --chown=ghost: unable to find user",
    ),
    ("FROM busybox:test\nWORKDIR ${NOPE:?must be set}\n", {}, "line 2: WORKDIR: NOPE: must be set"),
    (
        "FROM busybox:test\nADD http://example.invalid/x /x\n",
        {},
        "line 2: ADD: remote sources are not supported",
    ),
    ("FROM 127.0.0.1:1/nothing/here:1\n", {}, "line 1: FROM: cannot pull 127.0.0.1:1/nothing/here:1"),
]


def test_bad_dockerfiles_stop_with_the_line_and_leave_nothing(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess
) -> None:
    for i, (dockerfile, files, message) in enumerate(BAD):
        ctx = context_dir(f"bad{i}", dockerfile, files)
        result = failed(bcli("build", "-t", f"bad:{i}", str(ctx)))
        assert message in result.stderr, (dockerfile, result.stderr)
        assert result.stderr.startswith("error: "), result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert leftovers(build_agent) == [], dockerfile
    images = ok(bcli("images")).stdout
    assert "bad" not in images
    ps = ok(bcli("ps", "-a")).stdout.splitlines()
    assert len(ps) <= 1  # the header only: no container of any build remains


def test_interrupted_build_and_killed_agent_leave_nothing(
    bcli: Cli, busybox: str, context_dir: Ctx, build_agent: AgentProcess, fleet_pki: Any, net: Net
) -> None:
    import subprocess

    from tests.support.agent import CLI_BIN

    ctx = context_dir("slow", "FROM busybox:test\nRUN echo started && sleep 60\n")
    env = {"DOCKYARD_CONFIG_DIR": str(fleet_pki.config_dir), "PATH": "/usr/bin:/bin"}

    def start_build() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [CLI_BIN, "-H", build_agent.unix_target, "build", str(ctx)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        seen: list[str] = []
        while "started" not in seen:  # the RUN's own output, not the step header that mentions it
            line = proc.stdout.readline()
            assert line, f"the build ended early: {seen}"
            seen.append(line.rstrip("\n"))
        return proc

    # the client goes away: the agent stops the step and cleans up
    proc = start_build()
    proc.kill()
    proc.wait()
    wait_for(lambda: leftovers(build_agent) == [], 20, "the cancelled build to be cleaned up", interval=0.1)

    # the agent dies mid-step: the next agent process cleans up at start
    proc = start_build()
    build_agent.kill()
    proc.wait(10)
    assert leftovers(build_agent) != []  # the half-done step really was there
    build_agent.start()
    assert leftovers(build_agent) == []
    ports = sh("ip", "-o", "link", "show", "master", net.bridge).stdout
    assert ports.strip() == "", ports  # the step's veth went with its namespace
    assert ok(
        bcli("build", "-q", str(context_dir("after", "FROM busybox:test\nRUN true\n")))
    ).stdout.startswith("sha256:")


def test_push_to_registry_readable_by_skopeo_with_whiteouts(
    build_agent_factory: Callable[..., AgentProcess],
    fleet_pki: Any,
    context_dir: Ctx,
    tmp_path: Path,
) -> None:
    from tests.support.agent import run_cli
    from tests.support.images import busybox_rootfs_tar
    from tests.support.registry import running_registry, skopeo

    with running_registry(tmp_path / "registry", "http") as registry:
        agent = build_agent_factory("pusher", ("--insecure-registry", registry.host))

        def cli(*args: str) -> Any:
            return run_cli(fleet_pki.config_dir, *args, host=agent.unix_target, timeout=120)

        ok(cli("import", str(busybox_rootfs_tar(tmp_path / "bb.tar")), BUSYBOX))
        ref = f"{registry.host}/test/app:1"
        ctx = context_dir(
            "push",
            "FROM busybox:test\n"
            "RUN mkdir /d && echo keep > /d/keep && echo gone > /d/gone && echo x > /top\n"
            "RUN rm /d/gone /top && rm -r /usr/sbin && mkdir /usr/sbin && echo new > /usr/sbin/only\n",
        )
        ok(cli("build", "-t", ref, str(ctx)))
        ok(cli("push", ref))

        info = json.loads(
            skopeo(["inspect", "--tls-verify=false", f"docker://{ref}"], tmp_path / "sk").stdout
        )
        assert len(info["Layers"]) == 3
        layout = tmp_path / "layout"
        skopeo(["copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:app"], tmp_path / "sk")
        index = json.loads((layout / "index.json").read_text())
        manifest = json.loads(_blob(layout, index["manifests"][0]["digest"]))
        last = tarfile.open(
            fileobj=io.BytesIO(gzip.decompress(_blob(layout, manifest["layers"][-1]["digest"])))
        )
        names = set(last.getnames())
        assert {"d/.wh.gone", ".wh.top", "usr/sbin/.wh..wh..opq", "usr/sbin/only"} <= names

        tree = _apply_layers(layout, manifest, tmp_path / "tree")
        assert (tree / "d" / "keep").read_text() == "keep\n"
        assert not (tree / "d" / "gone").exists() and not (tree / "top").exists()
        assert sorted(p.name for p in (tree / "usr" / "sbin").iterdir()) == ["only"]
        assert (tree / "bin" / "busybox").is_file()

        # FROM an image that is only in the registry: the build pulls it
        ok(cli("rmi", ref))
        ok(cli("rmi", BUSYBOX))
        child = context_dir("pull", f"FROM {ref}\nRUN cat /d/keep && test ! -e /d/gone\n")
        out = ok(cli("build", "-t", "fromregistry:1", str(child))).stdout
        assert printed(out, "keep")
        assert leftovers(agent) == []


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":", 1)[1]).read_bytes()


def _apply_layers(layout: Path, manifest: dict[str, Any], root: Path) -> Path:
    """An independent applier (the OCI spec's rules, not the agent's code): whiteouts delete, opaque
    markers clear the directory's earlier contents, everything else is extracted in order."""
    root.mkdir()
    for layer in manifest["layers"]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(_blob(layout, layer["digest"])))) as tf:
            members = tf.getmembers()
            for m in members:
                parent, _, base = m.name.rpartition("/")
                target_dir = root / parent
                if base == ".wh..wh..opq":
                    for child in list(target_dir.iterdir()) if target_dir.is_dir() else []:
                        if child.is_dir() and not child.is_symlink():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                elif base.startswith(".wh."):
                    victim = target_dir / base[4:]
                    if victim.is_dir() and not victim.is_symlink():
                        shutil.rmtree(victim)
                    elif victim.exists() or victim.is_symlink():
                        victim.unlink()
            rest = [m for m in members if not m.name.rpartition("/")[2].startswith(".wh.")]
            tf.extractall(root, members=rest, filter="tar")
    return root
