"""``pypimirror pin``: store, list, show and remove pinned sets (files kept whatever the votes say).

Why in ``jobs``: whether a set fits is decided by the cache plan's own placement
(:func:`~pypimirror.jobs.cache_plan.place_pinned`), so ``pin add`` refuses exactly the sets the
cache run could not hold. A set is checked and stored in one write transaction, so two ``pin add``
at once cannot together pin more than the tiers hold. Storing a set changes no file: the next
cache run (or ``pin add --now``) fetches what is missing; removing one only makes its files
ordinary candidates again. Blocking (lockfiles and pages are read from disk, the database is
used synchronously): these are command-line steps, never run on an IOLoop.
"""

from __future__ import annotations

__all__ = ["PinAddResult", "add_pinned_set", "format_pinned_set", "format_pinned_sets", "remove_pinned_set"]

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pypimirror.jobs.cache_plan import place_pinned

from pypimirror import pinqueries
from pypimirror.byteunits import format_bytes
from pypimirror.config import Config
from pypimirror.db import Database
from pypimirror.errors import PinnedSetError
from pypimirror.lockfiles import read_lockfile
from pypimirror.pinqueries import PinnedSet, PinnedSetSummary
from pypimirror.pinresolve import Unpinned, resolve_lockfiles

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(slots=True)
class PinAddResult:
    """What ``pin add`` did: the set stored (``files`` and ``bytes``; none: nothing was stored),
    and what it left out.

    ``unpinned`` entries could not be pinned (each names its lockfile and entry); ``skipped``
    and ``notes`` are what the lockfiles name that is no index file, and options ignored.
    """

    name: str
    files: int = 0
    bytes: int = 0
    replaced: bool = False
    unpinned: list[Unpinned] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def add_pinned_set(
    config: Config,
    db: Database,
    name: str,
    lockfiles: Sequence[Path],
    *,
    platforms: Sequence[str] = (),
    pythons: Sequence[str] = (),
    now: float,
) -> PinAddResult:
    """Read ``lockfiles``, find their files on the stored pages and store them as the set ``name``.

    A set of that name is replaced. Raises :class:`~pypimirror.errors.LockfileError` for a
    lockfile that cannot be read, :class:`~pypimirror.errors.PinTargetError` for a malformed
    platform or Python, and :class:`PinnedSetError` for a bad name or a set that does
    not fit the tiers beside the other sets (nothing is stored, nothing evicted). When none of
    the entries is on the stored pages, nothing is stored and ``files`` is 0.
    """
    if not _NAME.match(name):
        raise PinnedSetError(f"pinned set name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    read = [read_lockfile(path, platforms=platforms, pythons=pythons) for path in lockfiles]
    resolution = resolve_lockfiles(read, config.repo_path, config.prefix, platforms=platforms, pythons=pythons)
    result = PinAddResult(name, unpinned=resolution.unpinned)
    for lockfile in read:
        result.skipped.extend(f"{s.where}: {s.reason}" for s in lockfile.skipped)
        result.notes.extend(lockfile.notes)
    if not resolution.files:
        return result  # nothing to store: the caller reports the entries not found
    limits = config.cache.tier_limits
    with db.begin() as conn:
        pinqueries.lock_pinned_sets(conn)
        others = pinqueries.load_pinned_files(conn, except_set=name)
        together = {**others, **resolution.files}
        placement = place_pinned(((f.path, f.size) for f in together.values()), limits)
        if placement.unplaced:
            raise PinnedSetError(_refusal(name, resolution.files, others, limits, placement.unplaced))
        result.replaced = pinqueries.store_pinned_set(
            conn, name, created_at=now, sources=[str(p) for p in lockfiles], platforms=platforms, pythons=pythons,
            files=sorted(resolution.files.values(), key=lambda f: f.path),
        )
    result.files, result.bytes = len(resolution.files), resolution.bytes
    return result


def _refusal(name: str, files: dict[str, pinqueries.PinnedFile], others: dict[str, pinqueries.PinnedFile],
             limits: Sequence[int], unplaced: Sequence[str]) -> str:
    """Why the set does not fit: what it needs, what the tiers have free for it."""
    total = sum(limits)
    taken = sum(f.size for f in others.values())
    needs = sum(f.size for path, f in files.items() if path not in others)
    text = (
        f"pinned set {name!r} does not fit: it needs {format_bytes(needs)} ({len(files)} files) and the cache "
        f"tiers have {format_bytes(max(0, total - taken))} free for pinned files ({format_bytes(total)} in all, "
        f"{format_bytes(taken)} pinned by other sets)"
    )
    if needs <= total - taken:
        largest = max(unplaced, key=lambda path: (files | others)[path].size)
        text += f", but {largest.rpartition('/')[2]} fits in no single tier"
    return text + "; nothing was pinned or evicted"


def remove_pinned_set(db: Database, name: str) -> None:
    """Forget the set ``name``; its files become ordinary candidates. PinnedSetError if there is none."""
    with db.begin() as conn:
        if not pinqueries.delete_pinned_set(conn, name):
            raise PinnedSetError(f"no pinned set named {name!r}")


def format_pinned_sets(summaries: Sequence[PinnedSetSummary], *, indent: str = "") -> str:
    """One line per set: files, bytes, how many are local (``pin list`` and ``status``)."""
    if not summaries:
        return f"{indent}none\n"
    return "".join(
        f"{indent}{s.name}: {s.files} files, {format_bytes(s.bytes)}, {s.local} of {s.files} local\n"
        for s in summaries
    )


def format_pinned_set(pinned: PinnedSet) -> str:
    """``pin show``: where the set came from, then one line per file (local or missing)."""
    size = sum(f.size for f in pinned.files)
    created = datetime.fromtimestamp(pinned.created_at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
    lines = [
        f"pinned set {pinned.name}: {len(pinned.files)} files, {format_bytes(size)}, "
        f"{len(pinned.local)} of {len(pinned.files)} local",
        f"  created:   {created}",
        f"  from:      {', '.join(pinned.sources)}",
    ]
    if pinned.platforms:
        lines.append(f"  platforms: {', '.join(pinned.platforms)}")
    if pinned.pythons:
        lines.append(f"  pythons:   {', '.join(pinned.pythons)}")
    lines.extend(
        f"  {'local  ' if f.path in pinned.local else 'missing'} {f.path} ({format_bytes(f.size)}, sha256 {f.sha256})"
        for f in pinned.files
    )
    return "\n".join(lines) + "\n"
