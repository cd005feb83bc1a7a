"""A compose file as a release: detection, the conversion (names, configs, health, order, networks) and
each refusal as one line naming the file and the compose key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from controller.compose.model import ComposeError
from controller.errors import ControllerError
from controller.rollout import compose_release, spec

SHOP = """\
name: shop
services:
  db:
    image: registry.lab:5000/pg:16
    environment: {POSTGRES_PASSWORD: "${DB_PASSWORD:-dev}"}
    volumes: ["pgdata:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD", "pg_isready", "-U", "postgres"]
      interval: 2s
      retries: 3
  web:
    image: registry.lab:5000/shop/web:2
    command: ["/bin/httpd", "-f", "-p", "8080"]
    ports: ["8080:8080"]
    depends_on:
      db: {condition: service_healthy}
  debug:
    image: registry.lab:5000/tools:1
    profiles: [debug]
volumes:
  pgdata: {}
"""


def write(tmp_path: Path, text: str, name: str = "compose.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path: Path, text: str, name: str = "compose.yaml") -> spec.Release:
    return compose_release.load_compose(write(tmp_path, text, name), environ={})


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ControllerError) as err:
        compose_release.load(write(tmp_path, text))
    return err.value.message


def test_a_compose_project_becomes_a_release(tmp_path: Path) -> None:
    release = load(tmp_path, SHOP)
    assert release.name == "shop"
    assert [c.name for c in release.containers] == ["db", "web"]  # the profile's service is not active
    assert release.start_order() == ("db", "web")
    db, web = release.containers
    assert db.config.image == "registry.lab:5000/pg:16"
    assert db.config.env == ("POSTGRES_PASSWORD=dev",)
    assert db.config.health_cmd == "pg_isready -U postgres"  # the rollout's verification
    assert (db.config.health_interval, db.config.health_retries) == ("2s", 3)
    assert db.config.mounts == ("type=volume,source=shop_pgdata,target=/var/lib/postgresql/data",)
    assert web.depends_on == ("db",)
    assert web.config.command == ("/bin/httpd", "-f", "-p", "8080")
    assert web.config.publish == ("8080:8080/tcp",)
    # the project's default network is the host's default network: no compose network, no aliases
    assert (web.config.network, web.config.network_aliases) == ("", ())
    wire = spec.revision_spec(release)
    assert [c.name for c in wire.containers] == ["db", "web"]
    assert wire.containers[1].depends_on == ["db"]
    assert wire.spec_digest == spec.revision_spec(load(tmp_path, SHOP)).spec_digest  # deterministic


def test_errors_found_later_name_the_compose_key(tmp_path: Path) -> None:
    release = load(tmp_path, SHOP)
    assert release.error("web", "image", "not in the registry").message == (
        f"{tmp_path / 'compose.yaml'}: services.web.image: not in the registry"
    )


@pytest.mark.parametrize(
    ("name", "text", "compose"),
    [
        ("compose.yaml", "services: {}\n", True),
        ("stack.yml", "", True),
        ("release.toml", "services = 1\n", False),
        ("release", 'name = "web"\n[containers.app]\n', False),
        ("release", "name: web\nservices:\n  app: {image: x}\n", True),
    ],
)
def test_detection_by_extension_or_content(tmp_path: Path, name: str, text: str, compose: bool) -> None:
    assert compose_release.is_compose(write(tmp_path, text, name)) is compose


def test_the_toml_form_still_loads(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "web"\n[containers.app]\nimage = "registry.lab:5000/web:1"\n', "web.toml")
    release = compose_release.load(path)
    assert (release.name, [c.name for c in release.containers]) == ("web", ["app"])


def test_build_is_refused_with_the_reason(tmp_path: Path) -> None:
    message = refused(
        tmp_path,
        """\
        services:
          web:
            image: registry.lab:5000/web:2
            build: .
        """,
    )
    assert message == (
        f"{tmp_path / 'compose.yaml'}: services.web.build: images must be built and pushed before a rollout"
        " (dockyard build + push)"
    )


def test_depends_on_conditions(tmp_path: Path) -> None:
    started = load(
        tmp_path,
        """\
        services:
          a: {image: "r.lab/a:1", depends_on: {b: {condition: service_started}}}
          b: {image: "r.lab/b:1"}
        """,
    )
    assert started.start_order() == ("b", "a")
    message = refused(
        tmp_path,
        """\
        services:
          migrate: {image: "r.lab/m:1"}
          app: {image: "r.lab/a:1", depends_on: {migrate: {condition: service_completed_successfully}}}
        """,
    )
    assert (
        "services.app.depends_on.migrate.condition: service_completed_successfully is not supported"
        in message
    )


def test_networks(tmp_path: Path) -> None:
    external = load(
        tmp_path,
        """\
        services:
          web: {image: "r.lab/web:1"}
        networks:
          default: {external: true, name: edge-net}
        """,
    )
    assert external.containers[0].config.network == "edge-net"
    assert external.containers[0].config.network_aliases == ("web",)  # a user-defined network: aliases kept
    none = load(
        tmp_path,
        """\
        services:
          web: {image: "r.lab/web:1"}
        networks:
          default: {external: true, name: none}
        """,
    )
    assert (none.containers[0].config.network, none.containers[0].config.network_aliases) == ("none", ())
    message = refused(
        tmp_path,
        """\
        services:
          web: {image: "r.lab/web:1", networks: [back]}
        networks:
          back: {}
        """,
    )
    assert "services.web.networks.back: a rollout does not create networks" in message
    message = refused(
        tmp_path,
        """\
        services:
          web: {image: "r.lab/web:1", networks: [default, back]}
        networks:
          back: {external: true}
        """,
    )
    assert "services.web.networks: a release's container is on one network" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'services:\n  web: {image: "r.lab/w:1", volumes: ["./data:/data"]}\n',
            "services.web.volumes: bind mount of ",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", labels: {dockyard.release: x}}\n',
            "services.web.labels.dockyard.release: reserved",
        ),
        (
            'services:\n  a: {image: "r.lab/a:1", ports: ["80:80"]}\n'
            '  b: {image: "r.lab/b:1", ports: ["80:80"]}\n',
            "services.b.ports: host port 80/tcp of '80:80/tcp' is also published by services.a",
        ),
        ('services:\n  Web: {image: "r.lab/w:1"}\n', "services.Web: a release's container names are"),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [pw]}\nsecrets:\n  pw: {file: ./pw}\n',
            "secrets.pw.file: a release never carries a value from this machine: create it with"
            " `dockyard secret create pw`",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [pw]}\nsecrets:\n  pw: {environment: PW}\n',
            "secrets.pw.environment: a release never carries a value from this machine",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [pw]}\n',
            "services.web.secrets.0: refers to undefined secret 'pw'",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [pw]}\nsecrets:\n  pw: {}\n',
            "secrets.pw: needs `external: true`",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [{source: pw, target: /etc/pw}]}\n'
            "secrets:\n  pw: {external: true}\n",
            "services.web.secrets.0.target: /etc/pw: dockyard mounts secrets in /run/secrets",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [{source: pw, target: a/b}]}\n'
            "secrets:\n  pw: {external: true}\n",
            "services.web.secrets.0.target: invalid secret target 'a/b'",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [pw, {source: pw2, target: pw}]}\n'
            "secrets:\n  pw: {external: true}\n  pw2: {external: true}\n",
            "services.web.secrets.1.target: two secrets would be the file /run/secrets/pw",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [{source: pw, mode: 0980}]}\n'
            "secrets:\n  pw: {external: true}\n",
            "services.web.secrets.0.mode: invalid mode",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [{source: pw, uid: "-1"}]}\n'
            "secrets:\n  pw: {external: true}\n",
            "services.web.secrets.0.uid:",
        ),
        (
            'services:\n  web: {image: "r.lab/w:1", secrets: [pw]}\n'
            "secrets:\n  pw: {external: true, driver: x}\n",
            "secrets.pw.driver: not supported by dockyard",
        ),
    ],
)
def test_refusals_are_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    message = refused(tmp_path, text)
    assert "\n" not in message
    assert expected in message, message


def test_secrets_become_the_containers_secret_files(tmp_path: Path) -> None:
    release = load(
        tmp_path,
        """\
        services:
          web:
            image: r.lab/web:1
            secrets:
              - db_password
              - {source: api, target: api_key, uid: "1000", gid: "1000", mode: 0440}
              - {source: tls, target: /run/secrets/tls.pem, mode: "0444"}
          other: {image: "r.lab/o:1"}
        secrets:
          db_password: {external: true}
          api: {external: true, name: shop_api_key}
          tls: {name: edge_tls}
        """,
    )
    web, other = release.containers
    assert web.secrets == (
        spec.SecretUse("db_password", "db_password"),  # target = source; mode 0400, uid/gid 0
        spec.SecretUse("shop_api_key", "api_key", 0o440, 1000, 1000),
        spec.SecretUse("edge_tls", "tls.pem", 0o444),
    )
    assert (web.secrets[0].mode, web.secrets[0].uid, web.secrets[0].gid) == (0o400, 0, 0)
    assert other.secrets == ()
    wire = spec.revision_spec(release).containers[1].secrets  # on the wire as a TOML release's
    assert [(f.name, f.target, f.mode) for f in wire] == [
        ("shop_api_key", "api_key", 0o440),
        ("db_password", "db_password", 0o400),
        ("edge_tls", "tls.pem", 0o444),
    ]
    # the same release as the TOML form, secret for secret
    toml = spec.load(
        write(
            tmp_path,
            """\
            name = "shop"
            [containers.web]
            image = "r.lab/web:1"
            secrets = ["db_password",
              {name = "shop_api_key", target = "api_key", uid = 1000, gid = 1000, mode = "0440"},
              {name = "edge_tls", target = "tls.pem", mode = "0444"}]
            """,
            "release.toml",
        )
    )
    assert toml.containers[0].secrets == web.secrets


def test_absolute_bind_mounts_pass(tmp_path: Path) -> None:
    release = load(tmp_path, 'services:\n  web: {image: "r.lab/w:1", volumes: ["/srv/data:/data"]}\n')
    assert release.containers[0].config.mounts == ("type=bind,source=/srv/data,target=/data",)


def test_a_compose_error_is_a_controller_error(tmp_path: Path) -> None:
    with pytest.raises(ComposeError):
        compose_release.load(write(tmp_path, "services:\n  web: {imag: x}\n"))
