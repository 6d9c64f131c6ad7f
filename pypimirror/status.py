"""What the mirror reports about itself: job history, cache fill, hit rate, index history, health.

The info page, ``/metrics`` and ``/healthz`` show the same facts, read from the database
(``job_runs``, ``local_files``, ``hit_counters``, the pinned sets, the advisories, ``history_state``) and the disk. :func:`read_status` is a plain ``fn(conn)``;
:class:`StatusReader` runs it off the IOLoop and keeps the answer for a few seconds, so a
burst of page views or scrapes costs one read. A health check never piles up: while one is
still waiting for a hung database, the next reports that instead of queueing behind it.
"""

from __future__ import annotations

__all__ = [
    "ADVISORY_JOB",
    "JobStatus",
    "MirrorStatus",
    "StatusReader",
    "TierFill",
    "read_job_statuses",
    "read_status",
    "read_tier_fill",
]

import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection

from pypimirror.advisoryqueries import AdvisoryCounts, count_advisories
from pypimirror.db import Database
from pypimirror.errors import DatabaseError, DatabaseFileError
from pypimirror.historydb import read_history_start
from pypimirror.hitrate import HitSummary, read_hit_summary
from pypimirror.pinqueries import PinnedSetSummary, pinned_set_summaries
from pypimirror.queries import (
    JobRun,
    count_failures_since,
    job_names,
    last_finished_job_run,
    last_job_run,
    read_schema_version,
    tier_usage,
)

logger = logging.getLogger(__name__)

_NO_TITLES: Mapping[str, str] = MappingProxyType({})
#: The advisory sync's name in ``job_runs`` (its entry in the job table).
ADVISORY_JOB = "advisories"


@dataclass(frozen=True, slots=True)
class JobStatus:
    """One job's recent history: its newest run (maybe still running), newest finished and successful run."""

    name: str
    last_run: JobRun
    last_finished: JobRun | None
    last_success: JobRun | None
    failures_since_success: int


@dataclass(frozen=True, slots=True)
class TierFill:
    """How much of one tier's budget this node's package files use (from ``local_files``)."""

    index: int
    files: int
    bytes: int
    limit: int


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    """Every job that ever ran, every configured tier, hottest first, this node's hit rate
    (None where it was not read) and the pinned sets by name, with how many of their files
    this node holds.

    ``job_titles`` are the jobs this mirror runs, name -> title in the order they are shown,
    whether they ran yet or not (the composition root passes the jobs' table); ``jobs`` lists
    those first, in that order, then any other job on record by name. ``history_since`` is since
    when the index history is complete (None: not yet, or not read).
    """

    jobs: tuple[JobStatus, ...]
    tiers: tuple[TierFill, ...]
    hits: HitSummary | None = None
    job_titles: Mapping[str, str] = field(default_factory=dict)
    pinned: tuple[PinnedSetSummary, ...] = ()
    #: The stored advisories (None where not read).
    advisories: AdvisoryCounts | None = None
    history_since: float | None = None

    def job(self, name: str) -> JobStatus | None:
        return next((job for job in self.jobs if job.name == name), None)

    def advisory_files(self) -> tuple[int, int] | None:
        """Files the advisory policy flagged and blocked at its last finished sync; None before one."""
        job = self.job(ADVISORY_JOB)
        if job is None or job.last_finished is None or "flagged_files" not in job.last_finished.counts:
            return None
        counts = job.last_finished.counts
        return int(counts["flagged_files"]), int(counts.get("blocked_files", 0))


def read_status(
    conn: Connection,
    node_id: str,
    tier_limits: Sequence[int],
    *,
    job_titles: Mapping[str, str] = _NO_TITLES,
    now: float | None = None,
    with_hits: bool = True,
    with_pins: bool = True,
    with_advisories: bool = True,
    with_history: bool = True,
    fill: tuple[TierFill, ...] | None = None,
) -> MirrorStatus:
    """The job history, this node's cache fill (``fill`` when given, else read), (``with_hits``)
    its hit rate as of ``now``, (``with_pins``) the pinned sets, (``with_advisories``) the
    stored advisories and (``with_history``) the start of the index history, in one read
    transaction."""
    hits = read_hit_summary(conn, node_id, time.time() if now is None else now) if with_hits else None
    jobs = read_job_statuses(conn, tuple(job_titles))
    pinned = tuple(pinned_set_summaries(conn, node_id)) if with_pins else ()
    advisories = count_advisories(conn) if with_advisories else None
    history_since = read_history_start(conn) if with_history else None
    tiers = read_tier_fill(conn, node_id, tier_limits) if fill is None else fill
    return MirrorStatus(
        jobs, tiers, hits, job_titles, pinned=pinned, advisories=advisories, history_since=history_since
    )


