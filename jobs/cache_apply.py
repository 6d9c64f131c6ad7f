"""Phase D of the cache job: carry out a :class:`CachePlan` without a tier ever going over its limit.

The executor keeps every tier's live fill (bytes on disk, including the temp files of running
downloads) and checks it before each step, so when an earlier step failed (a file that would
not delete or move) later steps skip instead of overfilling. Evictions and moves run in worker
threads, in chunks; a move across filesystems copies to a temp name in the target, fsyncs,
renames, then deletes the source. Downloads run concurrently, each into a temp file in its
target tier, and take their final name only after size and sha256 matched the index. The
download error threshold stops further downloads, never evictions or moves.

A tier found not writable at the start (:func:`probe_tier`: a read-only mount, a full disk)
is left exactly as it is for the run: no step evicts from, moves into or out of, or downloads
into it, and the other tiers' steps go on. A download that fails to write leaves no temp file.
"""

from __future__ import annotations

__all__ = ["ApplyStats", "LiveFill", "apply_plan", "move_file", "probe_tier"]

import asyncio
import errno
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import TypeVar

from pypimirror.jobs.cache_plan import CachePlan, Download, Eviction, Move

from pypimirror import queries as dbq
from pypimirror.config import SyncConfig, UpstreamConfig
from pypimirror.db import Database
from pypimirror.errors import IntegrityError, StorageError, UpstreamError
from pypimirror.inventory import LocalFile, disk_rows, prune_empty_dirs, remove_file
from pypimirror.pkgpath import METADATA_SUFFIX
from pypimirror.storage import TEMP_MARKER
from pypimirror.upstream import DownloadResult, UpstreamClient

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Evictions and moves per worker-thread call: few thread hops, and a stop is seen soon.
_CHUNK = 256
#: Bytes :func:`probe_tier` writes: a full disk refuses them where an empty file may still fit.
_PROBE_BYTES = 4096


@dataclass(slots=True)
class LiveFill:
    """Every tier's bytes and file count on disk as the run changes them, checked before each step.

    Not :class:`pypimirror.status.TierFill`, one tier's fill as last recorded, for display.
    """

    bytes: list[int]
    files: list[int]

    def has_room(self, tier: int, size: int, limits: Sequence[int]) -> bool:
        return self.bytes[tier] + size <= limits[tier]


@dataclass(slots=True)
class ApplyStats:
    """What phase D did; ``skipped_*`` found no room at run time (an earlier step failed)."""

    evicted: int = 0
    evicted_bytes: int = 0
    eviction_errors: int = 0
    moved: int = 0
    moved_bytes: int = 0
    move_errors: int = 0
    skipped_moves: int = 0
    downloaded: int = 0
    downloaded_bytes: int = 0
    download_errors: int = 0
    integrity_errors: int = 0
    metadata_errors: int = 0
    skipped_downloads: int = 0
    #: Steps left out because they would change a tier that is not writable.
    skipped_unwritable: int = 0
    threshold_reached: bool = False


