"""The embedded scheduler: jobs on schedule, never overlapping, stopped at a safe point."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from fakeindex import FakeIndex
from tornado.httpclient import AsyncHTTPClient

from pypimirror import queries as dbq
from pypimirror.app import upstream_client
from pypimirror.config import Schedule, ScheduleConfig
from pypimirror.configreader import parse_config
from pypimirror.db import Database
from pypimirror.errors import JobLockedError, UnknownJobError, UpstreamUnavailable
from pypimirror.jobs.cache import CacheReport
from pypimirror.jobs.index_sync import IndexSyncReport
from pypimirror.jobs.registry import CACHE, INDEX_SYNC, JOBS, JobSpec, JobTable
from pypimirror.jobs.runner import JobReport
from pypimirror.cron import crontab_day_of_week, make_trigger
from pypimirror.jobs.scheduler import JobScheduler, SyncJobs

FAST = timedelta(seconds=0.3)
HOURLY = timedelta(hours=1)


# -- triggers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        ("0", "sun"),
        ("7", "sun"),
        ("1", "mon"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0,6", "sat,sun"),
        ("5-7", "fri,sat,sun"),
        ("*/2", "tue,thu,sat,sun"),
        ("1-5/2", "mon,wed,fri"),
        ("mon-fri", "mon,tue,wed,thu,fri"),
        ("SUN,wed", "wed,sun"),
        ("0-6", "*"),
    ],
)
def test_crontab_day_of_week_keeps_crontab_numbering(field: str, expected: str) -> None:
    assert crontab_day_of_week(field) == expected


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("8", "8 is not a weekday (0-7)"),
        ("funday", "'funday' is not a weekday"),
        ("5-1", "the range '5-1' runs backwards"),
        ("*/0", "a step must be at least 1"),
        ("1--2", "is not a day-of-week field"),
    ],
)
def test_crontab_day_of_week_refuses_what_crontab_refuses(field: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        crontab_day_of_week(field)


def test_interval_trigger_has_the_interval_and_the_jitter() -> None:
    trigger = make_trigger(interval=HOURLY, jitter=timedelta(minutes=2))
    assert isinstance(trigger, IntervalTrigger)
    assert trigger.interval == HOURLY and trigger.jitter == 120


def local(*args: int) -> datetime:
    return datetime(*args).astimezone()  # type: ignore[arg-type]


def next_fire(schedule: str, after: datetime) -> datetime:
    trigger = make_trigger(cron=schedule, jitter=timedelta(0))
    fire = trigger.get_next_fire_time(None, after)
    assert isinstance(fire, datetime)
    return fire


def test_cron_trigger_counts_weekdays_from_sunday_as_crontab_does() -> None:
    fire = next_fire("30 3 * * 0", local(2024, 1, 1, 12, 0))  # a Monday
    assert (fire.year, fire.month, fire.day, fire.hour, fire.minute) == (2024, 1, 7, 3, 30)
    assert fire.strftime("%A") == "Sunday"


def test_cron_trigger_with_day_and_weekday_fires_on_either_as_crontab_does() -> None:
    trigger = make_trigger(cron="0 4 15 * 1", jitter=timedelta(0))
    assert isinstance(trigger, OrTrigger)
    # From Tuesday 2 January 2024: Monday the 8th comes before the 15th.
    assert next_fire("0 4 15 * 1", local(2024, 1, 2)).day == 8
    assert next_fire("0 4 15 * 1", local(2024, 1, 9)).day == 15


def test_cron_trigger_without_a_weekday_is_a_plain_cron_trigger() -> None:
    assert isinstance(make_trigger(cron="*/15 * * * *", jitter=timedelta(0)), CronTrigger)


# -- scheduling, with jobs the test steers -----------------------------------------------------------


@dataclass
class Run:
    job: str
    started: float
    ended: float | None = None
    saw_stop: bool = False


@dataclass
class FakeJobs:
    """Records each run; ``duration`` is how long a run works unless its stop event is set first."""

    duration: float = 0.05
    changed: bool = True
    ignore_stop: bool = False
    locked_by: str | None = None
    failure: Exception | None = None
    sync_failed: str | None = None
    runs: list[Run] = field(default_factory=list)

    async def run(self, name: str, stop: asyncio.Event) -> JobReport:
        if name == "index_sync":
            report = IndexSyncReport(listed=1, fetched=1 if self.changed else 0, failed=self.sync_failed)
            report.interrupted = await self._work(name, stop)
            return report
        if name == "cache":
            return CacheReport(limits=(1,), interrupted=await self._work(name, stop))
        raise UnknownJobError(name, ("index_sync", "cache"))

    async def _work(self, job: str, stop: asyncio.Event) -> bool:
        if self.locked_by is not None:
            raise JobLockedError(self.locked_by, 0.0)
        if self.failure is not None:
            raise self.failure
        run = Run(job, time.monotonic())
        self.runs.append(run)
        try:
            if self.ignore_stop:
                await asyncio.sleep(self.duration)
                return False
            try:
                await asyncio.wait_for(stop.wait(), self.duration)
            except TimeoutError:
                return False
            run.saw_stop = True
            return True
        finally:
            run.ended = time.monotonic()

    def names(self) -> list[str]:
        return [run.job for run in self.runs]


#: The pair these tests steer (the table's other jobs have tests of their own).
INDEX_AND_CACHE = JobTable((INDEX_SYNC, CACHE))


def schedule(index_sync: timedelta = FAST, cache: timedelta = FAST, run_on_start: bool = True) -> ScheduleConfig:
    return ScheduleConfig(
        index_sync=Schedule(interval=index_sync),
        cache=Schedule(interval=cache),
        jitter=timedelta(0),
        run_on_start=run_on_start,
    )


def assert_never_overlapping(runs: list[Run]) -> None:
    ordered = sorted(runs, key=lambda run: run.started)
    for before, after in pairwise(ordered):
        assert before.ended is not None and before.ended <= after.started, (before, after)


async def wait_until(predicate: object, timeout: float = 4.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


@pytest.mark.gen_test(timeout=10)
async def test_first_pass_is_an_index_sync_then_a_cache_run_and_both_repeat_without_overlap() -> None:
    jobs = FakeJobs(changed=False)
    scheduler = JobScheduler(jobs, schedule(), table=INDEX_AND_CACHE)
    scheduler.start()
    try:
        await wait_until(lambda: jobs.names().count("index_sync") >= 3 and jobs.names().count("cache") >= 3)
    finally:
        await scheduler.close(grace=2)
    assert jobs.names()[:2] == ["index_sync", "cache"]
    assert_never_overlapping(jobs.runs)


@pytest.mark.gen_test(timeout=10)
async def test_cache_runs_right_after_an_index_sync_that_changed_something() -> None:
    jobs = FakeJobs(changed=True)
    scheduler = JobScheduler(jobs, schedule(cache=HOURLY, run_on_start=False), table=INDEX_AND_CACHE)
    scheduler.start()
    try:
        await wait_until(lambda: len(jobs.runs) >= 4)
    finally:
        await scheduler.close(grace=2)
    assert jobs.names()[:4] == ["index_sync", "cache", "index_sync", "cache"]


@pytest.mark.gen_test(timeout=10)
async def test_no_cache_run_follows_an_index_sync_that_changed_nothing() -> None:
    jobs = FakeJobs(changed=False)
    scheduler = JobScheduler(jobs, schedule(cache=HOURLY, run_on_start=False), table=INDEX_AND_CACHE)
    scheduler.start()
    try:
        await wait_until(lambda: len(jobs.runs) >= 3)
    finally:
        await scheduler.close(grace=2)
    assert set(jobs.names()) == {"index_sync"}


@pytest.mark.gen_test(timeout=10)
async def test_the_first_pass_stops_after_an_index_sync_that_failed() -> None:
    jobs = FakeJobs(changed=True, sync_failed="3 of 3 projects failed")
    scheduler = JobScheduler(jobs, schedule(index_sync=HOURLY, cache=HOURLY), table=INDEX_AND_CACHE)
    scheduler.start()
    try:
        await wait_until(lambda: scheduler.running_jobs == 0 and len(jobs.runs) == 1)
    finally:
        await scheduler.close(grace=2)
    assert jobs.names() == ["index_sync"]


@pytest.mark.gen_test(timeout=10)
async def test_a_job_added_to_the_table_runs_on_its_schedule_and_is_followed_as_its_entry_says() -> None:
    # A job beside the cache, on a schedule key of its own (here index_sync's), followed by the cache.
    async def run_extra(_context: object, _stop: asyncio.Event) -> CacheReport:
        raise AssertionError("TableJobs runs the jobs here")

    extra: JobSpec[CacheReport] = JobSpec(
        name="extra", title="Extra", schedule=lambda config: config.index_sync, run=run_extra,
        follow_up="cache", needs_follow_up=lambda report: report.ok,
    )
    runs: list[str] = []

    class TableJobs:
        async def run(self, name: str, stop: asyncio.Event) -> JobReport:
            runs.append(name)
            return CacheReport(limits=(1,)) if name == "extra" else await FakeJobs(changed=False).run(name, stop)

    table = JobTable((extra, JOBS.named("cache")))
    scheduler = JobScheduler(TableJobs(), schedule(index_sync=FAST, cache=HOURLY, run_on_start=False), table=table)
    scheduler.start()
    try:
        await wait_until(lambda: len(runs) >= 4)
    finally:
        await scheduler.close(grace=2)
    assert runs[:4] == ["extra", "cache", "extra", "cache"]


@pytest.mark.gen_test(timeout=10)
async def test_a_run_that_waited_behind_the_same_job_is_skipped(caplog: pytest.LogCaptureFixture) -> None:
    # Index sync runs 0.5 s and is followed by a cache run; the cache's own 0.3 s schedule
    # fires meanwhile and must not run the cache a second time right after.
    jobs = FakeJobs(changed=True, duration=0.5)
    scheduler = JobScheduler(jobs, schedule(index_sync=timedelta(seconds=0.2), run_on_start=False), table=INDEX_AND_CACHE)
    with caplog.at_level(logging.INFO, logger="pypimirror.jobs.scheduler"):
        scheduler.start()
        try:
            await wait_until(lambda: "cache: skipped: it ran while this run waited for its turn" in caplog.text)
        finally:
            await scheduler.close(grace=2)
    names = jobs.names()
    assert not any(a == b == "cache" for a, b in pairwise(names)), names
    assert_never_overlapping(jobs.runs)


@pytest.mark.gen_test(timeout=10)
async def test_a_run_that_finds_the_lease_held_is_logged_and_skipped(caplog: pytest.LogCaptureFixture) -> None:
    jobs = FakeJobs(locked_by="other-host/4242/index_sync")
    scheduler = JobScheduler(jobs, schedule(), table=INDEX_AND_CACHE)
    with caplog.at_level(logging.WARNING, logger="pypimirror.jobs.scheduler"):
        scheduler.start()
        try:
            await wait_until(lambda: "index_sync: skipped: another sync holds the lease: other-host/4242" in caplog.text)
            assert jobs.runs == []
            jobs.locked_by = None
            await wait_until(lambda: "index_sync" in jobs.names())
        finally:
            await scheduler.close(grace=2)


@pytest.mark.gen_test(timeout=10)
async def test_a_failing_job_is_logged_in_one_line_and_the_next_run_still_happens(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = FakeJobs(failure=UpstreamUnavailable("upstream down: connection refused"))
    scheduler = JobScheduler(jobs, schedule(cache=HOURLY), table=INDEX_AND_CACHE)
    with caplog.at_level(logging.ERROR, logger="pypimirror.jobs.scheduler"):
        scheduler.start()
        try:
            await wait_until(lambda: "index_sync: failed: upstream down: connection refused" in caplog.text)
            jobs.failure = None
            await wait_until(lambda: "index_sync" in jobs.names())
        finally:
            await scheduler.close(grace=2)
    assert all(record.exc_info is None for record in caplog.records)


@pytest.mark.gen_test(timeout=10)
async def test_stopping_sets_the_running_jobs_stop_event_and_waits_for_it() -> None:
    jobs = FakeJobs(duration=30)
    scheduler = JobScheduler(jobs, schedule(index_sync=HOURLY, cache=HOURLY), table=INDEX_AND_CACHE)
    scheduler.start()
    await wait_until(lambda: len(jobs.runs) == 1)
    started = time.monotonic()
    await scheduler.close(grace=5)
    assert time.monotonic() - started < 1
    assert jobs.runs[0].saw_stop and jobs.runs[0].ended is not None
    assert jobs.names() == ["index_sync"]  # interrupted: no cache run after it
    assert scheduler.running_jobs == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_job_that_ignores_its_stop_event_is_cancelled_after_the_grace_period(
    caplog: pytest.LogCaptureFixture,
) -> None:
    jobs = FakeJobs(duration=30, ignore_stop=True)
    scheduler = JobScheduler(jobs, schedule(index_sync=HOURLY, cache=HOURLY), table=INDEX_AND_CACHE)
    scheduler.start()
    await wait_until(lambda: len(jobs.runs) == 1)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pypimirror.jobs.scheduler"):
        await scheduler.close(grace=0.5)
    assert 0.4 < time.monotonic() - started < 2
    assert "did not stop in time; cancelling them" in caplog.text
    assert "cancelled: it did not stop within the grace period" in caplog.text
    assert scheduler.running_jobs == 0


@pytest.mark.gen_test(timeout=10)
async def test_a_second_signal_cuts_the_wait_short() -> None:
    jobs = FakeJobs(duration=30, ignore_stop=True)
    scheduler = JobScheduler(jobs, schedule(index_sync=HOURLY, cache=HOURLY), table=INDEX_AND_CACHE)
    scheduler.start()
    await wait_until(lambda: len(jobs.runs) == 1)
    forced = asyncio.Event()
    asyncio.get_running_loop().call_later(0.2, forced.set)
    started = time.monotonic()
    await scheduler.close(grace=30, forced=forced)
    assert time.monotonic() - started < 2
    assert scheduler.running_jobs == 0


# -- the real jobs under the real lease -----------------------------------------------------------


@pytest.mark.gen_test(timeout=20)
async def test_a_lease_left_by_a_dead_runner_elsewhere_expires_and_the_next_run_proceeds(
    tmp_path: Path,
    fake_index: FakeIndex,
    database: Database,
    curl_client: AsyncHTTPClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_index.add_many(5)
    config = parse_config(
        {
            "repo_path": str(tmp_path / "repo"),
            "node_id": "this-node",
            "upstream": {"pypi_url": fake_index.pypi_url, "packages_url": fake_index.packages_url},
            "cache": {"size_limit": "1g"},
        },
        base_dir=tmp_path,
    )
    with database.begin() as conn:  # a runner on another host died 1 s into its 2 s lease
        dbq.acquire_lease(conn, dbq.SYNC_LEASE, "other-host/4242/index_sync", time.time() - 1, 2.0)
    scheduler = JobScheduler(SyncJobs(config, database, upstream_client(config, attempts=config.sync.retry)), schedule(cache=HOURLY))
    with caplog.at_level(logging.WARNING, logger="pypimirror.jobs.scheduler"):
        scheduler.start()
        try:
            await wait_until(lambda: "another sync holds the lease: other-host/4242/index_sync" in caplog.text)

            def synced() -> bool:
                with database.connect() as conn:
                    run = dbq.last_job_run(conn, "index_sync", "ok")
                return run is not None and run.counts["fetched"] == 5

            await wait_until(synced, timeout=10)
        finally:
            await scheduler.close(grace=5)
    with database.connect() as conn:
        assert dbq.read_lease(conn, dbq.SYNC_LEASE) is None
        runs = dbq.latest_job_runs(conn)
    assert all(run.node_id == "this-node" and run.finished_at is not None for run in runs)
