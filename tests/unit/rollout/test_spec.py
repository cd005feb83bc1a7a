"""Release files: parsing, one-line errors with file:line:key, the wire form and its digest."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidArgument
from agent.network.ports import parse_publish
from controller.api.containers import config_message
from controller.commands.containers_run import container_config, run
from controller.errors import ControllerError
from controller.rollout import spec
from controller.rollout.spec import SpecError

GOOD = """\
name = "web"                      # release name
[containers.app]
image = "registry.lab:5000/shop/web:2"
command = ["/bin/httpd", "-f", "-p", "8080"]
env = { MODE = "prod" }
ports = ["8080:8080"]
volumes = ["web-data:/data"]
restart = "always"
memory = "256m"
depends_on = ["sidecar"]
[containers.app.health]
cmd = ["wget", "-q", "-O-", "http://127.0.0.1:8080/"]
interval = "2s"
timeout = "1s"
retries = 3
start_period = "3s"
[containers.sidecar]
image = "registry.lab:5000/shop/logship:1"
"""
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


def parse(text: str) -> spec.Release:
    return spec.parse(textwrap.dedent(text), "web.toml")


def error(text: str) -> str:
    with pytest.raises(SpecError) as info:
        parse(text)
    return str(info.value)


def test_the_issue_example_parses() -> None:
    release = parse(GOOD)
    assert release.name == "web"
    assert [c.name for c in release.containers] == ["app", "sidecar"]
    app = release.containers[0]
    assert app.depends_on == ("sidecar",)
    c = app.config
    assert c.image == "registry.lab:5000/shop/web:2"
    assert c.command == ("/bin/httpd", "-f", "-p", "8080")
    assert c.env == ("MODE=prod",)
    assert c.publish == ("8080:8080",)
    assert c.volumes == ("web-data:/data",)
    assert (c.restart, c.memory) == ("always", "256m")
    assert c.health_cmd == "wget -q -O- http://127.0.0.1:8080/"
    assert (c.health_interval, c.health_timeout, c.health_retries, c.health_start_period) == (
        "2s",
        "1s",
        3,
        "3s",
    )
    assert release.start_order() == ("sidecar", "app")
    assert release.images() == ("registry.lab:5000/shop/web:2", "registry.lab:5000/shop/logship:1")


def _run_flags(argv: list[str]) -> Any:
    ctx = run.make_context("run", argv)
    params = dict(ctx.params)
    params.pop("detach")
    return container_config(params.pop("image"), params.pop("command"), params)


def test_a_container_goes_on_the_wire_as_dockyard_run_sends_the_same_flags() -> None:
    """The release's ContainerConfig message is the one `dockyard run` builds from the same options."""
    release = parse(
        """\
        name = "web"
        [containers.app]
        image = "busybox"
        command = "httpd -f -p 8080"
        env = ["A=1", "B=two words"]
        labels = { tier = "front" }
        memory-swap = "1g"
        memory = "512m"
        cpus = 0.5
        publish = ["127.0.0.1:8080:80/udp", "9000"]
        tmpfs = ["/run"]
        ulimit = ["nofile=1024:2048"]
        cap_add = ["NET_ADMIN"]
        read_only = true
        stop_signal = "SIGINT"
        stop_timeout = 3
        pids_limit = 100
        user = "1000:1000"
        workdir = "/srv"
        entrypoint = "/bin/sh"
        [containers.app.health]
        cmd = "wget -q localhost"
        interval = "5s"
        retries = 2
        """
    )
    argv = [
        *("-e", "A=1", "-e", "B=two words", "-l", "tier=front", "--memory-swap", "1g", "-m", "512m"),
        *("--cpus", "0.5", "-p", "127.0.0.1:8080:80/udp", "-p", "9000", "--tmpfs", "/run"),
        *("--ulimit", "nofile=1024:2048", "--cap-add", "NET_ADMIN", "--read-only", "--stop-signal", "SIGINT"),
        *("--stop-timeout", "3", "--pids-limit", "100", "-u", "1000:1000", "-w", "/srv"),
        *("--entrypoint", "/bin/sh", "--health-cmd", "wget -q localhost", "--health-interval", "5s"),
        *("--health-retries", "2", "busybox", "httpd", "-f", "-p", "8080"),
    ]
    assert config_message(release.containers[0].config) == config_message(_run_flags(argv))


