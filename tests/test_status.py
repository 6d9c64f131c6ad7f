"""The mirror's status from a real SQLite database: job history, tier fill, the cache, health."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection

from pypimirror.db import Database
from pypimirror.queries import finish_job_run, start_job_run, upsert_local_files
from pypimirror.status import MirrorStatus, StatusReader, read_status

T = TypeVar("T")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database.open(f"sqlite:///{tmp_path / 'status.db'}")
    yield db
    db.dispose()


def record_run(db: Database, job: str, started: float, outcome: str | None, took: float = 10.0,
               error: str | None = None) -> int:
    with db.begin() as conn:
        run_id = start_job_run(conn, job, "node-a", started)
        if outcome is not None:
            finish_job_run(conn, run_id, started + took, outcome, {"projects": 3}, error)  # type: ignore[arg-type]
    return run_id


def read(db: Database, fn: Callable[[Connection], T]) -> T:
    with db.connect() as conn:
        return fn(conn)


def test_job_history_names_the_newest_run_the_newest_success_and_failures_since(database: Database):
    record_run(database, "index_sync", 100.0, "ok")
    record_run(database, "index_sync", 200.0, "failed", error="boom")
    record_run(database, "index_sync", 300.0, "interrupted")
    record_run(database, "index_sync", 400.0, None)  # running now
    record_run(database, "cache", 150.0, "ok", took=50.0)
    record_run(database, "a_later_job", 50.0, "failed")
    record_run(database, "a_gone_job", 60.0, "ok")
    titles = {"index_sync": "Index sync", "a_new_job": "Never ran yet", "cache": "Cache management"}
    status = read(database, lambda conn: read_status(conn, "node-a", [1000], job_titles=titles))
    assert [job.name for job in status.jobs] == ["index_sync", "cache", "a_gone_job", "a_later_job"]
    assert status.job_titles == titles
    sync = status.job("index_sync")
    assert sync is not None
    assert sync.last_run.started_at == 400.0 and sync.last_run.outcome is None
    assert sync.last_finished is not None and sync.last_finished.outcome == "interrupted"
    assert sync.last_success is not None and sync.last_success.started_at == 100.0
    assert sync.failures_since_success == 2
    later = status.job("a_later_job")
    assert later is not None and later.last_success is None and later.failures_since_success == 1


def test_tier_fill_counts_this_nodes_files_per_tier_and_shows_empty_tiers(database: Database):
    with database.begin() as conn:
        upsert_local_files(conn, "node-a", [("a/x.whl", 100, 0), ("a/y.whl", 250, 0), ("b/z.whl", 7, 2)])
        upsert_local_files(conn, "node-b", [("a/x.whl", 100, 1)])
    status = read(database, lambda conn: read_status(conn, "node-a", [1000, 2000, 3000]))
    assert [(t.index, t.files, t.bytes, t.limit) for t in status.tiers] == [
        (0, 2, 350, 1000), (1, 0, 0, 2000), (2, 1, 7, 3000)]
    assert status.jobs == ()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.gen_test
async def test_a_snapshot_is_kept_for_max_age_then_read_again(database: Database, tmp_path: Path):
    clock = Clock()
    reader = StatusReader(database, node_id="node-a", tier_limits=[1000], repo_path=tmp_path, max_age=5, clock=clock)
    first = await reader.snapshot()
    record_run(database, "index_sync", 100.0, "ok")
    clock.now = 4.9
    assert await reader.snapshot() is first
    clock.now = 5.0
    fresh = await reader.snapshot()
    assert [job.name for job in fresh.jobs] == ["index_sync"]


@pytest.mark.gen_test
async def test_concurrent_snapshots_share_one_read(database: Database, tmp_path: Path):
    reader = StatusReader(database, node_id="node-a", tier_limits=[1000], repo_path=tmp_path)
    results = await asyncio.gather(*(reader.snapshot() for _ in range(5)))
    assert all(result is results[0] for result in results)
    assert isinstance(results[0], MirrorStatus)


@pytest.mark.gen_test
async def test_a_healthy_mirror_has_no_problems_and_leaves_no_file(database: Database, tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    reader = StatusReader(database, node_id="node-a", tier_limits=[], repo_path=repo)
    assert await reader.check_health(2.0) == []
    assert list(repo.iterdir()) == []


@pytest.mark.gen_test
async def test_an_unreachable_database_and_a_missing_repo_are_both_reported(tmp_path: Path, caplog):
    broken = Database(f"sqlite:///{tmp_path / 'missing-dir' / 'x.db'}")
    try:
        reader = StatusReader(broken, node_id="n", tier_limits=[], repo_path=tmp_path / "no-repo")
        problems = await reader.check_health(2.0)
    finally:
        broken.dispose()
    assert problems == ["database: cannot be reached", "repo_path: not writable (No such file or directory)"]
    assert "health check of database: database error on sqlite:///" in caplog.text
    assert f"{tmp_path / 'no-repo'} is not writable" in caplog.text


class HungDatabase(Database):
    """A database whose reads wait until released, like a server that stopped answering."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.release = asyncio.Event()
        self.reads = 0

    async def run_read(self, fn: Callable[[Connection], Any]) -> Any:
        self.reads += 1
        await self.release.wait()
        return await super().run_read(fn)


@pytest.mark.gen_test
async def test_a_hung_database_times_out_and_checks_do_not_pile_up(tmp_path: Path):
    hung = HungDatabase(f"sqlite:///{tmp_path / 'hung.db'}")
    hung.create_schema()  # the health check reads the schema version
    try:
        reader = StatusReader(hung, node_id="n", tier_limits=[], repo_path=tmp_path)
        assert await reader.check_health(0.05) == ["database: no answer within 0.05s"]
        assert await reader.check_health(0.05) == ["database: the previous check has not finished yet"]
        assert hung.reads == 1
        hung.release.set()
        await asyncio.sleep(0.2)
        assert await reader.check_health(2.0) == []
    finally:
        hung.dispose()


@pytest.mark.gen_test
async def test_the_tier_fill_is_kept_longer_than_the_job_history(database: Database, tmp_path: Path):
    clock = Clock()
    titles = {"cache": "Cache management", "index_sync": "Index sync"}
    reader = StatusReader(database, node_id="node-a", tier_limits=[1000], repo_path=tmp_path, job_titles=titles,
                          max_age=5, fill_max_age=30, clock=clock)
    assert (await reader.snapshot()).tiers[0].files == 0
    with database.begin() as conn:
        upsert_local_files(conn, "node-a", [("a/x.whl", 100, 0)])
    record_run(database, "index_sync", 100.0, "ok")
    record_run(database, "cache", 90.0, "ok")
    clock.now = 10.0
    status = await reader.snapshot()
    assert [job.name for job in status.jobs] == ["cache", "index_sync"] and status.tiers[0].files == 0
    assert status.job_titles == titles
    clock.now = 30.0
    assert (await reader.snapshot()).tiers[0].files == 1
