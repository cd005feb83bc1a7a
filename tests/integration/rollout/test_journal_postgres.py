"""The journal on a real PostgreSQL server (Debian's, started on a private port and data dir): the same
contract as SQLite (journal_cases.py), plus what only a shared server has — controllers opening the same
fresh database at once, and a connection the server drops."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from controller.rollout.journal import PostgresJournal, RolloutState, open_journal
from tests.support.postgres import PostgresServer, bin_dir, postgres_server
from tests.unit.rollout.journal_cases import *  # noqa: F403  (the contract's test functions)
from tests.unit.rollout.journal_cases import Store, rollout

pytestmark = pytest.mark.skipif(bin_dir() is None, reason="PostgreSQL is not installed (scripts/setup.sh)")


@pytest.fixture(scope="module")
def server() -> Iterator[PostgresServer]:
    with postgres_server() as pg:
        yield pg


@pytest.fixture
async def store(server: PostgresServer) -> AsyncIterator[Store]:
    """A fresh database per test on the module's server."""
    name = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(server.url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    s = Store(server.url.rsplit("/", 1)[0] + "/" + name, [])
    yield s
    await s.close()


def test_the_url_opens_postgresql(store: Store) -> None:
    journal = store.open()
    assert isinstance(journal, PostgresJournal)
    assert (
        ":***@127.0.0.1:" in journal.location
        and store.url.split(":")[2].split("@")[0] not in journal.location
    )


def test_controllers_opening_a_fresh_database_at_once_all_succeed(store: Store) -> None:
    with ThreadPoolExecutor(6) as pool:
        journals = list(pool.map(lambda _: open_journal(store.url), range(6)))
    store.opened.extend(journals)
    with psycopg.connect(store.url) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"rollouts", "host_steps", "journal_meta"} <= tables


async def test_a_dropped_connection_is_reopened(store: Store) -> None:
    journal = store.open()
    await journal.create(rollout())
    with psycopg.connect(store.url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchall()
    assert killed and all(r[0] for r in killed)
    assert await journal.set_state("r-1", RolloutState.RUNNING)
    assert (await journal.get("r-1")).state is RolloutState.RUNNING


async def test_two_controllers_see_each_others_rollouts_live(store: Store) -> None:
    a, b = store.open(), store.open()
    await a.create(rollout("r-a", owner="alice"))
    await asyncio.gather(b.create(rollout("r-b", owner="bob")), a.set_state("r-a", RolloutState.STAGING))
    assert {(r.id, r.owner, r.state) for r in await b.list()} == {
        ("r-a", "alice", RolloutState.STAGING),
        ("r-b", "bob", RolloutState.PLANNED),
    }
