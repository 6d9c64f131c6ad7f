"""What the cache tiers really hold: the disk, walked, is the truth the cache job plans from.

:func:`scan_tier` walks one tier (iteratively, with ``os.scandir``; run it in a worker thread)
and sorts what it finds into package files, temp files left by an interrupted run, and
anything else, which is left alone. :func:`reconcile_tiers` turns the scans into one
:class:`Inventory`: a file found in several tiers is kept in the hottest and its colder copies
are marked for removal, and a ``.metadata`` file belongs to the distribution beside it (same
tier), so one without its distribution is marked too. :func:`diff_rows` says which database
rows disagree with the disk. Nothing here deletes anything unless :func:`remove_files` is called.
"""

from __future__ import annotations

__all__ = [
    "Inventory",
    "LocalFile",
    "TierScan",
    "diff_rows",
    "disk_rows",
    "is_package_relpath",
    "prune_empty_dirs",
    "reconcile_tiers",
    "remove_file",
    "remove_files",
    "scan_tier",
]

import errno
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pypimirror.errors import StorageError, UnsafePathError
from pypimirror.pkgpath import METADATA_SUFFIX, parse_package_path
from pypimirror.storage import is_temp_name

logger = logging.getLogger(__name__)

#: Depth of a file in the layout ``ab/cd/<hash>/<filename>``; directories below it are not walked.
_FILE_DEPTH = 4
#: A strict subset of what :func:`parse_package_path` accepts unchanged (with no ``..``): it
#: spares the full check, ~20 µs a file, for the names PyPI actually uses.
_PLAIN_PACKAGE_PATH = re.compile(
    r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{1,128}/[A-Za-z0-9][A-Za-z0-9._+-]{0,254}"
).fullmatch


@dataclass(frozen=True, slots=True)
class LocalFile:
    """A cached distribution in one tier, with its ``.metadata`` file when that is beside it."""

    path: str
    tier: int
    size: int
    metadata_size: int | None = None

    @property
    def bytes(self) -> int:
        """What it costs its tier: the distribution plus its metadata file."""
        return self.size + (self.metadata_size or 0)

    @property
    def metadata_path(self) -> str:
        return self.path + METADATA_SUFFIX


@dataclass(slots=True)
class TierScan:
    """One tier's walk: package files (relpath -> size), temp files, and how much else."""

    tier: int
    files: dict[str, int] = field(default_factory=dict)
    temp_files: list[str] = field(default_factory=list)
    foreign: int = 0
    foreign_example: str | None = None


@dataclass(slots=True)
class Inventory:
    """Every cached distribution (by path), and the files that phase A removes.

    ``duplicates`` are colder copies of a file a hotter tier holds; ``orphans`` are
    ``.metadata`` files without their distribution in the same tier; ``temp_files`` were left
    by an interrupted write. Each is a (tier, relpath) pair.
    """

    files: dict[str, LocalFile]
    duplicates: list[tuple[int, str]]
    orphans: list[tuple[int, str]]
    temp_files: list[tuple[int, str]]

    def tier_bytes(self, tiers: int) -> list[int]:
        used = [0] * tiers
        for local in self.files.values():
            used[local.tier] += local.bytes
        return used


def scan_tier(root: Path, tier: int) -> TierScan:
    """Walk ``root`` without following symlinks; blocking, so call it in a worker thread.

    Only regular files at ``ab/cd/<hash>/<filename>`` that :func:`parse_package_path` accepts
    count. Temp files (see :func:`pypimirror.storage.is_temp_name`) are listed wherever they
    are. Everything else (symlinks, stray files, deeper directories) is counted, logged once,
    and left alone. A missing root is an empty tier. Any other error reading a directory
    raises :class:`StorageError`: a partial inventory would make the plan evict or download
    on false grounds.
    """
    scan = TierScan(tier)
    stack: list[tuple[str, str, int]] = [(str(root), "", 0)]
    while stack:
        directory, prefix, depth = stack.pop()
        try:
            with os.scandir(directory) as iterator:
                entries = list(iterator)
        except FileNotFoundError:
            if depth == 0:
                logger.info("cache tier %d (%s) does not exist yet", tier, root)
            continue  # a directory removed while we walk is simply gone
        except OSError as exc:
            raise StorageError(f"cannot walk cache tier {tier} at {directory!r}: {exc.strerror}") from exc
        if depth == _FILE_DEPTH - 1:
            _scan_leaf(scan, entries, prefix)
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, prefix + entry.name + "/", depth + 1))
            else:
                _classify_other(scan, entry, prefix + entry.name, depth + 1)
    if scan.foreign:
        logger.warning(
            "cache tier %d (%s): left alone %d entries that are not package files, e.g. %r",
            tier, root, scan.foreign, scan.foreign_example,
        )
    return scan


