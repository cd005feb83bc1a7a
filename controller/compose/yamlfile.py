"""Reading a compose file's YAML as docker compose reads it: the YAML 1.2 core schema, no duplicate keys.

PyYAML implements YAML 1.1, where `8022:22` is the base-60 integer 481342, `yes`/`on` are booleans, `0755`
is octal and `2024-01-02` a date. docker compose (YAML 1.2) reads all of those as strings or decimal
numbers, so the loader here keeps only the 1.2 core resolvers: true/false, null/~, decimal, 0o and 0x
integers, floats. A key written twice in one mapping is an error, as in docker compose.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

_REPLACED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core scalars and duplicate-key detection."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"mapping key {key!r} already defined", key_node.start_mark
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+0123456789."),
)


def _scalar(node: Node) -> str:
    return str(node.value) if isinstance(node, ScalarNode) else ""


def _int(loader: yaml.SafeLoader, node: Node) -> int:
    text = _scalar(node)
    if text.startswith(("0o", "0x")):
        return int(text, 0)
    return int(text, 10)  # "0755" is 755, as in YAML 1.2


def _bool(loader: yaml.SafeLoader, node: Node) -> bool:
    return _scalar(node).lower() == "true"


_Loader.add_constructor("tag:yaml.org,2002:int", _int)
_Loader.add_constructor("tag:yaml.org,2002:bool", _bool)


class YamlError(Exception):
    """The text is not YAML: `line` (1-based, 0 when unknown) and the parser's problem."""

    def __init__(self, line: int, problem: str) -> None:
        super().__init__(problem)
        self.line = line
        self.problem = problem


def parse(text: str) -> Any:
    """The document's data (None for an empty file); YamlError when it is not one YAML document."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlError(mark.line + 1 if mark is not None else 0, problem) from None
    except yaml.YAMLError as exc:
        raise YamlError(0, str(exc).splitlines()[0] if str(exc) else "invalid YAML") from None
