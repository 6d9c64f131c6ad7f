"""Run a job the way operators can rely on: one sync at a time per mirror, always on record.

:func:`run_job` takes the sync lease in the database, so two runners (the embedded scheduler and
a ``sync --once`` from cron, or two nodes sharing PostgreSQL) never work on one mirror at the
same time. It renews the lease while the job runs, stores the run's start, end, outcome and
counts, and releases the lease at the end. A runner that dies without releasing it leaves a
lease that expires after ``lease_ttl`` seconds, after which the next runner proceeds.
"""

from __future__ import annotations

__all__ = ["JobReport", "run_job"]

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from sqlalchemy import Connection

from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.errors import JobLockedError
from pypimirror.queries import JobOutcome

logger = logging.getLogger(__name__)

LEASE_TTL_SECONDS = 120.0


class JobReport(Protocol):
    """What a job returns: whether it finished its work, why not, and counts worth keeping."""

    @property
    def ok(self) -> bool: ...

    @property
    def interrupted(self) -> bool: ...

    @property
    def failure_reason(self) -> str | None:
        """Why a run that ended on its own was not ok; stored as the run's error."""

    def counts(self) -> Mapping[str, int]: ...


ReportT = TypeVar("ReportT", bound=JobReport)


async def run_job(
    db: Database,
    *,
    job: str,
    node_id: str,
    body: Callable[[], Awaitable[ReportT]],
    stop: asyncio.Event,
    lease_ttl: float = LEASE_TTL_SECONDS,
    clock: Callable[[], float] = time.time,
) -> ReportT:
    """Run ``body`` under the sync lease and record the run.

    Raises :class:`~pypimirror.errors.JobLockedError` (and records nothing) when another
    runner holds the lease. If the lease is lost while running (the database was unreachable
    for longer than its lifetime and another runner took it), ``stop`` is set so the job
    ends at its next safe point.
    """
    holder = f"{node_id}/{os.getpid()}/{job}"
    acquired, lease = await db.run(
        lambda conn: _acquire(conn, holder, node_id, clock(), lease_ttl)
    )
    if not acquired:
        raise JobLockedError(lease.holder, lease.expires_at)
    renewer = asyncio.ensure_future(_keep_lease(db, holder, stop, lease_ttl, clock))
    run_id = await db.run(lambda conn: dbq.start_job_run(conn, job, node_id, clock()))
    outcome: JobOutcome = "failed"
    counts: Mapping[str, int] = {}
    error: str | None = None
    try:
        report = await body()
        counts = report.counts()
        outcome = "ok" if report.ok else "interrupted" if report.interrupted else "failed"
        if outcome == "failed":
            error = report.failure_reason
        return report
    except asyncio.CancelledError:
        outcome, error = "interrupted", "cancelled"
        raise
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        renewer.cancel()
        await _finish(db, run_id, holder, outcome, counts, error, clock)


def _acquire(
    conn: Connection, holder: str, node_id: str, now: float, lease_ttl: float
) -> tuple[bool, dbq.Lease]:
    """Take the lease; one left by a dead process of this node is taken over at once.

    A runner killed with SIGKILL cannot release its lease; waiting for it to expire would
    make the cron job after a crash fail for no reason when this node can see that the
    holder's process is gone.
    """
    acquired, lease = dbq.acquire_lease(conn, dbq.SYNC_LEASE, holder, now, lease_ttl)
    if not acquired and _is_dead_local_holder(lease.holder, node_id):
        logger.warning("taking over the sync lease of %s, whose process is gone", lease.holder)
        dbq.release_lease(conn, dbq.SYNC_LEASE, lease.holder)
        acquired, lease = dbq.acquire_lease(conn, dbq.SYNC_LEASE, holder, now, lease_ttl)
    return acquired, lease


def _is_dead_local_holder(holder: str, node_id: str) -> bool:
    """True if ``holder`` names a process of this node that no longer exists."""
    parts = holder.rsplit("/", 2)
    if len(parts) != 3 or parts[0] != node_id or not parts[1].isdecimal():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


async def _finish(
    db: Database,
    run_id: int,
    holder: str,
    outcome: JobOutcome,
    counts: Mapping[str, int],
    error: str | None,
    clock: Callable[[], float],
) -> None:
    """Record the end and give the lease back, even while the task is being cancelled."""

    def finish(conn: Connection) -> None:
        dbq.finish_job_run(conn, run_id, clock(), outcome, counts, error)
        dbq.release_lease(conn, dbq.SYNC_LEASE, holder)

    await asyncio.shield(db.run(finish))


async def _keep_lease(
    db: Database,
    holder: str,
    stop: asyncio.Event,
    lease_ttl: float,
    clock: Callable[[], float],
) -> None:
    while True:
        await asyncio.sleep(lease_ttl / 3)
        try:
            held = await db.run(
                lambda conn: dbq.renew_lease(conn, dbq.SYNC_LEASE, holder, clock(), lease_ttl)
            )
        except Exception as exc:  # the job's own DB calls report the outage; keep trying
            logger.warning("cannot renew the sync lease: %s", exc)
            continue
        if not held:
            logger.error("the sync lease was taken over by another runner; stopping this run")
            stop.set()
            return
