"""Loading and resolving: each supported key onto the run config `dockyard run` sends, -f merging,
project names, profiles, .env, and the config hash that decides what `up` recreates."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from controller.api.containers import config_message
from controller.compose import load
from controller.compose.model import Condition, Project
from controller.errors import ControllerError


def project(
    tmp_path: Path, text: str, *more: str, environ: dict[str, str] | None = None, **kw: Any
) -> Project:
    (tmp_path / "compose.yaml").write_text(text)
    files = ["compose.yaml"]
    for i, extra in enumerate(more):
        (tmp_path / f"more{i}.yaml").write_text(extra)
        files.append(f"more{i}.yaml")
    options = load.Options(files=tuple(files), cwd=tmp_path, environ=environ or {}, **kw)
    return load.load(options)


FULL = """
name: shop
services:
  web:
    image: shop/web:${TAG:-1}
    build:
      context: .
      dockerfile: Containerfile
      args: {VERSION: "2", FROM_ENV: null}
      target: prod
    entrypoint: ["/bin/tini", "--", "serve"]
    command: --port 80
    environment:
      A: 1
      FLAG: true
      FROM_SHELL:
    env_file: [web.env]
    ports:
      - "8080:80"
      - "127.0.0.1:9000-9001:9000-9001/udp"
      - "3000"
      - target: 443
        published: "8443"
        host_ip: 10.0.0.1
        protocol: tcp
    volumes:
      - data:/var/lib/data:ro
      - ./conf:/etc/app
      - /cache
      - type: tmpfs
        target: /run/app
        tmpfs: {size: 64m, mode: 1777}
      - type: bind
        source: /srv/logs
        target: /logs
        read_only: true
    networks:
      front:
        aliases: [www]
      back:
    depends_on:
      db:
        condition: service_healthy
      migrate:
        condition: service_completed_successfully
    healthcheck:
      test: ["CMD", "wget", "-q", "http://localhost/health check"]
      interval: 5s
      timeout: 2s
      retries: 4
      start_period: 1m30s
    restart: on-failure:3
    labels: [team=shop]
    user: "1000:1000"
    working_dir: /app
    hostname: web
    stop_signal: SIGINT
    stop_grace_period: 1m500ms
    init: false
    read_only: "true"
    cap_add: [NET_ADMIN]
    cap_drop: [ALL]
    tmpfs: /tmp:size=10m
    ulimits:
      nofile: {soft: 1024, hard: 2048}
      nproc: 512
    mem_limit: 512m
    cpus: 1.5
    deploy:
      resources:
        limits: {pids: 100}
    x-notes: anything
  db:
    image: postgres
    healthcheck:
      test: pg_isready
  migrate:
    image: shop/migrate
    profiles: [tools]
    depends_on: [db]
volumes:
  data:
networks:
  front:
  back:
    internal: true