def _scan_leaf(scan: TierScan, entries: list[os.DirEntry[str]], prefix: str) -> None:
    """The entries of an ``ab/cd/<hash>`` directory: normally one file and its metadata."""
    files = scan.files
    for entry in entries:
        relpath = prefix + entry.name
        # The common case, cheaply: a plain name that the full gate would accept unchanged.
        plain = _PLAIN_PACKAGE_PATH(relpath) is not None and ".." not in relpath
        if plain and entry.is_file(follow_symlinks=False):
            try:
                files[relpath] = entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                pass  # removed since scandir listed it
        else:
            _classify_other(scan, entry, relpath, _FILE_DEPTH)


def _classify_other(scan: TierScan, entry: os.DirEntry[str], relpath: str, depth: int) -> None:
    """Anything the fast path did not take: a temp file, an unusual package file, or foreign."""
    if is_temp_name(entry.name) and not entry.is_dir(follow_symlinks=False):
        scan.temp_files.append(relpath)
    elif depth == _FILE_DEPTH and entry.is_file(follow_symlinks=False) and is_package_relpath(relpath):
        try:
            scan.files[relpath] = entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            pass
    else:
        _note_foreign(scan, relpath)


def is_package_relpath(relpath: str) -> bool:
    """True when ``relpath`` is exactly what a client's request for it decodes to.

    That is, :func:`parse_package_path` accepts it and returns it unchanged; the names PyPI
    uses are recognised without the full check.
    """
    if _PLAIN_PACKAGE_PATH(relpath) is not None and ".." not in relpath:
        return True
    try:
        return parse_package_path(relpath).relpath == relpath
    except UnsafePathError:
        return False


def _note_foreign(scan: TierScan, relpath: str) -> None:
    scan.foreign += 1
    if scan.foreign_example is None:
        scan.foreign_example = relpath


def reconcile_tiers(scans: Sequence[TierScan]) -> Inventory:
    """One inventory from the walks of every tier, hottest first (pure)."""
    files: dict[str, LocalFile] = {}
    duplicates: list[tuple[int, str]] = []
    orphans: list[tuple[int, str]] = []
    temp_files = [(scan.tier, path) for scan in scans for path in scan.temp_files]
    for scan in scans:
        for path, size in scan.files.items():
            if path.endswith(METADATA_SUFFIX):
                continue
            if path in files:
                duplicates.append((scan.tier, path))
                continue
            metadata_size = scan.files.get(path + METADATA_SUFFIX)
            files[path] = LocalFile(path, scan.tier, size, metadata_size)
        for path in scan.files:
            if not path.endswith(METADATA_SUFFIX):
                continue
            owner = files.get(path.removesuffix(METADATA_SUFFIX))
            if owner is None or owner.tier != scan.tier:
                (duplicates if owner is not None and owner.metadata_size is not None else orphans).append(
                    (scan.tier, path)
                )
    return Inventory(files, duplicates, orphans, temp_files)


def disk_rows(files: Mapping[str, LocalFile]) -> Iterator[tuple[str, int, int]]:
    """One (path, size, tier) row per file on disk: each distribution and its metadata."""
    for local in files.values():
        yield local.path, local.size, local.tier
        if local.metadata_size is not None:
            yield local.metadata_path, local.metadata_size, local.tier


def diff_rows(
    files: Mapping[str, LocalFile], stored: Mapping[str, tuple[int, int]]
) -> tuple[list[tuple[str, int, int]], list[str]]:
    """The rows to upsert (new or different on disk) and the paths to forget (gone from disk)."""
    upserts: list[tuple[str, int, int]] = []
    unseen = dict.fromkeys(stored)
    for path, size, tier in disk_rows(files):
        row = stored.get(path)
        unseen.pop(path, None)
        if row is None or row != (size, tier):
            upserts.append((path, size, tier))
    return upserts, list(unseen)


def remove_files(roots: Sequence[Path], targets: Sequence[tuple[int, str]]) -> tuple[int, int]:
    """Delete each (tier, relpath) with :func:`remove_file`; returns (files removed, bytes freed)."""
    removed = freed = 0
    for tier, relpath in targets:
        size = remove_file(roots[tier], relpath)
        if size is not None:
            removed += 1
            freed += size
    return removed, freed


def remove_file(root: Path, relpath: str) -> int | None:
    """Delete ``root/relpath`` and prune its emptied directories; blocking.

    Returns the bytes freed (0 when the file was already gone), or None when it could not be
    removed (logged): the next walk sees what is still there.
    """
    target = root / relpath
    try:
        size = os.lstat(target).st_size
        os.unlink(target)
    except FileNotFoundError:
        return 0
    except OSError as exc:
        logger.error("cannot remove %s: %s", target, exc.strerror)
        return None
    prune_empty_dirs(root, target.parent)
    return size


def prune_empty_dirs(root: Path, directory: Path) -> None:
    """Remove ``directory``, a file's own ``<hash>`` directory, if it is empty now.

    Left behind, empty leaf directories would pile up and slow every later walk. The shared
    ``ab/cd`` levels stay (at most 65,792 per tier): removing them costs more than keeping them.
    """
    if directory == root:
        return
    try:
        directory.rmdir()
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOENT):
            logger.warning("cannot remove empty directory %s: %s", directory, exc.strerror)
