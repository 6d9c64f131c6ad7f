"""The jobs' table: one entry per job, names that must exist, follow-ups that end, passes that stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from pypimirror import queries as dbq
from pypimirror.config import Config, Schedule, ScheduleConfig
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.errors import UnknownJobError
from pypimirror.jobs.cache import CacheReport
from pypimirror.jobs.index_sync import IndexSyncReport
from pypimirror.jobs.registry import CACHE, INDEX_SYNC, JOBS, JobSpec, JobTable
from pypimirror.jobs.scheduler import SyncJobs
from pypimirror.upstream import UpstreamClient, UpstreamSettings


async def never_run(_context: object, _stop: asyncio.Event) -> CacheReport:
    raise AssertionError("not run in these tests")


def make_config(tmp_path: Path, **sections: object) -> Config:
    upstream = {"pypi_url": "http://127.0.0.1:9/pypi", "packages_url": "http://127.0.0.1:9/packages"}
    data = {"repo_path": str(tmp_path / "repo"), "upstream": upstream, "cache": {"size_limit": "1g"}, **sections}
    return parse_config(data, base_dir=tmp_path)


def spec(name: str, follow_up: str | None = None) -> JobSpec[CacheReport]:
    return JobSpec(name=name, title=name.title(), schedule=lambda config: config.cache, run=never_run,
                   follow_up=follow_up)


def test_the_table_holds_the_index_sync_the_advisory_sync_then_the_cache_with_their_titles_and_schedule_keys() -> None:
    assert JOBS.names == ("index_sync", "advisories", "cache")
    assert dict(JOBS.titles()) == {"index_sync": "Index sync", "advisories": "Advisory sync", "cache": "Cache management"}
    configured = ScheduleConfig(
        index_sync=Schedule(cron="0 * * * *"), advisories=Schedule(cron="15 * * * *"), cache=Schedule(cron="30 * * * *")
    )
    assert [job.schedule(configured) for job in JOBS] == [configured.index_sync, configured.advisories, configured.cache]


def test_each_job_reads_its_schedule_from_its_own_key_of_the_configuration(tmp_path: Path) -> None:
    config = make_config(tmp_path, schedule={"index_sync": "*/15 * * * *", "advisories": "6h", "cache": "5m", "jitter": "0s"})
    assert {job.name: job.schedule(config.schedule).to_text() for job in JOBS} == {
        "index_sync": "*/15 * * * *", "advisories": "6h", "cache": "5m"}


def test_an_unknown_job_name_is_an_error_that_names_the_jobs() -> None:
    with pytest.raises(UnknownJobError, match=r"unknown job 'cahce'; the jobs are: index_sync, advisories, cache") as caught:
        JOBS.named("cahce")
    assert caught.value.known == ("index_sync", "advisories", "cache")


@pytest.mark.parametrize(
    ("jobs", "message"),
    [
        ((spec("a"), spec("a")), "job names used twice: a"),
        ((spec("a", follow_up="b"),), "job 'a' is followed by 'b', which is not a job"),
        ((spec("a", follow_up="b"), spec("b", follow_up="c")), "job 'b' is followed by 'c', which is not a job"),
        ((spec("a", follow_up="b"), spec("b", follow_up="a")), r"jobs follow each other in a cycle: a -> b -> a"),
        ((spec("a", follow_up="a"),), r"jobs follow each other in a cycle: a -> a"),
    ],
)
def test_a_table_with_a_duplicate_name_or_a_follow_up_that_is_no_job_or_loops_is_refused(
    jobs: tuple[JobSpec[CacheReport], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        JobTable(jobs)


def test_a_changing_index_sync_calls_for_the_cache_and_an_unchanged_or_interrupted_one_does_not() -> None:
    assert INDEX_SYNC.follow_up == "cache" and CACHE.follow_up is None
    assert INDEX_SYNC.needs_follow_up(IndexSyncReport(fetched=1))
    assert INDEX_SYNC.needs_follow_up(IndexSyncReport(removed=1))
    assert not INDEX_SYNC.needs_follow_up(IndexSyncReport(listed=5))
    assert not INDEX_SYNC.needs_follow_up(IndexSyncReport(fetched=1, interrupted=True))


def test_a_pass_stops_after_a_failed_interrupted_or_missing_index_sync_but_not_after_a_refused_removal() -> None:
    assert INDEX_SYNC.ends_pass(None)
    assert INDEX_SYNC.ends_pass(IndexSyncReport(interrupted=True))
    assert INDEX_SYNC.ends_pass(IndexSyncReport(failed="3 of 3 projects failed"))
    assert not INDEX_SYNC.ends_pass(IndexSyncReport(removal_refused="would remove 90% of the projects"))
    assert not INDEX_SYNC.ends_pass(IndexSyncReport(fetched=2))
    assert not CACHE.ends_pass(CacheReport(limits=(1,)))


@pytest.mark.gen_test
async def test_running_an_unknown_job_fails_before_taking_the_lease_and_records_nothing(
    tmp_path: Path, database: Database
) -> None:
    config = make_config(tmp_path)
    jobs = SyncJobs(config, database, UpstreamClient(UpstreamSettings("t", None, 5, 5)))
    with pytest.raises(UnknownJobError, match="unknown job 'nope'"):
        await jobs.run("nope", asyncio.Event())
    with database.connect() as conn:
        assert dbq.read_lease(conn, dbq.SYNC_LEASE) is None
        assert dbq.latest_job_runs(conn) == []