BAD: list[tuple[str, str, str]] = [
    (
        "unknown key",
        """\
        name = "web"
        [containers.app]
        image = "busybox"
        memroy = "256m"
        """,
        "web.toml:4: containers.app.memroy: unknown key (did you mean memory?)",
    ),
    (
        "bad duration",
        """\
        name = "web"
        [containers.app]
        image = "busybox"
        [containers.app.health]
        cmd = ["true"]
        interval = "2 seconds"
        """,
        "web.toml:6: containers.app.health.interval: invalid duration '2 seconds': "
        "expected a duration such as 30s or 1m30s",
    ),
    (
        "bad release name",
        'name = "Web Shop"\n[containers.app]\nimage = "busybox"\n',
        "web.toml:1: name: invalid release name 'Web Shop': expected [a-z0-9][a-z0-9_.-]*, 1-63",
    ),
    (
        "bad container name",
        'name = "web"\n[containers.App]\nimage = "busybox"\n',
        "web.toml:2: containers.App: invalid container name 'App': expected [a-z0-9][a-z0-9_.-]*, 1-63",
    ),
    (
        "missing image",
        'name = "web"\n[containers.app]\ncommand = ["true"]\n',
        "web.toml:2: containers.app.image: missing (every container needs an image)",
    ),
    (
        "bad image reference",
        'name = "web"\n[containers.app]\nimage = "busybox:"\n',
        "web.toml:3: containers.app.image: invalid reference 'busybox:': tag '' must be 1-128 of "
        "[A-Za-z0-9_.-], not starting with . or -",
    ),
    (
        "bad port spec",
        'name = "web"\n[containers.app]\nimage = "busybox"\nports = ["80:http"]\n',
        "web.toml:4: containers.app.ports: invalid port '80:http': "
        "expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp]",
    ),
    (
        "port out of range",
        'name = "web"\n[containers.app]\nimage = "busybox"\nports = ["70000:80"]\n',
        "web.toml:4: containers.app.ports: invalid port '70000:80': host port 70000 is outside 1-65535",
    ),
    (
        "wrong type: command",
        'name = "web"\n[containers.app]\nimage = "busybox"\ncommand = 5\n',
        "web.toml:4: containers.app.command: expected an array of strings, got an integer",
    ),
    (
        "wrong type: retries",
        'name = "web"\n[containers.app]\nimage = "busybox"\nhealth = { cmd = ["true"], retries = "3" }\n',
        "web.toml:4: containers.app.health.retries: expected an integer, got a string",
    ),
    (
        "wrong type: env",
        'name = "web"\n[containers.app]\nimage = "busybox"\nenv = "A=B"\n',
        "web.toml:4: containers.app.env: expected a table of environment variables or an array of K=V "
        "strings, got a string",
    ),
    (
        "wrong type: read_only",
        'name = "web"\n[containers.app]\nimage = "busybox"\nread_only = "yes"\n',
        "web.toml:4: containers.app.read_only: expected true or false, got a string",
    ),
    (
        "wrong type: containers",
        'name = "web"\ncontainers = ["app"]\n',
        "web.toml:2: containers: expected a table, got an array",
    ),
    (
        "duplicate host port across containers",
        """\
        name = "web"
        [containers.app]
        image = "busybox"
        ports = ["8080:80"]
        [containers.admin]
        image = "busybox"
        ports = ["9090:90", "127.0.0.1:8080:8080"]
        """,
        "web.toml:7: containers.admin.ports: host port 8080/tcp of '127.0.0.1:8080:8080' is also "
        "published by containers.app ('8080:80')",
    ),
    (
        "duplicate host port in one container (the flag's name)",
        'name = "web"\n[containers.app]\nimage = "busybox"\npublish = ["53:53/udp", "53:5353/udp"]\n',
        "web.toml:4: containers.app.publish: host port 53/udp of '53:5353/udp' is also published by "
        "this container ('53:53/udp')",
    ),
    (
        "depends_on an unknown container",
        """\
        name = "web"
        [containers.app]
        image = "busybox"
        depends_on = ["sidecr"]
        [containers.sidecar]
        image = "busybox"
        """,
        "web.toml:4: containers.app.depends_on: unknown container 'sidecr' (did you mean sidecar?)",
    ),
    (
        "depends_on cycle",
        """\
        name = "web"
        [containers.a]
        image = "busybox"
        depends_on = ["b"]
        [containers.b]
        image = "busybox"
        depends_on = ["c"]
        [containers.c]
        image = "busybox"
        depends_on = ["a"]
        """,
        "web.toml:4: containers.a.depends_on: dependency cycle a → b → c → a",
    ),
    (
        "depends_on itself",
        'name = "web"\n[containers.a]\nimage = "busybox"\ndepends_on = ["a"]\n',
        "web.toml:4: containers.a.depends_on: dependency cycle a → a",
    ),
    (
        "empty release",
        'name = "web"\n',
        "web.toml:1: containers: the release has no containers (add a [containers.NAME] table)",
    ),
    (
        "empty containers table",
        'name = "web"\n\n[containers]\n',
        "web.toml:3: containers: the release has no containers (add a [containers.NAME] table)",
    ),
    (
        "missing name",
        '[containers.app]\nimage = "busybox"\n',
        'web.toml:1: name: missing (the release name, e.g. name = "web")',
    ),
    (
        "bad memory",
        'name = "web"\n[containers.app]\nimage = "busybox"\nmemory = "lots"\n',
        "web.toml:4: containers.app.memory: invalid --memory value 'lots': "
        "expected a size such as 512m or 1g",
    ),
    (
        "memory below the minimum",
        'name = "web"\n[containers.app]\nimage = "busybox"\nmemory = "1m"\n',
        "web.toml:4: containers.app.memory: invalid --memory value '1m': the minimum is 6m",
    ),
    (
        "bad cpus",
        'name = "web"\n[containers.app]\nimage = "busybox"\ncpus = 0\n',
        "web.toml:4: containers.app.cpus: invalid --cpus value '0': must be at least 0.01",
    ),
    (
        "unknown top-level key",
        'nmae = "web"\n[containers.app]\nimage = "busybox"\n',
        "web.toml:1: nmae: unknown key (did you mean name?)",
    ),
    (
        "a name for a container",
        'name = "web"\n[containers.app]\nimage = "busybox"\nname = "x"\n',
        "web.toml:4: containers.app.name: not allowed in a release: the agent names a release's "
        "containers RELEASE-CONTAINER-rREVISION",
    ),
    (
        "--rm",
        'name = "web"\n[containers.app]\nimage = "busybox"\nrm = true\n',
        "web.toml:4: containers.app.rm: not allowed in a release: a release keeps its containers to go "
        "back to (no --rm)",
    ),
    (
        "an option set twice",
        'name = "web"\n[containers.app]\nimage = "busybox"\nlabels = ["a=1"]\nlabel = ["b=2"]\n',
        "web.toml:5: containers.app.label: set twice (also as labels)",
    ),
    (
        "a label the agent sets",
        'name = "web"\n[containers.app]\nimage = "busybox"\nlabels = { "dockyard.revision" = "9" }\n',
        "web.toml:4: containers.app.labels: dockyard.revision: "
        "the agent sets this label on a release's containers",
    ),
    (
        "health without a command",
        'name = "web"\n[containers.app]\nimage = "busybox"\n[containers.app.health]\ninterval = "1s"\n',
        "web.toml:4: containers.app.health.cmd: missing (a health check needs a command)",
    ),
    (
        "unknown health key",
        'name = "web"\n[containers.app]\nimage = "busybox"\n'
        '[containers.app.health]\ncmd = "true"\nretry = 3\n',
        "web.toml:6: containers.app.health.retry: unknown key (did you mean retries?)",
    ),
    (
        "a flat health flag",
        'name = "web"\n[containers.app]\nimage = "busybox"\nhealth_cmd = "true"\n',
        "web.toml:4: containers.app.health_cmd: "
        "unknown key (write it as cmd in the container's [health] table)",
    ),
    (
        "bad restart policy",
        'name = "web"\n[containers.app]\nimage = "busybox"\nrestart = "sometimes"\n',
        "web.toml:4: containers.app.restart: invalid restart policy 'sometimes': expected no, "
        "on-failure[:N], always or unless-stopped",
    ),
    (
        "bad stop signal",
        'name = "web"\n[containers.app]\nimage = "busybox"\nstop_signal = "SIGNOPE"\n',
        "web.toml:4: containers.app.stop_signal: invalid signal 'SIGNOPE': not a known signal name or number",
    ),
    (
        "TOML syntax",
        'name = "web"\n[containers.app]\nimage = "busybox\n',
        "web.toml:3: Illegal character '\\n'",
    ),
    (
        "a key in a dotted form",
        'name = "web"\n[containers.app]\nimage = "busybox"\nhealth.cmd = "true"\nhealth.timeout = "-1s"\n',
        "web.toml:5: containers.app.health.timeout: invalid duration '-1s': "
        "expected a duration such as 30s or 1m30s",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_a_bad_file_is_one_line_naming_file_line_and_key(text: str, expected: str) -> None:
    message = error(text)
    assert message == expected
    assert "\n" not in message


def test_a_multiline_string_does_not_hide_or_invent_keys() -> None:
    message = error(
        '''\
        name = "web"
        [containers.app]
        image = "busybox"
        command = """
        memory = 1
        """
        memory = "x"
        '''
    )
    assert message.startswith("web.toml:7: containers.app.memory: invalid --memory value 'x'")


def test_health_command_forms() -> None:
    def health(cmd: str) -> tuple[str, bool]:
        r = parse(f'name = "w"\n[containers.a]\nimage = "busybox"\nhealth = {{ cmd = {cmd} }}\n')
        return r.containers[0].config.health_cmd, r.containers[0].config.no_healthcheck

    assert health('["wget", "-q", "http://x/a b"]') == ("wget -q 'http://x/a b'", False)
    assert health('["CMD", "true"]') == ("true", False)
    assert health('["CMD-SHELL", "test -f /ok || exit 1"]') == ("test -f /ok || exit 1", False)
    assert health('"test -f /ok"') == ("test -f /ok", False)
    assert health('["NONE"]') == ("", True)


def test_env_files_are_read_next_to_the_release_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "web.env").write_text("# comment\nA=1\nFROM_SHELL\n")
    (tmp_path / "web.toml").write_text(
        'name = "web"\n[containers.app]\nimage = "busybox"\nenv_file = "web.env"\nenv = ["B=2", "C"]\n'
    )
    monkeypatch.setenv("FROM_SHELL", "s")
    monkeypatch.setenv("C", "c")
    monkeypatch.chdir("/")
    release = spec.load(tmp_path / "web.toml")
    assert release.containers[0].config.env == ("A=1", "FROM_SHELL=s", "B=2", "C=c")
    assert release.source == str(tmp_path / "web.toml")


def test_a_missing_env_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "web.toml").write_text(
        'name = "web"\n[containers.app]\nimage = "busybox"\nenv_file = "no.env"\n'
    )
    with pytest.raises(SpecError, match=r"web.toml:4: containers.app.env_file: cannot read --env-file"):
        spec.load(tmp_path / "web.toml")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ControllerError, match=r"cannot read release file .*nope\.toml: No such file"):
        spec.load(tmp_path / "nope.toml")
    (tmp_path / "bin.toml").write_bytes(b'name = "web"\n# \xff\n')
    with pytest.raises(SpecError, match=r"bin.toml:2: not UTF-8 text"):
        spec.load(tmp_path / "bin.toml")


