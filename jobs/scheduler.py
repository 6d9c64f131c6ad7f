"""The embedded scheduler: the mirror's jobs on their schedules, one at a time, stoppable safely.

:class:`JobScheduler` runs APScheduler 3's ``AsyncIOScheduler`` on the running loop (the
server's, or ``pypimirror sync``'s) with every job of the table
(:data:`~pypimirror.jobs.registry.JOBS`) on its schedule of ``schedule.*``. What it promises:

* A job never overlaps itself (``max_instances=1``, missed runs coalesced into one), nor the
  other jobs of this process (one lock), nor a run of another process or host: each run takes
  the sync lease through :func:`~pypimirror.jobs.runner.run_job`, and a run that finds the
  lease held is logged and skipped.
* A job's follow-up runs right after a run that calls for it (a cache run after an index sync
  that changed anything). With ``run_on_start`` the first pass is what ``sync --once`` does:
  every job once, in table order, until one does not end well.
* Stopping sets every running job's stop event and waits up to the grace period for it to
  reach a safe point; only a job still running after that is cancelled. Either way its run is
  on record and its lease released, so the next start resumes cleanly.
"""

from __future__ import annotations

__all__ = [
    "JobScheduler",
    "Jobs",
    "SyncJobs",
    "scheduling",
]

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from apscheduler.schedulers.asyncio import AsyncIOScheduler

from pypimirror.config import Config, Schedule, ScheduleConfig
from pypimirror.cron import make_trigger
from pypimirror.db import Database
from pypimirror.errors import JobLockedError, PyPIMirrorError
from pypimirror.jobs.registry import JOBS, JobContext, JobTable
from pypimirror.jobs.runner import LEASE_TTL_SECONDS, JobReport, run_job
from pypimirror.upstream import UpstreamClient

logger = logging.getLogger(__name__)

# A cron run may start this late (a busy or suspended machine) and still run; later than that
# it waits for its next time, which the operator chose. Interval runs are never dropped: a
# late sync is still worth running, and coalescing makes any number of missed runs one.
_CRON_MISFIRE_GRACE_S = 15 * 60

# crontab numbers its weekdays from Sunday (0 and 7); APScheduler 3 from Monday.


class Jobs(Protocol):
    """What the scheduler runs: a job of the table by name; :class:`SyncJobs` in production."""

    async def run(self, name: str, stop: asyncio.Event) -> JobReport: ...


@dataclass(frozen=True, slots=True)
class SyncJobs:
    """The table's jobs bound to their dependencies; each run holds the sync lease and is on record.

    ``sync --once`` and the scheduler call the same method. It raises
    :class:`~pypimirror.errors.JobLockedError` when another runner holds the lease, and
    :class:`~pypimirror.errors.UnknownJobError` (before taking it) for a name not in ``table``.
    """

    config: Config
    db: Database
    client: UpstreamClient
    lease_ttl: float = LEASE_TTL_SECONDS
    table: JobTable = JOBS

    async def run(self, name: str, stop: asyncio.Event) -> JobReport:
        job = self.table.named(name)
        return await run_job(
            self.db,
            job=job.name,
            node_id=self.config.node_id,
            body=lambda: job.run(JobContext(self.config, self.db, self.client), stop),
            stop=stop,
            lease_ttl=self.lease_ttl,
        )


# --------------------------------------------------------------------------- triggers


# --------------------------------------------------------------------------- the scheduler


