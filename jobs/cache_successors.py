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

from collections import defaultdict
from collections.abc import Container, Iterable, Mapping
from typing import NamedTuple, Protocol

from packaging.tags import Tag
from packaging.utils import (
    InvalidSdistFilename,
    InvalidWheelFilename,
    NormalizedName,
    parse_sdist_filename,
    parse_wheel_filename,
)
from packaging.version import InvalidVersion, Version

from pypimirror.config import CachePolicy

#: The policies that prefetch new releases; ``seed`` keeps its original rule.
PREFETCH_POLICIES: frozenset[CachePolicy] = frozenset({"default"})

#: What files succeed each other: the project and a wheel's tag set (None for an sdist).
_Kind = tuple[NormalizedName, frozenset[Tag] | None]
_SDIST_SUFFIXES = (".tar.gz", ".zip")


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
    try:
        if filename.endswith(".whl"):
            name, version, _build, tags = parse_wheel_filename(filename)
            return (name, tags), version
        if filename.endswith(_SDIST_SUFFIXES):
            name, version = parse_sdist_filename(filename)
            return (name, None), version
    except (InvalidWheelFilename, InvalidSdistFilename, InvalidVersion):
        pass
    return None


class ReleaseIndex:
    """The listed files grouped by kind, newest version first, to find successors quickly.

    Built once from the stored pages' files (a run's, or the whole simulation's); a file without
    an upload time or yanked can be a predecessor but never a successor.
    """

    def __init__(self, files: Iterable[ReleasedFile]) -> None:
        groups: defaultdict[_Kind, list[_Release]] = defaultdict(list)
        self._kinds: dict[str, tuple[_Kind, Version]] = {}
        for f in files:
            parsed = _kind_and_version(f.filename)
            if parsed is None:
                continue
            self._kinds[f.path] = parsed
            kind, version = parsed
            if f.upload_time is not None and not f.yanked:
                groups[kind].append(_Release(version, f.upload_time, f.path))
        for releases in groups.values():
            releases.sort(key=lambda r: (r.version, r.path), reverse=True)
        self._groups = dict(groups)

    def __len__(self) -> int:
        return len(self._kinds)

    def successor(self, path: str, *, since: float, now: float) -> str | None:
        """The newest file of ``path``'s kind uploaded after ``since`` and at or before ``now``,
        with a newer version (a final one unless ``path``'s is a pre-release); None if none."""
        parsed = self._kinds.get(path)
        if parsed is None:
            return None
        kind, version = parsed
        any_release = version.is_prerelease
        for release in self._groups.get(kind, ()):
            if release.version <= version:
                return None
            if since < release.upload_time <= now and (any_release or not release.version.is_prerelease):
                return release.path
        return None


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
    for path, count in votes.items():
        successor = index.successor(path, since=since, now=now)
        if successor is not None and (path in cached or successor in cached):
            found[successor] = max(found.get(successor, 0), count, votes.get(successor, 0))
    return found