x-anything: {free: form}
"""


def test_every_supported_key_maps_onto_the_run_config(tmp_path: Path) -> None:
    (tmp_path / "web.env").write_text("FROM_FILE=f\nA=overridden-by-environment\n")
    (tmp_path / "Containerfile").write_text("FROM scratch\n")
    p = project(tmp_path, FULL, environ={"FROM_SHELL": "s", "FROM_ENV": "e"})
    web = p.service("web")
    c = web.config
    assert c.image == "shop/web:1"
    assert web.build is not None
    assert (web.build.context, web.build.dockerfile, dict(web.build.args), web.build.target) == (
        tmp_path, "Containerfile", {"VERSION": "2", "FROM_ENV": "e"}, "prod")  # fmt: skip
    # the process's argv is entrypoint + command, with one entrypoint word on the wire
    assert (c.entrypoint, c.command) == ("/bin/tini", ("--", "serve", "--port", "80"))
    assert c.env == ("FROM_FILE=f", "A=1", "FLAG=true", "FROM_SHELL=s")
    assert c.publish == (
        "8080:80/tcp",
        "127.0.0.1:9000:9000/udp",
        "127.0.0.1:9001:9001/udp",
        "3000/tcp",
        "10.0.0.1:8443:443/tcp",
    )
    assert c.mounts == (
        "type=volume,source=shop_data,target=/var/lib/data,readonly",
        f"type=bind,source={tmp_path / 'conf'},target=/etc/app",
        "type=volume,target=/cache",
        "type=tmpfs,target=/run/app,tmpfs-size=64m,tmpfs-mode=1777",
        "type=bind,source=/srv/logs,target=/logs,readonly",
    )
    assert (c.network, c.network_aliases) == ("shop_front", ("web", "www"))
    assert [(a.network, a.aliases) for a in web.networks] == [("front", ("www",)), ("back", ())]
    assert dict(web.depends_on) == {"db": Condition.HEALTHY, "migrate": Condition.COMPLETED}
    assert c.health_cmd == "wget -q 'http://localhost/health check'"
    assert (c.health_interval, c.health_timeout, c.health_retries, c.health_start_period) == (
        "5s",
        "2s",
        4,
        "1m30s",
    )
    assert p.service("db").config.health_cmd == "pg_isready"
    assert c.restart == "on-failure:3"
    assert c.labels == ("team=shop",)
    assert (c.user, c.workdir, c.hostname, c.stop_signal, c.stop_timeout) == (
        "1000:1000",
        "/app",
        "web",
        "SIGINT",
        61,
    )
    assert (c.read_only, c.cap_add, c.cap_drop, c.tmpfs) == (
        True,
        ("NET_ADMIN",),
        ("ALL",),
        ("/tmp:size=10m",),
    )
    assert c.ulimits == ("nofile=1024:2048", "nproc=512:512")
    assert (c.memory, c.cpus, c.pids_limit) == ("512m", "1.5", 100)
    # the one mapping onto the wire accepts all of it
    wire = config_message(c)
    assert wire.memory_bytes == 512 << 20 and wire.nano_cpus == 1_500_000_000 and wire.stop_timeout == 61
    assert p.networks["back"].internal and p.networks["back"].name == "shop_back"
    assert p.volumes["data"].name == "shop_data"


def test_profiles_and_selection(tmp_path: Path) -> None:
    (tmp_path / "web.env").write_text("")
    (tmp_path / "Containerfile").write_text("")
    p = project(tmp_path, FULL)
    assert p.active == {"web", "db"}
    assert [s.name for s in p.select()] == ["db", "migrate", "web"]  # dependencies first
    assert [s.name for s in p.select(["migrate"])] == ["db", "migrate"]
    assert "migrate" not in p.document["services"]
    assert project(tmp_path, FULL, profiles=("tools",)).active == {"web", "db", "migrate"}
    assert project(tmp_path, FULL, environ={"COMPOSE_PROFILES": "tools"}).active == {"web", "db", "migrate"}
    with pytest.raises(ControllerError, match="no such service: nope"):
        p.select(["nope"])


def test_merging_files_like_docker_compose(tmp_path: Path) -> None:
    base = """
services:
  web:
    image: a
    command: one two
    environment: [A=1, B=2]
    ports: ["80:80"]
    volumes: ["/x:/data", "/y:/keep"]
    labels: {l1: a}
    healthcheck: {test: "true", interval: 5s}
"""
    override = """
services:
  web:
    image: b
    command: [three]
    environment: {B: 3, C: 4}
    ports: ["443:443"]
    volumes: ["/z:/data"]
    labels: [l2=b]
    healthcheck: {retries: 2}
  extra:
    image: c
