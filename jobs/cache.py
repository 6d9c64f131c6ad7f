"""Cache management: keep the most popular package files within each tier's byte budget.

One run has five phases (the seed mirror's, without its ways of losing data):

A. inventory: walk every tier; the disk wins over the database (rows are corrected), and temp
   files of interrupted runs, colder duplicate copies and stray ``.metadata`` files are removed;
   a tier that cannot be written now is reported and left as it is for the rest of the run;
A2. verify: cached files whose size or sha256 differs from their page are evicted
   (:mod:`~pypimirror.jobs.cache_verify`);
B. popular files: under ``seed`` the files with ``min_vote_count`` distinct client networks
   within ``vote_window``, under ``default`` every file voted within its ``counting_window``
   with all its votes (see :func:`~pypimirror.jobs.cache_plan.size_aware_score`), the pinned
   sets' files, with the ``default`` policy the new releases of voted cached files
   (:mod:`~pypimirror.jobs.cache_successors`), and what the stored index pages say about the
   ones not cached (:mod:`pypimirror.jobs.cache_remote`);
C./D. place the pinned files, score and assign the others, and execute
   (:mod:`~pypimirror.jobs.cache_plan`, then
   :mod:`~pypimirror.jobs.cache_apply`): space is freed before anything arrives, so no tier is
   ever over its limit, and only verified downloads are kept;
E. cleanup: votes older than the window and expired size answers.

Pinned files are never evicted: a budget smaller than the pinned sets fails the run (after the
other files made what room they could), it does not drop a pinned file.

A run stopped at any point, even by kill -9, leaves no partial file under a final name, and
the next phase A makes the database agree with the disk. ``dry_run`` only plans: it writes,
moves and deletes nothing, on disk or in the database.
"""

from __future__ import annotations

__all__ = ["CacheReport", "format_plan", "plan_cache", "run_cache"]

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TypeVar

from pypimirror.jobs.cache_apply import ApplyStats, LiveFill, apply_plan, probe_tier
from pypimirror.jobs.cache_plan import CachePlan, format_plan, plan_cache
from pypimirror.jobs.cache_remote import WantedFiles, popular_votes, resolve_wanted
from pypimirror.jobs.cache_successors import PREFETCH_POLICIES, ReleaseIndex, successor_votes
from pypimirror.jobs.cache_verify import VerifyStats, verify_cache

from pypimirror import pinqueries
from pypimirror import queries as dbq
from pypimirror.byteunits import format_bytes
from pypimirror.config import CacheConfig, Config, SyncConfig, UpstreamConfig
from pypimirror.db import Database
from pypimirror.inventory import (
    Inventory,
    LocalFile,
    diff_rows,
    reconcile_tiers,
    remove_files,
    scan_tier,
)
from pypimirror.listedfiles import project_of
from pypimirror.pagescan import read_projects_listed_files
from pypimirror.upstream import UpstreamClient

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per database transaction when phase A corrects many rows, so vote writes get turns.
_ROW_BATCH = 10_000


