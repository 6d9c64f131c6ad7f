"""The job runner: one sync at a time per mirror, every run on record."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.errors import JobLockedError
from pypimirror.jobs.runner import run_job


@dataclass
class Report:
    ok: bool = True
    interrupted: bool = False
    failure_reason: str | None = None

    def counts(self) -> dict[str, int]:
        return {"done": 1}


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Database]:
    db = Database.open(f"sqlite:///{tmp_path / 'runner.db'}")
    yield db
    db.dispose()


def take_lease(db: Database, holder: str, ttl: float = 600) -> None:
    with db.begin() as conn:
        acquired, _ = dbq.acquire_lease(conn, dbq.SYNC_LEASE, holder, 1e9, ttl)
    assert acquired


async def finished_report() -> Report:
    return Report()


@pytest.mark.gen_test
async def test_a_run_is_recorded_and_its_lease_released(database: Database) -> None:
    report = await run_job(database, job="index_sync", node_id="n1", body=finished_report, stop=asyncio.Event(),
                           clock=lambda: 1e9)
    assert report.ok
    with database.connect() as conn:
        run = dbq.last_job_run(conn, "index_sync")
        assert dbq.read_lease(conn, dbq.SYNC_LEASE) is None
    assert run is not None and run.outcome == "ok" and run.counts == {"done": 1}


@pytest.mark.gen_test
async def test_a_failing_job_is_recorded_with_its_error(database: Database) -> None:
    async def failing() -> Report:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        await run_job(database, job="cache", node_id="n1", body=failing, stop=asyncio.Event())
    with database.connect() as conn:
        run = dbq.last_job_run(conn, "cache")
        assert dbq.read_lease(conn, dbq.SYNC_LEASE) is None
    assert run is not None and run.outcome == "failed" and run.error == "RuntimeError: boom"


@pytest.mark.gen_test
async def test_a_report_that_is_not_ok_is_recorded_as_failed_with_its_reason(database: Database) -> None:
    async def failed() -> Report:
        return Report(ok=False, failure_reason="7 of 7 projects failed")

    await run_job(database, job="index_sync", node_id="n1", body=failed, stop=asyncio.Event())
    with database.connect() as conn:
        run = dbq.last_job_run(conn, "index_sync")
    assert run is not None and run.outcome == "failed" and run.error == "7 of 7 projects failed"


@pytest.mark.gen_test
async def test_an_interrupted_report_is_recorded_as_interrupted(database: Database) -> None:
    async def interrupted() -> Report:
        return Report(ok=False, interrupted=True)

    await run_job(database, job="index_sync", node_id="n1", body=interrupted, stop=asyncio.Event())
    with database.connect() as conn:
        run = dbq.last_job_run(conn, "index_sync")
    assert run is not None and run.outcome == "interrupted"


@pytest.mark.gen_test
async def test_a_live_holder_blocks_the_run_and_nothing_is_recorded(database: Database) -> None:
    take_lease(database, f"n1/{os.getppid()}/index_sync")  # our parent is alive
    with pytest.raises(JobLockedError, match="another sync holds the lease"):
        await run_job(database, job="index_sync", node_id="n1", body=finished_report, stop=asyncio.Event(),
                      clock=lambda: 1e9)
    with database.connect() as conn:
        assert dbq.last_job_run(conn, "index_sync") is None


@pytest.mark.gen_test
async def test_a_holder_on_another_node_is_never_taken_over(database: Database) -> None:
    take_lease(database, "other-node/1/index_sync")
    with pytest.raises(JobLockedError):
        await run_job(database, job="index_sync", node_id="n1", body=finished_report, stop=asyncio.Event(),
                      clock=lambda: 1e9)


@pytest.mark.gen_test
async def test_the_lease_of_a_dead_process_on_this_node_is_taken_over(database: Database) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    take_lease(database, f"n1/{dead.pid}/index_sync")
    report = await run_job(database, job="index_sync", node_id="n1", body=finished_report, stop=asyncio.Event(),
                           clock=lambda: 1e9)
    assert report.ok


@pytest.mark.gen_test
async def test_an_expired_lease_is_taken(database: Database) -> None:
    take_lease(database, "other-node/1/index_sync", ttl=10)
    report = await run_job(database, job="index_sync", node_id="n1", body=finished_report, stop=asyncio.Event(),
                           clock=lambda: 1e9 + 11)
    assert report.ok
