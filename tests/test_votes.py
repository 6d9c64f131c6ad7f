"""The vote recorder against real databases: dedup, bots, a full queue, draining, outages."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from datetime import timedelta
from functools import partial
from pathlib import Path

import psycopg
import pytest
from dbhelpers import PG_ADMIN
from packaging.utils import NormalizedName
from sqlalchemy import select

from pypimirror.db import Database
from pypimirror.listedfiles import ListedFiles
from pypimirror.pages import DistFile, ProjectPage, render_project_json, rewrite_file_url
from pypimirror.storage import RepoLayout, atomic_write
from pypimirror.schema import votes
from pypimirror.votes import VoteRecorder, VoteStats

BOTS = ("bandersnatch", "Googlebot", "bingbot", "YandexBot", "Baiduspider")
PIP_UA = 'pip/24.0 {"implementation":{"name":"CPython","version":"3.12.1"},"system":{"name":"Linux"}}'


class Clock:
    """A settable Unix time for stamping votes."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make_recorder(db: Database, **overrides: object) -> VoteRecorder:
    options: dict[str, object] = {
        "dedup_window": timedelta(minutes=5),
        "queue_size": 10_000,
        "bots": BOTS,
        "flush_interval": 0.05,
    }
    options.update(overrides)
    return VoteRecorder(db, **options)  # type: ignore[arg-type]


def stored_votes(db: Database) -> list[tuple[str, str, int]]:
    with db.connect() as conn:
        rows = conn.execute(select(votes).order_by(votes.c.voted_at, votes.c.file_path, votes.c.ip_prefix))
        return [(path, prefix, at) for path, prefix, at in rows]


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --- deduplication -------------------------------------------------------------------------


@pytest.mark.parametrize("separate_batches", [False, True], ids=["one-batch", "separate-batches"])
def test_votes_of_one_prefix_within_dedup_window_are_stored_once(
    database: Database, separate_batches: bool
) -> None:
    """Seed §12 item 25: three requests from one /24 within 5 min are one row; 6 min later, a second."""
    clock = Clock(1_000_000)
    recorder = make_recorder(database, clock=clock)
    recorder.start()
    timeline = [
        (0, "ab/cd/ef/a.whl", "1.2.3.0"),
        (60, "ab/cd/ef/a.whl", "1.2.3.0"),
        (200, "ab/cd/ef/a.whl", "1.2.3.0"),
        (200, "ab/cd/ef/a.whl", "2001:db8:1::"),
        (200, "ab/cd/ef/b.whl", "1.2.3.0"),
        (360, "ab/cd/ef/a.whl", "1.2.3.0"),
    ]
    for offset, path, prefix in timeline:
        clock.now = 1_000_000 + offset
        assert recorder.offer(path, prefix, PIP_UA)
        if separate_batches:
            wait_for(lambda: recorder.stats.queue_depth == 0 and recorder.stats.written > 0)
    recorder.close()
    assert stored_votes(database) == [
        ("ab/cd/ef/a.whl", "1.2.3.0", 1_000_000),
        ("ab/cd/ef/a.whl", "2001:db8:1::", 1_000_200),
        ("ab/cd/ef/b.whl", "1.2.3.0", 1_000_200),
        ("ab/cd/ef/a.whl", "1.2.3.0", 1_000_360),
    ]
    stats = recorder.stats
    assert (stats.queued, stats.written, stats.deduplicated, stats.db_errors) == (6, 4, 2, 0)