@dataclass(slots=True)
class _Executor:
    plan: CachePlan
    node_id: str
    sync: SyncConfig
    upstream: UpstreamConfig
    db: Database
    client: UpstreamClient
    roots: tuple[Path, ...]
    stop: asyncio.Event
    fill: LiveFill
    stats: ApplyStats = field(default_factory=ApplyStats)

    async def evict(self) -> None:
        for chunk in _chunks(self.plan.evictions):
            if self.stop.is_set():
                return
            results = await asyncio.to_thread(_evict_chunk, self.roots, chunk)
            gone: list[str] = []
            for eviction, freed in zip(chunk, results, strict=True):
                local = eviction.file
                if freed is None:
                    self.stats.eviction_errors += 1
                    continue
                self.stats.evicted += 1
                self.stats.evicted_bytes += freed
                self.fill.bytes[local.tier] -= freed
                self.fill.files[local.tier] -= 1
                gone.extend(path for path, _, _ in disk_rows({local.path: local}))
                logger.debug("cache: evicted %s from tier %d (score %.6g)", local.path, local.tier, eviction.score)
            if gone:
                await self.db.run(partial(dbq.delete_local_files, node_id=self.node_id, paths=gone))

    async def move(self) -> None:
        for chunk in _chunks(self.plan.moves):
            if self.stop.is_set():
                return
            fill = LiveFill(list(self.fill.bytes), list(self.fill.files))
            results = await asyncio.to_thread(_move_chunk, self.roots, chunk, fill, self.plan.limits)
            self.fill = fill
            rows: list[tuple[str, int, int]] = []
            lost: list[str] = []
            for move, outcome in zip(chunk, results, strict=True):
                if outcome is None:
                    self.stats.skipped_moves += 1
                elif isinstance(outcome, OSError):
                    self.stats.move_errors += 1
                    logger.error("cache: cannot move %s from tier %d to %d: %s",
                                 move.file.path, move.file.tier, move.target, outcome)
                else:
                    self.stats.moved += 1
                    self.stats.moved_bytes += outcome.bytes
                    rows.extend(disk_rows({outcome.path: outcome}))
                    if move.file.metadata_size is not None and outcome.metadata_size is None:
                        lost.append(move.file.metadata_path)
            if rows or lost:
                await self.db.run(partial(dbq.record_moves, node_id=self.node_id, rows=rows, lost=lost))

    async def download(self) -> None:
        queue = iter(self.plan.downloads)
        workers = [
            asyncio.ensure_future(self._download_worker(queue))
            for _ in range(max(1, min(self.sync.concurrent_downloads, len(self.plan.downloads))))
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()

    async def _download_worker(self, queue: Iterator[Download]) -> None:
        threshold = self.sync.download_error_threshold
        for download in queue:
            if self.stop.is_set():
                return
            if self.stats.download_errors >= threshold:
                if not self.stats.threshold_reached:
                    logger.error("cache: %d download errors; no further downloads this run", threshold)
                self.stats.threshold_reached = True
                self.stats.skipped_downloads += 1
                continue
            reserved = download.file.bytes
            if not self.fill.has_room(download.tier, reserved, self.plan.limits):
                self.stats.skipped_downloads += 1
                logger.warning("cache: no room in tier %d for %s now; skipped", download.tier, download.file.path)
                continue
            self.fill.bytes[download.tier] += reserved
            stored: LocalFile | None = None
            try:
                stored = await self._download_one(download)
            except (UpstreamError, StorageError) as exc:
                self._count_failure(download, exc)
            finally:
                self.fill.bytes[download.tier] -= reserved - (stored.bytes if stored else 0)
            if stored is not None:
                self.fill.files[download.tier] += 1
                self.stats.downloaded += 1
                self.stats.downloaded_bytes += stored.bytes
                rows = list(disk_rows({stored.path: stored}))
                await self.db.run(partial(
                    dbq.record_download, node_id=self.node_id, rows=rows, path=stored.path,
                    checked_at=int(time.time()),
                ))

    def _count_failure(self, download: Download, exc: Exception) -> None:
        if self.stop.is_set() and not isinstance(exc, IntegrityError):
            logger.info("cache: download of %s stopped: %s", download.file.path, exc)
            return
        self.stats.download_errors += 1
        if isinstance(exc, IntegrityError):
            self.stats.integrity_errors += 1
        logger.warning("cache: download of %s failed, nothing kept: %s", download.file.path, exc)

    async def _download_one(self, download: Download) -> LocalFile:
        """Download, verify and commit one file (and its metadata when it verifies too)."""
        remote, root = download.file, self.roots[download.tier]
        final = root / remote.path
        temp = _temp_beside(final)
        commits: list[tuple[Path, Path, DownloadResult]] = []
        try:
            await asyncio.to_thread(final.parent.mkdir, parents=True, exist_ok=True)
            result = await self.client.download_to(
                self.upstream.file_url(remote.path),
                temp,
                size=remote.size,
                sha256=remote.sha256,
                cancel=self.stop,
            )
            commits.append((temp, final, result))
            if remote.metadata_sha256 is not None and remote.metadata_size is not None:
                metadata_final = root / (remote.path + METADATA_SUFFIX)
                metadata_temp = _temp_beside(metadata_final)
                try:
                    metadata = await self.client.download_to(
                        self.upstream.file_url(remote.path + METADATA_SUFFIX), metadata_temp,
                        size=remote.metadata_size, sha256=remote.metadata_sha256, cancel=self.stop,
                    )
                    commits.append((metadata_temp, metadata_final, metadata))
                except (UpstreamError, StorageError, OSError) as exc:
                    self.stats.metadata_errors += 1
                    logger.warning("cache: metadata of %s not kept: %s", remote.path, exc)
            await asyncio.to_thread(_commit, commits)
        except Exception as exc:
            # download_to removes its own file on failure; what verified before this is ours.
            await asyncio.to_thread(_discard, [temp_path for temp_path, _, _ in commits])
            if isinstance(exc, OSError):
                raise StorageError(f"cannot store {str(final)!r}: {exc.strerror or exc}") from exc
            raise
        logger.info("cache: downloaded %s to tier %d (%d bytes)", remote.path, download.tier, result.size)
        metadata_size = commits[1][2].size if len(commits) > 1 else None
        return LocalFile(remote.path, download.tier, result.size, metadata_size)

async def apply_plan(
    plan: CachePlan,
    *,
    node_id: str,
    roots: tuple[Path, ...],
    sync: SyncConfig,
    upstream: UpstreamConfig,
    db: Database,
    client: UpstreamClient,
    stop: asyncio.Event,
    fill: LiveFill,
    unwritable: Collection[int] = (),
) -> tuple[ApplyStats, LiveFill]:
    """Evictions, then moves, then downloads (see the module docstring); ``stop`` ends it early.

    ``fill`` is the tiers' content before the plan; the returned one is after it. Steps that
    would change one of the ``unwritable`` tiers are left out (counted). Files go to and come
    from the tier directories ``roots`` and are recorded under ``node_id``; ``sync`` gives the
    download concurrency and error threshold, ``upstream`` the file URLs.
    """
    stats = ApplyStats()
    plan = _without_tiers(plan, unwritable, stats)
    executor = _Executor(plan, node_id, sync, upstream, db, client, roots, stop, fill, stats)
    await executor.evict()
    await executor.move()
    await executor.download()
    return executor.stats, executor.fill


def _without_tiers(plan: CachePlan, tiers: Collection[int], stats: ApplyStats) -> CachePlan:
    """``plan`` without the steps that remove from or write to one of ``tiers``.

    What is left still never overfills a tier: the executor checks each tier's live fill
    before every move and download, so one whose room an omitted step would have made skips.
    """
    if not tiers:
        return plan
    evictions = tuple(e for e in plan.evictions if e.file.tier not in tiers)
    moves = tuple(m for m in plan.moves if m.file.tier not in tiers and m.target not in tiers)
    downloads = tuple(d for d in plan.downloads if d.tier not in tiers)
    stats.skipped_unwritable = (
        len(plan.evictions) - len(evictions) + len(plan.moves) - len(moves) + len(plan.downloads) - len(downloads)
    )
    return replace(plan, evictions=evictions, moves=moves, downloads=downloads)


def _chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


# -- blocking steps, run in worker threads ----------------------------------------------------


def probe_tier(root: Path) -> OSError | None:
    """Why the tier at ``root`` cannot take files now (None: it can); blocking.

    Creates the tier's directory if needed and writes, syncs and removes a small temp file,
    so a read-only mount, a full disk and a missing permission show before any step starts.
    A probe left by a crash is a temp file, which phase A removes.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".probe{TEMP_MARKER}", dir=root)
    except OSError as exc:
        return exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(bytes(_PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        return exc
    finally:
        try:
            os.unlink(name)
        except OSError as exc:
            logger.warning("cannot remove the probe file %s: %s", name, exc.strerror)
    return None


def _evict_chunk(roots: Sequence[Path], chunk: Sequence[Eviction]) -> list[int | None]:
    """Per eviction: bytes freed, or None when the distribution could not be removed."""
    results: list[int | None] = []
    for eviction in chunk:
        local = eviction.file
        freed = remove_file(roots[local.tier], local.path)
        if freed is not None and local.metadata_size is not None:
            freed += remove_file(roots[local.tier], local.metadata_path) or 0
        results.append(freed)
    return results


def _move_chunk(
    roots: Sequence[Path], chunk: Sequence[Move], fill: LiveFill, limits: Sequence[int]
) -> list[LocalFile | OSError | None]:
    """Per move: the file at its new place, the error, or None (no room now); updates ``fill``."""
    results: list[LocalFile | OSError | None] = []
    for move in chunk:
        local = move.file
        if not fill.has_room(move.target, local.bytes, limits):
            results.append(None)
            continue
        try:
            moved = move_file(roots, local, move.target)
        except OSError as exc:
            results.append(exc)
            continue
        fill.bytes[local.tier] -= local.bytes
        fill.files[local.tier] -= 1
        fill.bytes[move.target] += moved.bytes
        fill.files[move.target] += 1
        results.append(moved)
    return results


def move_file(roots: Sequence[Path], local: LocalFile, target: int) -> LocalFile:
    """Move a distribution, then its metadata, to tier ``target``; returns it at its new place.

    Raises OSError when the distribution stays where it was. A metadata file that fails to
    follow is deleted (a metadata file never stays apart from its distribution).
    """
    source_root, target_root = roots[local.tier], roots[target]
    if _move_leaf_dir(source_root, target_root, local):
        return LocalFile(local.path, target, local.size, local.metadata_size)
    _move_path(source_root / local.path, target_root / local.path)
    metadata_size = local.metadata_size
    if metadata_size is not None:
        try:
            _move_path(source_root / local.metadata_path, target_root / local.metadata_path)
        except OSError as exc:
            logger.error("cache: metadata of %s did not follow it: %s; deleted", local.path, exc)
            remove_file(source_root, local.metadata_path)
            metadata_size = None
    prune_empty_dirs(source_root, (source_root / local.path).parent)
    return LocalFile(local.path, target, local.size, metadata_size)


def _move_leaf_dir(source_root: Path, target_root: Path, local: LocalFile) -> bool:
    """Move the file's own ``<hash>`` directory in one rename, when it holds nothing else.

    One syscall instead of a mkdir, two renames and an rmdir (rmdir alone costs ~0.1 ms on
    ext4). False (nothing moved) across filesystems, when the directory holds anything else,
    or when the target directory exists and is not empty: the caller then moves file by file.
    """
    source = (source_root / local.path).parent
    target = (target_root / local.path).parent
    expected = {local.path.rpartition("/")[2]}
    if local.metadata_size is not None:
        expected.add(local.metadata_path.rpartition("/")[2])
    if set(os.listdir(source)) != expected:
        return False
    try:
        try:
            os.rename(source, target)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)  # ab/cd/ not there yet
            os.rename(source, target)
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _move_path(source: Path, target: Path) -> None:
    """Rename within a filesystem; across filesystems copy to a temp name, fsync, rename, unlink."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    temp = _temp_beside(target)
    try:
        shutil.copyfile(source, temp)
        stat = os.stat(source)
        _fsync(temp)
        os.chmod(temp, 0o644)
        os.utime(temp, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # keeps upstream's Last-Modified
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    os.unlink(source)


def _commit(commits: Sequence[tuple[Path, Path, DownloadResult]]) -> None:
    """Give verified temp files their final names (distribution first), durably, with upstream's mtime."""
    for temp, final, result in commits:
        _fsync(temp)
        os.chmod(temp, 0o644)
        if result.last_modified is not None:
            os.utime(temp, (time.time(), result.last_modified))
        os.replace(temp, final)


def _discard(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_beside(final: Path) -> Path:
    """A temp name in the same directory that phase A recognises (and removes after a crash)."""
    # Shortened so the temp name stays within the 255 bytes a file name may have.
    return final.with_name(f".{final.name[:200]}{TEMP_MARKER}{secrets.token_hex(6)}")
