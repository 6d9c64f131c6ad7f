"""The cache job's check of what is cached against what the index pages say each file is.

A cached file changed on disk (a flipped bit, a truncated copy, a stray edit) would otherwise be
served as it is, forever, and every installer would reject it by its hash. Each run compares the
size of every cached distribution with its stored page (cheap: each project's page is read once)
and re-hashes a rotating slice of ``cache.verify_bytes_per_run`` bytes, the least recently
checked files first (each file costs at least :data:`MIN_FILE_COST` of it, so a cache of tiny
files is not opened whole every run), so the whole cache is checked over days. A file that differs is evicted,
counted and logged; the plan then downloads it again if it is still popular. A file no stored
page lists (or lists without a sha256) has nothing to be compared with and is left alone.
"""

from __future__ import annotations

__all__ = ["MIN_FILE_COST", "VerifyStats", "verify_cache"]

import asyncio
import hashlib
import logging
from collections.abc import Collection, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from pypimirror import queries as dbq
from pypimirror.db import Database
from pypimirror.inventory import LocalFile, disk_rows, remove_file
from pypimirror.listedfiles import iter_listed_files
from pypimirror.pkgpath import METADATA_SUFFIX

logger = logging.getLogger(__name__)

#: What a file costs of ``verify_bytes_per_run`` at least: opening it is work whatever its size.
MIN_FILE_COST = 64 * 1024


@dataclass(slots=True)
class VerifyStats:
    """What the check found: files hashed, and files that differed from their page (evicted)."""

    hashed: int = 0
    hashed_bytes: int = 0
    size_mismatches: int = 0
    hash_mismatches: int = 0
    evicted: int = 0


async def verify_cache(
    files: MutableMapping[str, LocalFile],
    *,
    budget: int,
    node_id: str,
    repo_path: Path,
    prefix: str,
    db: Database,
    roots: Sequence[Path],
    now: int,
    stop: asyncio.Event,
) -> VerifyStats:
    """Check ``files`` (phase A's inventory) and evict, from disk, database and ``files``, those that differ.

    Sizes are compared with the pages of the repository at ``repo_path`` (served under
    ``prefix``); at most ``budget`` bytes of the least recently checked files are hashed.
    """
    stats = VerifyStats()
    due: list[tuple[str, int]] = []
    if budget > 0:
        due = await db.run_read(partial(
            dbq.least_checked_files, node_id=node_id, budget=budget, min_cost=MIN_FILE_COST, skip_suffix=METADATA_SUFFIX
        ))
    wrong_sizes, digests = await asyncio.to_thread(
        _compare_sizes, repo_path, prefix, files, {path for path, _ in due}
    )
    bad: dict[str, LocalFile] = {}
    for path, page_size in wrong_sizes:
        local = bad[path] = files[path]
        stats.size_mismatches += 1
        logger.error(
            "cache: %s in tier %d has %d bytes, its page says %d; evicting it", path, local.tier, local.size, page_size
        )
    if due:
        checked: list[str] = []
        for path, _ in due:
            if stop.is_set():
                break
            checked.append(path)  # compared or not, it moves to the back of the rotation
            cached, sha256 = files.get(path), digests.get(path)
            if cached is None or sha256 is None:
                continue
            digest = await asyncio.to_thread(_sha256_of, roots[cached.tier] / path)
            stats.hashed += 1
            stats.hashed_bytes += cached.size
            if digest != sha256:
                stats.hash_mismatches += 1
                bad[path] = cached
                logger.error(
                    "cache: %s in tier %d has sha256 %s, its page says %s; evicting it",
                    path, cached.tier, digest, sha256,
                )
        if checked:
            await db.run(partial(dbq.store_file_checks, node_id=node_id, paths=checked, checked_at=now))
    if bad:
        await _evict(files, list(bad.values()), db, roots, node_id, stats)
    return stats


async def _evict(
    files: MutableMapping[str, LocalFile],
    bad: list[LocalFile],
    db: Database,
    roots: Sequence[Path],
    node_id: str,
    stats: VerifyStats,
) -> None:
    removed = await asyncio.to_thread(_remove_all, roots, bad)
    gone: list[str] = []
    for local in removed:
        del files[local.path]
        gone.extend(path for path, _, _ in disk_rows({local.path: local}))
    stats.evicted = len(removed)
    if gone:
        await db.run(partial(dbq.delete_local_files, node_id=node_id, paths=gone))


def _compare_sizes(
    repo_path: Path, prefix: str, files: Mapping[str, LocalFile], due: Collection[str]
) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """Files whose size differs from their page's (with that size), and the page's sha256 of
    each ``due`` file whose size agrees; blocking (reads every page of a project with cached files).

    One project at a time, so only one page's entries are held at once, not the whole cache's.
    """
    wrong: list[tuple[str, int]] = []
    digests: dict[str, str] = {}
    for listed in iter_listed_files(repo_path, prefix, files):
        for path, entry in listed.items():
            if entry.size != files[path].size:
                wrong.append((path, entry.size))
            elif path in due and entry.sha256 is not None:
                digests[path] = entry.sha256
    return wrong, digests


def _remove_all(roots: Sequence[Path], bad: Sequence[LocalFile]) -> list[LocalFile]:
    """Delete each file and its metadata; returns those removed (a failure is logged and kept)."""
    removed: list[LocalFile] = []
    for local in bad:
        if remove_file(roots[local.tier], local.path) is None:
            continue
        if local.metadata_size is not None:
            remove_file(roots[local.tier], local.metadata_path)
        removed.append(local)
    return removed


def _sha256_of(path: Path) -> str:
    """The file's sha256, or why it could not be read (which no page's digest equals)."""
    try:
        with open(path, "rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    except OSError as exc:
        return f"unreadable ({exc.strerror})"