class JobScheduler:
    """The jobs of ``table`` on their schedules, on the running loop.

    Call :meth:`start` inside the running loop (APScheduler binds the loop there), then
    :meth:`request_stop` and :meth:`close` to end it. ``clock`` is monotonic time.
    """

    def __init__(
        self,
        jobs: Jobs,
        schedule: ScheduleConfig,
        *,
        table: JobTable = JOBS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._jobs = jobs
        self._schedule = schedule
        self._table = table
        self._clock = clock
        self._scheduler = AsyncIOScheduler(
            job_defaults={"max_instances": 1, "coalesce": True},
        )
        self._turn = asyncio.Lock()  # one job of this process at a time
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stops: set[asyncio.Event] = set()
        self._last_started: dict[str, float] = {}
        self._stopping = False
        self._cancelling = False
        self._stop_requested_at: float | None = None

    @property
    def running_jobs(self) -> int:
        """Job runs in progress or waiting for their turn."""
        return len(self._tasks)

    def start(self) -> None:
        """Add the jobs and start firing them; with ``run_on_start`` the first pass begins now."""
        for spec in self._table:
            schedule = spec.schedule(self._schedule)
            grace = None if schedule.interval is not None else _CRON_MISFIRE_GRACE_S
            self._scheduler.add_job(
                self._run_scheduled,
                make_trigger(interval=schedule.interval, cron=schedule.cron, jitter=self._schedule.jitter),
                args=(spec.name,),
                id=spec.name,
                name=spec.name,
                misfire_grace_time=grace,
            )
        self._scheduler.start()
        for job in self._scheduler.get_jobs():
            schedule = self._table.named(job.id).schedule(self._schedule)
            logger.info("scheduler: %s %s, next at %s", job.id, _describe(schedule), _local_time(job.next_run_time))
        if self._schedule.run_on_start:
            task = asyncio.ensure_future(self._run_start_pass())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def request_stop(self) -> None:
        """Fire nothing more, and ask every running job to stop at its next safe point."""
        if self._stop_requested_at is None:
            self._stop_requested_at = self._clock()
        self._stopping = True
        if self._scheduler.running:
            self._scheduler.pause()
        for stop in self._stops:
            stop.set()
        if self._tasks:
            logger.info("scheduler: stopping; waiting for %d job run(s) to reach a safe point", len(self._tasks))

    async def close(self, grace: float, forced: asyncio.Event | None = None) -> None:
        """Stop, wait up to ``grace`` seconds (from the stop request) for running jobs, then shut down.

        A job still running after that, or once ``forced`` is set, is cancelled; its run is
        recorded as interrupted and its lease released all the same.
        """
        self.request_stop()
        assert self._stop_requested_at is not None
        remaining = max(0.0, self._stop_requested_at + grace - self._clock())
        if self._tasks and not await _wait_tasks(set(self._tasks), remaining, forced):
            logger.warning("scheduler: %d job run(s) did not stop in time; cancelling them", len(self._tasks))
            self._cancelling = True
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    # -- the runs ---------------------------------------------------------------------

    async def _run_start_pass(self) -> None:
        """What ``sync --once`` does: every job once, in table order, until one does not end well."""
        with self._tracked("the first pass"):
            async with self._turn:
                for spec in self._table:
                    if spec.ends_pass(await self._run(spec.name)):
                        return

    async def _run_scheduled(self, job: str) -> None:
        """APScheduler's entry point: wait for this process's other jobs, then run ``job`` and its follow-ups.

        A run that waited while the same job ran (a cache run after an index sync, say) has
        nothing left to do and is skipped.
        """
        due = self._clock()
        with self._tracked(job):
            async with self._turn:
                if self._last_started.get(job, -math.inf) >= due:
                    logger.info("%s: skipped: it ran while this run waited for its turn", job)
                    return
                spec = self._table.named(job)
                report = await self._run(job)
                while report is not None and spec.follow_up is not None and spec.needs_follow_up(report):
                    logger.info("%s: its run calls for %s, which follows", spec.name, spec.follow_up)
                    spec = self._table.named(spec.follow_up)
                    report = await self._run(spec.name)

    async def _run(self, job: str) -> JobReport | None:
        """One run of ``job`` with its own stop event; failures are logged here, at the job boundary."""
        if self._stopping:
            return None
        stop = asyncio.Event()
        self._stops.add(stop)
        before = self._last_started.get(job)
        self._last_started[job] = self._clock()
        try:
            return await self._jobs.run(job, stop)
        except JobLockedError as exc:
            logger.warning("%s: skipped: %s", job, exc)
            _restore(self._last_started, job, before)
        except PyPIMirrorError as exc:
            logger.error("%s: failed: %s", job, exc)
        except Exception:
            logger.exception("%s: failed", job)
        finally:
            self._stops.discard(stop)
        return None

    @contextlib.contextmanager
    def _tracked(self, what: str) -> Iterator[None]:
        """Count the current task among the running jobs, so :meth:`close` waits for it.

        The cancellation :meth:`close` resorts to ends here, with one log line, rather than
        as a traceback from APScheduler.
        """
        task = asyncio.current_task()
        assert task is not None, "jobs run as tasks"
        self._tasks.add(task)
        try:
            yield
        except asyncio.CancelledError:
            if not self._cancelling:
                raise
            logger.warning("%s: cancelled: it did not stop within the grace period", what)
        finally:
            self._tasks.discard(task)


@contextlib.asynccontextmanager
async def scheduling(
    jobs: Jobs,
    schedule: ScheduleConfig,
    *,
    stop: asyncio.Event,
    grace: timedelta,
    forced: asyncio.Event | None = None,
) -> AsyncIterator[JobScheduler]:
    """A started :class:`JobScheduler` that stops firing as soon as ``stop`` is set.

    Running jobs are told to stop at that moment, not when the block ends, so they wind down
    while the server drains its connections; leaving the block waits for them for what is
    left of ``grace``.
    """
    scheduler = JobScheduler(jobs, schedule)
    scheduler.start()
    watcher = asyncio.ensure_future(_stop_when_set(stop, scheduler))
    try:
        yield scheduler
    finally:
        watcher.cancel()
        await scheduler.close(grace.total_seconds(), forced)


async def _stop_when_set(stop: asyncio.Event, scheduler: JobScheduler) -> None:
    await stop.wait()
    scheduler.request_stop()


async def _wait_tasks(tasks: set[asyncio.Task[Any]], timeout: float, forced: asyncio.Event | None) -> bool:
    """Wait until ``tasks`` are done; False if ``timeout`` passed or ``forced`` was set first."""
    waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(asyncio.wait(tasks))}
    if forced is not None:
        waiters.add(asyncio.ensure_future(forced.wait()))
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return all(task.done() for task in tasks)


def _restore(values: dict[str, float], key: str, before: float | None) -> None:
    if before is None:
        values.pop(key, None)
    else:
        values[key] = before


def _describe(schedule: Schedule) -> str:
    return f"every {schedule.to_text()}" if schedule.interval is not None else f"at '{schedule.cron}'"


def _local_time(moment: datetime | None) -> str:
    return "never" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
