"""The index history: real syncs against the fake upstream record it, and the index as it was at
any moment comes back from the current stored pages plus that history (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from fakeindex import FakeIndex
from packaging.utils import NormalizedName, canonicalize_name
from sqlalchemy import func, select
from tornado.httpclient import AsyncHTTPClient

from pypimirror import queries as dbq
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.history import ProjectAsOf, history_start, page_as_of, project_as_of, projects_as_of
from pypimirror.jobs.index_sync import IndexSyncReport, Writer, run_index_sync
from pypimirror.pagemodel import ProjectPage, parse_simple_project_json
from pypimirror.schema import history_events, history_files, history_projects
from pypimirror.storage import atomic_write
from pypimirror.upstream import UpstreamClient, UpstreamSettings

PREFIX = "/pypi"
#: The wall clock of the syncs starts here (2025-01-01), after every upload of the fake.
T0 = 1_735_689_600.0


async def no_sleep(_seconds: float) -> None:
    """Back-off without waiting."""


class WallClock:
    """The wall clock the syncs date the history by; a test moves it forward explicitly."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float = 100.0) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database.open(database_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


Sync = Callable[..., Any]


@pytest.fixture
def sync(tmp_path: Path, fake_index: FakeIndex, db: Database, curl_client: AsyncHTTPClient, clock: WallClock) -> Sync:
    """``await sync(record_history=True, write=...)``: one index sync at the wall clock's time."""

    async def run(*, record_history: bool = True, write: Writer = atomic_write) -> IndexSyncReport:
        config = parse_config(
            {
                "repo_path": str(tmp_path / "repo"),
                "prefix": PREFIX,
                "upstream": {"pypi_url": fake_index.pypi_url, "packages_url": fake_index.packages_url},
                "cache": {"size_limit": "1g"},
                "sync": {"concurrent_downloads": 4, "record_history": record_history},
            },
            base_dir=tmp_path,
        )
        client = UpstreamClient(
            UpstreamSettings(user_agent="pypimirror-test", proxy=None, connect_timeout=5, stall_timeout=5, attempts=2),
            sleep=no_sleep,
        )
        return await run_index_sync(config, db, client, sleep=no_sleep, write=write, wall_clock=clock)

    return run


def stored_page(tmp_path: Path, name: str) -> ProjectPage | None:
    path = tmp_path / "repo" / "simple" / name / "index.v1_json"
    return parse_simple_project_json(path.read_bytes()) if path.exists() else None


def page_then(
    tmp_path: Path, db: Database, name: str, moment: float, held: Callable[[str], bool] = lambda _path: False
) -> ProjectPage | None:
    """The page of ``name`` as of ``moment``, or None if the project did not exist then."""
    as_of = project_as_of(db.engine, canonicalize_name(name), moment)
    if as_of is None:
        return None
    return page_as_of(stored_page(tmp_path, name), as_of, prefix=PREFIX, held_locally=held)


def yanks(page: ProjectPage | None) -> dict[str, bool | str]:
    assert page is not None
    return {f.filename: f.yanked for f in page.files}


def filenames(page: ProjectPage | None) -> list[str]:
    assert page is not None
    return [f.filename for f in page.files]


def count_rows(db: Database) -> int:
    with db.connect() as conn:
        return sum(
            conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (history_projects, history_files, history_events)
        )


def upload(moment: float) -> datetime:
    """A naive UTC datetime, as the fake index takes upload times."""
    return datetime.fromtimestamp(moment, timezone.utc).replace(tzinfo=None)


async def start(sync: Sync, clock: WallClock, db: Database) -> float:
    """The founding run: it records nothing and starts the history when it ends."""
    report = await sync()
    assert report.ok
    started = history_start(db.engine)
    assert started == clock.now
    return started


# -- the start -------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_first_run_starts_the_history_and_what_it_found_is_since_ever(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0", "2.0"])
    fake_index.yank("demo", "1.0", "broken")
    assert history_start(db.engine) is None
    started = await start(sync, clock, db)
    assert count_rows(db) == 0  # the state found is the beginning: nothing to record
    # Long before the start, the state found holds (the files filtered by their upload time).
    then = page_then(tmp_path, db, "demo", started - 86400 * 30)
    assert then == stored_page(tmp_path, "demo")
    assert yanks(then)["demo-1.0.tar.gz"] == "broken"
    assert projects_as_of(db.engine, started)[0][:2] == ("demo", "demo")


