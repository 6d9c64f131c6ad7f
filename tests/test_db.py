"""The database layer against real SQLite files and a real PostgreSQL server (when there is one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from dbhelpers import PG_ADMIN, postgres_database
from packaging.utils import NormalizedName
from sqlalchemy import Connection, delete, func, select, update
from sqlalchemy import exc as sa_exc

from pypimirror.db import Database
from pypimirror.errors import DatabaseError, DatabaseFileError
from pypimirror.queries import (
    JobOutcome,
    Lease,
    Vote,
    acquire_lease,
    delete_file_checks,
    delete_local_files,
    delete_remote_sizes_before,
    delete_serials,
    delete_votes_before,
    finish_job_run,
    last_job_run,
    latest_job_runs,
    least_checked_files,
    load_local_files,
    load_remote_sizes,
    load_serials,
    read_lease,
    read_schema_version,
    record_download,
    record_moves,
    record_votes,
    release_lease,
    renew_lease,
    select_popular,
    select_vote_counts,
    start_job_run,
    store_file_checks,
    store_remote_sizes,
    store_serials,
    upsert_local_files,
)
from pypimirror.schema import SCHEMA_VERSION, file_checks, schema_version, votes
from pypimirror.sqlitefile import SQLITE_HEADER

T = TypeVar("T")
N = NormalizedName


def write(db: Database, fn: Callable[[Connection], T]) -> T:
    with db.begin() as conn:
        return fn(conn)


def read(db: Database, fn: Callable[[Connection], T]) -> T:
    with db.connect() as conn:
        return fn(conn)


def all_votes(conn: Connection) -> list[tuple[str, str, int]]:
    rows = conn.execute(select(votes).order_by(votes.c.file_path, votes.c.ip_prefix, votes.c.voted_at))
    return [(f, p, t) for f, p, t in rows]


# --- opening, schema and errors ------------------------------------------------------------


def test_create_schema_twice_keeps_rows_and_one_version(database: Database, database_url: str) -> None:
    write(database, lambda c: store_serials(c, [(N("a"), "A", 1)]))
    database.create_schema()
    with Database.open(database_url) as again:
        assert read(again, load_serials) == {"a": ("A", 1)}
        assert read(again, lambda c: c.execute(select(schema_version.c.version)).scalars().all()) == [
            SCHEMA_VERSION
        ]


def test_newer_schema_version_is_refused_and_left_untouched(database: Database, database_url: str) -> None:
    newer = SCHEMA_VERSION + 1
    write(database, lambda c: c.execute(update(schema_version).values(version=newer)))
    expected = f"schema version {newer} is newer than this pypimirror supports ({SCHEMA_VERSION})"
    with pytest.raises(DatabaseError, match=re.escape(expected)):
        Database.open(database_url)
    assert read(database, lambda c: c.execute(select(schema_version.c.version)).scalar_one()) == newer


def test_a_version_1_database_is_migrated_in_place_keeping_its_rows(database: Database, database_url: str) -> None:
    write(database, lambda c: store_serials(c, [(N("a"), "A", 1)]))
    write(database, lambda c: c.execute(update(schema_version).values(version=1)))
    write(database, lambda c: file_checks.drop(c))
    for _ in range(2):  # and a second start finds nothing left to do
        with Database.open(database_url) as again:
            assert read(again, load_serials) == {"a": ("A", 1)}
            assert read(again, lambda c: c.execute(select(schema_version.c.version)).scalars().all()) == [
                SCHEMA_VERSION
            ]
            write(again, lambda c: store_file_checks(c, "n", ["ab/cd/ef/a-1.0.tar.gz"], 5))


def test_least_checked_files_come_never_checked_first_then_oldest_within_the_byte_budget(database: Database) -> None:
    rows = [("a", 10, 0), ("b", 10, 1), ("c", 10, 0), ("d", 10, 0), ("d.metadata", 1, 0)]
    write(database, lambda c: upsert_local_files(c, "n", rows))
    write(database, lambda c: upsert_local_files(c, "other", [("e", 10, 0)]))
    write(database, lambda c: store_file_checks(c, "n", ["a"], 300))
    write(database, lambda c: store_file_checks(c, "n", ["b"], 100))
    order = read(database, lambda c: least_checked_files(c, "n", 10**6, 1, ".metadata"))
    assert order == [("c", 10), ("d", 10), ("b", 10), ("a", 10)]
    assert read(database, lambda c: least_checked_files(c, "n", 25, 1, ".metadata")) == [("c", 10), ("d", 10)]
    assert read(database, lambda c: least_checked_files(c, "n", 1, 1, ".metadata")) == [("c", 10)]  # one at least
    assert read(database, lambda c: least_checked_files(c, "n", 25, 20, ".metadata")) == [("c", 10)]  # 20 each
    write(database, lambda c: delete_local_files(c, "n", ["a"]))
    assert write(database, lambda c: delete_file_checks(c, "n")) == 1  # a's check went with it
    assert [p for p, _ in read(database, lambda c: least_checked_files(c, "n", 10**6, 1, ".metadata"))] == ["c", "d", "b"]


def test_open_in_missing_directory_raises_database_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing' / 'pypi-mirror.db'}"
    with pytest.raises(DatabaseError) as info:
        Database.open(url)
    assert str(info.value) == f"cannot open database {url}: unable to open database file"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "postgresql+psycopg://mirror:s3cret@127.0.0.1:1/mirror",
            "cannot open database postgresql+psycopg://mirror:***@127.0.0.1:1/mirror: connection failed:",
        ),
        ("no database url", "cannot open database no database url: Could not parse SQLAlchemy URL"),
        (
            "postgresql+psycopg://u:s3cret@127.0.0.1:port/db",
            "cannot open database postgresql+psycopg://u:***@127.0.0.1:port/db: invalid literal for int()",
        ),
        (
            "nosuchdb://u:s3cret@127.0.0.1/x",
            "cannot open database nosuchdb://u:***@127.0.0.1/x: Can't load plugin",
        ),
        (
            "mysql+pymysql://u:s3cret@127.0.0.1/x",
            "cannot open database mysql+pymysql://u:***@127.0.0.1/x: database driver not installed",
        ),
    ],
)
def test_open_failure_is_one_line_database_error_without_password(url: str, message: str) -> None:
    with pytest.raises(DatabaseError) as info:
        Database.open(url)
    shown = str(info.value)
    assert shown.startswith(message)
    assert "s3cret" not in shown and "\n" not in shown


def test_operational_error_in_a_transaction_becomes_database_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with Database.open(url) as db, pytest.raises(DatabaseError) as info:
        write(db, lambda c: c.exec_driver_sql("SELECT * FROM missing_table"))
    assert str(info.value) == f"database error on {url}: no such table: missing_table"


def test_a_corrupt_sqlite_file_is_a_one_line_database_error(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    path.write_bytes(SQLITE_HEADER + b"\xff" * 4080)  # the header survives, the rest is garbage
    db = Database(f"sqlite:///{path}")
    try:
        for transaction in (db.connect, db.begin):
            with pytest.raises(DatabaseError) as info, transaction() as conn:
                conn.execute(select(func.count()).select_from(votes))
            assert str(info.value) in (f"database error on sqlite:///{path}: file is not a database",
                                       f"database error on sqlite:///{path}: database disk image is malformed")
    finally:
        db.dispose()


@pytest.mark.parametrize("move", ["deleted", "replaced", "truncated"])
def test_no_transaction_runs_on_a_database_file_gone_from_its_path(tmp_path: Path, move: str, caplog) -> None:
    path = tmp_path / "db.sqlite"
    with Database.open(f"sqlite:///{path}") as db:
        write(db, lambda c: record_votes(c, [Vote("a.whl", "10.0.0.0/24", 1)], 60))
        if move == "deleted":
            path.unlink()
        elif move == "replaced":
            shutil.copy(path, tmp_path / "copy.sqlite")
            (tmp_path / "copy.sqlite").replace(path)
        else:
            os.truncate(path, 0)
        for _ in range(3):
            for transaction in (db.begin, db.connect):
                with pytest.raises(DatabaseFileError, match=f"^database error on sqlite:///{path}: the file was "):
                    with transaction() as conn:
                        record_votes(conn, [Vote("b.whl", "10.0.0.0/24", 2)], 60)
    assert path.exists() == (move != "deleted")  # no empty database was created in its place
    assert caplog.text.count(f"database file {path} was ") == 1  # once per minute, not per transaction
    if move != "deleted":
        with closing(sqlite3.connect(path)) as check:
            assert ("b.whl",) not in check.execute("SELECT file_path FROM votes").fetchall()


@pytest.mark.postgres
def test_killed_postgresql_backends_are_replaced_and_the_next_read_and_write_work() -> None:
    with postgres_database() as url, Database.open(url) as db:
        assert read(db, read_schema_version) == SCHEMA_VERSION
        write(db, lambda c: record_votes(c, [Vote("a.whl", "10.0.0.0/24", 1)], 60))
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()) AS t", [name]
            ).fetchone()
        assert killed is not None and killed[0] >= 1  # the pool's idle connections
        assert write(db, lambda c: record_votes(c, [Vote("b.whl", "10.0.0.0/24", 2)], 60)) == 1
        assert read(db, lambda c: sorted(row[0] for row in c.execute(select(votes.c.file_path)))) == ["a.whl", "b.whl"]


def test_the_schema_version_is_read_back_and_its_absence_is_an_error(tmp_path: Path) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as db:
        assert read(db, read_schema_version) == SCHEMA_VERSION
        write(db, lambda c: c.execute(delete(schema_version)))
        with pytest.raises(DatabaseError, match="^the database holds no schema version$"):
            read(db, read_schema_version)


@pytest.mark.parametrize(
    ("pragma", "expected"),
    [("journal_mode", "wal"), ("busy_timeout", 15000), ("synchronous", 1), ("foreign_keys", 1)],
)
def test_every_sqlite_connection_is_configured(tmp_path: Path, pragma: str, expected: object) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'db.sqlite'}") as db, db.connect() as one, db.connect() as two:
        for conn in (one, two):
            assert conn.exec_driver_sql(f"PRAGMA {pragma}").scalar() == expected


def test_the_file_check_keeps_the_write_lock_of_an_open_transaction(tmp_path: Path) -> None:
    """Closing any descriptor of a file drops every POSIX lock the process holds on it: a check
    that opened and closed the database file let another process write under our transaction."""
    path = tmp_path / "db.sqlite"
    other_writer = (
        "import sqlite3, sys\n"
        "conn = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
        "try:\n"
        "    conn.execute('BEGIN IMMEDIATE')\n"
        "except sqlite3.OperationalError as exc:\n"
        "    print(exc)\n"
        "else:\n"
        "    print('got the write lock')\n"
    )
    with Database.open(f"sqlite:///{path}") as db, db.begin() as conn:
        conn.execute(select(votes)).all()
        for _ in range(3):  # what every later transaction of any thread does first
            assert db._file_guard is not None and db._file_guard.problem() is None
        answer = subprocess.run([sys.executable, "-c", other_writer, str(path)], capture_output=True,
                                text=True, timeout=60, check=True).stdout
    assert answer.strip() == "database is locked"


def test_sqlite_write_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with Database.open(f"sqlite:///{path}") as db:
        other = sqlite3.connect(path, timeout=0, isolation_level=None)
        with db.begin():
            with pytest.raises(sqlite3.OperationalError, match="database is locked"):
                other.execute("BEGIN IMMEDIATE")
        with db.connect() as conn:
            conn.execute(select(votes)).all()
            other.execute("BEGIN IMMEDIATE")  # a reader never blocks a writer
            other.execute("INSERT INTO votes VALUES ('f', 'p', 1)")
            other.execute("COMMIT")
        other.close()


# --- votes ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "vote", "window", "inserted"),
    [
        (("f", "p", 100), ("f", "p", 159), 60, 0),
        (("f", "p", 100), ("f", "p", 160), 60, 1),
        (("f", "p", 100), ("f", "p", 100), 60, 0),
        (("f", "p", 100), ("f", "p", 90), 60, 0),  # a later row already counts this network
        (("f", "p", 100), ("f", "q", 101), 60, 1),
        (("f", "p", 100), ("g", "p", 101), 60, 1),
        (("f", "p", 100), ("f", "p", 100), 0, 0),  # same second: the key allows one row
        (("f", "p", 100), ("f", "p", 101), 0, 1),
    ],
)
def test_record_votes_drops_a_vote_within_the_window_of_a_stored_one(
    database: Database, stored: tuple[str, str, int], vote: tuple[str, str, int], window: int, inserted: int
) -> None:
    assert write(database, lambda c: record_votes(c, [Vote(*stored)], window)) == 1
    assert write(database, lambda c: record_votes(c, [Vote(*vote)], window)) == inserted
    assert len(read(database, all_votes)) == 1 + inserted


def test_record_votes_deduplicates_inside_one_unordered_batch(database: Database) -> None:
    batch = [Vote("f", "p", t) for t in (170, 100, 130, 100)] + [Vote("f", "q", 130)]
    assert write(database, lambda c: record_votes(c, batch, 60)) == 3
    assert read(database, all_votes) == [("f", "p", 100), ("f", "p", 170), ("f", "q", 130)]


def test_record_votes_of_an_empty_batch_inserts_nothing(database: Database) -> None:
    assert write(database, lambda c: record_votes(c, [], 60)) == 0


def test_record_votes_stores_a_batch_of_1000_in_well_under_a_second(database: Database) -> None:
    write(database, lambda c: record_votes(c, [Vote(f"f{i}", "old", 1) for i in range(1000)], 60))
    batch = [Vote(f"f{i % 700}", f"10.0.{i % 3}.0/24", 1000 + i % 5) for i in range(1000)]
    started = time.perf_counter()
    inserted = write(database, lambda c: record_votes(c, batch, 60))
    assert time.perf_counter() - started < 0.5
    assert inserted == len({(v.file_path, v.ip_prefix) for v in batch})


def test_select_popular_counts_distinct_prefixes_since_a_time(database: Database) -> None:
    batch = [
        *(Vote("a", p, 1000) for p in ("p1", "p2", "p3")),
        Vote("a", "p1", 2000),  # the same network again: still one
        *(Vote("b", "p1", t) for t in (1000, 2000, 3000)),
        *(Vote("c", p, 1500) for p in ("p1", "p2")),
        *(Vote("d", p, 1500) for p in ("p2", "p3")),
        *(Vote("e", p, 10) for p in ("p1", "p2", "p3")),  # before "since"
    ]
    write(database, lambda c: record_votes(c, batch, 60))
    assert read(database, lambda c: select_popular(c, 500, 2)) == [("a", 3), ("c", 2), ("d", 2)]
    assert read(database, lambda c: select_popular(c, 500, 1))[-1] == ("b", 1)
    assert read(database, lambda c: select_popular(c, 0, 3)) == [("a", 3), ("e", 3)]


def test_select_vote_counts_counts_every_vote_of_every_file_since_a_time(database: Database) -> None:
    batch = [
        *(Vote("a", p, 1000) for p in ("p1", "p2", "p3")),
        Vote("a", "p1", 1030),  # within the dedup window: not recorded, not counted
        *(Vote("b", "p1", t) for t in (1000, 2000, 3000, 4000)),  # one network, four votes
        Vote("c", "p2", 1500),
        *(Vote("e", p, 10) for p in ("p1", "p2", "p3")),  # before "since"
    ]
    write(database, lambda c: record_votes(c, batch, 60))
    assert read(database, lambda c: select_vote_counts(c, 500)) == [("b", 4), ("a", 3), ("c", 1)]
    assert read(database, lambda c: select_vote_counts(c, 2500)) == [("b", 2)]


def test_delete_votes_before_removes_only_older_votes(database: Database) -> None:
    write(database, lambda c: record_votes(c, [Vote("f", "p", t) for t in (100, 200, 300)], 60))
    assert write(database, lambda c: delete_votes_before(c, 300)) == 2
    assert read(database, all_votes) == [("f", "p", 300)]


# --- serials, local files, remote sizes ----------------------------------------------------


def test_store_serials_inserts_and_updates_including_a_case_only_rename(database: Database) -> None:
    write(database, lambda c: store_serials(c, [(N("django"), "Django", 10), (N("six"), "six", 5)]))
    write(database, lambda c: store_serials(c, [(N("django"), "DJANGO", 12)]))
    assert read(database, load_serials) == {"django": ("DJANGO", 12), "six": ("six", 5)}


def test_delete_serials_removes_the_named_projects_in_chunks(database: Database) -> None:
    rows = [(N(f"p{i}"), f"P{i}", i) for i in range(1200)]
    write(database, lambda c: store_serials(c, rows))
    doomed = [N(f"p{i}") for i in range(1, 1200)] + [N("never-existed")]
    assert write(database, lambda c: delete_serials(c, doomed)) == 1199
    assert read(database, load_serials) == {"p0": ("P0", 0)}


def test_local_files_are_kept_per_node(database: Database) -> None:
    write(database, lambda c: upsert_local_files(c, "node-a", [("x.whl", 10, 0), ("y.whl", 20, 1)]))
    write(database, lambda c: upsert_local_files(c, "node-b", [("x.whl", 10, 1)]))
    write(database, lambda c: upsert_local_files(c, "node-a", [("x.whl", 11, 1)]))
    assert write(database, lambda c: delete_local_files(c, "node-a", ["y.whl", "missing.whl"])) == 1
    assert read(database, lambda c: load_local_files(c, "node-a")) == {"x.whl": (11, 1)}
    assert read(database, lambda c: load_local_files(c, "node-b")) == {"x.whl": (10, 1)}
    assert read(database, lambda c: load_local_files(c, "node-c")) == {}


def test_moves_record_the_new_tiers_and_forget_what_was_lost_in_one_transaction(database: Database) -> None:
    write(database, lambda c: upsert_local_files(c, "n", [("a", 10, 0), ("a.metadata", 1, 0), ("b", 20, 0)]))
    write(database, lambda c: upsert_local_files(c, "other", [("a.metadata", 1, 0)]))
    write(database, lambda c: record_moves(c, "n", [("a", 10, 1), ("b", 20, 1)], ["a.metadata"]))
    assert read(database, lambda c: load_local_files(c, "n")) == {"a": (10, 1), "b": (20, 1)}
    write(database, lambda c: record_moves(c, "n", [("b", 20, 0)], []))
    assert read(database, lambda c: load_local_files(c, "n")) == {"a": (10, 1), "b": (20, 0)}
    assert read(database, lambda c: load_local_files(c, "other")) == {"a.metadata": (1, 0)}


def test_a_recorded_download_is_cached_and_counts_as_checked_when_it_came(database: Database) -> None:
    write(database, lambda c: upsert_local_files(c, "n", [("old", 7, 0)]))
    write(database, lambda c: store_file_checks(c, "n", ["old"], 100))
    write(database, lambda c: record_download(c, "n", [("x", 5, 1), ("x.metadata", 1, 1)], "x", 500))
    assert read(database, lambda c: load_local_files(c, "n")) == {"old": (7, 0), "x": (5, 1), "x.metadata": (1, 1)}
    # a file never checked would come first; "x" comes after "old", checked at 100, as checked at 500
    assert read(database, lambda c: least_checked_files(c, "n", 10**6, 1, ".metadata")) == [("old", 7), ("x", 5)]


def test_load_remote_sizes_returns_fresh_answers_with_none_for_404(database: Database) -> None:
    rows = [("old.whl", 1, 100), ("big.whl", 5_000_000_000, 200), ("gone.whl", None, 200)]
    write(database, lambda c: store_remote_sizes(c, rows))
    paths = ["old.whl", "big.whl", "gone.whl", "unknown.whl"]
    fresh = read(database, lambda c: load_remote_sizes(c, paths, 150))
    assert fresh == {"big.whl": 5_000_000_000, "gone.whl": None}
    write(database, lambda c: store_remote_sizes(c, [("old.whl", 2, 300), ("gone.whl", 7, 300)]))
    assert read(database, lambda c: load_remote_sizes(c, paths, 250)) == {"old.whl": 2, "gone.whl": 7}


def test_load_remote_sizes_answers_more_paths_than_one_statement_binds(database: Database) -> None:
    rows = [(f"f{i}.whl", i, 100) for i in range(1200)]
    write(database, lambda c: store_remote_sizes(c, rows))
    found = read(database, lambda c: load_remote_sizes(c, [p for p, _, _ in rows], 100))
    assert found == {p: s for p, s, _ in rows}


def test_delete_remote_sizes_before_drops_sizes_and_404s_alike(database: Database) -> None:
    write(database, lambda c: store_remote_sizes(c, [("a", 1, 100), ("b", None, 100), ("c", 3, 200)]))
    assert write(database, lambda c: delete_remote_sizes_before(c, 200)) == 2
    assert read(database, lambda c: load_remote_sizes(c, ["a", "b", "c"], 0)) == {"c": 3}


# --- job runs ------------------------------------------------------------------------------


def test_job_run_is_running_until_finished_with_outcome_and_counts(database: Database) -> None:
    run_id = write(database, lambda c: start_job_run(c, "index_sync", "node-a", 1000.5))
    running = read(database, lambda c: last_job_run(c, "index_sync"))
    assert running is not None and (running.id, running.outcome, running.finished_at) == (run_id, None, None)
    counts: dict[str, int | float | str] = {"fetched": 3, "rate": 1.5, "note": "x"}
    write(database, lambda c: finish_job_run(c, run_id, 1010.25, "failed", counts, "boom"))
    done = read(database, lambda c: last_job_run(c, "index_sync"))
    assert done is not None
    assert (done.node_id, done.started_at, done.finished_at) == ("node-a", 1000.5, 1010.25)
    assert done.outcome == "failed"
    assert (done.counts, done.error) == (counts, "boom")


def test_latest_and_last_job_runs_are_newest_first_and_filtered(database: Database) -> None:
    def record(conn: Connection) -> None:
        runs: list[tuple[float, str, JobOutcome]] = [
            (1.0, "cache", "ok"),
            (2.0, "index_sync", "ok"),
            (3.0, "cache", "failed"),
        ]
        for started, job, outcome in runs:
            finish_job_run(conn, start_job_run(conn, job, "n", started), started + 0.5, outcome, {}, None)
        start_job_run(conn, "cache", "n", 4.0)

    write(database, record)
    assert [r.started_at for r in read(database, lambda c: latest_job_runs(c, limit=3))] == [4.0, 3.0, 2.0]
    last_cache = read(database, lambda c: last_job_run(c, "cache"))
    last_ok = read(database, lambda c: last_job_run(c, "cache", outcome="ok"))
    assert last_cache is not None and last_cache.started_at == 4.0
    assert last_ok is not None and last_ok.started_at == 1.0
    assert read(database, lambda c: last_job_run(c, "cache", outcome="interrupted")) is None


def test_finish_job_run_refuses_an_unknown_outcome(database: Database) -> None:
    run_id = write(database, lambda c: start_job_run(c, "cache", "n", 1.0))
    with pytest.raises(sa_exc.IntegrityError):
        write(database, lambda c: finish_job_run(c, run_id, 2.0, "maybe", {}, None))  # type: ignore[arg-type]


# --- leases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "holder", "now", "acquired", "result"),
    [
        (None, "a", 100.0, True, ("a", 100.0, 160.0)),
        (("b", 50.0, 110.0), "a", 100.0, False, ("b", 50.0, 110.0)),  # held by another
        (("a", 50.0, 110.0), "a", 100.0, True, ("a", 50.0, 160.0)),  # ours: extended, same start
        (("b", 50.0, 100.0), "a", 100.0, True, ("a", 100.0, 160.0)),  # expired: taken over
        (("a", 50.0, 90.0), "a", 100.0, True, ("a", 50.0, 160.0)),  # ours, expired, untaken
    ],
)
def test_acquire_lease(
    database: Database,
    stored: tuple[str, float, float] | None,
    holder: str,
    now: float,
    acquired: bool,
    result: tuple[str, float, float],
) -> None:
    if stored is not None:
        stored_holder, since, until = stored
        write(database, lambda c: acquire_lease(c, "sync", stored_holder, since, until - since))
    outcome = write(database, lambda c: acquire_lease(c, "sync", holder, now, 60))
    assert outcome == (acquired, Lease("sync", *result))
    assert read(database, lambda c: read_lease(c, "sync")) == Lease("sync", *result)


def test_renew_lease_extends_only_our_own_lease(database: Database) -> None:
    write(database, lambda c: acquire_lease(c, "sync", "a", 100.0, 60))
    assert write(database, lambda c: renew_lease(c, "sync", "a", 150.0, 60)) is True
    assert write(database, lambda c: renew_lease(c, "sync", "b", 150.0, 60)) is False
    assert read(database, lambda c: read_lease(c, "sync")) == Lease("sync", "a", 100.0, 210.0)
    write(database, lambda c: acquire_lease(c, "sync", "b", 300.0, 60))  # a's lease expired: stolen
    assert write(database, lambda c: renew_lease(c, "sync", "a", 301.0, 60)) is False
    assert write(database, lambda c: renew_lease(c, "other", "a", 301.0, 60)) is False


def test_release_lease_frees_it_only_for_its_holder(database: Database) -> None:
    write(database, lambda c: acquire_lease(c, "sync", "a", 100.0, 60))
    write(database, lambda c: release_lease(c, "sync", "b"))
    assert read(database, lambda c: read_lease(c, "sync")) is not None
    write(database, lambda c: release_lease(c, "sync", "a"))
    assert read(database, lambda c: read_lease(c, "sync")) is None
    assert write(database, lambda c: acquire_lease(c, "sync", "b", 101.0, 60))[0] is True


def test_concurrent_contenders_for_a_free_lease_have_one_winner(database: Database) -> None:
    start = threading.Barrier(6)

    def contend(holder: str) -> bool:
        start.wait()
        return write(database, lambda c: acquire_lease(c, "sync", holder, 100.0, 60))[0]

    with ThreadPoolExecutor(6) as pool:
        wins = list(pool.map(contend, [f"h{i}" for i in range(6)]))
    assert wins.count(True) == 1
    lease = read(database, lambda c: read_lease(c, "sync"))
    assert lease is not None and lease.holder == f"h{wins.index(True)}"


# --- async bridge --------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_run_commits_in_a_worker_thread_and_returns_the_result(database: Database) -> None:
    def store(conn: Connection) -> int:
        record_votes(conn, [Vote("f", "p", 1)], 60)
        return threading.get_ident()

    writer_thread = await database.run(store)
    count, reader_thread = await database.run_read(
        lambda c: (c.execute(select(func.count()).select_from(votes)).scalar_one(), threading.get_ident())
    )
    assert count == 1
    assert threading.get_ident() not in (writer_thread, reader_thread)


@pytest.mark.gen_test
async def test_run_rolls_back_when_the_function_raises(database: Database) -> None:
    def fail_after_insert(conn: Connection) -> None:
        record_votes(conn, [Vote("f", "p", 1)], 60)
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await database.run(fail_after_insert)
    assert await database.run_read(all_votes) == []


# --- two processes at once -----------------------------------------------------------------


def test_two_writer_processes_and_a_read_then_write_job_never_lose_a_vote(
    database: Database, database_url: str
) -> None:
    script = Path(__file__).with_name("dbhelpers.py")
    command = [sys.executable, str(script), database_url]
    writers = [subprocess.Popen([*command, str(i), "3"], stdout=subprocess.PIPE, text=True) for i in (1, 2)]
    deleted = transactions = torn = 0

    def drain(conn: Connection) -> tuple[int, int]:
        counted = sum(n for _, n in select_popular(conn, 0, 1))  # one prefix per vote
        return counted, delete_votes_before(conn, 2**62)

    while any(w.poll() is None for w in writers):
        counted, removed = write(database, drain)
        deleted += removed
        transactions += 1
        torn += counted != removed
        time.sleep(0.02)
    reports = [json.loads(w.communicate()[0]) for w in writers]
    remaining = len(read(database, all_votes))

    assert [(r["error_count"], r["errors"]) for r in reports] == [(0, []), (0, [])]
    assert all(r["inserted"] == r["attempted"] > 100 for r in reports), reports
    assert deleted + remaining == sum(r["inserted"] for r in reports)
    assert transactions > 10
    if database.dialect == "sqlite":  # serialised: what the job read is exactly what it deleted
        assert torn == 0
