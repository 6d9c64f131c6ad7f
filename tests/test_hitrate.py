"""The live hit rate: counting in memory, flushing to real SQLite and PostgreSQL, reading it back."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from pathlib import Path

import pytest
from packaging.utils import NormalizedName
from sqlalchemy import select, text, update

from pypimirror.db import Database
from pypimirror.queries import HitCount, add_hit_counts, load_hit_counts, load_serials, store_serials
from pypimirror.errors import DatabaseError
from pypimirror.hitrate import (
    DAY_S,
    HOUR_S,
    HitCounter,
    HitFlusher,
    HitWindow,
    listed_sizes,
    read_hit_summary,
    summarize_hits,
)
from pypimirror.listedfiles import ListedFiles
from pypimirror.pages import DistFile, ProjectPage, render_project_json, rewrite_file_url
from pypimirror.schema import SCHEMA_VERSION, hit_counters, schema_version
from pypimirror.storage import RepoLayout, atomic_write

# Thursday 2026-12-03 10:00:00 UTC, a whole hour and 10 h into its day.
HOUR = 1_796_292_000
assert HOUR % HOUR_S == 0 and HOUR % DAY_S == 10 * HOUR_S
WHEEL = "ab/cd/" + "ef" * 30 + "/demo-1.0-py3-none-any.whl"
OTHER = "12/34/" + "56" * 30 + "/other-2.0.tar.gz"
PIP_UA = "pip/24.0 CPython/3.12"
UPSTREAM_PACKAGES = "https://files.example.org/packages"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def stored(db: Database, node_id: str = "node-a") -> list[tuple[int, str, int, int]]:
    with db.connect() as conn:
        return [(c.hour_start, c.outcome, c.requests, c.bytes) for c in load_hit_counts(conn, node_id, 0)]


# --- counting in memory ---------------------------------------------------------------------


def test_downloads_are_counted_per_hour_and_outcome_and_bots_are_left_out() -> None:
    clock = Clock(HOUR + 5)
    counter = HitCounter(is_bot=lambda agent: "bot" in agent.lower(), clock=clock)
    counter.count("local", 1000, WHEEL, PIP_UA)
    counter.count("local", 500, WHEEL, None)
    counter.count("proxy", 70, OTHER, PIP_UA)
    counter.count("redirect", 0, OTHER, "Googlebot/2.1")  # a bot: not counted anywhere
    clock.now = HOUR + HOUR_S  # the next hour starts a new row
    counter.count("redirect", 0, OTHER, PIP_UA)
    counts, redirected = counter.take()
    assert sorted(counts, key=lambda c: (c.hour_start, c.outcome)) == [
        HitCount(HOUR, "local", 2, 1500),
        HitCount(HOUR, "proxy", 1, 70),
        HitCount(HOUR + HOUR_S, "redirect", 1, 0),
    ]
    assert redirected == {(HOUR + HOUR_S, OTHER): 1}
    assert counter.totals() == {"local": (2, 1500), "redirect": (1, 0), "proxy": (1, 70)}
    assert counter.take() == ([], {})  # taken once; the totals stay


def test_redirects_kept_for_sizing_are_bounded_but_every_request_still_counts(monkeypatch) -> None:
    monkeypatch.setattr("pypimirror.hitrate._MAX_SIZED_REDIRECTS", 3)
    counter = HitCounter(clock=Clock(HOUR))
    for n in range(10):
        counter.count("redirect", 0, f"{n}/x.whl", PIP_UA)
    counter.count("redirect", 0, "0/x.whl", PIP_UA)  # one already kept still adds up
    counts, redirected = counter.take()
    assert counts == [HitCount(HOUR, "redirect", 11, 0)]
    assert redirected == {(HOUR, "0/x.whl"): 2, (HOUR, "1/x.whl"): 1, (HOUR, "2/x.whl"): 1}


# --- flushing to the database ---------------------------------------------------------------


def test_added_counts_sum_up_in_one_row_per_node_hour_and_outcome(database: Database) -> None:
    with database.begin() as conn:
        add_hit_counts(conn, "node-a", [HitCount(HOUR, "local", 2, 100), HitCount(HOUR, "redirect", 1, 0)])
    with database.begin() as conn:  # a second worker, or the next flush, adds to the same rows
        add_hit_counts(conn, "node-a", [HitCount(HOUR, "local", 3, 50), HitCount(HOUR + HOUR_S, "proxy", 1, 9)])
        add_hit_counts(conn, "node-b", [HitCount(HOUR, "local", 7, 7)])
    assert stored(database) == [(HOUR, "local", 5, 150), (HOUR, "redirect", 1, 0), (HOUR + HOUR_S, "proxy", 1, 9)]
    assert stored(database, "node-b") == [(HOUR, "local", 7, 7)]
    with database.connect() as conn:
        assert [c.hour_start for c in load_hit_counts(conn, "node-a", HOUR + 1)] == [HOUR + HOUR_S]


def test_an_outcome_the_table_does_not_know_is_refused(database: Database) -> None:
    with pytest.raises(Exception, match="ck_hit_counters_outcome|CHECK constraint"):
        with database.begin() as conn:
            add_hit_counts(conn, "node-a", [HitCount(HOUR, "cached", 1, 1)])  # type: ignore[arg-type]
    assert stored(database) == []


@pytest.mark.gen_test
async def test_two_processes_flushing_into_the_same_rows_lose_nothing(database: Database, database_url: str):
    other = Database(database_url)  # a second worker: its own engine, the same rows
    try:
        counters = [HitCounter(clock=Clock(HOUR + 60)) for _ in range(2)]
        flushers = [HitFlusher(counters[0], database, "node-a"), HitFlusher(counters[1], other, "node-a")]
        for round_ in range(3):
            for counter in counters:
                counter.count("local", 10, WHEEL, PIP_UA)
                counter.count("proxy", 3, OTHER, PIP_UA)
            assert all([await flusher.flush() for flusher in flushers])
    finally:
        other.dispose()
    assert stored(database) == [(HOUR, "local", 6, 60), (HOUR, "proxy", 6, 18)]


def write_page(repo: Path, name: str, files: dict[str, int]) -> None:
    """The stored PEP 691 page of ``name`` listing ``files`` (relpath -> size), as the sync writes it."""
    dists = tuple(
        DistFile(filename=relpath.rsplit("/", 1)[1], url=f"{UPSTREAM_PACKAGES}/{relpath}", sha256="ab" * 32,
                 requires_python=None, size=size, upload_time=None, yanked=False, core_metadata=False,
                 provenance=None, version="1.0")
        for relpath, size in files.items()
    )
    page = ProjectPage(name=NormalizedName(name), display_name=name, last_serial=1, files=dists, versions=("1.0",))
    url_for = partial(rewrite_file_url, packages_url=UPSTREAM_PACKAGES, prefix="/pypi")
    atomic_write(RepoLayout(repo).project_page(page.name, "index.v1_json"), render_project_json(page, url_for=url_for))


@pytest.mark.gen_test
async def test_a_redirect_counts_the_size_its_stored_page_lists_or_nothing(database: Database, tmp_path: Path):
    repo = tmp_path / "repo"
    write_page(repo, "demo", {WHEEL: 4000})
    write_page(repo, "other", {})  # the page of OTHER's project no longer lists it
    counter = HitCounter(clock=Clock(HOUR + 1))
    for path in (WHEEL, WHEEL, OTHER, "99/99/unknown/never-listed-1.0.tar.gz"):
        counter.count("redirect", 0, path, PIP_UA)
    sizes = listed_sizes(ListedFiles(repo, "/pypi"))
    assert await HitFlusher(counter, database, "node-a", sizes=sizes).flush()
    assert stored(database) == [(HOUR, "redirect", 4, 8000)]
    assert counter.totals()["redirect"] == (4, 8000)  # /metrics learns the sized bytes too


@pytest.mark.gen_test
async def test_a_size_lookup_that_fails_costs_the_bytes_but_never_the_counts(database: Database, caplog):
    def broken(paths: object) -> dict[str, int]:
        raise RuntimeError("a bug in the lookup")

    counter = HitCounter(clock=Clock(HOUR))
    counter.count("redirect", 0, WHEEL, PIP_UA)
    with caplog.at_level(logging.ERROR, logger="pypimirror.hitrate"):
        assert await HitFlusher(counter, database, "node-a", sizes=broken).flush()
    assert stored(database) == [(HOUR, "redirect", 1, 0)]
    assert "cannot look up the sizes of 1 redirected files; counting 0 bytes" in caplog.text


@pytest.mark.gen_test
async def test_counts_of_a_failed_flush_are_kept_and_written_once_the_database_is_back(tmp_path: Path, caplog):
    directory = tmp_path / "not-yet"
    db = Database(f"sqlite:///{directory / 'mirror.db'}")  # its directory does not exist: every flush fails
    try:
        counter = HitCounter(clock=Clock(HOUR))
        flusher = HitFlusher(counter, db, "node-a")
        counter.count("local", 100, WHEEL, PIP_UA)
        counter.count("redirect", 0, WHEEL, PIP_UA)
        with caplog.at_level(logging.WARNING, logger="pypimirror.hitrate"):
            assert not await flusher.flush()
            counter.count("local", 20, WHEEL, PIP_UA)  # counted during the outage
            assert not await flusher.flush()
        outage = [r for r in caplog.records if "keeping them until the database is back" in r.message]
        assert len(outage) == 1  # one warning per outage, not one per attempt
        directory.mkdir()
        db.create_schema()
        assert await flusher.flush()
        assert stored(db) == [(HOUR, "local", 2, 120), (HOUR, "redirect", 1, 0)]
        assert "recording hit counters again after 2 failed attempts" in caplog.text
    finally:
        db.dispose()


@pytest.mark.gen_test
async def test_close_writes_what_is_left_and_a_database_that_stays_down_is_reported(tmp_path: Path, caplog):
    db = Database.open(f"sqlite:///{tmp_path / 'mirror.db'}")
    try:
        counter = HitCounter(clock=Clock(HOUR))
        flusher = HitFlusher(counter, db, "node-a", interval=3600)  # only close() will flush
        flusher.start()
        counter.count("local", 5, WHEEL, PIP_UA)
        await flusher.close()
        assert stored(db) == [(HOUR, "local", 1, 5)]
    finally:
        db.dispose()
    gone = Database(f"sqlite:///{tmp_path / 'missing' / 'mirror.db'}")
    try:
        counter = HitCounter(clock=Clock(HOUR))
        counter.count("proxy", 5, WHEEL, PIP_UA)
        counter.count("proxy", 5, WHEEL, PIP_UA)
        with caplog.at_level(logging.ERROR, logger="pypimirror.hitrate"):
            await HitFlusher(counter, gone, "node-a").close()
        assert "2 downloads of the last moments could not be recorded" in caplog.text
    finally:
        gone.dispose()


@pytest.mark.gen_test
async def test_the_periodic_flush_writes_without_being_asked(tmp_path: Path):
    db = Database.open(f"sqlite:///{tmp_path / 'mirror.db'}")
    flusher: HitFlusher | None = None
    try:
        counter = HitCounter(clock=Clock(HOUR))
        flusher = HitFlusher(counter, db, "node-a", interval=0.01)
        counter.count("local", 1, WHEEL, PIP_UA)
        flusher.start()
        for _ in range(500):  # up to 5 s under load; usually the first turns
            if stored(db):
                break
            await asyncio.sleep(0.01)
        assert stored(db) == [(HOUR, "local", 1, 1)]
    finally:
        if flusher is not None:
            await flusher.close()
        db.dispose()


# --- the schema ------------------------------------------------------------------------------


# What schema version 4 added (pinned sets, advisories, the index history): absent before it.
_ADDED_IN_4 = (
    "pinned_sets", "pinned_files", "advisories", "advisory_packages",
    "history_state", "history_projects", "history_files", "history_events",
)


@pytest.mark.parametrize(
    ("version", "missing"),
    [(1, ("hit_counters", "file_checks", *_ADDED_IN_4)), (2, ("hit_counters", *_ADDED_IN_4)), (3, _ADDED_IN_4)],
)
def test_a_database_of_an_earlier_version_gets_the_hit_counters_and_keeps_its_rows(
    database: Database, database_url: str, version: int, missing: tuple[str, ...]
):
    with database.begin() as conn:  # what a database of that release looks like
        for table in missing:
            conn.execute(text(f"DROP TABLE {table}"))
        conn.execute(update(schema_version).values(version=version))
        store_serials(conn, [(NormalizedName("demo"), "Demo", 7)])  # a row of another table, which stays
    with Database.open(database_url) as again:
        with again.connect() as conn:
            assert conn.execute(select(schema_version.c.version)).scalars().all() == [SCHEMA_VERSION] == [4]
            assert conn.execute(select(hit_counters)).all() == []
            assert load_serials(conn) == {"demo": ("Demo", 7)}
        with again.begin() as conn:
            add_hit_counts(conn, "node-a", [HitCount(HOUR, "local", 1, 1)])
        assert stored(again) == [(HOUR, "local", 1, 1)]


def test_a_version_older_than_any_migration_is_refused(database: Database, database_url: str):
    with database.begin() as conn:
        conn.execute(update(schema_version).values(version=0))
    with pytest.raises(DatabaseError, match="schema version 0 is older than 4 and no migration from it exists"):
        Database.open(database_url)


# --- reading it back --------------------------------------------------------------------------


def window(summary_window: HitWindow) -> tuple[int, int, int, int]:
    return (summary_window.requests, summary_window.local_requests, summary_window.bytes, summary_window.local_bytes)


@pytest.mark.parametrize(
    ("hour_start", "in_day", "in_week", "day_index"),
    [
        (HOUR, True, True, 6),  # the current hour
        (HOUR - 23 * HOUR_S, True, True, 5),  # the oldest hour of the last 24 h: yesterday 11:00
        (HOUR - 24 * HOUR_S, False, True, 5),  # one more hour back: out of the 24 h
        (HOUR - 10 * HOUR_S, True, True, 6),  # today 00:00
        (HOUR - 10 * HOUR_S - 6 * DAY_S, False, True, 0),  # 00:00 of the chart's first day, 6 days ago
        (HOUR - 10 * HOUR_S - 6 * DAY_S - HOUR_S, False, True, None),  # in the 7 x 24 h, before the chart
        (HOUR - 167 * HOUR_S, False, True, None),  # the oldest hour of the 7 x 24 h: 7 days ago 11:00
        (HOUR - 168 * HOUR_S, False, False, None),  # out of every window
        (HOUR + HOUR_S, False, False, None),  # a clock ahead of ours: ignored
    ],
)
def test_each_hour_lands_in_the_windows_it_belongs_to(hour_start, in_day, in_week, day_index):
    summary = summarize_hits([HitCount(hour_start, "local", 3, 30), HitCount(hour_start, "redirect", 1, 10)],
                             HOUR + 1234)
    assert window(summary.last_day) == ((4, 3, 40, 30) if in_day else (0, 0, 0, 0))
    assert window(summary.last_week) == ((4, 3, 40, 30) if in_week else (0, 0, 0, 0))
    assert [window(day) for day in summary.days] == [
        (4, 3, 40, 30) if index == day_index else (0, 0, 0, 0) for index in range(7)
    ]
    assert [day.start for day in summary.days] == [HOUR - 10 * HOUR_S - k * DAY_S for k in range(6, -1, -1)]


@pytest.mark.parametrize(
    ("counts", "request_rate", "byte_rate"),
    [
        ([], None, None),
        ([HitCount(HOUR, "local", 3, 300), HitCount(HOUR, "redirect", 1, 100)], 0.75, 0.75),
        ([HitCount(HOUR, "proxy", 2, 0), HitCount(HOUR, "redirect", 2, 0)], 0.0, None),
        ([HitCount(HOUR, "local", 1, 0)], 1.0, None),  # a 304: a request, no bytes
    ],
)
def test_rates_are_local_over_all_and_none_without_anything_to_divide(counts, request_rate, byte_rate):
    summary = summarize_hits(counts, HOUR)
    assert summary.last_day.request_rate == request_rate
    assert summary.last_day.byte_rate == byte_rate


def test_the_summary_reads_only_this_nodes_counters(database: Database):
    with database.begin() as conn:
        add_hit_counts(conn, "node-a", [HitCount(HOUR, "local", 1, 1), HitCount(HOUR - 30 * DAY_S, "local", 9, 9)])
        add_hit_counts(conn, "node-b", [HitCount(HOUR, "redirect", 5, 5)])
    with database.connect() as conn:
        summary = read_hit_summary(conn, "node-a", HOUR + 10)
    assert window(summary.last_week) == (1, 1, 1, 1)
