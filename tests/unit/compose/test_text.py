"""The pure text layers: YAML 1.2 core scalars, `${VAR}` interpolation, `.env` files."""

from __future__ import annotations

import pytest

from controller.compose import dotenv, interpolate, yamlfile


def test_yaml_reads_scalars_as_docker_compose_does() -> None:
    data = yamlfile.parse(
        "a: 8022:22\nb: yes\nc: 0755\nd: 2024-01-02\ne: True\nf: 0x1f\ng: 1.5\nh: ~\ni: off\n"
    )
    assert data == {"a": "8022:22", "b": "yes", "c": 755, "d": "2024-01-02", "e": True, "f": 31, "g": 1.5,
                    "h": None, "i": "off"}  # fmt: skip


def test_yaml_anchors_and_merge_keys_work() -> None:
    data = yamlfile.parse("x-base: &base\n  image: a\nservices:\n  web:\n    <<: *base\n    command: b\n")
    assert data["services"]["web"] == {"image": "a", "command": "b"}


def test_yaml_duplicate_key_is_an_error_with_its_line() -> None:
    with pytest.raises(yamlfile.YamlError) as info:
        yamlfile.parse("a: 1\nb:\n  c: 1\n  c: 2\n")
    assert (info.value.line, info.value.problem) == (4, "mapping key 'c' already defined")


ENV = {"SET": "v", "EMPTY": ""}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("${SET}", "v"),
        ("$SET/x", "v/x"),
        ("${UNSET}", ""),
        ("${UNSET:-d}", "d"),
        ("${EMPTY:-d}", "d"),
        ("${EMPTY-d}", ""),
        ("${UNSET-d}", "d"),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("$${SET}", "${SET}"),
        ("$$SET", "$SET"),
        ("a$", "a$"),
        ("${UNSET:-${SET}}", "v"),
        ("${UNSET:-${ALSO:-deep}}x", "deepx"),
        ("pg_isready -U $${POSTGRES_USER}", "pg_isready -U ${POSTGRES_USER}"),
    ],
)
def test_interpolation(text: str, expected: str) -> None:
    assert interpolate.substitute(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("${UNSET:?give it}", "required variable UNSET is missing a value: give it"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value: empty or unset"),
        ("${UNSET?}", "required variable UNSET is missing a value: unset"),
        ("${SET", "invalid interpolation format for '${SET': missing '}'"),
        ("${}", "invalid interpolation format for '${}': a variable name must follow '${'"),
        ("${SET:x}", "invalid interpolation format for '${SET:x}': unexpected ':' after ${SET"),
    ],
)
def test_interpolation_errors(text: str, problem: str) -> None:
    with pytest.raises(interpolate.InterpolationError) as info:
        interpolate.substitute(text, ENV)
    assert info.value.problem == problem


def test_interpolate_tree_names_the_path_and_leaves_keys() -> None:
    tree = {"services": {"${SET}": {"ports": ["${P:-80}:80", 5]}}}
    assert interpolate.interpolate(tree, {}) == {"services": {"${SET}": {"ports": ["80:80", 5]}}}
    with pytest.raises(interpolate.InterpolationError) as info:
        interpolate.interpolate({"services": {"web": {"image": "${TAG:?}"}}}, {})
    assert info.value.path == "services.web.image"


def test_dotenv_forms() -> None:
    text = (
        "# comment\n\nA=1\nexport B = two words \nC='lit $A'\nD=\"x\\ny $A\"\n"
        "E=v # trailing\nF\nG=${A}-${H:-h}\n"
        'M="multi\nline"\n'
    )
    assert dotenv.parse(text, {"F": "from-env"}) == {
        "A": "1",
        "B": "two words",
        "C": "lit $A",
        "D": "x\ny 1",
        "E": "v",
        "F": "from-env",
        "G": "1-h",
        "M": "multi\nline",
    }


def test_dotenv_errors_name_the_line() -> None:
    with pytest.raises(dotenv.DotenvError) as info:
        dotenv.parse("A=1\nnot a key=2\n", {})
    assert (info.value.line, info.value.problem) == (2, "invalid variable name 'not a key'")
    with pytest.raises(dotenv.DotenvError) as info:
        dotenv.parse('A="open\n', {})
    assert info.value.problem == 'unterminated " quote in the value of A'
