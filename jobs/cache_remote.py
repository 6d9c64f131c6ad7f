"""Phase B of the cache job: what each wanted file is, taken from the index pages we store.

A popular file is downloaded only when the stored page of its project lists it with a size and
a sha256, because only then can the download be verified; a path no page lists costs nothing
(no upstream request), so made-up paths cannot make the mirror fetch anything. Each project's
page is read once per run. The one size a page does not give, that of a ``.metadata`` file, is
asked of the upstream with HEAD (concurrently) and kept in ``remote_sizes`` for
``size_db_ttl``, answers and 404s alike.
"""

from __future__ import annotations

__all__ = [
    "WantedFiles",
    "popular_votes",
    "resolve_wanted",
]

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pypimirror.jobs.cache_plan import RemoteFile

from pypimirror import queries as dbq
from pypimirror.config import CacheConfig, SyncConfig, UpstreamConfig
from pypimirror.db import Database
from pypimirror.errors import UpstreamError
from pypimirror.inventory import is_package_relpath
from pypimirror.listedfiles import ListedFile, lookup_listed_files
from pypimirror.pkgpath import METADATA_SUFFIX
from pypimirror.upstream import UpstreamClient

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class WantedFiles:
    """Phase B's answer: the files to consider downloading, and why others were dropped."""

    files: list[RemoteFile] = field(default_factory=list)
    unlisted: int = 0
    unverifiable: int = 0
    too_large: int = 0
    heads: int = 0
    head_errors: int = 0


async def resolve_wanted(
    paths: Sequence[str],
    *,
    cache: CacheConfig,
    sync: SyncConfig,
    upstream: UpstreamConfig,
    repo_path: Path,
    prefix: str,
    db: Database,
    client: UpstreamClient,
    now: int,
    dry_run: bool,
    pinned: Set[str] = frozenset(),
) -> WantedFiles:
    """The wanted (popular or pinned, not cached) ``paths`` that can be downloaded and verified.

    The pages are read from the repository at ``repo_path`` (served under ``prefix``);
    ``cache`` gives the file size limit (which ``pinned`` paths are not held to: a pinned set
    asks for exactly its files) and how long a HEAD answer is kept, ``sync`` the
    HEAD concurrency and ``upstream`` the URLs asked.
    """
    result = WantedFiles()
    indexed = await asyncio.to_thread(lookup_listed_files, repo_path, prefix, paths)
    limit = cache.filesize_limit
    usable: list[ListedFile] = []
    for path in paths:
        entry = indexed.get(path)
        if entry is None:
            result.unlisted += 1
        elif entry.sha256 is None:
            result.unverifiable += 1
        elif limit is not None and entry.size > limit and path not in pinned:
            result.too_large += 1
        else:
            usable.append(entry)
    if result.unlisted or result.unverifiable:
        logger.info(
            "cache: %d popular files are not listed on a stored page, %d have no sha256; "
            "neither is downloaded", result.unlisted, result.unverifiable,
        )
    sizes = await _metadata_sizes(
        [e.path + METADATA_SUFFIX for e in usable if e.metadata_sha256],
        cache.size_db_ttl, sync, upstream, db, client, now, dry_run, result,
    )
    for entry in usable:
        metadata_sha256 = entry.metadata_sha256
        metadata_size: int | None = None
        if metadata_sha256 is not None:
            metadata_path = entry.path + METADATA_SUFFIX
            if metadata_path not in sizes:
                continue  # the HEAD failed: try the whole file again next run
            metadata_size = sizes[metadata_path]
            if metadata_size is None:
                metadata_sha256 = None  # the page promised one, the upstream has none
        assert entry.sha256 is not None
        result.files.append(RemoteFile(entry.path, entry.size, entry.sha256, metadata_sha256, metadata_size))
    return result


async def _metadata_sizes(
    paths: Sequence[str],
    ttl: timedelta,
    sync: SyncConfig,
    upstream: UpstreamConfig,
    db: Database,
    client: UpstreamClient,
    now: int,
    dry_run: bool,
    result: WantedFiles,
) -> dict[str, int | None]:
    """Size of each metadata path (None: upstream 404); paths whose HEAD failed are absent.

    A size stored less than ``ttl`` ago is taken as it is; the others are asked of the upstream.
    """
    fresh_since = now - int(ttl.total_seconds())
    known = await db.run_read(lambda conn: dbq.load_remote_sizes(conn, paths, fresh_since))
    unknown = [p for p in paths if p not in known]
    if not unknown:
        return known
    answers = await _head_all(unknown, sync, upstream, client)
    result.heads = len(unknown)
    result.head_errors = len(unknown) - len(answers)
    if answers and not dry_run:
        rows = [(path, size, now) for path, size in sorted(answers.items())]
        await db.run(lambda conn: dbq.store_remote_sizes(conn, rows))
    return {**known, **answers}


async def _head_all(
    paths: Sequence[str], sync: SyncConfig, upstream: UpstreamConfig, client: UpstreamClient
) -> dict[str, int | None]:
    """HEAD every path, ``sync.concurrent_downloads`` at a time; failures are logged and left out."""
    gate = asyncio.Semaphore(max(1, sync.concurrent_downloads))
    answers: dict[str, int | None] = {}

    async def head(path: str) -> None:
        async with gate:
            try:
                response = await client.head(upstream.file_url(path))
            except UpstreamError as exc:
                logger.warning("cache: cannot learn the size of %s: %s", path, exc)
                return
        length = response.headers.get("Content-Length", "").strip()
        if response.status == 404:
            answers[path] = None
        elif length.isdigit():
            answers[path] = int(length)
        else:
            logger.warning("cache: HEAD %s gave no Content-Length; trying again next run", path)

    await asyncio.gather(*(head(path) for path in paths))
    return answers


def popular_votes(popular: Iterable[tuple[str, int]]) -> Mapping[str, int]:
    """Votes per distribution path; a ``.metadata`` file's own votes do not count.

    Its distribution brings it along, and a resolver that reads only metadata (no install)
    should not fill the cache with wheels. Paths that are not package paths are dropped.
    """
    votes: dict[str, int] = {}
    for path, count in popular:
        if not path.endswith(METADATA_SUFFIX) and is_package_relpath(path):
            votes[path] = count
    return votes
