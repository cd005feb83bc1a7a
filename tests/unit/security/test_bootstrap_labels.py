"""Bootstrap writes the host's inventory labels into its agent.toml: what certificate scopes match."""

from __future__ import annotations

import tomllib

from agent.config import from_mapping
from controller.bootstrap.apply import Assets


def test_agent_toml_carries_the_labels_the_agent_reads() -> None:
    assets = Assets.load()
    text = assets.config_for(7444, {"site": "lab", "arch": "arm64", 'odd "key"': "a b"}).decode()
    config = from_mapping(tomllib.loads(text))
    assert config.labels == {"site": "lab", "arch": "arm64", 'odd "key"': "a b"}
    assert config.listen == ("0.0.0.0:7444",)


def test_without_labels_the_template_is_unchanged() -> None:
    assets = Assets.load()
    assert assets.config_for(7443) == assets.config_template.encode()
    assert "labels" not in tomllib.loads(assets.config_for(7443).decode())