@pytest.mark.gen_test(timeout=60)
async def test_a_failed_first_run_does_not_start_the_history(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock
) -> None:
    fake_index.add_many(5)

    def full_disk(path: Path, _data: bytes) -> None:
        raise OSError(28, "No space left on device", str(path))

    report = await sync(write=full_disk)
    assert report.failed is not None
    assert history_start(db.engine) is None
    started = clock.advance()
    assert (await sync()).ok
    assert history_start(db.engine) == started


@pytest.mark.gen_test(timeout=60)
async def test_a_run_without_recording_ends_the_history_and_the_next_starts_anew(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"])
    await start(sync, clock, db)
    fake_index.yank("demo", "1.0")
    clock.advance()
    await sync()
    assert count_rows(db) > 0
    fake_index.unyank("demo", "1.0")  # unseen by the history: this run does not record
    clock.advance()
    await sync(record_history=False)
    assert history_start(db.engine) is None and count_rows(db) == 0
    restarted = clock.advance()
    await sync()
    assert history_start(db.engine) == restarted
    assert yanks(page_then(tmp_path, db, "demo", restarted)) == {"demo-1.0.tar.gz": False, "demo-1.0-py3-none-any.whl": False}


# -- yanks, removals, quarantines -----------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_a_yank_holds_from_the_sync_that_saw_it_and_an_unyank_likewise(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0", "2.0"])
    t0 = await start(sync, clock, db)
    fake_index.yank("demo", "1.0", "CVE-2025-0001")
    t2 = clock.advance()
    await sync()
    fake_index.unyank("demo", "1.0")
    t4 = clock.advance()
    await sync()
    old_files = {"demo-1.0.tar.gz", "demo-1.0-py3-none-any.whl"}
    for moment, expected in [(t0, False), (t2 - 1, False), (t2, "CVE-2025-0001"), (t4 - 1, "CVE-2025-0001"), (t4, False)]:
        states = yanks(page_then(tmp_path, db, "demo", moment))
        assert {states[f] for f in old_files} == {expected}, moment
        assert {states[f] for f in states.keys() - old_files} == {False}
    assert len(filenames(stored_page(tmp_path, "demo"))) == 4


@pytest.mark.gen_test(timeout=60)
async def test_a_new_release_is_listed_from_its_upload_time_and_first_seen_is_recorded(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"])
    t0 = await start(sync, clock, db)
    uploaded = t0 + 50
    fake_index.add_release("demo", "2.0", upload_time=upload(uploaded))
    seen = clock.advance()
    await sync()
    assert filenames(page_then(tmp_path, db, "demo", uploaded - 1)) == ["demo-1.0-py3-none-any.whl", "demo-1.0.tar.gz"]
    then = page_then(tmp_path, db, "demo", uploaded)
    assert len(filenames(then)) == 4 and then is not None and then.versions == ("1.0", "2.0")
    as_of = project_as_of(db.engine, NormalizedName("demo"), seen)
    assert as_of is not None
    record = as_of.record_of("demo-2.0.tar.gz")
    assert record is not None and (record.first_seen, record.removed_at, record.entry) == (seen, None, None)
    assert as_of.record_of("demo-1.0.tar.gz") is None  # listed when the history began


@pytest.mark.gen_test(timeout=60)
async def test_a_new_project_exists_from_its_first_upload(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("old")
    t0 = await start(sync, clock, db)
    fake_index.add_project("fresh", ["0.1"], upload_time=upload(t0 + 10))
    clock.advance()
    await sync()
    assert page_then(tmp_path, db, "fresh", t0 + 9) is None
    assert [entry[1] for entry in projects_as_of(db.engine, t0 + 9)] == ["old"]
    assert len(filenames(page_then(tmp_path, db, "fresh", t0 + 10))) == 2
    assert [entry[1] for entry in projects_as_of(db.engine, t0 + 10)] == ["fresh", "old"]
    assert project_as_of(db.engine, NormalizedName("never"), t0 + 10) is None


@pytest.mark.gen_test(timeout=60)
async def test_a_removed_release_is_listed_before_its_removal_only_where_a_tier_holds_it(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0", "2.0"])
    t0 = await start(sync, clock, db)
    before = {f.filename: f for f in stored_page(tmp_path, "demo").files}  # type: ignore[union-attr]
    fake_index.remove_release("demo", "1.0")
    t2 = clock.advance()
    await sync()
    wheel = next(f for f in fake_index.files("demo", "2.0") if f.filename.endswith(".whl"))
    held_path = before["demo-1.0-py3-none-any.whl"].url.removeprefix(f"{PREFIX}/packages/")

    def held(path: str) -> bool:
        return path == held_path

    assert filenames(page_then(tmp_path, db, "demo", t0)) == [f.filename for f in fake_index.files("demo", "2.0")]
    then = page_then(tmp_path, db, "demo", t2 - 1, held)
    assert filenames(then) == ["demo-1.0-py3-none-any.whl", "demo-2.0-py3-none-any.whl", "demo-2.0.tar.gz"]
    assert then is not None and then.files[0] == before["demo-1.0-py3-none-any.whl"]  # the entry as it was
    assert then.versions == ("1.0", "2.0")
    assert "demo-1.0-py3-none-any.whl" not in filenames(page_then(tmp_path, db, "demo", t2, held))
    assert wheel.filename in filenames(page_then(tmp_path, db, "demo", t2, held))


@pytest.mark.gen_test(timeout=60)
async def test_a_removed_project_existed_until_its_removal(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("Gone_Soon", ["1.0"])
    fake_index.add_project("stays")
    t0 = await start(sync, clock, db)
    path = stored_page(tmp_path, "gone-soon").files[0].url.removeprefix(f"{PREFIX}/packages/")  # type: ignore[union-attr]
    fake_index.remove_project("gone-soon")
    t2 = clock.advance()
    report = await sync()
    assert report.removed == 1 and stored_page(tmp_path, "gone-soon") is None
    then = page_then(tmp_path, db, "gone-soon", t2 - 1, lambda p: p == path)
    assert then is not None and then.display_name == "Gone_Soon" and len(then.files) == 1
    assert filenames(page_then(tmp_path, db, "gone-soon", t0)) == []  # held nowhere: not offered
    assert page_then(tmp_path, db, "gone-soon", t2) is None
    assert [(e[0], e[1]) for e in projects_as_of(db.engine, t2 - 1)] == [("Gone_Soon", "gone-soon"), ("stays", "stays")]
    assert [e[1] for e in projects_as_of(db.engine, t2)] == ["stays"]


@pytest.mark.gen_test(timeout=60)
async def test_a_quarantine_hides_the_files_from_then_on_and_its_end_brings_them_back(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"])
    t0 = await start(sync, clock, db)
    listed = filenames(stored_page(tmp_path, "demo"))
    fake_index.set_status("demo", "quarantined")
    t2 = clock.advance()
    await sync()
    assert filenames(stored_page(tmp_path, "demo")) == []

    def held(_path: str) -> bool:
        return True

    then = page_then(tmp_path, db, "demo", t2 - 1, held)
    assert then is not None and then.status is None and filenames(then) == listed
    assert filenames(page_then(tmp_path, db, "demo", t0)) == []  # not held: the upstream offers them no more
    during = page_then(tmp_path, db, "demo", t2, held)
    assert during is not None and during.status == "quarantined" and during.files == ()

    fake_index.set_status("demo", None)
    t4 = clock.advance()
    await sync()
    after = page_then(tmp_path, db, "demo", t4)
    assert after is not None and after.status is None and filenames(after) == listed
    during = page_then(tmp_path, db, "demo", t4 - 1, held)
    assert during is not None and during.status == "quarantined" and during.files == ()
    assert filenames(page_then(tmp_path, db, "demo", t2 - 1)) == listed


@pytest.mark.gen_test(timeout=60)
async def test_a_status_change_is_recorded_with_its_reason(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"])
    await start(sync, clock, db)
    fake_index.set_status("demo", "archived")
    t2 = clock.advance()
    await sync()
    as_of: ProjectAsOf | None = project_as_of(db.engine, NormalizedName("demo"), t2 - 1)
    assert as_of is not None and as_of.status == (None, None)
    then = page_then(tmp_path, db, "demo", t2)
    assert then is not None and then.status == "archived" and len(then.files) == 2


# -- nothing is lost -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_a_run_cut_off_before_its_serials_were_stored_loses_nothing(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    """Pages written, serial not stored (a crash): the next run finds the stored page already new,
    but the change was committed before the page was written."""
    fake_index.add_project("demo", ["1.0"])
    await start(sync, clock, db)
    fake_index.yank("demo", "1.0", "bad")
    t2 = clock.advance()
    await sync()
    await db.run(lambda conn: dbq.store_serials(conn, [(NormalizedName("demo"), "demo", 1)]))  # as before the crash
    clock.advance()
    report = await sync()
    assert report.fetched == 1
    assert set(yanks(page_then(tmp_path, db, "demo", t2)).values()) == {"bad"}
    assert set(yanks(page_then(tmp_path, db, "demo", t2 - 1)).values()) == {False}


@pytest.mark.gen_test(timeout=60)
async def test_pages_that_could_not_be_written_are_recorded_again_without_harm(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0", "2.0"])
    await start(sync, clock, db)
    fake_index.yank("demo", "1.0", "bad")
    fake_index.remove_release("demo", "2.0")
    t2 = clock.advance()

    def broken_disk(path: Path, _data: bytes) -> None:
        raise OSError(5, "Input/output error", str(path))

    failed = await sync(write=broken_disk)
    assert failed.errors == 1
    t3 = clock.advance()
    assert (await sync()).fetched == 1
    then = page_then(tmp_path, db, "demo", t2, lambda _path: True)
    assert yanks(then) == {"demo-1.0-py3-none-any.whl": "bad", "demo-1.0.tar.gz": "bad"}  # removed at t2, not t3
    assert len(filenames(page_then(tmp_path, db, "demo", t2 - 1, lambda _path: True))) == 4
    assert len(filenames(page_then(tmp_path, db, "demo", t3, lambda _path: True))) == 2


@pytest.mark.gen_test(timeout=60)
async def test_a_change_that_cannot_be_recorded_leaves_the_old_pages_for_the_next_run(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path
) -> None:
    fake_index.add_project("demo", ["1.0"])
    await start(sync, clock, db)
    fake_index.yank("demo", "1.0")
    clock.advance()
    _drop_events_table(db)  # a database that refuses the history's writes
    report = await sync()
    assert report.errors == 1 and "demo" in report.failures
    assert set(yanks(stored_page(tmp_path, "demo")).values()) == {False}  # the old page stays
    db.create_schema()
    t3 = clock.advance()
    assert (await sync()).fetched == 1
    assert set(yanks(page_then(tmp_path, db, "demo", t3)).values()) == {True}
    assert set(yanks(page_then(tmp_path, db, "demo", t3 - 1)).values()) == {False}


def _drop_events_table(db: Database) -> None:
    with db.begin() as conn:
        history_events.drop(conn)


def test_page_as_of_is_plain_data_for_renderers() -> None:
    """A renderer can build a page from a ProjectAsOf without a database; a project gone now
    takes the name the history knows."""
    as_of = ProjectAsOf(NormalizedName("x"), 0.0, "X", (None, None), {}, {})
    page = page_as_of(None, as_of, prefix=PREFIX, held_locally=lambda _path: False)
    assert (page.name, page.display_name, page.files, page.status) == ("x", "X", (), None)
    with pytest.raises(AttributeError):
        as_of.moment = 1.0  # type: ignore[misc]


@pytest.mark.gen_test(timeout=60)
async def test_a_stored_page_that_cannot_be_read_is_replaced_and_the_new_page_is_the_starting_point(
    sync: Sync, fake_index: FakeIndex, db: Database, clock: WallClock, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_index.add_project("demo", ["1.0"])
    await start(sync, clock, db)
    (tmp_path / "repo" / "simple" / "demo" / "index.v1_json").write_bytes(b"\x00garbage")
    fake_index.yank("demo", "1.0", "bad")
    t2 = clock.advance()
    report = await sync()
    assert report.ok and report.errors == 0 and report.fetched == 1
    assert "history of demo: the stored page is unreadable, nothing recorded" in caplog.text
    assert set(yanks(page_then(tmp_path, db, "demo", t2 - 1)).values()) == {"bad"}  # nothing known before
    assert count_rows(db) == 0
