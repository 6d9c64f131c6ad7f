"""Advisory sync: bring the stored OSV records up to date with ``advisories.source``.

The export is read record by record in a worker thread (:func:`pypimirror.osv.read_export`);
a record is stored when it is new or its ``modified`` time is later than the stored one's, so
a run over an unchanged export writes nothing. A URL source is first downloaded whole with the
mirror's upstream client, and kept under ``{repo_path}/advisories/``; while the server names the
same export, a run neither downloads nor reads it (:mod:`.advisory_download`).

Nothing already stored is lost, whatever the export holds: records are only ever added or
replaced by newer versions of themselves, never deleted (OSV takes a record back by marking it
``withdrawn``, which a newer version carries). So a corrupt archive, a truncated download or
an export that lost half its files changes nothing but what it still holds newer versions of.
What is skipped is counted in the run's counts; a source that cannot be read at all fails the
run (with the reason) without touching the database.

Each run then measures the policy (:mod:`pypimirror.advisorypolicy`) against the stored pages of
the projects the advisories name: how many files it flags and blocks, kept in the run's counts
for ``status`` and the info page. With ``advisories.audit`` every affected version is logged too.
"""

from __future__ import annotations

__all__ = ["AdvisorySyncReport", "measure_policy", "run_advisory_sync"]

import asyncio
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

from packaging.utils import NormalizedName

from pypimirror import advisoryqueries as aq
from pypimirror.advisorypolicy import AdvisoryPolicy, VerdictCounts, count_verdicts
from pypimirror.config import AdvisoriesConfig, Config
from pypimirror.db import Database
from pypimirror.errors import PyPIMirrorError
from pypimirror.jobs.advisory_download import fetch_export, remember
from pypimirror.osv import Advisory, ReadStats, read_export
from pypimirror.storage import RepoLayout, is_normalized_project_name
from pypimirror.upstream import UpstreamClient
from pypimirror.urlmask import mask_url

logger = logging.getLogger(__name__)

#: Records stored per transaction: small enough that the writer thread is never held for long.
BATCH_SIZE = 500
#: Where a URL source's export is kept between runs, under ``repo_path``.
DOWNLOAD_DIR = "advisories"
_SDIST_SUFFIXES = (".tar.gz", ".zip", ".tar.bz2", ".tgz")


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
    #: Files of the stored pages the policy flags and blocks (what it would, in audit mode).
    files: VerdictCounts = VerdictCounts()
    #: A URL source whose export is the one the last run read whole: nothing was fetched or read.
    export_unchanged: bool = False

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
            "flagged_files": self.files.flagged,
            "blocked_files": self.files.blocked,
            "export_unchanged": int(self.export_unchanged),
        }


async def run_advisory_sync(
    config: Config, db: Database, client: UpstreamClient, *, stop: asyncio.Event
) -> AdvisorySyncReport:
    """One advisory sync from ``config.advisories.source``; does nothing without a source."""
    settings = config.advisories
    if settings.source is None:
        return AdvisorySyncReport(configured=False)
    if isinstance(settings.source, Path):
        report = await _sync_from(settings.source, settings, db, stop)
    else:
        report = await _download_and_sync(settings.source, config.repo_path, settings, db, client, stop)
    if not report.interrupted and settings.mode != "off":  # off: the policy reaches no file
        report.files = await measure_policy(settings, db, config.repo_path)
    return report


async def _download_and_sync(
    url: str, repo_path: Path, settings: AdvisoriesConfig, db: Database, client: UpstreamClient, stop: asyncio.Event
) -> AdvisorySyncReport:
    directory = repo_path / DOWNLOAD_DIR
    try:
        export = await fetch_export(url, directory, client, stop)
    except PyPIMirrorError as exc:
        if stop.is_set():
            return AdvisorySyncReport(interrupted=True)
        logger.error("advisories: cannot download %s: %s", mask_url(url), exc)
        return AdvisorySyncReport(failed=f"cannot download the advisory export: {exc}")
    if export.unchanged:
        return AdvisorySyncReport(export_unchanged=True)
    report = await _sync_from(export.path, settings, db, stop)
    if report.ok and not report.read.corrupt_archives:
        await asyncio.to_thread(remember, directory, export)
    return report


async def measure_policy(settings: AdvisoriesConfig, db: Database, repo_path: Path) -> VerdictCounts:
    """The files the policy flags and blocks today, from the stored advisories and pages."""
    advisories = await db.run_read(aq.applicable_advisories)
    policy = AdvisoryPolicy(settings, advisories, datetime.now(UTC).date())
    counts = await asyncio.to_thread(_count_files, policy, RepoLayout(repo_path), settings.audit)
    logger.info(
        "advisories: the %s policy %s %d files and %s %d of them",
        settings.mode, "would flag" if settings.audit else "flags", counts.flagged,
        "would block" if settings.audit else "blocks", counts.blocked,
    )  # fmt: skip
    return counts


def _count_files(policy: AdvisoryPolicy, layout: RepoLayout, audit: bool) -> VerdictCounts:
    """Blocking: reads the stored pages of the projects the advisories name."""
    projects = _listed_versions(layout, policy.projects)
    if audit:
        projects = _logged(policy, projects)
    return count_verdicts(policy, projects)


def _logged(
    policy: AdvisoryPolicy, projects: Iterable[tuple[NormalizedName, list[str | None]]]
) -> Iterator[tuple[NormalizedName, list[str | None]]]:
    """``projects`` as they are, each affected version logged as what the policy would do."""
    for name, versions in projects:
        for version in sorted({version for version in versions if version is not None}):
            verdict = policy.verdict(name, version)
            if verdict is not None:
                action = "block" if verdict.blocked else "flag"
                logger.info("advisories (audit): would %s %s %s: %s", action, name, version, verdict.reason)
        yield name, versions


def _listed_versions(
    layout: RepoLayout, names: Sequence[NormalizedName]
) -> Iterator[tuple[NormalizedName, list[str | None]]]:
    """Each named project this mirror has, with the version of each file its stored page lists.

    Only the file names are read, not the whole page model: a mirror's pages list millions of
    files, and a full parse of each (hashes, tags, URLs) would take minutes.
    """
    for name in names:
        if not is_normalized_project_name(name):
            continue  # advisories may name projects no index could hold
        try:
            document = json.loads(layout.project_page(name, "index.v1_json").read_bytes())
            versions = [_version_in_filename(entry["filename"]) for entry in document["files"]]
        except FileNotFoundError:
            continue  # no such project on this mirror
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("advisories: cannot read the stored page of %s: %s", name, exc)
            continue
        yield name, versions


def _version_in_filename(filename: str) -> str | None:
    """The version field of a wheel's or an sdist's file name, as written (matching normalizes it).

    The field is found the way the wheel and sdist naming rules place it, without validating the
    rest of the name: that was done when the page was stored.
    """
    if filename.endswith(".whl"):
        parts = filename[:-4].split("-")
        return parts[1] if len(parts) in (5, 6) else None
    for suffix in _SDIST_SUFFIXES:
        if filename.endswith(suffix):
            version = filename[: -len(suffix)].rpartition("-")[2]
            return version or None
    return None


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


def _next_batch(
    records: Iterator[Advisory], known: dict[str, str], report: AdvisorySyncReport
) -> list[Advisory] | None:
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
