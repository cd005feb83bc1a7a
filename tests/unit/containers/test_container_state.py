"""Container records across agent versions and the restart back-off kept across agent restarts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.containers import restart
from agent.state.containers import ContainerRecord, ContainerStore, Status, now
from agent.state.db import Database

OLD_DDL = """
CREATE TABLE containers_records (
    id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, image TEXT NOT NULL, image_digest TEXT NOT NULL,
    options TEXT NOT NULL, created_at TEXT NOT NULL, status TEXT NOT NULL,
    hostname TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0,
    conmon_pid INTEGER NOT NULL DEFAULT 0, started_at TEXT, finished_at TEXT, exit_code INTEGER,
    oom_killed INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0, stopped_by_user INTEGER NOT NULL DEFAULT 0,
    health_status TEXT NOT NULL DEFAULT '', health_failing_streak INTEGER NOT NULL DEFAULT 0,
    health_log TEXT NOT NULL DEFAULT '[]', boot_id TEXT NOT NULL DEFAULT '',
    labels TEXT NOT NULL DEFAULT '{}', lowerdirs TEXT NOT NULL DEFAULT '[]',
    command TEXT NOT NULL DEFAULT '[]'
);
INSERT INTO containers_records (id, name, image, image_digest, options, created_at, status)
VALUES ('c1', 'old', 'busybox', 'sha256:x', '{}', '2024-01-01T00:00:00+00:00', 'paused');
"""


def test_a_database_of_an_older_agent_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "dockyard.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_DDL)
    conn.close()
    store = ContainerStore(Database(path))
    rec = store.get("c1")
    assert rec.status is Status.PAUSED and rec.paused_by == "" and rec.restart_delay == 0.0
    assert store.update("c1", paused_by="commit", restart_delay=6.4).paused_by == "commit"
    again = ContainerStore(Database(path)).get("c1")  # idempotent on a migrated database
    assert (again.paused_by, again.restart_delay) == ("commit", 6.4)


def test_new_records_keep_who_paused_and_the_back_off(tmp_path: Path) -> None:
    store = ContainerStore(Database(tmp_path / "db"))
    store.insert(ContainerRecord("c2", "n", "i", "sha256:y", {}, now(), restart_delay=3.2))
    assert store.get("c2").restart_delay == 3.2


def test_what_is_left_of_a_back_off() -> None:
    assert restart.remaining(6.4, 1.4) == 5.0
    assert restart.remaining(6.4, 100.0) == 0.0  # the agent was down longer: restart now
    assert restart.remaining(6.4, -5.0) == 6.4  # a clock that went back never lengthens it
    # the next back-off after a restart that followed a kept 6.4 s one doubles, it does not start over
    assert restart.next_delay(6.4, 0.01) == 12.8
