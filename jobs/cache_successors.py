"""Release prefetch, pure: the newer release's file that will replace a cached file.

When a project whose files the cache holds publishes a new version, its users move to the new
files within hours, but the votes need a run or two to notice: every request in between is a
miss. The ``default`` policy therefore fetches, at the next run, each voted cached file's
**successor**: the same project's newest release file of the same kind (the same set of wheel
tags, or an sdist for an sdist), uploaded within the vote window, newer than the cached one and
not cached. The successor inherits its predecessor's votes (and keeps them once cached) (the larger of the two, with its
own), so the planner ranks it exactly like a popular newcomer: it is fetched only when it fits
the budget among the others, and never displaces a better file. A final release is succeeded
only by a final release (a pre-release by anything newer); a yanked file succeeds nothing.

The cache job (over the pages of the voted cached files' projects) and the simulator (over the
stored pages, at each planning instant) both call :func:`successor_votes`.
"""

from __future__ import annotations

__all__ = ["PREFETCH_POLICIES", "ReleaseIndex", "ReleasedFile", "successor_votes"]

import bisect
import math
from collections import defaultdict
from collections.abc import Container, Iterable, Iterator, Mapping, Set
from typing import NamedTuple, Protocol

from packaging.tags import Tag
from packaging.utils import NormalizedName
from packaging.version import Version

from pypimirror.config import CachePolicy
from pypimirror.distfilename import parse_dist_filename

#: The policies that prefetch new releases; ``seed`` keeps its original rule.
PREFETCH_POLICIES: frozenset[CachePolicy] = frozenset({"default"})

#: What files succeed each other: the project and a wheel's tag set (None for an sdist).
_Kind = tuple[NormalizedName, frozenset[Tag] | None]


class ReleasedFile(Protocol):
    """A listed file as a stored page gives it (:class:`~pypimirror.pagescan.ListedFile` is one)."""

    @property
    def path(self) -> str: ...

    @property
    def filename(self) -> str: ...

    @property
    def upload_time(self) -> float | None: ...

    @property
    def yanked(self) -> bool: ...


class _Release(NamedTuple):
    version: Version
    upload_time: float
    path: str


def _kind_and_version(filename: str) -> tuple[_Kind, Version] | None:
    """A wheel's or sdist's kind and version; None for any other name (legacy formats)."""
    parsed = parse_dist_filename(filename)
    return None if parsed is None else ((parsed.project, parsed.tags), parsed.version)


class ReleaseIndex:
    """The listed files grouped by kind, newest version first, to find successors quickly.

    Built once from the stored pages' files (a run's, or the whole simulation's); a file without
    an upload time or yanked can be a predecessor but never a successor.
    """

    def __init__(self, files: Iterable[ReleasedFile]) -> None:
        groups: defaultdict[_Kind, list[_Release]] = defaultdict(list)
        kinds: dict[str, tuple[_Kind, Version]] = {}
        for f in files:
            parsed = _kind_and_version(f.filename)
            if parsed is None:
                continue
            kinds[f.path] = parsed
            kind, version = parsed
            if f.upload_time is not None and not f.yanked:
                groups[kind].append(_Release(version, f.upload_time, f.path))
        for releases in groups.values():
            releases.sort(key=lambda r: (r.version, r.path), reverse=True)
        self._size = len(kinds)
        # Per file with a newer release of its kind: the latest upload time among them, and
        # those releases, newest first, as (upload time, path) of the ones it may be succeeded
        # by. Decided once here, so a lookup (the simulator makes one per voted file per
        # planning instant) compares no versions, and for a file whose newer releases are all
        # older than the window (most voted files with any) reads one number.
        self._newer: dict[str, tuple[float, tuple[tuple[float, str], ...]]] = {}
        for path, (kind, version) in kinds.items():
            any_release = version.is_prerelease
            newer = []
            for release in groups.get(kind, ()):
                if release.version <= version:
                    break
                if any_release or not release.version.is_prerelease:
                    newer.append((release.upload_time, release.path))
            if newer:
                self._newer[path] = (max(upload_time for upload_time, _ in newer), tuple(newer))
        # The files above by the latest and by the earliest upload time of their newer
        # releases, and those of them with a newer release in the last window asked for (the
        # latest after its start, the earliest at or before its end). A replay asks for ever
        # later windows: the set then only loses the files whose newer releases all left the
        # window and gains those whose first newer release came out.
        by_latest = sorted((latest, path) for path, (latest, _) in self._newer.items())
        self._latest_times = [latest for latest, _ in by_latest]
        self._latest_paths = [path for _, path in by_latest]
        by_earliest = sorted((min(t for t, _ in newer), path) for path, (_, newer) in self._newer.items())
        self._earliest_times = [earliest for earliest, _ in by_earliest]
        self._earliest_paths = [path for _, path in by_earliest]
        self._since = self._now = -math.inf
        self._window: set[str] = set()

    def __len__(self) -> int:
        return self._size

    def successor(self, path: str, *, since: float, now: float) -> str | None:
        """The newest file of ``path``'s kind uploaded after ``since`` and at or before ``now``,
        with a newer version (a final one unless ``path``'s is a pre-release); None if none."""
        return next((successor for _, successor in self.successors({path}, since=since, now=now)), None)

    def successors(self, paths: Set[str], *, since: float, now: float) -> Iterator[tuple[str, str]]:
        """``(path, successor)`` for each of ``paths`` that has one (see :meth:`successor`), in no
        particular order: the simulator asks for every voted file at every planning instant."""
        newer = self._newer
        for path in self._in_window(since, now) & paths:
            for upload_time, successor in newer[path][1]:
                if since < upload_time <= now:
                    yield path, successor
                    break

    def _in_window(self, since: float, now: float) -> set[str]:
        """The files with a newer release uploaded after ``since`` and one at or before ``now``
        (a superset of those with one in between)."""
        latest_times, latest_paths = self._latest_times, self._latest_paths
        earliest_times, earliest_paths = self._earliest_times, self._earliest_paths
        right = bisect.bisect_right
        if since < self._since or now < self._now:
            self._window = set(latest_paths[right(latest_times, since):])
            self._window.intersection_update(earliest_paths[:right(earliest_times, now)])
        else:
            window, newer = self._window, self._newer
            window.difference_update(latest_paths[right(latest_times, self._since):right(latest_times, since)])
            for path in earliest_paths[right(earliest_times, self._now):right(earliest_times, now)]:
                if newer[path][0] > since:
                    window.add(path)
        self._since, self._now = since, now
        return self._window


def successor_votes(
    index: ReleaseIndex, cached: Container[str], votes: Mapping[str, int], *, since: float, now: float
) -> dict[str, int]:
    """The successors of the voted cached files, each with its votes to plan with.

    ``votes`` are the files' distinct voting networks (the planner's); a successor gets the
    most of its predecessors' and its own. Successors are looked for among files uploaded in
    ``(since, now]``: the cache job and the simulator pass the vote window. A successor
    already cached (prefetched by an earlier run) is in the answer too, whether its voted
    predecessor is still cached or not (it may have displaced it): it keeps the votes it was
    fetched with while its predecessor has them, otherwise the next plan would rank it by its
    own votes (none yet), evict it, and the one after would fetch it again.
    """
    found: dict[str, int] = {}
    for path, successor in index.successors(votes.keys(), since=since, now=now):
        if path in cached or successor in cached:
            found[successor] = max(found.get(successor, 0), votes[path], votes.get(successor, 0))
    return found