def test_pinning_keeps_the_repository_and_drops_the_tag() -> None:
    release = parse(GOOD)
    pinned = release.pinned(
        {"registry.lab:5000/shop/web:2": DIGEST_A, "registry.lab:5000/shop/logship:1": DIGEST_B}
    )
    assert [c.config.image for c in pinned.containers] == [
        f"registry.lab:5000/shop/web@{DIGEST_A}",
        f"registry.lab:5000/shop/logship@{DIGEST_B}",
    ]
    assert spec.pin_image("busybox", DIGEST_A) == f"docker.io/library/busybox@{DIGEST_A}"
    assert spec.pin_image(f"busybox@{DIGEST_A}", DIGEST_A) == f"docker.io/library/busybox@{DIGEST_A}"
    with pytest.raises(ControllerError, match="names digest"):
        spec.pin_image(f"busybox@{DIGEST_A}", DIGEST_B)
    with pytest.raises(InvalidArgument):
        spec.pin_image("busybox", "sha256:short")


def _digest(text: str) -> str:
    release = parse(text)
    return spec.revision_spec(release.pinned(dict.fromkeys(release.images(), DIGEST_A))).spec_digest


def test_the_spec_digest_is_canonical() -> None:
    base = _digest(GOOD)
    assert base.startswith("sha256:") and len(base) == 71
    assert _digest(GOOD) == base
    # the same release written in another order: containers, keys, labels tables
    reordered = """\
    name = "web"
    [containers.sidecar]
    image = "registry.lab:5000/shop/logship:1"
    [containers.app]
    depends_on = ["sidecar"]
    memory = "256m"
    restart = "always"
    volumes = ["web-data:/data"]
    ports = ["8080:8080"]
    env = { MODE = "prod" }
    command = ["/bin/httpd", "-f", "-p", "8080"]
    image = "registry.lab:5000/shop/web:2"
    [containers.app.health]
    start_period = "3s"
    retries = 3
    timeout = "1s"
    interval = "2s"
    cmd = ["wget", "-q", "-O-", "http://127.0.0.1:8080/"]
    """
    assert _digest(reordered) == base
    assert _digest(GOOD.replace('"256m"', '"257m"')) != base
    release = parse(GOOD)
    other = spec.revision_spec(release.pinned(dict.fromkeys(release.images(), DIGEST_B)))
    assert other.spec_digest != base
    assert spec.spec_digest(other) == other.spec_digest  # the field itself is not hashed


