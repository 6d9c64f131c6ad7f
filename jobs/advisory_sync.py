"""Advisory sync: bring the stored OSV records up to date with ``advisories.source``.

The export is read record by record in a worker thread (:func:`pypimirror.osv.read_export`);
a record is stored when it is new or its ``modified`` time is later than the stored one's, so
a run over an unchanged export writes nothing. A URL source is first downloaded whole with the
mirror's upstream client (its proxy, User-Agent and retries) into a temporary file under
``repo_path``.

Nothing already stored is lost, whatever the export holds: records are only ever added or
replaced by newer versions of themselves, never deleted (OSV takes a record back by marking it
``withdrawn``, which a newer version carries). So a corrupt archive, a truncated download or
an export that lost half its files changes nothing but what it still holds newer versions of.
What is skipped is counted in the run's counts; a source that cannot be read at all fails the
run (with the reason) without touching the database.
"""

from __future__ import annotations

__all__ = ["AdvisorySyncReport", "run_advisory_sync"]

import asyncio
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from pypimirror import advisoryqueries as aq
from pypimirror.config import AdvisoriesConfig, Config
from pypimirror.db import Database
from pypimirror.errors import PyPIMirrorError
from pypimirror.osv import Advisory, ReadStats, read_export
from pypimirror.upstream import UpstreamClient
from pypimirror.urlmask import mask_url

logger = logging.getLogger(__name__)

#: Records stored per transaction: small enough that the writer thread is never held for long.
BATCH_SIZE = 500


@dataclass(slots=True)
class AdvisorySyncReport:
    """The outcome of one run, stored as the job run's counts."""

    read: ReadStats = field(default_factory=ReadStats)
    stored: int = 0
    unchanged: int = 0
    interrupted: bool = False
    #: Why the source could not be read at all; None if it could.
    failed: str | None = None
    #: False when no ``advisories.source`` is configured (the run did nothing).
    configured: bool = True

    @property
    def ok(self) -> bool:
        return not self.interrupted and self.failed is None

    @property
    def failure_reason(self) -> str | None:
        return self.failed

    @property
    def changed(self) -> bool:
        return self.stored > 0

    def counts(self) -> dict[str, int]:
        return {
            "records": self.read.records,
            "stored": self.stored,
            "unchanged": self.unchanged,
            "skipped": self.read.skipped,
            "unreadable": self.read.unreadable,
            "bad_records": self.read.bad_records,
            "other_ecosystem": self.read.other_ecosystem,
            "corrupt_archives": self.read.corrupt_archives,
        }


async def run_advisory_sync(
    config: Config, db: Database, client: UpstreamClient, *, stop: asyncio.Event
) -> AdvisorySyncReport:
    """One advisory sync from ``config.advisories.source``; does nothing without a source."""
    settings = config.advisories
    if settings.source is None:
        return AdvisorySyncReport(configured=False)
    if isinstance(settings.source, Path):
        return await _sync_from(settings.source, settings, db, stop)
    with tempfile.TemporaryDirectory(prefix=".advisories-", dir=config.repo_path) as scratch:
        path = Path(scratch) / "export.zip"
        try:
            await client.download_to(settings.source, path, cancel=stop)
        except PyPIMirrorError as exc:
            if stop.is_set():
                return AdvisorySyncReport(interrupted=True)
            logger.error("advisories: cannot download %s: %s", mask_url(settings.source), exc)
            return AdvisorySyncReport(failed=f"cannot download the advisory export: {exc}")
        return await _sync_from(path, settings, db, stop)


async def _sync_from(source: Path, settings: AdvisoriesConfig, db: Database, stop: asyncio.Event) -> AdvisorySyncReport:
    report = AdvisorySyncReport()
    known = await db.run_read(aq.load_modified)
    records = read_export(source, report.read)
    try:
        while not stop.is_set():
            try:
                batch = await asyncio.to_thread(_next_batch, records, known, report)
            except OSError as exc:
                shown = mask_url(str(settings.source))
                logger.error("advisories: cannot read %s: %s", shown, exc)
                report.failed = f"cannot read the advisory source {shown}: {exc.strerror or exc}"
                return report
            if batch is None:
                break
            if batch:
                await db.run(lambda conn: aq.store_advisories(conn, batch))
                report.stored += len(batch)
        else:
            report.interrupted = True
    finally:
        records.close()
    logger.info(
        "advisories: %d records read, %d stored, %d unchanged, %d skipped",
        report.read.records, report.stored, report.unchanged, report.read.skipped,
    )  # fmt: skip
    return report


def _next_batch(records: Iterator[Advisory], known: dict[str, str], report: AdvisorySyncReport) -> list[Advisory] | None:
    """Up to :data:`BATCH_SIZE` records newer than stored (blocking: it reads the export); None at the end.

    An export may hold two versions of one record (two files of a directory): the later wins,
    and ``known`` is updated as records are taken so the older one is then unchanged.
    """
    batch: dict[str, Advisory] = {}
    taken = 0
    for advisory in islice(records, BATCH_SIZE):
        taken += 1
        if advisory.modified <= known.get(advisory.id, ""):
            report.unchanged += 1
            continue
        known[advisory.id] = advisory.modified
        batch[advisory.id] = advisory
    return list(batch.values()) if taken else None
