"""The mirror's jobs as one table: each job's name, title, schedule, function and what follows it.

The scheduler, ``pypimirror sync --once``, ``pypimirror status`` and the info page iterate
over :data:`JOBS` instead of naming jobs, so adding a job is one new module with its function,
one :class:`JobSpec` in :data:`JOBS`, and its schedule key: a ``Schedule`` field of
:class:`~pypimirror.config.ScheduleConfig` (read from ``schedule.<name>`` like the others) and
its line in ``conf/config.example.yaml``. A name the table does not hold is an
:class:`~pypimirror.errors.UnknownJobError`, never another job.

A *pass* runs every job once, in table order: the scheduler's first pass (``run_on_start``)
and ``sync --once``. It stops at a job that did not end on its own (stopped, failed with an
exception, or found the lease held) or reported a :attr:`JobSpec.blocking_failure`: the jobs
after it would work on what that job left unsound.
"""

from __future__ import annotations

__all__ = ["ADVISORIES", "CACHE", "INDEX_SYNC", "JOBS", "JobContext", "JobSpec", "JobTable"]

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pypimirror.config import Config, Schedule, ScheduleConfig
from pypimirror.db import Database
from pypimirror.errors import UnknownJobError
from pypimirror.jobs.advisory_sync import AdvisorySyncReport, run_advisory_sync
from pypimirror.jobs.cache import CacheReport, run_cache
from pypimirror.jobs.index_sync import IndexSyncReport, run_index_sync
from pypimirror.jobs.runner import JobReport
from pypimirror.upstream import UpstreamClient

ReportT = TypeVar("ReportT", bound=JobReport)


@dataclass(frozen=True, slots=True)
class JobContext:
    """What a job's function is given besides its stop event."""

    config: Config
    db: Database
    client: UpstreamClient


def _never(_report: object) -> bool:
    return False


def _no_failure(_report: object) -> str | None:
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec(Generic[ReportT]):
    """One job: how it is called and shown, when it runs, what it runs, and what comes after it."""

    #: The job's name in the run history, in ``status``, and the scheduler's job id.
    name: str
    #: How the info page names it.
    title: str
    #: Its schedule in the configuration (a key of ``schedule``).
    schedule: Callable[[ScheduleConfig], Schedule]
    #: The job itself; the caller holds the sync lease and records the run.
    run: Callable[[JobContext, asyncio.Event], Awaitable[ReportT]]
    #: The job the scheduler runs right after a run of this one for which ``needs_follow_up`` holds.
    follow_up: str | None = None
    needs_follow_up: Callable[[ReportT], bool] = _never
    #: Why a run ended in a way that stops a pass here (None: the pass goes on).
    blocking_failure: Callable[[ReportT], str | None] = _no_failure

    def ends_pass(self, report: ReportT | None) -> bool:
        """Whether a pass stops after this run; ``report`` is None when the job did not end on its own."""
        return report is None or report.interrupted or self.blocking_failure(report) is not None


@dataclass(frozen=True, slots=True)
class JobTable:
    """The jobs in pass order; names are unique and every follow-up is a job of the table, without a cycle."""

    jobs: tuple[JobSpec[Any], ...]

    def __post_init__(self) -> None:
        names = [job.name for job in self.jobs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"job names used twice: {', '.join(duplicates)}")
        for job in self.jobs:
            chain = [job.name]
            follow_up = job.follow_up
            while follow_up is not None:
                if follow_up not in names:
                    raise ValueError(f"job {chain[-1]!r} is followed by {follow_up!r}, which is not a job")
                if follow_up in chain:
                    raise ValueError(f"jobs follow each other in a cycle: {' -> '.join([*chain, follow_up])}")
                chain.append(follow_up)
                follow_up = self.named(follow_up).follow_up

    def __iter__(self) -> Iterator[JobSpec[Any]]:
        return iter(self.jobs)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(job.name for job in self.jobs)

    def named(self, name: str) -> JobSpec[Any]:
        """The job called ``name``; :class:`~pypimirror.errors.UnknownJobError` if there is none."""
        for job in self.jobs:
            if job.name == name:
                return job
        raise UnknownJobError(name, self.names)

    def titles(self) -> Mapping[str, str]:
        """Name -> title of every job, in table order: what the info page lists."""
        return {job.name: job.title for job in self.jobs}


def _run_index_sync(context: JobContext, stop: asyncio.Event) -> Awaitable[IndexSyncReport]:
    return run_index_sync(context.config, context.db, context.client, stop=stop)


def _run_advisory_sync(context: JobContext, stop: asyncio.Event) -> Awaitable[AdvisorySyncReport]:
    return run_advisory_sync(context.config, context.db, context.client, stop=stop)


def _run_cache(context: JobContext, stop: asyncio.Event) -> Awaitable[CacheReport]:
    return run_cache(context.config, context.db, context.client, stop=stop)


INDEX_SYNC: JobSpec[IndexSyncReport] = JobSpec(
    name="index_sync",
    title="Index sync",
    schedule=lambda schedule: schedule.index_sync,
    run=_run_index_sync,
    # The cache's plan reads the index: a changed index can mean new files to fetch or old ones to drop.
    follow_up="cache",
    needs_follow_up=lambda report: report.changed and not report.interrupted,
    # Storage failed or too many projects did: the index the cache would plan from is unsound.
    blocking_failure=lambda report: report.failed,
)

# A failed advisory sync keeps what is stored, so the cache run after it in a pass goes on.
ADVISORIES: JobSpec[AdvisorySyncReport] = JobSpec(
    name="advisories",
    title="Advisory sync",
    schedule=lambda schedule: schedule.advisories,
    run=_run_advisory_sync,
)

CACHE: JobSpec[CacheReport] = JobSpec(
    name="cache",
    title="Cache management",
    schedule=lambda schedule: schedule.cache,
    run=_run_cache,
)

#: Every job of the mirror, in the order a pass runs them.
JOBS = JobTable((INDEX_SYNC, ADVISORIES, CACHE))
