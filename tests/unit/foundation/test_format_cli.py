"""`--format` before or after the command (controller/cli.py); shell completion (controller/completion.py).

No agent here: App.run is replaced by a recorder, so these check what the command would print with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from controller import cli, completion
from controller.app import App


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[App]:
    """Every App.run call's App (format, renderer); nothing is sent anywhere."""
    calls: list[App] = []

    def fake_run(self: App, op: Any, **kwargs: Any) -> Any:
        calls.append(self)
        if self.renderer is None and self.format not in ("table", "json"):
            raise AssertionError("a template reached a command without a renderer")
        return []

    monkeypatch.setattr(App, "run", fake_run)
    monkeypatch.setenv("DOCKYARD_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("DOCKYARD_HOST", raising=False)
    return calls


@pytest.mark.parametrize(
    "before, after",
    [
        (["--format", "json", "ps"], ["ps", "--format", "json"]),
        (["--format", "json", "images"], ["images", "--format", "json"]),
        (["--format", "json", "info"], ["info", "--format", "json"]),
        (["--format", "json", "volume", "ls"], ["volume", "ls", "--format", "json"]),
        (["--format", "json", "network", "ls"], ["network", "ls", "--format", "json"]),
        (["--format", "table", "ps", "-a"], ["ps", "-a", "--format", "table"]),
        (["--format", "{{.Names}}", "ps"], ["ps", "--format={{.Names}}"]),
        (["--format", "json", "version"], ["version", "--format", "json"]),
    ],
)
def test_after_the_command_is_the_same_as_before(
    seen: list[App], before: list[str], after: list[str]
) -> None:
    assert cli.run(before) == 0
    assert cli.run(after) == 0
    first, second = seen
    assert first.format == second.format
    assert (first.renderer is None) == (second.renderer is None)
    if first.renderer is not None and second.renderer is not None:
        assert first.renderer.template == second.renderer.template


def test_same_value_twice_is_fine_different_values_are_an_error(
    seen: list[App], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["--format", "json", "ps", "--format", "json"]) == 0
    assert seen[-1].format == "json"
    assert cli.run(["--format", "json", "ps", "--format", "table"]) == 2
    assert capsys.readouterr().err == "error: --format given twice with different values\n"
    assert len(seen) == 1


def test_bad_templates_fail_before_the_command_runs(
    seen: list[App], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.run(["ps", "--format", "{{.Nope}}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --format: unknown field .Nope for `ps`; known fields: ID, Image,")
    assert err.count("\n") == 1
    assert cli.run(["info", "--format", "{{.Name}}"]) == 2
    assert "`info` takes table or json" in capsys.readouterr().err
    assert cli.run(["--format", "{{.Name}}", "info"]) == 2
    assert cli.run(["ps", "--format", "jsno"]) == 2
    assert "invalid --format 'jsno'" in capsys.readouterr().err
    assert seen == []


def test_templates_bind_to_the_list_commands(seen: list[App]) -> None:
    for argv in (
        ["ps", "--format", "{{.ID}}"],
        ["container", "ls", "--format", "{{.Status}}"],
        ["images", "--format", "{{.Repository}}:{{.Tag}}"],
        ["image", "ls", "--format", "table {{.ID}}"],
        ["volume", "ls", "--format", "{{.Mountpoint}}"],
        ["network", "ls", "--format", "{{.Internal}}"],
    ):
        assert cli.run(argv) == 0, argv
        renderer = seen[-1].renderer
        assert renderer is not None
        assert renderer.template.fields == re.findall(r"\.(\w+)", argv[-1])


def test_no_trunc_is_read_when_printing(seen: list[App]) -> None:
    assert cli.run(["ps", "--format", "{{.ID}}", "--no-trunc"]) == 0
    renderer = seen[-1].renderer
    assert renderer is not None
    assert renderer.lines([{"id": "a" * 64, "status": "created"}]) == ["a" * 64]


def test_save_keeps_its_own_format_option(seen: list[App]) -> None:
    command = cli.cli.get_command(cli.cli.make_context("dockyard", ["save"], resilient_parsing=True), "save")
    assert command is not None
    formats = [p for p in command.params if "--format" in getattr(p, "opts", [])]
    assert len(formats) == 1 and formats[0].name == "archive_format"


@pytest.mark.parametrize("shell", completion.SHELLS)
def test_completion_script_names_the_entry_point(shell: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.run(["completion", shell]) == 0
    out = capsys.readouterr().out
    assert "_DOCKYARD_COMPLETE" in out and f"{shell}_complete" in out and "dockyard" in out


def _complete(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], words: str, shell: str = "bash"
) -> list[str]:
    monkeypatch.setenv("_DOCKYARD_COMPLETE", f"{shell}_complete")
    monkeypatch.setenv("COMP_WORDS", words)
    cword = len(words.split()) - (0 if words.endswith(" ") else 1)
    # fish passes the word under the cursor itself, bash and zsh its index
    current = ("" if words.endswith(" ") else words.split()[-1]) if shell == "fish" else str(cword)
    monkeypatch.setenv("COMP_CWORD", current)
    assert cli.run([]) == 0
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_completion_offers_commands_and_flags(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKYARD_CONFIG_DIR", str(tmp_path))
    assert _complete(monkeypatch, capsys, "dockyard vol") == ["plain,volume"]
    assert "plain,network" in _complete(monkeypatch, capsys, "dockyard ne")
    assert "plain,ls" in _complete(monkeypatch, capsys, "dockyard volume ")
    assert "plain,--no-trunc" in _complete(monkeypatch, capsys, "dockyard ps --")
    assert "plain,--format" in _complete(monkeypatch, capsys, "dockyard ps --fo")


def test_name_completion_is_silent_without_an_agent(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKYARD_CONFIG_DIR", str(tmp_path))
    target = f"unix://{tmp_path / 'nobody.sock'}"
    assert _complete(monkeypatch, capsys, f"dockyard -H {target} start ") == []
    assert capsys.readouterr().err == ""
    assert _complete(monkeypatch, capsys, f"dockyard -H {target} rmi b") == []


def test_container_and_image_arguments_complete_names() -> None:
    ctx = cli.cli.make_context("dockyard", ["stop"], resilient_parsing=True)
    for name, expected in (
        ("stop", completion.complete_containers),
        ("logs", completion.complete_containers),
        ("rmi", completion.complete_images),
        ("run", completion.complete_images),
    ):
        command = cli.cli.get_command(ctx, name)
        assert command is not None
        first = next(p for p in command.params if p.param_type_name == "argument")
        assert first._custom_shell_complete is expected, name


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_get_commands_too(
    shell: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("DOCKYARD_CONFIG_DIR", str(tmp_path))
    lines = _complete(monkeypatch, capsys, "dockyard vol", shell)
    assert any(line == "volume" or line.startswith("plain,volume") for line in lines), lines