def read_job_statuses(conn: Connection, order: Sequence[str] = ()) -> tuple[JobStatus, ...]:
    """Every job in ``job_runs``: those of ``order`` first, in that order, then the others by name."""
    names = job_names(conn)
    names.sort(key=lambda name: (order.index(name) if name in order else len(order), name))
    statuses = []
    for name in names:
        last = last_job_run(conn, name)
        if last is None:  # removed since the names were read
            continue
        success = last_job_run(conn, name, "ok")
        statuses.append(
            JobStatus(
                name=name,
                last_run=last,
                last_finished=last if last.finished_at is not None else last_finished_job_run(conn, name),
                last_success=success,
                failures_since_success=count_failures_since(conn, name, success.started_at if success else None),
            )
        )
    return tuple(statuses)


def read_tier_fill(conn: Connection, node_id: str, tier_limits: Sequence[int]) -> tuple[TierFill, ...]:
    """Files and bytes per configured tier of this node; a tier it holds nothing in shows zeros."""
    found = tier_usage(conn, node_id)
    return tuple(
        TierFill(index, *found.get(index, (0, 0)), limit=limit) for index, limit in enumerate(tier_limits)
    )


class StatusReader:
    """:func:`read_status` off the IOLoop, kept ``max_age`` seconds; and the health check.

    The tier fill, a sum over every cached file (about 0.4 s for a million on SQLite), changes
    only when the cache job runs; it is kept ``fill_max_age`` seconds. Meant for the IOLoop
    thread. Concurrent callers of :meth:`snapshot` share one read.
    """

    def __init__(
        self,
        db: Database,
        *,
        node_id: str,
        tier_limits: Sequence[int],
        repo_path: Path,
        job_titles: Mapping[str, str] = _NO_TITLES,
        max_age: float = 5.0,
        fill_max_age: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._node_id = node_id
        self._tier_limits = tuple(tier_limits)
        self._repo_path = repo_path
        self._job_titles = job_titles
        self._max_age = max_age
        self._fill_max_age = fill_max_age
        self._clock = clock
        self._cached: tuple[float, MirrorStatus] | None = None
        self._fill: tuple[float, tuple[TierFill, ...]] | None = None
        self._reading: asyncio.Future[MirrorStatus] | None = None
        self._probes: dict[str, asyncio.Future[object]] = {}

    async def snapshot(self) -> MirrorStatus:
        """The status at most ``max_age`` seconds old; raises DatabaseError when it cannot be read."""
        if self._cached is not None and self._clock() - self._cached[0] < self._max_age:
            return self._cached[1]
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._read())
            self._reading.add_done_callback(_consume_result)
        return await asyncio.shield(self._reading)

    async def _read(self) -> MirrorStatus:
        started = self._clock()
        fill = self._fill[1] if self._fill is not None and started - self._fill[0] < self._fill_max_age else None
        try:
            status = await self._db.run_read(
                lambda conn: read_status(conn, self._node_id, self._tier_limits, job_titles=self._job_titles, fill=fill)
            )
        finally:
            self._reading = None
        self._cached = (started, status)
        if fill is None:
            self._fill = (started, status.tiers)
        return status

    async def check_health(self, timeout: float) -> list[str]:
        """Why the mirror is unhealthy, one short line per failed check; empty when it is healthy.

        The database must hand back its schema version (a read of a real row, so a deleted,
        replaced or corrupt SQLite file fails), and ``repo_path`` must take a new file (an
        unnamed one: nothing is left behind), each within ``timeout`` seconds. The lines name
        no URL or path (``/healthz`` is public); the log has the details.
        """
        checks: dict[str, Callable[[], Awaitable[object]]] = {
            "database": lambda: self._db.run_read(read_schema_version),
            "repo_path": lambda: asyncio.to_thread(_probe_writable, self._repo_path),
        }
        results = await asyncio.gather(*(self._probe(name, start, timeout) for name, start in checks.items()))
        return [problem for problem in results if problem is not None]

    async def _probe(self, name: str, start: Callable[[], Awaitable[object]], timeout: float) -> str | None:
        running = self._probes.get(name)
        if running is not None and not running.done():
            return f"{name}: the previous check has not finished yet"
        probe = asyncio.ensure_future(start())
        probe.add_done_callback(_consume_result)
        self._probes[name] = probe
        try:
            await asyncio.wait_for(asyncio.shield(probe), timeout)
        except TimeoutError:
            logger.warning("health check of %s: no answer within %gs", name, timeout)
            return f"{name}: no answer within {timeout:g}s"
        except DatabaseFileError as exc:
            logger.warning("health check of %s: %s", name, exc)
            return f"{name}: the file {exc.reason}"
        except DatabaseError as exc:
            logger.warning("health check of %s: %s", name, exc)
            return f"{name}: cannot be reached"
        except OSError as exc:
            logger.warning("health check of %s: %s is not writable: %s", name, self._repo_path, exc)
            return f"{name}: not writable ({exc.strerror or exc})"
        return None


def _probe_writable(directory: Path) -> None:
    with tempfile.TemporaryFile(dir=directory):
        pass


def _consume_result(future: asyncio.Future[Any]) -> None:
    """Collect the outcome of a read nobody may wait for any more, so asyncio does not warn about it."""
    if not future.cancelled():
        future.exception()