def test_labels_order_does_not_change_the_digest() -> None:
    one = 'name = "w"\n[containers.a]\nimage = "busybox"\nlabels = { x = "1", y = "2" }\n'
    two = 'name = "w"\n[containers.a]\nimage = "busybox"\nlabels = { y = "2", x = "1" }\n'
    assert _digest(one) == _digest(two)


def test_start_order_puts_dependencies_first() -> None:
    release = parse(
        """\
        name = "w"
        [containers.web]
        image = "busybox"
        depends_on = ["api", "cache"]
        [containers.api]
        image = "busybox"
        depends_on = ["db"]
        [containers.cache]
        image = "busybox"
        [containers.db]
        image = "busybox"
        """
    )
    assert release.start_order() == ("cache", "db", "api", "web")


PORTS = [
    "80",
    "8080:80",
    "8080:80/udp",
    "127.0.0.1:8080:80",
    "127.0.0.1::80",
    "0.0.0.0:1:65535/TCP",
    " 80 ",
    "80/sctp",
    "80-90:80-90",
    "1:2:3:4",
    ":80",
    "80:",
    "x:80",
    "999.1.1.1:80:80",
    "0:80",
    "80:0",
    "65536",
    "",
]


@pytest.mark.parametrize("text", PORTS)
def test_ports_read_as_the_agent_reads_them(text: str) -> None:
    try:
        agent = parse_publish(text)
    except InvalidArgument:
        with pytest.raises(ValueError):
            spec.parse_port(text)
        return
    ours = spec.parse_port(text)
    assert (ours.container_port, ours.protocol, ours.host_ip, ours.host_port) == (
        agent.container_port,
        str(agent.protocol),
        agent.host_ip,
        agent.host_port,
    )


def test_port_clashes() -> None:
    p = spec.parse_port
    assert p("8080:80").clashes(p("127.0.0.1:8080:81"))
    assert not p("127.0.0.2:8080:80").clashes(p("127.0.0.1:8080:81"))
    assert not p("8080:80/udp").clashes(p("8080:80/tcp"))
    assert not p("80").clashes(p("80"))  # the agent picks a free host port for each
