"""The pinned sets' queries on SQLite and PostgreSQL: store, replace, summarise, remove."""

from __future__ import annotations

import pytest
from dbhelpers import postgres_database
from sqlalchemy import text

from pypimirror import pinqueries
from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.pinqueries import PinnedFile, PinnedSetSummary

A = PinnedFile("aa/bb/" + "1" * 60 + "/a-1.0-py3-none-any.whl", 100, "a" * 64)
B = PinnedFile("cc/dd/" + "2" * 60 + "/b-1.0.tar.gz", 250, "b" * 64)
C = PinnedFile("ee/ff/" + "3" * 60 + "/c-2.0-py3-none-any.whl", 40, "c" * 64)


def store(db: Database, name: str, *files: PinnedFile) -> bool:
    with db.begin() as conn:
        return pinqueries.store_pinned_set(
            conn, name, created_at=1_700_000_000.5, sources=["uv.lock"], platforms=["win_amd64"], pythons=["3.12"],
            files=files,
        )


def test_a_set_is_stored_read_back_and_replaced_whole(database: Database) -> None:
    assert store(database, "ci", A, B) is False
    assert store(database, "ci", B, C) is True
    with database.connect() as conn:
        pinned = pinqueries.load_pinned_set(conn, "ci", "node-a")
        assert pinqueries.load_pinned_set(conn, "other", "node-a") is None
    assert pinned is not None
    assert pinned.files == (B, C)
    assert (pinned.sources, pinned.platforms, pinned.pythons) == (("uv.lock",), ("win_amd64",), ("3.12",))
    assert pinned.created_at == 1_700_000_000.5


def test_summaries_count_files_bytes_and_what_this_node_holds(database: Database) -> None:
    store(database, "ci", A, B)
    store(database, "docs", B, C)
    with database.begin() as conn:
        dbq.upsert_local_files(conn, "node-a", [(B.path, B.size, 0), (C.path, C.size, 1)])
        dbq.upsert_local_files(conn, "node-b", [(A.path, A.size, 0)])
    with database.connect() as conn:
        assert pinqueries.pinned_set_summaries(conn, "node-a") == [
            PinnedSetSummary("ci", 1_700_000_000.5, 2, 350, 1),
            PinnedSetSummary("docs", 1_700_000_000.5, 2, 290, 2),
        ]
        pinned = pinqueries.load_pinned_set(conn, "ci", "node-a")
        assert pinned is not None and pinned.local == {B.path}
        assert pinqueries.load_pinned_files(conn).keys() == {A.path, B.path, C.path}
        assert pinqueries.load_pinned_files(conn, except_set="ci").keys() == {B.path, C.path}


def test_removing_a_set_keeps_the_files_other_sets_pin(database: Database) -> None:
    store(database, "ci", A, B)
    store(database, "docs", B)
    with database.begin() as conn:
        assert pinqueries.delete_pinned_set(conn, "ci") is True
        assert pinqueries.delete_pinned_set(conn, "ci") is False
    with database.connect() as conn:
        assert pinqueries.load_pinned_files(conn) == {B.path: B}
        assert [s.name for s in pinqueries.pinned_set_summaries(conn, "node-a")] == ["docs"]


def test_an_empty_set_list_and_a_set_of_no_local_files(database: Database) -> None:
    with database.connect() as conn:
        assert pinqueries.pinned_set_summaries(conn, "node-a") == []
    store(database, "ci", A)
    with database.connect() as conn:
        [summary] = pinqueries.pinned_set_summaries(conn, "node-a")
    assert (summary.files, summary.bytes, summary.local) == (1, 100, 0)


@pytest.mark.postgres
def test_on_postgresql_a_second_pin_add_waits_for_the_first_to_commit() -> None:
    try_lock = text("SELECT pg_try_advisory_xact_lock(:key)")
    with postgres_database() as url, Database(url) as db:
        db.create_schema()
        with db.begin() as first:
            pinqueries.lock_pinned_sets(first)
            with db.begin() as second:
                assert second.execute(try_lock, {"key": pinqueries.PINS_LOCK_KEY}).scalar() is False
        with db.begin() as later:
            assert later.execute(try_lock, {"key": pinqueries.PINS_LOCK_KEY}).scalar() is True