"""
    p = project(tmp_path, base, override)
    c = p.service("web").config
    assert (c.image, c.command) == ("b", ("three",))
    assert c.env == ("A=1", "B=3", "C=4")
    assert c.publish == ("80:80/tcp", "443:443/tcp")
    assert c.mounts == ("type=bind,source=/z,target=/data", "type=bind,source=/y,target=/keep")
    assert c.labels == ("l1=a", "l2=b")
    assert (c.health_cmd, c.health_interval, c.health_retries) == ("true", "5s", 2)
    assert [s.name for s in p.services] == ["web", "extra"]


def test_project_name_precedence(tmp_path: Path) -> None:
    d = tmp_path / "My Dir.2"
    d.mkdir()
    assert project(d, "services: {a: {image: x}}").name == "mydir2"
    assert project(d, "name: named\nservices: {a: {image: x}}").name == "named"
    env = {"COMPOSE_PROJECT_NAME": "fromenv"}
    assert project(d, "name: named\nservices: {a: {image: x}}", environ=env).name == "fromenv"
    assert project(d, "name: n\nservices: {a: {image: x}}", environ=env, project_name="flag").name == "flag"
    (d / ".env").write_text("COMPOSE_PROJECT_NAME=dotenv\nTAG=7\n")
    p = project(d, "services: {a: {image: 'x:${TAG}'}}")
    assert (p.name, p.service("a").image) == ("dotenv", "x:7")
    assert project(d, "services: {a: {image: 'x:${TAG}'}}", environ={"TAG": "8"}).service("a").image == "x:8"
    with pytest.raises(ControllerError, match="invalid project name 'Bad Name'"):
        project(d, "services: {a: {image: x}}", project_name="Bad Name")


def test_default_files_and_override_are_found_from_a_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "compose.yaml").write_text("services: {a: {image: x}}\n")
    (tmp_path / "compose.override.yaml").write_text("services: {a: {image: y}}\n")
    sub = tmp_path / "deep" / "er"
    sub.mkdir(parents=True)
    p = load.load(load.Options(cwd=sub, environ={}))
    assert p.service("a").image == "y"
    assert p.working_dir == tmp_path.resolve()
    assert p.name == tmp_path.name.lower().replace(".", "")


def test_config_hash_changes_only_with_the_service(tmp_path: Path) -> None:
    text = "services:\n  a: {image: x, environment: {K: '${V:-1}'}}\n  b: {image: y}\n"
    one, two = project(tmp_path, text), project(tmp_path, text, environ={"V": "2"})
    assert one.service("b").config_hash == two.service("b").config_hash
    assert one.service("a").config_hash != two.service("a").config_hash
    assert one.service("a").config_hash == project(tmp_path, text).service("a").config_hash
    assert len(one.service("a").config_hash) == 64


def test_labels_of_a_container(tmp_path: Path) -> None:
    p = project(tmp_path, "name: p\nservices: {web: {image: x}}\n")
    labels = p.labels(p.service("web"), 1)
    assert labels["com.docker.compose.project"] == "p"
    assert labels["com.docker.compose.service"] == "web"
    assert labels["com.docker.compose.container-number"] == "1"
    assert labels["com.docker.compose.oneoff"] == "False"
    assert labels["com.docker.compose.config-hash"] == p.service("web").config_hash
    assert p.container_name("web") == "p-web-1"


def test_run_command_keeps_the_entrypoint_list(tmp_path: Path) -> None:
    p = project(tmp_path, "services: {a: {image: x, entrypoint: [sh, -c], command: [old]}}\n")
    config = p.service("a").with_command(("echo hi",))
    assert (config.entrypoint, config.command) == ("sh", ("-c", "echo hi"))
    reset = project(tmp_path, "services: {a: {image: x, entrypoint: [], command: [c]}}\n").service("a").config
    assert (reset.entrypoint, reset.command) == ("", ("c",))


REFUSALS = [
    (
        "{image: x, mem_limit: 1g, deploy: {resources: {limits: {memory: 2g}}}}",
        "services.a.deploy.resources.limits.memory: differs from mem_limit (set one of them)",
    ),
    (
        "{image: x, ports: ['8000-8001:80']}",
        "services.a.ports.0: a range of host ports for one container port is not supported by dockyard",
    ),
    (
        "{image: x, ports: ['[::1]:80:80']}",
        "services.a.ports.0: IPv6 host address in '[::1]:80:80' not supported by dockyard",
    ),
    (
        "{image: x, healthcheck: {test: true}}",
        "services.a.healthcheck.test: must be string or array, not a boolean",
    ),
    (
        "{image: x, healthcheck: {interval: 5s}}",
        "services.a.healthcheck.test: a health check needs a test (or disable: true)",
    ),
    (
        "{image: x, healthcheck: {test: [RUN, x]}}",
        "services.a.healthcheck.test: a list test starts with CMD, CMD-SHELL or NONE",
    ),
    (
        "{image: x, healthcheck: {test: x, interval: soon}}",
        "services.a.healthcheck.interval: invalid duration 'soon': expected a duration such as 30s or 1m30s",
    ),
    (
        "{image: x, restart: sometimes}",
        "services.a.restart: invalid value 'sometimes': no, always, on-failure[:N] or unless-stopped",
    ),
    (
        "{image: x, labels: {com.docker.compose.project: y}}",
        "services.a.labels.com.docker.compose.project: reserved: dockyard compose sets "
        "the com.docker.compose.* labels",
    ),
    (
        "{image: x, networks: [nowhere]}",
        "services.a.networks.nowhere: refers to undefined network nowhere (declare it "
        "under top-level networks)",
    ),
    (
        "{image: x, env_file: missing.env}",
        "services.a.env_file: env file {dir}/missing.env not found",
    ),
    (
        "{image: x, build: {context: 'https://github.com/x/y.git'}}",
        "services.a.build.context: only a local directory is supported (not a URL)",
    ),
    (
        "{image: x, volumes: [{type: npipe, source: a, target: /b}]}",
        "services.a.volumes.0.type: 'npipe' not supported by dockyard (only bind, volume, tmpfs)",
    ),
    (
        "{image: x, container_name: my-web}",
        "services.a.container_name: not supported by dockyard",
    ),
    (
        "{image: x, cpus: 9999}",
        "services.a.cpus: invalid value '9999': expected a number of CPUs from 0.01 to 4096",
    ),
]


@pytest.mark.parametrize(("service", "problem"), REFUSALS)
def test_refusals_name_the_key(tmp_path: Path, service: str, problem: str) -> None:
    with pytest.raises(ControllerError) as info:
        project(tmp_path, f"services:\n  a: {service}\n")
    assert str(info.value) == "compose.yaml: " + problem.format(dir=tmp_path)


def test_optional_env_file_and_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / "a.env").write_text("X=file\nY=file\n")
    text = (
        "services:\n  a:\n    image: x\n    env_file: [a.env, {path: gone.env, required: false}]\n"
        "    environment: [Y=env, Z]\n"
    )
    assert project(tmp_path, text).service("a").config.env == ("X=file", "Y=env")
    assert project(tmp_path, text, environ={"Z": "shell"}).service("a").config.env == (
        "X=file",
        "Y=env",
        "Z=shell",
    )


def test_config_document_is_resolved(tmp_path: Path) -> None:
    p = project(
        tmp_path,
        "services:\n  a:\n    image: x\n    ports: ['${P:-81}:80']\n    volumes: ['v:/d']\nvolumes:\n  v:\n",
    )
    doc = p.document
    assert doc["services"]["a"]["ports"] == [
        {"mode": "ingress", "target": 80, "protocol": "tcp", "published": "81"}
    ]
    assert doc["services"]["a"]["volumes"] == [{"type": "volume", "source": "v", "target": "/d"}]
    assert doc["volumes"] == {"v": {"name": f"{p.name}_v"}}
    assert doc["networks"] == {"default": {"name": f"{p.name}_default"}}
    assert dataclasses.asdict(p.service("a").config)["publish"] == ("81:80/tcp",)


def test_secrets_are_resolved_but_compose_up_refuses_them(tmp_path: Path) -> None:
    from controller.compose.engine import refuse_secrets

    p = project(
        tmp_path,
        "services:\n"
        "  web: {image: w, secrets: [pw, {source: key, target: k, uid: '5', mode: 0440}]}\n"
        "  db: {image: d}\n"
        "secrets:\n  pw: {external: true}\n  key: {name: api_key}\n",
    )
    assert [(r.source, r.target, r.uid, r.gid, r.mode) for r in p.service("web").secrets] == [
        ("pw", "pw", None, None, None),
        ("key", "k", 5, None, 0o440),
    ]
    # `compose config`: both are dockyard secrets (a value from `dockyard secret create`)
    assert p.document["secrets"] == {
        "pw": {"name": "pw", "external": True},
        "key": {"name": "api_key", "external": True},
    }
    assert p.document["services"]["web"]["secrets"][1] == {
        "source": "key",
        "target": "k",
        "uid": 5,
        "mode": "0440",
    }
    refuse_secrets([p.service("db")])  # no secrets: nothing to refuse
    with pytest.raises(ControllerError) as err:
        refuse_secrets(p.select())
    assert err.value.message == (
        "services.web.secrets: compose secrets are supported in rollouts (dockyard rollout apply -f …);"
        " for compose up use a volume or env"
    )
