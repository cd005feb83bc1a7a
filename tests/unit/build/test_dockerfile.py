"""The Dockerfile parser and Docker's word processing: golden parses, substitution rules, line-exact errors.

Regenerate the golden files after an intended change with
`DOCKYARD_UPDATE_GOLDEN=1 pytest tests/unit/build/test_dockerfile.py` and review the diff.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidArgument
from agent.oci import dockerfile as df
from agent.oci import instructions as ins
from agent.oci.expand import SubstitutionError, process_word, split_words

GOLDEN = Path(__file__).parent / "golden"


def as_json(parsed: df.Dockerfile) -> dict[str, Any]:
    def instr(i: ins.Instruction) -> dict[str, Any]:
        data = dataclasses.asdict(i)
        data.pop("filename")
        data.pop("escape")
        return {"keyword": i.keyword, **data}

    return {
        "escape": parsed.escape,
        "global_args": [instr(a) for a in parsed.global_args],
        "stages": [
            {
                "index": s.index,
                "name": s.name,
                "from": instr(s.from_),
                "body": [instr(i) for i in s.instructions],
            }
            for s in parsed.stages
        ],
    }


@pytest.mark.parametrize("name", sorted(p.stem for p in GOLDEN.glob("*.Dockerfile")))
def test_golden_parse(name: str) -> None:
    parsed = df.parse((GOLDEN / f"{name}.Dockerfile").read_text())
    got = json.dumps(as_json(parsed), indent=1, ensure_ascii=False) + "\n"
    expected = GOLDEN / f"{name}.json"
    if os.environ.get("DOCKYARD_UPDATE_GOLDEN"):
        expected.write_text(got)
    assert got == expected.read_text()


# ---- substitution -------------------------------------------------------------------------------------

ENV = {"A": "alpha", "EMPTY": "", "SP": "a b"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("$A", "alpha"),
        ("${A}_x", "alpha_x"),
        ("$A_x", ""),  # the name runs to the first non-name character
        ("$UNSET", ""),
        ("${UNSET:-dflt}", "dflt"),
        ("${EMPTY:-dflt}", "dflt"),
        ("${EMPTY-dflt}", ""),
        ("${UNSET-dflt}", "dflt"),
        ("${A:-dflt}", "alpha"),
        ("${A:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("${UNSET:-$A/${A}}", "alpha/alpha"),
        ("${UNSET:-'q u'}", "q u"),
        ("'$A'", "$A"),
        ('"$A"', "alpha"),
        ('"a \\"q\\" \\$A \\\\ \\n"', 'a "q" $A \\ \\n'),
        ("\\$A", "$A"),
        ("\\${A}", "${A}"),
        ("a\\ b", "a b"),
        ("$", "$"),
        ("a$", "a$"),
        ("$/x", "$/x"),
        ("x\\", "x"),
        ('""', ""),
        ("pre'mid'post", "premidpost"),
        ('"$SP"', "a b"),
    ],
)
def test_process_word(word: str, expected: str) -> None:
    assert process_word(word, ENV) == expected


def test_process_word_backtick_escape() -> None:
    assert process_word("c:\\dir`$A", ENV, "`") == "c:\\dir$A"
    assert process_word("`$A$A", ENV, "`") == "$Aalpha"


@pytest.mark.parametrize(
    ("word", "message"),
    [
        ("'open", "unterminated single quote"),
        ('"open', "unterminated double quote"),
        ("${A", "missing '}'"),
        ("${}", "missing variable name"),
        ("${A/x/y}", "unsupported modifier"),
        ("${UNSET:?must be set}", "UNSET: must be set"),
        ("${EMPTY:?}", "EMPTY: is not set"),
    ],
)
def test_process_word_errors(word: str, message: str) -> None:
    with pytest.raises(SubstitutionError, match=message.replace("$", "\\$")):
        process_word(word, ENV)


def test_question_modifier_without_colon_accepts_empty() -> None:
    assert process_word("${EMPTY?x}", ENV) == ""


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("a b  c", ["a", "b", "c"]),
        ('k="v w" x=y', ['k="v w"', "x=y"]),
        ("k='a \"b' z", ["k='a \"b'", "z"]),
        ('"" x', ['""', "x"]),
        ("a\\ b c", ["a\\ b", "c"]),
        ("", []),
    ],
)
def test_split_words(text: str, words: list[str]) -> None:
    assert split_words(text) == words


# ---- instruction expansion ----------------------------------------------------------------------------


def first(text: str) -> ins.Instruction:
    return df.parse(f"FROM scratch\n{text}\n").stages[0].instructions[0]


def test_env_values_see_the_environment_before_the_step() -> None:
    instr = first("ENV abc=bye def=$abc")
    assert isinstance(instr, ins.Env)
    assert instr.expand({"abc": "hello"}).pairs == (("abc", "bye"), ("def", "hello"))


def test_copy_expands_sources_dest_and_flags() -> None:
    instr = first('COPY --chown=$U:$G --from=${S} $SRC "${DST}x/"')
    assert isinstance(instr, ins.Copy)
    got = instr.expand({"U": "app", "G": "grp", "S": "build", "SRC": "a.txt", "DST": "/d"})
    assert (got.sources, got.dest, got.chown, got.from_stage) == (("a.txt",), "/dx/", "app:grp", "build")


def test_run_is_not_expanded() -> None:
    instr = first("RUN echo $HOME")
    assert instr.expand({"HOME": "/x"}) is instr


def test_expose_ranges_and_protocols() -> None:
    instr = first("EXPOSE $P 53/UDP 10-12")
    assert isinstance(instr, ins.Expose)
    assert instr.expand({"P": "80"}).ports == ("80/tcp", "53/udp", "10/tcp", "11/tcp", "12/tcp")


def test_expansion_error_names_the_line() -> None:
    instr = first("WORKDIR ${X:?needs X}")
    with pytest.raises(ins.DockerfileError) as info:
        instr.expand({})
    assert info.value.line == 2
    assert str(info.value) == "Dockerfile line 2: WORKDIR: X: needs X"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("EXPOSE 99999", "invalid port range"),
        ("EXPOSE http", "invalid port 'http'"),
        ("STOPSIGNAL SIGNOPE", "invalid signal 'SIGNOPE'"),
        ("USER :grp", "invalid user"),
        ("COPY --chmod=rwx a b", "invalid --chmod=rwx"),
        ("ADD --chmod=999 a b", "ADD: invalid --chmod=999"),
    ],
)
def test_expansion_validation(text: str, message: str) -> None:
    with pytest.raises(ins.DockerfileError, match=message):
        first(text).expand({})


@pytest.mark.parametrize("sig", ["SIGTERM", "term", "9", "SIGRTMIN+3", "SIGKILL"])
def test_valid_signals(sig: str) -> None:
    assert ins.valid_signal(sig)


def test_durations() -> None:
    assert df.parse_duration("1m30s") == 90 * 10**9
    assert df.parse_duration("1.5s") == 1_500_000_000
    assert df.parse_duration("250ms") == 250_000_000
    with pytest.raises(ValueError):
        df.parse_duration("10")
    with pytest.raises(ValueError):
        df.parse_duration("5sx")


# ---- parse errors name the line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("FROM busybox\nFROOM x\n", 2, "unknown instruction: FROOM"),
        ("# c\nRUN true\nFROM busybox\n", 2, "RUN before the first FROM"),
        ("", 0, "no FROM instruction"),
        ("ARG X=1\n", 0, "no FROM instruction"),
        ("FROM busybox\nRUN\n", 2, "RUN requires a command"),
        ("FROM busybox\nRUN --mount=type=cache,target=/x true\n", 2, "RUN: unknown flag: --mount"),
        ("FROM busybox\nRUN --network=bridge0 true\n", 2, "--network=bridge0 is not supported"),
        ("FROM busybox\nCOPY onlyone\n", 2, "COPY requires at least two arguments"),
        ("FROM busybox\nADD --from=x a b\n", 2, "ADD: unknown flag: --from"),
        ("FROM busybox\nENV\n", 2, "ENV requires at least one argument"),
        ("FROM busybox\nENV lonely\n", 2, "ENV must have two arguments"),
        ("FROM busybox\nENV a=1 b\n", 2, "can't find = in 'b'"),
        ("FROM busybox\nLABEL =x\n", 2, "names can not be blank"),
        ("FROM busybox\nARG 1bad\n", 2, "ARG: invalid name '1bad'"),
        ("FROM a b\n", 1, "FROM requires either one argument, or three"),
        ("FROM a AS -x\n", 1, "invalid stage name '-x'"),
        ("FROM a AS x\nFROM b AS X\n", 2, "duplicate stage name 'x' (first used on line 1)"),
        ("FROM a\nSHELL /bin/bash -c\n", 2, "SHELL requires the arguments in JSON form"),
        ("FROM a\nHEALTHCHECK --interval=5 CMD true\n", 2, "--interval=5 is not a duration"),
        ("FROM a\nHEALTHCHECK --interval=10us CMD true\n", 2, "can not be less than 1ms"),
        ("FROM a\nHEALTHCHECK --retries=x CMD true\n", 2, "--retries=x is not a non-negative integer"),
        ("FROM a\nHEALTHCHECK NONE extra\n", 2, "HEALTHCHECK NONE takes no other arguments"),
        ("FROM a\nHEALTHCHECK RUN true\n", 2, "unknown type 'RUN'"),
        ("FROM a\nHEALTHCHECK CMD\n", 2, "HEALTHCHECK CMD requires a command"),
        ("FROM a\nONBUILD ONBUILD RUN x\n", 2, "ONBUILD isn't allowed as an ONBUILD trigger"),
        ("FROM a\nONBUILD FROOM x\n", 2, "unknown instruction: FROOM"),
        ("FROM a\nWORKDIR\n", 2, "WORKDIR requires exactly one argument"),
        ("FROM a\nFROM --platform b\n", 2, "--platform needs a value"),
        ("# escape=x\nFROM a\n", 1, "invalid escape token 'x'"),
        ("# escape=`\n# escape=\\\nFROM a\n", 2, "only one escape parser directive"),
        ("FROM a\nRUN true \\\n \\\n\nFOO\n", 2, None),  # continuation swallows FOO: no error
    ],
)
def test_errors_name_the_line(text: str, line: int, reason: str | None) -> None:
    if reason is None:
        parsed = df.parse(text)
        run = parsed.stages[0].instructions[0]
        assert isinstance(run, ins.Run) and run.command.args == ("true  FOO",)
        return
    with pytest.raises(ins.DockerfileError) as info:
        df.parse(text)
    assert isinstance(info.value, InvalidArgument)
    assert info.value.line == line
    assert reason in str(info.value)
    assert str(info.value).startswith(f"Dockerfile line {line}: " if line else "Dockerfile: ")


def test_filename_in_errors() -> None:
    with pytest.raises(ins.DockerfileError, match=r"^build/Containerfile line 1: unknown instruction: BAD"):
        df.parse("BAD x\n", filename="build/Containerfile")


def test_command_argv_by_form() -> None:
    shell = ins.Command(exec_form=False, args=("echo $X",))
    exe = ins.Command(exec_form=True, args=("echo", "$X"))
    assert shell.argv(["/bin/sh", "-c"]) == ["/bin/sh", "-c", "echo $X"]
    assert exe.argv(["/bin/sh", "-c"]) == ["echo", "$X"]


def test_json_lookalike_is_shell_form() -> None:
    instr = first("CMD [not json]")
    assert isinstance(instr, ins.Cmd)
    assert instr.command == ins.Command(exec_form=False, args=("[not json]",))
    mixed = first('CMD ["a", 1]')
    assert isinstance(mixed, ins.Cmd) and not mixed.command.exec_form


def test_stage_lookup() -> None:
    parsed = df.parse("FROM a AS One\nFROM b\n")
    assert parsed.stage("ONE") is parsed.stages[0]
    assert parsed.stage("1") is parsed.stages[1]
    assert parsed.stage("two") is None
    assert parsed.stage("5") is None


def test_bom_and_crlf() -> None:
    parsed = df.parse("\ufeffFROM a\r\nRUN echo hi\r\n")
    run = parsed.stages[0].instructions[0]
    assert isinstance(run, ins.Run) and run.command.args == ("echo hi",)


def test_parse_instruction_for_onbuild_triggers() -> None:
    instr = df.parse_instruction("COPY . /app", 7)
    assert isinstance(instr, ins.Copy) and instr.line == 7 and instr.dest == "/app"