@dataclass(slots=True)
class CacheReport:
    """The outcome of one run: stored as the job run's counts, logged, shown to operators."""

    limits: tuple[int, ...]
    dry_run: bool = False
    interrupted: bool = False
    files: int = 0
    temp_removed: int = 0
    duplicates_removed: int = 0
    orphans_removed: int = 0
    rows_updated: int = 0
    rows_removed: int = 0
    popular: int = 0
    #: New releases of voted cached files, not cached yet, the plan considered (release prefetch).
    successors: int = 0
    verify: VerifyStats = field(default_factory=VerifyStats)
    wanted: WantedFiles = field(default_factory=WantedFiles)
    applied: ApplyStats = field(default_factory=ApplyStats)
    blocked_moves: int = 0
    unplaced: int = 0
    tier_bytes: list[int] = field(default_factory=list)
    tier_files: list[int] = field(default_factory=list)
    votes_deleted: int = 0
    sizes_deleted: int = 0
    #: Tier index -> why it could not be written; such a tier was left as it was.
    unwritable: dict[int, str] = field(default_factory=dict)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    plan: CachePlan | None = None
    #: Pinned files the plan holds or fetches, the bytes all pinned files need, and the bytes
    #: of those no tier had room for (the budget is below the pinned sets: the run fails).
    pinned: int = 0
    pinned_bytes: int = 0
    pinned_short: int = 0

    @property
    def ok(self) -> bool:
        """Finished, every tier writable, the download error threshold not reached, and every
        pinned file had room."""
        return (not self.interrupted and not self.applied.threshold_reached and not self.unwritable
                and not self.pinned_short)

    @property
    def failure_reason(self) -> str | None:
        reasons = [f"tier {tier} not writable ({reason}); skipped" for tier, reason in self.unwritable.items()]
        if self.pinned_short:
            reasons.append(
                f"the pinned sets need {format_bytes(self.pinned_bytes)}, {format_bytes(self.pinned_short)} more "
                f"than the tiers ({format_bytes(sum(self.limits))}) have room for: raise cache.tiers size_limit "
                "or remove a pinned set; no pinned file was evicted"
            )
        if self.applied.threshold_reached:
            reasons.append(f"download error threshold reached ({self.applied.download_errors} failed downloads)")
        return "; ".join(reasons) or None

    def counts(self) -> dict[str, int]:
        applied, wanted = self.applied, self.wanted
        verify = self.verify
        counts = {
            "files": self.files,
            "verified": verify.hashed,
            "verified_bytes": verify.hashed_bytes,
            "size_mismatches": verify.size_mismatches,
            "hash_mismatches": verify.hash_mismatches,
            "corrupt_evicted": verify.evicted,
            "popular": self.popular,
            "successors": self.successors,
            "unlisted": wanted.unlisted,
            "unverifiable": wanted.unverifiable,
            "too_large": wanted.too_large,
            "head_requests": wanted.heads,
            "head_errors": wanted.head_errors,
            "downloaded": applied.downloaded,
            "downloaded_bytes": applied.downloaded_bytes,
            "download_errors": applied.download_errors,
            "integrity_errors": applied.integrity_errors,
            "metadata_errors": applied.metadata_errors,
            "skipped_downloads": applied.skipped_downloads,
            "evicted": applied.evicted,
            "evicted_bytes": applied.evicted_bytes,
            "eviction_errors": applied.eviction_errors,
            "moved": applied.moved,
            "moved_bytes": applied.moved_bytes,
            "move_errors": applied.move_errors,
            "blocked_moves": self.blocked_moves + applied.skipped_moves,
            "unwritable_tiers": len(self.unwritable),
            "skipped_unwritable": applied.skipped_unwritable,
            "unplaced": self.unplaced,
            "pinned": self.pinned,
            "pinned_bytes": self.pinned_bytes,
            "pinned_short": self.pinned_short,
            "temp_removed": self.temp_removed,
            "duplicates_removed": self.duplicates_removed,
            "orphans_removed": self.orphans_removed,
            "rows_updated": self.rows_updated,
            "rows_removed": self.rows_removed,
            "votes_deleted": self.votes_deleted,
            "sizes_deleted": self.sizes_deleted,
        }
        for tier, limit in enumerate(self.limits):
            counts[f"tier{tier}_limit"] = limit
        for tier, (used, files) in enumerate(zip(self.tier_bytes, self.tier_files, strict=True)):
            counts[f"tier{tier}_bytes"] = used
            counts[f"tier{tier}_files"] = files
        for phase, seconds in self.phase_seconds.items():
            counts[f"phase_{phase}_ms"] = round(seconds * 1000)
        return counts

    def summary(self) -> str:
        applied = self.applied
        text = (
            f"{self.files} files, {self.popular} popular; downloaded {applied.downloaded} "
            f"({format_bytes(applied.downloaded_bytes)}), evicted {applied.evicted} "
            f"({format_bytes(applied.evicted_bytes)}), moved {applied.moved} ({format_bytes(applied.moved_bytes)}), "
            f"failed {applied.download_errors}"
        )
        fills = ", ".join(
            f"tier {t}: {format_bytes(used)} of {format_bytes(limit)}"
            for t, (used, limit) in enumerate(zip(self.tier_bytes, self.limits, strict=True))
        )
        text += f"; {fills}" if fills else ""
        corrupt = self.verify.size_mismatches + self.verify.hash_mismatches
        if corrupt:
            text += f"; {corrupt} cached files differed from their pages ({self.verify.evicted} evicted)"
        if self.dry_run:
            text += " (dry run)"
        if self.interrupted:
            text += " (interrupted)"
        if applied.threshold_reached:
            text += " (download error threshold reached)"
        if self.pinned_short:
            text += f" (pinned sets over the budget by {format_bytes(self.pinned_short)})"
        for tier, reason in self.unwritable.items():
            text += f" (tier {tier} not writable, skipped: {reason})"
        return text


