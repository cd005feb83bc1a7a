"""How instructions change the image config (Docker's rules), and the config/manifest documents."""

from __future__ import annotations

import json
from typing import Any

from agent.build.cache import BuildCache, CacheEntry, base_key, step_key
from agent.build.imageconfig import EPOCH, ImageState, LayerRef, created_by, healthcheck
from agent.oci import dockerfile as df
from agent.oci import instructions as ins
from agent.oci.platform import Platform
from agent.state.db import Database

AMD64 = Platform("linux", "amd64")


def instr(text: str) -> ins.Instruction:
    return df.parse(f"FROM scratch\n{text}\n").stages[0].instructions[0].expand({})


def base(config: dict[str, Any] | None = None, **extra: Any) -> ImageState:
    image = {"architecture": "arm64", "os": "linux", "config": config or {}, **extra}
    return ImageState.from_image(image, [], AMD64)


def test_entrypoint_resets_an_inherited_cmd_only() -> None:
    state = base({"Cmd": ["base"]})
    state.apply(instr('ENTRYPOINT ["/e"]'))
    assert state.config["Cmd"] is None and state.config["Entrypoint"] == ["/e"]
    state = base({"Cmd": ["base"]})
    state.apply(instr('CMD ["mine"]'))
    state.apply(instr('ENTRYPOINT ["/e"]'))
    assert state.config["Cmd"] == ["mine"]


def test_shell_forms_use_the_current_shell() -> None:
    state = ImageState.scratch(AMD64)
    state.apply(instr("CMD echo a"))
    assert state.config["Cmd"] == ["/bin/sh", "-c", "echo a"]
    state.apply(instr('SHELL ["/bin/bash", "-xc"]'))
    state.apply(instr("ENTRYPOINT run it"))
    assert state.config["Entrypoint"] == ["/bin/bash", "-xc", "run it"]
    assert state.config["Shell"] == ["/bin/bash", "-xc"]


def test_workdir_is_joined_and_paths_are_relative_to_it() -> None:
    state = ImageState.scratch(AMD64)
    state.apply(instr("WORKDIR /a"))
    state.apply(instr("WORKDIR b/../c"))
    assert state.workdir == "/a/c"
    assert state.absolute("x/") == "/a/c/x/"
    assert state.absolute("/y") == "/y"
    assert state.absolute(".") == "/a/c"
    assert state.absolute("./") == "/a/c/"


def test_env_replaces_in_place_and_labels_merge() -> None:
    state = base({"Env": ["PATH=/bin", "A=1"], "Labels": {"x": "1"}})
    state.apply(instr("ENV PATH=/usr/bin:/bin B=2"))
    assert state.env_list == ["PATH=/usr/bin:/bin", "A=1", "B=2"]
    state.apply(instr("LABEL y=2 x=3"))
    assert state.config["Labels"] == {"x": "3", "y": "2"}


def test_ports_volumes_user_stopsignal_onbuild_maintainer() -> None:
    state = ImageState.scratch(AMD64)
    for text in (
        "EXPOSE 80 53/udp",
        'VOLUME ["/data"]',
        "USER app:staff",
        "STOPSIGNAL SIGINT",
        "ONBUILD RUN make",
        "MAINTAINER me",
        "ARG X=1",
    ):
        state.apply(instr(text))
    cfg = json.loads(state.config_json())
    assert cfg["config"] == {
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Volumes": {"/data": {}},
        "User": "app:staff",
        "StopSignal": "SIGINT",
        "OnBuild": ["RUN make"],
    }
    assert cfg["author"] == "me"


def test_healthcheck_document() -> None:
    hc = instr("HEALTHCHECK --interval=5s --retries=2 CMD curl -f x")
    assert isinstance(hc, ins.Healthcheck)
    assert healthcheck(hc) == {"Test": ["CMD-SHELL", "curl -f x"], "Interval": 5_000_000_000, "Retries": 2}
    exec_form = instr('HEALTHCHECK CMD ["true"]')
    assert isinstance(exec_form, ins.Healthcheck) and healthcheck(exec_form) == {"Test": ["CMD", "true"]}
    none = instr("HEALTHCHECK NONE")
    assert isinstance(none, ins.Healthcheck) and healthcheck(none) == {"Test": ["NONE"]}


def test_base_onbuild_becomes_triggers_and_is_not_inherited() -> None:
    state = base({"OnBuild": ["RUN one"], "Cmd": ["x"]}, history=[{"created": "2020-01-01T00:00:00Z"}])
    assert state.triggers == ["RUN one"]
    assert "OnBuild" not in json.loads(state.config_json())["config"]
    assert state.platform == Platform("linux", "arm64")


def test_created_is_the_newest_history_entry() -> None:
    state = base(created="2021-05-01T10:00:00Z")
    assert state.created() == "2021-05-01T10:00:00Z"
    state.add_history("2024-01-01T00:00:00.5Z", "RUN x", empty_layer=False)
    state.add_history("2023-01-01T00:00:00Z", "ENV y", empty_layer=True)
    assert state.created() == "2024-01-01T00:00:00.5Z"
    assert ImageState.scratch(AMD64).created() == EPOCH


def test_config_and_manifest_documents() -> None:
    state = ImageState.scratch(Platform("linux", "arm", "v7"))
    docker_gzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    state.add_layer(LayerRef("sha256:" + "a" * 64, 10, docker_gzip, "sha256:" + "b" * 64))
    state.add_history("2024-01-01T00:00:00Z", "COPY a /a", empty_layer=False)
    config = json.loads(state.config_json(extra_labels={"k": "v"}))
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "b" * 64]}
    assert (config["architecture"], config["variant"]) == ("arm", "v7")
    assert config["config"] == {"Labels": {"k": "v"}}
    assert config["history"][0]["comment"] == "dockyard build" and "empty_layer" not in config["history"][0]
    manifest = json.loads(state.manifest_json("sha256:" + "c" * 64, 123))
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["size"] == 123
    assert manifest["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"


def test_created_by() -> None:
    shell = ["/bin/sh", "-c"]
    run = instr("RUN make all")
    assert created_by(run, shell) == "RUN /bin/sh -c make all"
    copy = df.parse("FROM scratch\nCOPY --from=b --chown=1:1 x y /d/\n").stages[0].instructions[0]
    assert created_by(copy, shell) == "COPY --from=b --chown=1:1 x y /d/"


def test_cache_keys_chain_and_entries_persist(tmp_path: Any) -> None:
    root = base_key("scratch", "linux/amd64")
    assert root == base_key("scratch", "linux/amd64") != base_key("scratch", "linux/arm64")
    one = step_key(root, {"keyword": "RUN", "argv": ["a"]})
    assert one == step_key(root, {"argv": ["a"], "keyword": "RUN"})  # key order does not matter
    assert one != step_key(root, {"keyword": "RUN", "argv": ["b"]})
    assert step_key(one, {"k": 1}, "sha256:x") != step_key(one, {"k": 1}, "sha256:y")
    cache = BuildCache(Database(tmp_path / "db.sqlite"))
    entry = CacheEntry(one, "2024-01-01T00:00:00Z", "sha256:d", "sha256:l", 5, "m", "RUN a")
    cache.put(entry)
    again = BuildCache(Database(tmp_path / "db.sqlite"))
    assert again.get(one) == entry and again.count() == 1
    again.delete(one)
    assert again.get(one) is None
    again.put(entry)
    assert again.prune() == 1 and again.count() == 0
