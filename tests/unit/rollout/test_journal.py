"""The journal on SQLite (the contract in journal_cases.py), and how the controller picks its journal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from controller import config
from controller.errors import ControllerError
from controller.rollout.journal import (
    JournalError,
    SqliteJournal,
    open_journal,
    redact,
)
from tests.unit.rollout.journal_cases import *  # noqa: F403  (the contract's test functions)
from tests.unit.rollout.journal_cases import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(str(tmp_path / "journal" / "rollouts.db"), [])
    yield s
    await s.close()


@pytest.fixture
def cfg_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv(config.ENV_JOURNAL, raising=False)
    return tmp_path / "cfg"


async def test_the_default_journal_is_sqlite_in_the_config_dir(cfg_dir: Path) -> None:
    journal = open_journal(cfg_dir=cfg_dir)
    assert isinstance(journal, SqliteJournal)
    assert journal.path == cfg_dir / "rollouts.db"
    assert journal.path.exists()
    await journal.close()


async def test_the_journal_from_the_environment_or_the_config_file(
    cfg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_dir.mkdir()
    (cfg_dir / "config.toml").write_text(f'journal = "{tmp_path / "team.db"}"\n')
    journal = open_journal(cfg_dir=cfg_dir)
    assert isinstance(journal, SqliteJournal) and journal.path == tmp_path / "team.db"
    await journal.close()
    monkeypatch.setenv("DOCKYARD_JOURNAL", f"sqlite://{tmp_path / 'env.db'}")
    journal = open_journal(cfg_dir=cfg_dir)
    assert isinstance(journal, SqliteJournal) and journal.path == tmp_path / "env.db"
    await journal.close()


def test_a_postgresql_url_opens_postgresql(cfg_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable server: the error is one line, names the server, and hides the password."""
    monkeypatch.setenv("DOCKYARD_JOURNAL", "postgresql://team:hunter2@127.0.0.1:1/rollouts")
    with pytest.raises(JournalError) as info:
        open_journal(cfg_dir=cfg_dir)
    message = str(info.value)
    assert message.startswith("journal postgresql://team:***@127.0.0.1:1/rollouts: ")
    assert "hunter2" not in message and "\n" not in message


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('jurnal = "x"\n', "unknown key(s): jurnal"),
        ("journal = 5\n", "journal must be a string"),
        ("journal = \n", "Invalid value"),
    ],
)
def test_a_bad_config_file_is_one_clear_error(cfg_dir: Path, content: str, message: str) -> None:
    cfg_dir.mkdir()
    (cfg_dir / "config.toml").write_text(content)
    with pytest.raises(ControllerError, match=rf"config .*config\.toml: .*{re.escape(message)}"):
        open_journal(cfg_dir=cfg_dir)


def test_other_schemes_are_refused(cfg_dir: Path) -> None:
    with pytest.raises(JournalError, match="journal mysql://u:\\*\\*\\*@db/x: expected a postgresql:// URL"):
        open_journal("mysql://u:p@db/x", cfg_dir=cfg_dir)


def test_an_unwritable_journal_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(JournalError, match=r"journal .*file/rollouts\.db"):
        SqliteJournal(tmp_path / "file" / "rollouts.db")


def test_redact() -> None:
    assert (
        redact("postgresql://u:secret@h:5/db?sslmode=require") == "postgresql://u:***@h:5/db?sslmode=require"
    )
    assert redact("postgresql://h/db") == "postgresql://h/db"
    assert redact("/var/lib/rollouts.db") == "/var/lib/rollouts.db"