def test_repeats_within_the_window_take_no_queue_slot_and_count_as_deduplicated(database: Database) -> None:
    clock = Clock(1_000_000)
    recorder = make_recorder(database, clock=clock, queue_size=2)
    assert all(recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", PIP_UA) for _ in range(1_000))
    assert recorder.offer("ab/cd/ef/b.whl", "1.2.4.0", PIP_UA)  # another network: one holds half the queue at most
    clock.now += 299  # still inside the 5-minute window of the first vote
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", PIP_UA)
    stats = recorder.stats
    assert (stats.queued, stats.dropped, stats.deduplicated, stats.queue_depth) == (1_002, 0, 1_000, 2)
    clock.now += 1  # the window has passed: a new vote, but the queue is full
    assert not recorder.offer("ab/cd/ef/a.whl", "1.2.5.0", PIP_UA)
    assert recorder.stats.dropped == 1
    recorder.start()
    recorder.close()
    assert stored_votes(database) == [("ab/cd/ef/a.whl", "1.2.3.0", 1_000_000), ("ab/cd/ef/b.whl", "1.2.4.0", 1_000_000)]
    assert (recorder.stats.written, recorder.stats.deduplicated) == (2, 1_000)


def test_writer_wakes_when_a_quarter_batch_waits_not_after_its_interval(database: Database) -> None:
    recorder = make_recorder(database, batch_size=8, flush_interval=60.0)
    recorder.start()
    try:
        time.sleep(0.1)  # the writer is asleep for its interval now
        for n in range(2):
            assert recorder.offer(f"ab/cd/ef/f{n}.whl", "1.2.3.0", PIP_UA)
        wait_for(lambda: recorder.stats.written == 2, timeout=5.0)
    finally:
        recorder.close()


def test_distinct_votes_at_thousands_per_second_are_all_stored(database: Database) -> None:
    """A burst of distinct files from many networks (the serve benchmark's miss rate and more)
    fits a 1000-slot queue: the writer keeps up, nothing is dropped."""
    recorder = make_recorder(database, queue_size=1_000)
    recorder.start()
    try:
        for n in range(20_000):
            assert recorder.offer(f"ab/cd/ef/f{n % 5_000}.whl", f"10.{n % 7}.{n % 251}.0", PIP_UA)
            if n % 50 == 49:
                time.sleep(0.005)  # ~10k offers/s, as two busy serving workers would make
    finally:
        recorder.close()
    assert recorder.stats.dropped == 0
    assert recorder.stats.written + recorder.stats.deduplicated == 20_000


def test_votes_are_stamped_when_offered_not_when_written(database: Database) -> None:
    clock = Clock(2_000_000.9)
    recorder = make_recorder(database, clock=clock)
    assert recorder.offer("ab/cd/ef/a.whl", "10.0.0.0", None)
    clock.now = 2_000_500
    recorder.start()
    recorder.close()
    assert stored_votes(database) == [("ab/cd/ef/a.whl", "10.0.0.0", 2_000_000)]


# --- what is not queued --------------------------------------------------------------------


@pytest.mark.parametrize(
    "user_agent",
    [
        "bandersnatch/6.1 (CPython 3.12.1-final0, Linux x86_64)",
        "Bandersnatch/6.1",
        "Mozilla/5.0 (compatible; googlebot/2.1; +http://example.org/bot.html)",
        "Mozilla/5.0 (compatible; BINGBOT/2.0)",
        "yandexbot",
        "Baiduspider-render/2.0",
        "x" * 600 + " Googlebot/2.1",  # too long to be cached: checked directly
    ],
)
def test_bot_user_agents_are_not_queued_in_any_case(tmp_path: Path, user_agent: str) -> None:
    recorder = make_recorder(Database(f"sqlite:///{tmp_path / 'unused.db'}"))
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", user_agent) is False
    assert recorder.stats == VoteStats(
        offered=1,
        queued=0,
        bots=1,
        dropped=0,
        written=0,
        deduplicated=0,
        db_errors=0,
        discarded=0,
        queue_depth=0,
    )


@pytest.mark.parametrize("user_agent", [PIP_UA, "uv/0.5.1", "", None, "bandersnatc"])
def test_other_user_agents_are_queued(tmp_path: Path, user_agent: str | None) -> None:
    recorder = make_recorder(Database(f"sqlite:///{tmp_path / 'unused.db'}"))
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", user_agent) is True
    assert (recorder.stats.queued, recorder.stats.bots, recorder.stats.queue_depth) == (1, 0, 1)


def test_custom_bot_list_replaces_the_default(tmp_path: Path) -> None:
    recorder = make_recorder(Database(f"sqlite:///{tmp_path / 'unused.db'}"), bots=["Nexus/"])
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", "nexus/3.61 (proxy)") is False
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", "bandersnatch/6.1") is True


@pytest.mark.parametrize("prefix", [None, ""])
def test_vote_without_network_prefix_is_not_queued(tmp_path: Path, prefix: str | None) -> None:
    recorder = make_recorder(Database(f"sqlite:///{tmp_path / 'unused.db'}"))
    assert recorder.offer("ab/cd/ef/a.whl", prefix, PIP_UA) is False
    assert (recorder.stats.offered, recorder.stats.queued, recorder.stats.dropped) == (1, 0, 0)


def test_full_queue_drops_and_counts_without_blocking(database: Database) -> None:
    recorder = make_recorder(database, queue_size=100)
    started = time.perf_counter()
    accepted = [recorder.offer(f"ab/cd/ef/f{n}.whl", f"1.2.{n % 4}.0", PIP_UA) for n in range(10_000)]
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0
    assert accepted.count(True) == 100 and accepted[:100] == [True] * 100
    stats = recorder.stats
    assert (stats.offered, stats.queued, stats.dropped, stats.queue_depth) == (10_000, 100, 9_900, 100)
    recorder.start()
    recorder.close()
    assert len(stored_votes(database)) == 100
    assert recorder.stats.written == 100


def test_one_network_holds_at_most_half_the_queue_and_its_excess_is_counted_apart(database: Database) -> None:
    recorder = make_recorder(database, queue_size=100)
    flood = [recorder.offer(f"ab/cd/ef/fake{n}.whl", "203.0.113.0", PIP_UA) for n in range(10_000)]
    assert flood.count(True) == 50
    real = [recorder.offer(f"ab/cd/ef/real{n}.whl", f"10.0.{n}.0", PIP_UA) for n in range(50)]
    assert all(real)
    stats = recorder.stats
    assert (stats.over_share, stats.dropped, stats.queue_depth) == (9_950, 0, 100)
    recorder.start()
    recorder.close()
    stored = {path for path, _, _ in stored_votes(database)}
    assert {f"ab/cd/ef/real{n}.whl" for n in range(50)} <= stored


def test_a_network_gets_its_slots_back_once_the_writer_took_its_votes(database: Database) -> None:
    recorder = make_recorder(database, queue_size=4)
    assert [recorder.offer(f"ab/cd/ef/f{n}.whl", "10.0.0.0", PIP_UA) for n in range(3)] == [True, True, False]
    recorder.start()
    try:
        wait_for(lambda: recorder.stats.written == 2)
        assert [recorder.offer(f"ab/cd/ef/g{n}.whl", "10.0.0.0", PIP_UA) for n in range(2)] == [True, True]
    finally:
        recorder.close()
    assert recorder.stats.written == 4


# --- only files a stored page lists ----------------------------------------------------------


def listed_repo(tmp_path: Path) -> tuple[ListedFiles, str]:
    """A repo whose one stored page lists one wheel: its ListedFiles and the wheel's path."""
    digest = "ab" * 32
    wheel = DistFile(filename="demo-1.0-py3-none-any.whl",
                     url=f"http://files.example.org/packages/ab/ab/{digest[4:]}/demo-1.0-py3-none-any.whl",
                     sha256=digest, requires_python=None, size=100, upload_time=None, yanked=False,
                     core_metadata=False, provenance=None, version="1.0")
    page = ProjectPage(name=NormalizedName("demo"), display_name="demo", last_serial=1, files=(wheel,), versions=("1.0",))
    url_for = partial(rewrite_file_url, packages_url="http://files.example.org/packages", prefix="/pypi")
    atomic_write(RepoLayout(tmp_path).project_page(NormalizedName("demo"), "index.v1_json"),
                 render_project_json(page, url_for=url_for))
    return ListedFiles(tmp_path, "/pypi"), f"ab/ab/{digest[4:]}/demo-1.0-py3-none-any.whl"


def test_votes_for_paths_no_stored_page_lists_are_not_stored_and_counted(database: Database, tmp_path: Path) -> None:
    listed, wheel = listed_repo(tmp_path)
    recorder = make_recorder(database, is_listed=lambda path: listed.lookup_blocking(path) is not None)
    made_up = [wheel.replace("1.0", "9.9"), "ab/cd/ef/absent-1.0.tar.gz", "ab/cd/ef/not-a-dist"]
    for path in [wheel, *made_up]:
        assert recorder.offer(path, "10.0.0.0", PIP_UA)
    recorder.start()
    recorder.close()
    assert [(path, prefix) for path, prefix, _ in stored_votes(database)] == [(wheel, "10.0.0.0")]
    assert (recorder.stats.written, recorder.stats.unlisted) == (1, 3)


def test_a_flood_of_made_up_paths_from_one_network_leaves_room_for_real_votes(
    database: Database, tmp_path: Path
) -> None:
    listed, wheel = listed_repo(tmp_path)
    recorder = make_recorder(database, queue_size=1_000, is_listed=lambda path: listed.lookup_blocking(path) is not None)
    recorder.start()
    try:
        for n in range(5_000):
            recorder.offer(f"ab/cd/{n:060x}/demo-{n}.0-py3-none-any.whl", "203.0.113.0", PIP_UA)
            if n % 50 == 0:
                assert recorder.offer(wheel, f"10.{n // 250}.{n % 250}.0", PIP_UA)
    finally:
        recorder.close()
    stored = stored_votes(database)
    assert {path for path, _, _ in stored} == {wheel} and len(stored) == 100  # every real vote, nothing else
    assert recorder.stats.unlisted + recorder.stats.over_share + recorder.stats.dropped == 5_000


def test_a_failing_listing_check_keeps_the_votes(database: Database, caplog: pytest.LogCaptureFixture) -> None:
    def broken(_path: str) -> bool:
        raise RuntimeError("bug")

    recorder = make_recorder(database, is_listed=broken)
    assert recorder.offer("ab/cd/ef/a.whl", "10.0.0.0", PIP_UA)
    recorder.start()
    recorder.close()
    assert len(stored_votes(database)) == 1
    assert "cannot check which of 1 votes a page lists; storing them all" in caplog.text


# --- closing ------------------------------------------------------------------------------


def test_close_drains_every_queued_vote(database: Database) -> None:
    recorder = make_recorder(database, flush_interval=0.5)
    recorder.start()
    for n in range(5000):
        assert recorder.offer(f"ab/cd/ef/f{n}.whl", f"10.{n % 256}.{n // 256}.0", PIP_UA)
    recorder.close()
    rows = stored_votes(database)
    assert len(rows) == 5000 and len({(path, prefix) for path, prefix, _ in rows}) == 5000
    assert (recorder.stats.written, recorder.stats.queue_depth) == (5000, 0)


def test_close_without_start_still_stores_the_queue(database: Database) -> None:
    recorder = make_recorder(database)
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", PIP_UA)
    recorder.close()
    assert [path for path, _, _ in stored_votes(database)] == ["ab/cd/ef/a.whl"]


def test_offer_after_close_returns_false(database: Database) -> None:
    recorder = make_recorder(database)
    recorder.start()
    recorder.close()
    assert recorder.offer("ab/cd/ef/a.whl", "1.2.3.0", PIP_UA) is False
    assert (recorder.stats.queued, recorder.stats.queue_depth) == (0, 0)
    assert stored_votes(database) == []


def test_start_twice_is_refused(database: Database) -> None:
    recorder = make_recorder(database)
    recorder.start()
    try:
        with pytest.raises(RuntimeError, match="already started"):
            recorder.start()
    finally:
        recorder.close()


def test_votes_queued_when_the_program_ends_without_close_are_stored(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'pypi-mirror.db'}"
    script = textwrap.dedent(
        f"""
        from datetime import timedelta
        from pypimirror.db import Database
        from pypimirror.votes import VoteRecorder
        recorder = VoteRecorder(Database.open({url!r}), dedup_window=timedelta(minutes=5),
                                queue_size=100, bots=(), flush_interval=0.2)
        recorder.start()
        for n in range(10):
            recorder.offer(f"ab/cd/ef/f{{n}}.whl", "1.2.3.0", None)
        """
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", script], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "vote writer was not closed; storing the queued votes before exit" in result.stderr
    with Database(url) as db:
        assert len(stored_votes(db)) == 10


# --- database outages ----------------------------------------------------------------------


@contextmanager
def sqlite_outage(url: str) -> Iterator[None]:
    """Every vote write fails (no such table) until the block ends."""
    path = url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("ALTER TABLE votes RENAME TO votes_away")
    try:
        yield
    finally:
        with closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("ALTER TABLE votes_away RENAME TO votes")


@contextmanager
def postgres_outage(url: str) -> Iterator[None]:
    """The database refuses connections and its open sessions are cut until the block ends."""
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", [name])
        try:
            yield
        finally:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')


def outage(url: str) -> AbstractContextManager[None]:
    return sqlite_outage(url) if url.startswith("sqlite") else postgres_outage(url)


def test_votes_accepted_during_an_outage_are_stored_after_recovery(
    database: Database, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pypimirror.votes")
    recorder = make_recorder(database)
    recorder.start()
    assert recorder.offer("ab/cd/ef/before.whl", "1.2.3.0", PIP_UA)
    wait_for(lambda: recorder.stats.written == 1)
    with outage(database_url):
        for n in range(50):
            assert recorder.offer(f"ab/cd/ef/during{n}.whl", "1.2.3.0", PIP_UA)
        wait_for(lambda: recorder.stats.db_errors >= 2)
        for n in range(50, 100):
            assert recorder.offer(f"ab/cd/ef/during{n}.whl", "1.2.3.0", PIP_UA)
    recorder.close(timeout=30)
    paths = {path for path, _, _ in stored_votes(database)}
    assert paths == {"ab/cd/ef/before.whl"} | {f"ab/cd/ef/during{n}.whl" for n in range(100)}
    assert (recorder.stats.written, recorder.stats.discarded) == (101, 0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len([m for m in warnings if m.startswith("cannot record votes, retrying")]) == 1
    assert any(m.startswith("recording votes again after ") for m in warnings)


def test_offers_stay_fast_while_sqlite_is_locked_and_nothing_is_lost(tmp_path: Path) -> None:
    """Another process holds the write lock for 2 s: the writer waits, offer() does not."""
    path = tmp_path / "pypi-mirror.db"
    with Database.open(f"sqlite:///{path}") as db:
        recorder = make_recorder(db)
        recorder.start()
        with closing(sqlite3.connect(path, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            slowest, n = 0.0, 0
            unlock_at = time.monotonic() + 2.0
            while time.monotonic() < unlock_at:
                for _ in range(100):
                    started = time.perf_counter()
                    assert recorder.offer(f"ab/cd/ef/f{n}.whl", "1.2.3.0", PIP_UA)
                    slowest = max(slowest, time.perf_counter() - started)
                    n += 1
                time.sleep(0.05)
            assert recorder.stats.written == 0  # the writer is held up by the lock
            locker.execute("COMMIT")
        recorder.close(timeout=30)
        assert slowest < 0.2
        assert len(stored_votes(db)) == n == recorder.stats.written


def test_votes_wait_while_the_sqlite_file_is_away_and_are_stored_once_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Not one vote goes into the file while it is not at its path (deleted, as far as anyone can see)."""
    path = tmp_path / "pypi-mirror.db"
    with Database.open(f"sqlite:///{path}") as db:
        recorder = make_recorder(db)
        recorder.start()
        assert recorder.offer("ab/cd/ef/before.whl", "1.2.3.0", PIP_UA)
        wait_for(lambda: recorder.stats.written == 1)
        path.rename(tmp_path / "away.db")
        for n in range(20):
            assert recorder.offer(f"ab/cd/ef/during{n}.whl", "1.2.3.0", PIP_UA)
        wait_for(lambda: recorder.stats.db_errors >= 2)
        assert recorder.stats.written == 1 and not path.exists()
        (tmp_path / "away.db").rename(path)  # the same file again: safe to write
        recorder.close(timeout=30)
        assert {p for p, _, _ in stored_votes(db)} == {"ab/cd/ef/before.whl"} | {
            f"ab/cd/ef/during{n}.whl" for n in range(20)
        }
    assert recorder.stats.written == 21
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [f"database file {path} was deleted while in use: nothing is read from or written to it "
                      "(votes wait in the queue); restore the file and restart pypimirror"]


def test_votes_for_a_deleted_sqlite_file_are_counted_as_lost_at_close(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pypi-mirror.db"
    with Database.open(f"sqlite:///{path}") as db:
        recorder = make_recorder(db)
        recorder.start()
        path.unlink()
        for n in range(3):
            assert recorder.offer(f"ab/cd/ef/f{n}.whl", "1.2.3.0", PIP_UA)
        wait_for(lambda: recorder.stats.db_errors >= 1)
        recorder.close(timeout=0.5)
    assert recorder.stats.written == 0 and not path.exists()  # no new empty database either
    assert "vote writer stopped: 3 queued votes were not recorded" in [r.getMessage() for r in caplog.records]


def test_close_timeout_gives_up_and_logs_the_lost_votes(
    database: Database, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    recorder = make_recorder(database)
    recorder.start()
    with outage(database_url):
        for n in range(3):
            assert recorder.offer(f"ab/cd/ef/f{n}.whl", "1.2.3.0", PIP_UA)
        wait_for(lambda: recorder.stats.db_errors >= 1)
        started = time.monotonic()
        recorder.close(timeout=0.5)
        assert time.monotonic() - started < 3
    messages = [r.getMessage() for r in caplog.records]
    assert "vote writer did not finish within 0.5s; stopping it" in messages
    assert "vote writer stopped: 3 queued votes were not recorded" in messages


def test_batch_failing_with_an_unexpected_error_is_discarded_and_later_votes_are_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with Database.open(f"sqlite:///{tmp_path / 'pypi-mirror.db'}") as db:
        recorder = make_recorder(db)
        assert recorder.offer("ab/cd/ef/\udcff.whl", "1.2.3.0", PIP_UA)  # not encodable: a poison vote
        recorder.start()
        wait_for(lambda: recorder.stats.discarded == 1)
        assert recorder.offer("ab/cd/ef/good.whl", "1.2.3.0", PIP_UA)
        recorder.close()
        assert [path for path, _, _ in stored_votes(db)] == ["ab/cd/ef/good.whl"]
    assert "discarding 1 votes that cannot be recorded" in [r.getMessage() for r in caplog.records]
    assert (recorder.stats.written, recorder.stats.db_errors) == (1, 0)