async def run_cache(
    config: Config,
    db: Database,
    client: UpstreamClient,
    *,
    stop: asyncio.Event | None = None,
    dry_run: bool = False,
    clock: Callable[[], float] = time.time,
) -> CacheReport:
    """Run phases A–E once; ``stop`` being set ends the run at the next safe point.

    Raises :class:`~pypimirror.errors.StorageError` when a tier cannot be walked (nothing is
    changed then) and :class:`~pypimirror.errors.DatabaseError` when the database fails.
    Download failures are counted in the report, not raised.
    """
    run = _CacheRun(
        cache=config.cache, sync=config.sync, upstream=config.upstream, node_id=config.node_id,
        repo_path=config.repo_path, prefix=config.prefix, db=db, client=client, stop=stop or asyncio.Event(),
        dry_run=dry_run, now=int(clock()),
    )
    return await run.execute()


class _CacheRun:
    """One run's state; it holds the settings its phases read, not the whole configuration."""

    def __init__(
        self,
        *,
        cache: CacheConfig,
        sync: SyncConfig,
        upstream: UpstreamConfig,
        node_id: str,
        repo_path: Path,
        prefix: str,
        db: Database,
        client: UpstreamClient,
        stop: asyncio.Event,
        dry_run: bool,
        now: int,
    ) -> None:
        self.cache = cache
        self.sync = sync
        self.upstream = upstream
        self.node_id = node_id
        self.repo_path = repo_path
        self.prefix = prefix
        self.db = db
        self.client = client
        self.stop = stop
        self.dry_run = dry_run
        self.now = now
        self.roots = cache.tier_roots
        self.limits = cache.tier_limits
        self.report = CacheReport(self.limits, dry_run=dry_run)

    async def execute(self) -> CacheReport:
        report = self.report
        inventory = await self._timed("a", self._inventory())
        if not self.dry_run and not self.stop.is_set():
            report.verify = await self._timed("v", verify_cache(
                inventory.files, budget=self.cache.verify_bytes_per_run, node_id=self.node_id,
                repo_path=self.repo_path, prefix=self.prefix, db=self.db, roots=self.roots,
                now=self.now, stop=self.stop,
            ))
        fill = LiveFill(inventory.tier_bytes(len(self.limits)), [0] * len(self.limits))
        for local in inventory.files.values():
            fill.files[local.tier] += 1
        report.files = len(inventory.files)
        report.tier_bytes, report.tier_files = fill.bytes, fill.files
        if not self.dry_run:
            await self._probe_tiers()
        if not self.stop.is_set():
            plan = await self._timed("b", self._plan(inventory))
            del inventory  # the plan holds what it needs; a million entries are worth freeing
            report.plan, report.blocked_moves, report.unplaced = plan, len(plan.blocked), plan.unplaced
            report.pinned, report.pinned_bytes, report.pinned_short = plan.pinned, plan.pinned_bytes, plan.pinned_short
            if plan.pinned_short:
                logger.error("cache: %s", report.failure_reason)
            logger.info(
                "cache: plan: %d evictions, %d moves (%d blocked), %d downloads",
                len(plan.evictions), len(plan.moves), len(plan.blocked), len(plan.downloads),
            )
            if not self.dry_run and not self.stop.is_set():
                report.applied, fill = await self._timed("d", apply_plan(
                    plan, node_id=self.node_id, roots=self.roots, sync=self.sync,
                    upstream=self.upstream, db=self.db, client=self.client, stop=self.stop, fill=fill,
                    unwritable=report.unwritable,
                ))
                report.tier_bytes, report.tier_files = fill.bytes, fill.files
        if not self.dry_run and not self.stop.is_set():
            await self._timed("e", self._cleanup())
        report.interrupted = self.stop.is_set()
        logger.info("cache: done: %s", report.summary())
        return report

    async def _timed(self, phase: str, step: Awaitable[T]) -> T:
        started = time.monotonic()
        try:
            return await step
        finally:
            self.report.phase_seconds[phase] = time.monotonic() - started

    # -- A: inventory --------------------------------------------------------------------------

    async def _inventory(self) -> Inventory:
        scans = [await asyncio.to_thread(scan_tier, root, tier) for tier, root in enumerate(self.roots)]
        inventory = await asyncio.to_thread(reconcile_tiers, scans)
        del scans
        node = self.node_id
        stored = await self.db.run_read(lambda conn: dbq.load_local_files(conn, node))
        upserts, stale = await asyncio.to_thread(diff_rows, inventory.files, stored)
        del stored
        report = self.report
        if not self.dry_run:
            report.temp_removed = await self._remove(inventory.temp_files)
            report.duplicates_removed = await self._remove(inventory.duplicates)
            report.orphans_removed = await self._remove(inventory.orphans)
            for start in range(0, len(upserts), _ROW_BATCH):
                batch = upserts[start : start + _ROW_BATCH]
                await self.db.run(partial(dbq.upsert_local_files, node_id=node, rows=batch))
            for start in range(0, len(stale), _ROW_BATCH):
                gone = stale[start : start + _ROW_BATCH]
                await self.db.run(partial(dbq.delete_local_files, node_id=node, paths=gone))
            report.rows_updated, report.rows_removed = len(upserts), len(stale)
        logger.info(
            "cache: phase A: %d files in %d tiers; removed %d temp files, %d duplicates, %d stray "
            "metadata files; corrected %d database rows, forgot %d",
            len(inventory.files), len(self.roots), report.temp_removed, report.duplicates_removed,
            report.orphans_removed, report.rows_updated, report.rows_removed,
        )
        return inventory

    async def _probe_tiers(self) -> None:
        """Find the tiers that cannot take a file now; the run leaves them exactly as they are."""
        for tier, root in enumerate(self.roots):
            error = await asyncio.to_thread(probe_tier, root)
            if error is None:
                continue
            reason = f"{error.strerror or error}: {error.filename or root}"
            self.report.unwritable[tier] = reason
            logger.error("cache: tier %d (%s) is not writable (%s); it is left as it is this run", tier, root, reason)

    async def _remove(self, targets: Sequence[tuple[int, str]]) -> int:
        if not targets:
            return 0
        removed, _ = await asyncio.to_thread(remove_files, self.roots, targets)
        return removed

    # -- B and C: popular files, then the plan -------------------------------------------------

    async def _plan(self, inventory: Inventory) -> CachePlan:
        """The plan over the pinned files and the voted files (see phase B)."""
        cache = self.cache
        counting = cache.counting_of(cache.policy)
        since = self.now - int(counting.window.total_seconds())
        if counting.distinct:
            popular = await self.db.run_read(lambda conn: dbq.select_popular(conn, since, counting.floor))
        else:  # every voted file (a floor of 1)
            popular = await self.db.run_read(lambda conn: dbq.select_vote_counts(conn, since))
        pinned = frozenset(await self.db.run_read(pinqueries.load_pinned_files))
        votes = popular_votes(popular)
        self.report.popular = len(votes)
        if cache.policy in PREFETCH_POLICIES:
            # A release is new within vote_window whatever window the votes count in; the
            # simulator uses the same.
            released_since = self.now - int(cache.vote_window.total_seconds())
            successors = await self._release_successors(inventory.files, votes, released_since)
            self.report.successors = sum(1 for path in successors if path not in inventory.files)
            votes = {**votes, **successors}
        wanted_paths = sorted(path for path in votes.keys() | pinned if path not in inventory.files)
        wanted = await resolve_wanted(
            wanted_paths, cache=cache, sync=self.sync, upstream=self.upstream,
            repo_path=self.repo_path, prefix=self.prefix, db=self.db, client=self.client,
            now=self.now, dry_run=self.dry_run, pinned=pinned,
        )
        self.report.wanted = wanted
        logger.info(
            "cache: phase B: %d popular files, %d not cached, %d of them can be downloaded",
            len(votes), len(wanted_paths), len(wanted.files),
        )
        return await asyncio.to_thread(
            partial(plan_cache, policy=cache.policy, pinned=pinned),
            inventory.files, wanted.files, votes, self.limits,
        )

    async def _release_successors(
        self, local: Mapping[str, LocalFile], votes: Mapping[str, int], since: int
    ) -> dict[str, int]:
        """The new releases of the voted cached files and their votes (see
        :mod:`~pypimirror.jobs.cache_successors`): only pages written since ``since`` are read."""
        projects = {project_of(path) for path in votes}
        names = [name for name in projects if name is not None]
        listed = await asyncio.to_thread(
            read_projects_listed_files, self.repo_path, self.prefix, names, modified_since=since
        )
        index = ReleaseIndex(listed.values())
        # Whatever a stored page lists is out already (its upload time may even be a little
        # ahead of this clock): only the window's start bounds it.
        successors = successor_votes(index, local, votes, since=since, now=math.inf)
        if successors:
            logger.info("cache: phase B: %d new releases of voted cached files", len(successors))
        return successors

    # -- E: cleanup ----------------------------------------------------------------------------

    async def _cleanup(self) -> None:
        cache = self.cache
        votes_before = self.now - int(cache.counting_window.total_seconds())
        sizes_before = self.now - int(cache.size_db_ttl.total_seconds())
        self.report.votes_deleted = await self.db.run(lambda conn: dbq.delete_votes_before(conn, votes_before))
        self.report.sizes_deleted = await self.db.run(
            lambda conn: dbq.delete_remote_sizes_before(conn, sizes_before)
        )
        await self.db.run(partial(dbq.delete_file_checks, node_id=self.node_id))
        logger.info(
            "cache: phase E: forgot %d old votes and %d expired size answers",
            self.report.votes_deleted, self.report.sizes_deleted,
        )

